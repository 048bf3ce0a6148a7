import { request as httpRequest, type Server } from 'node:http'
import { performance } from 'node:perf_hooks'
import { setTimeout as sleep } from 'node:timers/promises'
import { expect } from 'chai'
import request from 'supertest'
import { cacheResponse } from '../../src/index.js'
import { countingApp, lockKeyOf, responseEntryKey, xCache } from '../helpers/cache-app.js'
import {
  type CacheWorker,
  fireAtOnce,
  getFrom,
  nextOriginRun,
  startCacheWorkers,
  stopWorkers,
} from '../helpers/cache-workers.js'
import { closeServer, listen } from '../helpers/outage.js'
import { connectRedis, mode, type RedisClient, uniquePrefix } from '../helpers/redis.js'

/*
 * Issue 4: "Stampede-proof across instances: when N requests (from any number of app
 * processes) miss the same key at once, the handler runs once and the others get its
 * response (a Redis lock with a token and bounded wait; if the lock holder dies, another
 * takes over after a bounded time)." Two real processes, each its own app and its own Redis
 * connection; the origin counts its runs in Redis.
 */
const WORKERS = 2
const PER_WORKER = 25
const ORIGIN_MS = 200

describe(`cache stampede protection (${WORKERS} processes, ${mode} Redis)`, () => {
  let client: RedisClient
  before(async () => {
    client = await connectRedis()
  })
  after(async () => {
    await client.close()
  })

  describe('50 concurrent misses of the same key', () => {
    let workers: CacheWorker[] = []
    before(async function () {
      this.timeout(60_000)
      workers = await startCacheWorkers(WORKERS, { delayMs: ORIGIN_MS, lockTimeout: '5s' })
    })
    after(async function () {
      this.timeout(20_000)
      await stopWorkers(workers)
    })

    it('cacheResponse: the handler runs exactly once; all 50 get 200 and the same body (one MISS, 49 HIT)', async function () {
      this.timeout(30_000)
      const prefix = uniquePrefix('stampede-page')
      const answers = await fireAtOnce(workers, '/page', PER_WORKER, { 'x-prefix': prefix })
      expect(answers).to.have.length(WORKERS * PER_WORKER)
      expect(await client.get(`${prefix}runs`), 'handler runs').to.equal('1')
      expect(new Set(answers.map((answer) => answer.status))).to.deep.equal(new Set([200]))
      expect(new Set(answers.map((answer) => answer.body))).to.deep.equal(new Set(['page run 1']))
      expect(answers.filter((answer) => answer.xCache === 'MISS')).to.have.length(1)
      expect(answers.filter((answer) => answer.xCache === 'HIT')).to.have.length(WORKERS * PER_WORKER - 1)
      // Cache-Status (RFC 9211): the filler forwarded and stored; every waiter was collapsed into it.
      const statuses = answers.map((answer) => answer.cacheStatus)
      expect(
        statuses.filter((status) => status === 'express-redis-kit; fwd=miss; fwd-status=200; stored'),
      ).to.have.length(1)
      expect(
        statuses.filter((status) => /^express-redis-kit; fwd=miss; collapsed; ttl=\d+$/.test(String(status))),
      ).to.have.length(WORKERS * PER_WORKER - 1)
    })

    it('cached(): the loader runs exactly once; all 50 callers get its value', async function () {
      this.timeout(30_000)
      const prefix = uniquePrefix('stampede-value')
      const answers = await fireAtOnce(workers, '/value', PER_WORKER, { 'x-prefix': prefix })
      expect(await client.get(`${prefix}runs`), 'loader runs').to.equal('1')
      expect(new Set(answers.map((answer) => answer.status))).to.deep.equal(new Set([200]))
      expect(new Set(answers.map((answer) => answer.body))).to.deep.equal(new Set(['value run 1']))
    })
  })

  describe('the lock holder dies (lockTimeout 500ms)', () => {
    let server: Server | undefined
    afterEach(async () => {
      await closeServer(server)
      server = undefined
    })

    it('a lock left by a dead holder (taken by the test): the next request takes over once it expires, and stores', async () => {
      const prefix = uniquePrefix('stampede-dead')
      const { app, runs } = countingApp(cacheResponse({ client, prefix, ttl: '1m', lockTimeout: '500ms' }))
      const lockKey = lockKeyOf(responseEntryKey(prefix, '/orphan'))
      expect(await client.set(lockKey, 'a-holder-that-died', { PX: 500 })).to.equal('OK')
      const locked = performance.now()

      const res = await request(app).get('/orphan')
      const waited = performance.now() - locked
      expect(res.status).to.equal(200)
      expect(res.text).to.equal('GET /orphan #1')
      expect(waited, 'answered after (ms)').to.be.at.least(400).and.below(2_500)
      expect(runs.count).to.equal(1)
      const hit = await request(app).get('/orphan')
      expect(xCache(hit)).to.equal('HIT')
      expect(runs.count).to.equal(1)
    })

    it('the lock holder process is killed mid-fill: a request to another process takes over after lockTimeout', async function () {
      this.timeout(60_000)
      const pair = await startCacheWorkers(2, { delayMs: ORIGIN_MS, lockTimeout: '500ms' })
      try {
        const [holder, survivor] = pair as [CacheWorker, CacheWorker]
        const prefix = uniquePrefix('stampede-killed')
        const headers = { 'x-prefix': prefix }
        const started = nextOriginRun(holder, prefix)
        // Never answered: its handler hangs, then its process dies.
        getFrom(holder, '/page', { ...headers, 'x-hang': '1' }).catch(() => {})
        expect(await started).to.equal(1)
        const locked = performance.now()
        holder.child.kill('SIGKILL')

        const answer = await getFrom(survivor, '/page', headers)
        const waited = performance.now() - locked
        expect(answer.status).to.equal(200)
        expect(answer.body).to.equal('page run 2')
        expect(waited, 'answered after (ms)').to.be.at.least(500).and.below(3_000)
        const hit = await getFrom(survivor, '/page', headers)
        expect([hit.xCache, hit.body]).to.deep.equal(['HIT', 'page run 2'])
        expect(await client.get(`${prefix}runs`)).to.equal('2')
      } finally {
        await stopWorkers(pair)
      }
    })

    it('the client of the request that holds the lock disconnects: the lock is given up at once (default lockTimeout)', async () => {
      const prefix = uniquePrefix('stampede-abort')
      const { app, runs } = countingApp(cacheResponse({ client, prefix, ttl: '1m' }), async (req, res, run) => {
        await sleep(Number(req.headers['x-delay'] ?? 0))
        res.send(`run ${run}`)
      })
      const listening = await listen(app)
      server = listening
      const { port } = listening.address() as { port: number }
      const aborted = httpRequest({ host: '127.0.0.1', port, path: '/abort', headers: { 'x-delay': '3000' } })
      aborted.on('error', () => {})
      aborted.end()
      while (runs.count === 0) await sleep(10)
      aborted.destroy()
      await sleep(50)

      const started = performance.now()
      const next = await request(listening).get('/abort')
      expect(performance.now() - started, 'answered after (ms)').to.be.below(1_500)
      expect([xCache(next), next.text]).to.deep.equal(['MISS', 'run 2'])
      expect(xCache(await request(listening).get('/abort'))).to.equal('HIT')
    })
  })
})
