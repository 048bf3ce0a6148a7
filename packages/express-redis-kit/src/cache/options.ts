import type { Request, Response } from 'express'
import { type Duration, parseDuration, type SecondsCheck } from '../shared/duration.js'
import { type Logger, throttledLogger, type Warn } from '../shared/logger.js'
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
import type { LifetimeSettings } from './freshness.js'
import { type LocalCacheOptions, localCacheOf, parseLocalCache } from './local.js'
import { CacheStore, type Lifetimes } from './store.js'

export { check }

/** Options shared by cacheResponse() and cached(). */
export interface CacheCommonOptions {
  /**
   * How long an entry is fresh. For cacheResponse, the lifetime of a response whose headers
   * say nothing about it (see `freshness`); a response with validators (`ETag`,
   * `Last-Modified`) is also kept this long past its freshness, to be revalidated.
   * @default '5m'
   */
  ttl?: Duration
  /**
   * Once stale, how long an entry is still served while one caller refreshes it. For
   * cacheResponse, a response's own `stale-while-revalidate` (RFC 5861) extends it, and
   * `must-revalidate`, `proxy-revalidate`, `s-maxage` or `no-cache` forbid it.
   * @default 0 (off)
   */
  staleWhileRevalidate?: Duration | 0
  /**
   * Once stale, how long an entry is served when the origin fails (throws, or answers 5xx).
   * For cacheResponse, a response's own `stale-if-error` extends it, and `must-revalidate`,
   * `proxy-revalidate`, `s-maxage` or `no-cache` forbid it.
   * @default 0 (off)
   */
  staleIfError?: Duration | 0
  /**
   * Prefix of every key. `invalidateTags` must be given the same one.
   * @default 'cache:'
   */
  prefix?: string
  /**
   * The longest one fill holds the single-flight lock: if its holder dies, another caller
   * takes over after this. Callers waiting for a fill wait at most this long.
   * @default '5s'
   */
  lockTimeout?: Duration
  /**
   * The longest a request waits for Redis before going to the origin without the cache.
   * cacheResponse stores a response once it has gone out, with no request waiting: each
   * command of that store may take up to `lockTimeout` (if longer), since a large body takes
   * far longer to reach Redis than a lookup.
   * @default 500
   */
  timeoutMs?: number
  /**
   * Receives warnings (Redis unavailable: at most one per 5 s).
   * @default console
   */
  logger?: Logger
  /**
   * Keeps fresh entries in this process's memory too, and serves them with no Redis command,
   * kept coherent across every instance by Redis's server-assisted client-side caching
   * (`CLIENT TRACKING` in broadcasting mode): after an entry is replaced, invalidated or
   * expires anywhere, no instance serves the old one more than `fenceMs` later. `true` for
   * the defaults, or `{ maxBytes, fenceMs }` (see {@link LocalCacheOptions}). Costs one more
   * connection per Redis node (per master on a Cluster) per process, shared by every cache of
   * the client, and Redis pushes every change of a cache key to every process that tracks it.
   * Needs node-redis 5.9 or later (`emitInvalidate`): with an older client it warns once and
   * serves every hit from Redis. Misses, stale entries, locks and tags work exactly as without it.
   * @default false
   */
  localCache?: boolean | LocalCacheOptions
}

export interface CommonConfig {
  store: CacheStore
  lifetimes: Lifetimes
  /** Logs a warning through the `logger` option: each kind at most once per 5 s per logger (see shared/logger.ts). */
  warn: Warn
  /** For the durations of the entry point's own options (see parseDuration). */
  secondsCheck: SecondsCheck
}

/** The entry points that take the common options. */
type EntryPoint = 'cacheResponse' | 'cached' | 'invalidateTags'

const COMMON_OPTIONS = [
  'ttl',
  'staleWhileRevalidate',
  'staleIfError',
  'prefix',
  'lockTimeout',
  'timeoutMs',
  'logger',
  'localCache',
]

