import { expect } from 'chai'
import type { Express } from 'express'
import { session } from '../../src/index.js'
import { connectRedis, type RedisClient, uniquePrefix } from '../helpers/redis.js'
import {
  SessionClient,
  sessionApp,
  sessionIdOf,
  sessionKey,
  setCookieOf,
  userIndexKey,
} from '../helpers/session-app.js'
import { sleep } from '../helpers/session-redis.js'

const DAY = 86_400_000

/**
 * POST /remember?ms=60000|null        sets req.session.cookie.maxAge (and nothing else)
 * POST /expires?in=ms|false           sets req.session.cookie.expires
 * POST /login-for?ms=...              regenerate(), userId = 7, then cookie.maxAge
 * POST /regenerate                    regenerate({ keepData: true })
 * GET  /lifetime                      { maxAge, expires } as req.session.cookie reads them
 */
function lifetimeRoutes(app: Express): void {
  const maxAgeOf = (value: unknown) => (value === 'null' ? null : Number(value))
  app.post('/remember', (req, res) => {
    req.session.cookie.maxAge = maxAgeOf(req.query.ms)
    res.json({ ok: true })
  })
  app.post('/expires', (req, res) => {
    req.session.cookie.expires = req.query.in === 'false' ? false : new Date(Date.now() + Number(req.query.in))
    res.json({ ok: true })
  })
  app.post('/login-for', async (req, res) => {
    await req.session.regenerate()
    req.session.userId = 7
    req.session.cookie.maxAge = maxAgeOf(req.query.ms)
    res.json({ ok: true })
  })
  app.post('/bind', (req, res) => {
    req.session.userId = 7
    res.json({ ok: true })
  })
  app.post('/regenerate', async (req, res) => {
    await req.session.regenerate({ keepData: true })
    res.json({ ok: true })
  })
  app.get('/lifetime', (req, res) => {
    const { maxAge, expires } = req.session.cookie
    res.json({ maxAge, expires: expires?.getTime() ?? null })
  })
}

/** The Max-Age of the session cookie a response sets, in seconds (undefined: none). */
function maxAgeOf(res: Parameters<typeof setCookieOf>[0]): number | undefined {
  const cookie = setCookieOf(res)
  if (!cookie) throw new Error('no Set-Cookie')
  const value = cookie.attributes['max-age']
  return value === undefined ? undefined : Number(value)
}

