import { expect } from 'chai'
import pg from 'pg'
import { expectError, logIn, signedInUser, startApp, type TestApp, waitUntil } from './helpers/app.js'
import { testDatabaseUrl, userRow } from './helpers/db.js'
import { withPasswordWork } from './helpers/password-work.js'
import { type DisposableRedis, startDisposableRedis } from './helpers/redis.js'
import { startTcpProxy, type TcpProxy } from './helpers/tcp-proxy.js'

const NEW_PASSWORD = 'a completely new password'

const me = (app: TestApp, cookie: string) => app.http().get('/me').set('Cookie', cookie)
const patch = (app: TestApp, id: number, cookie: string, body: object) =>
  app.http().patch(`/users/${id}`).set('Cookie', cookie).send(body)
const loginStatus = async (app: TestApp, email: string, password: string) =>
  (await app.http().post('/login').send({ email, password })).status

/** The handle of the session `cookie` names (GET /sessions marks it current). */
async function handleOf(app: TestApp, cookie: string): Promise<string> {
  const res = await app.http().get('/sessions').set('Cookie', cookie)
  expect(res.status, res.text).to.equal(200)
  return res.body.sessions.find((session: { current: boolean }) => session.current).handle
}

/**
 * Holds the row of user `id` locked (SELECT ... FOR UPDATE in a transaction of its own), so that
 * a request writing it waits at its UPDATE: a test can act while that request is in flight.
 */
