/**
 * One server of the cache benchmark, run as a child process of src/cache.ts (IPC protocol in
 * src/serve.ts). Environment: BENCH_SCENARIO (one of CACHE_SCENARIOS), BENCH_PREFIX.
 */
import { Redis } from 'ioredis'
import {
  buildApp,
  CACHE_SCENARIOS,
  type CacheScenario,
  clientNameOf,
  isApicache,
  isKit,
  type ScenarioRedis,
} from './cache-scenarios.js'
import { REDIS_URL } from './redis-stats.js'
import { type Closable, connectRedis, serve } from './serve.js'

const scenario = process.env.BENCH_SCENARIO as CacheScenario
if (!CACHE_SCENARIOS.includes(scenario)) throw new Error(`unknown BENCH_SCENARIO ${scenario}`)
const prefix = process.env.BENCH_PREFIX ?? ''

const redis: ScenarioRedis = {}
let connection: Closable | undefined
let redisAddr: string | undefined
if (isKit(scenario)) {
  const { client, redisAddr: addr } = await connectRedis(scenario, clientNameOf(prefix))
  redis.node = client
  connection = client
  redisAddr = addr
} else if (isApicache(scenario)) {
  // apicache-plus takes an ioredis client (or node-redis v3's callback API); every key it
  // writes gets the run's prefix through keyPrefix.
  const io = new Redis(REDIS_URL, { keyPrefix: prefix, lazyConnect: true })
  io.on('error', (error: unknown) => console.error(`[${scenario}] redis:`, error))
  await io.connect()
  redis.io = io
  connection = { close: () => io.quit() }
  redisAddr = /(?:^| )addr=(\S+)/.exec(String(await io.client('INFO')))?.[1]
}

serve(buildApp(scenario, redis, prefix), connection, redisAddr)
