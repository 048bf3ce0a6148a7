import type { Server } from 'node:http'
import { performance } from 'node:perf_hooks'
import { setTimeout as sleep } from 'node:timers/promises'
import { expect } from 'chai'
import { createCluster } from 'redis'
import request from 'supertest'
import { cached, cacheResponse } from '../../src/index.js'
import { clusterSlot } from '../../src/shared/redis.js'
import { cachedEntryKey, countingApp, responseEntryKey, xCache } from '../helpers/cache-app.js'
import {
  closeServer,
  listen,
  type RecordingLogger,
  recordingLogger,
  startRedisOnPort,
  waitForRedisResume,
  waitUntil,
} from '../helpers/outage.js'
import {
  connectRedis,
  connectTo,
  type DisposableCluster,
  type DisposableRedis,
  mode,
  pauseRedis,
  type RedisClient,
  startDisposableCluster,
  startDisposableRedis,
  uniquePrefix,
} from '../helpers/redis.js'

/*
 * Issue 4: "Redis down or stalled: the request goes to the handler within `timeoutMs`,
 * nothing is cached, a warning is logged (at most once per few seconds). Never a 500
 * because the cache failed." The only timings asserted are generous upper bounds: with
 * timeoutMs 300, a request must be answered within BOUND_MS.
 */
const TIMEOUT_MS = 300
const BOUND_MS = 1_500
const PAUSE_MS = 1_500

type TestResponse = Awaited<ReturnType<ReturnType<typeof request>['get']>>

async function timed<T>(work: () => Promise<T>): Promise<{ value: T; ms: number }> {
  const started = performance.now()
  const value = await work()
  return { value, ms: performance.now() - started }
}

/** Answered by the handler, not by the cache: 200, BYPASS, the body of run `run`. */
function expectBypassed(res: TestResponse, run: number): void {
  expect(res.status, 'status').to.equal(200)
  expect(xCache(res), 'X-Cache').to.equal('BYPASS')
  expect(res.text, 'body').to.equal(`GET /page #${run}`)
}

/** Warned at least once and at most twice, with the Redis error as detail. */
function expectThrottledWarnings(logger: RecordingLogger): void {
  expect(logger.warnings.length, 'warnings').to.be.within(1, 2)
  expect(logger.warnings[0]?.[1], 'the warning carries the error').to.have.property('code', 'ERK_REDIS_UNAVAILABLE')
  expect(logger.errors, 'errors logged').to.deep.equal([])
}

