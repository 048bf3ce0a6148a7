import { createHash } from 'node:crypto'
import { IncomingMessage, ServerResponse } from 'node:http'
import type { Socket } from 'node:net'
import { Duplex } from 'node:stream'
import { setTimeout as sleep } from 'node:timers/promises'
import type { NextFunction, Request, RequestHandler, Response } from 'express'
import { SESSION_USER } from '../session/index.js'
import type { RedisClient } from '../shared/redis.js'
import { type CachedResponse, decodeEntry, type EntryTimes, encodeEntry } from './entry.js'
import { type CacheCommonOptions, check, checkTags, parseCommonOptions } from './options.js'
import { type CacheStore, type Lookup, POLL_MS } from './store.js'

export { type CachedOptions, cached, invalidateTags } from './cached.js'
export type { CacheCommonOptions } from './options.js'
export { type Serializer, typedJson } from './serializer.js'

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
   * Replaces the default key (path and query, parameters in a canonical order). The
   * request headers named by the response's `Vary` are always added.
   * @default path + sorted query
   */
  key?: (req: Request) => string
  /**
   * By default a request whose session is bound to a user (the `session` middleware's
   * `userKey`) bypasses the cache, so that a response built for one user is never served
   * to another. `true` caches such requests under a key of their own per user instead.
   * @default false
   */
  perUser?: boolean
}

/** The middleware returned by {@link cacheResponse}. */
export interface CacheMiddleware extends RequestHandler {
  /** Removes every response this cache stored with any of `tags` (and cached() values with them), on every instance. */
  invalidateTags(tags: string[]): Promise<number>
}

/** Response headers never stored: they belong to one response or one connection. */
const NOT_STORED = new Set(['x-cache', 'age', 'date', 'connection', 'keep-alive', 'transfer-encoding', 'set-cookie'])

