import { createHash } from 'node:crypto'
import { expect } from 'chai'
import express, { type Express } from 'express'
import expressSession from 'express-session'
import request from 'supertest'
import { RedisStore, type RedisStoreOptions } from '../../src/express-session/index.js'
import { EXPRESS_MAJORS, passportApp } from '../helpers/passport-app.js'
import { connectRedis, dumpKeys, type RedisClient, uniquePrefix } from '../helpers/redis.js'
import { checkpoint, sign } from '../helpers/session-app.js'
import { commandCounter, type DisposableStore, startDisposableStore } from '../helpers/session-redis.js'

const SECRET = 'keyboard cat'

/**
 * express-session with `store`, as its README sets it up:
 *   POST /set/:field?value=v   sets a field;   GET /me   { data, sessionID }
 *   POST /logout               req.session.destroy(cb)
 *   GET  /slow                 waits for `gate`, then sets `late`
 */
function storeApp(store: RedisStore, options: { maxAge?: number; gate?: () => Promise<void> } = {}): Express {
  const app = express()
  app.use(
    expressSession({
      store,
      secret: SECRET,
      resave: false,
      saveUninitialized: false,
      cookie: options.maxAge === undefined ? {} : { maxAge: options.maxAge },
    }),
  )
  app.post('/set/:field', (req, res) => {
    ;(req.session as unknown as Record<string, unknown>)[req.params.field] = String(req.query.value ?? 'x')
    res.json({ ok: true })
  })
  app.get('/me', (req, res) => {
    const { cookie: _cookie, ...data } = req.session as unknown as Record<string, unknown>
    res.json({ data, sessionID: req.sessionID })
  })
  app.post('/logout', (req, res, next) =>
    req.session.destroy((error) => (error ? next(error) : res.json({ ok: true }))),
  )
  app.get('/slow', async (req, res) => {
    await options.gate?.()
    ;(req.session as unknown as Record<string, unknown>).late = 'written after the logout'
    res.json({ ok: true })
  })
  return app
}

/** The session id in a response's `Set-Cookie` (`connect.sid=s:<id>.<signature>`). */
function sidOf(res: request.Response): string {
  const header = ((res.headers['set-cookie'] as unknown as string[] | undefined) ?? []).find((cookie) =>
    cookie.startsWith('connect.sid='),
  )
  if (!header) throw new Error('no connect.sid cookie')
  const value = decodeURIComponent(header.slice('connect.sid='.length).split(';')[0]!)
  return value.slice(2, value.lastIndexOf('.'))
}

const cookieFor = (sid: string) => `connect.sid=${encodeURIComponent(`s:${sign(sid, SECRET)}`)}`

