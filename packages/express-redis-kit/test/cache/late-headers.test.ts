import { randomUUID } from 'node:crypto'
import diagnostics from 'node:diagnostics_channel'
import type { Server } from 'node:http'
import { gunzipSync } from 'node:zlib'
import { expect } from 'chai'
import compression from 'compression'
import { RedisStore } from 'connect-redis'
import express, { type Request, type RequestHandler } from 'express'
import expressSession from 'express-session'
import onHeaders from 'on-headers'
import { type CacheEvent, CHANNELS, cacheResponse, session } from '../../src/index.js'
import {
  eventually,
  gate,
  PUBLIC_HOST,
  type RawResponse,
  rawRequest,
  responseEntryKey,
  stableHost,
} from '../helpers/cache-app.js'
import { closeServer, listen } from '../helpers/outage.js'
import { connectRedis, mode, type RedisClient, uniquePrefix } from '../helpers/redis.js'

/*
 * Middleware mounted before the cache may add headers at the very moment the head is written
 * (its own writeHead wrapper, on-headers: express-session, compression, the kit's session).
 * A response that goes out with a Set-Cookie, or a Cache-Control that forbids a shared cache
 * to store it, must never be stored, whenever and by whomever that header was added; the
 * requests waiting for its fill then go to the handler themselves. The route here renders a
 * token it keeps in the visitor's session, as a CSRF-protected form does.
 */

/** Over compression's 1 kB threshold, so that compression compresses. */
const PADDING = 'x'.repeat(2048)

interface FormApp {
  server: Server
  runs: { count: number }
  prefix: string
}

