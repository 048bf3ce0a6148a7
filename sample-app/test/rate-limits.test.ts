import { expect } from 'chai'
import type { Response } from 'supertest'
import { type CreatedUser, expectError, logIn, signUp, startApp, type TestApp, uniqueEmail } from './helpers/app.js'
import { countUsers } from './helpers/db.js'

/** A 429 in the app's error shape with Retry-After and RateLimit headers. */
function expectRateLimited(res: Response): void {
  expectError(res, 429, 'rate_limited')
  expect(Number(res.headers['retry-after']), 'Retry-After').to.be.at.least(1)
  const names = Object.keys(res.headers)
  expect(
    names.some((name) => name === 'ratelimit' || name === 'ratelimit-limit' || name === 'x-ratelimit-limit'),
    `RateLimit headers in ${names.join(', ')}`,
  ).to.equal(true)
}

describe('rate limits', () => {
  describe('login, per (email, IP) (LOGIN_FAILURES_PER_ACCOUNT_AND_IP=3, failed attempts only)', () => {
    let app: TestApp
    let user: CreatedUser
    before(async () => {
      app = await startApp({ LOGIN_FAILURES_PER_ACCOUNT_AND_IP: '3' })
      user = await signUp(app)
    })
    after(async () => {
      await app?.close()
    })
    const attempt = (email: string, password: string) => app.http().post('/login').send({ email, password })

    it('correct logins do not count; the 4th failed attempt is 429, then even the right password', async () => {
      expectError(await attempt(user.email, 'wrong password 1'), 401, 'invalid_credentials')
      expectError(await attempt(user.email, 'wrong password 2'), 401, 'invalid_credentials')
      // more successful logins than the limit: none is counted
      for (let i = 0; i < 4; i++) await logIn(app, user)
      expectError(await attempt(user.email, 'wrong password 3'), 401, 'invalid_credentials')
      expectRateLimited(await attempt(user.email, 'wrong password 4'))
      const right = await attempt(user.email, user.password)
      expectRateLimited(right)
      expect(right.headers['set-cookie']).to.equal(undefined)
    })

    it('a lockout lasts 15 minutes (blockDuration), whatever the sliding window says', async () => {
      const res = await attempt(user.email, user.password)
      expectRateLimited(res)
      expect(Number(res.headers['retry-after'])).to.be.within(14 * 60, 15 * 60)
    })

    it('counts the email as normalized (case and spaces do not give more attempts)', async () => {
      expectRateLimited(await attempt(` ${user.email.toUpperCase()} `, user.password))
    })

    it('does not limit other emails from the same IP', async () => {
      const other = await signUp(app)
      expectError(await attempt(other.email, 'wrong password'), 401, 'invalid_credentials')
      await logIn(app, other)
    })
  })

  describe('login, per IP (LOGIN_FAILURES_PER_IP=3, failed attempts only)', () => {
    let app: TestApp
    before(async () => {
      app = await startApp({ LOGIN_FAILURES_PER_IP: '3' })
    })
    after(async () => {
      await app?.close()
    })
    const wrong = () => app.http().post('/login').send({ email: uniqueEmail(), password: 'whatever1' })

    it('the 4th failure from the IP, whatever the emails, is 429; then successful logins are refused too', async () => {
      const user = await signUp(app)
      for (let i = 0; i < 4; i++) await logIn(app, user)
      expectError(await wrong(), 401, 'invalid_credentials')
      await logIn(app, user)
      expectError(await wrong(), 401, 'invalid_credentials')
      expectError(await wrong(), 401, 'invalid_credentials')
      expectRateLimited(await wrong())
      const right = await app.http().post('/login').send({ email: user.email, password: user.password })
      expectRateLimited(right)
      expect(Number(right.headers['retry-after'])).to.be.within(14 * 60, 15 * 60)
    })

    it('other routes are not limited by the login limit', async () => {
      expect((await app.http().get('/healthz')).status).to.equal(200)
    })
  })

  describe('login, only wrong passwords count (LOGIN_FAILURES_PER_IP=3, LOGIN_FAILURES_PER_ACCOUNT_AND_IP=1)', () => {
    it("the (email, IP) lockout's 429s do not count against the IP", async () => {
      const app = await startApp({ LOGIN_FAILURES_PER_IP: '3', LOGIN_FAILURES_PER_ACCOUNT_AND_IP: '1' })
      try {
        const attempt = (email: string) => app.http().post('/login').send({ email, password: 'whatever1' })
        const target = uniqueEmail()
        expectError(await attempt(target), 401, 'invalid_credentials')
        for (let i = 0; i < 5; i++) expectRateLimited(await attempt(target))
        expectError(await attempt(uniqueEmail()), 401, 'invalid_credentials')
        expectError(await attempt(uniqueEmail()), 401, 'invalid_credentials')
        expectRateLimited(await attempt(uniqueEmail()))
      } finally {
        await app.close()
      }
    })
  })

  describe('login, per account (LOGIN_FAILURES_PER_ACCOUNT=2): slowed down, never refused, no headers', () => {
    let app: TestApp
    before(async () => {
      app = await startApp({ LOGIN_FAILURES_PER_ACCOUNT: '2', LOGIN_SLOWDOWN_MS: '300' })
    })
    after(async () => {
      await app?.close()
    })

    it('over the limit, attempts wait LOGIN_SLOWDOWN_MS and are answered as usual', async () => {
      const user = await signUp(app)
      const timed = async (password: string) => {
        const started = performance.now()
        const res = await app.http().post('/login').send({ email: user.email, password })
        return { res, ms: performance.now() - started }
      }
      for (let i = 0; i < 2; i++) expectError((await timed('wrong password')).res, 401, 'invalid_credentials')
      const over = await timed('wrong password')
      expectError(over.res, 401, 'invalid_credentials')
      expect(over.ms).to.be.at.least(300)
      const right = await timed(user.password)
      expect(right.res.status, right.res.text).to.equal(200)
      expect(right.ms).to.be.at.least(300)
      // only the lockouts' headers: nothing tells a client how many failures an account has
      const policies = String(right.res.headers['ratelimit-policy'])
      expect(policies).to.include('"login-ip"').and.include('"login-account-ip"')
      expect(policies.match(/"login-/g)).to.have.length(2)
    })
  })

  describe('every route (API_RATE_LIMIT=5)', () => {
    let app: TestApp
    before(async () => {
      app = await startApp({ API_RATE_LIMIT: '5' })
    })
    after(async () => {
      await app?.close()
    })

    it('the 6th request, whatever the route, is 429 JSON', async () => {
      const statuses = [
        (await app.http().get('/healthz')).status,
        (await app.http().get('/users')).status,
        (await app.http().get('/users/2147483647')).status,
        (await app.http().get('/nope')).status,
        (await app.http().post('/logout')).status,
      ]
      expect(statuses).to.deep.equal([200, 200, 404, 404, 204])
      expectRateLimited(await app.http().get('/users'))
      const count = await countUsers()
      expectRateLimited(
        await app.http().post('/users').send({ email: uniqueEmail(), name: 'X', password: 'password1' }),
      )
      expect(await countUsers(), 'a refused sign-up stores nothing').to.equal(count)
      expectRateLimited(await app.http().get('/healthz'))
    })
  })

  describe('client IP behind a proxy (TRUST_PROXY)', () => {
    const attempt = (app: TestApp, ip: string) =>
      app.http().post('/login').set('X-Forwarded-For', ip).send({ email: uniqueEmail(), password: 'whatever1' })

    it('TRUST_PROXY=false: a forged X-Forwarded-For does not get around the per-IP limit', async () => {
      const app = await startApp({ LOGIN_FAILURES_PER_IP: '2' })
      try {
        expect((await attempt(app, '10.0.0.1')).status).to.equal(401)
        expect((await attempt(app, '10.0.0.2')).status).to.equal(401)
        expectRateLimited(await attempt(app, '10.0.0.3'))
      } finally {
        await app.close()
      }
    })

    // Behind one proxy, X-Forwarded-For is what the client sent (anything) followed by the address the
    // proxy saw: `<client-written>, <proxy-added>`. These requests come from loopback, as from that proxy.
    const viaProxy = (spoofed: string, client: string) => `${spoofed}, ${client}`

    it('TRUST_PROXY=1: the client IP is the right-most address (added by the one proxy); 22 failures whatever the client writes before it hit the per-IP limit', async () => {
      const app = await startApp({ LOGIN_FAILURES_PER_IP: '20', TRUST_PROXY: '1' })
      try {
        const statuses: number[] = []
        for (let i = 1; i <= 22; i++) statuses.push((await attempt(app, viaProxy(`10.0.${i}.1`, '203.0.113.7'))).status)
        expect(statuses).to.deep.equal([...Array(20).fill(401), 429, 429])
        expectRateLimited(await attempt(app, viaProxy('10.0.99.1, 10.0.99.2', '203.0.113.7')))
        // another client behind the same proxy has its own limit
        expect((await attempt(app, viaProxy('10.0.1.1', '203.0.113.8'))).status).to.equal(401)
        expect(app.logger.warnings, 'no warning for a hop count').to.deep.equal([])
      } finally {
        await app.close()
      }
    })

    it('TRUST_PROXY=1: the general API limit counts the proxy-added address too', async () => {
      const app = await startApp({ API_RATE_LIMIT: '5', TRUST_PROXY: '1' })
      try {
        const get = (xff: string) => app.http().get('/healthz').set('X-Forwarded-For', xff)
        for (let i = 1; i <= 5; i++) expect((await get(viaProxy(`10.1.${i}.1`, '203.0.113.7'))).status).to.equal(200)
        expectRateLimited(await get(viaProxy('10.1.6.1', '203.0.113.7')))
        expect((await get(viaProxy('10.1.6.1', '203.0.113.8'))).status).to.equal(200)
      } finally {
        await app.close()
      }
    })

    it('TRUST_PROXY=2 and TRUST_PROXY=loopback (an address list) take the address their proxies added', async () => {
      // two proxies: the outer one adds the client's address, the inner one the outer one's
      const two = await startApp({ LOGIN_FAILURES_PER_IP: '2', TRUST_PROXY: '2' })
      try {
        expect((await attempt(two, '10.0.0.1, 198.51.100.9, 10.10.0.1')).status).to.equal(401)
        expect((await attempt(two, '10.0.0.2, 198.51.100.9, 10.10.0.1')).status).to.equal(401)
        expectRateLimited(await attempt(two, '10.0.0.3, 198.51.100.9, 10.10.0.2'))
        expect((await attempt(two, '10.0.0.3, 198.51.100.10, 10.10.0.1')).status).to.equal(401)
      } finally {
        await two.close()
      }
      // trusted: the loopback proxy (the connecting address); 203.0.113.7 is not trusted, so it is the client
      const listed = await startApp({ LOGIN_FAILURES_PER_IP: '2', TRUST_PROXY: 'loopback, 10.0.0.0/8' })
      try {
        expect((await attempt(listed, viaProxy('192.0.2.1', '203.0.113.7'))).status).to.equal(401)
        expect((await attempt(listed, viaProxy('192.0.2.2', '203.0.113.7'))).status).to.equal(401)
        expectRateLimited(await attempt(listed, viaProxy('192.0.2.3', '203.0.113.7')))
        // a client behind a trusted 10.x proxy: the address that proxy added counts
        expect((await attempt(listed, '192.0.2.4, 203.0.113.8, 10.1.2.3')).status).to.equal(401)
      } finally {
        await listed.close()
      }
    })

    it('TRUST_PROXY=true still starts, with a warning: the left-most entry, which any client writes, becomes its IP', async () => {
      const app = await startApp({ LOGIN_FAILURES_PER_IP: '2', TRUST_PROXY: 'true' })
      try {
        expect(app.logger.warnings.map((args) => String(args[0]))).to.satisfy((warnings: string[]) =>
          warnings.some((warning) => warning.includes('TRUST_PROXY=true') && warning.includes('TRUST_PROXY=1')),
        )
        // spoofable: each made-up left-most address has a limit of its own
        for (let i = 1; i <= 4; i++) {
          expect((await attempt(app, viaProxy(`10.0.0.${i}`, '203.0.113.7'))).status).to.equal(401)
        }
      } finally {
        await app.close()
      }
    })
  })
})
