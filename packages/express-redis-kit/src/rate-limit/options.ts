import type { NextFunction, Request, Response } from 'express'
import { type Duration, parseDuration, type SecondsCheck } from '../shared/duration.js'
import { RedisKitError } from '../shared/errors.js'
import type { Logger } from '../shared/logger.js'
import {
  check,
  type Hints,
  notNeeded,
  notSupported,
  parseClient,
  parseLogger,
  parsePrefix,
  parseTimeoutMs,
  rejectUnknownOptions,
  use,
  warnIfNotConnected,
} from '../shared/options.js'
import type { RedisClient } from '../shared/redis.js'
import { defaultPolicyName, type StandardHeaders } from './headers.js'
import { ipKeyGenerator } from './ip-key.js'
import { ALGORITHMS, type Algorithm } from './scripts.js'

/** A value, or a function of the request that computes it (sync or async). */
export type ValueOrFunction<T> = T | ((req: Request, res: Response) => T | Promise<T>)

/** What a limiter knows about the client after its request was counted, as `req.rateLimit`. */
export interface RateLimitInfo {
  /** The limit that applied to this request. */
  limit: number
  /** Quota used in the current window, including this request if it was admitted. */
  used: number
  /** Quota left (0 when the request was rejected and nothing is left). */
  remaining: number
  /** When the quota resets (allowed) or when this request would be admitted (rejected). */
  resetTime: Date
  /** The client key from `keyGenerator`. */
  key: string
}

/**
 * The 4th argument of {@link RateLimitOptions.handler}: the refused request's
 * {@link RateLimitInfo} (what `req.rateLimit` holds) with the options a handler written for
 * express-rate-limit reads from its `options` argument, so that
 * `(req, res, next, options) => res.status(options.statusCode).send(options.message)` works.
 */
export interface RateLimitHandlerInfo extends RateLimitInfo {
  /** The `statusCode` option: the status a refusal answers with. */
  statusCode: number
  /** The `message` option as given (a value, or the function that computes it). */
  message: ValueOrFunction<unknown>
  /** The window of the limit that refused the request, in milliseconds (with `limits`, the binding window's). */
  windowMs: number
  /** The same as `limit`: express-rate-limit's older name for it. */
  max: number
}

/**
 * Which setup checks run (see {@link RateLimitOptions.validate}); the names are those of
 * express-rate-limit's `validate`, and `default` applies to those not named.
 */
export interface RateLimitValidations {
  /**
   * Warn (`ERK_PERMISSIVE_TRUST_PROXY`) when Express's `trust proxy` is `true`: every client
   * can then pick the IP it is limited by with an `X-Forwarded-For` header. Checked with the
   * default `keyGenerator` only.
   * @default true
   */
  trustProxy?: boolean
  /**
   * Warn (`ERK_UNEXPECTED_X_FORWARDED_FOR`) when a request carries `X-Forwarded-For` while
   * `trust proxy` is off: behind a proxy, every client would share the proxy's IP. Checked with
   * the default `keyGenerator` only.
   * @default true
   */
  xForwardedForHeader?: boolean
  /**
   * Warn (`ERK_CREATED_IN_REQUEST_HANDLER`) when the limiter is created while Express is
   * handling a request (seen in the call stack, so only when created before the handler's
   * first `await`).
   * @default true
   */
  creationStack?: boolean
  /**
   * Warn (`ERK_DOUBLE_COUNT`) when one request is counted twice under the same prefix and
   * client key: the same limiter mounted twice, or two limiters sharing a prefix.
   * @default true
   */
  singleCount?: boolean
  /**
   * Warn (`ERK_SHARED_PREFIX`) when a limiter is created with the prefix of another limiter
   * on the same client: they would count the same requests together.
   * @default true
   */
  unsharedStore?: boolean
  /**
   * Whether the checks not named run.
   * @default true
   */
  default?: boolean
}

