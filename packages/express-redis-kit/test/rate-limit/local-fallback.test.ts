import type { Server } from 'node:http'
import { performance } from 'node:perf_hooks'
import { setTimeout as sleep } from 'node:timers/promises'
import { expect } from 'chai'
import { createClient, createCluster } from 'redis'
import request from 'supertest'
import { type Algorithm, type RateLimitInfo, type RateLimitOptions, rateLimit } from '../../src/index.js'
import { appWith } from '../helpers/app.js'
import {
  closeServer,
  listen,
  type RecordingLogger,
  recordingLogger,
  startRedisOnPort,
  waitForRedisResume,
  waitUntil,
} from '../helpers/outage.js'
import { ALGORITHMS, expectedRedisKey, partitionKey } from '../helpers/rate-limit.js'
import {
  clusterNodes,
  connectRedis,
  connectTo,
  type DisposableRedis,
  mode,
  pauseRedis,
  type RedisClient,
  redisUrl,
  startDisposableRedis,
  uniquePrefix,
} from '../helpers/redis.js'

/*
 * `onRedisError: 'local'`: when Redis fails, times out or is not connected, the same
 * algorithm and limits are applied in this process's memory (each instance on its own).
 * After a failure Redis is not asked again for 1 s (requests are limited locally without
 * waiting), then tried again; once it answers, decisions come from Redis again, with its own
 * counts (what was counted locally is not carried over).
 *
 * The only timings asserted are generous upper bounds: with timeoutMs 300, a request must be
 * answered within BOUND_MS; one answered without asking Redis, within FAST_MS.
 */
const TIMEOUT_MS = 300
const BOUND_MS = 1_500
const FAST_MS = 100
const PAUSE_MS = 2_000
/** How long Redis is left alone after a failure (LOCAL_RETRY_MS in src), plus a margin. */
const RETRY_WINDOW_MS = 1_000
const PAST_RETRY_WINDOW_MS = RETRY_WINDOW_MS + 150

type Response = Awaited<ReturnType<ReturnType<typeof request>['get']>>
type Target = Parameters<typeof request>[0]

async function timedGet(target: Target, path = '/'): Promise<{ res: Response; ms: number }> {
  const started = performance.now()
  const res = await request(target).get(path)
  return { res, ms: performance.now() - started }
}

/** A client (single or Cluster, per the suite's mode) that was never connected. */
function neverConnected(): RedisClient {
  const never = mode === 'cluster' ? createCluster({ rootNodes: clusterNodes }) : createClient({ url: redisUrl })
  never.on('error', () => {})
  return never
}

/** `remaining` of the draft-8 `RateLimit` header of a one-window limiter. */
function remainingOf(res: Response): number {
  const match = /; r=(\d+);/.exec(String(res.headers.ratelimit))
  if (!match) throw new Error(`no remaining in RateLimit: ${res.headers.ratelimit}`)
  return Number(match[1])
}

/** Admitted, with the draft-8 headers of `policy` (a one-window limiter). */
function expectAdmitted(res: Response, policy: string, remaining?: number): void {
  expect(res.status, 'status').to.equal(200)
  expect(res.headers['ratelimit-policy'], 'RateLimit-Policy').to.match(new RegExp(`^"${policy}"; q=\\d+; w=\\d+; pk=:`))
  expect(res.headers.ratelimit, 'RateLimit').to.match(new RegExp(`^"${policy}"; r=\\d+; t=\\d+$`))
  expect(res.headers, 'Retry-After').not.to.have.property('retry-after')
  if (remaining !== undefined) expect(remainingOf(res), 'remaining').to.equal(remaining)
}

/** Refused with 429, the draft-8 headers of `policy` (nothing left) and Retry-After. */
function expectRefused(res: Response, policy: string): void {
  expect(res.status, 'status').to.equal(429)
  expect(res.headers['ratelimit-policy'], 'RateLimit-Policy').to.match(new RegExp(`^"${policy}"; q=\\d+; w=\\d+; pk=:`))
  expect(res.headers.ratelimit, 'RateLimit').to.match(new RegExp(`^"${policy}"; r=0; t=[1-9]\\d*$`))
  expect(res.headers['retry-after'], 'Retry-After').to.match(/^[1-9]\d*$/)
}

/** The logged errors are those of the local fallback, about a Redis that could not answer. */
function expectLocalFallbackLogged(logger: RecordingLogger): void {
  expect(logger.errors.length, 'error logs').to.be.at.least(1)
  expect(String(logger.errors[0]?.[0]), 'log message').to.include('limiting in this process')
  expect(logger.errors[0]?.[1], 'logged error').to.be.instanceOf(Error)
}

