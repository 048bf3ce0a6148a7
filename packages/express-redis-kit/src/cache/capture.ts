import type { Request, Response } from 'express'
import type { CachedResponse } from './entry.js'
import { type Freshness, freshnessOf } from './freshness.js'
import { NEVER_STORED, type StoredHeader, unstorableReason, varyOf } from './http.js'

/** How one fill's response is recorded, and whom it tells. */
export interface CaptureOptions {
  /** Larger bodies are not stored. */
  maxBodyBytes: number
  /** Statuses that may be stored. */
  statuses: number[]
  /** When the handler was asked (this host's clock, ms): corrects the age of what it answers. */
  requestTime: number
  /**
   * The client's `If-None-Match` / `If-Modified-Since`, taken off the request so that the
   * handler answers in full, or to the cache's own validators (the cache needs the body);
   * they are put back when the handler's answer begins, and the capture answers them itself.
   */
  conditional: Record<string, string>
  /**
   * Answers the client from a stale entry instead of a 5xx from the handler
   * (stale-if-error), or undefined when there is no such entry.
   */
  serveStale: ((status: number) => void) | undefined
  /**
   * When the handler was sent the stale entry's validators: called instead of storing if it
   * answers 304, with the headers it set, when it answered, and why the entry may no longer
   * be stored (`undefined` if it may: the 304 says `private` or `no-store`, RFC 9111
   * section 3); answers the client from the revalidated entry and updates it, or drops it.
   */
  revalidated: ((headers: StoredHeader[], responseTime: number, unstorable: string | undefined) => void) | undefined
  /**
   * Why the response turned private while the handler ran, if it did (the request's session
   * now holds data: the response will set its cookie); asked when the handler's answer
   * begins, and again once its head went out.
   */
  turnedPrivate(): string | undefined
  /**
   * Called once, when the handler starts its answer, before its head goes out: its status,
   * why it cannot be stored (`undefined` when it can, as far as the handler's headers tell),
   * and whether it will be stored unless a hook adds to its head (its whole length is known
   * and within `maxBodyBytes`).
   */
  onHead(status: number, unstorable: string | undefined, willStore: boolean): void
  /**
   * Called once, when the handler ended the response and its head went out as it may be
   * stored: what to store, the vary spec it was keyed with, what its headers say about its
   * freshness, and when the handler started its answer.
   */
  onStore(response: CachedResponse, vary: string, freshness: Freshness, responseTime: number): void
  /**
   * Called once instead of `onStore`: nothing is stored, because the response cannot be
   * (`uncacheable`: waiters should ask the handler themselves) or the fill did not complete.
   */
  onRelease(uncacheable: boolean, reason: string): void
}

type Callback = (error?: Error | null) => void

/**
 * Records what the handler (and any middleware mounted after the cache) produces, while it
 * goes to the client as usual:
 * - the headers as they are when the handler starts its response (before middleware mounted
 *   before the cache, such as compression, rewrites them at write time), minus the headers
 *   that were already set when the cache ran: those belong to each request (a rate limit's
 *   counts, a request id, CORS) and are never replayed;
 * - the body as the handler writes it, up to `maxBodyBytes`.
 * Whether it may be stored is decided on the head as it goes out: middleware mounted before
 * the cache wrapped `writeHead` before the cache did, so its hooks (on-headers: a session's
 * `Set-Cookie` and `Cache-Control: no-store`, compression's headers) run after the cache's
 * own wrapper, as the head is written. A `Set-Cookie` or a `Cache-Control` that forbids
 * storing, whoever set it and whenever, means the response is not stored.
 * The response is handed to `onStore` as soon as the handler ended it and its head went out,
 * whether or not the client has read it yet. Anything that makes it unstorable is reported
 * at once, so that waiters need not wait for the end of a response that will not be stored.
 */