describe(`cache when Redis fails (${mode} Redis)`, () => {
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

  /*
   * Redis stopped: a disposable single redis-server of our own is killed, in both modes (the
   * suite's Redis and Cluster are shared and must stay up). A Cluster losing a master is below.
   */
  describe('Redis stopped (disposable redis-server killed)', () => {
    const servers: DisposableRedis[] = []
    let redis: DisposableRedis
    let client: RedisClient
    let server: Server | undefined

    beforeEach(async () => {
      redis = await startDisposableRedis()
      servers.push(redis)
      client = await connectTo(redis)
    })

    afterEach(async () => {
      if ((client as unknown as { isOpen: boolean }).isOpen) client.destroy()
      await closeServer(server)
      server = undefined
      await Promise.all(servers.splice(0).map((each) => each.stop()))
    })

    it('cacheResponse: every request is answered by the handler within timeoutMs (200, X-Cache BYPASS), warnings throttled', async () => {
      const logger = recordingLogger()
      const cache = cacheResponse({ client, prefix: uniquePrefix('down'), ttl: '1m', timeoutMs: TIMEOUT_MS, logger })
      const { app, runs } = countingApp(cache)
      expect(xCache(await request(app).get('/page'))).to.equal('MISS')
      expect(xCache(await request(app).get('/page'))).to.equal('HIT')

      await redis.stop()
      for (let i = 0; i < 20; i++) {
        const { value: res, ms } = await timed(() => request(app).get('/page'))
        expectBypassed(res, i + 2)
        expect(ms, `request ${i + 1} took (ms)`).to.be.below(BOUND_MS)
      }
      expect(runs.count).to.equal(21)
      expectThrottledWarnings(logger)
    })

    it('cacheResponse: 50 requests at once while Redis is down, a long timeoutMs: none waits in the offline queue; nothing is written once Redis is back', async function () {
      this.timeout(30_000)
      const cache = cacheResponse({
        client,
        prefix: uniquePrefix('down-queue'),
        ttl: '1m',
        timeoutMs: 10_000,
        logger: recordingLogger(),
      })
      const { app, runs } = countingApp(cache)
      const listening = await listen(app)
      server = listening
      expect(xCache(await request(listening).get('/page'))).to.equal('MISS')

      await redis.stop()
      await waitUntil(() => !client.isReady, 5_000, 'the client to notice the server is gone')
      const { value: responses, ms } = await timed(() =>
        Promise.all(Array.from({ length: 50 }, (_, i) => request(listening).get(`/page?n=${i}`))),
      )
      expect(ms, '50 requests took (ms)').to.be.below(BOUND_MS)
      for (const res of responses) {
        expect(res.status).to.equal(200)
        expect(xCache(res)).to.equal('BYPASS')
      }
      expect(runs.count).to.equal(51)

      // A blank Redis on the same port: a command left in the offline queue would now write.
      servers.push(await startRedisOnPort(redis.port))
      await waitUntil(() => client.isReady, 10_000, 'the client to reconnect')
      await sleep(200)
      expect(await client.dbSize(), 'keys written after reconnecting').to.equal(0)
    })

    it('cacheResponse: once Redis is back, responses are cached again', async function () {
      this.timeout(30_000)
      const cache = cacheResponse({ client, prefix: uniquePrefix('down-back'), ttl: '1m', logger: recordingLogger() })
      const { app } = countingApp(cache)
      await redis.stop()
      await waitUntil(() => !client.isReady, 5_000, 'the client to notice the server is gone')
      expect(xCache(await request(app).get('/page'))).to.equal('BYPASS')
      servers.push(await startRedisOnPort(redis.port))
      await waitUntil(() => client.isReady, 10_000, 'the client to reconnect')
      expect(xCache(await request(app).get('/page'))).to.equal('MISS')
      expect(xCache(await request(app).get('/page'))).to.equal('HIT')
    })

    it('cached(): the loader answers every call within timeoutMs, warnings throttled, never an error', async () => {
      const logger = recordingLogger()
      const options = { prefix: uniquePrefix('down-cached'), ttl: '1m', timeoutMs: TIMEOUT_MS, logger } as const
      let loads = 0
      const load = () => cached(client, 'key', options, () => `load ${++loads}`)
      expect(await load()).to.equal('load 1')
      expect(await load()).to.equal('load 1')

      await redis.stop()
      for (let i = 0; i < 20; i++) {
        const { value, ms } = await timed(load)
        expect(value).to.equal(`load ${i + 2}`)
        expect(ms, `call ${i + 1} took (ms)`).to.be.below(BOUND_MS)
      }
      expect(loads).to.equal(21)
      expectThrottledWarnings(logger)
    })

    it('each cache warns its own logger (two caches on one client and prefix, each with a logger of its own)', async () => {
      const prefix = uniquePrefix('down-loggers')
      const responseLogger = recordingLogger()
      const valueLogger = recordingLogger()
      const cache = cacheResponse({ client, prefix, ttl: '1m', timeoutMs: TIMEOUT_MS, logger: responseLogger })
      const { app } = countingApp(cache)
      await redis.stop()
      await waitUntil(() => !client.isReady, 5_000, 'the client to notice the server is gone')
      expect(xCache(await request(app).get('/page'))).to.equal('BYPASS')
      expect(
        await cached(client, 'key', { prefix, ttl: '1m', timeoutMs: TIMEOUT_MS, logger: valueLogger }, () => 'v'),
      ).to.equal('v')
      expect(responseLogger.warnings.length, "cacheResponse's logger").to.equal(1)
      expect(valueLogger.warnings.length, "cached()'s logger").to.equal(1)
    })
  })

  /*
   * Redis stalled: CLIENT PAUSE ALL on every node of the suite's mode (the single Redis, or
   * all three Cluster masters). The commands sent meanwhile run when the pause ends.
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

    const pause = async () => {
      pausedUntil = Date.now() + PAUSE_MS
      await pauseRedis(PAUSE_MS)
    }

    it('cacheResponse: requests during the stall are answered by the handler within timeoutMs (BYPASS); nothing is cached', async function () {
      this.timeout(20_000)
      const prefix = uniquePrefix('stall')
      const logger = recordingLogger()
      const { app, runs } = countingApp(cacheResponse({ client, prefix, ttl: '1m', timeoutMs: TIMEOUT_MS, logger }))
      const listening = await listen(app)
      server = listening
      // Connected, scripts loaded: the stall is the only thing that can hold the next requests.
      await request(listening).get('/warm')

      await pause()
      const results = await Promise.all(Array.from({ length: 20 }, () => timed(() => request(listening).get('/page'))))
      for (const { value: res, ms } of results) {
        expect(res.status).to.equal(200)
        expect(xCache(res)).to.equal('BYPASS')
        expect(ms, 'took (ms)').to.be.below(BOUND_MS)
      }
      expect(runs.count).to.equal(21)
      expectThrottledWarnings(logger)

      await waitForRedisResume(pausedUntil)
      expect(await client.exists(responseEntryKey(prefix, '/page')), 'entry stored').to.equal(0)
    })

    it('cacheResponse: once Redis answers again, the next request is answered within the bound and stored (no lock left behind by the stalled lookups)', async function () {
      this.timeout(20_000)
      const { app, runs } = countingApp(
        cacheResponse({ client, prefix: uniquePrefix('stall-after'), ttl: '1m', logger: recordingLogger() }),
      )
      await request(app).get('/warm')
      await pause()
      const during = await request(app).get('/page')
      expect(xCache(during)).to.equal('BYPASS')

      await waitForRedisResume(pausedUntil)
      const { value: next, ms } = await timed(() => request(app).get('/page'))
      expect(next.status).to.equal(200)
      expect(ms, 'the first request after the stall took (ms)').to.be.below(BOUND_MS)
      expect(xCache(next)).to.equal('MISS')
      expect(xCache(await request(app).get('/page'))).to.equal('HIT')
      expect(runs.count).to.equal(3)
    })

    it('cached(): calls during the stall are answered by the loader within timeoutMs; nothing is cached', async function () {
      this.timeout(20_000)
      const prefix = uniquePrefix('stall-cached')
      const logger = recordingLogger()
      let loads = 0
      const load = (key: string) =>
        cached(client, key, { prefix, ttl: '1m', timeoutMs: TIMEOUT_MS, logger }, () => `${key} ${++loads}`)
      await load('warm')

      await pause()
      const results = await Promise.all(Array.from({ length: 20 }, () => timed(() => load('key'))))
      for (const { ms } of results) expect(ms, 'took (ms)').to.be.below(BOUND_MS)
      expect(loads).to.equal(21)
      expectThrottledWarnings(logger)

      await waitForRedisResume(pausedUntil)
      expect(await client.exists(cachedEntryKey(prefix, 'key')), 'value stored').to.equal(0)
    })

    it('cached(): once Redis answers again, the next call is answered within the bound and stored (no lock left behind)', async function () {
      this.timeout(20_000)
      const prefix = uniquePrefix('stall-cached-after')
      let loads = 0
      const options = { prefix, ttl: '1m', logger: recordingLogger() } as const
      const load = (key: string) => cached(client, key, options, () => `${key} ${++loads}`)
      await load('warm')
      await pause()
      expect(await load('key')).to.equal('key 2')

      await waitForRedisResume(pausedUntil)
      const { value, ms } = await timed(() => load('key'))
      expect(ms, 'the first call after the stall took (ms)').to.be.below(BOUND_MS)
      expect(value).to.equal('key 3')
      expect(await load('key')).to.equal('key 3')
    })
  })

  describe('a Redis Cluster master down (a disposable cluster of our own)', () => {
    // node-redis keeps a cluster client `isReady` while one master is down. Requests whose
    // entry lives on the dead master must still be answered within the bound.
    let cluster: DisposableCluster
    let client: RedisClient
    type Slots = { slots: { master: { client?: { isReady: boolean } } }[] }
    const nodeIsReady = (key: string) => (client as unknown as Slots).slots[clusterSlot(key)]?.master.client?.isReady

    beforeEach(async function () {
      this.timeout(30_000)
      cluster = await startDisposableCluster()
      const clusterClient = createCluster({ rootNodes: [{ url: `redis://127.0.0.1:${cluster.ports[0]}` }] })
      clusterClient.on('error', () => {})
      await clusterClient.connect()
      client = clusterClient
    })
    afterEach(async () => {
      client.destroy()
      await cluster.stop()
    })

    it('cacheResponse: requests for an entry on the dead master are answered within the bound (200, BYPASS)', async () => {
      const prefix = uniquePrefix('master-down')
      const logger = recordingLogger()
      const { app, runs } = countingApp(cacheResponse({ client, prefix, ttl: '1m', timeoutMs: TIMEOUT_MS, logger }))
      expect(xCache(await request(app).get('/page'))).to.equal('MISS')
      expect(xCache(await request(app).get('/page'))).to.equal('HIT')
      const entryKey = responseEntryKey(prefix, '/page')
      await cluster.killMasterOf(entryKey)
      await waitUntil(() => nodeIsReady(entryKey) === false, 5_000, 'the client to see the master down')

      const { value: answers, ms } = await timed(() =>
        Promise.all(Array.from({ length: 10 }, () => request(app).get('/page'))),
      )
      expect(ms, '10 requests took (ms)').to.be.below(BOUND_MS)
      for (const res of answers) {
        expect(res.status).to.equal(200)
        expect(xCache(res)).to.equal('BYPASS')
      }
      expect(runs.count).to.equal(11)
      expectThrottledWarnings(logger)
    })

    it('cached(): calls for a value on the dead master are answered by the loader within the bound', async () => {
      const prefix = uniquePrefix('master-down-cached')
      const logger = recordingLogger()
      let loads = 0
      const load = () => cached(client, 'key', { prefix, ttl: '1m', timeoutMs: TIMEOUT_MS, logger }, () => ++loads)
      expect(await load()).to.equal(1)
      expect(await load()).to.equal(1)
      const entryKey = cachedEntryKey(prefix, 'key')
      await cluster.killMasterOf(entryKey)
      await waitUntil(() => nodeIsReady(entryKey) === false, 5_000, 'the client to see the master down')

      const { value: values, ms } = await timed(() => Promise.all(Array.from({ length: 10 }, load)))
      expect(ms, '10 calls took (ms)').to.be.below(BOUND_MS)
      expect(values.slice().sort((a, b) => a - b)).to.deep.equal([2, 3, 4, 5, 6, 7, 8, 9, 10, 11])
      expectThrottledWarnings(logger)
    })
  })

  describe('the process', () => {
    it('saw no unhandled rejection during these tests', async () => {
      // Leave time for late outcomes (commands answered or failed after their request was answered).
      await sleep(200)
      expect(unhandled).to.deep.equal([])
    })
  })
})
