import { check, parseLogger, parsePrefix, parseTimeoutMs } from '../shared/options.js'

export { check }

import { type Duration, parseDuration } from '../shared/duration.js'
import { type Logger, throttledLogger } from '../shared/logger.js'
import { isRedisClient, type RedisClient } from '../shared/redis.js'
import { CacheStore, type Lifetimes } from './store.js'

/** Options shared by cacheResponse() and cached(). */
export interface CacheCommonOptions {
  /**
   * How long an entry is fresh.
   * @default '5m'
   */
  ttl?: Duration
  /**
   * After `ttl`, how long a stale entry is still served while one caller refreshes it.
   * @default 0 (off)
   */
  staleWhileRevalidate?: Duration | 0
  /**
   * After `ttl`, how long a stale entry is served when the origin fails (throws, or answers 5xx).
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
   * @default 500
   */
  timeoutMs?: number
  /**
   * Receives warnings (Redis unavailable: at most one per 5 s).
   * @default console
   */
  logger?: Logger
}

export interface CommonConfig {
  store: CacheStore
  lifetimes: Lifetimes
  /** Logs a warning through the `logger` option, at most once per 5 s per logger. */
  warn: (message: string, error?: unknown) => void
}

const stores = new WeakMap<RedisClient, Map<string, CacheStore>>()
const warners = new WeakMap<Logger, (message: string, error?: unknown) => void>()

/** One throttled warning function per logger, so that cached() calls share its throttle. */
function warnerFor(logger: Logger): (message: string, error?: unknown) => void {
  let warn = warners.get(logger)
  if (!warn) {
    warn = throttledLogger(logger, 'warn')
    warners.set(logger, warn)
  }
  return warn
}

const optionalDuration = (value: unknown, option: string): number =>
  value === undefined || value === 0 ? 0 : parseDuration(value, option)

/** Validates the shared options; one CacheStore per client and settings is reused. */
export function parseCommonOptions(client: RedisClient, options: CacheCommonOptions): CommonConfig {
  check(isRedisClient(client), 'client', 'a node-redis client or cluster', client)
  check(typeof options === 'object' && options !== null, 'options', 'an object', options)
  const ttl = parseDuration(options.ttl ?? '5m', 'ttl')
  const staleWhileRevalidate = optionalDuration(options.staleWhileRevalidate, 'staleWhileRevalidate')
  const staleIfError = optionalDuration(options.staleIfError, 'staleIfError')
  const prefix = parsePrefix(options.prefix, 'cache:')
  const lockMs = parseDuration(options.lockTimeout ?? '5s', 'lockTimeout')
  const timeoutMs = parseTimeoutMs(options.timeoutMs)
  const logger = parseLogger(options.logger)

  let byClient = stores.get(client)
  if (!byClient) {
    byClient = new Map()
    stores.set(client, byClient)
  }
  const id = `${prefix}\n${timeoutMs}\n${lockMs}`
  let store = byClient.get(id)
  if (!store) {
    store = new CacheStore(client, prefix, timeoutMs, lockMs)
    byClient.set(id, store)
  }
  return { store, lifetimes: { ttl, staleWhileRevalidate, staleIfError }, warn: warnerFor(logger) }
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