/** One window of {@link RateLimitOptions.limits}. */
export interface RateLimitWindow {
  /** Requests (or cost units) allowed per window: a positive integer. */
  limit: number
  /** The window: milliseconds or a duration string. */
  windowMs: Duration
  /**
   * Its draft-8 policy name.
   * @default `${limit}-in-${window}`, e.g. `10-in-1sec`
   */
  identifier?: string
}

/** Options of {@link rateLimit}. Only `client` is required. */
export interface RateLimitOptions {
  /** A connected node-redis client or Redis Cluster client. The limiter never connects or closes it. */
  client: RedisClient
  /**
   * Requests (or cost units) allowed per window: a positive integer, or a function
   * of the request returning one (0 rejects every request).
   * @default 100
   */
  limit?: ValueOrFunction<number>
  /**
   * The window: milliseconds or a duration string (`'500ms'`, `'10s'`, `'15m'`, `'1h'`, `'1d'`).
   * @default 60_000 (one minute)
   */
  windowMs?: Duration
  /**
   * Several windows counted together, e.g. `[{ limit: 10, windowMs: '1s' }, { limit: 1000,
   * windowMs: '1h' }]`: a request is admitted only if it fits in every window, and is then
   * counted in all of them, atomically, in the same one `EVALSHA` (a request refused by one
   * window counts in none). Replaces `limit` and `windowMs`. Headers: one draft-8 policy per
   * window; the older drafts and `req.rateLimit` show the binding window (the one with the
   * least left, or the one that refused).
   * @default one window of `limit` per `windowMs`
   */
  limits?: RateLimitWindow[]
  /**
   * Once a request is over the limit, the client is blocked for this long, whatever its
   * windows say (a login lockout): every request in that time is refused, and counts nothing.
   * Decided in the same script call. A duration: milliseconds or a string such as `'15m'`.
   * @default none
   */
  blockDuration?: Duration
  /**
   * `'enforce'` refuses a request over the limit; `'shadow'` only reports it (headers,
   * `req.rateLimit`, `onLimit`) and lets it through: to try a new limit on real traffic
   * before enforcing it. A request over the limit is not counted in either mode.
   * @default 'enforce'
   */
  mode?: 'enforce' | 'shadow'
  /**
   * Called for every request over the limit (in both modes), before it is refused or let
   * through, with what `req.rateLimit` holds. What it returns is not awaited; a throw or a
   * rejection is logged.
   * @default none
   */
  onLimit?: (req: Request, res: Response, info: RateLimitInfo) => unknown
  /**
   * How many clients over the limit this instance remembers (least recently blocked first
   * out). Once Redis says a client is over its limit until T, this instance answers the
   * client's requests of the same or a higher cost itself until T: the same status, headers
   * and `req.rateLimit`, and no Redis command. `resetKey()` clears it here; other instances
   * keep their own until T. `false` asks Redis every time.
   * @default 10_000
   */
  localBlockCache?: number | false
  /**
   * - `'sliding-window'`: two buckets, the previous one weighted by how much of it
   *   still overlaps the sliding window. O(1) memory; at most `limit` per fixed window,
   *   and close to `limit` per sliding window (an estimate: use `'sliding-log'` for exact).
   * - `'fixed-window'`: a counter that resets when the window (started by the first
   *   request) ends. Cheapest; allows up to 2 x `limit` across a window boundary.
   * - `'sliding-log'`: the exact count of admitted requests in the last `windowMs`,
   *   one sorted-set entry per request (memory grows with `limit`).
   * - `'token-bucket'`: GCRA; `limit` tokens per window refilled continuously,
   *   bursts of up to `burst`.
   * @default 'sliding-window'
   */
  algorithm?: Algorithm
  /**
   * Token bucket only: the most requests admitted back to back from a full bucket.
   * @default limit
   */
  burst?: number
  /**
   * Names the client. Must return a non-empty string.
   * @default the client IP (`req.ip`, so set Express's `trust proxy` correctly behind a
   * proxy), IPv4-mapped IPv6 unwrapped to IPv4 and IPv6 grouped by `ipv6Subnet`.
   */
  keyGenerator?: (req: Request, res: Response) => string | Promise<string>
  /**
   * Prefix length (1-128) an IPv6 client is grouped by in the default key, or `false`
   * to limit each IPv6 address alone.
   * @default 56
   */
  ipv6Subnet?: number | false
  /**
   * Prefix of every Redis key of this limiter. Give each limiter on one Redis its own.
   * @default 'rl:'
   */
  prefix?: string
  /**
   * Quota units this request consumes: a non-negative integer or a function returning one.
   * @default 1
   */
  cost?: ValueOrFunction<number>
  /**
   * Return true to let a request through without counting it.
   * @default never skips
   */
  skip?: (req: Request, res: Response) => boolean | Promise<boolean>
  /**
   * Give a request back after its response finished if `requestWasSuccessful` says it succeeded.
   * @default false
   */
  skipSuccessfulRequests?: boolean
  /**
   * Give a request back after its response finished if it failed (or the client went away first).
   * @default false
   */
  skipFailedRequests?: boolean
  /**
   * Decides success for `skipSuccessfulRequests` / `skipFailedRequests`.
   * @default (req, res) => res.statusCode < 400
   */
  requestWasSuccessful?: (req: Request, res: Response) => boolean | Promise<boolean>
  /**
   * Status of a rejected request.
   * @default 429
   */
  statusCode?: number
  /**
   * Body of a rejected request: a string, an object (sent as JSON), or a function returning one.
   * A string is sent as `res.send` sends it (`text/html; charset=utf-8`) but without an ETag.
   * @default 'Too many requests, please try again later.'
   */
  message?: ValueOrFunction<unknown>
  /**
   * Answers a rejected request instead of the default (status + message). Headers are already
   * set. Its 4th argument is the {@link RateLimitHandlerInfo}: `req.rateLimit`'s fields with
   * `statusCode`, `message`, `windowMs` and `max`, so a handler written for express-rate-limit
   * (`res.status(options.statusCode).send(options.message)`) works as it is.
   * @default sends `statusCode` with `message`
   */
  handler?: (req: Request, res: Response, next: NextFunction, info: RateLimitHandlerInfo) => unknown
  /**
   * IETF `RateLimit` headers: `'draft-6'`, `'draft-7'`, `'draft-8'` or `false`.
   * Names, formats and values are those of express-rate-limit 8.
   * @default 'draft-8'
   */
  standardHeaders?: StandardHeaders
  /**
   * `X-RateLimit-Limit`, `X-RateLimit-Remaining` and `X-RateLimit-Reset`.
   * @default false
   */
  legacyHeaders?: boolean
  /**
   * The draft-8 policy name.
   * @default `${limit}-in-${window}`, e.g. `100-in-1min`
   */
  identifier?: ValueOrFunction<string>
  /**
   * Property of `req` that receives the {@link RateLimitInfo}.
   * @default 'rateLimit'
   */
  requestPropertyName?: string
  /**
   * When Redis fails, times out or is not connected: `'allow'` lets the request
   * through (logging the error at most once per 5 s); `'block'` answers 503 with
   * `Retry-After: 5`; `'local'` applies the same algorithm and limits in this process's
   * memory (each instance on its own: with N instances a client gets up to N times the
   * limit) until Redis answers again (tried again once a second).
   * @default 'allow'
   */
  onRedisError?: 'allow' | 'block' | 'local'
  /**
   * The longest a request waits for Redis before `onRedisError` applies.
   * @default 500
   */
  timeoutMs?: number
  /**
   * Receives warnings and errors.
   * @default console
   */
  logger?: Logger
  /**
   * Setup checks, each logged once per limiter as a warning with a stable code (see
   * {@link RateLimitValidations}): `false` turns them all off, an object turns them on or off
   * one by one (`{ xForwardedForHeader: false }`), with express-rate-limit's names.
   * @default true (all on)
   */
  validate?: boolean | RateLimitValidations
}

