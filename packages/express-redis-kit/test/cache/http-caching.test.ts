import diagnostics from 'node:diagnostics_channel'
import type { Server } from 'node:http'
import { setTimeout as sleep } from 'node:timers/promises'
import { gunzipSync } from 'node:zlib'
import { expect } from 'chai'
import compression from 'compression'
import cors from 'cors'
import express, { type Request, type Response } from 'express'
import helmet from 'helmet'
import { RESP_TYPES } from 'redis'
import request from 'supertest'
import { type CacheEvent, type CacheResponseOptions, CHANNELS, cacheResponse, rateLimit } from '../../src/index.js'
import {
  countingApp,
  eventually,
  gate,
  lockKeyOf,
  type RawResponse,
  rawRequest,
  responseEntryKey,
  stableHost,
  untilStored,
  xCache,
} from '../helpers/cache-app.js'
import { closeServer, listen } from '../helpers/outage.js'
import { connectRedis, dumpKeys, mode, type RedisClient, uniquePrefix } from '../helpers/redis.js'

/*
 * cacheResponse as an HTTP cache (RFC 9111, RFC 9213, RFC 5861): how long a response is fresh
 * is decided by its own headers (CDN-Cache-Control > s-maxage > max-age > Expires - Date, less
 * the Age it already had; `ttl` when they say nothing), `freshness: 'ttl'` and `maxTtl`
 * override that, `must-revalidate` & co. forbid stale answers, a stale entry with a validator
 * is revalidated with a conditional request (a 304 refreshes its headers and freshness, not
 * its body), and a successful POST/PUT/PATCH/DELETE invalidates its URL (and its same-host
 * Location / Content-Location) on every instance. Real Redis, real lifetimes (hundreds of ms,
 * or `max-age=1` and 1.1 s sleeps).
 */

/** Waits until the current second has just begun (its first 100 ms). */
async function earlyInSecond(): Promise<void> {
  while (Date.now() % 1000 >= 100) await sleep(5)
}

/** Waits until the current second is nearly over (850-900 ms into it). */
async function lateInSecond(): Promise<void> {
  while (Date.now() % 1000 < 850 || Date.now() % 1000 > 900) await sleep(5)
}

/** The remaining count of a draft-8 `RateLimit` header. */
function remainingOf(res: RawResponse): number {
  const match = /;\s*r=(\d+)/.exec(String(res.headers.ratelimit))
  if (!match) throw new Error(`no remaining count in RateLimit: ${res.headers.ratelimit}`)
  return Number(match[1])
}

/** A raw body as the client reads it (gzip inflated). */
const decoded = (res: RawResponse): string =>
  (res.headers['content-encoding'] === 'gzip' ? gunzipSync(res.body) : res.body).toString()

