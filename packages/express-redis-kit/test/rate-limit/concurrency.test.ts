import { expect } from 'chai'
import type { Algorithm, Duration } from '../../src/index.js'
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

const limiters: WorkerLimiter[] = [
  ...ALGORITHMS.map((algorithm) => ({
    path: `/${algorithm}`,
    algorithm,
    prefix: prefixes[algorithm]!,
    limit: LIMIT,
    windowMs: WINDOW,
  })),
  { path: '/cost-3', algorithm: 'fixed-window', prefix: costPrefix, limit: LIMIT, windowMs: WINDOW, cost: 3 },
]

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
      await Promise.all([...Object.values(prefixes), costPrefix].map((prefix) => client.del(`${prefix}${KEY}`)))
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
    const [current, previous] = (await client.hmGet(`${prefixes['sliding-window']}${KEY}`, ['c', 'p'])) as (
      | string
      | null
    )[]
    expect(Number(current ?? 0) + Number(previous ?? 0)).to.equal(admitted)
  })

  it('fixed-window, cost 3: 200 requests at once admit exactly 33 (99 units), the rest get 429', async function () {
    this.timeout(30_000)
    const statuses = await fireAtOnce(workers, '/cost-3', 200 / WORKERS)
    expect(countStatuses(statuses)).to.deep.equal({ 200: 33, 429: 167 })
    expect(await client.get(`${costPrefix}${KEY}`)).to.equal('99')
  })
})
