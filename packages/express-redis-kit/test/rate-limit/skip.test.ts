import { setTimeout as sleep } from 'node:timers/promises'
import { expect } from 'chai'
import request from 'supertest'
import { type RateLimitOptions, rateLimit } from '../../src/index.js'
import { appWith } from '../helpers/app.js'
import { ALGORITHMS, settle, usedBy } from '../helpers/rate-limit.js'
import { connectRedis, type RedisClient, uniquePrefix } from '../helpers/redis.js'

/*
 * Issue 2: `skip(req, res)`; `skipSuccessfulRequests`, `skipFailedRequests` and
 * `requestWasSuccessful` (default statusCode < 400): the request is given back after the
 * response finished, so the tests poll the count (getKey) for a short while.
 */
/** Requests of one client a few ms apart, as real ones are (not all within one Redis millisecond). */
const BETWEEN_REQUESTS_MS = 20

describe('rateLimit skipping', () => {
  let client: RedisClient
  before(async () => {
    client = await connectRedis()
  })
  after(async () => {
    await client.close()
  })

  for (const algorithm of ALGORITHMS) {
    describe(algorithm, () => {
      const limiterFor = (options: Partial<RateLimitOptions>) =>
        rateLimit({
          client,
          algorithm,
          prefix: uniquePrefix('skip'),
          keyGenerator: () => 'k',
          limit: 2,
          windowMs: '1h',
          ...options,
        })

      describe('skip', () => {
        it('lets a skipped request through uncounted, without headers', async () => {
          const limiter = limiterFor({ skip: async (req) => req.query.free === '1' })
          const app = appWith(limiter)
          for (let i = 0; i < 5; i++) {
            const res = await request(app).get('/?free=1')
            expect(res.status).to.equal(200)
            expect(res.headers).not.to.have.property('ratelimit')
          }
          expect(await limiter.getKey('k')).to.equal(undefined)
          for (let i = 0; i < 2; i++) expect((await request(app).get('/')).status).to.equal(200)
          expect((await request(app).get('/')).status).to.equal(429)
          expect((await request(app).get('/?free=1')).status).to.equal(200)
        })
      })

      describe('skipSuccessfulRequests', () => {
        it('gives back every successful request once its response finished; failures stay counted', async () => {
          const limiter = limiterFor({ skipSuccessfulRequests: true })
          const app = appWith(limiter)
          for (let i = 1; i <= 5; i++) {
            expect((await request(app).get('/')).status, `success ${i}`).to.equal(200)
            expect(await settle(() => usedBy(limiter, 'k'), 0), `used after success ${i}`).to.equal(0)
            await sleep(BETWEEN_REQUESTS_MS)
          }
          for (let i = 1; i <= 2; i++) {
            expect((await request(app).get('/status/500')).status).to.equal(500)
            expect(await settle(() => usedBy(limiter, 'k'), i, 300), `used after failure ${i}`).to.equal(i)
          }
          expect((await request(app).get('/')).status).to.equal(429)
        })

        it('with limit 1, never limits a client whose requests all succeed', async () => {
          const limiter = limiterFor({ skipSuccessfulRequests: true, limit: 1 })
          const app = appWith(limiter)
          for (let i = 1; i <= 4; i++) {
            expect((await request(app).get('/')).status, `request ${i}`).to.equal(200)
            await settle(() => usedBy(limiter, 'k'), 0)
            await sleep(BETWEEN_REQUESTS_MS)
          }
        })

        it('counts the request while its response is in flight', async () => {
          const limiter = limiterFor({ skipSuccessfulRequests: true })
          const app = appWith(limiter)
          const slow = request(app)
            .get('/slow/400')
            .then((res) => res.status)
          expect(await settle(() => usedBy(limiter, 'k'), 1)).to.equal(1)
          expect(await slow).to.equal(200)
          expect(await settle(() => usedBy(limiter, 'k'), 0)).to.equal(0)
        })
      })

      describe('skipFailedRequests', () => {
        it('gives back every 4xx and 5xx response; successes stay counted', async () => {
          const limiter = limiterFor({ skipFailedRequests: true })
          const app = appWith(limiter)
          for (const [i, status] of [500, 404, 503, 400, 500].entries()) {
            expect((await request(app).get(`/status/${status}`)).status).to.equal(status)
            expect(await settle(() => usedBy(limiter, 'k'), 0), `used after failure ${i + 1} (${status})`).to.equal(0)
            await sleep(BETWEEN_REQUESTS_MS)
          }
          for (let i = 1; i <= 2; i++) {
            expect((await request(app).get('/')).status).to.equal(200)
            expect(await settle(() => usedBy(limiter, 'k'), i, 300), `used after success ${i}`).to.equal(i)
          }
          expect((await request(app).get('/status/500')).status).to.equal(429)
        })

        it('gives back a request whose client went away before the response', async () => {
          const limiter = limiterFor({ skipFailedRequests: true })
          const app = appWith(limiter)
          const aborted = await request(app)
            .get('/slow/300')
            .timeout(100)
            .then(
              () => false,
              () => true,
            )
          expect(aborted).to.equal(true)
          expect(await settle(() => usedBy(limiter, 'k'), 0)).to.equal(0)
          await sleep(300)
          expect(await usedBy(limiter, 'k')).to.equal(0)
        })
      })

      describe('requestWasSuccessful', () => {
        it('decides what counts as a failure (here only 5xx)', async () => {
          const limiter = limiterFor({
            skipFailedRequests: true,
            requestWasSuccessful: async (_req, res) => res.statusCode < 500,
          })
          const app = appWith(limiter)
          expect((await request(app).get('/status/500')).status).to.equal(500)
          expect(await settle(() => usedBy(limiter, 'k'), 0), 'a 500 is given back').to.equal(0)
          expect((await request(app).get('/status/404')).status).to.equal(404)
          expect(await settle(() => usedBy(limiter, 'k'), 1, 300), 'a 404 stays counted').to.equal(1)
        })

        it('with skipSuccessfulRequests, gives back what it calls a success (here a 404)', async () => {
          const limiter = limiterFor({
            skipSuccessfulRequests: true,
            requestWasSuccessful: (_req, res) => res.statusCode === 404,
          })
          const app = appWith(limiter)
          expect((await request(app).get('/status/404')).status).to.equal(404)
          expect(await settle(() => usedBy(limiter, 'k'), 0), 'a 404 is given back').to.equal(0)
          expect((await request(app).get('/')).status).to.equal(200)
          expect(await settle(() => usedBy(limiter, 'k'), 1, 300), 'a 200 stays counted').to.equal(1)
        })
      })
    })
  }
})