export function captureResponse(req: Request, res: Response, options: CaptureOptions): void {
  const { writeHead, write, end } = res
  // Headers set before the cache ran, with their values then.
  const preset = new Map<string, { value: number | string | string[]; text: string }>()
  for (const name of res.getHeaderNames()) {
    const value = res.getHeader(name)
    if (value !== undefined) preset.set(name, { value, text: headerText(value) })
  }

  const chunks: Buffer[] = []
  let size = 0
  let started = false
  /** The handler ended the response: the body recorded is whole. */
  let ended = false
  /** The head went out and was found storable. */
  let headChecked = false
  let settled = false
  /** The stale entry answers instead of the handler's 5xx. */
  let replaced = false
  /** While the stale entry is being written: our wrappers let it through. */
  let passThrough = false
  /** The client's own conditional request matched: it gets a 304, the body is only recorded. */
  let notModified = false
  let unstorable: string | undefined
  let stored:
    | { status: number; headers: StoredHeader[]; vary: string; freshness: Freshness; responseTime: number }
    | undefined

  const release = (uncacheable: boolean, reason: string) => {
    if (settled) return
    settled = true
    options.onRelease(uncacheable, reason)
  }
  const refuse = (reason: string) => {
    unstorable ??= reason
    chunks.length = 0
    release(true, reason)
  }

  /** Headers the handler set (not those set before the cache ran), as stored. */
  const ownHeaders = (): StoredHeader[] => {
    const own: StoredHeader[] = []
    for (const name of res.getHeaderNames()) {
      const value = res.getHeader(name)
      if (value === undefined || NEVER_STORED.has(name) || preset.get(name)?.text === headerText(value)) continue
      own.push([name, Array.isArray(value) ? value.map(String) : String(value)])
    }
    return own
  }
  /** Answers with `answer` instead of what the handler began (its headers are dropped). */
  const replace = (answer: () => void): void => {
    replaced = true
    for (const name of res.getHeaderNames()) if (!preset.has(name)) res.removeHeader(name)
    for (const [name, { value }] of preset) res.setHeader(name, value)
    passThrough = true
    answer()
    passThrough = false
  }

  /** Before the first byte (at most once): snapshot, storability, stale-if-error, revalidation, the client's 304. */
  const start = (wholeBodySize: number | undefined): void => {
    if (started) return
    started = true
    const status = res.statusCode
    const responseTime = Date.now()
    // The handler has its answer: the request carries the client's own conditional headers again.
    delete req.headers['if-none-match']
    delete req.headers['if-modified-since']
    Object.assign(req.headers, options.conditional)
    if (options.revalidated && status === 304 && !res.headersSent) {
      const revalidated = options.revalidated
      const headers = ownHeaders()
      const noStore = freshnessOf(allHeaders(res), options.requestTime, responseTime).noStore
      settled = true // the revalidation releases the lock
      replace(() => revalidated(headers, responseTime, noStore ? 'cache-control' : undefined))
      return
    }
    if (options.serveStale && status >= 500 && !res.headersSent) {
      const serveStale = options.serveStale
      release(false, 'stale-if-error')
      replace(() => serveStale(status))
      return
    }
    const all = allHeaders(res)
    const freshness = freshnessOf(all, options.requestTime, responseTime)
    unstorable = unstorableReason(status, all, options.statuses, freshness) ?? options.turnedPrivate()
    const declared = Number(res.getHeader('content-length'))
    const knownSize = wholeBodySize ?? (Number.isSafeInteger(declared) && declared >= 0 ? declared : undefined)
    if (unstorable === undefined && knownSize !== undefined && knownSize > options.maxBodyBytes) unstorable = 'size'
    if (unstorable === undefined) {
      const headers = ownHeaders()
      // The response's Date is stored with it (Node adds one on the wire when the handler did not).
      if (!res.hasHeader('date')) headers.push(['date', new Date(responseTime).toUTCString()])
      stored = { status, headers, vary: varyOf(all), freshness, responseTime }
    }
    options.onHead(status, unstorable, unstorable === undefined && knownSize !== undefined)
    if (unstorable !== undefined) refuse(unstorable)
    notModified = !res.headersSent && status >= 200 && status < 300 && clientHasFreshCopy(req, options.conditional)
    if (notModified) {
      for (const name of ['content-length', 'content-type', 'content-encoding', 'transfer-encoding'])
        res.removeHeader(name)
      res.statusCode = 304
    }
  }

  /**
   * Why the head as it went out (after every hook of middleware mounted before the cache)
   * forbids storing the response, if it does: another status, a `Set-Cookie`, a
   * `Cache-Control` a shared cache must obey (RFC 9111 section 3), `Vary: *`, a session that
   * turned private.
   */
  const sentHeadReason = (recorded: { status: number; responseTime: number }): string | undefined => {
    // The client's own 304 is the cache's doing; the stored status is the handler's.
    const status = notModified ? recorded.status : res.statusCode
    if (status !== recorded.status) return 'status'
    const all = allHeaders(res)
    const freshness = freshnessOf(all, options.requestTime, recorded.responseTime)
    return unstorableReason(status, all, options.statuses, freshness) ?? options.turnedPrivate()
  }

  /** Once the head went out (at most once): refuses the response if its head forbids storing it. */
  const checkSentHead = (): void => {
    if (headChecked || stored === undefined || settled || !res.headersSent) return
    const reason = sentHeadReason(stored)
    if (reason !== undefined) {
      refuse(reason)
      return
    }
    headChecked = true
    storeIfDone()
  }

  /** Hands the response over to be stored once the handler ended it and its head went out storable. */
  const storeIfDone = (): void => {
    if (!ended || !headChecked || stored === undefined || settled) return
    // Checked again right before it is stored.
    const reason = sentHeadReason(stored)
    if (reason !== undefined) {
      refuse(reason)
      return
    }
    settled = true
    const { status, headers, vary, freshness, responseTime } = stored
    const body = Buffer.concat(chunks)
    const response = { status, headers, body, initialAge: freshness.initialAge, generatedEtag: false }
    options.onStore(response, vary, freshness, responseTime)
  }

  const record = (chunk: unknown, encoding: unknown): void => {
    if (stored === undefined || settled || chunk === undefined || chunk === null || typeof chunk === 'function') return
    const buffer = toBuffer(chunk, encoding)
    size += buffer.length
    if (size > options.maxBodyBytes) refuse('size')
    else chunks.push(buffer)
  }

  res.writeHead = function cacheWriteHead(this: Response, status: number, ...rest: unknown[]) {
    if (passThrough) return (writeHead as (...a: unknown[]) => Response).call(this, status, ...rest)
    if (replaced) return this
    // Headers given to writeHead become ordinary headers first, so that the snapshot sees them.
    const headers = typeof rest[0] === 'string' ? rest[1] : rest[0]
    if (typeof rest[0] === 'string') this.statusMessage = rest[0]
    applyHeaders(this, headers)
    this.statusCode = status
    start(undefined)
    if (replaced) return this
    // The hooks of middleware mounted before the cache run in here, as the head is written.
    const result = (writeHead as (...a: unknown[]) => Response).call(this, this.statusCode, this.statusMessage)
    checkSentHead()
    return result
  } as typeof res.writeHead

  res.write = function cacheWrite(this: Response, chunk: unknown, ...rest: unknown[]) {
    if (passThrough) return (write as (...a: unknown[]) => boolean).call(this, chunk, ...rest)
    start(undefined)
    if (replaced || notModified) {
      callBack(rest)
      return true
    }
    record(chunk, rest[0])
    const result = (write as (...a: unknown[]) => boolean).call(this, chunk, ...rest)
    checkSentHead()
    return result
  } as typeof res.write

  res.end = function cacheEnd(this: Response, ...args: unknown[]) {
    if (passThrough) return (end as (...a: unknown[]) => Response).apply(this, args)
    const [chunk, encoding] = typeof args[0] === 'function' ? [] : args
    start(started ? undefined : chunkSize(chunk, encoding))
    if (replaced) {
      callBack(args)
      return this
    }
    record(chunk, encoding)
    ended = true
    const result = notModified
      ? (end as (...a: unknown[]) => Response).call(
          this,
          args.find((arg) => typeof arg === 'function'),
        )
      : (end as (...a: unknown[]) => Response).apply(this, args)
    // Usually the head went out in there (and the response was handed over to be stored).
    checkSentHead()
    storeIfDone()
    return result
  } as typeof res.end

  // A head written later, by middleware that held the response back (a session saving
  // first) and then wrote it without going through the cache's wrappers.
  res.once('finish', checkSentHead)
  // The client went away before the handler ended: nothing to store; the next request fills.
  res.once('close', () => release(false, 'aborted'))
}

