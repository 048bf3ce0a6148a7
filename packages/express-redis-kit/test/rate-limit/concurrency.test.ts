import { expect } from 'chai'
import type { Algorithm, Duration } from '../../src/index.js'
import { slidingWindowState } from '../helpers/rate-limit.js'
import { connectRedis, mode, type RedisClient, uniquePrefix } from '../helpers/redis.js'
import {
  countStatuses,
  fireAtOnce,
  startWorkers,
  stopWorkers,
  type Worker,
  type WorkerLimiter,
} from '../helpers/workers.js'

/*
 * Issue 2: "500 requests fired at once from 4 processes against limit 100 let exactly
 * 100 through for fixed-window, sliding-log and token-bucket, and at most 100 for
 * sliding-window." Four real processes, each its own app and its own Redis connection,
 * count one shared key. The window is an hour: the token bucket refills limit/window,
 * so nothing is refilled while the test runs.
 */
const WORKERS = 4
const LIMIT = 100
const PER_WORKER = 125
const KEY = '{shared}'
const WINDOW: Duration = '1h'

const ALGORITHMS: Algorithm[] = ['fixed-window', 'sliding-log', 'token-bucket', 'sliding-window']
const prefixes = Object.fromEntries(ALGORITHMS.map((algorithm) => [algorithm, uniquePrefix(`conc-${algorithm}`)]))
const costPrefix = uniquePrefix('conc-cost')

/*
 * The same exactness with the rate-limit options that change what a decision does: several
 * windows (`limits`), `blockDuration`, the local block cache off (and on, a second burst),
 * and `mode: 'shadow'`. Each limiter has its own prefix, so each test counts its own keys.
 */
const WINDOWS_LIMIT = 50
const LIMITS = [
  { limit: WINDOWS_LIMIT, windowMs: '1h' },
  { limit: 80, windowMs: '2h' },
] as const
/** The Redis key of each window of `LIMITS`: `<prefix>{<key>}:<windowMs>` (sliding-window adds `:sw`). */
const WINDOW_SUFFIXES = [':3600000', ':7200000']
/** What sliding-window's window keys add to the others' names. */
const SW = ':sw'
const BLOCK_LIMIT = 50

type Variant = 'limits' | 'block' | 'no-cache' | 'cache' | 'shadow'
const variantPrefixes = new Map<string, string>()
/** A limiter for `variant` of `algorithm`, mounted on `/<variant>/<algorithm>`, with its own prefix. */
function variant(name: Variant, algorithm: Algorithm, options: Partial<WorkerLimiter>): WorkerLimiter {
  const path = `/${name}/${algorithm}`
  const prefix = uniquePrefix(`conc-${name}-${algorithm}`)
  variantPrefixes.set(path, prefix)
  return { path, algorithm, prefix, ...options }
}
const prefixOf = (path: string): string => variantPrefixes.get(path)!

const limiters: WorkerLimiter[] = [
  ...ALGORITHMS.map((algorithm) => ({
    path: `/${algorithm}`,
    algorithm,
    prefix: prefixes[algorithm]!,
    limit: LIMIT,
    windowMs: WINDOW,
  })),
  { path: '/cost-3', algorithm: 'fixed-window', prefix: costPrefix, limit: LIMIT, windowMs: WINDOW, cost: 3 },
  ...ALGORITHMS.map((algorithm) => variant('limits', algorithm, { limits: LIMITS.map((window) => ({ ...window })) })),
  ...ALGORITHMS.flatMap((algorithm) => [
    variant('block', algorithm, { limit: BLOCK_LIMIT, windowMs: WINDOW, blockDuration: '1h' }),
    variant('no-cache', algorithm, { limit: LIMIT, windowMs: WINDOW, localBlockCache: false }),
  ]),
  variant('cache', 'fixed-window', { limit: LIMIT, windowMs: WINDOW, localBlockCache: 10_000 }),
  ...(['fixed-window', 'sliding-log', 'sliding-window'] as const).map((algorithm) =>
    variant('shadow', algorithm, { limit: LIMIT, windowMs: WINDOW, mode: 'shadow' }),
  ),
]

/** Every Redis key a limiter of `prefix` may write for the shared client (one slot: `{shared}`). */
const keysOf = (prefix: string): string[] =>
  ['', ...WINDOW_SUFFIXES, SW, ...WINDOW_SUFFIXES.map((suffix) => suffix + SW), ':block'].map(
    (suffix) => `${prefix}${KEY}${suffix}`,
  )

