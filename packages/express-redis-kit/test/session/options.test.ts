import { createHash } from 'node:crypto'
import { expect } from 'chai'
import request from 'supertest'
import { type SessionOptions, session } from '../../src/index.js'
import { connectRedis, type RedisClient, uniquePrefix } from '../helpers/redis.js'
import {
  sessionApp,
  sessionIdOf,
  sessionKey,
  setCookieOf,
  signedCookieHeader,
  userTagOf,
} from '../helpers/session-app.js'

const DAY = 86_400_000

describe('session options', () => {
  let client: RedisClient
  before(async () => {
    client = await connectRedis()
  })
  after(async () => {
    await client.close()
  })

  describe('defaults', () => {
    it("name 'sid' and prefix 'sess:': the session is the hash sess:{<user tag>}:<SHA-256 of the token> with c, s and d:<field>", async () => {
      const app = sessionApp(session({ client }))
      const login = await request(app).post('/login?user=7')
      const value = sessionIdOf(login)
      const key = `sess:{${value.slice(0, 11)}}:${createHash('sha256').update(value.slice(12)).digest('base64url')}`
      expect(key).to.equal(sessionKey('sess:', value))
      try {
        const hash = (await client.hGetAll(key)) as Record<string, string>
        expect(Object.keys(hash).sort()).to.deep.equal(['c', 'd:userId', 's'])
        expect(hash['d:userId']).to.equal('7')
        expect(Number(hash.c)).to.be.closeTo(Date.now(), 60_000)
        expect(Number(hash.s)).to.equal(Number(hash.c))
        // TTL: the 7-day idle timeout.
        const ttl = await client.pTTL(key)
        expect(ttl).to.be.within(7 * DAY - 60_000, 7 * DAY)
      } finally {
        await client.del(key)
      }
    })

    it('cookie: HttpOnly, SameSite=Lax, Path=/, host-only, not Secure over plain HTTP, Max-Age of the 30-day absolute timeout', async () => {
      const app = sessionApp(session({ client, prefix: uniquePrefix('sess-defaults') }))
      const login = await request(app).post('/login?user=7')
      const cookie = setCookieOf(login)
      expect(cookie?.attributes).to.include({ httponly: true, samesite: 'Lax', path: '/', 'max-age': '2592000' })
      expect(cookie?.attributes).to.not.have.any.keys('secure', 'domain', 'partitioned')
      const expires = new Date(String(cookie?.attributes.expires)).getTime()
      expect(expires).to.be.closeTo(Date.now() + 30 * DAY, 60_000)
    })

    it('idleTimeout defaults to 7 days, enforced from the stored last-seen time', async () => {
      const prefix = uniquePrefix('sess-default-idle')
      const app = sessionApp(session({ client, prefix }))
      const id = sessionIdOf(await request(app).post('/login?user=7'))
      const key = sessionKey(prefix, id)
      const seen = Number(await client.hGet(key, 's'))
      await client.hSet(key, 's', seen - 7 * DAY + 60_000)
      const alive = await request(app).get('/me').set('Cookie', signedCookieHeader(id))
      expect(alive.body.data).to.deep.equal({ userId: 7 })
      await client.hSet(key, 's', seen - 7 * DAY)
      const dead = await request(app).get('/me').set('Cookie', signedCookieHeader(id))
      expect(dead.body.data).to.deep.equal({})
    })

    it('absoluteTimeout defaults to 30 days, enforced from the stored creation time', async () => {
      const prefix = uniquePrefix('sess-default-absolute')
      const app = sessionApp(session({ client, prefix }))
      const id = sessionIdOf(await request(app).post('/login?user=7'))
      const key = sessionKey(prefix, id)
      const created = Number(await client.hGet(key, 'c'))
      await client.hSet(key, 'c', created - 30 * DAY + 60_000)
      const alive = await request(app).get('/me').set('Cookie', signedCookieHeader(id))
      expect(alive.body.data).to.deep.equal({ userId: 7 })
      await client.hSet(key, 'c', created - 30 * DAY)
      const dead = await request(app).get('/me').set('Cookie', signedCookieHeader(id))
      expect(dead.body.data).to.deep.equal({})
    })
  })

  describe('name', () => {
    it('names the cookie; a cookie of another name is not read', async () => {
      const prefix = uniquePrefix('sess-name')
      const app = sessionApp(session({ client, prefix, name: '__Host-app.sid' }))
      const login = await request(app).post('/login?user=7')
      expect(setCookieOf(login)).to.equal(undefined)
      const id = sessionIdOf(login, 'current secret', '__Host-app.sid')
      const me = await request(app)
        .get('/me')
        .set('Cookie', signedCookieHeader(id, 'current secret', '__Host-app.sid'))
      expect(me.body.data).to.deep.equal({ userId: 7 })
      const other = await request(app).get('/me').set('Cookie', signedCookieHeader(id))
      expect(other.body.data).to.deep.equal({})
    })
  })

  describe('prefix', () => {
    it('prefixes every key: the session hash and the user index', async () => {
      const prefix = uniquePrefix('sess-prefix')
      const app = sessionApp(session({ client, prefix, userKey: 'userId' }))
      const value = sessionIdOf(await request(app).post('/login?user=7'))
      const hash = createHash('sha256').update(value.slice(12)).digest('base64url')
      expect(await client.exists(`${prefix}{${userTagOf(7)}}:${hash}`)).to.equal(1)
      expect(await client.zRange(`${prefix}{${userTagOf(7)}}:user:7`, 0, -1)).to.deep.equal([hash])
    })
  })

  describe('cookie.secure', () => {
    const login = async (options: SessionOptions['cookie'], trustProxy: boolean, headers: Record<string, string>) => {
      const app = sessionApp(session({ client, prefix: uniquePrefix('sess-secure'), cookie: options }), { trustProxy })
      let test = request(app).post('/login?user=7')
      for (const [name, value] of Object.entries(headers)) test = test.set(name, value)
      const res = await test
      expect(res.status).to.equal(200)
      return setCookieOf(res)?.attributes ?? {}
    }

    it("'auto' (default) behind a trusted proxy that says HTTPS: Secure", async () => {
      expect(await login(undefined, true, { 'X-Forwarded-Proto': 'https' })).to.have.property('secure', true)
    })
    it("'auto' behind a trusted proxy over plain HTTP: not Secure", async () => {
      expect(await login(undefined, true, { 'X-Forwarded-Proto': 'http' })).to.not.have.property('secure')
    })
    it("'auto' without trust proxy: a client's X-Forwarded-Proto: https is not believed", async () => {
      expect(await login(undefined, false, { 'X-Forwarded-Proto': 'https' })).to.not.have.property('secure')
    })
    it('true: Secure even over plain HTTP', async () => {
      expect(await login({ secure: true }, false, {})).to.have.property('secure', true)
    })
    it('false: never Secure, even over HTTPS', async () => {
      expect(await login({ secure: false }, true, { 'X-Forwarded-Proto': 'https' })).to.not.have.property('secure')
    })
  })

  describe('other cookie attributes', () => {
    it("sameSite 'strict', httpOnly false", async () => {
      const app = sessionApp(
        session({ client, prefix: uniquePrefix('sess-attrs'), cookie: { sameSite: 'strict', httpOnly: false } }),
      )
      const attributes = setCookieOf(await request(app).post('/login?user=7'))?.attributes
      expect(attributes).to.include({ samesite: 'Strict' })
      expect(attributes).to.not.have.property('httponly')
    })

    it("sameSite 'none' with secure true: SameSite=None; Secure", async () => {
      const app = sessionApp(
        session({ client, prefix: uniquePrefix('sess-attrs'), cookie: { sameSite: 'none', secure: true } }),
      )
      const attributes = setCookieOf(await request(app).post('/login?user=7'))?.attributes
      expect(attributes).to.include({ samesite: 'None', secure: true })
    })

    it('path, domain and partitioned are set on the cookie and on the cookie that clears it', async () => {
      const cookie = { path: '/app', domain: 'example.com', partitioned: true, secure: true }
      const app = sessionApp(session({ client, prefix: uniquePrefix('sess-attrs'), cookie }))
      const login = await request(app).post('/login?user=7')
      const set = setCookieOf(login)
      expect(set?.attributes).to.include({ path: '/app', domain: 'example.com', partitioned: true, secure: true })
      const logout = await request(app).post('/logout').set('Cookie', `sid=${set?.raw}`)
      const cleared = setCookieOf(logout)
      expect(cleared?.value).to.equal('')
      expect(cleared?.attributes).to.include({ path: '/app', domain: 'example.com', partitioned: true, secure: true })
    })

    it('Max-Age is what is left of the absolute timeout (re-sent with the re-signed cookie after a secret rotation)', async () => {
      const prefix = uniquePrefix('sess-maxage')
      const app = sessionApp(session({ client, prefix, idleTimeout: '10m', absoluteTimeout: '15m' }), {
        secrets: ['current secret', 'an-old-secret'],
      })
      const login = await request(app).post('/login?user=7')
      expect(setCookieOf(login)?.attributes['max-age']).to.equal('900')
      const id = sessionIdOf(login)
      const key = sessionKey(prefix, id)
      const created = Number(await client.hGet(key, 'c'))
      // 14 of its 15 minutes are used up: the cookie may live one more minute, not ten.
      await client.hSet(key, 'c', created - 14 * 60_000)
      const resigned = await request(app)
        .post('/set/color?value=red')
        .set('Cookie', signedCookieHeader(id, 'an-old-secret'))
      const maxAge = Number(setCookieOf(resigned)?.attributes['max-age'])
      expect(maxAge).to.be.within(50, 60)
      expect(await client.pTTL(key)).to.be.within(50_000, 60_000)
    })
  })

  describe('invalid options throw a TypeError (code ERK_INVALID_OPTION) naming the option', () => {
    const cases: [string, Record<string, unknown>, RegExp[]][] = [
      ["idleTimeout 'x'", { idleTimeout: 'x' }, [/`idleTimeout`/, /'x'|"x"/]],
      ['idleTimeout 0', { idleTimeout: 0 }, [/`idleTimeout`/]],
      ['idleTimeout -5', { idleTimeout: -5 }, [/`idleTimeout`/]],
      ["absoluteTimeout '2 years'", { absoluteTimeout: '2 years' }, [/`absoluteTimeout`/]],
      [
        'absoluteTimeout shorter than idleTimeout',
        { idleTimeout: '2s', absoluteTimeout: '1s' },
        [/idleTimeout/, /absoluteTimeout/],
      ],
      ["cookie.sameSite 'bad'", { cookie: { sameSite: 'bad' } }, [/`cookie\.sameSite`/, /bad/]],
      [
        "cookie.sameSite 'none' with cookie.secure false",
        { cookie: { sameSite: 'none', secure: false } },
        [/`cookie\.secure`/, /sameSite/],
      ],
      ["cookie.secure 'yes'", { cookie: { secure: 'yes' } }, [/`cookie\.secure`/]],
      ["cookie.path 'app'", { cookie: { path: 'app' } }, [/`cookie\.path`/]],
      ['cookie.httpOnly 1', { cookie: { httpOnly: 1 } }, [/`cookie\.httpOnly`/]],
      ['cookie.maxAge (unknown)', { cookie: { maxAge: 1000 } }, [/`cookie\.maxAge`/, /\(use `idleTimeout`/]],
      ["secret (express-session's option; unknown here)", { secret: 'keyboard cat' }, [/`secret`/, /cookie-parser/]],
      ["store (express-session's option; unknown here)", { store: {} }, [/`store`/, /client/]],
      ['an unknown option', { rollingg: true }, [/`rollingg`/]],
      ['client missing', { client: undefined }, [/`client`/]],
      ['client not a Redis client', { client: {} }, [/`client`/]],
      ["name 'my sid' (not a cookie name)", { name: 'my sid' }, [/`name`/]],
      ["prefix 'a{b}'", { prefix: 'a{b}' }, [/`prefix`/]],
      ["userKey ''", { userKey: '' }, [/`userKey`/]],
      ["userKey 'passport..user' (an empty step)", { userKey: 'passport..user' }, [/`userKey`/, /dotted path/]],
      ['userKey 7', { userKey: 7 }, [/`userKey`/]],
      ["onRedisError 'ignore'", { onRedisError: 'ignore' }, [/`onRedisError`/]],
      ['timeoutMs 0', { timeoutMs: 0 }, [/`timeoutMs`/]],
      ['timeoutMs 1.5', { timeoutMs: 1.5 }, [/`timeoutMs`/]],
      ['logger without warn()', { logger: { error() {} } }, [/`logger`/]],
    ]
    for (const [name, options, messages] of cases) {
      it(name, () => {
        let thrown: unknown
        try {
          session({ client, ...options } as unknown as SessionOptions)
        } catch (error) {
          thrown = error
        }
        expect(thrown).to.be.instanceOf(TypeError)
        expect((thrown as { code?: string }).code).to.equal('ERK_INVALID_OPTION')
        for (const message of messages) expect((thrown as Error).message).to.match(message)
      })
    }

    it('an option given as undefined takes its default', () => {
      expect(() =>
        session({ client, name: undefined, cookie: { secure: undefined }, timeoutMs: undefined }),
      ).to.not.throw()
    })
  })
})
