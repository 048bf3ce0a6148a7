import { expect } from 'chai'
import type { Response } from 'supertest'
import { type CreatedUser, expectError, signUp, startApp, type TestApp, uniqueEmail, waitUntil } from './helpers/app.js'

// Every app here trusts X-Forwarded-For (TRUST_PROXY=true): it is how a test sends from many client IPs.

/** POST /login from the client IP `ip`. */
function login(app: TestApp, ip: string, email: string, password: string) {
  return app.http().post('/login').set('X-Forwarded-For', ip).send({ email, password })
}

/** A login lockout: 429 in the app's error shape, for about 15 minutes (blockDuration). */
function expectLockedOut(res: Response): void {
  expectError(res, 429, 'rate_limited')
  expect(Number(res.headers['retry-after']), 'Retry-After').to.be.within(14 * 60, 15 * 60)
  expect(res.headers['set-cookie']).to.equal(undefined)
}

function expectSignedIn(res: Response): void {
  expect(res.status, res.text).to.equal(200)
}

/** Runs `tasks` with at most `concurrency` of them at once. */
async function pool(concurrency: number, count: number, task: (index: number) => Promise<void>): Promise<void> {
  let next = 0
  const worker = async () => {
    while (next < count) await task(next++)
  }
  await Promise.all(Array.from({ length: concurrency }, worker))
}

