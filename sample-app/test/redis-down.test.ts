import type { AddressInfo } from 'node:net'
import { expect } from 'chai'
import {
  type CreatedUser,
  expectError,
  logIn,
  madeUpSessionValue,
  PASSWORD,
  signedSid,
  signUp,
  startApp,
  type TestApp,
  uniqueEmail,
  waitUntil,
} from './helpers/app.js'
import { query, userByEmail } from './helpers/db.js'
import { type DisposableRedis, freePort, startDisposableRedis } from './helpers/redis.js'
import { openSse, type SseClient } from './helpers/sse.js'

const origin = (app: TestApp) => `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`

/** What must keep working while Redis is unreachable, whether it never came up or went away. */
function behavesWithoutRedis(context: () => { app: TestApp; user: CreatedUser }) {
  it('GET /users answers from the database (200, X-Cache BYPASS)', async () => {
    const { app, user } = context()
    for (let i = 0; i < 2; i++) {
      const res = await app.http().get(`/users?after=${user.id - 1}`)
      expect(res.status, res.text).to.equal(200)
      expect(res.headers['x-cache']).to.equal('BYPASS')
      expect(res.body.users.map((listed: { id: number }) => listed.id)).to.include(user.id)
    }
  })

  it('GET /users/:id answers from the database (200; 404 for an unknown id)', async () => {
    const { app, user } = context()
    const res = await app.http().get(`/users/${user.id}`)
    expect(res.status, res.text).to.equal(200)
    expect(res.body).to.include({ id: user.id, name: user.name })
    expectError(await app.http().get('/users/2147483001'), 404, 'user_not_found')
  })

  it('POST /users signs up (201, stored)', async () => {
    const { app } = context()
    const email = uniqueEmail('offline')
    const res = await app.http().post('/users').send({ email, name: 'Offline Signup', password: PASSWORD })
    expect(res.status, res.text).to.equal(201)
    expect((await userByEmail(email))?.name).to.equal('Offline Signup')
  })

  it('POST /login answers 503 in the JSON error shape with Retry-After, and sets no cookie', async () => {
    const { app, user } = context()
    const res = await app.http().post('/login').send({ email: user.email, password: user.password })
    expectError(res, 503, 'service_unavailable')
    expect(Number(res.headers['retry-after'])).to.be.at.least(1)
    expect(res.headers['set-cookie']).to.equal(undefined)
  })

  it('/me answers 503 with a session cookie (the store cannot tell) and 401 without', async () => {
    const { app } = context()
    expectError(await app.http().get('/me').set('Cookie', signedSid(madeUpSessionValue())), 503, 'service_unavailable')
    expectError(await app.http().get('/me'), 401, 'unauthorized')
  })

  it("GET /healthz answers 200 { status: 'degraded', redis: 'down', database: 'up' }", async () => {
    const { app } = context()
    const res = await app.http().get('/healthz')
    expect(res.status).to.equal(200)
    expect(res.body).to.deep.equal({ status: 'degraded', redis: 'down', database: 'up' })
  })

  it('logs no internal error (500)', () => {
    const { app } = context()
    const internal = app.logger.errors.filter((args) => /failed:$/.test(String(args[0])))
    expect(internal, JSON.stringify(internal)).to.deep.equal([])
  })
}