const ONE_STORE = notNeeded('there is one store: Redis')

/** Option names of cache-manager that are not ours. */
const CACHE_MANAGER_OPTIONS: Hints = {
  store: use('client', 'the node-redis client itself, no store object'),
  stores: use('client', 'the node-redis client itself, no store object'),
  refreshThreshold: use('staleWhileRevalidate', 'once stale, an entry is served while one caller refreshes it'),
  max: notNeeded(
    'entries live in Redis, bounded by its `maxmemory`; `localCache: { maxBytes }` bounds the copies kept in memory',
  ),
  nonBlocking: ONE_STORE,
  refreshAllStores: ONE_STORE,
  cacheId: use('prefix'),
}

/** Option names of apicache (and of other response caches) that are not ours. */
const RESPONSE_PEER_OPTIONS: Hints = {
  ...CACHE_MANAGER_OPTIONS,
  expire: use('ttl'),
  duration: use('ttl'),
  defaultDuration: use('ttl'),
  enabled: use('bypass', '`() => true` bypasses the cache; or mount it only where caching is wanted'),
  redisClient: use('client'),
  appendKey: use('key', 'it returns the whole key, computed from the request'),
  statusCodes: use('statuses', 'an array of the statuses that are stored'),
  headerBlacklist: notSupported(
    'a response is stored with its headers, and one with `Set-Cookie` is never stored: remove a header in the handler',
  ),
  headers: notSupported('the headers the handler sets are stored and replayed: set them there'),
  events: notSupported("no callbacks: subscribe to the 'express-redis-kit:cache' diagnostics channel"),
  debug: notNeeded("every lookup and fill is published on the 'express-redis-kit:cache' diagnostics channel"),
  trackPerformance: notNeeded('`enableMetrics()` counts hits, misses and fills'),
  respectCacheControl: notSupported(
    "a client's `Cache-Control: no-cache` never forces a request through to the handler; clients revalidate with `If-None-Match`",
  ),
  jsonp: notNeeded('the query string is part of the key'),
}

/** Each entry point's own option names, and the hints for names that are not ours. */
const ENTRY_POINTS: Record<EntryPoint, { names: ReadonlySet<string>; hints: Hints }> = {
  cacheResponse: {
    names: new Set([
      ...COMMON_OPTIONS,
      'client',
      'tags',
      'statuses',
      'maxBodyBytes',
      'key',
      'perUser',
      'bypass',
      'freshness',
      'maxTtl',
      'invalidateOnUnsafe',
    ]),
    hints: RESPONSE_PEER_OPTIONS,
  },
  cached: {
    names: new Set([...COMMON_OPTIONS, 'tags', 'negativeTtl', 'serializer']),
    hints: {
      ...CACHE_MANAGER_OPTIONS,
      isCacheable: use('negativeTtl', 'every value is cached, `null` and `undefined` for `negativeTtl`'),
      client: notNeeded("the client is cached()'s first argument"),
    },
  },
  invalidateTags: { names: new Set(['prefix', 'timeoutMs']), hints: {} },
}

const stores = new WeakMap<RedisClient, Map<string, CacheStore>>()
const warners = new WeakMap<Logger, Warn>()

/** One throttled warning function per logger, so that cached() calls share its throttle. */
function warnerFor(logger: Logger): Warn {
  let warn = warners.get(logger)
  if (!warn) {
    warn = throttledLogger(logger, 'warn')
    warners.set(logger, warn)
  }
  return warn
}

const optionalDuration = (value: unknown, option: string, secondsCheck: SecondsCheck): number =>
  value === undefined || value === 0 ? 0 : parseDuration(value, option, secondsCheck)

/**
 * Validates the shared options, and refuses option names `entryPoint` does not have; one
 * CacheStore per client and settings is reused.
 */
