import { randomBytes } from 'node:crypto'
import diagnostics from 'node:diagnostics_channel'
import { request as httpRequest, type Server } from 'node:http'
import { Writable } from 'node:stream'
import { gunzipSync } from 'node:zlib'
import { expect } from 'chai'
import compression from 'compression'
import cookieParser from 'cookie-parser'
import cors from 'cors'
import express, { type Express, type Request, type RequestHandler } from 'express'
import helmet from 'helmet'
import morgan from 'morgan'
import { type CacheEvent, CHANNELS, cached, cacheResponse, rateLimit, session } from '../../src/index.js'
import { eventually, gate, type RawResponse, rawRequest, responseEntryKey, untilStored } from '../helpers/cache-app.js'
import { closeServer, listen } from '../helpers/outage.js'
import { connectRedis, mode, type RedisClient, uniquePrefix } from '../helpers/redis.js'
import { dataOf } from '../helpers/session-app.js'

/*
 * cacheResponse in the stack people run: the sample app's order (helmet, cors, compression,
 * rateLimit, session, cacheResponse, routes) plus morgan, a request id and cookie-parser's
 * signed cookies. Nothing one request's middleware produced may be replayed to another,
 * nothing one client sends may make another client get the wrong answer, and every hit must
 * decode to what the miss decoded to.
 */

const SECRET = 'real stack secret'
const HOST = 'app.example'
const LIMIT = 1000

/** One random body, incompressible, for the slow-reader test. */
const BIG = randomBytes(16 * 1024 * 1024)
/** A compressible text over compression's 1 kB threshold. */
const TEXT = `${'All work and no play makes Jack a dull boy. '.repeat(400)}\n`

interface Stack {
  app: Express
  server: Server
  /** How often each route's handler ran. */
  runs: Map<string, number>
  /** Gates a route waits on, by route name, when a test sets one. */
  gates: Map<string, Promise<void>>
  prefix: string
}