describe('Redis down', () => {
  describe('never reachable (nothing listens at REDIS_URL)', () => {
    let app: TestApp
    let user: CreatedUser
    before(async () => {
      app = await startApp({ REDIS_URL: `redis://127.0.0.1:${await freePort()}` }, { waitForRedis: false })
      user = await signUp(app, { name: 'Never Redis' })
    })
    after(async () => {
      await app?.close()
    })
    behavesWithoutRedis(() => ({ app, user }))

    it('GET /events answers 503 JSON instead of hanging', async () => {
      expectError(await app.http().get('/events'), 503, 'service_unavailable')
    })
  })

  describe('going down while the app runs, then coming back', () => {
    let redis: DisposableRedis
    let app: TestApp
    let user: CreatedUser
    let cookie: string
    let openedBefore: SseClient
    before(async () => {
      redis = await startDisposableRedis()
      app = await startApp({ REDIS_URL: redis.url })
      user = await signUp(app, { name: 'Was Online' })
      cookie = await logIn(app, user)
      const url = `/users?after=${user.id - 1}`
      expect((await app.http().get(url)).headers['x-cache']).to.equal('MISS')
      expect((await app.http().get(url)).headers['x-cache']).to.equal('HIT')
      expect((await app.http().get(`/users/${user.id}`)).status).to.equal(200)
      expect((await app.http().get('/me').set('Cookie', cookie)).status).to.equal(200)
      openedBefore = await openSse(`${origin(app)}/events`)
      await redis.stop()
    })
    after(async () => {
      openedBefore?.close()
      await app?.close()
      await redis?.stop()
    })

    behavesWithoutRedis(() => ({ app, user }))

    it('a signed-in client gets 503 (not 401) on /me and PATCH', async () => {
      expectError(await app.http().get('/me').set('Cookie', cookie), 503, 'service_unavailable')
      expectError(
        await app.http().patch(`/users/${user.id}`).set('Cookie', cookie).send({ name: 'X' }),
        503,
        'service_unavailable',
      )
    })

    it('uses Redis again once it is back: SSE streams get a resync event, login works, /users is cached again', async () => {
      const openedDuring = await openSse(`${origin(app)}/events`)
      try {
        await redis.restart()
        await waitUntil(() => app.services.redis.isReady, 15_000, 'the app to reconnect to Redis')
        for (const stream of [openedBefore, openedDuring]) {
          await stream.waitFor((event) => event.event === 'resync', 15_000, 'resync event')
        }
      } finally {
        openedDuring.close()
      }
      const res = await app.http().get('/healthz')
      expect(res.body).to.deep.equal({ status: 'ok', redis: 'up', database: 'up' })
      await logIn(app, user)
      // What was written while Redis was down (the sign-ups above) invalidates `users` once the
      // outbox relays it: a fill racing that invalidation is rightly not stored. Wait for it.
      const deadline = Date.now() + 15_000
      while ((await query<{ n: number }>('SELECT count(*)::int AS n FROM "Outbox"'))[0]?.n !== 0) {
        if (Date.now() > deadline) expect.fail('the outbox was not relayed within 15 s of Redis coming back')
        await new Promise((resolve) => setTimeout(resolve, 50))
      }
      const url = `/users?after=${user.id - 1}&limit=3`
      expect((await app.http().get(url)).headers['x-cache']).to.equal('MISS')
      expect((await app.http().get(url)).headers['x-cache']).to.equal('HIT')
    })
  })

  describe('stalled (redis-server frozen with SIGSTOP: connections open, no answers)', () => {
    let redis: DisposableRedis
    let app: TestApp
    let user: CreatedUser
    before(async () => {
      redis = await startDisposableRedis()
      app = await startApp({ REDIS_URL: redis.url })
      user = await signUp(app, { name: 'Stalled Redis' })
      redis.pause()
    })
    after(async () => {
      redis?.resume()
      await app?.close()
      await redis?.stop()
    })

    it('GET /users and /users/:id answer from the database', async () => {
      const list = await app.http().get(`/users?after=${user.id - 1}`)
      expect(list.status, list.text).to.equal(200)
      expect(list.headers['x-cache']).to.equal('BYPASS')
      const one = await app.http().get(`/users/${user.id}`)
      expect(one.status, one.text).to.equal(200)
      expect(one.body.name).to.equal('Stalled Redis')
    })

    it('POST /users signs up (201)', async () => {
      const email = uniqueEmail('stalled')
      const res = await app.http().post('/users').send({ email, name: 'Stalled Signup', password: PASSWORD })
      expect(res.status, res.text).to.equal(201)
    })

    it('POST /login answers 503 JSON', async () => {
      const res = await app.http().post('/login').send({ email: user.email, password: user.password })
      expectError(res, 503, 'service_unavailable')
    })

    it("GET /healthz answers 200 with redis 'down', status 'degraded'", async () => {
      const res = await app.http().get('/healthz')
      expect(res.status).to.equal(200)
      expect(res.body).to.deep.equal({ status: 'degraded', redis: 'down', database: 'up' })
    })
  })

  describe('signed-in clients while Redis stalls (frozen, then back with its data)', () => {
    let redis: DisposableRedis
    let app: TestApp
    let user: CreatedUser
    before(async () => {
      redis = await startDisposableRedis()
      app = await startApp({ REDIS_URL: redis.url })
      user = await signUp(app, { name: 'Signs Out' })
    })
    after(async () => {
      redis?.resume()
      await app?.close()
      await redis?.stop()
    })

    /** Runs `request` while Redis is frozen, then lets Redis go on and waits until the app uses it again. */
    async function whileFrozen<T>(request: () => Promise<T>): Promise<T> {
      redis.pause()
      let result: T
      try {
        result = await request()
      } finally {
        redis.resume()
      }
      const deadline = Date.now() + 10_000
      while ((await app.http().get('/healthz')).body.redis !== 'up') {
        if (Date.now() > deadline) throw new Error('the app did not see Redis again')
      }
      return result
    }

    it('POST /logout answers 503 when it cannot end the session, which still works once Redis is back', async () => {
      const cookie = await logIn(app, user)
      const res = await whileFrozen(() => app.http().post('/logout').set('Cookie', cookie))
      const me = await app.http().get('/me').set('Cookie', cookie)
      // either refuse (503, the client keeps its cookie and tries again) or really end the session
      if (res.status === 503) expectError(res, 503, 'service_unavailable')
      else {
        expect(res.status).to.equal(204)
        expect(me.status, 'logout answered 204, yet the session still works once Redis is back').to.equal(401)
      }
    })

    it('GET /me answers 503 (not 401) to a signed-in client while the store cannot tell', async () => {
      const cookie = await logIn(app, user)
      const res = await whileFrozen(() => app.http().get('/me').set('Cookie', cookie))
      expectError(res, 503, 'service_unavailable')
      expect((await app.http().get('/me').set('Cookie', cookie)).status, 'the session is still there').to.equal(200)
    })

    it('POST /logout-everywhere answers 503 (not 401) while the store cannot tell; sessions unchanged', async () => {
      const cookie = await logIn(app, user)
      const res = await whileFrozen(() => app.http().post('/logout-everywhere').set('Cookie', cookie))
      expectError(res, 503, 'service_unavailable')
      expect((await app.http().get('/me').set('Cookie', cookie)).status).to.equal(200)
    })
  })
})