describe(`cacheResponse: HTTP caching (${mode} Redis)`, () => {
  let client: RedisClient
  let server: Server | undefined
  before(async () => {
    client = await connectRedis()
  })
  afterEach(async () => {
    await closeServer(server)
    server = undefined
  })
  after(async () => {
    await client.close()
  })

  const cacheFor = (options: Partial<CacheResponseOptions> = {}, prefix = uniquePrefix('http')) =>
    cacheResponse({ client, prefix, ttl: '1m', ...options })

  /**
   * An app whose handler sets `headers` (given the run number, or the same every run) and
   * answers `run <n>` with res.end: Express adds no ETag, so a stale entry has no validator
   * and is fetched again rather than revalidated.
   */
  const plainApp = (
    options: Partial<CacheResponseOptions>,
    headers: Record<string, string> | ((run: number, req: Request) => Record<string, string>),
  ) =>
    countingApp(cacheFor(options), (req, res, run) => {
      res.set(typeof headers === 'function' ? headers(run, req) : headers)
      res.type('text/plain')
      res.end(`run ${run}`)
    })

  /** A GET and what the client saw of it. */
  const get = async (app: express.Express, path: string, headers: Record<string, string> = {}) => {
    const res = await request(app).get(path).set(headers)
    return { status: res.status, xCache: xCache(res), text: res.text, headers: res.headers }
  }

  /** The stored body of a variant, byte for byte (read with a command whose replies are Buffers). */
  const storedBody = async (entryKey: string, variant = ''): Promise<Buffer | null> => {
    const binary = (
      client as unknown as {
        withTypeMapping(mapping: object): { hGet(key: string, field: string): Promise<Buffer | null> }
      }
    ).withTypeMapping({ [RESP_TYPES.BLOB_STRING]: Buffer })
    return binary.hGet(entryKey, `b:${variant}`)
  }

  describe('freshness from the response (RFC 9111 4.2)', () => {
    it('no freshness headers: `ttl` applies (HIT, then the handler again once it has passed)', async () => {
      const { app, runs } = plainApp({ ttl: '300ms' }, {})
      expect((await get(app, '/plain')).xCache).to.equal('MISS')
      const hit = await get(app, '/plain')
      expect([hit.xCache, hit.text]).to.deep.equal(['HIT', 'run 1'])
      await sleep(400)
      const after = await get(app, '/plain')
      expect([after.xCache, after.text]).to.deep.equal(['MISS', 'run 2'])
      expect(runs.count).to.equal(2)
    })

    it('max-age=0 without a validator: never served fresh, the handler runs for every request', async () => {
      const seen: (string | undefined)[] = []
      const { app, runs } = plainApp({ ttl: '1h' }, (_run, req) => {
        seen.push(req.get('if-none-match'))
        return { 'Cache-Control': 'max-age=0' }
      })
      for (let i = 1; i <= 3; i++) {
        const res = await get(app, '/zero')
        expect([res.status, res.xCache, res.text]).to.deep.equal([200, 'MISS', `run ${i}`])
      }
      expect(runs.count).to.equal(3)
      // The ETag the cache generates for such an entry is not the origin's: never sent to revalidate.
      expect(seen).to.deep.equal([undefined, undefined, undefined])
    })

    it('max-age=1 with ttl 1h: a HIT within the second, the handler again after 1.1 s', async () => {
      const { app, runs } = plainApp({ ttl: '1h' }, { 'Cache-Control': 'max-age=1' })
      expect((await get(app, '/one-second')).xCache).to.equal('MISS')
      const hit = await get(app, '/one-second')
      expect([hit.xCache, hit.text]).to.deep.equal(['HIT', 'run 1'])
      await sleep(1_100)
      const after = await get(app, '/one-second')
      expect([after.xCache, after.text]).to.deep.equal(['MISS', 'run 2'])
      const again = await get(app, '/one-second')
      expect([again.xCache, again.text]).to.deep.equal(['HIT', 'run 2'])
      expect(runs.count).to.equal(2)
    })

    it('s-maxage wins over max-age: `s-maxage=1, max-age=3600` is stale after 1 s', async () => {
      const { app, runs } = plainApp({ ttl: '1h' }, { 'Cache-Control': 's-maxage=1, max-age=3600' })
      await get(app, '/shared')
      expect((await get(app, '/shared')).xCache).to.equal('HIT')
      await sleep(1_100)
      const after = await get(app, '/shared')
      expect([after.xCache, after.text]).to.deep.equal(['MISS', 'run 2'])
      expect(runs.count).to.equal(2)
    })

    it('Expires in the past, or not a date (`0`): not fresh; max-age wins over an Expires in the past', async () => {
      const past = 'Thu, 01 Jan 1970 00:00:00 GMT'
      const { app, runs } = plainApp({ ttl: '1h' }, (_run, req): Record<string, string> => {
        if (req.path === '/past') return { Expires: past }
        if (req.path === '/zero') return { Expires: '0' }
        return { Expires: past, 'Cache-Control': 'max-age=3600' }
      })
      for (const path of ['/past', '/zero']) {
        expect((await get(app, path)).xCache).to.equal('MISS')
        expect((await get(app, path)).xCache, path).to.equal('MISS')
      }
      expect(runs.count).to.equal(4)
      await get(app, '/max-age')
      expect((await get(app, '/max-age')).xCache).to.equal('HIT')
      expect(runs.count).to.equal(5)
    })

    it('Expires 1 s after Date: fresh until then, the handler again once it has passed', async () => {
      await earlyInSecond()
      const { app, runs } = plainApp({ ttl: '1h' }, () => {
        const date = new Date().toUTCString()
        return { Date: date, Expires: new Date(Date.parse(date) + 1_000).toUTCString() }
      })
      expect((await get(app, '/expires')).xCache).to.equal('MISS')
      const hit = await get(app, '/expires')
      expect([hit.xCache, hit.text]).to.deep.equal(['HIT', 'run 1'])
      await sleep(1_100)
      const after = await get(app, '/expires')
      expect([after.xCache, after.text]).to.deep.equal(['MISS', 'run 2'])
      expect(runs.count).to.equal(2)
    })

    it('`Age: 3600` with `max-age=3600`: the response is already stale, the handler runs again', async () => {
      const { app, runs } = plainApp({ ttl: '1h' }, { 'Cache-Control': 'max-age=3600', Age: '3600' })
      const miss = await get(app, '/aged')
      expect(miss.headers.age).to.equal('3600')
      const second = await get(app, '/aged')
      expect([second.xCache, second.text]).to.deep.equal(['MISS', 'run 2'])
      expect(runs.count).to.equal(2)
    })

    it('CDN-Cache-Control replaces Cache-Control: `max-age=1` beats `max-age=3600`, `max-age=3600` beats `max-age=0`', async () => {
      const { app, runs } = plainApp({ ttl: '1h' }, (_run, req) =>
        req.path === '/short'
          ? { 'CDN-Cache-Control': 'max-age=1', 'Cache-Control': 'max-age=3600' }
          : { 'CDN-Cache-Control': 'max-age=3600', 'Cache-Control': 'max-age=0' },
      )
      for (const path of ['/short', '/long']) {
        await get(app, path)
        expect((await get(app, path)).xCache, path).to.equal('HIT')
      }
      await sleep(1_100)
      expect((await get(app, '/short')).xCache).to.equal('MISS')
      const long = await get(app, '/long')
      expect([long.xCache, long.text]).to.deep.equal(['HIT', 'run 2'])
      expect(runs.count).to.equal(3)
    })

    it('`CDN-Cache-Control: no-store` is not stored, even with `Cache-Control: public, max-age=3600`', async () => {
      const { app, runs } = plainApp(
        { ttl: '1h' },
        { 'CDN-Cache-Control': 'no-store', 'Cache-Control': 'public, max-age=3600' },
      )
      for (let i = 1; i <= 3; i++) {
        const res = await get(app, '/not-for-cdn')
        expect([res.xCache, res.text]).to.deep.equal(['MISS', `run ${i}`])
      }
      expect(runs.count).to.equal(3)
    })

    it('an invalid CDN-Cache-Control (a directive of the wrong type, `max-age="3600"`) is ignored whole: Cache-Control decides', async () => {
      const { app, runs } = plainApp(
        { ttl: '1h' },
        (_run, req): Record<string, string> =>
          req.path === '/invalid'
            ? { 'CDN-Cache-Control': 'max-age="3600"', 'Cache-Control': 'no-store' }
            : { 'CDN-Cache-Control': 'max-age=3600', 'Cache-Control': 'no-store' },
      )
      await get(app, '/invalid')
      expect((await get(app, '/invalid')).xCache).to.equal('MISS')
      await get(app, '/valid')
      expect((await get(app, '/valid')).xCache).to.equal('HIT')
      expect(runs.count).to.equal(3)
    })

    it('Expires in every form a recipient must accept, in any letter case: IMF-fixdate, RFC 850 (two-digit year), asctime', async () => {
      const forms: Record<string, string> = {
        '/imf': 'Fri, 01 Jan 2049 00:00:00 GMT',
        '/imf-lower': 'fri, 01 jan 2049 00:00:00 gmt',
        '/rfc850': 'Friday, 01-Jan-49 00:00:00 GMT',
        '/asctime': 'Fri Jan  1 00:00:00 2049',
        '/not-a-date': 'Fri, 01 Jan 2049 25:00:00 GMT',
      }
      const { app, runs } = plainApp({ ttl: '1h' }, (_run, req) => ({ Expires: forms[req.path]! }))
      for (const path of Object.keys(forms)) {
        await get(app, path)
        expect((await get(app, path)).xCache, path).to.equal(path === '/not-a-date' ? 'MISS' : 'HIT')
      }
      expect(runs.count).to.equal(6)
    })
  })

  describe("freshness: 'ttl' and maxTtl", () => {
    it("freshness 'ttl': `ttl` wins whatever the response says (max-age=3600 is stale after it, max-age=0 and Age: 3600 fresh)", async () => {
      const { app, runs } = plainApp(
        { ttl: '300ms', freshness: 'ttl' },
        (_run, req): Record<string, string> =>
          req.path === '/long' ? { 'Cache-Control': 'max-age=3600' } : { 'Cache-Control': 'max-age=0', Age: '3600' },
      )
      for (const path of ['/long', '/zero']) {
        await get(app, path)
        expect((await get(app, path)).xCache, path).to.equal('HIT')
      }
      expect(runs.count).to.equal(2)
      await sleep(400)
      const long = await get(app, '/long')
      expect([long.xCache, long.text]).to.deep.equal(['MISS', 'run 3'])
    })

    it("freshness 'ttl': `no-store`, `private` and `CDN-Cache-Control: no-store` are still never stored", async () => {
      const headers: Record<string, Record<string, string>> = {
        '/no-store': { 'Cache-Control': 'no-store' },
        '/private': { 'Cache-Control': 'private, max-age=3600' },
        '/cdn-no-store': { 'CDN-Cache-Control': 'no-store' },
      }
      const { app, runs } = plainApp({ ttl: '1h', freshness: 'ttl' }, (_run, req) => headers[req.path]!)
      for (const path of Object.keys(headers)) {
        for (let i = 0; i < 2; i++) expect((await get(app, path)).xCache, path).to.equal('MISS')
      }
      expect(runs.count).to.equal(6)
    })

    it('maxTtl caps a longer max-age (and a longer ttl in freshness ttl)', async () => {
      const byResponse = plainApp({ ttl: '1h', maxTtl: '300ms' }, { 'Cache-Control': 'max-age=3600' })
      const byTtl = plainApp({ ttl: '1h', maxTtl: '300ms', freshness: 'ttl' }, {})
      for (const { app } of [byResponse, byTtl]) {
        await get(app, '/capped')
        expect((await get(app, '/capped')).xCache).to.equal('HIT')
      }
      await sleep(400)
      for (const { app, runs } of [byResponse, byTtl]) {
        const after = await get(app, '/capped')
        expect([after.xCache, after.text]).to.deep.equal(['MISS', 'run 2'])
        expect(runs.count).to.equal(2)
      }
    })
  })

  describe('serving stale', () => {
    for (const directive of ['must-revalidate', 'proxy-revalidate', 's-maxage=0']) {
      it(`\`${directive}\` forbids serving stale: with staleIfError and staleWhileRevalidate, a 500 reaches the client`, async () => {
        const prefix = uniquePrefix('strict')
        const { app, runs } = countingApp(
          cacheFor({ ttl: '1h', staleIfError: '30s', staleWhileRevalidate: '30s' }, prefix),
          (_req, res, run) => {
            if (run > 1) return void res.status(500).send('origin error')
            res.set('Cache-Control', `max-age=0, ${directive}`).send('good body')
          },
        )
        expect((await get(app, '/strict')).text).to.equal('good body')
        // Once stored: a request arriving while the fill still holds the lock would get its answer.
        await untilStored(client, responseEntryKey(prefix, '/strict'))
        const res = await get(app, '/strict')
        expect([res.status, res.text, res.xCache]).to.deep.equal([500, 'origin error', 'MISS'])
        expect(runs.count).to.equal(2)
      })
    }

    it('without them, the same stale entry is served by staleIfError (a 500) and by staleWhileRevalidate', async () => {
      const lenient: Partial<CacheResponseOptions>[] = [{ staleIfError: '30s' }, { staleWhileRevalidate: '30s' }]
      for (const options of lenient) {
        const prefix = uniquePrefix('lenient')
        const { app } = countingApp(cacheFor({ ttl: '1h', ...options }, prefix), (_req, res, run) => {
          if (run > 1) return void res.status(500).send('origin error')
          res.set('Cache-Control', 'max-age=0').send('good body')
        })
        await get(app, '/lenient')
        // Once stored: a request arriving while the fill still holds the lock would get its answer (a HIT).
        await untilStored(client, responseEntryKey(prefix, '/lenient'))
        const res = await get(app, '/lenient')
        expect([res.status, res.text, res.xCache], JSON.stringify(options)).to.deep.equal([200, 'good body', 'STALE'])
      }
    })

    it("the response's own `stale-while-revalidate=30` is honoured without the option: STALE at once, refreshed in the background", async () => {
      const { app, runs } = plainApp({ ttl: '1h' }, (run) => ({
        'Cache-Control': run === 1 ? 'max-age=0, stale-while-revalidate=30' : 'max-age=60',
      }))
      await get(app, '/swr')
      const stale = await get(app, '/swr')
      expect([stale.status, stale.xCache, stale.text]).to.deep.equal([200, 'STALE', 'run 1'])
      await eventually(async () => (await get(app, '/swr')).xCache === 'HIT', 5_000, 'the refreshed entry')
      const hit = await get(app, '/swr')
      expect([hit.xCache, hit.text]).to.deep.equal(['HIT', 'run 2'])
      expect(runs.count).to.equal(2)
    })

    it("the response's own `stale-if-error=30` is honoured without the option: a 500 is replaced by the stale entry", async () => {
      const { app, runs } = countingApp(cacheFor({ ttl: '1h' }), (_req, res, run) => {
        if (run > 1) return void res.status(500).send('origin error')
        res.set('Cache-Control', 'max-age=0, stale-if-error=30').send('good body')
      })
      await get(app, '/sie')
      const res = await get(app, '/sie')
      expect([res.status, res.text, res.xCache]).to.deep.equal([200, 'good body', 'STALE'])
      expect(String(res.headers['cache-status'])).to.include('fwd-status=500').and.include('stale-if-error')
      expect(runs.count).to.equal(2)
    })
  })

  describe('revalidation of a stale entry (RFC 9111 4.3)', () => {
    it("ETag set by the handler: it is asked with If-None-Match, Express answers 304 by itself; the client gets the full body (REVALIDATED), the 304's headers and freshness are kept, the body is not stored again", async () => {
      const prefix = uniquePrefix('http')
      const seen: (string | undefined)[] = []
      const { app, runs } = countingApp(cacheFor({ ttl: '1h' }, prefix), (req, res, run) => {
        seen.push(req.get('if-none-match'))
        res.set('ETag', '"article-v1"')
        res.set('X-Version', String(run))
        res.set('Cache-Control', run === 1 ? 'max-age=0' : 'max-age=60')
        res.send('article, version 1')
      })
      const miss = await get(app, '/article')
      expect([miss.xCache, miss.headers['x-version']]).to.deep.equal(['MISS', '1'])
      await untilStored(client, responseEntryKey(prefix, '/article'))

      const revalidated = await get(app, '/article')
      expect(seen).to.deep.equal([undefined, '"article-v1"'])
      expect(revalidated.status).to.equal(200)
      expect(revalidated.text).to.equal('article, version 1')
      expect(revalidated.xCache).to.equal('REVALIDATED')
      expect(revalidated.headers['x-version']).to.equal('2')
      expect(revalidated.headers.etag).to.equal('"article-v1"')
      expect(revalidated.headers['content-length']).to.equal(String('article, version 1'.length))
      const cacheStatus = String(revalidated.headers['cache-status'])
      expect(cacheStatus).to.include('fwd=stale').and.include('fwd-status=304')

      // Fresh again for the 304's max-age=60, with its headers: a HIT, the handler not run.
      const hit = await get(app, '/article')
      expect([hit.status, hit.xCache, hit.text]).to.deep.equal([200, 'HIT', 'article, version 1'])
      expect(hit.headers['x-version']).to.equal('2')
      expect(runs.count).to.equal(2)
      // The body field still holds the full body the first response stored, not the 304's nothing.
      expect(await storedBody(responseEntryKey(prefix, '/article'))).to.deep.equal(Buffer.from('article, version 1'))
    })

    it('Last-Modified: the handler is asked with If-Modified-Since (and no If-None-Match with the cache-made ETag), answers 304 itself, the client gets the body', async () => {
      const lastModified = new Date(Date.now() - 60_000).toUTCString()
      const seen: [string | undefined, string | undefined][] = []
      const { app, runs } = countingApp(cacheFor({ ttl: '1h' }), (req, res, run) => {
        seen.push([req.get('if-modified-since'), req.get('if-none-match')])
        res.set('Last-Modified', lastModified)
        res.set('X-Run', String(run))
        res.set('Cache-Control', run === 1 ? 'max-age=0' : 'max-age=60')
        if (req.get('if-modified-since') === lastModified) return void res.status(304).end()
        res.type('text/plain').end('report of run 1')
      })
      await get(app, '/report')
      const revalidated = await get(app, '/report')
      expect(seen).to.deep.equal([
        [undefined, undefined],
        [lastModified, undefined],
      ])
      expect([revalidated.status, revalidated.xCache, revalidated.text]).to.deep.equal([
        200,
        'REVALIDATED',
        'report of run 1',
      ])
      expect(revalidated.headers['last-modified']).to.equal(lastModified)
      const hit = await get(app, '/report')
      expect([hit.xCache, hit.text, hit.headers['x-run']]).to.deep.equal(['HIT', 'report of run 1', '2'])
      expect(runs.count).to.equal(2)
    })

    it('a changed body (another ETag): the 200 from the handler reaches the client and is stored; the next HIT has the new body', async () => {
      const seen: (string | undefined)[] = []
      const { app, runs } = countingApp(cacheFor({ ttl: '1h' }), (req, res, run) => {
        seen.push(req.get('if-none-match'))
        const version = run === 1 ? 1 : 2
        res.set('ETag', `"v${version}"`)
        res.set('Cache-Control', run === 1 ? 'max-age=0' : 'max-age=60')
        res.send(`version ${version}`)
      })
      await get(app, '/changing')
      const changed = await get(app, '/changing')
      expect(seen).to.deep.equal([undefined, '"v1"'])
      expect([changed.status, changed.xCache, changed.text, changed.headers.etag]).to.deep.equal([
        200,
        'MISS',
        'version 2',
        '"v2"',
      ])
      const cacheStatus = String(changed.headers['cache-status'])
      expect(cacheStatus).to.include('fwd=stale').and.include('fwd-status=200')
      const hit = await get(app, '/changing')
      expect([hit.xCache, hit.text, hit.headers.etag]).to.deep.equal(['HIT', 'version 2', '"v2"'])
      expect(runs.count).to.equal(2)
    })

    it("Express's own weak ETag (res.send, none set by the handler) is a validator: the stale entry is revalidated with it", async () => {
      const seen: (string | undefined)[] = []
      const { app, runs } = countingApp(cacheFor({ ttl: '1h' }), (req, res) => {
        seen.push(req.get('if-none-match'))
        res.set('Cache-Control', 'max-age=0').send('the same body every time')
      })
      const miss = await get(app, '/weak')
      const etag = String(miss.headers.etag)
      expect(etag).to.match(/^W\/"/)
      for (let i = 0; i < 2; i++) {
        const res = await get(app, '/weak')
        expect([res.status, res.xCache, res.text, res.headers.etag]).to.deep.equal([
          200,
          'REVALIDATED',
          'the same body every time',
          etag,
        ])
      }
      expect(seen).to.deep.equal([undefined, etag, etag])
      expect(runs.count).to.equal(3)
    })

    for (const value of ['private', 'no-store', 'private, max-age=600']) {
      it(`a 304 that says Cache-Control: ${value} drops the entry: the next request goes to the handler`, async () => {
        const prefix = uniquePrefix('http')
        const seen: (string | undefined)[] = []
        const { app, runs } = countingApp(cacheFor({ ttl: '1h' }, prefix), (req, res, run) => {
          seen.push(req.get('if-none-match'))
          res.set('ETag', '"p1"')
          if (req.get('if-none-match') !== '"p1"')
            return void res.set('Cache-Control', 'max-age=0').send(`body #${run}`)
          res.set('Cache-Control', value).status(304).end()
        })
        await get(app, '/turns-private')
        await untilStored(client, responseEntryKey(prefix, '/turns-private'))
        // This client gets the entry as the 304 updated it, marked as the 304 says; nothing is kept.
        const revalidated = await get(app, '/turns-private')
        expect([revalidated.status, revalidated.text, revalidated.headers['cache-control']]).to.deep.equal([
          200,
          'body #1',
          value,
        ])
        expect(String(revalidated.headers['cache-status'])).to.include('fwd-status=304').and.not.include('ttl=')
        // The entry is dropped as this client is answered (as an entry is stored): not before.
        await eventually(
          async () =>
            !(await client.hKeys(responseEntryKey(prefix, '/turns-private'))).some((field) => /^[mbt]:/.test(field)),
          5_000,
          'the variant dropped',
        )
        const next = await get(app, '/turns-private')
        expect([next.xCache, next.text]).to.deep.equal(['MISS', 'body #3'])
        expect(seen).to.deep.equal([undefined, '"p1"', undefined])
        expect(runs.count).to.equal(3)
      })
    }

    it('`no-cache` with a validator is stored but revalidated on every use', async () => {
      const seen: (string | undefined)[] = []
      const { app, runs } = countingApp(cacheFor({ ttl: '1h' }), (req, res) => {
        seen.push(req.get('if-none-match'))
        res.set('Cache-Control', 'no-cache').set('ETag', '"nc"').send('checked every time')
      })
      await get(app, '/no-cache')
      for (let i = 0; i < 2; i++) {
        const res = await get(app, '/no-cache')
        expect([res.xCache, res.text]).to.deep.equal(['REVALIDATED', 'checked every time'])
      }
      expect(seen).to.deep.equal([undefined, '"nc"', '"nc"'])
      expect(runs.count).to.equal(3)
    })

    it("the client's own If-None-Match matching the stored ETag: 304 without a body, on a HIT and on a revalidation", async () => {
      const { app, runs } = countingApp(cacheFor({ ttl: '1h' }), (req, res) => {
        res.set('ETag', '"a1"')
        res.set('Cache-Control', req.path === '/fresh' ? 'max-age=60' : 'max-age=0')
        res.send('a body the client already has')
      })
      for (const path of ['/fresh', '/stale']) {
        await get(app, path)
        const res = await get(app, path, { 'If-None-Match': '"a1"' })
        expect(res.status, path).to.equal(304)
        expect(res.text ?? '', path).to.equal('')
        expect(res.headers.etag, path).to.equal('"a1"')
        expect(res.xCache, path).to.equal(path === '/fresh' ? 'HIT' : 'REVALIDATED')
      }
      expect(runs.count).to.equal(3)
    })

    it('concurrent requests for a stale entry: one revalidation, the others wait for it and get its answer', async () => {
      const revalidating = gate()
      const { app, runs } = countingApp(cacheFor({ ttl: '1h' }), async (_req, res, run) => {
        res.set('ETag', '"c1"').set('Cache-Control', 'max-age=0').set('X-Run', String(run))
        if (run > 1) await revalidating.promise
        res.send('shared body')
      })
      await get(app, '/concurrent')
      const answers = Promise.all(Array.from({ length: 5 }, () => get(app, '/concurrent')))
      await sleep(150)
      revalidating.open()
      const all = await answers
      for (const res of all) {
        expect([res.status, res.text, res.headers['x-run']]).to.deep.equal([200, 'shared body', '2'])
      }
      expect(all.map((res) => res.xCache).sort()).to.deep.equal(['HIT', 'HIT', 'HIT', 'HIT', 'REVALIDATED'])
      expect(runs.count).to.equal(2)
    })

    it("in the background (the response's stale-while-revalidate): STALE at once, then the 304's headers on a HIT", async () => {
      const seen: (string | undefined)[] = []
      const prefix = uniquePrefix('http')
      const { app, runs } = countingApp(cacheFor({ ttl: '1h' }, prefix), (req, res, run) => {
        seen.push(req.get('if-none-match'))
        res.set('ETag', '"bg"').set('X-Version', String(run))
        res.set('Cache-Control', run === 1 ? 'max-age=0, stale-while-revalidate=30' : 'max-age=60')
        res.send('background body')
      })
      await get(app, '/background')
      // Stored after the response went out: a request still waiting for that fill gets its answer as a HIT.
      await untilStored(client, responseEntryKey(prefix, '/background'))
      const stale = await get(app, '/background')
      expect([stale.xCache, stale.text, stale.headers['x-version']]).to.deep.equal(['STALE', 'background body', '1'])
      await eventually(async () => (await get(app, '/background')).xCache === 'HIT', 5_000, 'the revalidated entry')
      const hit = await get(app, '/background')
      expect([hit.xCache, hit.text, hit.headers['x-version']]).to.deep.equal(['HIT', 'background body', '2'])
      expect(seen).to.deep.equal([undefined, '"bg"'])
      expect(runs.count).to.equal(2)
    })

    it('a revalidated entry is fresh for the whole max-age of the 304: the Date the cache gives it is not counted as age', async () => {
      const { app, runs } = countingApp(cacheFor({ ttl: '1h' }), (req, res, run) => {
        res.set('ETag', '"r1"')
        res.set('Cache-Control', run === 1 ? 'max-age=0' : 'max-age=1')
        if (req.get('if-none-match') === '"r1"') return void res.status(304).end()
        res.send('revalidated body')
      })
      await get(app, '/revalidated-freshness')
      // The 304 comes late in a second: a Date cut to the second would make it look ~0.9 s old.
      await lateInSecond()
      expect((await get(app, '/revalidated-freshness')).xCache).to.equal('REVALIDATED')
      await sleep(300)
      const res = await get(app, '/revalidated-freshness')
      expect([res.xCache, res.text], '0.3 s into a max-age of 1 s').to.deep.equal(['HIT', 'revalidated body'])
      expect(runs.count).to.equal(2)
    })
  })

  describe('unsafe methods invalidate (RFC 9111 4.4)', () => {
    /**
     * GET answers `GET <url> #<run>`; the other methods answer with the status, Location and
     * Content-Location the request asks for (X-Status, X-Location, X-Content-Location).
     */
    const itemsApp = (options: Partial<CacheResponseOptions> = {}, prefix?: string) =>
      countingApp(cacheFor(options, prefix), (req, res, run) => {
        if (req.method === 'GET') return void res.send(`GET ${req.originalUrl} #${run}`)
        const location = req.get('x-location')
        const contentLocation = req.get('x-content-location')
        if (location !== undefined) res.set('Location', location)
        if (contentLocation !== undefined) res.set('Content-Location', contentLocation)
        res.status(Number(req.get('x-status') ?? 200)).send(`${req.method} done`)
      })

    for (const [method, status] of [
      ['post', 201],
      ['put', 200],
      ['patch', 200],
      ['delete', 204],
    ] as const) {
      it(`a ${status} ${method.toUpperCase()} to /items/1 makes the next GET /items/1 a MISS at once; /items/2 stays`, async () => {
        const { app, runs } = itemsApp()
        for (const path of ['/items/1', '/items/2']) {
          await get(app, path)
          expect((await get(app, path)).xCache, path).to.equal('HIT')
        }
        const unsafe = await request(app)[method]('/items/1').set('X-Status', String(status))
        expect(unsafe.status).to.equal(status)
        // Sent the moment the response arrived: the invalidation is already done.
        const after = await get(app, '/items/1')
        expect([after.xCache, after.text]).to.deep.equal(['MISS', 'GET /items/1 #4'])
        const other = await get(app, '/items/2')
        expect([other.xCache, other.text]).to.deep.equal(['HIT', 'GET /items/2 #2'])
        expect(runs.count).to.equal(4)
      })
    }

    it('an extension method (any but GET, HEAD, OPTIONS, TRACE) invalidates too; OPTIONS does not', async () => {
      const { app, runs } = itemsApp()
      for (const path of ['/items/1', '/items/2']) {
        await get(app, path)
        expect((await get(app, path)).xCache, path).to.equal('HIT')
      }
      expect((await request(app).options('/items/2')).status).to.equal(200)
      expect((await request(app).propfind('/items/1')).status).to.equal(200)
      expect((await get(app, '/items/1')).xCache).to.equal('MISS')
      expect((await get(app, '/items/2')).xCache).to.equal('HIT')
      expect(runs.count).to.equal(5)
    })

    it('a 4xx or 5xx answer to an unsafe request does not invalidate', async () => {
      const { app, runs } = countingApp(cacheFor(), (req, res, run) => {
        if (req.method === 'GET') return void res.send(`GET #${run}`)
        res.status(Number(req.get('x-status'))).send('refused')
      })
      await get(app, '/items/2')
      for (const method of ['post', 'put', 'patch', 'delete'] as const) {
        for (const status of [400, 404, 409, 500, 503]) {
          const res = await request(app)[method]('/items/2').set('X-Status', String(status))
          expect(res.status).to.equal(status)
          const after = await get(app, '/items/2')
          expect([after.xCache, after.text], `${method} ${status}`).to.deep.equal(['HIT', 'GET #1'])
        }
      }
      expect(runs.count).to.equal(21)
    })

    it('Location and Content-Location on the same host are invalidated too; on another host they are not', async () => {
      const { app } = itemsApp()
      const otherHost = { Host: 'other.test' }
      const entries: [string, Record<string, string>][] = [
        ['/items/7', {}],
        ['/items/8?view=full', {}],
        ['/items/9', {}],
        ['/items/9', otherHost],
      ]
      for (const [path, headers] of entries) {
        await get(app, path, headers)
        expect((await get(app, path, headers)).xCache, path).to.equal('HIT')
      }

      // A 201 with a relative Location; a 200 with an absolute Content-Location on the same host.
      await request(app).post('/items').set({ 'X-Status': '201', 'X-Location': '/items/7' })
      await request(app).put('/items/8').set('X-Content-Location', 'http://app.test/items/8?view=full')
      // A Location on another host: neither that host's entry nor ours of the same path.
      await request(app).patch('/items/10').set('X-Location', 'http://other.test/items/9')

      expect((await get(app, '/items/7')).xCache).to.equal('MISS')
      expect((await get(app, '/items/8?view=full')).xCache).to.equal('MISS')
      expect((await get(app, '/items/9')).xCache).to.equal('HIT')
      expect((await get(app, '/items/9', otherHost)).xCache).to.equal('HIT')
    })

    it('a 303 redirect after a POST invalidates the target of its Location', async () => {
      const { app } = countingApp(cacheFor(), (req, res, run) => {
        if (req.method === 'POST') return void res.redirect(303, '/orders/42')
        res.send(`GET ${req.path} #${run}`)
      })
      await get(app, '/orders/42')
      expect((await get(app, '/orders/42')).xCache).to.equal('HIT')
      expect((await request(app).post('/orders')).status).to.equal(303)
      expect((await get(app, '/orders/42')).xCache).to.equal('MISS')
    })

    it('a PATCH through one instance invalidates the entry for another (same prefix, separate clients and apps)', async () => {
      const prefix = uniquePrefix('http')
      const other = await connectRedis()
      try {
        const first = itemsApp({}, prefix)
        const second = countingApp(cacheResponse({ client: other, prefix, ttl: '1m' }), (req, res, run) => {
          res.send(`${req.method} from the second instance #${run}`)
        })
        await get(second.app, '/items/3')
        const hit = await get(second.app, '/items/3')
        expect([hit.xCache, hit.text]).to.deep.equal(['HIT', 'GET from the second instance #1'])
        expect((await request(first.app).patch('/items/3')).status).to.equal(200)
        // Sent the moment the PATCH's response arrived: the invalidation is already done.
        const after = await get(second.app, '/items/3')
        expect([after.xCache, after.text]).to.deep.equal(['MISS', 'GET from the second instance #2'])
        // Its fill is stored after the response went out: let it finish before its client closes.
        await untilStored(client, responseEntryKey(prefix, '/items/3'))
      } finally {
        await other.close()
      }
    })

    it("the invalidation is done before the response ends: with the PATCHing instance's Redis connection held up 300 ms, the PATCH waits and the other instance's next GET is a MISS", async () => {
      const prefix = uniquePrefix('http')
      const entryKey = responseEntryKey(prefix, '/items/6')
      const slow = await connectRedis()
      try {
        const patching = countingApp(cacheResponse({ client: slow, prefix, ttl: '1m' }))
        const reading = countingApp(cacheFor({}, prefix))
        await get(reading.app, '/items/6')
        expect((await get(reading.app, '/items/6')).xCache).to.equal('HIT')
        // A blocking command on the connection that carries the invalidation (same slot): Redis
        // runs the invalidation only once it returns; every other connection goes on.
        const blocked = slow.blPop(`${entryKey}:blocked`, 0.3)
        const started = Date.now()
        expect((await request(patching.app).patch('/items/6')).status).to.equal(200)
        expect(Date.now() - started, 'the PATCH waited for its invalidation (ms)').to.be.at.least(200)
        const after = await get(reading.app, '/items/6')
        expect([after.xCache, after.text]).to.deep.equal(['MISS', 'GET /items/6 #2'])
        await blocked
        await untilStored(client, entryKey)
      } finally {
        await slow.close()
      }
    })

    it('unsafe requests to URLs with nothing stored and no fill in progress write nothing to Redis', async () => {
      const prefix = uniquePrefix('http')
      const { app } = countingApp(cacheFor({}, prefix), (req, res, run) => {
        // GET /private is never stored: its fill leaves only the lock saying so.
        if (req.method === 'GET') res.set('Cache-Control', 'no-store')
        res.set('Location', `/created/${run}`).send(`${req.method} #${run}`)
      })
      for (const method of ['post', 'put', 'patch', 'delete'] as const) {
        for (let i = 0; i < 5; i++) expect((await request(app)[method](`/nothing/${i}?q=${i}`)).status).to.equal(200)
      }
      expect([...(await dumpKeys(prefix)).entries()], 'keys under the prefix').to.deep.equal([])
      await get(app, '/private')
      const before = await dumpKeys(prefix)
      expect([...before.values()]).to.deep.equal([['uncacheable']])
      expect((await request(app).post('/private')).status).to.equal(200)
      expect(await dumpKeys(prefix)).to.deep.equal(before)
    })

    describe('an unsafe request during a fill', () => {
      const outcomes: CacheEvent[] = []
      const onEvent = (message: unknown) => {
        const event = message as CacheEvent
        if (event.result === 'stored' || event.result === 'refused') outcomes.push(event)
      }
      before(() => diagnostics.subscribe(CHANNELS.cache, onEvent))
      after(() => diagnostics.unsubscribe(CHANNELS.cache, onEvent))

      /** What became of the fill of `key`: 'stored', or 'refused <reason>'. */
      const outcomeOf = async (key: string): Promise<string> => {
        await eventually(async () => outcomes.some((event) => event.key === key), 5_000, `the fill of ${key} to end`)
        const event = outcomes.find((each) => each.key === key)!
        return event.result === 'stored' ? 'stored' : `refused ${event.reason}`
      }

      /**
       * GET /page, whose first run is held until `release` resolves; then what became of its
       * fill and what the next GET gets. `meanwhile` runs while the first GET is held.
       */
      async function heldFill(
        options: Partial<CacheResponseOptions>,
        meanwhile: (app: express.Express, entryKey: string) => Promise<void>,
      ): Promise<{ outcome: string; next: Awaited<ReturnType<typeof get>> }> {
        const prefix = uniquePrefix('http')
        const entryKey = responseEntryKey(prefix, '/page')
        const held = gate()
        const { app, runs } = countingApp(cacheFor(options, prefix), async (req, res, run) => {
          if (req.method === 'GET' && run === 1) await held.promise
          res.send(`${req.method} #${run}`)
        })
        const first = get(app, '/page')
        try {
          await eventually(async () => runs.count === 1, 5_000, 'the first GET to reach the handler')
          await meanwhile(app, entryKey)
        } finally {
          held.open()
        }
        expect((await first).text).to.equal('GET #1')
        const outcome = await outcomeOf(entryKey)
        return { outcome, next: await get(app, '/page') }
      }

      const lockGone = (entryKey: string) =>
        eventually(async () => (await client.exists(lockKeyOf(entryKey))) === 0, 5_000, 'the lock to expire')

      it('nothing stored yet: the fill is not stored, the next GET goes to the handler', async () => {
        const { outcome, next } = await heldFill({}, async (app) => {
          expect((await request(app).patch('/page')).status).to.equal(200)
        })
        expect(outcome).to.equal('refused invalidated')
        expect([next.xCache, next.text]).to.deep.equal(['MISS', 'GET #3'])
      })

      it('a fill that outlives its lock, the unsafe request after the lock expired: not stored either', async () => {
        const { outcome, next } = await heldFill({ lockTimeout: '400ms' }, async (app, entryKey) => {
          await lockGone(entryKey)
          expect((await request(app).patch('/page')).status).to.equal(200)
        })
        expect(outcome).to.equal('refused invalidated')
        expect([next.xCache, next.text]).to.deep.equal(['MISS', 'GET #3'])
      })

      it('a fill that outlives its lock with no unsafe request meanwhile is stored', async () => {
        const { outcome, next } = await heldFill({ lockTimeout: '400ms' }, (_app, entryKey) => lockGone(entryKey))
        expect(outcome).to.equal('stored')
        expect([next.xCache, next.text]).to.deep.equal(['HIT', 'GET #1'])
      })
    })

    it('with `key`, the entry `key` gives the unsafe request is invalidated', async () => {
      const { app } = countingApp(cacheFor({ key: (req) => `item:${req.path.split('/')[2]}` }), (req, res, run) => {
        res.send(`${req.method} #${run}`)
      })
      await get(app, '/items/5/summary')
      expect((await get(app, '/items/5/anything-else')).xCache).to.equal('HIT')
      await request(app).delete('/items/5')
      expect((await get(app, '/items/5/summary')).xCache).to.equal('MISS')
    })

    it('invalidateOnUnsafe: false leaves the entry', async () => {
      const { app, runs } = itemsApp({ invalidateOnUnsafe: false })
      await get(app, '/items/4')
      for (const method of ['post', 'put', 'patch', 'delete'] as const) {
        expect((await request(app)[method]('/items/4')).status).to.equal(200)
      }
      const after = await get(app, '/items/4')
      expect([after.xCache, after.text]).to.deep.equal(['HIT', 'GET /items/4 #1'])
      expect(runs.count).to.equal(5)
    })
  })

  describe('Age and Date on hits', () => {
    it("Age counts the response's own Age plus its time in the cache; Date is the stored response's, not a new one", async () => {
      const { app } = plainApp({ ttl: '1h' }, { 'Cache-Control': 'max-age=60', Age: '5' })
      const miss = await get(app, '/age')
      expect(miss.headers.age).to.equal('5')
      const missDate = Date.parse(String(miss.headers.date))
      const hit = await get(app, '/age')
      expect(hit.xCache).to.equal('HIT')
      expect(Number(hit.headers.age)).to.be.within(5, 6)
      await sleep(1_100)
      const later = await get(app, '/age')
      expect(later.xCache).to.equal('HIT')
      expect(Number(later.headers.age)).to.be.within(6, 8)
      // The Date the response was made with (Node's on the wire, at most one second apart), not now.
      const hitDate = Date.parse(String(later.headers.date))
      expect(hitDate).to.be.within(missDate - 1_000, missDate)
    })

    it('a Date set by the handler is replayed as is on hits, and the age it implies counts', async () => {
      const date = new Date(Date.now() - 10_000).toUTCString()
      const { app } = plainApp({ ttl: '1h' }, { 'Cache-Control': 'max-age=60', Date: date })
      const miss = await get(app, '/dated')
      expect(miss.headers.date).to.equal(date)
      const hit = await get(app, '/dated')
      expect([hit.xCache, hit.headers.date]).to.deep.equal(['HIT', date])
      expect(Number(hit.headers.age)).to.be.within(10, 12)
    })
  })

  describe('stacked as users stack it', () => {
    const BODY = `${'All work and no play makes Jack a dull boy. '.repeat(100)}\n`

    it("helmet, cors, compression and rateLimit before cacheResponse, a max-age=1 response: fresh for 1 s, hits decode, the rate limit headers are the current request's", async () => {
      const prefix = uniquePrefix('http')
      const app = express()
      app.set('env', 'test')
      app.use(stableHost)
      app.use(helmet())
      app.use(cors({ origin: ['https://a.example', 'https://b.example'] }))
      app.use(compression())
      app.use(rateLimit({ client, prefix: `${prefix}rl:`, limit: 100, windowMs: 60_000 }))
      let runs = 0
      app.get('/doc', cacheFor({ ttl: '1h' }, prefix), (_req: Request, res: Response) => {
        runs++
        res.set('Cache-Control', 'max-age=1').set('X-Run', String(runs)).type('text/plain').send(`${runs}\n${BODY}`)
      })
      server = await listen(app)
      const doc = (encoding: string) =>
        rawRequest(server!, '/doc', { headers: { 'accept-encoding': encoding, origin: 'https://a.example' } })

      const miss = await doc('gzip')
      expect([miss.headers['x-cache'], miss.headers['content-encoding'], decoded(miss)]).to.deep.equal([
        'MISS',
        'gzip',
        `1\n${BODY}`,
      ])
      let remaining = remainingOf(miss)
      for (const encoding of ['identity', 'gzip']) {
        const hit = await doc(encoding)
        expect(hit.headers['x-cache']).to.equal('HIT')
        expect(hit.headers['content-encoding']).to.equal(encoding === 'gzip' ? 'gzip' : undefined)
        expect(decoded(hit)).to.equal(`1\n${BODY}`)
        expect(hit.headers['x-run']).to.equal('1')
        expect(remainingOf(hit), 'the rate limit counted this request').to.equal(remaining - 1)
        remaining = remainingOf(hit)
        expect(hit.headers['access-control-allow-origin']).to.equal('https://a.example')
        expect(hit.headers['x-content-type-options']).to.equal('nosniff')
      }
      expect(runs).to.equal(1)

      await sleep(1_100)
      const refetched = await doc('gzip')
      expect(refetched.headers['x-cache']).to.equal('MISS')
      expect(decoded(refetched)).to.equal(`2\n${BODY}`)
      expect(remainingOf(refetched)).to.equal(remaining - 1)
      const hit = await doc('identity')
      expect([hit.headers['x-cache'], decoded(hit), hit.headers['x-run']]).to.deep.equal(['HIT', `2\n${BODY}`, '2'])
      expect(runs).to.equal(2)
    })

    it("rateLimit's legacy headers (it sets Date) before the cache: a max-age=1 response is still fresh for 1 s", async () => {
      const prefix = uniquePrefix('http')
      const app = express()
      app.set('env', 'test')
      app.use(stableHost)
      app.use(rateLimit({ client, prefix: `${prefix}rl:`, limit: 100, windowMs: 60_000, legacyHeaders: true }))
      let runs = 0
      app.get('/legacy', cacheFor({ ttl: '1h' }, prefix), (_req: Request, res: Response) => {
        runs++
        res.set('Cache-Control', 'max-age=1').type('text/plain').end(`run ${runs}`)
      })
      // The response is made late in a second: the limiter's Date, cut to the second, is ~0.9 s earlier.
      await lateInSecond()
      const miss = await get(app, '/legacy')
      expect(miss.xCache).to.equal('MISS')
      await sleep(300)
      const hit = await get(app, '/legacy')
      expect([hit.xCache, hit.text], '0.3 s into a max-age of 1 s').to.deep.equal(['HIT', 'run 1'])
      expect(hit.headers['x-ratelimit-remaining']).to.equal('98')
      expect(runs).to.equal(1)
    })
  })
})