async function lockUserRow(id: number) {
  const client = new pg.Client({ connectionString: testDatabaseUrl })
  await client.connect()
  await client.query('BEGIN')
  await client.query('SELECT 1 FROM "User" WHERE id = $1 FOR UPDATE', [id])
  const [{ pid }] = (await client.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows as [{ pid: number }]
  return {
    /** Resolves once another connection waits for this lock. */
    async waitForWaiter(): Promise<void> {
      const deadline = Date.now() + 10_000
      for (;;) {
        const { rows } = await client.query<{ n: number }>(
          'SELECT count(*)::int AS n FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))',
          [pid],
        )
        if ((rows[0]?.n ?? 0) > 0) return
        if (Date.now() > deadline) throw new Error('no request came to wait for the row lock')
        await new Promise((resolve) => setTimeout(resolve, 10))
      }
    },
    async release(): Promise<void> {
      await client.query('COMMIT')
      await client.end()
    },
  }
}

describe('credential changes: PATCH /users/:id with email or password', () => {
  describe('the current password', () => {
    let app: TestApp
    before(async () => {
      app = await startApp()
    })
    after(async () => {
      await app?.close()
    })

    it('a name change needs none', async () => {
      const user = await signedInUser(app, { name: 'Plain Name' })
      const res = await patch(app, user.id, user.cookie, { name: 'Other Name' })
      expect(res.status, res.text).to.equal(200)
      expect(res.body.name).to.equal('Other Name')
    })

    it('an email change without it: 400 current_password_required, nothing changed', async () => {
      const user = await signedInUser(app)
      const before = await userRow(user.id)
      const res = await patch(app, user.id, user.cookie, { email: `new-${user.email}`, name: 'Taken Over' })
      expectError(res, 400, 'current_password_required')
      expect(await userRow(user.id)).to.deep.equal(before)
    })

    it('an email or password change with a wrong one: 403 wrong_password, nothing changed', async () => {
      const user = await signedInUser(app)
      const before = await userRow(user.id)
      expectError(
        await patch(app, user.id, user.cookie, { email: `new-${user.email}`, currentPassword: 'not the password' }),
        403,
        'wrong_password',
      )
      expectError(
        await patch(app, user.id, user.cookie, { password: NEW_PASSWORD, currentPassword: 'not the password' }),
        403,
        'wrong_password',
      )
      expectError(await patch(app, user.id, user.cookie, { password: NEW_PASSWORD }), 400, 'current_password_required')
      expect(await userRow(user.id)).to.deep.equal(before)
      expect(await loginStatus(app, user.email, user.password)).to.equal(200)
      expect(await loginStatus(app, user.email, NEW_PASSWORD)).to.equal(401)
    })

    it('an email change with it ends the other sessions too; this one stays, /me shows the own fields only', async () => {
      const user = await signedInUser(app)
      const other = await logIn(app, user)
      expect((await me(app, other)).status).to.equal(200)
      const email = `moved-${user.email}`
      const res = await patch(app, user.id, user.cookie, { email, currentPassword: user.password })
      expect(res.status, res.text).to.equal(200)
      expect(res.body).to.have.all.keys('id', 'email', 'name', 'createdAt', 'updatedAt')
      expectError(await me(app, other), 401, 'unauthorized')
      const mine = await me(app, user.cookie)
      expect(mine.status).to.equal(200)
      expect(mine.body).to.have.all.keys('id', 'email', 'name', 'createdAt', 'updatedAt')
      expect(mine.body.email).to.equal(email)
      expect(new Date(mine.body.createdAt).toISOString()).to.equal(mine.body.createdAt)
    })
  })

  describe('wrong current passwords are limited per account (LOGIN_FAILURES_PER_ACCOUNT_AND_IP=2)', () => {
    let app: TestApp
    before(async () => {
      app = await startApp({ LOGIN_FAILURES_PER_ACCOUNT_AND_IP: '2' })
    })
    after(async () => {
      await app?.close()
    })

    it('the 3rd wrong one is 429, then even the right one; right ones and other accounts do not count', async () => {
      const user = await signedInUser(app)
      const wrong = { password: NEW_PASSWORD, currentPassword: 'guess' }
      expectError(await patch(app, user.id, user.cookie, wrong), 403, 'wrong_password')
      const email = `x-${user.email}`
      const right = await patch(app, user.id, user.cookie, { email, currentPassword: user.password })
      expect(right.status, right.text).to.equal(200)
      expectError(await patch(app, user.id, user.cookie, wrong), 403, 'wrong_password')
      expectError(await patch(app, user.id, user.cookie, wrong), 429, 'rate_limited')
      const res = await patch(app, user.id, user.cookie, { password: NEW_PASSWORD, currentPassword: user.password })
      expectError(res, 429, 'rate_limited')
      expect(await loginStatus(app, email, user.password), 'the password is unchanged').to.equal(200)
      const other = await signedInUser(app)
      const theirs = await patch(app, other.id, other.cookie, {
        password: NEW_PASSWORD,
        currentPassword: other.password,
      })
      expect(theirs.status, theirs.text).to.equal(200)
    })

    it("another user's id with a wrong current password: 403 forbidden before any check, never counted against the caller", async () => {
      const victim = await signedInUser(app)
      const caller = await signedInUser(app)
      for (let i = 0; i < 3; i++) {
        const { result: patched, work } = await withPasswordWork(() =>
          patch(app, victim.id, caller.cookie, { email: `taken-${victim.email}`, currentPassword: 'guess' }),
        )
        expectError(patched, 403, 'forbidden')
        const { result: deleted, work: deleteWork } = await withPasswordWork(() =>
          app.http().delete(`/users/${victim.id}`).set('Cookie', caller.cookie).send({ currentPassword: 'guess' }),
        )
        expectError(deleted, 403, 'forbidden')
        expect(work + deleteWork, 'passwords checked').to.equal(0)
      }
      const email = `own-${caller.email}`
      const own = await patch(app, caller.id, caller.cookie, { email, currentPassword: caller.password })
      expect(own.status, `the caller's own email change: ${own.text}`).to.equal(200)
      expect(await loginStatus(app, victim.email, victim.password), "the victim's account is unchanged").to.equal(200)
    })

    it('DELETE: wrong current passwords count as those of PATCH do; the 3rd is 429, then even the right one', async () => {
      const user = await signedInUser(app)
      const remove = (currentPassword: string) =>
        app.http().delete(`/users/${user.id}`).set('Cookie', user.cookie).send({ currentPassword })
      expectError(await remove('guess 1'), 403, 'wrong_password')
      expectError(
        await patch(app, user.id, user.cookie, { password: NEW_PASSWORD, currentPassword: 'guess 2' }),
        403,
        'wrong_password',
      )
      expectError(await remove('guess 3'), 429, 'rate_limited')
      expectError(await remove(user.password), 429, 'rate_limited')
      expect(await userRow(user.id), 'the account is still there').to.not.equal(undefined)
    })
  })

  describe('a password change while Redis fails', () => {
    let redis: DisposableRedis
    let proxy: TcpProxy
    let app: TestApp
    before(async () => {
      redis = await startDisposableRedis()
      proxy = await startTcpProxy(redis.port)
      app = await startApp({ REDIS_URL: proxy.url })
    })
    after(async () => {
      redis?.resume()
      await app?.close()
      await proxy?.close()
      await redis?.stop()
    })

    /** Waits until the app uses Redis again. */
    async function redisBack(): Promise<void> {
      await waitUntil(() => app.services.redis.isReady, 15_000, 'the app to reconnect to Redis')
      const deadline = Date.now() + 10_000
      while ((await app.http().get('/healthz')).body.redis !== 'up') {
        if (Date.now() > deadline) throw new Error('the app did not see Redis again')
      }
    }

    it('Redis frozen while it commits: never the new password with the old sessions alive', async () => {
      const user = await signedInUser(app)
      const other = await logIn(app, user)
      for (const cookie of [user.cookie, other]) expect((await me(app, cookie)).status).to.equal(200) // cached
      const lock = await lockUserRow(user.id)
      let res: Awaited<ReturnType<typeof patch>>
      try {
        const pending = patch(app, user.id, user.cookie, {
          password: NEW_PASSWORD,
          currentPassword: user.password,
        }).then((response) => response)
        // its session is loaded and its user checked: it waits at the UPDATE; Redis freezes now
        await lock.waitForWaiter()
        redis.pause()
        await lock.release()
        res = await pending
      } finally {
        redis.resume()
      }
      await redisBack()
      if (res.status === 200) {
        expect(await loginStatus(app, user.email, NEW_PASSWORD)).to.equal(200)
        expectError(await me(app, other), 401, 'unauthorized')
      } else {
        // refused: then nothing may have changed
        expectError(res, 503, 'service_unavailable')
        expect(await loginStatus(app, user.email, NEW_PASSWORD), 'a 503, yet the new password works').to.equal(401)
        expect(await loginStatus(app, user.email, user.password)).to.equal(200)
      }
    })

    it('Redis unreachable when the other sessions are ended: they get 401 once it is back', async () => {
      const user = await signedInUser(app)
      const other = await logIn(app, user)
      const third = await logIn(app, user)
      // the other sessions are in use: their user's record is cached
      for (const cookie of [other, third]) expect((await me(app, cookie)).status).to.equal(200)
      // the network drops the moment the app asks Redis to end every session but this one
      const handle = await handleOf(app, user.cookie)
      const cut = proxy.cutWhenSent(`\r\n$3\r\nall\r\n$22\r\n${handle}\r\n`)
      let res: Awaited<ReturnType<typeof patch>>
      try {
        res = await patch(app, user.id, user.cookie, { password: NEW_PASSWORD, currentPassword: user.password })
        await cut
      } finally {
        proxy.restore()
      }
      expect(res.status, res.text).to.equal(200)
      await redisBack()
      expectError(await me(app, other), 401, 'unauthorized')
      expectError(await me(app, third), 401, 'unauthorized')
      expectError(await app.http().get('/sessions').set('Cookie', third), 401, 'unauthorized')
      expect((await me(app, user.cookie)).status, 'the session that made the change stays').to.equal(200)
      expect(await loginStatus(app, user.email, user.password)).to.equal(401)
      expect(await loginStatus(app, user.email, NEW_PASSWORD)).to.equal(200)
    })
  })
})