/**
 * Caches `GET` responses in Redis, shared by every instance of the app: byte-identical
 * replays, `Vary`-aware keys, RFC 9111's rules of what a shared cache must not store,
 * single-flight fills across processes, stale-while-revalidate / stale-if-error, tags, and
 * `ETag` / `If-None-Match`. Adds `X-Cache: HIT | MISS | STALE | BYPASS` and `Age`.
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
  check(typeof options === 'object' && options !== null, 'options', 'an object', options)
  const { store, lifetimes, warn } = parseCommonOptions(options.client, options)
  const tagsOption = options.tags ?? []
  if (typeof tagsOption !== 'function') checkTags(tagsOption, 'tags')
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
  /** The Vary spec last seen per entry, so that a hit costs one round trip. */
  const varyByEntry = new Map<string, string>()

  const middleware = async function cacheMiddleware(req: Request, res: Response, next: NextFunction) {
    if (req.method !== 'GET' && req.method !== 'HEAD') return next()
    const user = (req as unknown as { session?: Record<symbol, unknown> }).session?.[SESSION_USER] as string | undefined
    if (req.headers.authorization !== undefined || (user !== undefined && !perUser)) {
      res.setHeader('X-Cache', 'BYPASS')
      return next()
    }
    let id: string
    try {
      id = `response\n${options.key ? options.key(req) : canonicalUrl(req)}`
      check(typeof id === 'string', 'key', 'a function returning a string', id)
    } catch (error) {
      return next(error)
    }
    if (user !== undefined) id += `\nuser\n${user}`
    const entryKey = store.entryKey(id)
    const isGet = req.method === 'GET'

    let vary = varyByEntry.get(entryKey) ?? ''
    let lookup: Lookup
    const deadline = store.waitDeadline()
    const refreshing = (req as unknown as Record<symbol, Refresh | undefined>)[REFRESH]
    try {
      for (;;) {
        if (refreshing?.entryKey === entryKey) {
          // The background refresh of a stale entry (see startRefresh): it holds the lock already.
          lookup = refreshing.lookup
          break
        }
        lookup = await store.lookup(entryKey, variantOf(req, vary), isGet)
        if (lookup.vary !== undefined && lookup.vary !== vary) {
          // Learned what this URL varies on: look again for this request's variant.
          rememberVary(varyByEntry, entryKey, lookup.vary)
          if (lookup.lock === 'owned') await store.release(entryKey, lookup.token, false)
          vary = lookup.vary
          continue
        }
        const entry = lookup.entry ? decodeEntry(lookup.entry) : undefined
        const { times } = lookup
        if (entry && times && lookup.lock === 'fresh') return serve(req, res, entry, times, lookup.now, 'HIT')
        if (entry && times && lookup.now < times.staleWhileRevalidateUntil) {
          serve(req, res, entry, times, lookup.now, 'STALE')
          if (lookup.lock === 'owned') startRefresh(req, { entryKey, lookup }, store, warn)
          return
        }
        if (lookup.lock !== 'held' || Date.now() >= deadline) break
        await sleep(POLL_MS)
      }
    } catch (error) {
      warn('express-redis-kit cacheResponse: Redis unavailable, answering without the cache', error)
      res.setHeader('X-Cache', 'BYPASS')
      return next()
    }

    res.setHeader('X-Cache', 'MISS')
    if (lookup.lock !== 'owned') return next()
    const owned = lookup
    let epoch: string
    try {
      epoch = await store.epoch()
    } catch (error) {
      warn('express-redis-kit cacheResponse: Redis unavailable, answering without the cache', error)
      void store.release(entryKey, owned.token, false).catch(() => {})
      return next()
    }
    // The origin must produce the full response to store, not a 304 for this client's copy:
    // the client's own If-None-Match is answered from the origin's response (see capture).
    const ifNoneMatch = req.headers['if-none-match']
    delete req.headers['if-none-match']
    delete req.headers['if-modified-since']
    const stale =
      owned.entry && owned.times && owned.now < owned.times.staleIfErrorUntil ? decodeEntry(owned.entry) : undefined
    captureResponse(
      req,
      res,
      maxBodyBytes,
      stale && { entry: stale, times: owned.times!, now: owned.now },
      ifNoneMatch,
      (captured) => {
        const storable = captured && cacheable(captured, statuses) ? captured : undefined
        if (!storable) {
          void store.release(entryKey, owned.token, captured !== undefined).catch(() => {})
          return
        }
        const varySpec = varyOf(storable)
        rememberVary(varyByEntry, entryKey, varySpec)
        if (!storable.headers.some(([name]) => name === 'etag'))
          storable.headers.push(['etag', strongEtag(storable.body)])
        let tags: string[]
        try {
          tags = typeof tagsOption === 'function' ? checkTags(tagsOption(req, res), 'tags()') : tagsOption
        } catch (error) {
          warn('express-redis-kit cacheResponse: the tags option failed; the response is not stored', error)
          void store.release(entryKey, owned.token, false).catch(() => {})
          return
        }
        const variant = variantOf(req, varySpec)
        store
          .store(entryKey, variant, encodeEntry(storable), varySpec, lifetimes, owned.token, tags, epoch)
          .catch((error) => warn('express-redis-kit cacheResponse: could not store a response', error))
      },
    )
    next()
  } as CacheMiddleware

  middleware.invalidateTags = (tags: string[]) => store.invalidateTags(checkTags(tags, 'tags'))
  return middleware
}

/** Marks the request replayed by {@link startRefresh}. */
const REFRESH = Symbol('express-redis-kit.cache.refresh')

interface Refresh {
  entryKey: string
  /** The lookup that took the lock for the refresh. */
  lookup: Lookup
}

/**
 * stale-while-revalidate: the client was answered from the stale entry; refresh the entry
 * in the background by replaying the request (method GET, same URL, same headers but the
 * conditional ones, same client address) through the app into a response that goes
 * nowhere. The replay passes the app's other middleware like any request (a rate limiter
 * counts it). The cache middleware recognises it and fills the entry with the lock the
 * original request took; if no route answers or the route fails, the lock is released.
 */
function startRefresh(
  req: Request,
  refresh: Refresh,
  store: CacheStore,
  warn: (message: string, error?: unknown) => void,
): void {
  const original = req.socket as Partial<Socket> | undefined
  const socket = Object.assign(
    new Duplex({
      read() {},
      write(_chunk, _encoding, callback) {
        callback()
      },
    }),
    {
      remoteAddress: original?.remoteAddress,
      remotePort: original?.remotePort,
      encrypted: (original as { encrypted?: boolean })?.encrypted,
    },
  )
  const replay = new IncomingMessage(socket as unknown as Socket)
  replay.method = 'GET'
  replay.url = req.originalUrl || req.url
  replay.httpVersion = req.httpVersion
  replay.headers = { ...req.headers }
  delete replay.headers['if-none-match']
  delete replay.headers['if-modified-since']
  replay.push(null)
  ;(replay as unknown as Record<symbol, Refresh>)[REFRESH] = refresh
  const response = new ServerResponse(replay)
  response.assignSocket(socket as unknown as Socket)
  response.once('finish', () => {
    response.detachSocket(socket as unknown as Socket)
    response.emit('close')
  })
  const giveUp = (error?: unknown) => {
    if (error) warn('express-redis-kit cacheResponse: the background refresh failed', error)
    void store.release(refresh.entryKey, refresh.lookup.token, false).catch(() => {})
  }
  // From the top application: the URL is the original one, whatever app or router is mounted where.
  type App = { parent?: App; handle(req: unknown, res: unknown, done: (error?: unknown) => void): void }
  let app = req.app as unknown as App
  while (app.parent) app = app.parent
  try {
    app.handle(replay, response, giveUp)
  } catch (error) {
    giveUp(error)
  }
}