/** The fully resolved configuration: every option parsed once, at creation. */
export interface RateLimitConfig {
  client: RedisClient
  limit: number | ((req: Request, res: Response) => number | Promise<number>)
  windowMs: number
  /** The windows of the `limits` option (undefined: one window of `limit` per `windowMs`). */
  limits: { limit: number; windowMs: number; identifier: string }[] | undefined
  blockMs: number
  mode: 'enforce' | 'shadow'
  onLimit: ((req: Request, res: Response, info: RateLimitInfo) => unknown) | undefined
  localBlockCache: number | false
  algorithm: Algorithm
  burst: number | undefined
  keyGenerator: (req: Request, res: Response) => string | Promise<string>
  prefix: string
  cost: number | ((req: Request, res: Response) => number | Promise<number>)
  skip: ((req: Request, res: Response) => boolean | Promise<boolean>) | undefined
  skipSuccessfulRequests: boolean
  skipFailedRequests: boolean
  requestWasSuccessful: (req: Request, res: Response) => boolean | Promise<boolean>
  statusCode: number
  message: ValueOrFunction<unknown>
  handler: ((req: Request, res: Response, next: NextFunction, info: RateLimitHandlerInfo) => unknown) | undefined
  standardHeaders: StandardHeaders
  legacyHeaders: boolean
  identifier: ValueOrFunction<string> | undefined
  requestPropertyName: string
  onRedisError: 'allow' | 'block' | 'local'
  timeoutMs: number
  logger: Logger
  /** Whether `keyGenerator` is the default one (the client IP): the proxy checks apply only then. */
  keysByIp: boolean
  /** Which setup checks run. */
  validate: Required<Omit<RateLimitValidations, 'default'>>
}

