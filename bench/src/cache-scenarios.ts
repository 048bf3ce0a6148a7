import { setTimeout as sleep } from 'node:timers/promises'
import apicache from 'apicache-plus'
import express, { type Express, type RequestHandler, type Response } from 'express'
import { cacheResponse } from 'express-redis-kit'
import type { Redis } from 'ioredis'
import type { ServerRedis } from './serve.js'

export const CACHE_SCENARIOS = [
  'no-cache',
  'erk-cache',
  'erk-cache-local',
  'apicache-plus',
  'apicache-plus-br',
  'express',
] as const
export type CacheScenario = (typeof CACHE_SCENARIOS)[number]

/** BENCH_FENCE_MS: the local cache's fenceMs in erk-cache-local (default: the package's, 20). */
export const LOCAL_FENCE_MS = process.env.BENCH_FENCE_MS ? Number(process.env.BENCH_FENCE_MS) : undefined

export const CACHE_LABELS: Record<CacheScenario, string> = {
  'no-cache': 'no cache (20 ms handler every time)',
  'erk-cache': 'express-redis-kit cacheResponse, warm',
  'erk-cache-local': `express-redis-kit cacheResponse with localCache${LOCAL_FENCE_MS ? ` (fenceMs ${LOCAL_FENCE_MS})` : ''}, warm`,
  'apicache-plus': 'apicache-plus 2.3 + ioredis 5, warm',
  'apicache-plus-br': 'apicache-plus 2.3 + ioredis 5, warm, client accepts br',
  express: 'plain Express, no delay (ceiling)',
}

/** The scenarios that answer from a Redis cache (each with its own connection). */
export const CACHED_SCENARIOS: readonly CacheScenario[] = [
  'erk-cache',
  'erk-cache-local',
  'apicache-plus',
  'apicache-plus-br',
]
export const isCached = (scenario: CacheScenario): boolean => CACHED_SCENARIOS.includes(scenario)
export const isKit = (scenario: CacheScenario): boolean => scenario === 'erk-cache' || scenario === 'erk-cache-local'
export const isApicache = (scenario: CacheScenario): boolean =>
  scenario === 'apicache-plus' || scenario === 'apicache-plus-br'

/**
 * The request headers of a scenario, the same for the checks and the load. apicache-plus
 * stores every compressible body brotli-compressed and decompresses it on each hit for a
 * client that does not accept `br`: so it runs twice, with a client that accepts no
 * compression (like autocannon's and curl's defaults, and every other scenario) and with
 * one that accepts br (like browsers and fetch), which gets the stored bytes as they are.
 * No other scenario compresses anything.
 */
export function requestHeaders(scenario: CacheScenario): Record<string, string> {
  return { 'accept-encoding': scenario === 'apicache-plus-br' ? 'gzip, deflate, br' : 'identity' }
}

/** The one route measured. */
export const PATH = '/items?page=1'
/** The server's counters (not cached, not counted). */
export const STATS_PATH = '/__bench/stats'
/** How long the handler takes, except in plain Express. */
export const HANDLER_MS = 20

/** A page of a product list, about 2 kB of JSON. */
const BODY = {
  page: 1,
  pageSize: 16,
  total: 1000,
  items: Array.from({ length: 16 }, (_, i) => ({
    id: i + 1,
    sku: `SKU-${String(i + 1).padStart(6, '0')}`,
    name: `Item number ${i + 1}`,
    price: ((i + 1) * 125) / 100,
    inStock: i % 3 !== 0,
    updatedAt: '2026-01-01T00:00:00.000Z',
  })),
}
/** The body as `res.json` sends it. */
export const BODY_TEXT = JSON.stringify(BODY)

/** What the server reports on {@link STATS_PATH}. */
export interface ServerStats {
  /** Times the route's handler ran. */
  handlerRuns: number
  /** Finished responses of the route by how the cache answered: 'HIT', 'MISS', ... ('origin' without a cache). */
  outcomes: Record<string, number>
}

/**
 * How a response was answered, from its headers: express-redis-kit's `X-Cache`; apicache-plus
 * marks its replays with `apicache-store` (outside NODE_ENV=production) and nothing else.
 */
export function outcomeOf(scenario: CacheScenario, header: (name: string) => unknown): string {
  if (isKit(scenario)) return String(header('x-cache') ?? 'none')
  if (isApicache(scenario)) return header('apicache-store') === undefined ? 'MISS' : 'HIT'
  return 'origin'
}

/**
 * The name (CLIENT SETNAME) of the server's node-redis connection: the local cache's tracking
 * connection is a duplicate of it and carries the same name, so the benchmark finds it in
 * CLIENT LIST (the server's own connection being `redisAddr`).
 */
export const clientNameOf = (prefix: string): string => `bench-${prefix.replace(/[^\w:.-]/g, '_')}`

/** The Redis connection of a scenario's server: node-redis 6 for express-redis-kit, ioredis 5 for apicache-plus. */
export interface ScenarioRedis {
  node?: ServerRedis
  io?: Redis
}

/**
 * The app of a scenario: `GET /items` behind the scenario's cache (each with its package's
 * defaults apart from the lifetime and the prefix), its handler waiting {@link HANDLER_MS}
 * then answering {@link BODY_TEXT} with `res.json` (no wait in plain Express). Every
 * scenario counts the handler's runs and, on `finish`, each response's outcome.
 */
export function buildApp(scenario: CacheScenario, redis: ScenarioRedis, prefix: string): Express {
  const stats: ServerStats = { handlerRuns: 0, outcomes: {} }
  const count: RequestHandler = (_req, res, next) => {
    res.once('finish', () => {
      const outcome = outcomeOf(scenario, (name) => res.getHeader(name))
      stats.outcomes[outcome] = (stats.outcomes[outcome] ?? 0) + 1
    })
    next()
  }
  const delay = scenario === 'express' ? 0 : HANDLER_MS
  const handler = async (_req: unknown, res: Response) => {
    stats.handlerRuns++
    if (delay) await sleep(delay)
    res.json(BODY)
  }

  const app = express()
  app.get(STATS_PATH, (_req, res) => {
    res.json(stats)
  })
  const cache = cacheOf(scenario, redis, prefix)
  if (cache) app.get('/items', count, cache, handler)
  else app.get('/items', count, handler)
  return app
}

function cacheOf(scenario: CacheScenario, redis: ScenarioRedis, prefix: string): RequestHandler | undefined {
  if (isKit(scenario)) {
    if (!redis.node) throw new Error(`${scenario} needs a node-redis client`)
    // localCache: true is its defaults (64 MiB, fenceMs 20): fresh hits from memory, no Redis command.
    const localCache = scenario === 'erk-cache-local' && (LOCAL_FENCE_MS ? { fenceMs: LOCAL_FENCE_MS } : true)
    return cacheResponse({ client: redis.node, ttl: '1h', prefix, localCache })
  }
  if (isApicache(scenario)) {
    // Its keys get the prefix from ioredis's keyPrefix (set by cache-server.ts), which
    // apicache-plus also reads for its own SCANs.
    if (!redis.io) throw new Error(`${scenario} needs an ioredis client`)
    if (redis.io.options.keyPrefix !== prefix) throw new Error(`${scenario}: ioredis keyPrefix must be ${prefix}`)
    return apicache.newInstance({ redisClient: redis.io }).middleware('1 hour')
  }
  return undefined
}
