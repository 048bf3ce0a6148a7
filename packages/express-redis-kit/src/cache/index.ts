import type { NextFunction, Request, RequestHandler, Response } from 'express'
import { cacheChannel, publishCache } from '../shared/diagnostics.js'
import { describe, RedisKitError } from '../shared/errors.js'
import { SESSION_HAS_DATA, SESSION_USER, sessionMarks } from '../shared/session-marks.js'
import { captureResponse } from './capture.js'
import { type CachedResponse, decodeEntry, encodeMeta } from './entry.js'
import { type Freshness, freshnessOf, lifetimesOf } from './freshness.js'
import {
  cacheStatus,
  defaultKeyParts,
  NEVER_STORED,
  type StoredHeader,
  strongEtag,
  ttlSeconds,
  variantOf,
} from './http.js'
import { type CacheResponseOptions, checkTags, parseResponseOptions, type ResponseConfig } from './options.js'
import { REFRESH, type Refresh, startRefresh } from './refresh.js'
import { serveEntry } from './serve.js'
import { type Acquired, type Fence, type Lookup, publishAcquired } from './store.js'

export { type CachedOptions, cached, invalidateTags } from './cached.js'
export type { LocalCacheOptions } from './local.js'
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
    if (!SAFE_METHODS.has(req.method)) {
      if (config.invalidateOnUnsafe) invalidateOnSuccess(req, res, config)
      return next()
    }
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
      const started = cacheChannel.hasSubscribers ? performance.now() : 0
      try {
        acquired = await store.acquire(
          entryKey,
          (vary) => variantOf(req, vary),
          req.method === 'GET' && 'response',
          warn,
        )
      } catch (error) {
        warn('express-redis-kit cacheResponse: Redis unavailable, answering without the cache', error)
        return skip(res, next, 'redis-unavailable', entryKey, error)
      }
      if (cacheChannel.hasSubscribers) publishAcquired('cacheResponse', entryKey, acquired, started)
    }

    const { lookup } = acquired
    const entry = lookup.meta && lookup.body && lookup.times ? decodeEntry(lookup.meta, lookup.body) : undefined
    switch (acquired.state) {
      case 'hit':
        if (!entry) break
        return serveEntry(req, res, entry, {
          xCache: 'HIT',
          cacheStatus: acquired.collapsed
            ? cacheStatus('miss', { collapsed: true, ttl: ttlSeconds(lookup.times!.freshUntil, lookup.now) })
            : cacheStatus('hit', { ttl: ttlSeconds(lookup.times!.freshUntil, lookup.now) }),
          age: ageOf(entry, lookup),
        })
      case 'stale':
        if (!entry) {
          if (acquired.refresh) store.giveBack(entryKey, lookup.token, warn)
          break
        }
        serveEntry(req, res, entry, {
          xCache: 'STALE',
          cacheStatus: cacheStatus('hit', { ttl: ttlSeconds(lookup.times!.freshUntil, lookup.now) }),
          age: ageOf(entry, lookup),
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

  middleware.invalidateTags = (tags: string[]) => store.invalidateTags(checkTags(tags, 'tags'), 'cacheResponse')
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
  return sessionReason(req, config)
}

/**
 * Why the request's kit session makes its response private, if it does: it holds data (a
 * signed-in user without `perUser`, or a guest's data).
 */
function sessionReason(req: Request, config: ResponseConfig): string | undefined {
  const marks = sessionMarks(req)
  if (marks[SESSION_USER] !== undefined) return config.perUser ? undefined : 'session'
  if (marks[SESSION_HAS_DATA] === true) return 'session'
  return undefined
}

/** The parts of the entry's id; each part is encoded on its own (see CacheStore.entryKey). */
function keyParts(req: Request, config: ResponseConfig): string[] {
  let parts: string[]
  if (config.key) {
    parts = ['response', 'key', customKey(req, config.key)]
  } else {
    parts = ['response', 'url', ...defaultKeyParts(req)]
  }
  const user = sessionMarks(req)[SESSION_USER]
  if (user !== undefined) parts.push('user', user)
  return parts
}

/** What the `key` option returns for `req`, checked. */
function customKey(req: Request, key: (req: Request) => string): string {
  const value = key(req)
  if (typeof value !== 'string')
    throw new RedisKitError(
      'ERK_INVALID_CALLBACK_RESULT',
      `express-redis-kit cacheResponse: the key option must return a string; it returned ${describe(value)}`,
    )
  return value
}

function skip(res: Response, next: NextFunction, reason: string, key?: string, error?: unknown): void {
  publishCache(() =>
    error === undefined
      ? { source: 'cacheResponse', result: 'bypass', key, reason }
      : { source: 'cacheResponse', result: 'error', key, reason, error },
  )
  res.setHeader('X-Cache', 'BYPASS')
  res.setHeader('Cache-Status', cacheStatus('bypass', { detail: reason }))
  next()
}

/** An entry's `Age` (RFC 9111 4.2.3): the age it had when stored, plus its time in the cache (s). */
const ageOf = (entry: CachedResponse, lookup: Lookup): number =>
  Math.max(0, Math.floor((entry.initialAge + lookup.now - lookup.times!.storedAt) / 1000))

/**
 * The safe methods (RFC 9110 9.2.1). Any other method may change what is at a URL (RFC 9111
 * 4.4): POST, PUT, PATCH, DELETE, and extension methods such as WebDAV's.
 */
const SAFE_METHODS = new Set(['GET', 'HEAD', 'OPTIONS', 'TRACE'])

/**
 * RFC 9111 4.4: once the handler of an unsafe request answers 2xx or 3xx, invalidate what is
 * stored for its URL, and for its `Location` and `Content-Location` when they are on the same
 * host, on every instance (for a signed-in user with `perUser`, that user's entries too). The
 * response ends once the invalidation is done (one round trip per entry, in parallel), so that
 * a client that reads the URL again after it never gets the old entry; if Redis fails, the
 * failure is logged and the response ends all the same.
 */
function invalidateOnSuccess(req: Request, res: Response, config: ResponseConfig): void {
  const { end } = res
  res.end = function invalidatingEnd(this: Response, ...args: unknown[]) {
    res.end = end
    const finish = () => (end as (...a: unknown[]) => Response).apply(this, args)
    if (this.statusCode < 200 || this.statusCode >= 400) return finish()
    let keys: string[]
    try {
      keys = invalidatedEntries(req, this, config)
    } catch (error) {
      config.warn('express-redis-kit cacheResponse: could not invalidate after an unsafe request', error)
      return finish()
    }
    config.store
      .invalidateEntries(keys)
      .catch((error) =>
        config.warn('express-redis-kit cacheResponse: could not invalidate after an unsafe request', error),
      )
      .finally(finish)
    return this
  } as typeof res.end
}

/** The entries an unsafe request invalidates (see {@link invalidateOnSuccess}). */
function invalidatedEntries(req: Request, res: Response, config: ResponseConfig): string[] {
  const { store } = config
  const user = sessionMarks(req)[SESSION_USER]
  const entries = (parts: string[]) => [
    store.entryKey(parts),
    ...(user !== undefined ? [store.entryKey([...parts, 'user', user])] : []),
  ]
  if (config.key) return entries(['response', 'key', customKey(req, config.key)])
  const [protocol, host, path] = defaultKeyParts(req) as [string, string, string, string]
  const keys = entries(['response', 'url', ...defaultKeyParts(req)])
  for (const name of ['location', 'content-location']) {
    const value = res.getHeader(name)
    if (typeof value !== 'string') continue
    let url: URL
    try {
      url = new URL(value, `${protocol}://${host}${path}`)
    } catch {
      continue
    }
    if (url.host !== host || url.protocol !== `${protocol}:`) continue
    keys.push(...entries(['response', 'url', protocol, host, url.pathname, url.search]))
  }
  return keys
}

/**
 * This request holds the fill lock: the handler answers, and what it produced is stored
 * (see captureResponse). Waiters are released as soon as the response turns out not to be
 * storable. When a stale entry with validators is at hand, the handler is asked
 * conditionally: a 304 revalidates the entry (new headers and freshness, same body). A 5xx is
 * replaced by the stale entry when stale-if-error allows.
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
  const fence: Fence = { counts: new Map(), startedAt: lookup.now, invalidations: lookup.invalidations, byUrl: true }
  if (known.length > 0) {
    try {
      fence.counts = await store.invalidationCounts(known, entryKey)
    } catch (error) {
      warn('express-redis-kit cacheResponse: Redis unavailable, answering without the cache', error)
      store.giveBack(entryKey, lookup.token, warn)
      return skip(res, next, 'redis-unavailable', entryKey, error)
    }
  }
  const requestTime = Date.now()
  // The handler must produce the full response to store, not a 304 for this client's copy:
  // the client's conditional headers are answered from the handler's response (see capture).
  const conditional: Record<string, string> = {}
  for (const name of ['if-none-match', 'if-modified-since']) {
    const value = req.headers[name]
    if (typeof value === 'string') conditional[name] = value
    delete req.headers[name]
  }
  const { times } = lookup
  const stale = lookup.meta && lookup.body && times ? decodeEntry(lookup.meta, lookup.body) : undefined
  // Ask with the stale entry's own validators: a 304 spares the body.
  const validators = stale ? validatorsOf(stale) : {}
  Object.assign(req.headers, validators)
  const fallback = stale && lookup.now < times!.staleIfErrorUntil ? stale : undefined
  const forwardedBecause = stale ? 'stale' : 'miss'
  const keyedUser = sessionMarks(req)[SESSION_USER]
  captureResponse(req, res, {
    maxBodyBytes: config.maxBodyBytes,
    statuses: config.statuses,
    requestTime,
    conditional,
    serveStale:
      fallback &&
      ((status) =>
        serveEntry(req, res, fallback, {
          xCache: 'STALE',
          cacheStatus: cacheStatus('stale', {
            'fwd-status': status,
            ttl: ttlSeconds(times!.freshUntil, lookup.now),
            detail: 'stale-if-error',
          }),
          age: ageOf(fallback, lookup),
        })),
    revalidated:
      stale && Object.keys(validators).length > 0
        ? (headers, responseTime, unstorable) => {
            const variant = variantOf(req, lookup.vary ?? '')
            const revalidated = revalidate(stale, headers, requestTime, responseTime)
            if (unstorable !== undefined) {
              // RFC 9111 section 3: what the origin now says is private is not kept; this
              // client gets the entry as the 304 updated it, the next request asks the origin.
              publishCache(() => ({ source: 'cacheResponse', result: 'refused', key: entryKey, reason: unstorable }))
              store.drop(entryKey, variant, lookup.token).catch((error) => {
                warn('express-redis-kit cacheResponse: could not drop a response its revalidation made private', error)
                store.giveBack(entryKey, lookup.token, warn, true)
              })
              return serveEntry(req, res, revalidated.entry, {
                xCache: 'REVALIDATED',
                cacheStatus: cacheStatus('stale', { 'fwd-status': 304, detail: unstorable }),
                age: Math.floor(revalidated.entry.initialAge / 1000),
              })
            }
            const lifetimes = lifetimesOf(revalidated.freshness, config.settings)
            store
              .revalidate(
                entryKey,
                variant,
                encodeMeta(revalidated.entry),
                lifetimes,
                responseTime,
                lookup.token,
                lookup.invalidations,
              )
              .catch((error) => {
                warn('express-redis-kit cacheResponse: could not update a revalidated response', error)
                store.giveBack(entryKey, lookup.token, warn)
              })
            serveEntry(req, res, revalidated.entry, {
              xCache: 'REVALIDATED',
              cacheStatus: cacheStatus('stale', { 'fwd-status': 304, ttl: Math.floor(lifetimes.ttl / 1000) }),
              age: Math.floor(revalidated.entry.initialAge / 1000),
            })
          }
        : undefined,
    // The handler put data in the session (a guest's token) or signed someone in or out.
    turnedPrivate: () => (sessionMarks(req)[SESSION_USER] !== keyedUser ? 'session' : sessionReason(req, config)),
    onHead(status, unstorable, willStore) {
      if (res.headersSent) return
      res.setHeader(
        'Cache-Status',
        cacheStatus(forwardedBecause, { 'fwd-status': status, stored: willStore || undefined, detail: unstorable }),
      )
    },
    onRelease(uncacheable, reason) {
      publishCache(() => ({ source: 'cacheResponse', result: 'refused', key: entryKey, reason }))
      store.giveBack(entryKey, lookup.token, warn, uncacheable)
    },
    onStore(response, vary, freshness, responseTime) {
      store.rememberVary(entryKey, vary)
      storeResponse(req, res, config, { entryKey, lookup, fence, response, vary, freshness, responseTime })
    },
  })
  res.setHeader('X-Cache', 'MISS')
  next()
}

/** The conditional headers that revalidate `entry`: its `ETag` (unless the cache made it) and `Last-Modified`. */
function validatorsOf(entry: CachedResponse): Record<string, string> {
  const validators: Record<string, string> = {}
  for (const [name, value] of entry.headers) {
    if (typeof value !== 'string') continue
    if (name === 'etag' && !entry.generatedEtag) validators['if-none-match'] = value
    if (name === 'last-modified') validators['if-modified-since'] = value
  }
  return validators
}

/**
 * A stale entry revalidated by a 304 (RFC 9111 4.3.4): the 304's headers replace the stored
 * ones of the same name (but Content-Length), and its Date (or the time it came) is the
 * entry's; the body stays. Returns the entry and its new freshness.
 */
function revalidate(
  stale: CachedResponse,
  headers: StoredHeader[],
  requestTime: number,
  responseTime: number,
): { entry: CachedResponse; freshness: Freshness } {
  const updates = headers.filter(([name]) => name !== 'content-length' && !NEVER_STORED.has(name))
  if (!updates.some(([name]) => name === 'date')) updates.push(['date', new Date(responseTime).toUTCString()])
  const replaced = new Set(updates.map(([name]) => name))
  const merged = [...stale.headers.filter(([name]) => !replaced.has(name)), ...updates]
  const generatedEtag = stale.generatedEtag && !replaced.has('etag')
  // The cache's own ETag is not a validator of the origin's.
  const origin = generatedEtag ? merged.filter(([name]) => name !== 'etag') : merged
  const freshness = freshnessOf(origin, requestTime, responseTime)
  return { entry: { ...stale, headers: merged, generatedEtag, initialAge: freshness.initialAge }, freshness }
}

/** Stores a captured response under the variant of its vary spec, with its tags. */
function storeResponse(
  req: Request,
  res: Response,
  config: ResponseConfig,
  fill: {
    entryKey: string
    lookup: Lookup
    fence: Fence
    response: CachedResponse
    vary: string
    freshness: Freshness
    responseTime: number
  },
): void {
  const { store, warn } = config
  const { entryKey, lookup, fence, response, vary, freshness, responseTime } = fill
  let tags: string[]
  try {
    tags = typeof config.tags === 'function' ? checkTags(config.tags(req, res), 'tags()') : config.tags
  } catch (error) {
    publishCache(() => ({ source: 'cacheResponse', result: 'refused', key: entryKey, reason: 'tags-error', error }))
    warn('express-redis-kit cacheResponse: the tags option failed; the response is not stored', error)
    store.giveBack(entryKey, lookup.token, warn)
    return
  }
  if (!response.headers.some(([name]) => name === 'etag')) {
    response.headers.push(['etag', strongEtag(response.body)])
    response.generatedEtag = true
  }
  const lifetimes = lifetimesOf(freshness, config.settings)
  store
    .store(
      entryKey,
      variantOf(req, vary),
      encodeMeta(response),
      response.body,
      vary,
      lifetimes,
      responseTime,
      lookup.token,
      tags,
      fence,
      // The response has gone out: a large body may take longer than a lookup's timeout.
      store.afterResponseTimeoutMs,
    )
    .then(
      (stored) =>
        publishCache(() =>
          stored
            ? { source: 'cacheResponse', result: 'stored', key: entryKey }
            : { source: 'cacheResponse', result: 'refused', key: entryKey, reason: 'invalidated' },
        ),
      (error) => {
        publishCache(() => ({
          source: 'cacheResponse',
          result: 'refused',
          key: entryKey,
          reason: 'redis-error',
          error,
        }))
        warn('express-redis-kit cacheResponse: could not store a response', error)
      },
    )
}