const KNOWN_OPTIONS = new Set<string>([
  'client',
  'limit',
  'windowMs',
  'limits',
  'blockDuration',
  'mode',
  'onLimit',
  'localBlockCache',
  'algorithm',
  'burst',
  'keyGenerator',
  'ipv6Subnet',
  'prefix',
  'cost',
  'skip',
  'skipSuccessfulRequests',
  'skipFailedRequests',
  'requestWasSuccessful',
  'statusCode',
  'message',
  'handler',
  'standardHeaders',
  'legacyHeaders',
  'identifier',
  'requestPropertyName',
  'onRedisError',
  'timeoutMs',
  'logger',
  'validate',
])

const NEVER_DELAYED = notSupported('a request is admitted or refused at once, never delayed')
const NODE_REDIS_ONLY = notNeeded('the client is a node-redis client or cluster (5 or 6), whatever its version')

/** Option names of express-rate-limit, rate-limit-redis and rate-limiter-flexible that are not ours. */
const PEER_OPTIONS: Hints = {
  window: use('windowMs'),
  // express-rate-limit (and express-slow-down)
  max: use('limit'),
  headers: use('legacyHeaders'),
  store: use('client', 'the node-redis client itself, no store object'),
  passOnStoreError: use(
    'onRedisError',
    "'allow' (the default) lets requests through while Redis fails, 'block' refuses them, 'local' limits in memory",
  ),
  onLimitReached: use('onLimit'),
  draft_polli_ratelimit_headers: use('standardHeaders', "'draft-6'"),
  retryAfter: notNeeded('`Retry-After` is how long the client really has to wait'),
  delayAfter: NEVER_DELAYED,
  delayMs: NEVER_DELAYED,
  maxDelayMs: NEVER_DELAYED,
  // rate-limit-redis
  sendCommand: use('client', 'the node-redis client itself'),
  sendCommandCluster: use('client', 'the node-redis cluster itself'),
  resetExpiryOnChange: use('algorithm', "the window of 'sliding-window' (the default) slides with every request"),
  // rate-limiter-flexible
  storeClient: use('client'),
  points: use('limit'),
  duration: use('windowMs', 'in milliseconds, where rate-limiter-flexible counts seconds'),
  keyPrefix: use('prefix'),
  blockOnConsumed: use('blockDuration', 'in milliseconds; the block starts with the first request over `limit`'),
  inMemoryBlockOnConsumed: use('localBlockCache', 'a client over its limit is answered here without Redis'),
  inMemoryBlockDuration: use('localBlockCache', 'a local block lasts until Redis said the client may pass'),
  insuranceLimiter: use('onRedisError', "'local' limits in this process's memory while Redis fails"),
  rejectIfRedisNotReady: use('onRedisError', "'block' refuses requests while Redis is not ready"),
  execEvenly: NEVER_DELAYED,
  execEvenlyMinDelayMs: NEVER_DELAYED,
  customIncrTtlLuaScript: use('algorithm', 'the Lua scripts are built in, one per algorithm'),
  useRedisPackage: NODE_REDIS_ONLY,
  useRedis3AndLowerPackage: NODE_REDIS_ONLY,
}

