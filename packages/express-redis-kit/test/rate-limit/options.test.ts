import { expect } from 'chai'
import request from 'supertest'
import { type RateLimitOptions, rateLimit } from '../../src/index.js'
import { appWith } from '../helpers/app.js'
import { recordingLogger } from '../helpers/outage.js'
import { ALGORITHMS, expectedRedisKey, usedBy } from '../helpers/rate-limit.js'
import { connectRedis, type RedisClient, uniquePrefix } from '../helpers/redis.js'

/*
 * Issue 2: `windowMs`, `limit`, `cost`, `keyGenerator` and validation. Invalid options
 * throw a TypeError at creation naming the option (err.code 'ERK_INVALID_OPTION'); a
 * callback that throws or returns a bad value yields a 500 through next(err) naming it.
 */
describe('rateLimit options', () => {
  let client: RedisClient
  before(async () => {
    client = await connectRedis()
  })
  after(async () => {
    await client.close()
  })

  const limiterFor = (options: Partial<RateLimitOptions>) =>
    rateLimit({ client, prefix: uniquePrefix('options'), keyGenerator: () => 'client', windowMs: '1h', ...options })

  describe('windowMs', () => {
    const cases: [RateLimitOptions['windowMs'], number, number][] = [
      // windowMs, RateLimit-Policy w=, milliseconds
      [2500, 3, 2500],
      ['500ms', 1, 500],
      ['10s', 10, 10_000],
      ['15m', 900, 900_000],
      ['1h', 3600, 3_600_000],
      ['1d', 86_400, 86_400_000],
      // spelled out, as apicache and `ms` users write them
      ['500 ms', 1, 500],
      ['30 seconds', 30, 30_000],
      ['5 minutes', 300, 300_000],
      ['1 hour', 3600, 3_600_000],
      ['2 hours', 7200, 7_200_000],
      ['1 day', 86_400, 86_400_000],
    ]
    for (const [windowMs, seconds, ms] of cases) {
      it(`${JSON.stringify(windowMs)} is a window of ${ms} ms (w=${seconds})`, async () => {
        const prefix = uniquePrefix('window')
        const app = appWith(
          rateLimit({ client, prefix, windowMs, algorithm: 'fixed-window', limit: 5, keyGenerator: () => 'k' }),
        )
        const res = await request(app).get('/')
        expect(res.headers['ratelimit-policy']).to.match(new RegExp(`; w=${seconds}; `))
        const ttl = await client.pTTL(expectedRedisKey(prefix, 'k', 'fixed-window'))
        expect(ttl).to.be.within(ms - 1000, ms)
      })
    }

    it('defaults to one minute', async () => {
      const res = await request(appWith(limiterFor({ windowMs: undefined }))).get('/')
      expect(res.headers['ratelimit-policy']).to.match(/^"100-in-1min"; q=100; w=60; /)
    })
  })

  describe('validation at creation', () => {
    const invalid: [string, Record<string, unknown>, string][] = [
      // description, options (over a valid client), option named
      ['limit -1', { limit: -1 }, 'limit'],
      ['limit 1.5', { limit: 1.5 }, 'limit'],
      ["limit 'x'", { limit: 'x' }, 'limit'],
      ['windowMs 0', { windowMs: 0 }, 'windowMs'],
      ["windowMs '10 years'", { windowMs: '10 years' }, 'windowMs'],
      ["windowMs '5 fortnights'", { windowMs: '5 fortnights' }, 'windowMs'],
      ["windowMs '-1s'", { windowMs: '-1s' }, 'windowMs'],
      ["blockDuration '1 month'", { blockDuration: '1 month' }, 'blockDuration'],
      ["windowMs 'abc'", { windowMs: 'abc' }, 'windowMs'],
      ["algorithm 'nope'", { algorithm: 'nope' }, 'algorithm'],
      ['burst without token-bucket', { burst: 5 }, 'burst'],
      ['burst 0 with token-bucket', { algorithm: 'token-bucket', burst: 0 }, 'burst'],
      ['ipv6Subnet 0', { ipv6Subnet: 0 }, 'ipv6Subnet'],
      ['ipv6Subnet 129', { ipv6Subnet: 129 }, 'ipv6Subnet'],
      ["prefix with '{'", { prefix: 'rl:{' }, 'prefix'],
      ['cost -1', { cost: -1 }, 'cost'],
      ['statusCode 200', { statusCode: 200 }, 'statusCode'],
      ["standardHeaders 'draft-9'", { standardHeaders: 'draft-9' }, 'standardHeaders'],
      ["onRedisError 'maybe'", { onRedisError: 'maybe' }, 'onRedisError'],
      ['timeoutMs 0', { timeoutMs: 0 }, 'timeoutMs'],
      ['logger {}', { logger: {} }, 'logger'],
      ['client missing', { client: undefined }, 'client'],
      ['client {}', { client: {} }, 'client'],
      ['keyGenerator not a function', { keyGenerator: 'ip' }, 'keyGenerator'],
      ['unknown option max', { max: 5 }, 'max'],
    ]
    for (const [description, options, option] of invalid) {
      it(`${description}: throws a TypeError naming \`${option}\` (ERK_INVALID_OPTION)`, () => {
        let thrown: unknown
        try {
          rateLimit({ client, prefix: uniquePrefix('invalid'), ...options } as unknown as RateLimitOptions)
        } catch (error) {
          thrown = error
        }
        expect(thrown).to.be.instanceOf(TypeError)
        expect((thrown as { code?: unknown }).code).to.equal('ERK_INVALID_OPTION')
        expect((thrown as Error).message).to.include(`\`${option}\``)
      })
    }

    it('the error for `max` suggests `limit`', () => {
      expect(() => rateLimit({ client, max: 5 } as unknown as RateLimitOptions)).to.throw(TypeError, /`limit`/)
    })

    it('the error says what was given', () => {
      expect(() => rateLimit({ client, limit: -1 })).to.throw(TypeError, /-1/)
    })

    it('accepts every option at a valid value', () => {
      const logger = recordingLogger()
      const middleware = rateLimit({
        client,
        limit: 0,
        windowMs: '500ms',
        algorithm: 'token-bucket',
        burst: 3,
        keyGenerator: () => 'k',
        ipv6Subnet: false,
        prefix: '',
        cost: 0,
        skip: () => false,
        skipSuccessfulRequests: false,
        skipFailedRequests: true,
        requestWasSuccessful: () => true,
        statusCode: 503,
        message: { error: 'slow down' },
        handler: undefined,
        standardHeaders: false,
        legacyHeaders: true,
        identifier: 'custom',
        requestPropertyName: 'quota',
        onRedisError: 'block',
        timeoutMs: 100,
        logger,
      })
      expect(middleware).to.be.a('function')
      expect(middleware.getKey).to.be.a('function')
      expect(middleware.resetKey).to.be.a('function')
    })
  })

  describe('limit', () => {
    it('as a function: decided per request', async () => {
      const app = appWith(
        limiterFor({
          keyGenerator: (req) => String(req.query.user),
          limit: (req) => (req.query.plan === 'pro' ? 3 : 1),
        }),
      )
      expect((await request(app).get('/?user=a&plan=free')).status).to.equal(200)
      expect((await request(app).get('/?user=a&plan=free')).status).to.equal(429)
      for (let i = 0; i < 3; i++) expect((await request(app).get('/?user=b&plan=pro')).status).to.equal(200)
      expect((await request(app).get('/?user=b&plan=pro')).status).to.equal(429)
    })

    it('as an async function', async () => {
      const app = appWith(limiterFor({ limit: async () => 2 }))
      for (let i = 0; i < 2; i++) expect((await request(app).get('/')).status).to.equal(200)
      const rejected = await request(app).get('/')
      expect(rejected.status).to.equal(429)
      expect(rejected.headers['ratelimit-policy']).to.match(/^"2-in-1hr"; q=2; /)
    })

    for (const [description, limit] of [
      ['0', 0],
      ['a function returning 0', () => 0],
    ] as const) {
      it(`${description} rejects every request, without writing to Redis`, async () => {
        const prefix = uniquePrefix('zero')
        const app = appWith(rateLimit({ client, prefix, limit, keyGenerator: () => 'k' }))
        for (let i = 0; i < 3; i++) expect((await request(app).get('/')).status).to.equal(429)
        expect(await client.exists(expectedRedisKey(prefix, 'k'))).to.equal(0)
      })
    }

    const badLimits: [string, () => unknown][] = [
      ['NaN', () => Number.NaN],
      ['-1', () => -1],
      ['1.5', () => 1.5],
      ['a string', () => '5'],
      [
        'by throwing',
        () => {
          throw new Error('no plan')
        },
      ],
      ['by rejecting', () => Promise.reject(new Error('no plan'))],
    ]
    for (const [description, limit] of badLimits) {
      it(`a function failing (${description}) answers 500 through next(err), naming \`limit\``, async () => {
        const res = await request(appWith(limiterFor({ limit: limit as () => number }))).get('/')
        expect(res.status).to.equal(500)
        expect(res.body.code).to.equal('ERK_INVALID_CALLBACK_RESULT')
        expect(res.body.error).to.match(/\blimit\b/)
      })
    }
  })

  describe('cost', () => {
    for (const algorithm of ALGORITHMS) {
      it(`${algorithm}: cost 3 with limit 10 admits 3 requests, then 429`, async () => {
        const app = appWith(limiterFor({ algorithm, limit: 10, cost: 3 }))
        for (let i = 0; i < 3; i++) expect((await request(app).get('/')).status).to.equal(200)
        expect((await request(app).get('/')).status).to.equal(429)
      })

      it(`${algorithm}: cost as a function; cost 0 never consumes`, async () => {
        const limiter = limiterFor({ algorithm, limit: 2, cost: async (req) => Number(req.query.cost ?? 1) })
        const app = appWith(limiter)
        for (let i = 0; i < 5; i++) expect((await request(app).get('/?cost=0')).status).to.equal(200)
        expect(await usedBy(limiter, 'client')).to.equal(0)
        expect((await request(app).get('/?cost=2')).status).to.equal(200)
        expect(await usedBy(limiter, 'client')).to.equal(2)
        expect((await request(app).get('/?cost=1')).status).to.equal(429)
        expect((await request(app).get('/?cost=0')).status).to.equal(200)
        expect(await usedBy(limiter, 'client')).to.equal(2)
      })
    }

    it('a request costing more than the limit is rejected', async () => {
      const app = appWith(limiterFor({ limit: 2, cost: (req) => Number(req.query.cost) }))
      expect((await request(app).get('/?cost=3')).status).to.equal(429)
      expect((await request(app).get('/?cost=2')).status).to.equal(200)
    })

    for (const [description, cost] of [
      ['-1', () => -1],
      ['NaN', () => Number.NaN],
      ['1.5', () => 1.5],
    ] as const) {
      it(`a function returning ${description} answers 500 through next(err), naming \`cost\``, async () => {
        const res = await request(appWith(limiterFor({ cost }))).get('/')
        expect(res.status).to.equal(500)
        expect(res.body.code).to.equal('ERK_INVALID_CALLBACK_RESULT')
        expect(res.body.error).to.match(/\bcost\b/)
      })
    }
  })

  describe('keyGenerator', () => {
    it('may be async', async () => {
      const app = appWith(limiterFor({ limit: 1, keyGenerator: async (req) => String(req.query.user) }))
      expect((await request(app).get('/?user=a')).status).to.equal(200)
      expect((await request(app).get('/?user=a')).status).to.equal(429)
      expect((await request(app).get('/?user=b')).status).to.equal(200)
    })

    const badKeys: [string, () => unknown][] = [
      [
        'throwing',
        () => {
          throw new Error('no user')
        },
      ],
      ['rejecting', () => Promise.reject(new Error('no user'))],
      ['returning a number', () => 42],
      ["returning ''", () => ''],
      ['returning undefined', () => undefined],
    ]
    for (const [description, keyGenerator] of badKeys) {
      it(`${description}: 500 through next(err), naming \`keyGenerator\``, async () => {
        const res = await request(appWith(limiterFor({ keyGenerator: keyGenerator as () => string }))).get('/')
        expect(res.status).to.equal(500)
        expect(res.body.code).to.equal('ERK_INVALID_CALLBACK_RESULT')
        expect(res.body.error).to.include('keyGenerator')
      })
    }
  })
})
