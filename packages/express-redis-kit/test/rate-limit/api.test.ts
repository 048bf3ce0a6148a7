import { expect } from 'chai'
import express from 'express'
import request from 'supertest'
import { type RateLimitOptions, rateLimit } from '../../src/index.js'
import { appWith } from '../helpers/app.js'
import { ALGORITHMS } from '../helpers/rate-limit.js'
import { connectRedis, type RedisClient, uniquePrefix } from '../helpers/redis.js'

/*
 * Issue 2: `req.rateLimit = { limit, used, remaining, resetTime, key }` (under
 * `requestPropertyName`), and the middleware's `getKey(key)` and `resetKey(key)`.
 */
describe('rateLimit API', () => {
  let client: RedisClient
  before(async () => {
    client = await connectRedis()
  })
  after(async () => {
    await client.close()
  })

  const limiterFor = (options: Partial<RateLimitOptions>) =>
    rateLimit({ client, prefix: uniquePrefix('api'), keyGenerator: () => 'k', windowMs: '1h', ...options })

  describe('req.rateLimit', () => {
    for (const algorithm of ALGORITHMS) {
      it(`${algorithm}: { limit, used, remaining, resetTime, key } for allowed and rejected requests`, async () => {
        // The handler passes rejected requests on, to read what they were given.
        const app = appWith(limiterFor({ algorithm, limit: 3, handler: (_req, _res, next) => next() }))
        const startedAt = Date.now()
        // For a rejected request, resetTime is when it would be admitted: the two-bucket
        // estimate can put that in the next window.
        const windows = algorithm === 'sliding-window' ? 2 : 1
        for (const [used, remaining] of [
          [1, 2],
          [2, 1],
          [3, 0],
          [3, 0],
        ]) {
          const res = await request(app).get('/info')
          expect(res.status).to.equal(200)
          expect(Object.keys(res.body).sort()).to.deep.equal(['key', 'limit', 'remaining', 'resetTime', 'used'])
          expect(res.body).to.include({ limit: 3, used, remaining, key: 'k' })
          const resetTime = new Date(res.body.resetTime).getTime()
          expect(resetTime).to.be.within(startedAt, Date.now() + windows * 3_600_000)
        }
      })
    }

    it('is set before the route, with the limit a function returned', async () => {
      const app = appWith(limiterFor({ limit: async () => 7 }))
      const res = await request(app).get('/info')
      expect(res.body).to.include({ limit: 7, used: 1, remaining: 6 })
    })

    it('`requestPropertyName` puts it under another name', async () => {
      const app = express()
      app.use(limiterFor({ limit: 3, requestPropertyName: 'quota' }))
      app.get('/', (req, res) => {
        const { quota, rateLimit: info } = req as unknown as Record<string, unknown>
        res.json({ quota, rateLimit: info ?? null })
      })
      const res = await request(app).get('/')
      expect(res.body.rateLimit).to.equal(null)
      expect(res.body.quota).to.include({ limit: 3, used: 1, remaining: 2, key: 'k' })
    })
  })

  for (const algorithm of ALGORITHMS) {
    describe(`getKey and resetKey (${algorithm})`, () => {
      it('getKey of an unknown key is undefined', async () => {
        expect(await limiterFor({ algorithm }).getKey('nobody')).to.equal(undefined)
      })

      it('after 3 requests, getKey tells used 3 and a resetTime in the future', async () => {
        const limiter = limiterFor({ algorithm, limit: 5 })
        const app = appWith(limiter)
        for (let i = 0; i < 3; i++) expect((await request(app).get('/')).status).to.equal(200)
        const state = await limiter.getKey('k')
        expect(state).to.include({ used: 3, remaining: 2 })
        expect(state!.resetTime).to.be.instanceOf(Date)
        expect(state!.resetTime.getTime()).to.be.greaterThan(Date.now())
        expect(state!.resetTime.getTime()).to.be.at.most(Date.now() + 3_600_000)
      })

      it('getKey does not consume', async () => {
        const limiter = limiterFor({ algorithm, limit: 3 })
        const app = appWith(limiter)
        expect((await request(app).get('/')).status).to.equal(200)
        for (let i = 0; i < 10; i++) expect(await limiter.getKey('k')).to.include({ used: 1 })
        for (let i = 0; i < 2; i++) expect((await request(app).get('/')).status).to.equal(200)
        expect((await request(app).get('/')).status).to.equal(429)
      })

      it('resetKey restores the full limit', async () => {
        const limiter = limiterFor({ algorithm, limit: 3 })
        const app = appWith(limiter)
        for (let i = 0; i < 3; i++) expect((await request(app).get('/')).status).to.equal(200)
        expect((await request(app).get('/')).status).to.equal(429)
        await limiter.resetKey('k')
        expect(await limiter.getKey('k')).to.equal(undefined)
        for (let i = 0; i < 3; i++) expect((await request(app).get('/')).status).to.equal(200)
        expect((await request(app).get('/')).status).to.equal(429)
      })

      it('resetKey of one key leaves the others', async () => {
        const limiter = limiterFor({ algorithm, limit: 1, keyGenerator: (req) => String(req.query.user) })
        const app = appWith(limiter)
        for (const user of ['a', 'b']) expect((await request(app).get(`/?user=${user}`)).status).to.equal(200)
        await limiter.resetKey('a')
        expect((await request(app).get('/?user=a')).status).to.equal(200)
        expect((await request(app).get('/?user=b')).status).to.equal(429)
      })
    })
  }

  describe('getKey with a limit function', () => {
    it('tells remaining only when given the limit', async () => {
      const limiter = limiterFor({ limit: () => 4 })
      expect((await request(appWith(limiter)).get('/')).status).to.equal(200)
      expect(await limiter.getKey('k')).to.include({ used: 1, remaining: undefined })
      expect(await limiter.getKey('k', 4)).to.include({ used: 1, remaining: 3 })
    })

    it("needs the limit for 'token-bucket'", async () => {
      const limiter = limiterFor({ algorithm: 'token-bucket', limit: () => 4 })
      expect((await request(appWith(limiter)).get('/')).status).to.equal(200)
      let thrown: unknown
      await limiter.getKey('k').catch((error: unknown) => {
        thrown = error
      })
      expect(thrown).to.be.instanceOf(TypeError)
      expect(await limiter.getKey('k', 4)).to.include({ used: 1, remaining: 3 })
    })
  })

  it('getKey and resetKey refuse an empty key', async () => {
    const limiter = limiterFor({})
    for (const call of [() => limiter.getKey(''), () => limiter.resetKey('')]) {
      let thrown: unknown
      await call().catch((error: unknown) => {
        thrown = error
      })
      expect(thrown).to.be.instanceOf(TypeError)
    }
  })
})