describe(`cacheResponse in a real middleware stack (${mode} Redis)`, () => {
  let client: RedisClient
  let stack: Stack

  before(async () => {
    client = await connectRedis()
  })
  after(async () => {
    await client.close()
  })
  beforeEach(async () => {
    stack = await startStack(client)
  })
  afterEach(async () => {
    await closeServer(stack.server)
  })

  /** A GET (or other method) on a fresh connection, Host app.example unless given. */
  const get = (path: string, headers: Record<string, string> = {}, method = 'GET'): Promise<RawResponse> =>
    rawRequest(stack.server, path, { method, headers: { host: HOST, ...headers } })
  const text = (res: RawResponse): string => res.body.toString()
  const runsOf = (route: string): number => stack.runs.get(route) ?? 0

  /** Signs in (POST /login) and returns the cookie header of the new session. */
  const signIn = async (user: number): Promise<string> => {
    const res = await get(`/login?user=${user}`, {}, 'POST')
    expect(res.status).to.equal(200)
    return cookieOf(res)
  }

  describe('1. headers set before the cache belong to the current request', () => {
    it("a HIT carries the current client's own RateLimit headers, not the filling client's", async () => {
      for (let i = 0; i < 3; i++) await get('/api/users', { 'x-client': 'alice' })
      const alice = await get('/api/users', { 'x-client': 'alice' })
      expect(alice.headers['x-cache']).to.equal('HIT')
      expect(remainingOf(alice)).to.equal(LIMIT - 4)
      const bob = await get('/api/users', { 'x-client': 'bob' })
      expect(bob.headers['x-cache']).to.equal('HIT')
      expect(remainingOf(bob), 'bob has used 1 of his own limit').to.equal(LIMIT - 1)
      expect(bob.headers['ratelimit-policy']).not.to.equal(alice.headers['ratelimit-policy'])
      expect(runsOf('users')).to.equal(1)
    })

    it('a HIT carries its own request id and the CORS headers cors made for it', async () => {
      const miss = await get('/api/users', { origin: 'https://a.example' })
      const hit = await get('/api/users', { origin: 'https://a.example' })
      expect([miss.headers['x-cache'], hit.headers['x-cache']]).to.deep.equal(['MISS', 'HIT'])
      expect(hit.headers['access-control-allow-origin']).to.equal('https://a.example')
      expect(hit.headers['x-request-id']).to.match(/^[0-9a-f-]{36}$/)
      expect(hit.headers['x-request-id']).not.to.equal(miss.headers['x-request-id'])
      // cors says Vary: Origin, which the cache honours: each Origin has its own variant.
      for (const origin of ['https://b.example', 'https://evil.example']) {
        const first = await get('/api/users', { origin })
        const again = await get('/api/users', { origin })
        expect([first.headers['x-cache'], again.headers['x-cache']]).to.deep.equal(['MISS', 'HIT'])
        expect(again.headers['access-control-allow-origin']).to.equal(
          origin === 'https://b.example' ? origin : undefined,
        )
      }
    })

    it("helmet's headers come from helmet on every answer; the handler's own headers are replayed", async () => {
      const miss = await get('/api/users')
      const hit = await get('/api/users')
      for (const res of [miss, hit]) {
        expect(res.headers['content-security-policy']).to.be.a('string')
        expect(res.headers['x-content-type-options']).to.equal('nosniff')
        expect(res.headers['x-handler']).to.equal('users')
        expect(res.headers['content-type']).to.equal('application/json; charset=utf-8')
      }
    })
  })

  describe('2. compression, before or after the cache: every hit decodes to what the miss decoded to', () => {
    const decoded = (res: RawResponse): string =>
      (res.headers['content-encoding'] === 'gzip' ? gunzipSync(res.body) : res.body).toString()

    for (const route of ['/text', '/zipped']) {
      const where = route === '/text' ? 'before the cache (app.use)' : 'also after the cache (on the route)'
      for (const [first, then] of [
        ['gzip', 'gzip'],
        ['gzip', 'identity'],
        ['identity', 'gzip'],
      ]) {
        it(`compression ${where}: a ${first} miss, then ${then} hits`, async () => {
          const miss = await get(route, { 'accept-encoding': first! })
          expect(miss.headers['x-cache']).to.equal('MISS')
          expect(decoded(miss)).to.equal(TEXT)
          for (let i = 0; i < 2; i++) {
            const hit = await get(route, { 'accept-encoding': then! })
            expect(hit.status).to.equal(200)
            expect(decoded(hit)).to.equal(TEXT)
            expect(hit.headers['content-encoding']).to.equal(then === 'gzip' ? 'gzip' : undefined)
          }
          const plain = await get(route)
          expect(decoded(plain)).to.equal(TEXT)
        })
      }
    }

    it('compression before the cache: one entry serves every encoding (the handler runs once)', async () => {
      await get('/text', { 'accept-encoding': 'gzip' })
      const hits = [await get('/text'), await get('/text', { 'accept-encoding': 'gzip, br' })]
      expect(hits.map((res) => res.headers['x-cache'])).to.deep.equal(['HIT', 'HIT'])
      expect(runsOf('text')).to.equal(1)
    })
  })

  describe('3. perUser keys cannot be forged from the key option', () => {
    it("an anonymous GET /posts/hello%0Auser%0A42 never reads user 42's entry, nor fills it", async () => {
      const user42 = await signIn(42)
      const own = await get('/posts/hello', { cookie: user42 })
      expect(text(own)).to.equal('post hello for 42 #1')
      const forged = await get('/posts/hello%0Auser%0A42')
      expect(text(forged)).to.equal('post hello\nuser\n42 for anonymous #2')
      const forgedFill = await get('/posts/hello%0Auser%0A7')
      expect(text(forgedFill)).to.equal('post hello\nuser\n7 for anonymous #3')
      const user7 = await signIn(7)
      expect(text(await get('/posts/hello', { cookie: user7 }))).to.equal('post hello for 7 #4')
      expect(text(await get('/posts/hello', { cookie: user42 }))).to.equal('post hello for 42 #1')
    })
  })

  describe('4. the path is keyed as Express routes it', () => {
    for (const path of [
      '/x/%2e%2e/api/users',
      '/x/../api/users',
      '/api/x/..%2fusers',
      '//api/users',
      '/x\\..\\api/users',
    ]) {
      it(`GET ${path} (the catch-all page) never becomes the entry of /api/users`, async () => {
        const poison = await get(path)
        expect(poison.status).to.equal(200)
        expect(text(poison)).to.match(/^catch-all/)
        const users = await get('/api/users')
        expect(JSON.parse(text(users)).users).to.deep.equal(['ada', 'grace'])
      })
    }
  })

  describe('5. protocol and host are in the key', () => {
    it('a request with another Host never poisons the links of this host', async () => {
      const evil = await get('/api/users', { host: 'evil.example' })
      expect(JSON.parse(text(evil)).next).to.equal('http://evil.example/api/users?page=2')
      const good = await get('/api/users')
      expect(good.headers['x-cache']).to.equal('MISS')
      expect(JSON.parse(text(good)).next).to.equal(`http://${HOST}/api/users?page=2`)
    })

    it('X-Forwarded-Host and X-Forwarded-Proto from a trusted proxy are what the handler sees: they are keyed', async () => {
      const proxied = await get('/api/users', { 'x-forwarded-host': 'evil.example', 'x-forwarded-proto': 'https' })
      expect(JSON.parse(text(proxied)).next).to.equal('https://evil.example/api/users?page=2')
      const good = await get('/api/users')
      expect(JSON.parse(text(good)).next).to.equal(`http://${HOST}/api/users?page=2`)
      const tenant = await get('/api/users', { host: 'tenant.example' })
      expect(JSON.parse(text(tenant)).next).to.equal('http://tenant.example/api/users?page=2')
      expect(runsOf('users')).to.equal(3)
    })

    it('without trust proxy, X-Forwarded-Host is not what the handler sees, and not keyed', async () => {
      stack.app.set('trust proxy', false)
      const first = await get('/api/users', { 'x-forwarded-host': 'evil.example' })
      const second = await get('/api/users')
      expect([first.headers['x-cache'], second.headers['x-cache']]).to.deep.equal(['MISS', 'HIT'])
      expect(JSON.parse(text(second)).next).to.equal(`http://${HOST}/api/users?page=2`)
    })
  })

  describe('6. the query: keyed as sent', () => {
    it('?sort=price&sort=name and ?sort=name&sort=price are different entries', async () => {
      const a = await get('/api/sorted?sort=price&sort=name')
      const b = await get('/api/sorted?sort=name&sort=price')
      expect(JSON.parse(text(a)).sort).to.deep.equal(['price', 'name'])
      expect(JSON.parse(text(b)).sort).to.deep.equal(['name', 'price'])
      expect(b.headers['x-cache']).to.equal('MISS')
    })

    it('?a=1&b=2 and ?b=2&a=1 are two entries; so are ?sort=x&%73ort=y and its reverse', async () => {
      await get('/api/sorted?sort=1&page=2')
      expect((await get('/api/sorted?page=2&sort=1')).headers['x-cache']).to.equal('MISS')
      expect((await get('/api/sorted?page=2&sort=1')).headers['x-cache']).to.equal('HIT')
      const encoded = await get('/api/sorted?sort=x&%73ort=y')
      expect(JSON.parse(text(encoded)).sort).to.deep.equal(['x', 'y'])
      const reversed = await get('/api/sorted?%73ort=y&sort=x')
      expect(JSON.parse(text(reversed)).sort).to.deep.equal(['y', 'x'])
    })
  })

  describe('7. private data behind a session, and the bypass option', () => {
    it("a guest's cart (session data, no user) bypasses the cache; a client without a cookie never sees it", async () => {
      const cart = await get('/cart?item=book', {}, 'POST')
      const guest = cookieOf(cart)
      const page = await get('/api/page', { cookie: guest })
      expect(page.headers['x-cache']).to.equal('BYPASS')
      expect(page.headers['cache-status']).to.equal('express-redis-kit; fwd=bypass; detail=session')
      expect(text(page)).to.equal('page for cart book #1')
      const stranger = await get('/api/page')
      expect(stranger.headers['x-cache']).to.equal('MISS')
      expect(text(stranger)).to.equal('page for anonymous #2')
      expect(text(await get('/api/page', { cookie: guest }))).to.equal('page for cart book #3')
    })

    it('bypass(req): a request with a jwt cookie bypasses, and is never served the shared entry', async () => {
      const anonymous = await get('/api/page')
      expect(text(anonymous)).to.equal('page for anonymous #1')
      const jwt = await get('/api/page', { cookie: 'jwt=token-of-alice' })
      expect(jwt.headers['x-cache']).to.equal('BYPASS')
      expect(jwt.headers['cache-status']).to.equal('express-redis-kit; fwd=bypass; detail=bypass-option')
      expect(text(jwt)).to.equal('page for jwt token-of-alice #2')
      expect(text(await get('/api/page'))).to.equal('page for anonymous #1')
    })

    it('a signed-in user bypasses (no perUser); the shared page stays the anonymous one', async () => {
      await get('/api/page')
      const alice = await signIn(1)
      const own = await get('/api/page', { cookie: alice })
      expect(own.headers['x-cache']).to.equal('BYPASS')
      expect(text(own)).to.equal('page for 1 #2')
      expect(text(await get('/api/page'))).to.equal('page for anonymous #1')
    })
  })

  describe('8. unstorable responses release the waiters at once', () => {
    for (const [route, why] of [
      ['/big-stream', 'a streamed body over maxBodyBytes'],
      ['/no-store', 'Cache-Control: no-store'],
      ['/not-found', 'a status that is not stored'],
    ] as const) {
      it(`${why}: 5 concurrent requests all reach the handler while the first one is still running`, async () => {
        const held = gate()
        stack.gates.set(route, held.promise)
        const answers = Array.from({ length: 5 }, () => get(route))
        try {
          await eventually(async () => runsOf(route) === 5, 3_000, 'five handler runs (lockTimeout is 30 s)')
        } finally {
          held.open()
        }
        const done = await Promise.all(answers)
        expect(done.map((res) => res.headers['x-cache'])).to.deep.equal(['MISS', 'MISS', 'MISS', 'MISS', 'MISS'])
      })
    }
  })

  describe('9. a slow-reading client does not hold the fill', () => {
    it('the entry is stored when the handler ends, and served, while the filling client has read nothing', async () => {
      const reader = await slowReader(stack.server, '/slow-read')
      try {
        await untilStored(client, responseEntryKey(stack.prefix, '/slow-read', HOST))
        const hit = await get('/slow-read')
        expect(hit.headers['x-cache']).to.equal('HIT')
        expect(hit.body.equals(BIG)).to.equal(true)
        expect(reader.received(), 'the slow client is still behind').to.be.below(BIG.length)
      } finally {
        reader.destroy()
      }
    })
  })

  describe('10. conditional requests follow Express (req.fresh)', () => {
    const lastModified = 'Tue, 01 Dec 2026 10:00:00 GMT'

    it('If-Modified-Since on a HIT: 304 when not modified since, 200 when modified', async () => {
      await get('/modified')
      const notModified = await get('/modified', { 'if-modified-since': 'Tue, 01 Dec 2026 11:00:00 GMT' })
      expect(notModified.headers['x-cache']).to.equal('HIT')
      expect(notModified.status).to.equal(304)
      expect(notModified.body.length).to.equal(0)
      expect(notModified.headers['last-modified']).to.equal(lastModified)
      const modified = await get('/modified', { 'if-modified-since': 'Tue, 01 Dec 2026 09:00:00 GMT' })
      expect(modified.status).to.equal(200)
      expect(text(modified)).to.equal('modified #1')
    })

    it('If-Modified-Since on the request that fills: the client gets a 304, the entry stores the full body', async () => {
      const first = await get('/modified', { 'if-modified-since': lastModified })
      expect(first.status).to.equal(304)
      const hit = await get('/modified')
      expect([hit.status, text(hit)]).to.deep.equal([200, 'modified #1'])
    })

    it('If-None-Match wins over If-Modified-Since, as in Express', async () => {
      const full = await get('/modified')
      const etag = String(full.headers.etag)
      const mismatch = await get('/modified', { 'if-none-match': '"other"', 'if-modified-since': lastModified })
      expect(mismatch.status).to.equal(200)
      const match = await get('/modified', {
        'if-none-match': etag,
        'if-modified-since': 'Mon, 01 Jan 2001 00:00:00 GMT',
      })
      expect(match.status).to.equal(304)
    })
  })

  describe('11. cached() gives back what the loader returned', () => {
    it('a Buffer (Prisma Bytes) loaded once comes back byte for byte, as a Buffer', async () => {
      const first = await get('/avatar/1')
      const second = await get('/avatar/1')
      expect(second.headers['x-loaded']).to.equal('from cache')
      expect(second.body.equals(first.body)).to.equal(true)
      expect(second.body.equals(Buffer.from([0, 1, 2, 253, 254, 255]))).to.equal(true)
    })
  })

  describe('12. localCache: a hit served from memory is replayed as a hit from Redis', () => {
    let local: Stack
    let localHits = 0
    const onEvent = (message: unknown) => {
      const event = message as CacheEvent
      if (event.result === 'hit' && event.local) localHits++
    }
    beforeEach(async () => {
      local = await startStack(client, true)
      diagnostics.subscribe(CHANNELS.cache, onEvent)
    })
    afterEach(async () => {
      diagnostics.unsubscribe(CHANNELS.cache, onEvent)
      await closeServer(local.server)
    })
    const getLocal = (path: string, headers: Record<string, string> = {}): Promise<RawResponse> =>
      rawRequest(local.server, path, { headers: { host: HOST, ...headers } })
    /**
     * GETs `path` until an answer is served from the local copy, and returns that one. A hit
     * goes to Redis instead while the fence is not met (no PING answered within fenceMs, as on
     * a busy machine), and the read right after a fill often does. `check` sees every answer.
     */
    async function localAnswer(
      path: string,
      headers: (attempt: number) => Record<string, string>,
      check: (res: RawResponse) => void = () => {},
    ): Promise<RawResponse> {
      for (let attempt = 0; attempt <= 200; attempt++) {
        const before = localHits
        const res = await getLocal(path, headers(attempt))
        check(res)
        if (localHits === before + 1) return res
        await new Promise((resolve) => setTimeout(resolve, 5))
      }
      throw new Error(`${path} never served from the local cache`)
    }

    it("a local HIT carries the current client's RateLimit, request id, CORS and helmet headers, and the handler's own", async () => {
      const miss = await getLocal('/api/users', { 'x-client': 'alice', origin: 'https://a.example' })
      // A client of its own for each read: the local answer's client has made exactly one request.
      const bob = await localAnswer('/api/users', (attempt) => ({
        'x-client': `bob-${attempt}`,
        origin: 'https://a.example',
      }))
      expect(bob.headers['x-cache']).to.equal('HIT')
      expect(remainingOf(bob), 'bob has used 1 of his own limit').to.equal(LIMIT - 1)
      expect(bob.headers['access-control-allow-origin']).to.equal('https://a.example')
      expect(bob.headers['x-request-id']).to.match(/^[0-9a-f-]{36}$/)
      expect(bob.headers['x-request-id']).not.to.equal(miss.headers['x-request-id'])
      expect(bob.headers['content-security-policy']).to.be.a('string')
      expect(bob.headers['x-handler']).to.equal('users')
      expect(bob.body.toString()).to.equal(miss.body.toString())
      expect(local.runs.get('users')).to.equal(1)
    })

    it('compression before the cache: a local HIT decodes to what the miss decoded to, gzip or not', async () => {
      const decoded = (res: RawResponse): string =>
        (res.headers['content-encoding'] === 'gzip' ? gunzipSync(res.body) : res.body).toString()
      expect(decoded(await getLocal('/text', { 'accept-encoding': 'gzip' }))).to.equal(TEXT)
      for (const encoding of ['gzip', 'identity']) {
        const hit = await localAnswer(
          '/text',
          () => ({ 'accept-encoding': encoding }),
          (res) => expect(decoded(res), `a ${encoding} answer`).to.equal(TEXT),
        )
        expect(hit.headers['content-encoding']).to.equal(encoding === 'gzip' ? 'gzip' : undefined)
        expect(decoded(hit)).to.equal(TEXT)
      }
      expect(local.runs.get('text')).to.equal(1)
    })
  })

  describe('Cache-Status (RFC 9211)', () => {
    it('a miss that is stored, a hit with its ttl, a HEAD hit', async () => {
      const miss = await get('/api/users')
      expect(miss.headers['cache-status']).to.equal('express-redis-kit; fwd=miss; fwd-status=200; stored')
      await untilStored(client, responseEntryKey(stack.prefix, '/api/users', HOST))
      const hit = await get('/api/users')
      expect(hit.headers['cache-status']).to.match(/^express-redis-kit; hit; ttl=(59|60)$/)
      const head = await get('/api/users', {}, 'HEAD')
      expect(head.headers['cache-status']).to.match(/^express-redis-kit; hit; ttl=\d+$/)
    })

    it('a response that cannot be stored says why', async () => {
      const res = await get('/no-store')
      expect(res.headers['cache-status']).to.equal('express-redis-kit; fwd=miss; fwd-status=200; detail=cache-control')
    })
  })
})