describe('login attacks', () => {
  describe('locking an account out (LOGIN_FAILURES_PER_ACCOUNT_AND_IP=5)', () => {
    let app: TestApp
    before(async () => {
      app = await startApp({ TRUST_PROXY: 'true', LOGIN_FAILURES_PER_ACCOUNT_AND_IP: '5' })
    })
    after(async () => {
      await app?.close()
    })

    it('5 wrong passwords for ada from IP X lock (ada, X) out; ada signs in from IP Y, X into other accounts', async () => {
      const ada = await signUp(app, { name: 'Ada' })
      const bob = await signUp(app, { name: 'Bob' })
      for (let i = 0; i < 5; i++) {
        expectError(await login(app, '203.0.113.10', ada.email, `wrong password ${i}`), 401, 'invalid_credentials')
      }
      expectLockedOut(await login(app, '203.0.113.10', ada.email, ada.password))
      expectSignedIn(await login(app, '198.51.100.20', ada.email, ada.password))
      expectSignedIn(await login(app, '203.0.113.10', bob.email, bob.password))
      // and the lockout stays on (ada, X): its own successful sign-ins elsewhere do not lift it
      expectLockedOut(await login(app, '203.0.113.10', ada.email, ada.password))
    })
  })

  describe('credential stuffing (LOGIN_FAILURES_PER_IP=5)', () => {
    let app: TestApp
    before(async () => {
      app = await startApp({ TRUST_PROXY: 'true', LOGIN_FAILURES_PER_IP: '5' })
    })
    after(async () => {
      await app?.close()
    })

    it('an IP failing against many emails is refused after 5 failures, for 15 minutes, even with a right password', async () => {
      const users = await Promise.all([0, 1, 2].map(() => signUp(app)))
      const emails = [...users.map((user) => user.email), uniqueEmail('unknown'), uniqueEmail('unknown')]
      for (const email of emails) {
        expectError(await login(app, '203.0.113.30', email, 'password123'), 401, 'invalid_credentials')
      }
      const victim = await signUp(app)
      expectLockedOut(await login(app, '203.0.113.30', victim.email, victim.password))
      expectLockedOut(await login(app, '203.0.113.30', uniqueEmail(), 'password123'))
      // the accounts themselves are not locked: their owners sign in from their own IPs
      expectSignedIn(await login(app, '198.51.100.31', victim.email, victim.password))
      expectSignedIn(await login(app, '198.51.100.32', users[0]!.email, users[0]!.password))
    })
  })

  describe('one account from many IPs (LOGIN_FAILURES_PER_ACCOUNT=10, LOGIN_SLOWDOWN_MS=200)', () => {
    let app: TestApp
    before(async () => {
      app = await startApp({ TRUST_PROXY: 'true', LOGIN_FAILURES_PER_ACCOUNT: '10', LOGIN_SLOWDOWN_MS: '200' })
    })
    after(async () => {
      await app?.close()
    })

    it('beyond 10 failures every attempt on the email waits at least 200 ms, and its owner still signs in', async () => {
      const owner = await signUp(app)
      const timed = async (ip: string, password: string) => {
        const started = performance.now()
        const res = await login(app, ip, owner.email, password)
        return { res, ms: performance.now() - started }
      }
      for (let i = 0; i < 10; i++) {
        expectError((await timed(`203.0.113.${100 + i}`, 'wrong password')).res, 401, 'invalid_credentials')
      }
      for (let i = 0; i < 3; i++) {
        const attempt = await timed(`203.0.113.${120 + i}`, 'wrong password')
        expectError(attempt.res, 401, 'invalid_credentials')
        expect(attempt.ms, 'an attacker is slowed down').to.be.at.least(200)
      }
      const signIn = await timed('198.51.100.50', owner.password)
      expectSignedIn(signIn.res)
      expect(signIn.ms, 'the owner is slowed down too, never refused').to.be.at.least(200)
    })
  })

  describe('simulation: 1,000 attempts from 100 IPs against 10 accounts', () => {
    // small limits, so that the bound means something and the hashes stay few (each is ~0.1 s of CPU)
    const PER_IP = 2
    const PER_ACCOUNT_AND_IP = 1
    const IPS = 100
    const ACCOUNTS = 10
    const ATTEMPTS = 1000
    let app: TestApp
    let owners: CreatedUser[]
    before(async () => {
      app = await startApp({
        TRUST_PROXY: 'true',
        LOGIN_FAILURES_PER_IP: String(PER_IP),
        LOGIN_FAILURES_PER_ACCOUNT_AND_IP: String(PER_ACCOUNT_AND_IP),
        LOGIN_FAILURES_PER_ACCOUNT: '10',
        LOGIN_SLOWDOWN_MS: '20',
      })
      owners = await Promise.all(Array.from({ length: ACCOUNTS }, (_, i) => signUp(app, { name: `Owner ${i}` })))
    })
    after(async () => {
      await app?.close()
    })

    it('the password hash is checked at most IPs x LOGIN_FAILURES_PER_IP times; no owner is refused', async function () {
      this.timeout(120_000)
      const attackerIp = (i: number) => `203.0.113.${i + 1}`
      const ownerIp = (i: number) => `198.51.100.${i + 1}`
      // Round r (100 attempts) tries each IP once. Half the IPs guess one account's password 10
      // times (the (account, IP) lockout binds), the other half try each account once (the IP's binds).
      const target = (ip: number, round: number) => (ip < IPS / 2 ? ip % ACCOUNTS : (ip + round) % ACCOUNTS)
      const checksByIp = new Map<string, number>()
      const checksByPair = new Map<string, number>()
      const unexpected: string[] = []
      let hashChecks = 0
      let done = 0
      const signIns: number[] = []
      const ownersSignIn = async (i: number) => {
        const owner = owners[i]!
        signIns.push((await login(app, ownerIp(i), owner.email, owner.password)).status)
      }

      const attack = pool(25, ATTEMPTS, async (k) => {
        const ip = k % IPS
        const account = target(ip, Math.floor(k / IPS))
        const res = await login(app, attackerIp(ip), owners[account]!.email, `guess ${k}`)
        done++
        if (res.status === 401) {
          // a 401 means the password was checked against the hash; a 429 that it was not
          hashChecks++
          checksByIp.set(attackerIp(ip), (checksByIp.get(attackerIp(ip)) ?? 0) + 1)
          const pair = `${ip} ${account}`
          checksByPair.set(pair, (checksByPair.get(pair) ?? 0) + 1)
        } else if (res.status !== 429) unexpected.push(`${res.status} ${res.text}`)
      })
      // meanwhile, each owner signs in from their own IP, one every 100 attempts
      const meanwhile = (async () => {
        for (let i = 0; i < ACCOUNTS; i++) {
          await waitUntil(() => done >= i * 100 + 50, 60_000, `attempt ${i * 100 + 50}`)
          await ownersSignIn(i)
        }
      })()
      await Promise.all([attack, meanwhile])
      // and afterwards, all at once
      await Promise.all(owners.map((_, i) => ownersSignIn(i)))

      const bound = IPS * PER_IP
      const refused = signIns.filter((status) => status !== 200).length
      console.log(
        `      hash checks: ${hashChecks} of ${ATTEMPTS} attempts, bound ${bound}; ` +
          `legitimate sign-ins refused: ${refused} of ${signIns.length}`,
      )
      expect(unexpected, 'every attempt answered 401 or 429').to.deep.equal([])
      expect(hashChecks).to.be.at.most(bound)
      expect(Math.max(...checksByIp.values()), 'hash checks per IP').to.be.at.most(PER_IP)
      expect(Math.max(...checksByPair.values()), 'hash checks per (account, IP)').to.be.at.most(PER_ACCOUNT_AND_IP)
      expect(signIns).to.have.length(2 * ACCOUNTS)
      expect(refused, `statuses of the owners' sign-ins: ${signIns.join(' ')}`).to.equal(0)
    })
  })
})
