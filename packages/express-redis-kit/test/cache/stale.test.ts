import type { Server } from 'node:http'
import { setTimeout as sleep } from 'node:timers/promises'
import { expect } from 'chai'
import express, { type NextFunction, type Request, type Response } from 'express'
import request from 'supertest'
import { type CacheResponseOptions, cacheResponse } from '../../src/index.js'
import { countingApp, rawRequest, stableHost, xCache } from '../helpers/cache-app.js'
import { closeServer, listen } from '../helpers/outage.js'
import { connectRedis, mode, type RedisClient, uniquePrefix } from '../helpers/redis.js'

/*
 * Issue 4: "`staleWhileRevalidate` (serve the stale entry and refresh it once in the
 * background) and `staleIfError` (serve the stale entry when the handler throws or answers
 * 5xx), both durations." RFC 5861. Real short TTLs: ttl 300ms.
 */
const ORIGIN_MS = 300

describe(`cacheResponse: stale entries (${mode} Redis)`, () => {
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

  const cacheFor = (options: Partial<CacheResponseOptions>) =>
    cacheResponse({ client, prefix: uniquePrefix('stale'), ttl: '300ms', ...options })

  describe('staleWhileRevalidate', () => {
    /** A route taking ORIGIN_MS that answers `version <run>`. */
    const slowApp = (options: Partial<CacheResponseOptions>) =>
      countingApp(cacheFor(options), async (_req, res, run) => {
        await sleep(ORIGIN_MS)
        res.setHeader('X-Version', String(run))
        res.send(`version ${run}`)
      })

    it('stale: concurrent requests all get X-Cache STALE at once while the handler runs once, in the background; then a HIT has the new body', async () => {
      const { app, runs } = slowApp({ staleWhileRevalidate: '5s' })
      server = await listen(app)
      const first = await rawRequest(server, '/swr')
      expect([first.headers['x-cache'], first.body.toString()]).to.deep.equal(['MISS', 'version 1'])
      await sleep(400)

      const answers = await Promise.all(Array.from({ length: 10 }, () => rawRequest(server!, '/swr')))
      for (const answer of answers) {
        expect(answer.headers['x-cache']).to.equal('STALE')
        expect(answer.status).to.equal(200)
        expect(answer.body.toString()).to.equal('version 1')
        expect(answer.headers['x-version']).to.equal('1')
        expect(answer.headers.age).to.match(/^\d+$/)
        expect(answer.ms, 'a STALE answer (ms)').to.be.below(ORIGIN_MS)
      }

      // The background refresh runs the handler once and stores its response.
      let hit = await rawRequest(server, '/swr')
      for (let attempt = 0; hit.headers['x-cache'] !== 'HIT' && attempt < 100; attempt++) {
        await sleep(20)
        hit = await rawRequest(server, '/swr')
      }
      expect([hit.headers['x-cache'], hit.body.toString()]).to.deep.equal(['HIT', 'version 2'])
      expect(runs.count).to.equal(2)
    })

    it('the background refresh replays the request from the top app: a route in a mounted router, behind other middleware, with its query', async () => {
      const app = express()
      app.use(stableHost)
      let runs = 0
      const seen: string[] = []
      app.use((req, _res, next) => {
        seen.push(`${req.ip ? 'ip' : 'no ip'} ${req.headers['x-client'] ?? ''}`)
        next()
      })
      const router = express.Router()
      router.get('/items', cacheFor({ staleWhileRevalidate: '5s' }), (req, res) => {
        runs++
        res.send(`page ${String(req.query.page)} run ${runs}`)
      })
      app.use('/api', router)
      const get = () => request(app).get('/api/items?page=2').set('X-Client', 'c1')
      expect((await get()).text).to.equal('page 2 run 1')
      await sleep(400)
      const stale = await get()
      expect([xCache(stale), stale.text]).to.deep.equal(['STALE', 'page 2 run 1'])
      let hit = await get()
      for (let attempt = 0; xCache(hit) !== 'HIT' && attempt < 100; attempt++) {
        await sleep(20)
        hit = await get()
      }
      expect([xCache(hit), hit.text]).to.deep.equal(['HIT', 'page 2 run 2'])
      expect(runs).to.equal(2)
      // The replay went through the app's own middleware with the client's headers and address.
      expect(seen.every((line) => line === 'ip c1')).to.equal(true)
    })

    it('while the refresh runs, later requests get STALE too; once it is stored, HIT', async () => {
      const { app, runs } = slowApp({ staleWhileRevalidate: '5s' })
      server = await listen(app)
      await rawRequest(server, '/later')
      await sleep(400)
      const triggering = await rawRequest(server, '/later')
      expect([triggering.headers['x-cache'], triggering.body.toString()]).to.deep.equal(['STALE', 'version 1'])
      await sleep(50)
      const during = [await rawRequest(server, '/later'), await rawRequest(server, '/later')]
      expect(during.map((answer) => answer.headers['x-cache'])).to.deep.equal(['STALE', 'STALE'])
      expect(during.map((answer) => answer.body.toString())).to.deep.equal(['version 1', 'version 1'])
      // The refresh is stored right after its response went out.
      let hit = await rawRequest(server, '/later')
      for (let attempt = 0; hit.headers['x-cache'] !== 'HIT' && attempt < 50; attempt++) {
        await sleep(20)
        hit = await rawRequest(server, '/later')
      }
      expect([hit.headers['x-cache'], hit.body.toString()]).to.deep.equal(['HIT', 'version 2'])
      expect(runs.count).to.equal(2)
    })

    it('past ttl + staleWhileRevalidate the entry is not served: the request waits for the handler (MISS)', async () => {
      const { app, runs } = slowApp({ staleWhileRevalidate: '300ms' })
      await request(app).get('/expired')
      await sleep(700)
      const res = await request(app).get('/expired')
      expect([xCache(res), res.text]).to.deep.equal(['MISS', 'version 2'])
      expect(runs.count).to.equal(2)
    })

    it('without staleWhileRevalidate, a request after the ttl is a MISS', async () => {
      const { app, runs } = slowApp({})
      await request(app).get('/none')
      await sleep(400)
      const res = await request(app).get('/none')
      expect([xCache(res), res.text]).to.deep.equal(['MISS', 'version 2'])
      expect(runs.count).to.equal(2)
    })
  })

  describe('staleIfError', () => {
    type Failure = 'answers 500' | 'answers 503' | 'calls next(err)' | 'throws'
    /** A route that succeeds on its first run, then fails as `failure` says. */
    const failingApp = (options: Partial<CacheResponseOptions>, failure: Failure) =>
      countingApp(cacheFor(options), async (_req: Request, res: Response, run: number, next: NextFunction) => {
        if (run === 1) {
          res.setHeader('X-Run', '1')
          res.send('good body')
          return
        }
        res.setHeader('X-Failed-Run', String(run))
        if (failure === 'answers 500') res.status(500).send('origin error')
        else if (failure === 'answers 503') res.status(503).send('origin unavailable')
        else if (failure === 'calls next(err)') next(new Error('origin failed'))
        else throw new Error('origin threw')
      })

    for (const failure of ['answers 500', 'answers 503', 'calls next(err)', 'throws'] as const) {
      it(`the handler ${failure} after the entry went stale: the stale body, 200, X-Cache STALE`, async () => {
        const { app, runs } = failingApp({ staleIfError: '5s' }, failure)
        expect((await request(app).get('/sie')).text).to.equal('good body')
        await sleep(400)
        for (let i = 0; i < 2; i++) {
          const res = await request(app).get('/sie')
          expect(res.status).to.equal(200)
          expect(xCache(res)).to.equal('STALE')
          expect(res.text).to.equal('good body')
          expect(res.headers['x-run']).to.equal('1')
          expect(res.headers).not.to.have.property('x-failed-run')
        }
        expect(runs.count).to.equal(3)
      })
    }

    it('without staleIfError: the 500 reaches the client', async () => {
      const { app } = failingApp({}, 'answers 500')
      await request(app).get('/no-sie')
      await sleep(400)
      const res = await request(app).get('/no-sie')
      expect(res.status).to.equal(500)
      expect(res.text).to.equal('origin error')
      expect(xCache(res)).to.equal('MISS')
    })

    it('without staleIfError: an error passed to next(err) reaches the error handler (500)', async () => {
      const { app } = failingApp({}, 'calls next(err)')
      await request(app).get('/no-sie-next')
      await sleep(400)
      expect((await request(app).get('/no-sie-next')).status).to.equal(500)
    })

    it('past ttl + staleIfError: the 500 reaches the client', async () => {
      const { app } = failingApp({ staleIfError: '300ms' }, 'answers 500')
      await request(app).get('/sie-expired')
      await sleep(700)
      const res = await request(app).get('/sie-expired')
      expect(res.status).to.equal(500)
    })

    it('a 4xx is not an origin failure: a 404 is passed on, not replaced', async () => {
      const { app } = countingApp(cacheFor({ staleIfError: '5s' }), (_req, res, run) => {
        if (run === 1) res.send('good body')
        else res.status(404).send('gone')
      })
      await request(app).get('/sie-404')
      await sleep(400)
      const res = await request(app).get('/sie-404')
      expect([res.status, res.text]).to.deep.equal([404, 'gone'])
    })

    it('once the origin recovers, its new body is stored (MISS, then HIT)', async () => {
      let failing = false
      const { app } = countingApp(cacheFor({ staleIfError: '5s' }), (_req, res, run) => {
        if (failing) res.status(500).send('error')
        else res.send(`body ${run}`)
      })
      await request(app).get('/recover')
      await sleep(400)
      failing = true
      expect(xCache(await request(app).get('/recover'))).to.equal('STALE')
      failing = false
      const recovered = await request(app).get('/recover')
      expect([xCache(recovered), recovered.text]).to.deep.equal(['MISS', 'body 3'])
      const hit = await request(app).get('/recover')
      expect([xCache(hit), hit.text]).to.deep.equal(['HIT', 'body 3'])
    })
  })
})
