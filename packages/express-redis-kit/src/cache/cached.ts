import { cacheChannel, publishCache } from '../shared/diagnostics.js'
import type { Duration } from '../shared/duration.js'
import { parseDuration } from '../shared/duration.js'
import { RedisKitError } from '../shared/errors.js'
import type { Warn } from '../shared/logger.js'
import type { RedisClient } from '../shared/redis.js'
import { type CacheCommonOptions, check, checkTags, parseCommonOptions } from './options.js'
import { type Serializer, typedJson } from './serializer.js'
import { type Acquired, type CacheStore, type Fence, type Lifetimes, type Lookup, publishAcquired } from './store.js'

/** Options of {@link cached}. */
export interface CachedOptions extends CacheCommonOptions {
  /**
   * Tags to invalidate the value by (see {@link invalidateTags}).
   * @default []
   */
  tags?: string[]
  /**
   * How long a "not found" (`null` or `undefined` from the loader) is cached.
   * @default '30s'
   */
  negativeTtl?: Duration
  /**
   * How values are stored.
   * @default typedJson (JSON that keeps Date, BigInt, Map, Set, undefined, NaN and Infinity)
   */
  serializer?: Serializer
}

/**
 * Read-through cache: the value under `key`, or what `loader` returns (then stored).
 * Concurrent misses of the same key, from any number of processes, run `loader` once;
 * a cached `null`, `0`, `''` or `false` is a hit; a loader that throws caches nothing and
 * its error reaches the caller. Redis failing never fails the call: `loader` runs.
 *
 * @example
 * ```ts
 * const user = await cached(client, `user:${id}`, { ttl: '5m', tags: [`user:${id}`] },
 *   () => prisma.user.findUnique({ where: { id } }))
 * ```
 * @throws {TypeError} (code `ERK_INVALID_OPTION`) for invalid options, before anything runs.
 */
export async function cached<T>(
  client: RedisClient,
  key: string,
  options: CachedOptions,
  loader: () => T | Promise<T>,
): Promise<T> {
  const { store, lifetimes, warn, secondsCheck } = parseCommonOptions(client, options, 'cached')
  check(typeof key === 'string' && key.length > 0, 'key', 'a non-empty string', key)
  check(typeof loader === 'function', 'loader', 'a function', loader)
  const tags = checkTags(options.tags ?? [], 'tags')
  const negativeTtl = parseDuration(options.negativeTtl ?? '30s', 'negativeTtl', secondsCheck)
  const serializer = options.serializer ?? typedJson
  check(
    typeof serializer?.serialize === 'function' && typeof serializer?.deserialize === 'function',
    'serializer',
    'an object with serialize() and deserialize()',
    serializer,
  )
  const entryKey = store.entryKey(['cached', key])
  const common = { store, entryKey, loader, serializer, lifetimes, negativeTtl, tags, warn }
  const read = (entry: Buffer | undefined): { value: T } | undefined => {
    if (!entry) return undefined
    try {
      return { value: serializer.deserialize(entry.toString()) as T }
    } catch (error) {
      warn('express-redis-kit cached: a stored value could not be read; loading it again', error)
      return undefined
    }
  }

  let acquired: Acquired
  const started = cacheChannel.hasSubscribers ? performance.now() : 0
  try {
    acquired = await store.acquire(entryKey, () => '', 'value', warn)
  } catch (error) {
    publishCache(() => ({ source: 'cached', result: 'error', key: entryKey, error }))
    warn('express-redis-kit cached: Redis unavailable, calling the loader without the cache', error)
    return loader()
  }
  if (cacheChannel.hasSubscribers) publishAcquired('cached', entryKey, acquired, started)
  const { lookup } = acquired
  switch (acquired.state) {
    case 'hit': {
      const stored = read(lookup.body)
      if (stored) return stored.value
      break
    }
    case 'stale': {
      // Within stale-while-revalidate: answer now; the lock owner refreshes in the background.
      const stored = read(lookup.body)
      const fill = acquired.refresh ? load({ ...common, lookup }) : undefined
      if (stored) {
        fill?.catch((error) => warn('express-redis-kit cached: the background refresh failed', error))
        return stored.value
      }
      if (fill) return fill
      break
    }
    case 'fill':
      return load({ ...common, lookup })
  }
  return loader()
}

