import { createHash } from 'node:crypto'
import type { Request } from 'express'
import type { Freshness } from './freshness.js'

/*
 * The HTTP rules of cacheResponse: what a response is keyed on, what may be stored, and the
 * headers the cache adds. Everything here is a pure function of the request or response.
 */

/** A header as stored: its lowercase name and value(s). */
export type StoredHeader = [string, string | string[]]

/**
 * The parts of the default key: protocol and host as the handler sees them (`req.protocol`,
 * and the host Express 5's `req.host` gives, so `X-Forwarded-Host` only when `trust proxy`
 * trusts it), the path exactly as Express routes it (no `..`, `%2e` or `//` resolved: two
 * paths share an entry only if they are the same string), and the query exactly as sent, from
 * its `?` ('' for a URL without one).
 *
 * The query is not normalised (no sorting, no dropping of empty pairs, no decoding): merging
 * two spellings is safe only if every reader of the query reads them alike, and the readers
 * are the app's `query parser` (`node:querystring`, `qs`, or any function, each with its own
 * parameter limit, duplicate, bracket and decoding rules), handlers reading `req.originalUrl`,
 * and upstreams a handler forwards the query to. Two requests share an entry only if their
 * queries are the same string, which every reader reads alike.
 */
export function defaultKeyParts(req: Request): string[] {
  const url = req.originalUrl || req.url
  const queryAt = url.indexOf('?')
  if (queryAt === -1) return [req.protocol, hostOf(req), url, '']
  return [req.protocol, hostOf(req), url.slice(0, queryAt), url.slice(queryAt)]
}

/** Express 5's `req.host` (host and port; `X-Forwarded-Host` only from a trusted proxy), on Express 4 too. */
function hostOf(req: Request): string {
  const trust = req.app?.get('trust proxy fn') as ((address: string | undefined, hop: number) => boolean) | undefined
  let host = req.headers['x-forwarded-host']
  if (typeof host !== 'string' || host === '' || !trust?.(req.socket?.remoteAddress, 0)) host = req.headers.host
  else if (host.includes(',')) host = host.slice(0, host.indexOf(',')).trimEnd()
  return host ?? ''
}

/** The variant of a request for a vary spec: a hash of the named request headers ('' for none). */
export function variantOf(req: Request, vary: string): string {
  if (vary === '') return ''
  const hash = createHash('sha256')
  for (const name of vary.split(',')) {
    const value = String(req.headers[name] ?? '')
    hash.update(`${name.length}:${name}${value.length}:${value}`)
  }
  return hash.digest('base64url').slice(0, 22)
}

/** The values of one header in a list of headers, joined by commas ('' if absent). */
function headerValue(headers: StoredHeader[], name: string): string {
  return headers
    .filter(([key]) => key === name)
    .flatMap(([, value]) => (Array.isArray(value) ? value : [value]))
    .join(',')
}

/** The `Vary` of a response as a spec: lowercase header names, sorted, comma-separated. */
export function varyOf(headers: StoredHeader[]): string {
  const names = headerValue(headers, 'vary')
    .split(',')
    .map((name) => name.trim().toLowerCase())
    .filter((name) => name.length > 0)
  return [...new Set(names)].sort().join(',')
}

/**
 * Why a response may not be stored by a shared cache (RFC 9111 section 3), or undefined if
 * it may. `headers` are all the response's headers, including those set before the cache ran;
 * `freshness` what they say (a `no-cache` response is stored only if it can be revalidated).
 */
export function unstorableReason(
  status: number,
  headers: StoredHeader[],
  statuses: number[],
  freshness: Freshness,
): string | undefined {
  if (!statuses.includes(status)) return 'status'
  if (headerValue(headers, 'set-cookie') !== '') return 'set-cookie'
  if (freshness.noStore || (freshness.noCache && !freshness.validator)) return 'cache-control'
  if (varyOf(headers).split(',').includes('*')) return 'vary'
  return undefined
}

/** A strong ETag of a body: its SHA-256, base64url. */
export function strongEtag(body: Buffer): string {
  return `"${createHash('sha256').update(body).digest('base64url').slice(0, 27)}"`
}

/** Response headers never stored: they belong to one response or one connection, or the cache adds them. */
export const NEVER_STORED = new Set([
  'x-cache',
  'cache-status',
  'age',
  'connection',
  'keep-alive',
  'transfer-encoding',
  'set-cookie',
])

/** The name of this cache in `Cache-Status` (RFC 9211). */
const CACHE_NAME = 'express-redis-kit'

/**
 * An RFC 9211 `Cache-Status` entry: `hit` or `fwd=<reason>`, then the parameters given
 * (`true` as a bare name, numbers as they are, strings as tokens).
 */
export function cacheStatus(
  outcome: 'hit' | 'miss' | 'stale' | 'bypass',
  parameters: Record<string, number | string | true | undefined> = {},
): string {
  let value = `${CACHE_NAME}; ${outcome === 'hit' ? 'hit' : `fwd=${outcome}`}`
  for (const [name, parameter] of Object.entries(parameters)) {
    if (parameter === undefined) continue
    value += parameter === true ? `; ${name}` : `; ${name}=${parameter}`
  }
  return value
}

/** Seconds of freshness left (negative once stale), as `Cache-Status` reports it. */
export const ttlSeconds = (freshUntil: number, now: number): number => Math.floor((freshUntil - now) / 1000)
