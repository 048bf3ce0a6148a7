import { createHash } from 'node:crypto'
import type { Response } from 'express'

/** Which IETF `RateLimit` header draft to send, or `false` for none. */
export type StandardHeaders = 'draft-6' | 'draft-7' | 'draft-8' | false

/** What the header writers need; the names and formats are those of express-rate-limit 8. */
export interface HeaderValues {
  limit: number
  remaining: number
  /** Milliseconds until the quota resets, measured on Redis's clock. */
  resetMs: number
  windowMs: number
}

const resetSeconds = (values: HeaderValues): number => secondsOf(values.resetMs)
const secondsOf = (resetMs: number): number => Math.max(0, Math.ceil(resetMs / 1000))

/** `X-RateLimit-Limit`, `X-RateLimit-Remaining`, `X-RateLimit-Reset` (Unix seconds) and `Date`. */
export function setLegacyHeaders(res: Response, values: HeaderValues, now: number): void {
  res.setHeader('X-RateLimit-Limit', String(values.limit))
  res.setHeader('X-RateLimit-Remaining', String(values.remaining))
  res.setHeader('Date', new Date(now).toUTCString())
  res.setHeader('X-RateLimit-Reset', String(Math.ceil((now + values.resetMs) / 1000)))
}

/** draft-6: `RateLimit-Policy`, `RateLimit-Limit`, `RateLimit-Remaining`, `RateLimit-Reset`. */
export function setDraft6Headers(res: Response, values: HeaderValues): void {
  const reset = resetSeconds(values)
  res.setHeader('RateLimit-Policy', `${values.limit};w=${Math.ceil(values.windowMs / 1000)}`)
  res.setHeader('RateLimit-Limit', String(values.limit))
  res.setHeader('RateLimit-Remaining', String(values.remaining))
  if (reset) res.setHeader('RateLimit-Reset', String(reset))
}

/** draft-7: `RateLimit-Policy` and a combined `RateLimit: limit=, remaining=, reset=`. */
export function setDraft7Headers(res: Response, values: HeaderValues): void {
  res.setHeader('RateLimit-Policy', `${values.limit};w=${Math.ceil(values.windowMs / 1000)}`)
  res.setHeader('RateLimit', `limit=${values.limit}, remaining=${values.remaining}, reset=${resetSeconds(values)}`)
}

/**
 * draft-8: named policies, appended so that several limiters on one route each
 * add their own. The partition key is the first 12 hex digits of the SHA-256 of
 * the client key, base64-encoded (as express-rate-limit 8 does), so the header
 * never reveals the key itself.
 */
export function setDraft8Headers(res: Response, values: HeaderValues, name: string, key: string): void {
  appendHeader(res, POLICY, `${policyStart(name, values.limit, values.windowMs)}${partitionKey(key)}:`)
  appendHeader(res, RATE_LIMIT, `${rateStart(name)}${values.remaining}; t=${resetSeconds(values)}`)
}

/** The draft-8 `RateLimit-Policy` value up to its partition key. */
const policyStart = (name: string, limit: number, windowMs: number): string =>
  `"${name}"; q=${limit}; w=${Math.ceil(windowMs / 1000)}; pk=:`
/** The draft-8 `RateLimit` value up to its remaining quota. */
const rateStart = (name: string): string => `"${name}"; r=`

/**
 * {@link setDraft8Headers} for a policy whose name, quota and window never change (a limiter's
 * fixed `limit` or each of its `limits`): what does not depend on the request is built once,
 * and the `RateLimit-Policy` value of the clients seen most recently is remembered.
 */
export class Draft8Policy {
  readonly #policyStart: string
  readonly #rateStart: string
  readonly #policies = new Map<string, string>()

  constructor(name: string, limit: number, windowMs: number) {
    this.#policyStart = policyStart(name, limit, windowMs)
    this.#rateStart = rateStart(name)
  }

  setHeaders(res: Response, remaining: number, resetMs: number, key: string): void {
    let policy = this.#policies.get(key)
    if (policy === undefined) {
      policy = `${this.#policyStart}${partitionKey(key)}:`
      if (this.#policies.size >= PARTITION_KEY_CACHE_SIZE) this.#policies.clear()
      this.#policies.set(key, policy)
    }
    appendHeader(res, POLICY, policy)
    appendHeader(res, RATE_LIMIT, `${this.#rateStart}${remaining}; t=${secondsOf(resetMs)}`)
  }
}

interface HeaderName {
  name: string
  /** As `res.hasHeader` looks it up (it lowercases what it is given). */
  lowercase: string
}
const POLICY: HeaderName = { name: 'RateLimit-Policy', lowercase: 'ratelimit-policy' }
const RATE_LIMIT: HeaderName = { name: 'RateLimit', lowercase: 'ratelimit' }

/** Sets a header, or adds to it when another limiter set it already (as `res.append`, without its cost on the common path). */
function appendHeader(res: Response, { name, lowercase }: HeaderName, value: string): void {
  if (res.hasHeader(lowercase)) res.append(name, value)
  else res.setHeader(name, value)
}

const partitionKeys = new Map<string, string>()
const PARTITION_KEY_CACHE_SIZE = 10_000

/** The draft-8 partition key of a client key, remembered for the clients seen most recently. */
function partitionKey(key: string): string {
  let value = partitionKeys.get(key)
  if (value === undefined) {
    value = Buffer.from(createHash('sha256').update(key).digest('hex').slice(0, 12)).toString('base64')
    if (partitionKeys.size >= PARTITION_KEY_CACHE_SIZE) partitionKeys.clear()
    partitionKeys.set(key, value)
  }
  return value
}

/** `Retry-After` in whole seconds. */
export function setRetryAfterHeader(res: Response, resetMs: number): void {
  res.setHeader('Retry-After', String(secondsOf(resetMs)))
}

/** The default draft-8 policy name, e.g. `100-in-1min` (express-rate-limit's `identifier`). */
export function defaultPolicyName(limit: number, windowMs: number): string {
  const seconds = windowMs / 1000
  const minutes = seconds / 60
  const hours = minutes / 60
  const days = hours / 24
  let duration: string
  if (seconds < 60) duration = `${seconds}sec`
  else if (minutes < 60) duration = `${minutes}min`
  else if (hours < 24) duration = `${hours}hr${hours > 1 ? 's' : ''}`
  else duration = `${days}day${days > 1 ? 's' : ''}`
  return `${limit}-in-${duration}`
}