/** The token and session id a /form page shows. */
function pageOf(res: RawResponse): { token: string; session: string } {
  const body = (res.headers['content-encoding'] === 'gzip' ? gunzipSync(res.body) : res.body).toString()
  const match = /data-token="([^"]*)" data-session="([^"]*)"/.exec(body)
  if (!match) throw new Error(`not a form page: ${body.slice(0, 80)}`)
  return { token: match[1]!, session: match[2]! }
}

describe(`cacheResponse: headers added as the head is written (${mode} Redis)`, () => {
  let client: RedisClient
  const servers: Server[] = []
  const events: CacheEvent[] = []
  const onEvent = (message: unknown) => events.push(message as CacheEvent)

  before(async () => {
    client = await connectRedis()
    diagnostics.subscribe(CHANNELS.cache, onEvent)
  })
  after(async () => {
    diagnostics.unsubscribe(CHANNELS.cache, onEvent)
    await client.close()
  })
  afterEach(async () => {
    for (const server of servers.splice(0)) await closeServer(server)
    events.length = 0
  })

  /**
   * An app: `mountedBefore` (middleware mounted before the cache), the cache, `onRoute` (middleware
   * after the cache), then GET /form: a page with a new token, kept in the session when
   * there is one; its head goes out first, then it waits for `held` before it ends.
   */
  async function formApp(
    mountedBefore: (prefix: string) => RequestHandler[],
    { onRoute = [], held }: { onRoute?: RequestHandler[]; held?: Promise<void> } = {},
  ): Promise<FormApp> {
    const prefix = uniquePrefix('late')
    const runs = { count: 0 }
    const app = express()
    app.set('env', 'test')
    app.use(stableHost, ...mountedBefore(prefix))
    const cache = cacheResponse({ client, prefix, ttl: '1m', lockTimeout: '30s' })
    app.get('/form', cache, ...onRoute, async (req: Request, res) => {
      runs.count++
      const token = randomUUID()
      const data = req.session as unknown as Record<string, unknown> | undefined
      if (data) data.csrf = token
      res.type('text/html')
      res.write(`<form data-token="${token}" data-session="${(req as { sessionID?: string }).sessionID ?? ''}">`)
      await held
      res.end(`${PADDING}</form>`)
    })
    const server = await listen(app)
    servers.push(server)
    return { server, runs, prefix }
  }

  const get = (app: FormApp, headers: Record<string, string> = {}) =>
    rawRequest(app.server, '/form', { headers: { host: PUBLIC_HOST, ...headers } })

  /** Whether anything was stored for /form. */
  const stored = async (app: FormApp): Promise<boolean> =>
    (await client.hKeys(responseEntryKey(app.prefix, '/form'))).some((field) => String(field).startsWith('t:'))

  /** A MISS, then (once stored) a HIT with the same page, the handler run once. Returns both answers. */
  async function missThenHit(app: FormApp): Promise<[RawResponse, RawResponse]> {
    const miss = await get(app)
    await eventually(() => stored(app), 5_000, '/form stored')
    const hit = await get(app)
    expect([miss.headers['x-cache'], hit.headers['x-cache']]).to.deep.equal(['MISS', 'HIT'])
    expect(pageOf(hit).token).to.equal(pageOf(miss).token)
    expect(app.runs.count).to.equal(1)
    return [miss, hit]
  }

  /**
   * Visitor 1 then visitor 2, one after the other, both without a cookie: visitor 2 runs the
   * handler and gets a token of its own; nothing was stored. Returns both answers.
   */
  async function twoVisitors(app: FormApp, headers: Record<string, string> = {}): Promise<RawResponse[]> {
    const first = await get(app, headers)
    const second = await get(app, headers)
    for (const res of [first, second]) {
      expect(res.status).to.equal(200)
      expect(res.headers['x-cache']).to.equal('MISS')
      expect(res.headers['set-cookie'], 'each visitor gets a cookie of its own').to.have.length(1)
    }
    expect(pageOf(second).token).not.to.equal(pageOf(first).token)
    expect(second.headers['set-cookie']).not.to.deep.equal(first.headers['set-cookie'])
    expect(app.runs.count).to.equal(2)
    expect(await stored(app)).to.equal(false)
    return [first, second]
  }

  /**
   * Five concurrent visitors while the first fill is held after its head went out: the fill
   * is found unstorable as its head goes out, so the four others reach the handler at once
   * (lockTimeout is 30 s); each gets its own token and cookie.
   */
  async function fiveAtOnce(mountedBefore: (prefix: string) => RequestHandler[]): Promise<void> {
    const held = gate()
    const app = await formApp(mountedBefore, { held: held.promise })
    const answers = Array.from({ length: 5 }, () => get(app))
    try {
      await eventually(async () => app.runs.count === 5, 3_000, 'five handler runs')
    } finally {
      held.open()
    }
    const done = await Promise.all(answers)
    expect(done.map((res) => res.headers['x-cache'])).to.deep.equal(['MISS', 'MISS', 'MISS', 'MISS', 'MISS'])
    expect(new Set(done.map((res) => pageOf(res).token)).size).to.equal(5)
    expect(new Set(done.map((res) => String(res.headers['set-cookie'])).values()).size).to.equal(5)
    expect(await stored(app)).to.equal(false)
  }

  describe('express-session with connect-redis, mounted before the cache (its cookie is set by an on-headers hook)', () => {
    const withExpressSession = (prefix: string): RequestHandler[] => [
      expressSession({
        store: new RedisStore({ client, prefix: `${prefix}es:` }),
        secret: 'late headers secret',
        resave: false,
        saveUninitialized: false,
      }),
    ]

    it("visitor 2 never gets visitor 1's token or session id: the response with the new session's cookie is not stored", async () => {
      const app = await formApp(withExpressSession)
      const [first, second] = await twoVisitors(app)
      expect(first!.headers['set-cookie']![0]).to.match(/^connect\.sid=/)
      expect(pageOf(second!).session).not.to.equal(pageOf(first!).session)
      // The first fill is refused for its cookie; the second visitor is told to go to the handler.
      const key = responseEntryKey(app.prefix, '/form')
      const outcomes = events
        .filter((event) => event.key === key && ['refused', 'stored'].includes(event.result))
        .map((event) => `${event.result} ${event.reason}`)
      expect(outcomes).to.deep.equal(['refused set-cookie'])
    })

    it('5 concurrent visitors: the 4 waiting for the first fill are released as its head goes out', async () => {
      await fiveAtOnce(withExpressSession)
    })

    for (const encoding of ['gzip', 'identity']) {
      it(`compression before the cache (Accept-Encoding: ${encoding}): not stored, each visitor its own token`, async () => {
        const app = await formApp((prefix) => [...withExpressSession(prefix), compression()])
        const [first] = await twoVisitors(app, { 'accept-encoding': encoding })
        expect(first!.headers['content-encoding']).to.equal(encoding === 'gzip' ? 'gzip' : undefined)
      })

      it(`compression after the cache, on the route (Accept-Encoding: ${encoding}): not stored, each visitor its own token`, async () => {
        const app = await formApp(withExpressSession, { onRoute: [compression() as RequestHandler] })
        const [first] = await twoVisitors(app, { 'accept-encoding': encoding })
        expect(first!.headers['content-encoding']).to.equal(encoding === 'gzip' ? 'gzip' : undefined)
      })
    }
  })

  describe("the kit's session, a guest session created inside the cached route", () => {
    const withKitSession = (prefix: string): RequestHandler[] => [
      session({ client, prefix: `${prefix}sess:`, secrets: ['late headers secret'], cookie: { secure: false } }),
    ]

    it("visitor 2 never gets visitor 1's token: the response that creates the session is not stored", async () => {
      const app = await formApp(withKitSession)
      const [first] = await twoVisitors(app)
      expect(first!.headers['set-cookie']![0]).to.match(/^sid=/)
      expect(first!.headers['cache-control']).to.equal('no-store')
      expect(first!.headers['cache-status']).not.to.match(/; stored/)
    })

    it('5 concurrent visitors: the 4 waiting for the first fill go to the handler at once', async () => {
      await fiveAtOnce(withKitSession)
    })

    it('compression before the cache: not stored, each visitor its own token', async () => {
      const app = await formApp((prefix) => [...withKitSession(prefix), compression()])
      await twoVisitors(app, { 'accept-encoding': 'gzip' })
    })
  })

  describe('a raw on-headers hook mounted before the cache', () => {
    /** Middleware that sets `name: value` from an on-headers hook, as the head is written. */
    const hook =
      (name: string, value: string): RequestHandler =>
      (_req, res, next) => {
        onHeaders(res, function addHeader() {
          this.setHeader(name, value)
        })
        next()
      }

    it('Set-Cookie added as the head is written: never stored, never replayed', async () => {
      const app = await formApp(() => [hook('Set-Cookie', 'seen=1; Path=/')])
      for (let i = 1; i <= 3; i++) {
        const res = await get(app)
        expect([res.headers['x-cache'], res.headers['set-cookie']]).to.deep.equal(['MISS', ['seen=1; Path=/']])
      }
      expect(app.runs.count).to.equal(3)
      expect(await stored(app)).to.equal(false)
    })

    for (const value of ['private', 'no-store', 'private, max-age=60']) {
      it(`Cache-Control: ${value} added as the head is written: never stored`, async () => {
        const app = await formApp(() => [hook('Cache-Control', value)])
        const answers = [await get(app), await get(app), await get(app)]
        expect(answers.map((res) => res.headers['x-cache'])).to.deep.equal(['MISS', 'MISS', 'MISS'])
        expect(new Set(answers.map((res) => pageOf(res).token)).size).to.equal(3)
        expect(await stored(app)).to.equal(false)
      })
    }

    it('a harmless header added as the head is written: stored; the hook adds it again on every hit', async () => {
      const app = await formApp(() => [hook('X-Late', 'yes')])
      const [miss, hit] = await missThenHit(app)
      expect([miss.headers['x-late'], hit.headers['x-late']]).to.deep.equal(['yes', 'yes'])
    })
  })

  describe('middleware before the cache that holds the response back and writes it later', () => {
    /**
     * Middleware that holds the response back (as a session that saves first does) and writes
     * it later through the writeHead and end it captured, past the cache's wrappers, setting
     * `name: value` just before.
     */
    const holdingBack =
      (name: string, value: string): RequestHandler =>
      (_req, res, next) => {
        const { writeHead, write, end } = res
        const held: [(...a: unknown[]) => unknown, unknown[]][] = []
        res.write = function writeLater(...args: unknown[]) {
          held.push([write as (...a: unknown[]) => unknown, args])
          return true
        } as typeof res.write
        res.end = function endLater(this: typeof res, ...args: unknown[]) {
          held.push([end as (...a: unknown[]) => unknown, args])
          setImmediate(() => {
            this.setHeader(name, value)
            writeHead.call(this, this.statusCode)
            for (const [call, args] of held) call.apply(this, args)
          })
          return this
        } as typeof res.end
        next()
      }

    it('a response held back and written past the cache with a Set-Cookie: never stored', async () => {
      const app = await formApp(() => [holdingBack('Set-Cookie', 'seen=1; Path=/')])
      const answers = [await get(app), await get(app)]
      expect(answers.map((res) => res.headers['x-cache'])).to.deep.equal(['MISS', 'MISS'])
      expect(answers.map((res) => res.headers['set-cookie'])).to.deep.equal([['seen=1; Path=/'], ['seen=1; Path=/']])
      expect(await stored(app)).to.equal(false)
    })

    it('a response held back and written past the cache with a harmless header: stored once it went out', async () => {
      await missThenHit(await formApp(() => [holdingBack('X-Late', 'yes')]))
    })
  })
})
