import type { NextFunction, Request, RequestHandler, Response } from 'express'
import { ArgumentError, describe, RedisKitError } from '../shared/errors.js'
import { throttledLogger } from '../shared/logger.js'
import { encodeKeyPart, type RedisClient, runCommand } from '../shared/redis.js'
import {
  type HeaderValues,
  setDraft6Headers,
  setDraft7Headers,
  setDraft8Headers,
  setLegacyHeaders,
  setRetryAfterHeader,
} from './headers.js'
import {
  parseRateLimitOptions,
  policyName,
  type RateLimitConfig,
  type RateLimitInfo,
  type RateLimitOptions,
} from './options.js'
import { SCRIPTS } from './scripts.js'

export type { StandardHeaders } from './headers.js'
export { ipKeyGenerator } from './ip-key.js'
export type { RateLimitInfo, RateLimitOptions, ValueOrFunction } from './options.js'
export type { Algorithm } from './scripts.js'

/** What {@link RateLimitMiddleware.getKey} reports for a client key. */
export interface RateLimitState {
  /** Quota used in the current window. */
  used: number
  /** Quota left, when the limit is known (a number option, or the `limit` argument). */
  remaining: number | undefined
  /** When the quota resets. */
  resetTime: Date
}

/** The middleware returned by {@link rateLimit}, with helpers to inspect and reset a client. */
export interface RateLimitMiddleware extends RequestHandler {
  /** Forgets everything counted for the client `key` (a value `keyGenerator` returns). */
  resetKey(key: string): Promise<void>
  /**
   * Reads the client's state without counting a request; `undefined` when nothing is counted.
   * `limit` is needed when the `limit` option is a function (for `'token-bucket'` it is required then).
   */
  getKey(key: string, limit?: number): Promise<RateLimitState | undefined>
}

/** Seconds a client is told to wait when `onRedisError: 'block'` refuses it. */
const REDIS_ERROR_RETRY_AFTER_SECONDS = 5

const prefixesByClient = new WeakMap<RedisClient, Set<string>>()

/**
 * Rate-limits requests with the decision made atomically in Redis: one `EVALSHA`
 * per request, Redis's clock, exact under concurrency across any number of app
 * instances, on a single Redis or a Redis Cluster.
 *
 * @example
 * ```ts
 * import { createClient } from 'redis'
 * import { rateLimit } from 'express-redis-kit'
 *
 * const client = await createClient({ url: 'redis://127.0.0.1:6379' }).connect()
 * app.use(rateLimit({ client, limit: 100, windowMs: '1m' }))
 * ```
 * @throws {TypeError} (code `ERK_INVALID_OPTION`) naming the first invalid option.
 */