const VALIDATIONS = new Set([
  'trustProxy',
  'xForwardedForHeader',
  'creationStack',
  'singleCount',
  'unsharedStore',
  'default',
])
const REFUSED_AT_CREATION = notNeeded('what it checks is refused at creation here, with an OptionError')
const OWN_COUNTS = notNeeded('the counts come from the built-in scripts')

/** express-rate-limit's checks that `validate` has no switch for here, and why. */
const PEER_VALIDATIONS: Hints = {
  ip: notNeeded('an unknown client IP is an error (ERK_MISCONFIGURED) passed to next(err), never a warning'),
  forwardedHeader: notSupported('the `Forwarded` header is not checked'),
  positiveHits: OWN_COUNTS,
  headersResetTime: OWN_COUNTS,
  limit: notNeeded('`limit: 0` refuses every request, as in express-rate-limit 7 and later'),
  draftPolliHeaders: REFUSED_AT_CREATION,
  onLimitReached: REFUSED_AT_CREATION,
  headersDraftVersion: REFUSED_AT_CREATION,
  knownOptions: REFUSED_AT_CREATION,
  validationsConfig: REFUSED_AT_CREATION,
  ipv6Subnet: REFUSED_AT_CREATION,
  windowMs: REFUSED_AT_CREATION,
  ipv6SubnetOrKeyGenerator: notSupported('`ipv6Subnet` applies to the default `keyGenerator` only'),
  keyGeneratorIpFallback: notSupported('no check of a custom `keyGenerator`: group IPv6 with `ipKeyGenerator(req.ip)`'),
}

const isPositiveInteger = (value: unknown): value is number => Number.isSafeInteger(value) && (value as number) > 0
const isNonNegativeInteger = (value: unknown): value is number => Number.isSafeInteger(value) && (value as number) >= 0

function optionalFunction<T>(options: Record<string, unknown>, name: string): T | undefined {
  const value = options[name]
  check(value === undefined || typeof value === 'function', name, 'a function', value)
  return value as T | undefined
}

function optionalBoolean(options: Record<string, unknown>, name: string, fallback: boolean): boolean {
  const value = options[name]
  check(value === undefined || typeof value === 'boolean', name, 'a boolean', value)
  return (value as boolean | undefined) ?? fallback
}

