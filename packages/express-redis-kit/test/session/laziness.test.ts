import { expect } from 'chai'
import type { Express } from 'express'
import request from 'supertest'
import { session } from '../../src/index.js'
import { connectRedis, type RedisClient, uniquePrefix } from '../helpers/redis.js'
import {
  SessionClient,
  sessionApp,
  sessionIdOf,
  sessionKey,
  setCookieOf,
  signedCookieHeader,
} from '../helpers/session-app.js'
import { commandCounter, type DisposableStore, sleep, startDisposableStore } from '../helpers/session-redis.js'

/**
 * Commands that would be a second round trip next to a read's one HGETALL. (Redis also
 * counts what a script runs inside, e.g. a save's HSET: those are part of its one EVALSHA,
 * and `writes` shows what wrote.)
 */
const DIRECT_COMMANDS = ['evalsha', 'eval', 'del', 'zrem', 'hmget']

describe('session laziness, rolling refresh and Cache-Control', () => {
  let client: RedisClient
  before(async () => {
    client = await connectRedis()
  })
  after(async () => {
    await client.close()
  })

  describe('lazy: unchanged sessions cost one read and no write', () => {
    // A Redis (or cluster) of our own, so that command counts are exact.
    let store: DisposableStore
    let counted: RedisClient
    let counter: ReturnType<typeof commandCounter>
    before(async () => {
      store = await startDisposableStore()
      counted = await store.connect()
      counter = commandCounter(store.addresses)
    })
    after(async () => {
      await counted?.close()
      await store?.stop()
    })

    it('a read-only request: no Set-Cookie, exactly one Redis command (the load, a plain HGETALL), no write', async () => {
      const prefix = uniquePrefix('sess-lazy')
      const app = sessionApp(session({ client: counted, prefix }))
      const id = sessionIdOf(await request(app).post('/login?user=7'))
      const cookie = signedCookieHeader(id)
      await request(app).get('/me').set('Cookie', cookie)
      const key = sessionKey(prefix, id)
      const seen = await counted.hGet(key, 's')
      const ttl = Number(await counted.pTTL(key))
      await sleep(20)

      let res: request.Response | undefined
      const delta = await counter.during(async () => {
        res = await request(app).get('/me').set('Cookie', cookie)
      })
      expect(res?.body.data).to.deep.equal({ userId: 7 })
      expect(setCookieOf(res as request.Response)).to.equal(undefined)
      expect(res?.headers['cache-control']).to.equal(undefined)
      const calls = JSON.stringify(delta.calls)
      expect(delta.calls.hgetall, calls).to.equal(1)
      expect(delta.total, calls).to.equal(1)
      for (const command of DIRECT_COMMANDS) expect(delta.calls[command] ?? 0, `${command} in ${calls}`).to.equal(0)
      expect(delta.writes, calls).to.equal(0)
      expect(await counted.hGet(key, 's')).to.equal(seen)
      expect(await counted.pTTL(key)).to.be.at.most(ttl)
    })

    it('a request without a cookie that does not touch the session: no Redis command, no cookie', async () => {
      const app = sessionApp(session({ client: counted, prefix: uniquePrefix('sess-lazy') }))
      let res: request.Response | undefined
      const delta = await counter.during(async () => {
        res = await request(app).get('/me')
      })
      expect(res?.body.data).to.deep.equal({})
      expect(setCookieOf(res as request.Response)).to.equal(undefined)
      expect(delta.total, JSON.stringify(delta.calls)).to.equal(0)
    })

    it('a new session that stays empty is never stored and gets no cookie', async () => {
      const prefix = uniquePrefix('sess-lazy-empty')
      const ids: string[] = []
      const app = sessionApp(session({ client: counted, prefix }), {
        routes: (app) =>
          app.post('/empty', async (req, res) => {
            ids.push(req.session.handle)
            req.session.color = 'red'
            delete req.session.color
            req.session.cart = undefined
            await req.session.touch()
            await req.session.save()
            res.json({ ok: true })
          }),
      })
      let res: request.Response | undefined
      const delta = await counter.during(async () => {
        res = await request(app).post('/empty')
      })
      expect(res?.status).to.equal(200)
      expect(setCookieOf(res as request.Response)).to.equal(undefined)
      expect(res?.headers['cache-control']).to.equal(undefined)
      expect(delta.total, JSON.stringify(delta.calls)).to.equal(0)
      // No command at all reached Redis (delta.total 0 above): nothing was stored.
      expect(ids[0], 'a handle even before it is stored').to.match(/^[A-Za-z0-9_-]{22}$/)
    })

    it('setting a field to the value it already has is no change: no write, no cookie', async () => {
      const prefix = uniquePrefix('sess-lazy-same')
      const app = sessionApp(session({ client: counted, prefix, idleTimeout: '1h' }))
      const user = new SessionClient(app)
      await user.post('/set/color?value=red')
      await user.post('/set/color?value=red') // warm-up (script load)
      let res: request.Response | undefined
      const delta = await counter.during(async () => {
        res = await user.post('/set/color?value=red')
      })
      expect(setCookieOf(res as request.Response)).to.equal(undefined)
      expect(delta.writes, JSON.stringify(delta.calls)).to.equal(0)
    })
  })

  describe('rolling refresh (at most once per tenth of the idle timeout)', () => {
    // A refresh moves lastSeenAt and the TTL in Redis; the cookie already lives until the
    // absolute deadline, so no Set-Cookie is needed (nor sent: it could race a login).
    it('idle 10 s: a read right after a write does not refresh; a read after more than 1 s does', async () => {
      const prefix = uniquePrefix('sess-refresh')
      const app = sessionApp(session({ client, prefix, idleTimeout: '10s' }))
      const id = sessionIdOf(await request(app).post('/login?user=7'))
      const key = sessionKey(prefix, id)
      const seen = Number(await client.hGet(key, 's'))
      const early = await request(app).get('/me').set('Cookie', signedCookieHeader(id))
      expect(setCookieOf(early)).to.equal(undefined)
      expect(Number(await client.hGet(key, 's'))).to.equal(seen)

      await sleep(1_100)
      const late = await request(app).get('/me').set('Cookie', signedCookieHeader(id))
      expect(late.body.data).to.deep.equal({ userId: 7 })
      expect(setCookieOf(late)).to.equal(undefined)
      expect(Number(await client.hGet(key, 's'))).to.be.at.least(seen + 1_100)
      expect(await client.pTTL(key)).to.be.greaterThan(9_000)
    })

    it('idle 1 s: a read after more than 100 ms extends the session', async () => {
      const prefix = uniquePrefix('sess-refresh')
      const app = sessionApp(session({ client, prefix, idleTimeout: '1s' }))
      const id = sessionIdOf(await request(app).post('/login?user=7'))
      const key = sessionKey(prefix, id)
      const seen = Number(await client.hGet(key, 's'))
      await sleep(150)
      const read = await request(app).get('/me').set('Cookie', signedCookieHeader(id))
      expect(read.body.data).to.deep.equal({ userId: 7 })
      expect(Number(await client.hGet(key, 's'))).to.be.at.least(seen + 150)
    })

    it('idle 1 s: reading every 400 ms for 2.5 s keeps the session alive', async () => {
      const app = sessionApp(session({ client, prefix: uniquePrefix('sess-rolling'), idleTimeout: '1s' }))
      const user = new SessionClient(app)
      await user.post('/login?user=7')
      const start = Date.now()
      while (Date.now() - start < 2_500) {
        await sleep(400)
        expect(await user.data()).to.deep.equal({ userId: 7 })
      }
    })

    it('idle 1 s, absolute 2 s: reading every 400 ms keeps it alive, but it dies at the absolute timeout', async () => {
      const app = sessionApp(
        session({ client, prefix: uniquePrefix('sess-rolling-abs'), idleTimeout: '1s', absoluteTimeout: '2s' }),
      )
      const user = new SessionClient(app)
      await user.post('/login?user=7')
      const loggedInAt = Date.now()
      let diedAfter: number | undefined
      while (diedAfter === undefined && Date.now() - loggedInAt < 5_000) {
        await sleep(400)
        const sentAt = Date.now() - loggedInAt
        const data = await user.data()
        if (Object.keys(data).length === 0) diedAfter = sentAt
        // Well within both timeouts (the idle one is rolled by these reads): alive.
        else expect(data).to.deep.equal({ userId: 7 })
        if (sentAt < 1_500) expect(data, `read ${sentAt} ms after login`).to.deep.equal({ userId: 7 })
      }
      expect(diedAfter, 'the session outlived its absolute timeout').to.not.equal(undefined)
      expect(diedAfter).to.be.below(3_000)
    })

    it('a session kept alive by writes alone keeps a cookie that lives as long as the session', async () => {
      // idle 5 s: the server extends the session on every write; the browser drops the cookie
      // Max-Age after it last received it. The two must not drift apart by more than the
      // refresh interval (500 ms) plus the 1 s rounding of Max-Age.
      const app = sessionApp(session({ client, prefix: uniquePrefix('sess-rolling-writes'), idleTimeout: '5s' }))
      const user = new SessionClient(app)
      let cookieExpiresAt = 0
      let lastWriteAt = 0
      const start = Date.now()
      for (let i = 0; Date.now() - start < 2_500; i++) {
        const res = await user.post(`/set/color?value=${i}`)
        lastWriteAt = Date.now()
        const cookie = setCookieOf(res)
        if (cookie) cookieExpiresAt = Date.now() + Number(cookie.attributes['max-age']) * 1_000
        await sleep(100)
      }
      expect(await user.data()).to.have.property('color')
      const sessionExpiresAt = lastWriteAt + 5_000
      expect(
        cookieExpiresAt,
        `the cookie expires ${sessionExpiresAt - cookieExpiresAt} ms before the session it names`,
      ).to.be.at.least(sessionExpiresAt - 1_500)
    })
  })

  describe('Cache-Control: no-store on every response that sets or clears the cookie', () => {
    const routes = (app: Express) =>
      app.get('/public', (req, res) => {
        res.set('Cache-Control', 'public, max-age=60')
        if (req.query.set) req.session.color = String(req.query.set)
        res.json({ data: req.session })
      })

    it('login and logout: no-store; a read-only response and touch (no cookie): untouched', async () => {
      const app = sessionApp(session({ client, prefix: uniquePrefix('sess-cache') }), { routes })
      const user = new SessionClient(app)
      const login = await user.post('/login?user=7')
      expect(setCookieOf(login)).to.not.equal(undefined)
      expect(login.headers['cache-control']).to.equal('no-store')
      const read = await user.get('/me')
      expect(read.headers['cache-control']).to.equal(undefined)
      const touch = await user.post('/touch')
      expect(setCookieOf(touch)).to.equal(undefined)
      expect(touch.headers['cache-control']).to.equal(undefined)
      const publicRead = await user.get('/public')
      expect(publicRead.headers['cache-control'], 'the app’s own header on a read-only response').to.equal(
        'public, max-age=60',
      )
      const logout = await user.post('/logout')
      expect(setCookieOf(logout)?.value).to.equal('')
      expect(logout.headers['cache-control']).to.equal('no-store')
    })

    it('overrides a public Cache-Control of the app when the response sets the cookie', async () => {
      const app = sessionApp(session({ client, prefix: uniquePrefix('sess-cache') }), { routes })
      const res = await request(app).get('/public?set=red')
      expect(setCookieOf(res)).to.not.equal(undefined)
      expect(res.headers['cache-control']).to.equal('no-store')
    })

    it('a change to an existing session: no-store on the response', async () => {
      const app = sessionApp(session({ client, prefix: uniquePrefix('sess-cache') }))
      const user = new SessionClient(app)
      await user.post('/login?user=7')
      const change = await user.post('/set/color?value=red')
      if (setCookieOf(change)) expect(change.headers['cache-control']).to.equal('no-store')
      else expect(change.headers['cache-control']).to.equal(undefined)
    })

    it('the refresh of a read-only request sends no cookie, so the app’s Cache-Control stays', async () => {
      const app = sessionApp(session({ client, prefix: uniquePrefix('sess-cache'), idleTimeout: '1s' }), { routes })
      const user = new SessionClient(app)
      await user.post('/login?user=7')
      await sleep(150)
      const refreshed = await user.get('/public')
      expect(setCookieOf(refreshed)).to.equal(undefined)
      expect(refreshed.headers['cache-control']).to.equal('public, max-age=60')
    })
  })
})
