import type { RequestHandler } from 'express'
import { rateLimit as expressRateLimit } from 'express-rate-limit'
import { type Algorithm, type RedisClient, rateLimit } from 'express-redis-kit'
import { RedisStore } from 'rate-limit-redis'
import { RateLimiterRedis, RateLimiterRes } from 'rate-limiter-flexible'
import type { createClient } from 'redis'

/** Every scenario limits the same single client key, so each request hits one Redis key. */
export const CLIENT_KEY = 'bench-client'
const keyGenerator = () => CLIENT_KEY

/** Window of every limiter: long enough that nothing expires during a run. */
export const WINDOW_MS = 60 * 60 * 1000

/** The allowed-path group: limits never reached. */
export const ALLOWED_SCENARIOS = [
  'express',
  'erk-sliding-window',
  'erk-fixed-window',
  'erk-sliding-log',
  'erk-token-bucket',
  'erk-no-headers',
  'express-rate-limit',
  'rate-limiter-flexible',
] as const

/**
 * The blocked-client group: limit {@link BLOCKED_LIMIT} per window, so each server answers
 * its first request 200 and every later one 429. Plain Express (no limiter) is the ceiling.
 */
export const BLOCKED_SCENARIOS = [
  'express',
  'erk-blocked',
  'express-rate-limit-blocked',
  'rate-limiter-flexible-blocked',
  'rate-limiter-flexible-in-memory-blocked',
] as const

export type Scenario = (typeof ALLOWED_SCENARIOS)[number] | (typeof BLOCKED_SCENARIOS)[number]

/** Every scenario a server can run. */
export const SCENARIOS: readonly Scenario[] = [...new Set<Scenario>([...ALLOWED_SCENARIOS, ...BLOCKED_SCENARIOS])]

/** The limit of the blocked-client group: only the first request is admitted. */
export const BLOCKED_LIMIT = 1

export const LABELS: Record<Scenario, string> = {
  express: 'plain Express',
  'erk-sliding-window': "rateLimit 'sliding-window'",
  'erk-fixed-window': "rateLimit 'fixed-window'",
  'erk-sliding-log': "rateLimit 'sliding-log'",
  'erk-token-bucket': "rateLimit 'token-bucket'",
  'erk-no-headers': "rateLimit 'sliding-window', standardHeaders: false (no headers, as rate-limiter-flexible)",
  'express-rate-limit': 'express-rate-limit 8 + rate-limit-redis 6',
  'rate-limiter-flexible': 'rate-limiter-flexible 11 (RateLimiterRedis)',
  'erk-blocked': 'rateLimit (defaults)',
  'express-rate-limit-blocked': 'express-rate-limit 8 + rate-limit-redis 6',
  'rate-limiter-flexible-blocked': 'rate-limiter-flexible 11 (RateLimiterRedis)',
  'rate-limiter-flexible-in-memory-blocked': 'rate-limiter-flexible 11 (RateLimiterRedis, inMemoryBlockOnConsumed)',
}

/**
 * Limit under load: never reached in the allowed-path group. The sliding log stores one
 * sorted-set entry per admitted request, so it gets a limit that still is never reached in
 * a run (a few hundred thousand requests at most) but bounds the key's size. The
 * blocked-client group admits one request.
 */
export function defaultLimit(scenario: Scenario): number {
  if (isBlocked(scenario)) return BLOCKED_LIMIT
  return scenario === 'erk-sliding-log' ? 1_000_000 : 1_000_000_000
}

/** Whether the scenario is one of the blocked-client group's limiters (plain Express is not). */
export const isBlocked = (scenario: Scenario): boolean =>
  scenario !== 'express' && (BLOCKED_SCENARIOS as readonly Scenario[]).includes(scenario)

const ALGORITHM_OF: Partial<Record<Scenario, Algorithm>> = {
  'erk-sliding-window': 'sliding-window',
  'erk-fixed-window': 'fixed-window',
  'erk-sliding-log': 'sliding-log',
  'erk-token-bucket': 'token-bucket',
  'erk-no-headers': 'sliding-window',
}

/** The Redis key a scenario's limiter keeps for {@link CLIENT_KEY}, given the scenario's prefix. */
export function redisKeyOf(scenario: Scenario, prefix: string): string | undefined {
  switch (scenario) {
    case 'express':
      return undefined
    case 'express-rate-limit':
    case 'express-rate-limit-blocked':
      return `${prefix}${CLIENT_KEY}`
    case 'rate-limiter-flexible':
    case 'rate-limiter-flexible-blocked':
    case 'rate-limiter-flexible-in-memory-blocked':
      return `${prefix}:${CLIENT_KEY}`
    default:
      // sliding-window (the default algorithm, so also 'erk-blocked') keeps its window in `...:sw`
      return `${prefix}{${CLIENT_KEY}}${(ALGORITHM_OF[scenario] ?? 'sliding-window') === 'sliding-window' ? ':sw' : ''}`
  }
}

/** Whether the scenario's server needs a Redis client at all. */
export const usesRedis = (scenario: Scenario): boolean => scenario !== 'express'

/**
 * The middleware of a scenario, each with its package's defaults apart from the limit,
 * the window, the key and the prefix (so the response headers are each package's default
 * ones: draft-8 for express-redis-kit, draft-6 + legacy X-RateLimit-* for express-rate-limit).
 */
export function buildMiddleware(
  scenario: Scenario,
  client: ReturnType<typeof createClient> | undefined,
  prefix: string,
  limit: number,
): RequestHandler | undefined {
  if (scenario === 'express') return undefined
  if (!client) throw new Error(`${scenario} needs a Redis client`)

  const algorithm = ALGORITHM_OF[scenario]
  if (algorithm || scenario === 'erk-blocked') {
    // 'erk-blocked' keeps every default but the limit, window, key and prefix (its algorithm too).
    return rateLimit({
      client: client as unknown as RedisClient,
      ...(algorithm ? { algorithm } : {}),
      ...(scenario === 'erk-no-headers' ? { standardHeaders: false as const } : {}),
      limit,
      windowMs: WINDOW_MS,
      prefix,
      keyGenerator,
    })
  }

  if (scenario === 'express-rate-limit' || scenario === 'express-rate-limit-blocked') {
    return expressRateLimit({
      limit,
      windowMs: WINDOW_MS,
      keyGenerator,
      store: new RedisStore({
        prefix,
        sendCommand: (...args: string[]) => client.sendCommand(args) as Promise<never>,
      }),
    })
  }

  // rate-limiter-flexible has no Express middleware of its own: the usual few lines.
  const limiter = new RateLimiterRedis({
    storeClient: client,
    useRedisPackage: true,
    keyPrefix: prefix,
    points: limit,
    duration: WINDOW_MS / 1000,
    // Once a key has consumed this many points (= points: from the first admitted request on
    // at limit 1), rate-limiter-flexible remembers it as blocked in this process for the rest
    // of its window (msBeforeNext: inMemoryBlockDuration unset) and rejects it without Redis.
    ...(scenario === 'rate-limiter-flexible-in-memory-blocked' ? { inMemoryBlockOnConsumed: limit } : {}),
  })
  return (_req, res, next) => {
    limiter.consume(CLIENT_KEY).then(
      () => next(),
      (rejection: unknown) => {
        if (rejection instanceof RateLimiterRes) res.status(429).send('Too Many Requests')
        else next(rejection)
      },
    )
  }
}