export function rateLimit(options: RateLimitOptions): RateLimitMiddleware {
  const config = parseRateLimitOptions(options)
  const { client, windowMs, algorithm, prefix, timeoutMs, logger } = config
  const scripts = SCRIPTS[algorithm]
  const logRedisError = throttledLogger(logger, 'error')
  warnOnSharedPrefix(config)

  const redisKey = (key: string): string => `${prefix}{${encodeKeyPart(key)}}`
  const refunds = config.skipSuccessfulRequests || config.skipFailedRequests
  const scriptArgs = (limit: number, cost: number, consume: boolean): string[] => [
    String(limit),
    String(windowMs),
    String(cost),
    consume ? '1' : '0',
    String(config.burst ?? limit),
    refunds ? '1' : '0',
  ]
  /**
   * How far Redis's clock is ahead of this host's (ms), as last seen in a decision's reply:
   * each decision carries its deadline on Redis's clock, so that one that reaches Redis after
   * the request was answered without it counts nothing (see scripts.ts).
   */
  let clockOffset = 0
  const deadline = (): string => String(Date.now() + clockOffset + timeoutMs + DEADLINE_GRACE_MS)
  // With a fixed limit and cost (the common case) the script's arguments never change.
  const fixedArgs =
    typeof config.limit === 'number' && typeof config.cost === 'number'
      ? scriptArgs(config.limit, config.cost, true)
      : undefined
  const fixedPolicyName = typeof config.limit === 'number' ? policyName(config, config.limit) : undefined

  async function refund(key: string, cost: number, limit: number, token: string): Promise<void> {
    const args = [String(cost)]
    if (algorithm === 'sliding-window') args.push(String(windowMs), token)
    else if (algorithm === 'token-bucket') args.push(String((windowMs * 1000) / limit))
    else if (algorithm === 'fixed-window') args.push('', token)
    else args.push('', ...token.split(','))
    try {
      await scripts.refund.run(client, [redisKey(key)], args, timeoutMs)
    } catch (error) {
      logRedisError('express-redis-kit rateLimit: could not give a skipped request back', error)
    }
  }

  function onRedisFailure(error: unknown, res: Response, next: NextFunction): void {
    logRedisError(
      `express-redis-kit rateLimit: Redis unavailable, ${config.onRedisError === 'allow' ? 'allowing' : 'blocking'} requests`,
      error,
    )
    if (config.onRedisError === 'allow') {
      next()
      return
    }
    res.setHeader('Retry-After', String(REDIS_ERROR_RETRY_AFTER_SECONDS))
    // To the app's error handler (JSON APIs answer in their own shape); Express's default one sends 503 with the message.
    next(
      new RedisKitError(
        'ERK_REDIS_UNAVAILABLE',
        'Service temporarily unavailable: the rate limiter cannot reach its store.',
        { cause: error, status: 503 },
      ),
    )
  }

  const middleware = async function rateLimitMiddleware(req: Request, res: Response, next: NextFunction) {
    // User callbacks are awaited only when they return a promise: most are synchronous.
    let key: string
    let limit: number
    let cost: number
    try {
      if (config.skip && (await config.skip(req, res))) return next()
      const keyResult = callback('keyGenerator', config.keyGenerator, req, res, isNonEmptyString, 'a non-empty string')
      key = typeof keyResult === 'string' ? keyResult : await keyResult
      if (typeof config.limit === 'number') limit = config.limit
      else {
        const result = callback('limit', config.limit, req, res, isCount, 'a non-negative integer')
        limit = typeof result === 'number' ? result : await result
      }
      if (typeof config.cost === 'number') cost = config.cost
      else {
        const result = callback('cost', config.cost, req, res, isCount, 'a non-negative integer')
        cost = typeof result === 'number' ? result : await result
      }
    } catch (error) {
      return next(error)
    }

    let allowed: boolean
    let used: number
    let remaining: number
    let resetMs: number
    let refundToken = ''
    if (limit === 0) {
      // Nothing can ever pass: no need to ask Redis.
      ;[allowed, used, remaining, resetMs] = [false, 0, 0, windowMs]
    } else {
      let values: [number, number, number, number, string, number]
      try {
        const args = [...(fixedArgs ?? scriptArgs(limit, cost, true)), deadline()]
        values = (await scripts.decide.run(client, [redisKey(key)], args, timeoutMs)) as typeof values
        if (values[0] === -1) throw new Error('the decision reached Redis after its deadline; it counted nothing')
      } catch (error) {
        return onRedisFailure(error, res, next)
      }
      clockOffset = Number(values[5]) - Date.now()
      ;[allowed, used, remaining, resetMs] = [values[0] === 1, values[1], values[2], values[3]]
      refundToken = String(values[4] ?? '')
    }

    const now = Date.now()
    const info: RateLimitInfo = { limit, used, remaining, resetTime: new Date(now + resetMs), key }
    if (config.requestPropertyName === 'rateLimit') req.rateLimit = info
    else (req as unknown as Record<string, unknown>)[config.requestPropertyName] = info

    try {
      if (!res.headersSent) {
        let name = fixedPolicyName ?? policyName(config, limit)
        if (config.standardHeaders === 'draft-8' && typeof config.identifier === 'function') {
          const result = callback('identifier', config.identifier, req, res, isPolicyName, POLICY_NAME)
          name = typeof result === 'string' ? result : await result
        }
        setHeaders(res, { limit, remaining, resetMs, windowMs }, key, name, now, allowed)
      }
      if (!allowed) return await reject(req, res, next, info)
    } catch (error) {
      return next(error)
    }

    if ((config.skipSuccessfulRequests || config.skipFailedRequests) && limit > 0 && cost > 0) {
      let given = false
      const giveBack = (succeeded: boolean): void => {
        if (given) return
        if (succeeded ? config.skipSuccessfulRequests : config.skipFailedRequests) {
          given = true
          void refund(key, cost, limit, refundToken)
        }
      }
      res.once('finish', () => {
        Promise.resolve(config.requestWasSuccessful(req, res)).then(giveBack, (error: unknown) =>
          logger.error('express-redis-kit rateLimit: requestWasSuccessful threw', error),
        )
      })
      // The client went away before the response was complete: a failed request.
      res.once('close', () => {
        if (!res.writableFinished) giveBack(false)
      })
    }
    next()
  } as RateLimitMiddleware

  function setHeaders(res: Response, values: HeaderValues, key: string, name: string, now: number, allowed: boolean) {
    if (config.legacyHeaders) setLegacyHeaders(res, values, now)
    if (config.standardHeaders === 'draft-8') setDraft8Headers(res, values, name, key)
    else if (config.standardHeaders === 'draft-7') setDraft7Headers(res, values)
    else if (config.standardHeaders === 'draft-6') setDraft6Headers(res, values)
    if (!allowed && (config.legacyHeaders || config.standardHeaders)) setRetryAfterHeader(res, values.resetMs)
  }

  async function reject(req: Request, res: Response, next: NextFunction, info: RateLimitInfo) {
    if (config.handler) return void (await config.handler(req, res, next, info))
    res.status(config.statusCode)
    const body = typeof config.message === 'function' ? await config.message(req, res) : config.message
    if (!res.writableEnded) res.send(body)
  }

  middleware.resetKey = async (key: string) => {
    check('key', key, isNonEmptyString, 'a non-empty string', 'resetKey')
    await runCommand(client, redisKey(key), (redis) => redis.del(redisKey(key)), timeoutMs)
  }

  middleware.getKey = async (key: string, limit?: number) => {
    check('key', key, isNonEmptyString, 'a non-empty string', 'getKey')
    const known = limit ?? (typeof config.limit === 'number' ? config.limit : undefined)
    if (known === undefined && algorithm === 'token-bucket') {
      throw new ArgumentError(
        'getKey',
        'limit',
        "a number when the limit option is a function and the algorithm is 'token-bucket'",
        limit,
      )
    }
    const reply = (await scripts.decide.run(
      client,
      [redisKey(key)],
      scriptArgs(known || Number.MAX_SAFE_INTEGER, 0, false),
      timeoutMs,
    )) as [number, number, number, number] | null
    if (!reply) return undefined
    return {
      used: reply[1],
      remaining: known === undefined ? undefined : reply[2],
      resetTime: new Date(Date.now() + reply[3]),
    }
  }

  return middleware
}