/** Everything one fill needs. */
interface Fill<T> {
  store: CacheStore
  entryKey: string
  /** The lookup that took the lock. */
  lookup: Lookup
  loader: () => T | Promise<T>
  serializer: Serializer
  lifetimes: Lifetimes
  negativeTtl: number
  tags: string[]
  warn: Warn
}

/** Runs the loader for the lock owner and stores its value (or serves the stale one if it throws). */
async function load<T>(fill: Fill<T>): Promise<T> {
  const { store, entryKey, lookup, loader, serializer, lifetimes, negativeTtl, tags, warn } = fill
  const fence: Fence = { counts: new Map(), startedAt: lookup.now, invalidations: lookup.invalidations, byUrl: false }
  if (tags.length > 0) {
    try {
      fence.counts = await store.invalidationCounts(tags, entryKey)
    } catch (error) {
      warn('express-redis-kit cached: Redis unavailable, calling the loader without the cache', error)
      store.giveBack(entryKey, lookup.token, warn)
      return loader()
    }
  }
  let value: T
  try {
    value = await loader()
  } catch (error) {
    store.giveBack(entryKey, lookup.token, warn)
    const { times } = lookup
    if (lookup.body && times && lookup.now < times.staleIfErrorUntil) {
      try {
        return serializer.deserialize(lookup.body.toString()) as T
      } catch (readError) {
        warn('express-redis-kit cached: the stale value could not be read', readError)
      }
    }
    throw error
  }
  let text: string
  try {
    text = serializer.serialize(value)
    check(typeof text === 'string', 'serializer', 'an object whose serialize() returns a string', text)
  } catch (error) {
    // A value that cannot be stored as it is: an error of the caller's, never a silent loss.
    store.giveBack(entryKey, lookup.token, warn)
    throw error instanceof RedisKitError
      ? error
      : new RedisKitError('ERK_UNSERIALIZABLE', `express-redis-kit cached: the serializer could not store the value`, {
          cause: error,
        })
  }
  const notFound = value === null || value === undefined
  const entryLifetimes = notFound ? { ...lifetimes, ttl: negativeTtl } : lifetimes
  try {
    const stored = await store.store(
      entryKey,
      '',
      '',
      Buffer.from(text),
      '',
      entryLifetimes,
      Date.now(),
      lookup.token,
      tags,
      fence,
    )
    publishCache(() =>
      stored
        ? { source: 'cached', result: 'stored', key: entryKey }
        : { source: 'cached', result: 'refused', key: entryKey, reason: 'invalidated' },
    )
  } catch (error) {
    publishCache(() => ({ source: 'cached', result: 'refused', key: entryKey, reason: 'redis-error', error }))
    warn('express-redis-kit cached: could not store a value', error)
    store.giveBack(entryKey, lookup.token, warn)
  }
  return value
}

/**
 * Removes every cached value and response carrying any of `tags`, on every instance.
 * Resolves to the number of entries removed. Pass the same `prefix` as the cache (default `'cache:'`).
 * Rejects with `ERK_REDIS_UNAVAILABLE` when Redis (on a Cluster, a shard holding a copy of a
 * tag's fence or one of its entries) could not be reached: what it reached is invalidated, and
 * what it could not delete is left for the next call to find. Call it again once Redis is back.
 */
export async function invalidateTags(
  client: RedisClient,
  tags: string[],
  options: Pick<CacheCommonOptions, 'prefix' | 'timeoutMs'> = {},
): Promise<number> {
  const { store } = parseCommonOptions(client, options, 'invalidateTags')
  return store.invalidateTags(checkTags(tags, 'tags'), 'invalidateTags')
}