/** The stack under test, listening on a port of its own. */
/** The stack; `localCache` turns the main cache's local cache on. */
async function startStack(client: RedisClient, localCache = false): Promise<Stack> {
  const prefix = uniquePrefix('stack')
  const runs = new Map<string, number>()
  const gates = new Map<string, Promise<void>>()
  const ran = (route: string): number => {
    const run = (runs.get(route) ?? 0) + 1
    runs.set(route, run)
    return run
  }
  const held = (route: string): Promise<void> => gates.get(route) ?? Promise.resolve()

  const app = express()
  app.set('env', 'test')
  app.set('trust proxy', 'loopback')
  app.use(morgan('combined', { stream: new Writable({ write: (_chunk, _encoding, done) => done() }) }))
  app.use((_req, res, next) => {
    res.setHeader('X-Request-Id', crypto.randomUUID())
    next()
  })
  app.use(helmet())
  app.use(cors({ origin: ['https://a.example', 'https://b.example'] }))
  app.use(compression())
  app.use(cookieParser(SECRET))
  app.use(
    rateLimit({
      client,
      prefix: `${prefix}rl:`,
      limit: LIMIT,
      windowMs: 60_000,
      keyGenerator: (req) => req.get('x-client') ?? 'anonymous',
    }),
  )
  app.use(session({ client, prefix: `${prefix}sess:`, userKey: 'userId', cookie: { secure: false } }))

  app.post('/login', async (req, res) => {
    await req.session.regenerate()
    dataOf(req).userId = Number(req.query.user)
    res.json({ ok: true })
  })
  app.post('/cart', (req, res) => {
    dataOf(req).cart = [String(req.query.item)]
    res.json({ ok: true })
  })
  // A route with its own cache, keyed by a decoded route parameter, per user.
  const postsCache = cacheResponse({
    client,
    prefix: `${prefix}posts:`,
    ttl: '1m',
    perUser: true,
    key: (req) => `post:${req.params.slug}`,
  })
  app.get('/posts/:slug', postsCache, (req, res) => {
    const run = ran('posts')
    res.send(`post ${req.params.slug} for ${dataOf(req).userId ?? 'anonymous'} #${run}`)
  })

  // A read-through value behind a route the response cache does not see.
  app.get('/avatar/:id', async (req, res) => {
    let loaded = 'from cache'
    const avatar = await cached(client, `avatar:${req.params.id}`, { prefix: `${prefix}values:`, ttl: '1m' }, () => {
      loaded = 'from the loader'
      return { id: req.params.id, bytes: Buffer.from([0, 1, 2, 253, 254, 255]) }
    })
    res.setHeader('X-Loaded', loaded)
    res.type('application/octet-stream').send(avatar.bytes)
  })

  const cacheOptions = { client, prefix, ttl: '1m', lockTimeout: '30s', maxBodyBytes: 20 * 1024 * 1024 } as const
  // A 16 MiB entry comes back in one lookup reply, which on a busy machine can take longer than
  // the default timeoutMs (500 ms: the request then goes to the handler without the cache).
  // This route's cache (same prefix) waits longer: its test is about when the entry is stored.
  app.get('/slow-read', cacheResponse({ ...cacheOptions, timeoutMs: 10_000 }), (_req, res) => {
    ran('slow-read')
    res.type('application/octet-stream').send(BIG)
  })
  const cache = cacheResponse({
    ...cacheOptions,
    bypass: (req: Request) => req.cookies?.jwt !== undefined,
    localCache,
  })
  app.use(cache)

  app.get('/api/users', (req, res) => {
    ran('users')
    res.setHeader('X-Handler', 'users')
    res.json({ users: ['ada', 'grace'], next: `${req.protocol}://${req.host}/api/users?page=2` })
  })
  app.get('/api/sorted', (req, res) => {
    ran('sorted')
    res.json({ sort: req.query.sort })
  })
  app.get('/api/page', (req, res) => {
    const run = ran('page')
    const data = dataOf(req)
    const who =
      data.userId !== undefined
        ? String(data.userId)
        : data.cart
          ? `cart ${(data.cart as string[]).join(',')}`
          : req.cookies.jwt
            ? `jwt ${req.cookies.jwt}`
            : 'anonymous'
    res.send(`page for ${who} #${run}`)
  })
  app.get('/text', (_req, res) => {
    ran('text')
    res.type('text/plain').send(TEXT)
  })
  app.get('/zipped', compression() as RequestHandler, (_req, res) => {
    ran('zipped')
    res.type('text/plain').send(TEXT)
  })
  app.get('/big-stream', async (_req, res) => {
    ran('/big-stream')
    res.type('application/octet-stream')
    const chunk = Buffer.alloc(64 * 1024)
    for (let written = 0; written <= 24 * 1024 * 1024; written += chunk.length) res.write(chunk)
    await held('/big-stream')
    res.end()
  })
  app.get('/no-store', async (_req, res) => {
    ran('/no-store')
    res.setHeader('Cache-Control', 'no-store')
    res.write('not for a shared cache')
    await held('/no-store')
    res.end()
  })
  app.get('/not-found', async (_req, res) => {
    ran('/not-found')
    res.status(404)
    res.write('nothing here')
    await held('/not-found')
    res.end()
  })
  app.get('/modified', (_req, res) => {
    const run = ran('modified')
    res.setHeader('Last-Modified', 'Tue, 01 Dec 2026 10:00:00 GMT')
    res.send(`modified #${run}`)
  })
  // A catch-all page, as single-page apps and CMSs have.
  app.use((req, res) => {
    ran('catch-all')
    res.send(`catch-all for ${req.originalUrl}`)
  })

  const server = await listen(app)
  return { app, server, runs, gates, prefix }
}

/** The `sid` cookie a response set, as a Cookie header. */
function cookieOf(res: RawResponse): string {
  const line = res.rawHeaders.find(([name, value]) => name === 'set-cookie' && value.startsWith('sid='))
  if (!line) throw new Error('no session cookie was set')
  return line[1].split(';')[0]!
}

/** `r=` of a draft-8 RateLimit header: the requests left. */
function remainingOf(res: RawResponse): number {
  const match = /;\s*r=(\d+)/.exec(String(res.headers.ratelimit))
  if (!match) throw new Error(`no remaining count in RateLimit: ${res.headers.ratelimit}`)
  return Number(match[1])
}

/** A GET whose client reads only the response head, then stops reading. */
async function slowReader(server: Server, path: string): Promise<{ received(): number; destroy(): void }> {
  const { port } = server.address() as { port: number }
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: '127.0.0.1', port, path, headers: { host: HOST }, agent: false }, (res) => {
      let received = 0
      res.on('data', (chunk: Buffer) => {
        received += chunk.length
      })
      res.pause()
      resolve({ received: () => received, destroy: () => req.destroy() })
    })
    req.once('error', reject)
    req.end()
  })
}