describe('express-redis-kit/express-session: RedisStore', () => {
  let client: RedisClient
  before(async () => {
    client = await connectRedis()
  })
  after(async () => {
    await client.close()
  })
  const storeWith = (options: Partial<RedisStoreOptions> = {}) =>
    new RedisStore({ client, prefix: uniquePrefix('es-store'), ...options })

  describe('in express-session', () => {
    it('drops into session({ store }): a session is stored, read back, changed and destroyed', async () => {
      const app = storeApp(storeWith())
      const agent = request.agent(app)
      const first = await agent.post('/set/color?value=red')
      const sid = sidOf(first)
      await agent.post('/set/size?value=L')
      const me = await agent.get('/me')
      expect(me.body).to.deep.equal({ data: { color: 'red', size: 'L' }, sessionID: sid })
      expect((await agent.post('/logout')).body).to.deep.equal({ ok: true })
      const after = await request(app).get('/me').set('Cookie', cookieFor(sid))
      expect(after.body.data).to.deep.equal({})
      expect(after.body.sessionID).to.not.equal(sid)
    })

    it('Redis holds no session id: every key and value under the prefix is free of it', async () => {
      const prefix = uniquePrefix('es-no-sid')
      const app = storeApp(new RedisStore({ client, prefix, userKey: 'user' }))
      const sids: string[] = []
      for (let i = 0; i < 5; i++) {
        const agent = request.agent(app)
        sids.push(sidOf(await agent.post('/set/user?value=7')))
        await agent.post('/set/color?value=red')
      }
      // One destroyed: its tombstone names it no more than the live ones do.
      await request(app).post('/logout').set('Cookie', cookieFor(sids[0]!))
      const dump = await dumpKeys(prefix)
      expect(dump.size).to.be.at.least(6) // 5 sessions and the user's index
      const everything = [...dump].flat(2).join('\n')
      for (const sid of sids) {
        expect(everything).to.not.include(sid)
        expect(everything).to.not.include(encodeURIComponent(sid))
      }
    })

    it('a session lives in Redis until its cookie expires, else for `ttl`', async () => {
      const prefix = uniquePrefix('es-ttl')
      const withMaxAge = request.agent(storeApp(new RedisStore({ client, prefix }), { maxAge: 60_000 }))
      const store = new RedisStore({ client, prefix, ttl: '1h' })
      const sid = sidOf(await withMaxAge.post('/set/color?value=red'))
      const key = `${prefix}${hashOf(sid)}`
      expect(await client.pTTL(key)).to.be.within(50_000, 60_000)
      const browserSession = request.agent(storeApp(store))
      const other = sidOf(await browserSession.post('/set/color?value=red'))
      expect(await client.pTTL(`${prefix}${hashOf(other)}`)).to.be.within(3_500_000, 3_600_000)
    })

    it('a request in flight cannot write back a session destroyed meanwhile', async () => {
      const gate = checkpoint()
      const store = storeWith()
      const app = storeApp(store, { gate: gate.wait })
      const agent = request.agent(app)
      const sid = sidOf(await agent.post('/set/color?value=red'))
      const slow = agent.get('/slow').then((res) => res)
      await gate.reached
      await request(app).post('/logout').set('Cookie', cookieFor(sid))
      gate.release()
      expect((await slow).status).to.equal(200)
      expect(await store.get(sid)).to.equal(null)
      expect((await request(app).get('/me').set('Cookie', cookieFor(sid))).body.data).to.deep.equal({})
    })
  })

  describe('userKey: per-user listing and revocation (passport on express-session)', () => {
    for (const { name, create } of EXPRESS_MAJORS) {
      it(`${name}: listUserSessions, destroyUserSessions({ except }), destroyUserSession; sign-out leaves the list`, async () => {
        const prefix = uniquePrefix('es-users')
        const store = new RedisStore({ client, prefix, userKey: 'passport.user' })
        const sessions = expressSession({ store, secret: SECRET, resave: false, saveUninitialized: false })
        const app = passportApp(create, sessions)
        const devices = [request.agent(app), request.agent(app), request.agent(app)]
        const sids: string[] = []
        for (const device of devices) {
          const login = await device.post('/login').type('form').send({ username: 'ada', password: 'secret' })
          expect(login.status, JSON.stringify(login.body)).to.equal(200)
          sids.push(sidOf(login))
        }
        const handles = sids.map((sid) => store.handleOf(sid))
        const listed = await store.listUserSessions(7)
        expect(listed.map((entry) => entry.handle).sort()).to.deep.equal([...handles].sort())
        expect(listed[0]!.session).to.have.deep.property('passport', { user: 7 })
        expect(listed[0]!.expiresAt.getTime()).to.be.above(Date.now())
        const grace = request.agent(app)
        await grace.post('/login').type('form').send({ username: 'grace', password: 'secret' })
        expect(await store.listUserSessions(8)).to.have.length(1)

        expect(await store.destroyUserSession(7, handles[0]!)).to.equal(true)
        expect(await store.destroyUserSession(8, handles[1]!), "another user's handle ends nothing").to.equal(false)
        expect(await store.destroyUserSessions(7, { except: handles[2] })).to.equal(1)
        expect((await devices[0]!.get('/me')).body.user).to.equal(null)
        expect((await devices[1]!.get('/me')).body.user).to.equal(null)
        expect((await devices[2]!.get('/me')).body.user).to.deep.equal({ id: 7, name: 'ada' })
        expect((await grace.get('/me')).body.user).to.deep.equal({ id: 8, name: 'grace' })

        expect((await devices[2]!.post('/logout')).status).to.equal(200)
        expect(await store.listUserSessions(7)).to.deep.equal([])
        const everything = [...(await dumpKeys(prefix))].flat(2).join('\n')
        for (const sid of sids) expect(everything).to.not.include(sid)
      })
    }

    it('without userKey the per-user operations refuse (ERK_MISCONFIGURED); a bad handle is ERK_INVALID_ARGUMENT', async () => {
      const plain = storeWith()
      const refused = await plain.listUserSessions(7).catch((error: { code?: string }) => error.code)
      expect(refused).to.equal('ERK_MISCONFIGURED')
      const indexed = storeWith({ userKey: 'user' })
      const bad = await indexed
        .destroyUserSessions(7, { except: 'not a handle' })
        .catch((error: { code?: string }) => error.code)
      expect(bad).to.equal('ERK_INVALID_ARGUMENT')
    })
  })

  describe('touch is cheap', () => {
    let redis: DisposableStore
    let own: RedisClient
    before(async () => {
      redis = await startDisposableStore()
      own = await redis.connect()
    })
    after(async () => {
      await own.close()
      await redis.stop()
    })

    it('a request that changes nothing costs a GET and one PEXPIRE', async () => {
      const app = storeApp(new RedisStore({ client: own, prefix: uniquePrefix('es-touch') }), { maxAge: 60_000 })
      const agent = request.agent(app)
      await agent.post('/set/color?value=red')
      const counter = commandCounter(redis.addresses)
      const delta = await counter.during(() => agent.get('/me'))
      expect(delta.calls).to.deep.equal({ get: 1, pexpire: 1 })
    })
  })

  describe('the store contract (get, set, destroy, touch, all, length, clear)', () => {
    it('with promises and with callbacks', async () => {
      const store = storeWith({ ttl: '1h' })
      const cookie = { originalMaxAge: null }
      await store.set('a', { cookie, color: 'red' } as never)
      expect(await store.get('a')).to.deep.equal({ cookie, color: 'red' })
      const viaCallback = await new Promise((resolve, reject) =>
        store.get('a', (error, session) => (error ? reject(error) : resolve(session))),
      )
      expect(viaCallback).to.deep.equal({ cookie, color: 'red' })
      await new Promise<void>((resolve, reject) =>
        store.set('b', { cookie, color: 'blue' } as never, (error) => (error ? reject(error) : resolve())),
      )
      expect(await store.length()).to.equal(2)
      const all = await store.all()
      expect(
        all.map(({ handle, ...session }) => ({ handle, session })).sort((x, y) => (x.handle < y.handle ? -1 : 1)),
      ).to.deep.equal(
        [
          { handle: store.handleOf('a'), session: { cookie, color: 'red' } },
          { handle: store.handleOf('b'), session: { cookie, color: 'blue' } },
        ].sort((x, y) => (x.handle < y.handle ? -1 : 1)),
      )
      await store.destroy('a')
      expect(await store.get('a')).to.equal(null)
      expect(await store.length(), 'an ended session is not counted').to.equal(1)
      await store.set('a', { cookie, color: 'back' } as never)
      expect(await store.get('a'), 'an ended session stays ended').to.equal(null)
      await store.clear()
      expect(await store.length()).to.equal(0)
      expect(await store.get('b')).to.equal(null)
    })

    it('set() with an expiry in the past ends the session; touch() moves the expiry', async () => {
      const prefix = uniquePrefix('es-contract-ttl')
      const store = new RedisStore({ client, prefix })
      const inAMinute = { originalMaxAge: 60_000, expires: new Date(Date.now() + 60_000).toISOString() }
      await store.set('s', { cookie: inAMinute } as never)
      const key = `${prefix}${hashOf('s')}`
      expect(await client.pTTL(key)).to.be.within(50_000, 60_000)
      await store.touch('s', { cookie: { ...inAMinute, expires: new Date(Date.now() + 120_000) } } as never)
      expect(await client.pTTL(key)).to.be.within(110_000, 120_000)
      await store.set('s', { cookie: { ...inAMinute, expires: new Date(Date.now() - 1000) } } as never)
      expect(await store.get('s')).to.equal(null)
    })

    it("with userKey, touch() moves the session's index entry to its new expiry, and never adds an ended one back", async () => {
      const prefix = uniquePrefix('es-index-touch')
      const store = new RedisStore({ client, prefix, userKey: 'user' })
      const expiring = (ms: number) => ({ user: 7, cookie: { originalMaxAge: ms, expires: new Date(Date.now() + ms) } })
      await store.set('s', expiring(60_000) as never)
      const index = `${prefix}{${userTagOf(7)}}:by-user:7`
      const before = Number(await client.zScore(index, hashOf('s')))
      await store.touch('s', expiring(120_000) as never)
      expect(Number(await client.zScore(index, hashOf('s')))).to.be.above(before + 50_000)
      expect(await client.pTTL(index)).to.be.above(110_000)
      await store.destroyUserSessions(7)
      await store.touch('s', expiring(180_000) as never)
      expect(await client.zScore(index, hashOf('s'))).to.equal(null)
      expect(await store.get('s')).to.equal(null)
    })

    it('a stored value that cannot be parsed is no session, and a warning says so', async () => {
      const warnings: string[] = []
      const prefix = uniquePrefix('es-corrupt')
      const store = new RedisStore({
        client,
        prefix,
        logger: { warn: (message: string) => void warnings.push(message), error: () => {} },
      })
      await client.set(`${prefix}${hashOf('s')}`, '{not json', { PX: 60_000 })
      expect(await store.get('s')).to.equal(null)
      expect(warnings.join('\n')).to.match(/cannot be parsed/)
    })

    it('a custom serializer writes and reads the sessions', async () => {
      const prefix = uniquePrefix('es-serializer')
      const serializer = {
        stringify: (session: unknown) => `v1:${JSON.stringify(session)}`,
        parse: (text: string) => JSON.parse(text.slice(3)),
      }
      const store = new RedisStore({ client, prefix, serializer })
      await store.set('s', { cookie: { originalMaxAge: null }, n: 1 } as never)
      expect(await client.get(`${prefix}${hashOf('s')}`)).to.match(/^v1:\{/)
      expect(await store.get('s')).to.deep.equal({ cookie: { originalMaxAge: null }, n: 1 })
    })
  })

  describe('options', () => {
    const cases: [string, Record<string, unknown>, RegExp[]][] = [
      ["ttl 86400 (connect-redis's seconds)", { ttl: 86_400 }, [/`ttl`/, /bare number is ambiguous/]],
      ["ttl '5 parsecs'", { ttl: '5 parsecs' }, [/`ttl`/]],
      ['disableTTL', { disableTTL: true }, [/`disableTTL`/, /not supported: every session expires/]],
      ['scanCount 0', { scanCount: 0 }, [/`scanCount`/]],
      ['serializer without parse', { serializer: { stringify: JSON.stringify } }, [/`serializer`/]],
      ["userKey 'a..b'", { userKey: 'a..b' }, [/`userKey`/]],
      ['a near miss', { prefx: 'x:' }, [/`prefx`/, /use `prefix`/]],
      ['client missing', { client: undefined }, [/`client`/]],
    ]
    for (const [name, options, messages] of cases) {
      it(name, () => {
        let thrown: unknown
        try {
          new RedisStore({ client, ...options } as unknown as RedisStoreOptions)
        } catch (error) {
          thrown = error
        }
        expect((thrown as { code?: string }).code).to.equal('ERK_INVALID_OPTION')
        for (const message of messages) expect((thrown as Error).message).to.match(message)
      })
    }

    it("connect-redis's scanCount, disableTouch and serializer are supported", async () => {
      const prefix = uniquePrefix('es-disable-touch')
      const store = new RedisStore({ client, prefix, disableTouch: true, scanCount: 10, ttl: '1h' })
      await store.set('s', { cookie: { originalMaxAge: null } } as never)
      await client.pExpire(`${prefix}${hashOf('s')}`, 30_000)
      await store.touch('s', { cookie: { originalMaxAge: null } } as never)
      expect(await client.pTTL(`${prefix}${hashOf('s')}`)).to.be.at.most(30_000)
    })
  })
})

/** The hash tag of a user's index (the first 11 characters of a SHA-256 of `user\n<id>`). */
function userTagOf(user: string | number): string {
  return createHash('sha256').update(`user\n${user}`).digest('base64url').slice(0, 11)
}

function hashOf(sid: string): string {
  return createHash('sha256').update(sid).digest('base64url')
}
