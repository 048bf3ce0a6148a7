import { setTimeout as sleep } from 'node:timers/promises'
import { expect } from 'chai'
import request from 'supertest'
import { type CacheResponseOptions, cacheResponse } from '../../src/index.js'
import { countingApp, eventually, xCache } from '../helpers/cache-app.js'
import { connectRedis, mode, type RedisClient, uniquePrefix } from '../helpers/redis.js'

/*
 * Issue 4: "Add `X-Cache: HIT | MISS | STALE | BYPASS` and `Age`; generate a strong `ETag`
 * when the handler set none; answer `If-None-Match` (weak comparison, lists, `*`) with 304
 * on hits." RFC 9110 13.1.2 (If-None-Match) and 8.8.3.2 (weak comparison).
 */
describe(`cacheResponse: headers (${mode} Redis)`, () => {
  let client: RedisClient
  before(async () => {
    client = await connectRedis()
  })
  after(async () => {
    await client.close()
  })

  const cacheFor = (options: Partial<CacheResponseOptions> = {}) =>
    cacheResponse({ client, prefix: uniquePrefix('headers'), ttl: '1m', ...options })

  /** A route that writes its body with res.write/res.end, so that Express adds no ETag. */
  const plainApp = (options: Partial<CacheResponseOptions> = {}) =>
    countingApp(cacheFor(options), (_req, res, run) => {
      res.setHeader('Content-Type', 'text/plain; charset=utf-8')
      res.write('body of run ')
      res.end(String(run))
    })

  describe('X-Cache', () => {
    it('MISS, then HIT', async () => {
      const { app } = plainApp()
      const responses = [await request(app).get('/x'), await request(app).get('/x'), await request(app).get('/x')]
      expect(responses.map(xCache)).to.deep.equal(['MISS', 'HIT', 'HIT'])
    })
  })

  describe('Age', () => {
    it('present on hits, growing: 0 at first, at least 1 after 1.1 s', async () => {
      const { app } = plainApp({ ttl: '10s' })
      const miss = await request(app).get('/age')
      expect(miss.headers).not.to.have.property('age')
      const hit = await request(app).get('/age')
      expect(hit.headers.age).to.equal('0')
      await sleep(1_100)
      const later = await request(app).get('/age')
      expect(xCache(later)).to.equal('HIT')
      expect(Number(later.headers.age)).to.be.at.least(1).and.at.most(3)
    })
  })

  describe('ETag', () => {
    it('the handler set none: the stored entry gets a strong ETag (no W/), the same on every hit', async () => {
      const { app } = plainApp()
      const miss = await request(app).get('/etag')
      expect(miss.headers).not.to.have.property('etag')
      const hit = await request(app).get('/etag')
      const again = await request(app).get('/etag')
      expect(hit.headers.etag).to.match(/^"[^"\s]+"$/)
      expect(again.headers.etag).to.equal(hit.headers.etag)
    })

    it('different bodies get different ETags', async () => {
      const { app } = plainApp()
      await request(app).get('/one')
      await request(app).get('/two')
      const one = await request(app).get('/one')
      const two = await request(app).get('/two')
      expect([one.text, two.text]).to.deep.equal(['body of run 1', 'body of run 2'])
      expect(one.headers.etag).to.be.a('string')
      expect(one.headers.etag).not.to.equal(two.headers.etag)
    })

    it("the handler's own ETag (Express's weak one) is kept as is", async () => {
      const { app } = countingApp(cacheFor(), (_req, res) => {
        res.send('express sets a weak etag')
      })
      const miss = await request(app).get('/own')
      const hit = await request(app).get('/own')
      expect(miss.headers.etag).to.match(/^W\//)
      expect(hit.headers.etag).to.equal(miss.headers.etag)
    })
  })

  describe('If-None-Match on a hit', () => {
    /** A stored entry and its ETag. */
    const stored = async (options: Partial<CacheResponseOptions> = {}) => {
      const { app, runs } = plainApp(options)
      await request(app).get('/inm')
      const etag = String((await request(app).get('/inm')).headers.etag)
      expect(etag).to.match(/^"/)
      return { app, runs, etag }
    }

    it('the matching ETag: 304 without a body, with the ETag and X-Cache: HIT', async () => {
      const { app, runs, etag } = await stored()
      const res = await request(app).get('/inm').set('If-None-Match', etag)
      expect(res.status).to.equal(304)
      expect(res.text ?? '').to.equal('')
      expect(res.headers.etag).to.equal(etag)
      expect(xCache(res)).to.equal('HIT')
      expect(res.headers).not.to.have.property('content-length')
      expect(runs.count).to.equal(1)
    })

    it('a list that contains it: 304', async () => {
      const { app, etag } = await stored()
      const res = await request(app).get('/inm').set('If-None-Match', `"other", ${etag}, W/"third"`)
      expect(res.status).to.equal(304)
    })

    it('*: 304', async () => {
      const { app } = await stored()
      expect((await request(app).get('/inm').set('If-None-Match', '*')).status).to.equal(304)
    })

    it('weak comparison: W/"x" matches the stored "x"', async () => {
      const { app, etag } = await stored()
      expect((await request(app).get('/inm').set('If-None-Match', `W/${etag}`)).status).to.equal(304)
    })

    it('weak comparison the other way: "x" matches a stored W/"x"', async () => {
      const { app } = countingApp(cacheFor(), (_req, res) => {
        res.send('weak')
      })
      await request(app).get('/weak')
      const weak = String((await request(app).get('/weak')).headers.etag)
      expect(weak).to.match(/^W\//)
      const res = await request(app).get('/weak').set('If-None-Match', weak.slice(2))
      expect(res.status).to.equal(304)
      expect(xCache(res)).to.equal('HIT')
    })

    it('a HEAD with the matching ETag: 304', async () => {
      const { app, etag } = await stored()
      const res = await request(app).head('/inm').set('If-None-Match', etag)
      expect(res.status).to.equal(304)
    })

    it('no match: 200 with the body', async () => {
      const { app, runs, etag } = await stored()
      for (const header of ['"nope"', `"${etag.slice(1, -2)}"`, 'W/"nope", "other"']) {
        const res = await request(app).get('/inm').set('If-None-Match', header)
        expect(res.status, header).to.equal(200)
        expect(res.text).to.equal('body of run 1')
        expect(xCache(res)).to.equal('HIT')
      }
      expect(runs.count).to.equal(1)
    })

    it('a stored 404 is answered 404 whatever If-None-Match says (RFC 9110 13.2.1: preconditions only apply to a 2xx)', async () => {
      const { app, runs } = countingApp(cacheFor({ statuses: [200, 404] }), (_req, res) => {
        res.statusCode = 404
        res.end('not found')
      })
      await request(app).get('/gone')
      const hit = await request(app).get('/gone')
      expect(hit.status).to.equal(404)
      const etag = String(hit.headers.etag)
      for (const header of ['*', etag]) {
        const res = await request(app).get('/gone').set('If-None-Match', header)
        expect(res.status, `If-None-Match: ${header}`).to.equal(404)
        expect(res.text).to.equal('not found')
      }
      expect(runs.count).to.equal(1)
    })
  })

  describe('If-None-Match on a miss', () => {
    it('a conditional request that misses does not keep the URL from being stored (the next plain GET is stored)', async () => {
      // A browser revalidating after an invalidation: the origin (Express) answers it 304.
      const { app, runs } = countingApp(cacheFor(), (_req, res) => {
        res.send('unchanged content')
      })
      const probe = countingApp(cacheFor(), (_req, res) => {
        res.send('unchanged content')
      })
      const etag = String((await request(probe.app).get('/x')).headers.etag)

      // The fill asks the origin without the client's precondition, stores the full response,
      // and answers the client's If-None-Match itself: 304 to it, the full body in the cache.
      const revalidation = await request(app).get('/page').set('If-None-Match', etag)
      expect(revalidation.status).to.equal(304)
      expect(revalidation.text).to.equal('')
      expect(runs.count).to.equal(1)
      await eventually(async () => xCache(await request(app).get('/page')) === 'HIT', 2_000, 'a HIT')
      const third = await request(app).get('/page')
      expect([third.status, xCache(third), third.text]).to.deep.equal([200, 'HIT', 'unchanged content'])
      expect(runs.count).to.equal(1)
    })
  })
})
