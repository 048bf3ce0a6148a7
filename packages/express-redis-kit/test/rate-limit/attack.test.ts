import { setTimeout as sleep } from 'node:timers/promises'
import { expect } from 'chai'
import type { Request } from 'express'
import request from 'supertest'
import { type RateLimitInfo, type RateLimitOptions, rateLimit } from '../../src/index.js'
import { appWith } from '../helpers/app.js'
import { recordingLogger } from '../helpers/outage.js'
import { ALGORITHMS, expectedClientTag } from '../helpers/rate-limit.js'
import {
  connectRedis,
  connectTo,
  type DisposableRedis,
  mode,
  type RedisClient,
  startDisposableRedis,
  uniquePrefix,
} from '../helpers/redis.js'

/*
 * Issue 12: rateLimit under attack. A client Redis said is over its limit is answered here
 * with no Redis command until it may pass again (the local block cache); `blockDuration`
 * locks a client out; `mode: 'shadow'` and `onLimit` report without refusing; `limits`
 * counts several windows in one call, a request refused by one counting in none.
 */

/** The remaining count and reset seconds of each draft-8 `RateLimit` item. */
function rateLimitItems(res: { headers: Record<string, unknown> }): { name: string; r: number; t: number }[] {
  const value = res.headers.ratelimit
  const text = Array.isArray(value) ? value.join(', ') : String(value ?? '')
  return [...text.matchAll(/"([^"]+)"; r=(\d+); t=(\d+)/g)].map(([, name, r, t]) => ({
    name: name!,
    r: Number(r),
    t: Number(t),
  }))
}

/** EVALSHA and EVAL calls a disposable Redis has served (only this test's client uses it). */
async function scriptCalls(admin: RedisClient): Promise<number> {
  const info = await admin.info('commandstats')
  let calls = 0
  for (const match of info.matchAll(/^cmdstat_(evalsha|eval):calls=(\d+)/gm)) calls += Number(match[2])
  return calls
}