/** Validates `options` and resolves every default. Throws an `OptionError` (a `TypeError`) naming the option. */
export function parseRateLimitOptions(options: RateLimitOptions): RateLimitConfig {
  check(typeof options === 'object' && options !== null, 'options', 'an object', options)
  rejectUnknownOptions(options, KNOWN_OPTIONS, PEER_OPTIONS)
  const raw = options as unknown as Record<string, unknown>

  parseClient(options.client)
  const logger = parseLogger(options.logger)
  const secondsCheck: SecondsCheck = { logger, feature: 'rateLimit' }

  const limit = options.limit ?? 100
  check(
    typeof limit === 'function' || isNonNegativeInteger(limit),
    'limit',
    'a non-negative integer or a function',
    limit,
  )

  const windowMs = parseDuration(options.windowMs ?? 60_000, 'windowMs', secondsCheck)

  const algorithm = options.algorithm ?? 'sliding-window'
  check(
    ALGORITHMS.includes(algorithm),
    'algorithm',
    `one of ${ALGORITHMS.map((name) => `'${name}'`).join(', ')}`,
    algorithm,
  )

  check(options.burst === undefined || isPositiveInteger(options.burst), 'burst', 'a positive integer', options.burst)
  check(
    options.burst === undefined || algorithm === 'token-bucket',
    'burst',
    "used only with algorithm 'token-bucket'",
    options.burst,
  )

  const ipv6Subnet = options.ipv6Subnet ?? 56
  check(
    ipv6Subnet === false || (Number.isInteger(ipv6Subnet) && ipv6Subnet >= 1 && ipv6Subnet <= 128),
    'ipv6Subnet',
    'an integer from 1 to 128, or false',
    ipv6Subnet,
  )
  const keyGenerator =
    optionalFunction<RateLimitConfig['keyGenerator']>(raw, 'keyGenerator') ?? defaultKeyGenerator(ipv6Subnet)

  const prefix = parsePrefix(options.prefix, 'rl:')

  const cost = options.cost ?? 1
  check(typeof cost === 'function' || isNonNegativeInteger(cost), 'cost', 'a non-negative integer or a function', cost)

  const statusCode = options.statusCode ?? 429
  check(
    Number.isInteger(statusCode) && statusCode >= 400 && statusCode <= 599,
    'statusCode',
    'an HTTP error status (400-599)',
    statusCode,
  )

  const standardHeaders = options.standardHeaders ?? 'draft-8'
  check(
    [false, 'draft-6', 'draft-7', 'draft-8'].includes(standardHeaders),
    'standardHeaders',
    "'draft-6', 'draft-7', 'draft-8' or false (express-rate-limit's `true` is 'draft-6')",
    standardHeaders,
  )

  const identifier = options.identifier
  check(
    identifier === undefined ||
      typeof identifier === 'function' ||
      (typeof identifier === 'string' && !/["\\\r\n]/.test(identifier)),
    'identifier',
    'a string without quotes, backslashes or newlines, or a function',
    identifier,
  )

  const requestPropertyName = options.requestPropertyName ?? 'rateLimit'
  check(
    typeof requestPropertyName === 'string' && requestPropertyName.length > 0,
    'requestPropertyName',
    'a non-empty string',
    requestPropertyName,
  )

  const onRedisError = options.onRedisError ?? 'allow'
  check(
    onRedisError === 'allow' || onRedisError === 'block' || onRedisError === 'local',
    'onRedisError',
    "'allow', 'block' or 'local'",
    onRedisError,
  )

  const limits = parseLimits(options, secondsCheck)
  check(
    limits === undefined || options.burst === undefined,
    'burst',
    'not used with `limits` (each window is its own bucket of `limit`)',
    options.burst,
  )
  check(
    limits === undefined || options.identifier === undefined,
    'identifier',
    'not used with `limits` (give each window its own `identifier`)',
    options.identifier,
  )
  const blockMs =
    options.blockDuration === undefined ? 0 : parseDuration(options.blockDuration, 'blockDuration', secondsCheck)
  const mode = options.mode ?? 'enforce'
  check(mode === 'enforce' || mode === 'shadow', 'mode', "'enforce' or 'shadow'", mode)
  const localBlockCache = options.localBlockCache ?? 10_000
  check(
    localBlockCache === false || isPositiveInteger(localBlockCache),
    'localBlockCache',
    'a positive integer (how many blocked clients to remember) or false',
    localBlockCache,
  )

  const timeoutMs = parseTimeoutMs(options.timeoutMs)
  const validate = parseValidate(options.validate)
  warnIfNotConnected(options.client, logger, 'rateLimit')

  return {
    client: options.client,
    limit,
    windowMs,
    limits,
    blockMs,
    mode,
    onLimit: optionalFunction(raw, 'onLimit'),
    localBlockCache,
    algorithm,
    burst: options.burst,
    keyGenerator,
    prefix,
    cost,
    skip: optionalFunction(raw, 'skip'),
    skipSuccessfulRequests: optionalBoolean(raw, 'skipSuccessfulRequests', false),
    skipFailedRequests: optionalBoolean(raw, 'skipFailedRequests', false),
    requestWasSuccessful:
      optionalFunction<RateLimitConfig['requestWasSuccessful']>(raw, 'requestWasSuccessful') ??
      ((_req, res) => res.statusCode < 400),
    statusCode,
    message: options.message ?? 'Too many requests, please try again later.',
    handler: optionalFunction(raw, 'handler'),
    standardHeaders,
    legacyHeaders: optionalBoolean(raw, 'legacyHeaders', false),
    identifier,
    requestPropertyName,
    onRedisError,
    timeoutMs,
    logger,
    keysByIp: options.keyGenerator === undefined,
    validate,
  }
}

/** The `validate` option: which setup checks run. */
function parseValidate(validate: unknown): RateLimitConfig['validate'] {
  const value = validate ?? true
  if (typeof value === 'boolean') {
    return {
      trustProxy: value,
      xForwardedForHeader: value,
      creationStack: value,
      singleCount: value,
      unsharedStore: value,
    }
  }
  check(
    typeof value === 'object' && value !== null && !Array.isArray(value),
    'validate',
    'a boolean or an object of booleans',
    value,
  )
  rejectUnknownOptions(value as object, VALIDATIONS, PEER_VALIDATIONS, 'validate')
  const switches = value as Record<string, unknown>
  for (const [name, on] of Object.entries(switches)) {
    check(on === undefined || typeof on === 'boolean', `validate.${name}`, 'a boolean', on)
  }
  const on = (name: string): boolean => (switches[name] ?? switches.default ?? true) as boolean
  return {
    trustProxy: on('trustProxy'),
    xForwardedForHeader: on('xForwardedForHeader'),
    creationStack: on('creationStack'),
    singleCount: on('singleCount'),
    unsharedStore: on('unsharedStore'),
  }
}

/** The `limits` option, checked; undefined when it is not given. */
function parseLimits(options: RateLimitOptions, secondsCheck: SecondsCheck): RateLimitConfig['limits'] {
  const { limits } = options
  if (limits === undefined) return undefined
  check(
    options.limit === undefined && options.windowMs === undefined,
    'limits',
    'given without `limit` and `windowMs` (it replaces them)',
    limits,
  )
  check(Array.isArray(limits) && limits.length > 0, 'limits', 'a non-empty array of { limit, windowMs }', limits)
  const windows = limits.map((window, i) => {
    const name = `limits[${i}]`
    check(typeof window === 'object' && window !== null, name, 'an object { limit, windowMs }', window)
    rejectUnknownOptions(window as object, WINDOW_OPTIONS, PEER_OPTIONS, name)
    check(isPositiveInteger(window.limit), `${name}.limit`, 'a positive integer', window.limit)
    const windowMs = parseDuration(window.windowMs, `${name}.windowMs`, secondsCheck)
    const identifier = window.identifier ?? defaultPolicyName(window.limit, windowMs)
    check(
      typeof identifier === 'string' && identifier !== '' && !/["\\\r\n]/.test(identifier),
      `${name}.identifier`,
      'a non-empty string without quotes, backslashes or newlines',
      identifier,
    )
    return { limit: window.limit, windowMs, identifier }
  })
  const lengths = new Set(windows.map((window) => window.windowMs))
  check(lengths.size === windows.length, 'limits', 'windows of different lengths (two share a windowMs)', limits)
  return windows
}

const WINDOW_OPTIONS = new Set(['limit', 'windowMs', 'identifier'])

function defaultKeyGenerator(ipv6Subnet: number | false): (req: Request) => string {
  return function clientIp(req) {
    const ip = req.ip ?? req.socket?.remoteAddress
    if (!ip)
      throw new RedisKitError(
        'ERK_MISCONFIGURED',
        'express-redis-kit rateLimit: the client IP is unknown (req.ip is undefined); pass a keyGenerator',
      )
    return ipKeyGenerator(ip, ipv6Subnet)
  }
}

/** The draft-8 policy name for a request. */
export function policyName(config: RateLimitConfig, limit: number): string {
  return typeof config.identifier === 'string' ? config.identifier : defaultPolicyName(limit, config.windowMs)
}
