import type { NextFunction, Request, RequestHandler, Response } from 'express'
import { describe, RedisKitError } from '../shared/errors.js'
import { SESSION_HAS_DATA, SESSION_USER, sessionMarks } from '../shared/session-marks.js'
import { captureResponse } from './capture.js'
import { type CachedResponse, decodeEntry, encodeEntry } from './entry.js'
import { cacheStatus, defaultKeyParts, strongEtag, ttlSeconds, variantOf } from './http.js'
import { type CacheResponseOptions, checkTags, parseResponseOptions, type ResponseConfig } from './options.js'
import { REFRESH, type Refresh, startRefresh } from './refresh.js'
import { serveEntry } from './serve.js'
import type { Acquired, Fence, Lookup } from './store.js'

export { type CachedOptions, cached, invalidateTags } from './cached.js'
export type { CacheCommonOptions, CacheResponseOptions } from './options.js'
export { type Serializer, typedJson } from './serializer.js'

/** The middleware returned by {@link cacheResponse}. */
export interface CacheMiddleware extends RequestHandler {
  /** Removes every response this cache stored with any of `tags` (and cached() values with them), on every instance. */
  invalidateTags(tags: string[]): Promise<number>
}

/**
 * Caches `GET` responses in Redis, shared by every instance of the app: byte-identical
 * replays of what the handler produced (headers set before the cache, such as a rate
 * limit's, stay the current request's own), `Vary`-aware keys, RFC 9111's rules of what a
 * shared cache must not store, single-flight fills across processes,
 * stale-while-revalidate / stale-if-error, tags, and conditional requests. Adds
 * `X-Cache: HIT | MISS | STALE | BYPASS`, an RFC 9211 `Cache-Status` and `Age`.
 *
 * @example
 * ```ts
 * const cache = cacheResponse({ client, ttl: '5m', tags: ['users'] })
 * app.get('/users', cache, listUsers)
 * await cache.invalidateTags(['users'])
 * ```
 * @throws {TypeError} (code `ERK_INVALID_OPTION`) naming the first invalid option.
 */
export function cacheResponse(options: CacheResponseOptions): CacheMiddleware {
  const config = parseResponseOptions(options)
  const { store, warn } = config

  const middleware = async function cacheMiddleware(req: Request, res: Response, next: NextFunction) {
    if (req.method !== 'GET' && req.method !== 'HEAD') return next()
    let entryKey: string
    try {
      const bypass = bypassReason(req, config)
      if (bypass !== undefined) return skip(res, next, bypass)
      entryKey = store.entryKey(keyParts(req, config))
    } catch (error) {
      return next(error)
    }

    let acquired: Acquired
    const refreshing = (req as unknown as Record<symbol, Refresh | undefined>)[REFRESH]
    if (refreshing?.entryKey === entryKey) {
      // The background refresh of a stale entry (see startRefresh): it holds the lock already.
      acquired = { state: 'fill', lookup: refreshing.lookup }
    } else {
      try {
        acquired = await store.acquire(entryKey, (vary) => variantOf(req, vary), req.method === 'GET', warn)
      } catch (error) {
        warn('express-redis-kit cacheResponse: Redis unavailable, answering without the cache', error)
        return skip(res, next, 'redis-unavailable')
      }
    }

    const { lookup } = acquired
    const entry = lookup.entry && lookup.times ? decodeEntry(lookup.entry) : undefined
    switch (acquired.state) {
      case 'hit':
        if (!entry) break
        return serveEntry(req, res, entry, {
          xCache: 'HIT',
          cacheStatus: acquired.collapsed
            ? cacheStatus('miss', { collapsed: true, ttl: ttlSeconds(lookup.times!.freshUntil, lookup.now) })
            : cacheStatus('hit', { ttl: ttlSeconds(lookup.times!.freshUntil, lookup.now) }),
          age: ageOf(lookup),
        })
      case 'stale':
        if (!entry) {
          if (acquired.refresh) store.giveBack(entryKey, lookup.token, warn)
          break
        }
        serveEntry(req, res, entry, {
          xCache: 'STALE',
          cacheStatus: cacheStatus('hit', { ttl: ttlSeconds(lookup.times!.freshUntil, lookup.now) }),
          age: ageOf(lookup),
        })
        if (acquired.refresh) startRefresh(req, { entryKey, lookup }, store, warn)
        return
      case 'fill':
        return fill(req, res, next, config, entryKey, lookup)
    }
    // Nothing to serve and nothing to fill: the handler answers, nothing is stored.
    res.setHeader('X-Cache', 'MISS')
    res.setHeader('Cache-Status', cacheStatus('miss', acquired.state === 'origin' ? { detail: acquired.reason } : {}))
    next()
  } as CacheMiddleware

  middleware.invalidateTags = (tags: string[]) => store.invalidateTags(checkTags(tags, 'tags'))
  return middleware
}

/**
 * Why this request must neither be served from the cache nor stored, if it must not: it
 * carries credentials (`Authorization`), the `bypass` option says so, or its kit session
 * holds data (a signed-in user without `perUser`, or a guest's data).
 */