/** `GET <path>?<query>` with the query parameters sorted, so that `?a=1&b=2` and `?b=2&a=1` share an entry. */
function canonicalUrl(req: Request): string {
  const url = new URL(req.originalUrl || req.url, 'http://x')
  const params = [...url.searchParams].sort(([a, av], [b, bv]) =>
    a < b ? -1 : a > b ? 1 : av < bv ? -1 : av > bv ? 1 : 0,
  )
  return `GET ${url.pathname}?${new URLSearchParams(params).toString()}`
}

/** The variant of a request for a vary spec: a hash of the named request headers ('' for none). */
function variantOf(req: Request, vary: string): string {
  if (vary === '') return ''
  const hash = createHash('sha256')
  for (const name of vary.split(',')) hash.update(`${name}:${String(req.headers[name] ?? '')}\n`)
  return hash.digest('base64url').slice(0, 22)
}

/** The response's `Vary` as a spec: lowercase header names, sorted, comma-separated. */
function varyOf(response: CachedResponse): string {
  const names = response.headers
    .filter(([name]) => name === 'vary')
    .flatMap(([, value]) => (Array.isArray(value) ? value : [value]))
    .flatMap((value) => value.split(','))
    .map((name) => name.trim().toLowerCase())
    .filter((name) => name.length > 0)
  return [...new Set(names)].sort().join(',')
}

function rememberVary(memo: Map<string, string>, entryKey: string, vary: string): void {
  if (memo.size >= 10_000) memo.clear()
  memo.set(entryKey, vary)
}

/** RFC 9111: what a shared cache may store. */
function cacheable(response: CachedResponse, statuses: number[]): boolean {
  if (!statuses.includes(response.status)) return false
  const header = (name: string) =>
    response.headers
      .filter(([key]) => key === name)
      .flatMap(([, value]) => (Array.isArray(value) ? value : [value]))
      .join(',')
      .toLowerCase()
  if (header('set-cookie') !== '') return false
  if (/(^|,)\s*(private|no-store|no-cache)\b/.test(header('cache-control'))) return false
  if (varyOf(response).split(',').includes('*')) return false
  return true
}

function strongEtag(body: Buffer): string {
  return `"${createHash('sha256').update(body).digest('base64url').slice(0, 27)}"`
}