describe(`rateLimit onRedisError: 'local' (${mode} Redis)`, () => {
  const unhandled: unknown[] = []
  const recordUnhandled = (reason: unknown): void => {
    unhandled.push(reason)
  }
  before(() => {
    process.on('unhandledRejection', recordUnhandled)
  })
  after(() => {
    process.off('unhandledRejection', recordUnhandled)
  })

  describe('options', () => {
    let client: RedisClient
    before(async () => {
      client = await connectRedis()
    })
    after(async () => {
      await client.close()
    })

    it("accepts onRedisError: 'local'", () => {
      expect(() =>
        rateLimit({ client, prefix: uniquePrefix('local-opt'), onRedisError: 'local', logger: recordingLogger() }),
      ).not.to.throw()
    })

    it("a bad onRedisError throws a TypeError naming the option and the three choices ('allow', 'block' or 'local')", () => {
      let thrown: unknown
      try {
        rateLimit({
          client,
          prefix: uniquePrefix('local-opt'),
          onRedisError: 'memory',
        } as unknown as RateLimitOptions)
      } catch (error) {
        thrown = error
      }
      expect(thrown).to.be.instanceOf(TypeError)
      expect((thrown as { code?: unknown }).code).to.equal('ERK_INVALID_OPTION')
      expect((thrown as Error).message).to.include('`onRedisError`')
      expect((thrown as Error).message).to.include("'allow', 'block' or 'local'")
      expect((thrown as Error).message).to.include('memory')
    })
  })

  /*
   * Redis stopped. A disposable single redis-server of our own is killed, in both modes (the
   * Cluster's nodes are shared by the whole suite and must stay up), as in redis-failure.test.ts.
   */
  describe('Redis stopped (disposable redis-server killed)', () => {
    const servers: DisposableRedis[] = []
    let redis: DisposableRedis
    let client: Awaited<ReturnType<typeof connectTo>>

    beforeEach(async () => {
      redis = await startDisposableRedis()
      servers.push(redis)
      client = await connectTo(redis)
    })

    afterEach(async () => {
      if (client.isOpen) client.destroy()
      await Promise.all(servers.splice(0).map((each) => each.stop()))
    })

    const limiter = (options: Partial<RateLimitOptions> = {}) => {
      const logger = recordingLogger()
      const prefix = uniquePrefix('local-down')
      const middleware = rateLimit({
        client,
        limit: 3,
        windowMs: '1h',
        prefix,
        keyGenerator: () => 'client',
        onRedisError: 'local',
        timeoutMs: TIMEOUT_MS,
        logger,
        ...options,
      })
      return { logger, prefix, middleware, app: appWith(middleware) }
    }

    it('keeps limiting in memory: 3 (counted from zero) get 200, then 429 with RateLimit headers, each within the bound; logs throttled', async () => {
      const { app, logger } = limiter({ algorithm: 'fixed-window' })
      // Decided in Redis: 1 of 3 used there.
      expectAdmitted(await request(app).get('/'), '3-in-1hr', 2)
      expect(logger.errors, 'error logs while Redis answers').to.deep.equal([])

      await redis.stop()
      const answers: Response[] = []
      for (let i = 0; i < 20; i++) {
        const { res, ms } = await timedGet(app)
        answers.push(res)
        expect(ms, `request ${i + 1} took (ms)`).to.be.below(BOUND_MS)
      }
      // What Redis counted is not known here: the local count starts from zero.
      expect(answers.map((res) => res.status)).to.deep.equal([200, 200, 200, ...Array(17).fill(429)])
      for (const [i, res] of answers.slice(0, 3).entries()) {
        expectAdmitted(res, '3-in-1hr', 2 - i)
        expect(res.headers['ratelimit-policy']).to.equal(`"3-in-1hr"; q=3; w=3600; pk=:${partitionKey('client')}:`)
      }
      for (const res of answers.slice(3)) {
        expectRefused(res, '3-in-1hr')
        // A fixed window of an hour, started by the first local request.
        expect(Number(res.headers['retry-after']), 'Retry-After').to.be.within(3590, 3600)
        expect(res.text).to.equal('Too many requests, please try again later.')
      }
      expect(client.isReady, 'client ready').to.equal(false)
      expectLocalFallbackLogged(logger)
      expect(logger.errors.length, 'error logs for 20 requests').to.be.at.most(2)
    })

    for (const algorithm of ALGORITHMS) {
      it(`${algorithm}: 3 get 200 then 429, in memory`, async () => {
        const { app } = limiter({ algorithm })
        expectAdmitted(await request(app).get('/'), '3-in-1hr', 2)
        await redis.stop()
        await waitUntil(() => !client.isReady, 5_000, 'the client to notice the server is gone')
        const answers: Response[] = []
        for (let i = 0; i < 5; i++) {
          const { res, ms } = await timedGet(app)
          expect(ms, `request ${i + 1} took (ms)`).to.be.below(BOUND_MS)
          answers.push(res)
        }
        expect(answers.map((res) => res.status)).to.deep.equal([200, 200, 200, 429, 429])
        for (const [i, res] of answers.slice(0, 3).entries()) expectAdmitted(res, '3-in-1hr', 2 - i)
        for (const res of answers.slice(3)) expectRefused(res, '3-in-1hr')
      })
    }

    it('decides in Redis again once it is back (a blank Redis: counted from zero there)', async function () {
      this.timeout(30_000)
      const { app, prefix, middleware } = limiter({ limit: 2, algorithm: 'fixed-window' })
      expectAdmitted(await request(app).get('/'), '2-in-1hr', 1)

      await redis.stop()
      await waitUntil(() => !client.isReady, 5_000, 'the client to notice the server is gone')
      const local = []
      for (let i = 0; i < 3; i++) local.push((await request(app).get('/')).status)
      expect(local, 'limited in memory').to.deep.equal([200, 200, 429])

      servers.push(await startRedisOnPort(redis.port))
      await waitUntil(() => client.isReady, 10_000, 'the client to reconnect')
      await sleep(PAST_RETRY_WINDOW_MS)
      // The local count (2 of 2) would refuse: these come from the blank Redis.
      expectAdmitted(await request(app).get('/'), '2-in-1hr', 1)
      expectAdmitted(await request(app).get('/'), '2-in-1hr', 0)
      expectRefused(await request(app).get('/'), '2-in-1hr')
      const key = expectedRedisKey(prefix, 'client', 'fixed-window')
      expect(await client.exists(key), 'the key exists in Redis').to.equal(1)
      expect(await client.get(key), 'counted in Redis').to.equal('2')
      expect((await middleware.getKey('client'))?.used).to.equal(2)
    })
  })

  describe('client not ready (never connected, or closed)', () => {
    // A long timeoutMs: answering well within the bound shows the requests did not wait for it.
    const appFor = (client: RedisClient, logger = recordingLogger()) =>
      appWith(
        rateLimit({
          client,
          limit: 2,
          windowMs: '1h',
          prefix: uniquePrefix('local-not-ready'),
          keyGenerator: () => 'client',
          onRedisError: 'local',
          timeoutMs: 10_000,
          logger,
        }),
      )

    async function expectLimitedLocallyAtOnce(client: RedisClient): Promise<void> {
      const logger = recordingLogger()
      const app = appFor(client, logger)
      const answers: Response[] = []
      for (let i = 0; i < 3; i++) {
        const { res, ms } = await timedGet(app)
        expect(ms, `request ${i + 1} took (ms)`).to.be.below(BOUND_MS)
        answers.push(res)
      }
      expect(answers.map((res) => res.status)).to.deep.equal([200, 200, 429])
      expectAdmitted(answers[0]!, '2-in-1hr', 1)
      expectAdmitted(answers[1]!, '2-in-1hr', 0)
      expectRefused(answers[2]!, '2-in-1hr')
      expectLocalFallbackLogged(logger)
      expect(logger.errors[0]?.[1]).to.have.property('code', 'ERK_REDIS_UNAVAILABLE')
    }

    it('a client that was never connected: limited locally at once (200, 200, 429)', async () => {
      const never = neverConnected()
      expect(never.isReady).to.equal(false)
      await expectLimitedLocallyAtOnce(never)
    })

    it('a client that was closed: limited locally at once (200, 200, 429)', async () => {
      const closed = await connectRedis()
      await closed.close()
      expect(closed.isReady).to.equal(false)
      await expectLimitedLocallyAtOnce(closed)
    })
  })

  describe('every option applies locally (a client never connected)', () => {
    const limiterFor = (options: Partial<RateLimitOptions>) =>
      appWith(
        rateLimit({
          client: neverConnected(),
          prefix: uniquePrefix('local-options'),
          keyGenerator: () => 'client',
          onRedisError: 'local',
          logger: recordingLogger(),
          ...options,
        }),
      )

    for (const algorithm of ALGORITHMS) {
      it(`${algorithm}, limits [2 per 1h, 5 per 2h]: 2 then 429, one policy per window`, async () => {
        const app = limiterFor({
          algorithm,
          limits: [
            { limit: 2, windowMs: '1h' },
            { limit: 5, windowMs: '2h' },
          ],
        })
        const answers: Response[] = []
        for (let i = 0; i < 4; i++) answers.push(await request(app).get('/'))
        expect(answers.map((res) => res.status)).to.deep.equal([200, 200, 429, 429])
        const pk = partitionKey('client')
        for (const res of answers) {
          expect(res.headers['ratelimit-policy']).to.equal(
            `"2-in-1hr"; q=2; w=3600; pk=:${pk}:, "5-in-2hrs"; q=5; w=7200; pk=:${pk}:`,
          )
        }
        expect(answers[0]!.headers.ratelimit).to.match(/^"2-in-1hr"; r=1; t=\d+, "5-in-2hrs"; r=4; t=\d+$/)
        expect(answers[1]!.headers.ratelimit).to.match(/^"2-in-1hr"; r=0; t=\d+, "5-in-2hrs"; r=3; t=\d+$/)
        // Refused by the first window: counted in neither.
        for (const res of answers.slice(2)) {
          expect(res.headers.ratelimit).to.match(/^"2-in-1hr"; r=0; t=[1-9]\d*, "5-in-2hrs"; r=3; t=\d+$/)
          expect(res.headers['retry-after']).to.match(/^[1-9]\d*$/)
        }
      })
    }

    it('limits: the longer window binds too (5 per 1h, 2 per 2h: 2 then 429, Retry-After of the 2h window)', async () => {
      const app = limiterFor({
        algorithm: 'fixed-window',
        limits: [
          { limit: 5, windowMs: '1h' },
          { limit: 2, windowMs: '2h' },
        ],
      })
      const statuses = []
      let last: Response | undefined
      for (let i = 0; i < 3; i++) {
        last = await request(app).get('/')
        statuses.push(last.status)
      }
      expect(statuses).to.deep.equal([200, 200, 429])
      expect(Number(last!.headers['retry-after'])).to.be.within(7190, 7200)
    })

    it('limits: a request refused by one window counts in none (2 per 1s, 3 per 1h)', async function () {
      this.timeout(10_000)
      const app = limiterFor({
        algorithm: 'fixed-window',
        limits: [
          { limit: 2, windowMs: '1s' },
          { limit: 3, windowMs: '1h' },
        ],
      })
      const first = []
      for (let i = 0; i < 4; i++) first.push((await request(app).get('/')).status)
      expect(first).to.deep.equal([200, 200, 429, 429])
      await sleep(1_100)
      // The 1 s window starts again; the hour has 2 of 3 used (the two refused counted nowhere).
      const second = []
      for (let i = 0; i < 2; i++) second.push((await request(app).get('/')).status)
      expect(second).to.deep.equal([200, 429])
    })

    it('blockDuration: the client stays refused for the block (even once the window admits), uncounted', async function () {
      this.timeout(10_000)
      const app = limiterFor({ algorithm: 'fixed-window', limit: 2, windowMs: '500ms', blockDuration: '2s' })
      const first = []
      for (let i = 0; i < 3; i++) first.push(await request(app).get('/'))
      const blockedAt = Date.now()
      expect(first.map((res) => res.status)).to.deep.equal([200, 200, 429])
      expect(first[2]!.headers['retry-after'], 'Retry-After: the block').to.equal('2')

      await sleep(700)
      // The 500 ms window is over (it would admit), the 2 s block is not.
      const during = await request(app).get('/')
      expect(during.status, 'during the block').to.equal(429)
      expect(Number(during.headers['retry-after'])).to.be.within(1, 2)

      const left = blockedAt + 2_000 + 150 - Date.now()
      if (left > 0) await sleep(left)
      // Nothing was counted during the block: a fresh window of 2.
      const after = []
      for (let i = 0; i < 3; i++) after.push((await request(app).get('/')).status)
      expect(after).to.deep.equal([200, 200, 429])
    })

    it("mode: 'shadow' and onLimit: over the limit is reported, let through, not counted", async () => {
      const seen: RateLimitInfo[] = []
      const app = limiterFor({
        algorithm: 'sliding-log',
        limit: 2,
        windowMs: '1h',
        mode: 'shadow',
        onLimit: (_req, _res, info) => void seen.push(info),
      })
      const answers: Response[] = []
      for (let i = 0; i < 4; i++) answers.push(await request(app).get('/'))
      expect(answers.map((res) => res.status)).to.deep.equal([200, 200, 200, 200])
      expect(answers.map(remainingOf)).to.deep.equal([1, 0, 0, 0])
      expect(answers[2]!.headers['retry-after']).to.match(/^[1-9]\d*$/)
      expect(seen.map((info) => [info.used, info.remaining, info.limit, info.key])).to.deep.equal([
        [2, 0, 2, 'client'],
        [2, 0, 2, 'client'],
      ])
    })

    it('skipSuccessfulRequests: a successful request is given back locally too (as Redis does)', async () => {
      // With Redis, the two successful requests are given back after they finish: 4 x 200.
      const app = limiterFor({ algorithm: 'fixed-window', limit: 2, windowMs: '1h', skipSuccessfulRequests: true })
      const statuses = []
      for (let i = 0; i < 4; i++) {
        statuses.push((await request(app).get('/')).status)
        // The give-back runs on 'finish', just after the response.
        await sleep(20)
      }
      expect(statuses).to.deep.equal([200, 200, 200, 200])
      const failed = []
      for (let i = 0; i < 3; i++) failed.push((await request(app).get('/status/500')).status)
      expect(failed, 'failed requests still count').to.deep.equal([500, 500, 429])
    })

    it('limits per client key, each on its own', async () => {
      const app = limiterFor({
        algorithm: 'fixed-window',
        limit: 1,
        windowMs: '1h',
        keyGenerator: (req) => String(req.headers['x-client']),
      })
      const statuses = []
      for (const who of ['a', 'b', 'a', 'b', 'c'])
        statuses.push((await request(app).get('/').set('x-client', who)).status)
      expect(statuses).to.deep.equal([200, 200, 429, 429, 200])
    })
  })

  /*
   * Redis stalled: CLIENT PAUSE ALL on every node of the suite's mode (the shared single
   * Redis, or all three Cluster masters), short, and waited out before any later test.
   */
  describe('Redis stalled (CLIENT PAUSE ALL)', () => {
    let client: RedisClient
    let server: Server | undefined
    let pausedUntil = 0

    before(async () => {
      client = await connectRedis()
    })

    afterEach(async function () {
      this.timeout(20_000)
      await waitForRedisResume(pausedUntil)
      await closeServer(server)
      server = undefined
    })

    after(async function () {
      this.timeout(20_000)
      await waitForRedisResume(pausedUntil)
      await client?.close()
    })

    const stalledLimiter = async (algorithm: Algorithm) => {
      const logger = recordingLogger()
      const middleware = rateLimit({
        client,
        limit: 2,
        windowMs: '1h',
        algorithm,
        prefix: uniquePrefix('local-stall'),
        keyGenerator: () => 'client',
        onRedisError: 'local',
        timeoutMs: TIMEOUT_MS,
        logger,
      })
      const listening = await listen(appWith(middleware))
      server = listening
      return { logger, middleware, listening }
    }

    it('sequential requests: the first waits up to timeoutMs, the next ones (within 1 s) none; limited locally; then Redis decides again', async function () {
      this.timeout(20_000)
      const { logger, middleware, listening } = await stalledLimiter('fixed-window')
      // Connected, script loaded: 1 of 2 used in Redis.
      expectAdmitted(await request(listening).get('/'), '2-in-1hr', 1)

      pausedUntil = Date.now() + PAUSE_MS
      await pauseRedis(PAUSE_MS)
      const timed: { res: Response; ms: number }[] = []
      let firstAnsweredAt = 0
      for (let i = 0; i < 5; i++) {
        timed.push(await timedGet(listening))
        if (i === 0) firstAnsweredAt = performance.now()
      }
      expect(
        timed.map(({ res }) => res.status),
        'limited locally, counted from zero',
      ).to.deep.equal([200, 200, 429, 429, 429])
      expectAdmitted(timed[0]!.res, '2-in-1hr', 1)
      expectAdmitted(timed[1]!.res, '2-in-1hr', 0)
      for (const { res } of timed.slice(2)) expectRefused(res, '2-in-1hr')
      expect(timed[0]!.ms, 'the first request (waited for Redis) took (ms)').to.be.below(BOUND_MS)
      expect(timed[0]!.ms, 'the first request waited for timeoutMs').to.be.at.least(TIMEOUT_MS - 20)
      for (const [i, { ms }] of timed.slice(1).entries())
        expect(ms, `request ${i + 2} (Redis not asked) took (ms)`).to.be.below(FAST_MS)
      expectLocalFallbackLogged(logger)
      expect(logger.errors.length, 'error logs').to.equal(1)

      await waitForRedisResume(pausedUntil)
      const left = firstAnsweredAt + PAST_RETRY_WINDOW_MS - performance.now()
      if (left > 0) await sleep(left)
      // Redis counted 1 before the pause and nothing of the stalled decision (past its deadline);
      // the local count (2 of 2) would refuse.
      expect((await middleware.getKey('client'))?.used, 'used in Redis after the pause').to.equal(1)
      expectAdmitted(await request(listening).get('/'), '2-in-1hr', 0)
      expectRefused(await request(listening).get('/'), '2-in-1hr')
      expect((await middleware.getKey('client'))?.used, 'used in Redis').to.equal(2)
    })

    it('10 requests at once: all within the bound, 2 admitted locally; requests in the next second do not wait', async function () {
      this.timeout(20_000)
      const { logger, listening } = await stalledLimiter('sliding-log')
      expectAdmitted(await request(listening).get('/'), '2-in-1hr', 1)

      pausedUntil = Date.now() + PAUSE_MS
      await pauseRedis(PAUSE_MS)
      const started = performance.now()
      const burst = await Promise.all(Array.from({ length: 10 }, () => timedGet(listening)))
      for (const { ms } of burst) expect(ms, 'took (ms)').to.be.below(BOUND_MS)
      expect(performance.now() - started, '10 requests at once took (ms)').to.be.below(BOUND_MS)
      const statuses = burst.map(({ res }) => res.status).sort()
      expect(statuses).to.deep.equal([200, 200, ...Array(8).fill(429)])
      for (const { res } of burst) expect(res.headers, 'RateLimit').to.have.property('ratelimit')

      const after: { res: Response; ms: number }[] = []
      for (let i = 0; i < 5; i++) after.push(await timedGet(listening))
      for (const { res, ms } of after) {
        expectRefused(res, '2-in-1hr')
        expect(ms, 'a request in the retry window took (ms)').to.be.below(FAST_MS)
      }
      expect(logger.errors.length, 'error logs').to.be.within(1, 2)

      await waitForRedisResume(pausedUntil)
      await sleep(PAST_RETRY_WINDOW_MS)
      // From Redis again: 1 of 2 used there.
      expectAdmitted(await request(listening).get('/'), '2-in-1hr', 0)
      expectRefused(await request(listening).get('/'), '2-in-1hr')
    })
  })

  describe("a host clock behind Redis's", () => {
    let client: RedisClient
    const realNow = Date.now
    before(async () => {
      client = await connectRedis()
    })
    afterEach(() => {
      Date.now = realNow
    })
    after(async () => {
      await client.close()
    })

    for (const algorithm of ['fixed-window', 'sliding-window'] as const) {
      it(`${algorithm}: decisions come from Redis again after the first late one (the offset is learnt from its reply)`, async function () {
        this.timeout(10_000)
        const logger = recordingLogger()
        const middleware = rateLimit({
          client,
          limit: 5,
          windowMs: '1h',
          algorithm,
          prefix: uniquePrefix(`local-skew-${algorithm}`),
          keyGenerator: () => 'client',
          onRedisError: 'local',
          timeoutMs: TIMEOUT_MS,
          logger,
        })
        const app = appWith(middleware)
        // This host's clock 1 s behind Redis's (more than timeoutMs + the grace): the first decision's
        // deadline has passed on Redis's clock when it arrives. Its reply carries Redis's time.
        Date.now = () => realNow() - 1_000
        expect((await request(app).get('/')).status).to.equal(200)
        await sleep(PAST_RETRY_WINDOW_MS)
        for (let i = 0; i < 2; i++) expect((await request(app).get('/')).status).to.equal(200)
        Date.now = realNow
        // Redis answered: the two requests after the retry window were decided (and counted) there.
        expect((await middleware.getKey('client'))?.used, 'counted in Redis').to.equal(2)
      })
    }
  })

  describe('the process', () => {
    it('saw no unhandled rejection during these tests', async () => {
      await sleep(200)
      expect(unhandled).to.deep.equal([])
    })
  })
})