function bypassReason(req: Request, config: ResponseConfig): string | undefined {
  if (req.headers.authorization !== undefined) return 'authorization'
  if (config.bypass?.(req) === true) return 'bypass-option'
  const marks = sessionMarks(req)
  if (marks[SESSION_USER] !== undefined) return config.perUser ? undefined : 'session'
  if (marks[SESSION_HAS_DATA] === true) return 'session'
  return undefined
}

/** The parts of the entry's id; each part is encoded on its own (see CacheStore.entryKey). */
function keyParts(req: Request, config: ResponseConfig): string[] {
  let parts: string[]
  if (config.key) {
    const key = config.key(req)
    if (typeof key !== 'string')
      throw new RedisKitError(
        'ERK_INVALID_CALLBACK_RESULT',
        `express-redis-kit cacheResponse: the key option must return a string; it returned ${describe(key)}`,
      )
    parts = ['response', 'key', key]
  } else {
    parts = ['response', 'url', ...defaultKeyParts(req)]
  }
  const user = sessionMarks(req)[SESSION_USER]
  if (user !== undefined) parts.push('user', user)
  return parts
}

function skip(res: Response, next: NextFunction, reason: string): void {
  res.setHeader('X-Cache', 'BYPASS')
  res.setHeader('Cache-Status', cacheStatus('bypass', { detail: reason }))
  next()
}

const ageOf = (lookup: Lookup): number => Math.max(0, Math.floor((lookup.now - lookup.times!.storedAt) / 1000))

/**
 * This request holds the fill lock: the handler answers, and what it produced is stored
 * (see captureResponse). Waiters are released as soon as the response turns out not to be
 * storable; a 5xx is replaced by the stale entry when stale-if-error allows.
 */
async function fill(
  req: Request,
  res: Response,
  next: NextFunction,
  config: ResponseConfig,
  entryKey: string,
  lookup: Lookup,
): Promise<void> {
  const { store, warn } = config
  // Tags known now (the option's, or what a tags function gave this entry last time): their
  // invalidation counts, read before the handler runs, fence the fill.
  const known = Array.isArray(config.tags) ? config.tags : (lookup.lastTags ?? [])
  const fence: Fence = { counts: new Map(), startedAt: lookup.now }
  if (known.length > 0) {
    try {
      fence.counts = await store.invalidationCounts(known)
    } catch (error) {
      warn('express-redis-kit cacheResponse: Redis unavailable, answering without the cache', error)
      store.giveBack(entryKey, lookup.token, warn)
      return skip(res, next, 'redis-unavailable')
    }
  }
  // The handler must produce the full response to store, not a 304 for this client's copy:
  // the client's conditional headers are answered from the handler's response (see capture).
  const conditional: Record<string, string> = {}
  for (const name of ['if-none-match', 'if-modified-since']) {
    const value = req.headers[name]
    if (typeof value === 'string') conditional[name] = value
    delete req.headers[name]
  }
  const { times } = lookup
  const stale = lookup.entry && times && lookup.now < times.staleIfErrorUntil ? decodeEntry(lookup.entry) : undefined
  const forwardedBecause = lookup.entry ? 'stale' : 'miss'
  captureResponse(req, res, {
    maxBodyBytes: config.maxBodyBytes,
    statuses: config.statuses,
    conditional,
    serveStale:
      stale &&
      ((status) =>
        serveEntry(req, res, stale, {
          xCache: 'STALE',
          cacheStatus: cacheStatus('stale', {
            'fwd-status': status,
            ttl: ttlSeconds(times!.freshUntil, lookup.now),
            detail: 'stale-if-error',
          }),
          age: ageOf(lookup),
        })),
    onHead(status, unstorable, willStore) {
      if (res.headersSent) return
      res.setHeader(
        'Cache-Status',
        cacheStatus(forwardedBecause, { 'fwd-status': status, stored: willStore || undefined, detail: unstorable }),
      )
    },
    onRelease(uncacheable) {
      store.giveBack(entryKey, lookup.token, warn, uncacheable)
    },
    onStore(response, vary) {
      store.rememberVary(entryKey, vary)
      storeResponse(req, res, config, { entryKey, lookup, fence, response, vary })
    },
  })
  res.setHeader('X-Cache', 'MISS')
  next()
}

/** Stores a captured response under the variant of its vary spec, with its tags. */
function storeResponse(
  req: Request,
  res: Response,
  config: ResponseConfig,
  fill: { entryKey: string; lookup: Lookup; fence: Fence; response: CachedResponse; vary: string },
): void {
  const { store, warn } = config
  const { entryKey, lookup, fence, response, vary } = fill
  let tags: string[]
  try {
    tags = typeof config.tags === 'function' ? checkTags(config.tags(req, res), 'tags()') : config.tags
  } catch (error) {
    warn('express-redis-kit cacheResponse: the tags option failed; the response is not stored', error)
    store.giveBack(entryKey, lookup.token, warn)
    return
  }
  if (!response.headers.some(([name]) => name === 'etag')) response.headers.push(['etag', strongEtag(response.body)])
  store
    .store(entryKey, variantOf(req, vary), encodeEntry(response), vary, config.lifetimes, lookup.token, tags, fence)
    .catch((error) => warn('express-redis-kit cacheResponse: could not store a response', error))
}