describe(`rateLimit exact under concurrency (${WORKERS} processes, ${mode} Redis)`, () => {
  let workers: Worker[] = []
  let client: RedisClient

  before(async function () {
    this.timeout(60_000)
    client = await connectRedis()
    workers = await startWorkers(WORKERS, limiters)
  })

  after(async function () {
    this.timeout(20_000)
    await stopWorkers(workers)
    if (client) {
      await Promise.all(
        [...Object.values(prefixes), costPrefix, ...variantPrefixes.values()].map((prefix) =>
          client.del(keysOf(prefix)),
        ),
      )
      await client.close()
    }
  })

  for (const algorithm of ['fixed-window', 'sliding-log', 'token-bucket'] as const) {
    it(`${algorithm}: 500 requests at once let exactly ${LIMIT} through, the rest get 429`, async function () {
      this.timeout(30_000)
      const statuses = await fireAtOnce(workers, `/${algorithm}`, PER_WORKER)
      expect(statuses).to.have.length(WORKERS * PER_WORKER)
      expect(countStatuses(statuses)).to.deep.equal({ 200: LIMIT, 429: WORKERS * PER_WORKER - LIMIT })
      // Redis holds exactly the admitted requests: a rejected one writes nothing.
      const key = `${prefixes[algorithm]}${KEY}`
      if (algorithm === 'fixed-window') expect(await client.get(key)).to.equal(String(LIMIT))
      if (algorithm === 'sliding-log') expect(await client.zCard(key)).to.equal(LIMIT)
    })
  }

  it('sliding-window: 500 requests at once let at most 100 (and at least 90) through, the rest get 429', async function () {
    this.timeout(30_000)
    const statuses = await fireAtOnce(workers, '/sliding-window', PER_WORKER)
    expect(statuses).to.have.length(WORKERS * PER_WORKER)
    const counts = countStatuses(statuses)
    const admitted = counts[200] ?? 0
    expect(admitted, 'admitted').to.be.at.most(LIMIT).and.at.least(90)
    expect(counts).to.deep.equal({ 200: admitted, 429: WORKERS * PER_WORKER - admitted })
    // Every admitted request was counted once (in this window or, across an hour boundary, the previous one).
    expect(await slidingCounted(`${prefixes['sliding-window']}${KEY}${SW}`)).to.equal(admitted)
  })

  it('fixed-window, cost 3: 200 requests at once admit exactly 33 (99 units), the rest get 429', async function () {
    this.timeout(30_000)
    const statuses = await fireAtOnce(workers, '/cost-3', 200 / WORKERS)
    expect(countStatuses(statuses)).to.deep.equal({ 200: 33, 429: 167 })
    expect(await client.get(`${costPrefix}${KEY}`)).to.equal('99')
  })

  /** How many admitted requests a sliding-window key holds, in its window and the previous one. */
  async function slidingCounted(key: string): Promise<number> {
    const state = await slidingWindowState(client, key)
    return state ? state.count + state.previous : 0
  }

  /** How many admitted requests Redis holds in the key `key` (fixed-window, sliding-log). */
  async function countedIn(algorithm: 'fixed-window' | 'sliding-log', key: string): Promise<number> {
    return algorithm === 'fixed-window' ? Number(await client.get(key)) : await client.zCard(key)
  }

  describe('with the options that change a decision', () => {
    for (const algorithm of ['fixed-window', 'sliding-log', 'token-bucket'] as const) {
      it(`${algorithm}, limits [50 per 1h, 80 per 2h]: 500 requests at once admit exactly 50, counted in both windows`, async function () {
        this.timeout(30_000)
        const path = `/limits/${algorithm}`
        const statuses = await fireAtOnce(workers, path, PER_WORKER)
        expect(countStatuses(statuses)).to.deep.equal({
          200: WINDOWS_LIMIT,
          429: WORKERS * PER_WORKER - WINDOWS_LIMIT,
        })
        if (algorithm !== 'token-bucket') {
          // Counted atomically in every window, the refused in none.
          for (const suffix of WINDOW_SUFFIXES) {
            expect(await countedIn(algorithm, `${prefixOf(path)}${KEY}${suffix}`), `window ${suffix}`).to.equal(
              WINDOWS_LIMIT,
            )
          }
        }
      })
    }

    it('sliding-window, limits [50 per 1h, 80 per 2h]: 500 requests at once admit at most 50 (and at least 45)', async function () {
      this.timeout(30_000)
      const statuses = await fireAtOnce(workers, '/limits/sliding-window', PER_WORKER)
      const admitted = countStatuses(statuses)[200] ?? 0
      expect(admitted, 'admitted').to.be.at.most(WINDOWS_LIMIT).and.at.least(45)
      expect(countStatuses(statuses)).to.deep.equal({ 200: admitted, 429: WORKERS * PER_WORKER - admitted })
      // Counted atomically in every window, the refused in none.
      for (const suffix of WINDOW_SUFFIXES) {
        const key = `${prefixOf('/limits/sliding-window')}${KEY}${suffix}${SW}`
        expect(await slidingCounted(key), `window ${suffix}`).to.equal(admitted)
      }
    })

    it('sliding-window, blockDuration and localBlockCache: false: at most their limit (and at least 90%), once each', async function () {
      this.timeout(60_000)
      const blocked = await fireAtOnce(workers, '/block/sliding-window', PER_WORKER)
      const admittedBlocked = countStatuses(blocked)[200] ?? 0
      expect(admittedBlocked, 'admitted with blockDuration').to.be.at.most(BLOCK_LIMIT).and.at.least(45)
      expect(countStatuses(blocked)).to.deep.equal({
        200: admittedBlocked,
        429: WORKERS * PER_WORKER - admittedBlocked,
      })
      const blockKey = `${prefixOf('/block/sliding-window')}${KEY}`
      expect(await slidingCounted(blockKey + SW), 'counted with blockDuration').to.equal(admittedBlocked)
      expect(await client.pTTL(`${blockKey}:block`), 'block key PTTL (ms)').to.be.within(3_600_000 - 60_000, 3_600_000)

      const statuses = await fireAtOnce(workers, '/no-cache/sliding-window', PER_WORKER)
      const admitted = countStatuses(statuses)[200] ?? 0
      expect(admitted, 'admitted without the block cache').to.be.at.most(LIMIT).and.at.least(90)
      expect(countStatuses(statuses)).to.deep.equal({ 200: admitted, 429: WORKERS * PER_WORKER - admitted })
      expect(await slidingCounted(`${prefixOf('/no-cache/sliding-window')}${KEY}${SW}`), 'counted').to.equal(admitted)
    })

    for (const algorithm of ['fixed-window', 'sliding-log', 'token-bucket'] as const) {
      it(`${algorithm}, blockDuration '1h' and limit 50: 500 requests at once admit exactly 50, the client is then blocked`, async function () {
        this.timeout(30_000)
        const path = `/block/${algorithm}`
        const statuses = await fireAtOnce(workers, path, PER_WORKER)
        expect(countStatuses(statuses)).to.deep.equal({ 200: BLOCK_LIMIT, 429: WORKERS * PER_WORKER - BLOCK_LIMIT })
        const key = `${prefixOf(path)}${KEY}`
        if (algorithm !== 'token-bucket') expect(await countedIn(algorithm, key), 'counted').to.equal(BLOCK_LIMIT)
        const blockTtl = await client.pTTL(`${key}:block`)
        expect(blockTtl, 'block key PTTL (ms)').to.be.within(3_600_000 - 60_000, 3_600_000)
      })
    }

    for (const algorithm of ['fixed-window', 'sliding-log', 'token-bucket'] as const) {
      it(`${algorithm}, localBlockCache: false: 500 requests at once let exactly ${LIMIT} through`, async function () {
        this.timeout(30_000)
        const path = `/no-cache/${algorithm}`
        const statuses = await fireAtOnce(workers, path, PER_WORKER)
        expect(countStatuses(statuses)).to.deep.equal({ 200: LIMIT, 429: WORKERS * PER_WORKER - LIMIT })
        if (algorithm !== 'token-bucket')
          expect(await countedIn(algorithm, `${prefixOf(path)}${KEY}`), 'counted').to.equal(LIMIT)
      })
    }

    it(`fixed-window, localBlockCache on: exactly ${LIMIT} of 500 at once; then each worker refuses on its own, without Redis`, async function () {
      this.timeout(30_000)
      const path = '/cache/fixed-window'
      const key = `${prefixOf(path)}${KEY}`
      const first = await fireAtOnce(workers, path, PER_WORKER)
      expect(countStatuses(first)).to.deep.equal({ 200: LIMIT, 429: WORKERS * PER_WORKER - LIMIT })
      expect(await client.get(key)).to.equal(String(LIMIT))
      // Every worker was refused by Redis at least 25 times (at most 100 of its 125 were admitted),
      // so each remembers the client as over its limit until the window ends. Forgotten in Redis
      // behind their backs, it is still refused by every worker, and no decision reaches Redis.
      await client.del(key)
      const second = await fireAtOnce(workers, path, PER_WORKER)
      expect(countStatuses(second)).to.deep.equal({ 429: WORKERS * PER_WORKER })
      expect(await client.exists(key), 'key written by the second burst').to.equal(0)
    })

    it(`sliding-window, mode 'shadow': all 500 at once get 200, at most ${LIMIT} (and at least 90) are counted`, async function () {
      this.timeout(30_000)
      const statuses = await fireAtOnce(workers, '/shadow/sliding-window', PER_WORKER)
      expect(countStatuses(statuses)).to.deep.equal({ 200: WORKERS * PER_WORKER })
      const counted = await slidingCounted(`${prefixOf('/shadow/sliding-window')}${KEY}${SW}`)
      expect(counted, 'counted').to.be.at.most(LIMIT).and.at.least(90)
    })

    for (const algorithm of ['fixed-window', 'sliding-log'] as const) {
      it(`${algorithm}, mode 'shadow': all 500 at once get 200, exactly ${LIMIT} are counted`, async function () {
        this.timeout(30_000)
        const path = `/shadow/${algorithm}`
        const statuses = await fireAtOnce(workers, path, PER_WORKER)
        expect(countStatuses(statuses)).to.deep.equal({ 200: WORKERS * PER_WORKER })
        expect(await countedIn(algorithm, `${prefixOf(path)}${KEY}`), 'counted').to.equal(LIMIT)
      })
    }
  })
})
