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

export const SCENARIOS = [
  'express',
  'erk-sliding-window',
  'erk-fixed-window',
  'erk-sliding-log',
  'erk-token-bucket',
  'express-rate-limit',
  'rate-limiter-flexible',
] as const
export type Scenario = (typeof SCENARIOS)[number]

export const LABELS: Record<Scenario, string> = {
  express: 'plain Express',
  'erk-sliding-window': "rateLimit 'sliding-window'",
  'erk-fixed-window': "rateLimit 'fixed-window'",
  'erk-sliding-log': "rateLimit 'sliding-log'",
  'erk-token-bucket': "rateLimit 'token-bucket'",
  'express-rate-limit': 'express-rate-limit 8 + rate-limit-redis 6',
  'rate-limiter-flexible': 'rate-limiter-flexible 11 (RateLimiterRedis)',
}

/**
 * Limit under load: never reached. The sliding log stores one sorted-set entry per
 * admitted request, so it gets a limit that still is never reached in a run (a few
 * hundred thousand requests at most) but bounds the key's size.
 */
export function defaultLimit(scenario: Scenario): number {
  return scenario === 'erk-sliding-log' ? 1_000_000 : 1_000_000_000
}

const ALGORITHM_OF: Partial<Record<Scenario, Algorithm>> = {
  'erk-sliding-window': 'sliding-window',
  'erk-fixed-window': 'fixed-window',
  'erk-sliding-log': 'sliding-log',
  'erk-token-bucket': 'token-bucket',
}

/** The Redis key a scenario's limiter keeps for {@link CLIENT_KEY}, given the scenario's prefix. */
export function redisKeyOf(scenario: Scenario, prefix: string): string | undefined {
  if (ALGORITHM_OF[scenario]) return `${prefix}{${CLIENT_KEY}}`
  if (scenario === 'express-rate-limit') return `${prefix}${CLIENT_KEY}`
  if (scenario === 'rate-limiter-flexible') return `${prefix}:${CLIENT_KEY}`
  return undefined
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
  if (algorithm) {
    return rateLimit({
      client: client as unknown as RedisClient,
      algorithm,
      limit,
      windowMs: WINDOW_MS,
      prefix,
      keyGenerator,
    })
  }

  if (scenario === 'express-rate-limit') {
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