describe(`rateLimit under attack (${mode} Redis)`, () => {
  let client: RedisClient
  before(async () => {
    client = await connectRedis()
  })
  after(async () => {
    await client.close()
  })

  const limiterFor = (options: Partial<RateLimitOptions>) =>
    rateLimit({ client, prefix: uniquePrefix('attack'), keyGenerator: () => 'client', windowMs: '1h', ...options })

  describe('local block cache', () => {
    let redis: DisposableRedis
    let own: Awaited<ReturnType<typeof connectTo>>
    let admin: Awaited<ReturnType<typeof connectTo>>
    beforeEach(async () => {
      redis = await startDisposableRedis()
      own = await connectTo(redis)
      admin = await connectTo(redis)
    })
    afterEach(async () => {
      if (own.isOpen) own.destroy()
      if (admin.isOpen) admin.destroy()
      await redis.stop()
    })

    const ownLimiter = (options: Partial<RateLimitOptions> = {}) =>
      rateLimit({
        client: own as unknown as RedisClient,
        prefix: 'rl:',
        keyGenerator: (req) => String(req.query.client ?? 'client'),
        limit: 2,
        windowMs: '1h',
        ...options,
      })

    for (const algorithm of ALGORITHMS) {
      it(`${algorithm}: after the first refusal, the client's requests are refused here with no Redis command, the same 429 and headers, req.rateLimit filled, the handler skipped`, async () => {
        const seen: RateLimitInfo[] = []
        const app = appWith(
          ownLimiter({
            algorithm,
            handler: (req, res) => {
              seen.push(req.rateLimit!)
              res.status(429).send('no')
            },
          }),
        )
        for (let i = 0; i < 2; i++) expect((await request(app).get('/')).status).to.equal(200)
        const first = await request(app).get('/')
        expect(first.status).to.equal(429)
        const before = await scriptCalls(admin as unknown as RedisClient)
        const refused = []
        for (let i = 0; i < 20; i++) refused.push(await request(app).get('/'))
        expect(
          (await scriptCalls(admin as unknown as RedisClient)) - before,
          'script calls for 20 known-blocked requests',
        ).to.equal(0)
        for (const res of refused) {
          expect(res.status).to.equal(429)
          expect(res.text).to.equal('no')
          expect(rateLimitItems(res)[0]).to.include({ r: 0 })
          expect(Number(res.headers['retry-after'])).to.be.within(1, Number(first.headers['retry-after']))
          expect(res.headers['ratelimit-policy']).to.equal(first.headers['ratelimit-policy'])
        }
        expect(seen).to.have.length(21)
        expect(seen[20]).to.include({ limit: 2, remaining: 0, key: 'client' })
        expect(seen[20]!.resetTime.getTime()).to.be.within(Date.now(), seen[0]!.resetTime.getTime() + 5)
      })
    }

    it('until the moment Redis gave: then Redis is asked again and the client admitted', async () => {
      const app = appWith(ownLimiter({ algorithm: 'fixed-window', limit: 1, windowMs: 600 }))
      expect((await request(app).get('/')).status).to.equal(200)
      const refused = await request(app).get('/')
      expect(refused.status).to.equal(429)
      const reset = rateLimitItems(refused)[0]!.t
      expect(reset).to.equal(1)
      expect((await request(app).get('/')).status).to.equal(429)
      await sleep(650)
      const before = await scriptCalls(admin as unknown as RedisClient)
      expect((await request(app).get('/')).status).to.equal(200)
      expect((await scriptCalls(admin as unknown as RedisClient)) - before).to.equal(1)
    })

    it('answers known-blocked clients even with Redis gone (no command at all), while other clients fall to onRedisError', async () => {
      const logger = recordingLogger()
      const app = appWith(ownLimiter({ limit: 1, onRedisError: 'block', timeoutMs: 300, logger }))
      expect((await request(app).get('/?client=a')).status).to.equal(200)
      expect((await request(app).get('/?client=a')).status).to.equal(429)
      await redis.stop()
      expect((await request(app).get('/?client=a')).status).to.equal(429)
      expect((await request(app).get('/?client=b')).status).to.equal(503)
    })

    it('a request of a smaller cost than the refused one, or another client, still asks Redis', async () => {
      const app = appWith(ownLimiter({ limit: 5, cost: (req: Request) => Number(req.query.cost ?? 1) }))
      expect((await request(app).get('/?cost=4')).status).to.equal(200)
      expect((await request(app).get('/?cost=2')).status).to.equal(429)
      const before = await scriptCalls(admin as unknown as RedisClient)
      expect((await request(app).get('/?cost=3')).status).to.equal(429)
      expect((await scriptCalls(admin as unknown as RedisClient)) - before, 'a higher cost: refused here').to.equal(0)
      expect((await request(app).get('/?cost=1')).status, 'a smaller cost fits').to.equal(200)
      expect((await request(app).get('/?client=other')).status).to.equal(200)
      expect((await scriptCalls(admin as unknown as RedisClient)) - before).to.equal(2)
    })

    it('resetKey() clears it here at once; another instance keeps its own until the moment Redis gave', async () => {
      const one = ownLimiter({ limit: 1 })
      const other = ownLimiter({ limit: 1 })
      const [appOne, appOther] = [appWith(one), appWith(other)]
      await request(appOne).get('/')
      expect((await request(appOne).get('/')).status).to.equal(429)
      expect((await request(appOther).get('/')).status).to.equal(429)
      await one.resetKey('client')
      expect((await request(appOne).get('/')).status).to.equal(200)
      expect((await request(appOther).get('/')).status, 'the other instance still blocks it locally').to.equal(429)
    })

    it('keeps at most localBlockCache clients, the least recently blocked out first; false turns it off', async () => {
      const app = appWith(ownLimiter({ limit: 1, localBlockCache: 2 }))
      for (const name of ['a', 'b', 'c']) {
        await request(app).get(`/?client=${name}`)
        expect((await request(app).get(`/?client=${name}`)).status).to.equal(429)
      }
      const before = await scriptCalls(admin as unknown as RedisClient)
      for (const name of ['b', 'c']) expect((await request(app).get(`/?client=${name}`)).status).to.equal(429)
      expect((await scriptCalls(admin as unknown as RedisClient)) - before, 'b and c remembered').to.equal(0)
      expect((await request(app).get('/?client=a')).status).to.equal(429)
      expect((await scriptCalls(admin as unknown as RedisClient)) - before, 'a forgotten: asked Redis').to.equal(1)

      const off = appWith(ownLimiter({ limit: 1, localBlockCache: false, prefix: 'off:' }))
      await request(off).get('/')
      const start = await scriptCalls(admin as unknown as RedisClient)
      for (let i = 0; i < 3; i++) expect((await request(off).get('/')).status).to.equal(429)
      expect((await scriptCalls(admin as unknown as RedisClient)) - start).to.equal(3)
    })
  })

  describe('blockDuration', () => {
    for (const algorithm of ALGORITHMS) {
      it(`${algorithm}: once over the limit, the client is refused for blockDuration whatever the window says, counting nothing`, async () => {
        for (const localBlockCache of [10_000, false] as const) {
          const limiter = limiterFor({ algorithm, limit: 2, windowMs: 300, blockDuration: '1200ms', localBlockCache })
          const app = appWith(limiter)
          for (let i = 0; i < 2; i++) expect((await request(app).get('/')).status).to.equal(200)
          const refused = await request(app).get('/')
          expect(refused.status).to.equal(429)
          expect(refused.headers['retry-after']).to.equal('2')
          await sleep(450)
          const still = await request(app).get('/')
          expect(still.status, `${localBlockCache}: the window has passed, the block has not`).to.equal(429)
          expect(Number(still.headers['retry-after'])).to.be.within(1, 1)
          await sleep(850)
          expect((await request(app).get('/')).status, `${localBlockCache}: the block is over`).to.equal(200)
        }
      })
    }

    it('the block lives beside the windows in Redis, with its expiry', async () => {
      const prefix = uniquePrefix('block')
      const app = appWith(rateLimit({ client, prefix, keyGenerator: () => 'client', limit: 1, blockDuration: '1m' }))
      await request(app).get('/')
      await request(app).get('/')
      const blockKey = `${expectedClientTag(prefix, 'client')}:block`
      expect(await client.pTTL(blockKey)).to.be.within(55_000, 60_000)
    })
  })

  describe("mode: 'shadow' and onLimit", () => {
    it('shadow: a request over the limit passes, with the headers and req.rateLimit of a refusal and onLimit called; it is not counted', async () => {
      const limited: RateLimitInfo[] = []
      const limiter = limiterFor({ limit: 2, mode: 'shadow', onLimit: (_req, _res, info) => void limited.push(info) })
      const app = appWith(limiter)
      for (let i = 0; i < 2; i++) expect((await request(app).get('/')).status).to.equal(200)
      for (let i = 0; i < 3; i++) {
        const res = await request(app).get('/info')
        expect(res.status).to.equal(200)
        expect(res.body).to.include({ limit: 2, remaining: 0 })
        expect(rateLimitItems(res)[0]).to.include({ r: 0 })
      }
      expect(limited).to.have.length(3)
      expect(limited[0]).to.include({ limit: 2, remaining: 0, key: 'client' })
      expect((await limiter.getKey('client'))?.used).to.equal(2)
    })

    it('enforce: onLimit is called once per refused request, before the 429; a throwing onLimit is logged and the 429 still sent', async () => {
      const logger = recordingLogger()
      let calls = 0
      const app = appWith(
        limiterFor({
          limit: 1,
          logger,
          onLimit: () => {
            calls++
            if (calls === 2) throw new Error('onLimit broke')
          },
        }),
      )
      await request(app).get('/')
      for (let i = 0; i < 3; i++) expect((await request(app).get('/')).status).to.equal(429)
      expect(calls).to.equal(3)
      expect(logger.text()).to.include('onLimit broke')
    })
  })

  describe('several windows (limits)', () => {
    for (const algorithm of ALGORITHMS) {
      it(`${algorithm}: admitted only if every window has room, counted in all; refused by one, counted in none`, async () => {
        const limiter = limiterFor({
          algorithm,
          windowMs: undefined,
          limits: [
            { limit: 3, windowMs: 500 },
            { limit: 5, windowMs: '1h' },
          ],
          localBlockCache: false,
        })
        const app = appWith(limiter)
        for (let i = 0; i < 3; i++) expect((await request(app).get('/')).status).to.equal(200)
        const bySecond = await request(app).get('/')
        expect(bySecond.status).to.equal(429)
        expect(Number(bySecond.headers['retry-after'])).to.equal(1)
        // Refused by the short window: the hour counted 3, not 4.
        expect(rateLimitItems(bySecond)).to.have.length(2)
        expect(rateLimitItems(bySecond)[1]).to.include({ name: '5-in-1hr', r: 2 })
        await sleep(1_100)
        for (let i = 0; i < 2; i++) expect((await request(app).get('/')).status).to.equal(200)
        const byHour = await request(app).get('/info')
        expect(byHour.status).to.equal(429)
        // Until the hour admits one more: 720 s for the token bucket (one token per 720 s), about an hour for the others.
        expect(Number(byHour.headers['retry-after'])).to.be.above(700)
        expect(byHour.headers['ratelimit-policy']).to.match(
          /^"3-in-0.5sec"; q=3; w=1; pk=:[^:]+:, "5-in-1hr"; q=5; w=3600; pk=/,
        )
      })
    }

    it('req.rateLimit and the older drafts show the binding window: the one with the least left', async () => {
      const app = appWith(
        limiterFor({
          windowMs: undefined,
          standardHeaders: 'draft-7',
          limits: [
            { limit: 10, windowMs: '1s' },
            { limit: 3, windowMs: '1h', identifier: 'hourly' },
          ],
        }),
      )
      const res = await request(app).get('/info')
      expect(res.body).to.include({ limit: 3, remaining: 2 })
      expect(res.headers.ratelimit).to.match(/^limit=3, remaining=2, reset=\d+$/)
      expect(res.headers['ratelimit-policy']).to.equal('3;w=3600')
    })

    it('draft-8: each window its own policy and its own identifier', async () => {
      const app = appWith(
        limiterFor({
          windowMs: undefined,
          limits: [
            { limit: 10, windowMs: '1s', identifier: 'burst' },
            { limit: 1000, windowMs: '1h', identifier: 'hourly' },
          ],
        }),
      )
      const res = await request(app).get('/')
      expect(rateLimitItems(res).map(({ name, r }) => [name, r])).to.deep.equal([
        ['burst', 9],
        ['hourly', 999],
      ])
    })

    it('getKey() reports the binding window; resetKey() clears every window and the block', async () => {
      const limiter = limiterFor({
        windowMs: undefined,
        blockDuration: '1m',
        limits: [
          { limit: 2, windowMs: '1s' },
          { limit: 4, windowMs: '1h' },
        ],
      })
      const app = appWith(limiter)
      for (let i = 0; i < 3; i++) await request(app).get('/')
      expect(await limiter.getKey('client')).to.include({ used: 2, remaining: 0 })
      await limiter.resetKey('client')
      expect(await limiter.getKey('client')).to.equal(undefined)
      expect((await request(app).get('/')).status).to.equal(200)
    })

    it('bad limits name the problem', () => {
      const cases: [Partial<RateLimitOptions>, RegExp][] = [
        [{ limits: [] }, /limits.*non-empty array/],
        [{ limits: [{ limit: 0, windowMs: '1s' }] }, /limits\[0\]\.limit.*positive integer/],
        [{ limits: [{ limit: 1, windowMs: 'soon' as never }] }, /limits\[0\]\.windowMs/],
        [{ limits: [{ limit: 1, windowMs: '1s', max: 3 } as never] }, /limits\[0\]\.max/],
        [
          {
            limits: [
              { limit: 1, windowMs: '1s' },
              { limit: 2, windowMs: 1000 },
            ],
          },
          /windows of different lengths/,
        ],
        [
          { limits: [{ limit: 1, windowMs: '1s' }], limit: 5, windowMs: undefined },
          /limits.*without `limit` and `windowMs`/,
        ],
        [{ limits: [{ limit: 1, windowMs: '1s' }], windowMs: undefined, identifier: 'x' }, /identifier/],
        [{ blockDuration: 'a while' as never }, /blockDuration/],
        [{ mode: 'dry-run' as never }, /mode.*'enforce' or 'shadow'/],
        [{ localBlockCache: 0 }, /localBlockCache.*positive integer/],
        [{ onLimit: 'log' as never }, /onLimit.*function/],
      ]
      for (const [options, message] of cases) {
        expect(() => limiterFor({ windowMs: undefined, ...options }), JSON.stringify(options)).to.throw(
          TypeError,
          message,
        )
      }
    })
  })
})