/** Whether the client's own conditional headers match the response being sent (Express's `req.fresh` rules). */
function clientHasFreshCopy(req: Request, conditional: Record<string, string>): boolean {
  return Object.keys(conditional).length > 0 && req.fresh === true
}

/** Every header of the response, as stored. */
function allHeaders(res: Response): StoredHeader[] {
  const all: StoredHeader[] = []
  for (const name of res.getHeaderNames()) {
    const value = res.getHeader(name)
    if (value !== undefined) all.push([name, Array.isArray(value) ? value.map(String) : String(value)])
  }
  return all
}

/** A header value as one string, to compare a header with what it was before the cache ran. */
function headerText(value: unknown): string {
  return Array.isArray(value) ? value.join('\n') : String(value)
}

/** Sets the headers given to `writeHead` (an object, or a flat array of names and values) on `res`. */
function applyHeaders(res: Response, headers: unknown): void {
  if (Array.isArray(headers)) {
    if (Array.isArray(headers[0])) for (const [name, value] of headers as [string, string][]) res.setHeader(name, value)
    else for (let i = 0; i + 1 < headers.length; i += 2) res.setHeader(String(headers[i]), headers[i + 1] as string)
  } else if (headers !== null && typeof headers === 'object') {
    for (const [name, value] of Object.entries(headers)) if (value !== undefined) res.setHeader(name, value)
  }
}

function toBuffer(chunk: unknown, encoding: unknown): Buffer {
  if (Buffer.isBuffer(chunk)) return chunk
  if (chunk instanceof Uint8Array) return Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength)
  return Buffer.from(String(chunk), typeof encoding === 'string' ? (encoding as BufferEncoding) : 'utf8')
}

function chunkSize(chunk: unknown, encoding: unknown): number {
  if (chunk === undefined || chunk === null) return 0
  if (chunk instanceof Uint8Array) return chunk.byteLength
  return Buffer.byteLength(String(chunk), typeof encoding === 'string' ? (encoding as BufferEncoding) : 'utf8')
}

/** A swallowed write still calls its callback (the last function among its arguments). */
function callBack(args: unknown[]): void {
  const callback = args.findLast((arg) => typeof arg === 'function') as Callback | undefined
  if (callback) process.nextTick(callback)
}