/** RFC 9110 weak comparison of If-None-Match (a list, or `*`) against an ETag. */
function ifNoneMatchMatches(header: string | undefined, etag: string): boolean {
  if (!header) return false
  if (header.trim() === '*') return true
  const opaque = (tag: string) => tag.trim().replace(/^W\//, '')
  return header.split(',').some((tag) => opaque(tag) === opaque(etag))
}

/** Answers from a stored entry: status, headers and body as stored, plus X-Cache and Age. */
function serve(
  req: Request,
  res: Response,
  entry: CachedResponse,
  times: EntryTimes,
  now: number,
  state: string,
): void {
  for (const [name, value] of entry.headers) res.setHeader(name, value)
  res.setHeader('X-Cache', state)
  res.setHeader('Age', String(Math.max(0, Math.floor((now - times.storedAt) / 1000))))
  const etag = entry.headers.find(([name]) => name === 'etag')?.[1]
  // RFC 9110 13.2.1: a precondition is evaluated only when the answer would be 2xx.
  const success = entry.status >= 200 && entry.status < 300
  if (success && typeof etag === 'string' && ifNoneMatchMatches(req.headers['if-none-match'], etag)) {
    for (const name of ['content-length', 'content-type', 'content-encoding']) res.removeHeader(name)
    res.statusCode = 304
    res.end()
    return
  }
  res.statusCode = entry.status
  // Node adds Content-Length on the wire to a body sent in one piece, so it may not be among
  // the stored headers: a HEAD answered from the entry must still carry it.
  if (!res.hasHeader('content-length') && !res.hasHeader('transfer-encoding')) {
    res.setHeader('Content-Length', String(entry.body.length))
  }
  if (req.method === 'HEAD') res.end()
  else res.end(entry.body)
}

interface StaleFallback {
  entry: CachedResponse
  times: EntryTimes
  now: number
}

/**
 * Records what the origin sends (status, headers, body up to `maxBodyBytes`) and calls
 * `done` once the response finished (with undefined if it was cut short or too large).
 * With a stale fallback, a 5xx from the origin is replaced by the stale entry
 * (stale-if-error) before anything is sent.
 */
function captureResponse(
  req: Request,
  res: Response,
  maxBodyBytes: number,
  stale: StaleFallback | undefined,
  ifNoneMatch: string | undefined,
  done: (captured: CachedResponse | undefined) => void,
): void {
  const { writeHead, write, end } = res
  const chunks: Buffer[] = []
  let size = 0
  let tooLarge = false
  let replaced = false
  let decided = false
  /** The client's If-None-Match matched the origin's 2xx: it gets a 304, the body is only recorded. */
  let notModified = false
  let storedHeaders: [string, string | string[]][] | undefined
  let storedStatus = 0

  /** Before the first byte: does the client's own If-None-Match match what the origin sends? */
  const decide = () => {
    if (decided) return
    decided = true
    const etag = res.getHeader('etag')
    if (ifNoneMatch && res.statusCode >= 200 && res.statusCode < 300 && typeof etag === 'string') {
      notModified = ifNoneMatchMatches(ifNoneMatch, etag)
    }
    if (!notModified) return
    storedHeaders = snapshotHeaders(res)
    storedStatus = res.statusCode
    for (const name of ['content-length', 'content-type', 'content-encoding', 'transfer-encoding'])
      res.removeHeader(name)
    res.statusCode = 304
  }

  const record = (chunk: unknown, encoding: unknown) => {
    if (chunk === undefined || chunk === null || typeof chunk === 'function' || tooLarge) return
    const buffer = Buffer.isBuffer(chunk)
      ? chunk
      : chunk instanceof Uint8Array
        ? Buffer.from(chunk)
        : Buffer.from(String(chunk), typeof encoding === 'string' ? (encoding as BufferEncoding) : 'utf8')
    size += buffer.length
    if (size > maxBodyBytes) tooLarge = true
    else chunks.push(buffer)
  }
  /** stale-if-error: the origin failed, the stale entry answers instead. */
  const replaceWithStale = (): boolean => {
    if (replaced) return true
    if (!stale || res.statusCode < 500 || res.headersSent) return false
    replaced = true
    for (const name of res.getHeaderNames()) res.removeHeader(name)
    res.writeHead = writeHead
    res.write = write
    res.end = end
    serve(req, res, stale.entry, stale.times, stale.now, 'STALE')
    return true
  }

  res.writeHead = function cacheWriteHead(this: Response, ...args: unknown[]) {
    if (typeof args[0] === 'number') res.statusCode = args[0]
    if (replaceWithStale()) return res
    return (writeHead as (...a: unknown[]) => Response).apply(this, args)
  } as typeof res.writeHead
  res.write = function cacheWrite(this: Response, ...args: unknown[]) {
    if (replaceWithStale()) return true
    decide()
    record(args[0], args[1])
    if (notModified) return true
    return (write as (...a: unknown[]) => boolean).apply(this, args)
  } as typeof res.write
  res.end = function cacheEnd(this: Response, ...args: unknown[]) {
    if (replaceWithStale()) return res
    decide()
    record(args[0], args[1])
    if (notModified) return (end as (...a: unknown[]) => Response).call(this)
    return (end as (...a: unknown[]) => Response).apply(this, args)
  } as typeof res.end

  res.once('close', () => {
    if (replaced || !res.writableFinished || tooLarge) return done(undefined)
    const headers = storedHeaders ?? snapshotHeaders(res)
    done({ status: storedStatus || res.statusCode, headers, body: Buffer.concat(chunks) })
  })
}

/** The response's headers as stored (Set-Cookie kept, so that `cacheable` can refuse it). */
function snapshotHeaders(res: Response): [string, string | string[]][] {
  const headers: [string, string | string[]][] = []
  for (const name of res.getHeaderNames()) {
    if (NOT_STORED.has(name) && name !== 'set-cookie') continue
    const value = res.getHeader(name)
    if (value !== undefined) headers.push([name, Array.isArray(value) ? value.map(String) : String(value)])
  }
  return headers
}