function warnOnSharedPrefix(config: RateLimitConfig): void {
  let prefixes = prefixesByClient.get(config.client)
  if (!prefixes) {
    prefixes = new Set()
    prefixesByClient.set(config.client, prefixes)
  }
  if (prefixes.has(config.prefix)) {
    config.logger.warn(
      `express-redis-kit rateLimit: another limiter on this Redis client already uses the prefix '${config.prefix}'; ` +
        'limiters sharing a prefix count the same requests together. Give each limiter its own `prefix`.',
    )
  }
  prefixes.add(config.prefix)
}

/** Added to a decision's deadline: the clock offset is measured over a round trip, not exactly. */
const DEADLINE_GRACE_MS = 50

const isNonEmptyString = (value: unknown): value is string => typeof value === 'string' && value.length > 0
const POLICY_NAME = 'a non-empty string without quotes, backslashes or control characters'
// biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what it rejects.
const isPolicyName = (value: unknown): value is string => isNonEmptyString(value) && !/["\\\x00-\x1f\x7f]/.test(value)
const isCount = (value: unknown): value is number => Number.isSafeInteger(value) && (value as number) >= 0

function check<T>(
  name: string,
  value: unknown,
  valid: (value: unknown) => value is T,
  expected: string,
  method: string,
): T {
  if (!valid(value)) throw new ArgumentError(method, name, expected, value)
  return value
}

/**
 * Calls a user callback and validates its result (awaiting it only if it is a promise),
 * turning a throw or a bad value into an error that names the option (passed to
 * `next(err)`, answered with 500).
 */
function callback<T>(
  name: string,
  fn: (req: Request, res: Response) => unknown,
  req: Request,
  res: Response,
  valid: (value: unknown) => value is T,
  expected: string,
): T | Promise<T> {
  const threw = (cause: unknown): never => {
    const reason = cause instanceof Error ? cause.message : describe(cause)
    throw new RedisKitError(
      'ERK_INVALID_CALLBACK_RESULT',
      `express-redis-kit rateLimit: the ${name} option threw: ${reason}`,
      {
        cause,
      },
    )
  }
  const validate = (value: unknown): T => {
    if (valid(value)) return value
    throw new RedisKitError(
      'ERK_INVALID_CALLBACK_RESULT',
      `express-redis-kit rateLimit: the ${name} option must return ${expected}; it returned ${describe(value)}`,
    )
  }
  let result: unknown
  try {
    result = fn(req, res)
  } catch (cause) {
    return threw(cause)
  }
  return result instanceof Promise ? result.then(validate, threw) : validate(result)
}

declare global {
  namespace Express {
    interface Request {
      /** Set by express-redis-kit's `rateLimit` (under its `requestPropertyName`, `rateLimit` by default). */
      rateLimit?: RateLimitInfo
    }
  }
}