export function parseCommonOptions(
  client: RedisClient,
  options: CacheCommonOptions,
  entryPoint: EntryPoint,
): CommonConfig {
  check(typeof options === 'object' && options !== null, 'options', 'an object', options)
  const { names, hints } = ENTRY_POINTS[entryPoint]
  rejectUnknownOptions(options, names, hints)
  parseClient(client)
  const logger = parseLogger(options.logger)
  const secondsCheck: SecondsCheck = { logger, feature: entryPoint }
  const ttl = parseDuration(options.ttl ?? '5m', 'ttl', secondsCheck)
  const staleWhileRevalidate = optionalDuration(options.staleWhileRevalidate, 'staleWhileRevalidate', secondsCheck)
  const staleIfError = optionalDuration(options.staleIfError, 'staleIfError', secondsCheck)
  const prefix = parsePrefix(options.prefix, 'cache:')
  const lockMs = parseDuration(options.lockTimeout ?? '5s', 'lockTimeout', secondsCheck)
  const timeoutMs = parseTimeoutMs(options.timeoutMs)
  const localCache = parseLocalCache(options.localCache)
  warnIfNotConnected(client, logger, entryPoint)

  let byClient = stores.get(client)
  if (!byClient) {
    byClient = new Map()
    stores.set(client, byClient)
  }
  const warn = warnerFor(logger)
  const id = `${prefix}\n${timeoutMs}\n${lockMs}\n${localCache ? 'local' : ''}`
  const local = localCache ? localCacheOf(client, localCache, prefix, warn) : undefined
  let store = byClient.get(id)
  if (!store || store.local !== local) {
    store = new CacheStore(client, prefix, timeoutMs, lockMs, local)
    byClient.set(id, store)
  }
  return { store, lifetimes: { ttl, staleWhileRevalidate, staleIfError }, warn, secondsCheck }
}

/** Options of {@link cacheResponse}. Only `client` is required. */
export interface CacheResponseOptions extends CacheCommonOptions {
  /** A connected node-redis client or Redis Cluster client. */
  client: RedisClient
  /**
   * Tags of the stored response, as an array or `(req, res) => string[]` (called when the
   * response is complete), for {@link CacheMiddleware.invalidateTags}.
   * @default []
   */
  tags?: string[] | ((req: Request, res: Response) => string[])
  /**
   * Response statuses that are stored.
   * @default [200]
   */
  statuses?: number[]
  /**
   * Larger bodies are not stored.
   * @default 1_048_576 (1 MiB)
   */
  maxBodyBytes?: number
  /**
   * Replaces the default key: protocol, host (`X-Forwarded-Host` only when `trust proxy`
   * trusts it), the path exactly as Express routes it, and the query exactly as sent (not
   * reordered: `?a=1&b=2` and `?b=2&a=1` are two entries). The request headers named by the
   * response's `Vary` are always added. Whatever it returns is one part of the key: it cannot
   * pass for the user part `perUser` adds. Requests it maps to the same string share an entry,
   * so it must tell apart every two requests the handler answers differently.
   * @default protocol + host + path + query as sent
   */
  key?: (req: Request) => string
  /**
   * By default a request whose kit session holds data (a signed-in user, or a guest's cart)
   * bypasses the cache, so that a response built from one session is never served to
   * another. `true` caches the requests of a session bound to a user (the `session`
   * middleware's `userKey`) under a key of their own per user instead; a session with data
   * but no user still bypasses.
   * @default false
   */
  perUser?: boolean
  /**
   * Who decides how long a response is fresh. `'response'`: its headers, as a shared cache
   * reads them (RFC 9111 4.2): `CDN-Cache-Control` (RFC 9213, which then replaces
   * `Cache-Control`), else `s-maxage`, `max-age`, `Expires` minus `Date`, less the `Age` it
   * already had; `ttl` when they say nothing. `'ttl'`: `ttl` always, whatever they say. In both,
   * `no-store` and `private` are never stored, and `no-cache` is revalidated on every use.
   * @default 'response'
   */
  freshness?: 'response' | 'ttl'
  /**
   * No response is fresh for longer than this, whatever its headers say.
   * @default none (no cap)
   */
  maxTtl?: Duration
  /**
   * A request with an unsafe method (`POST`, `PUT`, `PATCH`, `DELETE`, any method but `GET`,
   * `HEAD`, `OPTIONS` and `TRACE`) through the middleware that succeeds (2xx, 3xx)
   * invalidates what is stored for its URL, and for its `Location` and `Content-Location` on
   * the same host (RFC 9111 4.4), on every instance; the response ends once that is done.
   * With `key`, the entry `key` gives the request is invalidated. `false` turns it off.
   * @default true
   */
  invalidateOnUnsafe?: boolean
  /**
   * Requests for which it returns `true` bypass the cache (`X-Cache: BYPASS`): neither
   * served from it nor stored. For credentials the cache cannot see, e.g.
   * `(req) => req.cookies.jwt !== undefined` or `(req) => req.get('x-api-key') !== undefined`.
   * Requests with an `Authorization` header always bypass.
   * @default none
   */
  bypass?: (req: Request) => boolean
}

