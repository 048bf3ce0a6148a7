import type { NextFunction, Request, RequestHandler, Response } from 'express'
import { RESP_TYPES } from 'redis'
import { type RateLimitEvent, rateLimitChannel } from '../shared/diagnostics.js'
import { ArgumentError, describe, RedisKitError } from '../shared/errors.js'
import { throttledLogger } from '../shared/logger.js'
import { encodeKeyPart, type RedisClient, runCommand } from '../shared/redis.js'
import { BlockCache } from './block-cache.js'
import {
  Draft8Policy,
  type HeaderValues,
  setDraft6Headers,
  setDraft7Headers,
  setDraft8Headers,
  setLegacyHeaders,
  setRetryAfterHeader,
} from './headers.js'
import { type Decision, LocalLimiter, slidingWindowEstimate, type Window, type WindowResult, waitOf } from './local.js'
import { parseRateLimitOptions, policyName, type RateLimitInfo, type RateLimitOptions } from './options.js'
import { SCRIPTS, SLIDING_WINDOW_ONE_SCRIPT, WINDOW_KEY_SUFFIX } from './scripts.js'
import { SetupChecks } from './validations.js'

export type { StandardHeaders } from './headers.js'
export { ipKeyGenerator } from './ip-key.js'
export type {
  RateLimitHandlerInfo,
  RateLimitInfo,
  RateLimitOptions,
  RateLimitValidations,
  RateLimitWindow,
  ValueOrFunction,
} from './options.js'
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

/** The Redis keys of a client, all in one slot: one per window and its block key, each `tag` + a suffix. */
interface ClientKeys {
  tag: string
  windows: string[]
  block: string
}

/** A client's keys in the decision scripts' order: its windows, then its block key. */
const allKeys = (keys: ClientKeys): string[] => [...keys.windows, keys.block]

/** Traced name of resetKey's command (see shared/diagnostics.ts). */
const RESET_CALL = { operation: 'rateLimit.reset', command: 'DEL' }