describe('session: a lifetime of its own (req.session.cookie.maxAge, "remember me")', () => {
  let client: RedisClient
  before(async () => {
    client = await connectRedis()
  })
  after(async () => {
    await client.close()
  })

  it('maxAge = ms at sign-in: the cookie’s Max-Age and the expiry in Redis follow, and later requests keep it', async () => {
    const prefix = uniquePrefix('sess-lifetime')
    const app = sessionApp(session({ client, prefix }), { routes: lifetimeRoutes })
    const user = new SessionClient(app)
    const login = await user.post('/login-for?ms=60000')
    const id = sessionIdOf(login)
    expect(maxAgeOf(login)).to.be.within(59, 60)
    const key = sessionKey(prefix, id)
    const [created, own] = await client.hmGet(key, ['c', 'e'])
    expect(Number(own) - Number(created)).to.equal(60_000)
    expect(await client.pTTL(key)).to.be.within(50_000, 60_000)

    const read = await user.get('/lifetime')
    expect(setCookieOf(read), 'a read sends no cookie').to.equal(undefined)
    expect(read.body.maxAge).to.be.within(50_000, 60_000)
    expect(read.body.expires - Date.now()).to.be.within(49_000, 60_000)
    // A later change keeps the session's own lifetime (and sends no cookie).
    const change = await user.post('/set/color?value=red')
    expect(setCookieOf(change)).to.equal(undefined)
    expect(await client.pTTL(key)).to.be.within(50_000, 60_000)
    expect(await user.data()).to.deep.equal({ userId: 7, color: 'red' })
  })

  it('maxAge = null: a browser-session cookie (no Max-Age, no Expires); Redis keeps the session under its timeouts', async () => {
    const prefix = uniquePrefix('sess-lifetime-browser')
    const app = sessionApp(session({ client, prefix, idleTimeout: '1d' }), { routes: lifetimeRoutes })
    const user = new SessionClient(app)
    const login = await user.post('/login-for?ms=null')
    const cookie = setCookieOf(login)
    expect(cookie?.attributes).to.not.have.property('max-age')
    expect(cookie?.attributes).to.not.have.property('expires')
    const key = sessionKey(prefix, sessionIdOf(login))
    expect(await client.hGet(key, 'e')).to.equal('session')
    expect(await client.pTTL(key)).to.be.within(DAY - 60_000, DAY)
    expect((await user.get('/lifetime')).body).to.deep.equal({ maxAge: null, expires: null })
  })

  it('capped by absoluteTimeout: maxAge of 2 hours on a 1-hour session gives 1 hour', async () => {
    const prefix = uniquePrefix('sess-lifetime-cap')
    const app = sessionApp(session({ client, prefix, idleTimeout: '1h', absoluteTimeout: '1h' }), {
      routes: lifetimeRoutes,
    })
    const login = await new SessionClient(app).post('/login-for?ms=7200000')
    expect(maxAgeOf(login)).to.be.within(3590, 3600)
    expect(await client.pTTL(sessionKey(prefix, sessionIdOf(login)))).to.be.within(3_590_000, 3_600_000)
  })

  it('a short lifetime ends the session on the server: Redis drops it, and with its TTL removed it is refused', async () => {
    const prefix = uniquePrefix('sess-lifetime-short')
    const app = sessionApp(session({ client, prefix }), { routes: lifetimeRoutes })
    const user = new SessionClient(app)
    const key = sessionKey(prefix, sessionIdOf(await user.post('/login-for?ms=400')))
    for (let i = 0; (await client.exists(key)) === 1; i++) {
      if (i > 100) throw new Error('the session outlived its own lifetime in Redis')
      await sleep(50)
    }
    expect(await user.data()).to.deep.equal({})

    // With the TTL removed, the stored deadline still ends it.
    const other = new SessionClient(app)
    const login = await other.post('/login-for?ms=400')
    const otherKey = sessionKey(prefix, sessionIdOf(login))
    const deadline = Number(await client.hGet(otherKey, 'e'))
    await client.persist(otherKey)
    await sleep(Math.max(0, deadline - Date.now()) + 100)
    expect(await other.data()).to.deep.equal({})
  })

  it('a new lifetime for a stored session sends the cookie again (same token) and moves its index entry', async () => {
    const prefix = uniquePrefix('sess-lifetime-change')
    const app = sessionApp(session({ client, prefix, userKey: 'userId' }), { routes: lifetimeRoutes })
    const user = new SessionClient(app)
    const id = sessionIdOf(await user.post('/login?user=7'))
    const remember = await user.post('/remember?ms=120000')
    expect(sessionIdOf(remember), 'the same session, the same token').to.equal(id)
    expect(maxAgeOf(remember)).to.be.within(119, 120)
    const key = sessionKey(prefix, id)
    const own = Number(await client.hGet(key, 'e'))
    // The index entry is the session's hash (the end of its key), scored by its deadline.
    expect(await client.zScore(userIndexKey(prefix, 7), key.slice(key.lastIndexOf(':') + 1))).to.equal(own)
    expect(await client.pTTL(key)).to.be.within(110_000, 120_000)
    expect(await user.data()).to.deep.equal({ userId: 7 })
  })

  it('cookie.expires = a Date sets the lifetime; = false makes a browser-session cookie', async () => {
    const prefix = uniquePrefix('sess-lifetime-expires')
    const app = sessionApp(session({ client, prefix }), { routes: lifetimeRoutes })
    const user = new SessionClient(app)
    await user.post('/login?user=7')
    expect(maxAgeOf(await user.post('/expires?in=90000'))).to.be.within(88, 90)
    const browser = await user.post('/expires?in=false')
    expect(setCookieOf(browser)?.attributes).to.not.have.property('max-age')
    expect(await client.hGet(sessionKey(prefix, user.id()!), 'e')).to.equal('session')
  })

  it('a new session keeps its own lifetime when it moves to its user; regenerate() starts with the default', async () => {
    const prefix = uniquePrefix('sess-lifetime-move')
    const app = sessionApp(session({ client, prefix, userKey: 'userId' }), { routes: lifetimeRoutes })
    const user = new SessionClient(app)
    await user.post('/set/color?value=red')
    await user.post('/remember?ms=60000')
    const bound = await user.post('/bind')
    expect(maxAgeOf(bound), 'moved under the user, with its lifetime').to.be.within(58, 60)
    expect(await client.pTTL(sessionKey(prefix, sessionIdOf(bound)))).to.be.within(50_000, 60_000)
    const regenerated = await user.post('/regenerate')
    expect(maxAgeOf(regenerated), 'the default: what is left of 30 days').to.be.within(30 * 86_400 - 60, 30 * 86_400)
    expect(await user.data()).to.deep.equal({ color: 'red', userId: 7 })
  })

  for (const [query, pattern] of [
    ['ms=0', /`req\.session\.cookie\.maxAge` must be a positive number of milliseconds.*received the number 0/],
    ['ms=-5', /received the number -5/],
    ['ms=abc', /received NaN/],
  ] as const) {
    it(`maxAge ${query.slice(3)} is refused with ERK_INVALID_ARGUMENT (400)`, async () => {
      const app = sessionApp(session({ client, prefix: uniquePrefix('sess-lifetime-bad') }), {
        routes: lifetimeRoutes,
      })
      const res = await new SessionClient(app).post(`/remember?${query}`)
      expect(res.status).to.equal(400)
      expect(res.body.code).to.equal('ERK_INVALID_ARGUMENT')
      expect(res.body.error).to.match(pattern)
    })
  }

  it('expires in the past is refused with ERK_INVALID_ARGUMENT', async () => {
    const app = sessionApp(session({ client, prefix: uniquePrefix('sess-lifetime-past') }), { routes: lifetimeRoutes })
    const res = await new SessionClient(app).post('/expires?in=-1000')
    expect(res.status).to.equal(400)
    expect(res.body.error).to.match(/`req\.session\.cookie\.expires` must be a Date in the future/)
  })
})
