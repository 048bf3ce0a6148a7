import { expect } from 'chai'
import { rateLimit as expressRateLimit } from 'express-rate-limit'
import request from 'supertest'
import { type RateLimitOptions, rateLimit } from '../../src/index.js'
import { appWith } from '../helpers/app.js'
import { recordingLogger } from '../helpers/outage.js'
import { ALGORITHMS, partitionKey } from '../helpers/rate-limit.js'
import { connectRedis, type RedisClient, uniquePrefix } from '../helpers/redis.js'

/*
 * Issue 2: header names, formats and values exactly those of express-rate-limit 8 for
 * the same limit, window and remaining count (default 'draft-8'); `Retry-After` in
 * seconds on every limited response unless all headers are off.
 */
describe('rateLimit headers', () => {
  let client: RedisClient
  before(async () => {
    client = await connectRedis()
  })
  after(async () => {
    await client.close()
  })

  const limiterFor = (options: Partial<RateLimitOptions>) =>
    rateLimit({ client, prefix: uniquePrefix('headers'), keyGenerator: () => 'client-1', ...options })

  const rateLimitHeaderNames = (headers: Record<string, unknown>) =>
    Object.keys(headers)
      .filter((name) => /ratelimit|retry-after/.test(name))
      .sort()

  describe("standardHeaders: 'draft-8' (the default)", () => {
    it('sends RateLimit-Policy and RateLimit with the policy name, quota, window and partition key', async () => {
      const res = await request(appWith(limiterFor({ algorithm: 'fixed-window', limit: 100, windowMs: '1m' }))).get('/')
      expect(res.headers['ratelimit-policy']).to.equal(`"100-in-1min"; q=100; w=60; pk=:${partitionKey('client-1')}:`)
      expect(res.headers.ratelimit).to.equal('"100-in-1min"; r=99; t=60')
      expect(rateLimitHeaderNames(res.headers)).to.deep.equal(['ratelimit', 'ratelimit-policy'])
    })

    it('is the default, for the default algorithm too', async () => {
      const res = await request(appWith(limiterFor({}))).get('/')
      expect(res.headers['ratelimit-policy']).to.equal(`"100-in-1min"; q=100; w=60; pk=:${partitionKey('client-1')}:`)
      const match = /^"100-in-1min"; r=99; t=(\d+)$/.exec(res.headers.ratelimit ?? '')
      expect(match, res.headers.ratelimit).not.to.equal(null)
      expect(Number(match![1])).to.be.within(1, 60)
    })

    it('the partition key never reveals the client key', async () => {
      const key = 'alice@example.com'
      const res = await request(appWith(limiterFor({ keyGenerator: () => key }))).get('/')
      expect(res.headers['ratelimit-policy']).to.include(`pk=:${partitionKey(key)}:`)
      expect(res.headers['ratelimit-policy']).not.to.include('alice')
    })

    it('counts remaining down to r=0', async () => {
      const app = appWith(limiterFor({ algorithm: 'sliding-log', limit: 2, windowMs: '10s' }))
      const remaining = []
      for (let i = 0; i < 3; i++) remaining.push(/r=(\d+)/.exec((await request(app).get('/')).headers.ratelimit!)![1])
      expect(remaining).to.deep.equal(['1', '0', '0'])
    })

    const names: [number, RateLimitOptions['windowMs'], string][] = [
      [10, '30s', '10-in-30sec'],
      [5, '15m', '5-in-15min'],
      [7, '1h', '7-in-1hr'],
      [7, '2h', '7-in-2hrs'],
      [3, '1d', '3-in-1day'],
      [5, '500ms', '5-in-0.5sec'],
    ]
    for (const [limit, windowMs, name] of names) {
      it(`names the policy "${name}" for limit ${limit} per ${windowMs}`, async () => {
        const res = await request(appWith(limiterFor({ limit, windowMs }))).get('/')
        expect(res.headers['ratelimit-policy']).to.match(new RegExp(`^"${name}"; q=${limit}; `))
        expect(res.headers.ratelimit).to.match(new RegExp(`^"${name}"; r=${limit - 1}; `))
      })
    }

    it('`identifier` as a string names the policy', async () => {
      const res = await request(appWith(limiterFor({ identifier: 'api', limit: 5 }))).get('/')
      expect(res.headers['ratelimit-policy']).to.match(/^"api"; q=5; w=60; pk=:/)
      expect(res.headers.ratelimit).to.match(/^"api"; r=4; t=\d+$/)
    })

    it('`identifier` as a function of the request', async () => {
      const app = appWith(limiterFor({ identifier: (req) => `plan-${req.query.plan}`, limit: 5 }))
      const res = await request(app).get('/?plan=pro')
      expect(res.headers['ratelimit-policy']).to.match(/^"plan-pro"; q=5; w=60; pk=:/)
      expect(res.headers.ratelimit).to.match(/^"plan-pro"; r=4; t=\d+$/)
    })

    it('`identifier` as an async function', async () => {
      const res = await request(appWith(limiterFor({ identifier: async () => 'async-name', limit: 5 }))).get('/')
      expect(res.headers['ratelimit-policy']).to.match(/^"async-name"; q=5; /)
      expect(res.headers.ratelimit).to.match(/^"async-name"; r=4; /)
    })

    it('several limiters on one route each add their policy', async () => {
      const app = appWith(
        limiterFor({ limit: 10, windowMs: '1s', prefix: uniquePrefix('burst') }),
        limiterFor({ limit: 1000, windowMs: '1d', prefix: uniquePrefix('daily') }),
      )
      const res = await request(app).get('/')
      expect(res.headers['ratelimit-policy']).to.match(
        /^"10-in-1sec"; q=10; w=1; pk=:[^:]+:, "1000-in-1day"; q=1000; w=86400; pk=:[^:]+:$/,
      )
      expect(res.headers.ratelimit).to.match(/^"10-in-1sec"; r=9; t=\d+, "1000-in-1day"; r=999; t=\d+$/)
    })
  })

  describe("standardHeaders: 'draft-7'", () => {
    it('sends RateLimit-Policy and a combined RateLimit', async () => {
      const app = appWith(
        limiterFor({ standardHeaders: 'draft-7', algorithm: 'fixed-window', limit: 100, windowMs: '1m' }),
      )
      const res = await request(app).get('/')
      expect(res.headers['ratelimit-policy']).to.equal('100;w=60')
      expect(res.headers.ratelimit).to.equal('limit=100, remaining=99, reset=60')
      expect(rateLimitHeaderNames(res.headers)).to.deep.equal(['ratelimit', 'ratelimit-policy'])
    })
  })

  describe("standardHeaders: 'draft-6'", () => {
    it('sends RateLimit-Policy, RateLimit-Limit, RateLimit-Remaining and RateLimit-Reset', async () => {
      const app = appWith(
        limiterFor({ standardHeaders: 'draft-6', algorithm: 'fixed-window', limit: 100, windowMs: '1m' }),
      )
      const res = await request(app).get('/')
      expect(res.headers['ratelimit-policy']).to.equal('100;w=60')
      expect(res.headers['ratelimit-limit']).to.equal('100')
      expect(res.headers['ratelimit-remaining']).to.equal('99')
      expect(res.headers['ratelimit-reset']).to.equal('60')
      expect(rateLimitHeaderNames(res.headers)).to.deep.equal([
        'ratelimit-limit',
        'ratelimit-policy',
        'ratelimit-remaining',
        'ratelimit-reset',
      ])
    })
  })

  describe('legacyHeaders', () => {
    it('true with standardHeaders false: only X-RateLimit-Limit, -Remaining and -Reset (Unix seconds)', async () => {
      const app = appWith(
        limiterFor({
          standardHeaders: false,
          legacyHeaders: true,
          algorithm: 'fixed-window',
          limit: 100,
          windowMs: '1m',
        }),
      )
      const before = Date.now()
      const res = await request(app).get('/')
      const after = Date.now()
      expect(res.headers['x-ratelimit-limit']).to.equal('100')
      expect(res.headers['x-ratelimit-remaining']).to.equal('99')
      expect(Number(res.headers['x-ratelimit-reset'])).to.be.within(
        Math.ceil((before + 60_000) / 1000) - 1,
        Math.ceil((after + 60_000) / 1000),
      )
      expect(res.headers.date).to.be.a('string')
      expect(rateLimitHeaderNames(res.headers)).to.deep.equal([
        'x-ratelimit-limit',
        'x-ratelimit-remaining',
        'x-ratelimit-reset',
      ])
    })

    it('true alongside draft-8: both sets', async () => {
      const res = await request(appWith(limiterFor({ legacyHeaders: true, limit: 5 }))).get('/')
      expect(rateLimitHeaderNames(res.headers)).to.deep.equal([
        'ratelimit',
        'ratelimit-policy',
        'x-ratelimit-limit',
        'x-ratelimit-remaining',
        'x-ratelimit-reset',
      ])
    })

    it('defaults to false', async () => {
      const res = await request(appWith(limiterFor({}))).get('/')
      expect(res.headers).not.to.have.property('x-ratelimit-limit')
    })
  })

  describe('Retry-After', () => {
    const windowSeconds = 60
    const settings: [string, Partial<RateLimitOptions>][] = [
      ['draft-8', {}],
      ['draft-7', { standardHeaders: 'draft-7' }],
      ['draft-6', { standardHeaders: 'draft-6' }],
      ['legacy headers only', { standardHeaders: false, legacyHeaders: true }],
    ]
    for (const algorithm of ALGORITHMS) {
      // The two-bucket estimate can make a client wait into the next window (README:
      // Retry-After is when a request would be admitted again, exactly).
      const most = algorithm === 'sliding-window' ? 2 * windowSeconds : windowSeconds
      for (const [setting, options] of settings) {
        it(`${algorithm}, ${setting}: on every 429, in whole seconds from 1 to ${most}`, async () => {
          const app = appWith(limiterFor({ algorithm, limit: 2, windowMs: windowSeconds * 1000, ...options }))
          for (let i = 0; i < 2; i++) {
            const res = await request(app).get('/')
            expect(res.status).to.equal(200)
            expect(res.headers).not.to.have.property('retry-after')
          }
          for (let i = 0; i < 2; i++) {
            const res = await request(app).get('/')
            expect(res.status).to.equal(429)
            expect(res.headers['retry-after']).to.match(/^\d+$/)
            expect(Number(res.headers['retry-after'])).to.be.within(1, most)
            // The standard headers tell the same wait.
            const reset =
              /[ ,]t=(\d+)$/.exec(res.headers.ratelimit ?? '')?.[1] ??
              /reset=(\d+)$/.exec(res.headers.ratelimit ?? '')?.[1] ??
              res.headers['ratelimit-reset']
            if (reset !== undefined) expect(reset).to.equal(res.headers['retry-after'])
          }
        })
      }
    }

    it('absent when standardHeaders and legacyHeaders are both off, as every other header', async () => {
      const app = appWith(limiterFor({ standardHeaders: false, legacyHeaders: false, limit: 1 }))
      expect(rateLimitHeaderNames((await request(app).get('/')).headers)).to.deep.equal([])
      const res = await request(app).get('/')
      expect(res.status).to.equal(429)
      expect(rateLimitHeaderNames(res.headers)).to.deep.equal([])
    })

    it('with limit 0, one window', async () => {
      const res = await request(appWith(limiterFor({ limit: 0, windowMs: '30s' }))).get('/')
      expect(res.status).to.equal(429)
      expect(res.headers['retry-after']).to.equal('30')
      expect(res.headers.ratelimit).to.equal('"0-in-30sec"; r=0; t=30')
    })
  })

  describe('the same as express-rate-limit 8', () => {
    /*
     * Side by side with express-rate-limit 8 (its memory store), a fixed window of the same
     * limit and length started by the same first request: same header names and values,
     * request after request. Values that count seconds may differ by one, since the two
     * read the clock a few ms apart.
     */
    const TIME_VALUED = /^(retry-after|ratelimit-reset|x-ratelimit-reset)$/
    function comparable(name: string, value: string): { text: string; seconds: number | undefined } {
      if (TIME_VALUED.test(name)) return { text: '<seconds>', seconds: Number(value) }
      const time = /([ ,]t=|reset=)(\d+)/.exec(value)
      if (!time) return { text: value, seconds: undefined }
      return { text: value.replace(time[0], `${time[1]}<seconds>`), seconds: Number(time[2]) }
    }

    const settings: [string, Partial<RateLimitOptions>][] = [
      ['draft-8', { standardHeaders: 'draft-8' }],
      ['draft-7', { standardHeaders: 'draft-7' }],
      ['draft-6', { standardHeaders: 'draft-6' }],
      ['legacy', { standardHeaders: false, legacyHeaders: true }],
      ['draft-8 and legacy', { standardHeaders: 'draft-8', legacyHeaders: true }],
    ]
    for (const [setting, options] of settings) {
      it(`${setting}: identical headers for allowed and rejected requests`, async () => {
        const shared = { limit: 3, windowMs: 90_000, keyGenerator: () => 'client-1' }
        const ours = appWith(
          rateLimit({
            client,
            prefix: uniquePrefix('erl'),
            algorithm: 'fixed-window',
            logger: recordingLogger(),
            ...shared,
            ...options,
          }),
        )
        const theirs = appWith(
          expressRateLimit({
            ...shared,
            standardHeaders: options.standardHeaders as 'draft-6' | 'draft-7' | 'draft-8' | false,
            legacyHeaders: options.legacyHeaders ?? false,
            validate: false,
          }),
        )
        for (let i = 1; i <= 5; i++) {
          const [mine, reference] = [await request(ours).get('/'), await request(theirs).get('/')]
          expect(mine.status, `status of request ${i}`).to.equal(reference.status)
          expect(rateLimitHeaderNames(reference.headers)).not.to.have.length(0)
          expect(rateLimitHeaderNames(mine.headers), `header names of request ${i}`).to.deep.equal(
            rateLimitHeaderNames(reference.headers),
          )
          for (const name of rateLimitHeaderNames(reference.headers)) {
            const a = comparable(name, String(mine.headers[name]))
            const b = comparable(name, String(reference.headers[name]))
            expect(a.text, `${name} of request ${i}`).to.equal(b.text)
            if (b.seconds !== undefined) expect(a.seconds, `${name} of request ${i}`).to.be.closeTo(b.seconds, 1)
          }
        }
      })
    }
  })
})