/** Seconds a client is told to wait when `onRedisError: 'block'` refuses it. */
const REDIS_ERROR_RETRY_AFTER_SECONDS = 5

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
  const checks = new SetupChecks(config)

  const blocks = config.localBlockCache === false ? undefined : new BlockCache(config.localBlockCache)
  const local = config.onRedisError === 'local' ? new LocalLimiter(algorithm, LOCAL_MAX_KEYS) : undefined
  /** 'local' mode: until when (monotonic ms) Redis is not asked, after it failed. */
  let redisRetryAt = 0

  /** What ends each window key's name after the client's `{<identifier>}` (see scripts.ts). */
  const windowSuffixes = (algorithmSuffix: string): string[] =>
    config.limits ? config.limits.map((window) => `:${window.windowMs}${algorithmSuffix}`) : [algorithmSuffix]
  const suffixes = windowSuffixes(WINDOW_KEY_SUFFIX[algorithm])
  /** The window keys an earlier version wrote in another format (sliding-window's hashes), which resetKey deletes too. */
  const earlierSuffixes = WINDOW_KEY_SUFFIX[algorithm] ? windowSuffixes('') : []
  /** A client's Redis keys (see {@link ClientKeys}). */
  const keysOf = (key: string): ClientKeys => {
    const tag = `${prefix}{${encodeKeyPart(key)}}`
    const windows = suffixes.length === 1 ? [tag + suffixes[0]] : suffixes.map((suffix) => tag + suffix)
    return { tag, windows, block: `${tag}:block` }
  }
  // With a fixed limit (the common case) the windows never change.
  const fixedWindows =
    config.limits ?? (typeof config.limit === 'number' ? [{ limit: config.limit, windowMs }] : undefined)
  const windowsOf = (limit: number): Window[] => fixedWindows ?? [{ limit, windowMs }]
  const refunds = config.skipSuccessfulRequests || config.skipFailedRequests
  const scriptArgs = (windows: Window[], cost: number, consume: boolean, deadline: string): string[] => [
    String(cost),
    consume ? '1' : '0',
    config.burst === undefined ? '' : String(config.burst),
    refunds ? '1' : '0',
    deadline,
    String(config.blockMs),
    ...windows.flatMap((window) => [String(window.limit), String(window.windowMs)]),
  ]
  // With a fixed limit and cost (the common case) a decision's arguments differ only by their deadline.
  const DEADLINE_ARG = 4
  const fixedArgs =
    fixedWindows && typeof config.cost === 'number' ? scriptArgs(fixedWindows, config.cost, true, '') : undefined
  const decisionArgs = (windows: Window[], cost: number): string[] => {
    const args = fixedArgs ? fixedArgs.slice() : scriptArgs(windows, cost, true, '')
    args[DEADLINE_ARG] = deadline()
    return args
  }
  /**
   * How far Redis's clock is ahead of this host's (ms), as last seen in a decision's reply:
   * each decision carries its deadline on Redis's clock, so that one that reaches Redis after
   * the request was answered without it counts nothing (see scripts.ts).
   */
  let clockOffset = 0
  const deadlineMs = (): number => Date.now() + clockOffset + timeoutMs + DEADLINE_GRACE_MS
  const deadline = (): string => String(deadlineMs())
  /**
   * sliding-window with one window and no blockDuration decides with its own script (scripts.ts,
   * SLIDING_WINDOW_ONE), whose argument and reply are binary: through a client that answers
   * with Buffers.
   */
  const oneWindowClient =
    algorithm === 'sliding-window' && !config.limits && config.blockMs === 0 ? binaryReplies(client) : undefined
  const policyNames = (limit: number): string[] =>
    config.limits ? config.limits.map((window) => window.identifier) : [policyName(config, limit)]
  const fixedPolicyNames = typeof config.limit === 'number' ? policyNames(config.limit) : undefined
  /** A string `message`, encoded once (see sendMessage). */
  const messageBytes = typeof config.message === 'string' ? Buffer.from(config.message) : undefined
  /** The draft-8 headers of each window, when neither its name nor its quota change from request to request. */
  const fixedDraft8 =
    config.standardHeaders === 'draft-8' && fixedWindows && fixedPolicyNames && typeof config.identifier !== 'function'
      ? fixedWindows.map((window, i) => new Draft8Policy(fixedPolicyNames[i]!, window.limit, window.windowMs))
      : undefined

  async function refund(keys: string[], windows: Window[], cost: number, decision: Decision): Promise<void> {
    await Promise.all(
      decision.windows.map(async ({ token }, i) => {
        const window = windows[i]!
        const args = [String(cost)]
        if (algorithm === 'sliding-window') args.push(String(window.windowMs), token)
        else if (algorithm === 'token-bucket') args.push(String((window.windowMs * 1000) / window.limit))
        else if (algorithm === 'fixed-window') args.push('', token)
        else args.push('', ...token.split(','))
        try {
          await scripts.refund.run(client, [keys[i]!], args, timeoutMs)
        } catch (error) {
          logRedisError('express-redis-kit rateLimit: could not give a skipped request back', error)
        }
      }),
    )
  }

  /** Asks Redis; the error when it cannot answer (the caller applies onRedisError). */
  function decideInRedis(keys: ClientKeys, windows: Window[], cost: number): Promise<Decision | Error> {
    if (oneWindowClient) {
      const window = windows[0]!
      const args = Buffer.allocUnsafe(32)
      args.writeDoubleLE(window.limit, 0)
      args.writeDoubleLE(window.windowMs, 8)
      args.writeDoubleLE(cost, 16)
      args.writeDoubleLE(deadlineMs(), 24)
      return SLIDING_WINDOW_ONE_SCRIPT.run(oneWindowClient, keys.windows, [args], timeoutMs).then((reply) => {
        try {
          return parseOneWindow(reply as Buffer, window, cost)
        } catch (error) {
          return asError(error)
        }
      }, asError)
    }
    return scripts.decide.run(client, allKeys(keys), decisionArgs(windows, cost), timeoutMs).then((reply) => {
      try {
        return parseGeneral(reply as number[])
      } catch (error) {
        return asError(error)
      }
    }, asError)
  }

  /** The general decision scripts' reply (see scripts.ts). */
  function parseGeneral(reply: number[]): Decision | Error {
    // Learned first: a host clock behind Redis's would otherwise miss every deadline.
    clockOffset = Number(reply[1]) - Date.now()
    if (reply[0] === -1) return new Error(LATE_DECISION)
    return parseDecision(reply, 2)
  }

  /** SLIDING_WINDOW_ONE's reply (see scripts.ts) to a request of `cost` in `window`. */
  function parseOneWindow(reply: Buffer, { limit, windowMs }: Window, cost: number): Decision | Error {
    const now = reply.readDoubleLE(reply.length - 8)
    clockOffset = now - Date.now()
    if (reply.length === 8) return new Error(LATE_DECISION)
    const toEnd = windowMs - (now % windowMs)
    if (reply.length === 16) {
      const used = Math.ceil(reply.readDoubleLE(0) - 1e-9)
      // The refund token: the start of the fixed window that counted the request.
      const token = refunds ? String(now - (now % windowMs)) : ''
      return {
        allowed: true,
        blockMs: 0,
        windows: [{ used, remaining: Math.max(limit - used, 0), resetMs: toEnd, token, fits: true }],
      }
    }
    const { used, wait } = slidingWindowEstimate(
      limit,
      windowMs,
      cost,
      reply.readDoubleLE(0),
      reply.readDoubleLE(8),
      toEnd,
    )
    return {
      allowed: false,
      blockMs: 0,
      windows: [{ used, remaining: Math.max(limit - used, 0), resetMs: wait, token: '', fits: false }],
    }
  }

  /** Publishes a decision on the rate-limit channel (diagnostics); call only when it has subscribers. */
  function publishDecision(limit: number, window: number, event: Omit<RateLimitEvent, 'mode' | 'prefix' | 'policy'>) {
    const policy = (fixedPolicyNames ?? policyNames(limit))[window]!
    rateLimitChannel.publish({ ...event, mode: config.mode, prefix, policy } satisfies RateLimitEvent)
  }

  function onRedisFailure(key: string, limit: number, error: unknown, res: Response, next: NextFunction): void {
    if (rateLimitChannel.hasSubscribers) {
      publishDecision(limit, 0, {
        result: 'error',
        source: 'none',
        key,
        limit,
        remaining: limit,
        resetMs: 0,
        onRedisError: config.onRedisError === 'allow' ? 'allow' : 'block',
        error,
      })
    }
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
      if (checks.watchesRequests) checks.onRequest(req)
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

    const windows = windowsOf(limit)
    let decision: Decision
    /** The keys that counted the request, to give it back (skipSuccessfulRequests / skipFailedRequests). */
    let counted: string[] | undefined
    /** Whether they are this process's (onRedisError 'local'), not Redis's. */
    let countedLocally = false
    /** Who decided, and why Redis did not (diagnostics). */
    let source: RateLimitEvent['source'] = 'redis'
    let redisError: Error | undefined
    const known = blocks?.get(key, cost, limit)
    if (known) {
      // Redis said this client is over its limit until a moment still to come: no need to ask.
      decision = known
      source = 'local-block'
    } else if (limit === 0) {
      // Nothing can ever pass: no need to ask Redis.
      source = 'static'
      decision = {
        allowed: false,
        blockMs: 0,
        windows: [{ used: 0, remaining: 0, resetMs: windowMs, token: '', fits: false }],
      }
    } else {
      const keys = keysOf(key)
      if (cost > 0) checks.onCount(req, keys.block)
      const redisAnswer =
        local && performance.now() < redisRetryAt ? undefined : await decideInRedis(keys, windows, cost)
      if (redisAnswer instanceof Error || redisAnswer === undefined) {
        if (!local) return onRedisFailure(key, limit, redisAnswer, res, next)
        source = 'local'
        redisError = redisAnswer
        if (redisAnswer) {
          logRedisError('express-redis-kit rateLimit: Redis unavailable, limiting in this process', redisAnswer)
          redisRetryAt = performance.now() + LOCAL_RETRY_MS
        }
        decision = local.decide(keys.windows, keys.block, windows, cost, config.burst, config.blockMs)
        if (decision.allowed) counted = keys.windows
        countedLocally = true
      } else {
        if (redisRetryAt !== 0) {
          // Redis decides again, from its own counts: a later outage starts counting afresh.
          redisRetryAt = 0
          local?.clear()
        }
        decision = redisAnswer
        if (decision.allowed) counted = keys.windows
        else blocks?.set(key, cost, limit, decision)
      }
    }

    const now = Date.now()
    const bound = bindingWindow(decision)
    const binding = decision.windows[bound]!
    const waitMs = decision.allowed ? binding.resetMs : waitOf(decision)
    const info: RateLimitInfo = {
      limit: windows[bound]!.limit,
      used: binding.used,
      remaining: binding.remaining,
      resetTime: new Date(now + waitMs),
      key,
    }
    if (config.requestPropertyName === 'rateLimit') req.rateLimit = info
    else (req as unknown as Record<string, unknown>)[config.requestPropertyName] = info
    if (rateLimitChannel.hasSubscribers) {
      publishDecision(limit, bound, {
        result: decision.allowed ? 'allowed' : 'limited',
        source,
        key,
        limit: info.limit,
        remaining: info.remaining,
        resetMs: waitMs,
        ...(redisError ? { error: redisError } : {}),
      })
    }

    try {
      if (!res.headersSent) {
        let names = fixedPolicyNames ?? policyNames(limit)
        if (config.standardHeaders === 'draft-8' && typeof config.identifier === 'function') {
          const result = callback('identifier', config.identifier, req, res, isPolicyName, POLICY_NAME)
          names = [typeof result === 'string' ? result : await result]
        }
        setHeaders(res, decision, windows, bound, waitMs, key, names, now)
      }
      if (!decision.allowed) {
        if (config.onLimit) notifyLimit(req, res, info)
        if (config.mode === 'enforce') return await reject(req, res, next, info, windows[bound]!.windowMs)
      }
    } catch (error) {
      return next(error)
    }

    if (counted && refunds && cost > 0) giveBackOnceAnswered(req, res, counted, countedLocally, windows, cost, decision)
    next()
  } as RateLimitMiddleware

  /** skipSuccessfulRequests / skipFailedRequests: gives the request back once its response says it must. */
  function giveBackOnceAnswered(
    req: Request,
    res: Response,
    keys: string[],
    counted: boolean,
    windows: Window[],
    cost: number,
    decision: Decision,
  ): void {
    let given = false
    const giveBack = (succeeded: boolean): void => {
      if (given) return
      if (succeeded ? config.skipSuccessfulRequests : config.skipFailedRequests) {
        given = true
        if (counted) local?.refund(keys, windows, cost, decision)
        else void refund(keys, windows, cost, decision)
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

  function notifyLimit(req: Request, res: Response, info: RateLimitInfo): void {
    const failed = (error: unknown) => logger.error('express-redis-kit rateLimit: onLimit threw', error)
    try {
      const result = config.onLimit!(req, res, info)
      if (result instanceof Promise) result.catch(failed)
    } catch (error) {
      failed(error)
    }
  }

  /** The headers of a decision; the binding window's reset is `waitMs`. */
  function setHeaders(
    res: Response,
    decision: Decision,
    windows: Window[],
    bound: number,
    waitMs: number,
    key: string,
    names: string[],
    now: number,
  ) {
    if (config.legacyHeaders) setLegacyHeaders(res, headerValues(decision, windows, bound, waitMs), now)
    if (fixedDraft8) {
      for (let i = 0; i < windows.length; i++) {
        const { remaining, resetMs } = decision.windows[i]!
        fixedDraft8[i]!.setHeaders(res, remaining, i === bound ? waitMs : resetMs, key)
      }
    } else if (config.standardHeaders) {
      const binding = headerValues(decision, windows, bound, waitMs)
      if (config.standardHeaders === 'draft-8') {
        for (let i = 0; i < windows.length; i++) {
          const values = i === bound ? binding : headerValues(decision, windows, i, decision.windows[i]!.resetMs)
          setDraft8Headers(res, values, names[i] ?? names[0]!, key)
        }
      } else if (config.standardHeaders === 'draft-7') setDraft7Headers(res, binding)
      else setDraft6Headers(res, binding)
    }
    if (!decision.allowed && (config.legacyHeaders || config.standardHeaders)) setRetryAfterHeader(res, waitMs)
  }

  async function reject(req: Request, res: Response, next: NextFunction, info: RateLimitInfo, windowMs: number) {
    if (config.handler) {
      const { statusCode, message } = config
      return void (await config.handler(req, res, next, { ...info, statusCode, message, windowMs, max: info.limit }))
    }
    res.status(config.statusCode)
    if (messageBytes && !res.hasHeader('content-type')) {
      if (!res.writableEnded) sendMessage(res, messageBytes)
      return
    }
    const body = typeof config.message === 'function' ? await config.message(req, res) : config.message
    if (!res.writableEnded) res.send(body)
  }

  middleware.resetKey = async (key: string) => {
    check('key', key, isNonEmptyString, 'a non-empty string', 'resetKey')
    blocks?.delete(key)
    const keys = keysOf(key)
    const all = allKeys(keys)
    local?.delete(all)
    all.push(...earlierSuffixes.map((suffix) => keys.tag + suffix))
    await runCommand(client, keys.block, (redis) => redis.del(all), timeoutMs, undefined, RESET_CALL)
  }

  middleware.getKey = async (key: string, limit?: number) => {
    check('key', key, isNonEmptyString, 'a non-empty string', 'getKey')
    const known = limit ?? (typeof config.limit === 'number' ? config.limit : undefined)
    if (known === undefined && algorithm === 'token-bucket' && !config.limits) {
      throw new ArgumentError(
        'getKey',
        'limit',
        "a number when the limit option is a function and the algorithm is 'token-bucket'",
        limit,
      )
    }
    const keys = keysOf(key)
    const windows = windowsOf(known || Number.MAX_SAFE_INTEGER)
    const reply = (await scripts.decide.run(client, allKeys(keys), scriptArgs(windows, 0, false, ''), timeoutMs)) as
      | number[]
      | null
    if (!reply) return undefined
    const decision = parseDecision(reply, 2)
    const state = decision.windows[bindingWindow(decision)]!
    return {
      used: state.used,
      remaining: known === undefined && !config.limits ? undefined : state.remaining,
      resetTime: new Date(Date.now() + Math.max(state.resetMs, decision.blockMs)),
    }
  }

  return middleware
}

/**
 * Sends a string `message` (as `bytes`) as `res.send` would (`text/html; charset=utf-8`, its
 * length; no body for HEAD), without what `res.send` does for every response: the content type
 * looked up and parsed, an ETag hashed from the body. A client hammering its limit gets a
 * refusal per request, most of them from the local block cache: this is most of their cost.
 */
function sendMessage(res: Response, bytes: Buffer): void {
  res.setHeader('Content-Type', 'text/html; charset=utf-8')
  res.setHeader('Content-Length', bytes.length)
  res.end(res.req.method === 'HEAD' ? undefined : bytes)
}

/** What the headers say of window `i` of a decision, whose quota resets in `resetMs`. */
function headerValues(decision: Decision, windows: Window[], i: number, resetMs: number): HeaderValues {
  return {
    limit: windows[i]!.limit,
    remaining: decision.windows[i]!.remaining,
    resetMs,
    windowMs: windows[i]!.windowMs,
  }
}

/** A decision script's reply (see scripts.ts), its windows from `from` on. */
function parseDecision(reply: (number | string)[], blockAt: number): Decision {
  const windows: WindowResult[] = []
  for (let i = blockAt + 1; i + 4 < reply.length; i += 5) {
    windows.push({
      used: Number(reply[i]),
      remaining: Number(reply[i + 1]),
      resetMs: Number(reply[i + 2]),
      token: String(reply[i + 3] ?? ''),
      fits: Number(reply[i + 4]) === 1,
    })
  }
  return { allowed: Number(reply[0]) === 1, blockMs: Number(reply[blockAt]), windows }
}

/**
 * The window that binds: of an admitted request, the one with the least left (the latest
 * reset among equals); of a refused one, the refusing window that lets it in last.
 */
function bindingWindow({ allowed, windows }: Decision): number {
  if (windows.length === 1) return 0
  const refusedBy = allowed ? [] : windows.flatMap((window, i) => (window.fits ? [] : [i]))
  if (refusedBy.length > 0)
    return refusedBy.reduce((best, i) => (windows[i]!.resetMs > windows[best]!.resetMs ? i : best))
  // Admitted, or refused by a block alone.
  return windows.reduce((best, window, i) => {
    const current = windows[best]!
    const tighter = window.remaining < current.remaining
    return tighter || (window.remaining === current.remaining && window.resetMs > current.resetMs) ? i : best
  }, 0)
}

/** 'local' mode: after Redis failed, how long requests are limited in memory before Redis is tried again. */
const LOCAL_RETRY_MS = 1_000
/** 'local' mode: the most windows kept in memory. */
const LOCAL_MAX_KEYS = 100_000

/** A rejection's reason as an Error (decideInRedis answers with it rather than rejecting). */
const asError = (error: unknown): Error => (error instanceof Error ? error : new Error(String(error)))

/** Why a decision that reached Redis after its deadline (it counted nothing) is an error. */
const LATE_DECISION = 'the decision reached Redis after its deadline; it counted nothing'

/**
 * The same client (or cluster), answering bulk strings as Buffers (SLIDING_WINDOW_ONE's binary
 * reply) and without node-redis's own command timeout, which costs an AbortSignal per command:
 * {@link Script.run} times the call out itself.
 */
function binaryReplies(client: RedisClient): RedisClient {
  return client.withCommandOptions({ typeMapping: { [RESP_TYPES.BLOB_STRING]: Buffer }, timeout: 0 }) as RedisClient
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
  let result: unknown
  try {
    result = fn(req, res)
  } catch (cause) {
    throw callbackThrew(name, cause)
  }
  if (!(result instanceof Promise)) return validated(name, result, valid, expected)
  return result.then(
    (value) => validated(name, value, valid, expected),
    (cause: unknown) => {
      throw callbackThrew(name, cause)
    },
  )
}

function callbackThrew(name: string, cause: unknown): RedisKitError {
  const reason = cause instanceof Error ? cause.message : describe(cause)
  return new RedisKitError(
    'ERK_INVALID_CALLBACK_RESULT',
    `express-redis-kit rateLimit: the ${name} option threw: ${reason}`,
    {
      cause,
    },
  )
}

function validated<T>(name: string, value: unknown, valid: (value: unknown) => value is T, expected: string): T {
  if (valid(value)) return value
  throw new RedisKitError(
    'ERK_INVALID_CALLBACK_RESULT',
    `express-redis-kit rateLimit: the ${name} option must return ${expected}; it returned ${describe(value)}`,
  )
}

declare global {
  namespace Express {
    interface Request {
      /** Set by express-redis-kit's `rateLimit` (under its `requestPropertyName`, `rateLimit` by default). */
      rateLimit?: RateLimitInfo
    }
  }
}
