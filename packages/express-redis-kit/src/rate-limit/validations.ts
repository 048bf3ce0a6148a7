import type { Request } from 'express'
import { type Logger, type WarningCode, warning } from '../shared/logger.js'
import type { RedisClient } from '../shared/redis.js'
import type { RateLimitConfig } from './options.js'

/*
 * The setup checks of the `validate` option: mistakes in how the app uses the limiter that
 * options cannot show, each logged once per limiter as a warning with a stable code.
 */

/**
 * On a request: the Redis key (prefix and client key) of each limiter that counted it, a
 * string for the first and a set once there are more (only then is anything allocated).
 * `Symbol.for`: the ESM and the CommonJS build, loaded side by side, see the same marks.
 */
const COUNTED = Symbol.for('express-redis-kit.rateLimit.counted')
type Marked = { [COUNTED]?: string | Set<string> }

/** What Express's router has on the stack while it runs a handler (`Layer.handle` in Express 4). */
const IN_REQUEST_FRAMES = ['Layer.handleRequest', 'Layer.handle [as handle_request]']

/** Error.stackTraceLimit while the creation stack is read: deep enough to reach the router from a helper's helper. */
const CREATION_STACK_DEPTH = 50

/** The prefixes of the limiters created on each client (the `unsharedStore` check). */
const prefixesByClient = new WeakMap<RedisClient, Set<string>>()

/** The checks of one limiter; each warns at most once. */
export class SetupChecks {
  readonly #logger: Logger
  readonly #prefix: string
  /** Whether the trust-proxy checks still have something to say; false once they warned or are off. */
  #trustProxy: boolean
  #xForwardedFor: boolean
  #singleCount: boolean
  /** The app whose `trust proxy` was checked last: it is read once per app, not per request. */
  #checkedApp: unknown

  constructor(config: RateLimitConfig) {
    this.#logger = config.logger
    this.#prefix = config.prefix
    this.#trustProxy = config.validate.trustProxy && config.keysByIp
    this.#xForwardedFor = config.validate.xForwardedForHeader && config.keysByIp
    this.#singleCount = config.validate.singleCount
    let prefixes = prefixesByClient.get(config.client)
    if (!prefixes) {
      prefixes = new Set()
      prefixesByClient.set(config.client, prefixes)
    }
    if (config.validate.unsharedStore && prefixes.has(config.prefix)) {
      this.#warn(
        'ERK_SHARED_PREFIX',
        `another limiter on this Redis client already uses the prefix '${config.prefix}'; limiters sharing a ` +
          'prefix count the same requests together. Give each limiter its own `prefix`.',
      )
    }
    prefixes.add(config.prefix)
    if (config.validate.creationStack && createdInRequest()) {
      this.#warn(
        'ERK_CREATED_IN_REQUEST_HANDLER',
        'this limiter was created while Express was handling a request. Create each limiter once, when the app ' +
          'starts: one created per request parses its options every time and keeps no local block cache.',
      )
    }
  }

  /** Whether {@link onRequest} has anything left to check (one boolean read on the hot path). */
  get watchesRequests(): boolean {
    return this.#trustProxy || this.#xForwardedFor
  }

  /** The proxy checks, for a request keyed by its IP. */
  onRequest(req: Request): void {
    const app = req.app
    if (this.#trustProxy && app !== this.#checkedApp) {
      this.#checkedApp = app
      if (app?.get('trust proxy') === true) {
        this.#trustProxy = false
        this.#warn(
          'ERK_PERMISSIVE_TRUST_PROXY',
          "Express's `trust proxy` setting is true: any client can choose the IP it is limited by with an " +
            'X-Forwarded-For header. Set it to the number of proxies in front of the app, or their addresses.',
        )
      }
    }
    if (this.#xForwardedFor && req.headers['x-forwarded-for'] !== undefined && app?.get('trust proxy') === false) {
      this.#xForwardedFor = false
      this.#warn(
        'ERK_UNEXPECTED_X_FORWARDED_FOR',
        "a request came with an X-Forwarded-For header, but Express's `trust proxy` setting is false: behind a " +
          'proxy every client has its IP and shares one limit. Set `trust proxy` to the number of proxies in ' +
          'front of the app (or their addresses); if none is, ignore this or set `validate: { xForwardedForHeader: false }`.',
      )
    }
  }

  /** The double-count check, as the request is about to be counted under `redisKey` (the client's key in Redis). */
  onCount(req: Request, redisKey: string): void {
    if (!this.#singleCount) return
    const marked = req as unknown as Marked
    const seen = marked[COUNTED]
    let twice = false
    if (seen === undefined) marked[COUNTED] = redisKey
    else if (typeof seen === 'string') {
      if (seen === redisKey) twice = true
      else marked[COUNTED] = new Set([seen, redisKey])
    } else if (seen.has(redisKey)) twice = true
    else seen.add(redisKey)
    if (!twice) return
    this.#singleCount = false
    this.#warn(
      'ERK_DOUBLE_COUNT',
      `one request was counted twice under the prefix '${this.#prefix}' for the same client: the same limiter is ` +
        'mounted twice on its path, or two limiters share a prefix. Mount each limiter once, and give each its own `prefix`.',
    )
  }

  #warn(code: WarningCode, text: string): void {
    this.#logger.warn(warning('rateLimit', code, text))
  }
}

/** Whether Express's router is on the call stack: the limiter is being created inside a request handler. */
function createdInRequest(): boolean {
  const depth = Error.stackTraceLimit
  Error.stackTraceLimit = CREATION_STACK_DEPTH
  try {
    const stack = new Error('creation stack').stack ?? ''
    return IN_REQUEST_FRAMES.some((frame) => stack.includes(frame))
  } finally {
    Error.stackTraceLimit = depth
  }
}