/** cacheResponse's own options, checked. */
export interface ResponseConfig extends CommonConfig {
  tags: string[] | ((req: Request, res: Response) => string[])
  statuses: number[]
  maxBodyBytes: number
  key: ((req: Request) => string) | undefined
  perUser: boolean
  bypass: ((req: Request) => boolean) | undefined
  /** What decides each stored response's lifetimes. */
  settings: LifetimeSettings
  invalidateOnUnsafe: boolean
}

/** Validates cacheResponse()'s options. */
export function parseResponseOptions(options: CacheResponseOptions): ResponseConfig {
  check(typeof options === 'object' && options !== null, 'options', 'an object', options)
  const common = parseCommonOptions(options.client, options, 'cacheResponse')
  const tags = options.tags ?? []
  if (typeof tags !== 'function') checkTags(tags, 'tags')
  const statuses = options.statuses ?? [200]
  check(
    Array.isArray(statuses) && statuses.every((status) => Number.isInteger(status) && status >= 100 && status <= 599),
    'statuses',
    'an array of HTTP statuses',
    statuses,
  )
  const maxBodyBytes = options.maxBodyBytes ?? 1_048_576
  check(Number.isSafeInteger(maxBodyBytes) && maxBodyBytes >= 0, 'maxBodyBytes', 'a non-negative integer', maxBodyBytes)
  check(options.key === undefined || typeof options.key === 'function', 'key', 'a function', options.key)
  const perUser = options.perUser ?? false
  check(typeof perUser === 'boolean', 'perUser', 'a boolean', perUser)
  check(options.bypass === undefined || typeof options.bypass === 'function', 'bypass', 'a function', options.bypass)
  const freshness = options.freshness ?? 'response'
  check(freshness === 'response' || freshness === 'ttl', 'freshness', "'response' or 'ttl'", freshness)
  const maxTtl =
    options.maxTtl === undefined
      ? Number.POSITIVE_INFINITY
      : parseDuration(options.maxTtl, 'maxTtl', common.secondsCheck)
  const invalidateOnUnsafe = options.invalidateOnUnsafe ?? true
  check(typeof invalidateOnUnsafe === 'boolean', 'invalidateOnUnsafe', 'a boolean', invalidateOnUnsafe)
  return {
    ...common,
    tags,
    statuses,
    maxBodyBytes,
    key: options.key,
    perUser,
    bypass: options.bypass,
    settings: { ...common.lifetimes, freshness, maxTtl },
    invalidateOnUnsafe,
  }
}

/** Validates a list of tags. */
export function checkTags(tags: unknown, option: string): string[] {
  check(
    Array.isArray(tags) && tags.every((tag) => typeof tag === 'string' && tag.length > 0),
    option,
    'an array of non-empty strings',
    tags,
  )
  return tags as string[]
}
