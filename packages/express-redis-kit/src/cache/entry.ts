/** A cached response: status, headers and body, byte for byte. */
export interface CachedResponse {
  status: number
  /** Header name (as sent) and value(s), in the order they were set. */
  headers: [string, string | string[]][]
  body: Buffer
  /** How old the response already was when it was stored (ms: an upstream `Age`, an old `Date`). */
  initialAge: number
  /** The `ETag` was added by the cache (the handler sent none): not a validator to revalidate with. */
  generatedEtag: boolean
}

/*
 * A stored response is two hash fields (see scripts.ts): its metadata, JSON
 * { s: status, h: headers, a: initial age ms, g: 1 when the ETag is the cache's own }, and its
 * body as it was sent: no base64, bodies of any type, compressed or not, cost their own size,
 * and a revalidation rewrites the metadata alone.
 */

export function encodeMeta(response: Omit<CachedResponse, 'body'>): string {
  return JSON.stringify({
    s: response.status,
    h: response.headers,
    a: response.initialAge,
    ...(response.generatedEtag ? { g: 1 } : {}),
  })
}

/** The response in `meta` and `body`, or undefined when they are not one (corrupt, or from another version). */
export function decodeEntry(meta: Buffer | string, body: Buffer): CachedResponse | undefined {
  try {
    const parsed = JSON.parse(meta.toString()) as { s?: unknown; h?: unknown; a?: unknown; g?: unknown }
    if (!Number.isInteger(parsed.s) || !Array.isArray(parsed.h)) return undefined
    return {
      status: parsed.s as number,
      headers: parsed.h as CachedResponse['headers'],
      body,
      initialAge: typeof parsed.a === 'number' && parsed.a >= 0 ? parsed.a : 0,
      generatedEtag: parsed.g === 1,
    }
  } catch {
    return undefined
  }
}

/** The times stored beside an entry (Redis ms). */
export interface EntryTimes {
  storedAt: number
  freshUntil: number
  staleWhileRevalidateUntil: number
  staleIfErrorUntil: number
}

export function parseTimes(text: string): EntryTimes | undefined {
  const [storedAt, freshUntil, staleWhileRevalidateUntil, staleIfErrorUntil] = text.split(',').map(Number)
  if ([storedAt, freshUntil, staleWhileRevalidateUntil, staleIfErrorUntil].some((n) => !Number.isFinite(n))) {
    return undefined
  }
  return {
    storedAt: storedAt as number,
    freshUntil: freshUntil as number,
    staleWhileRevalidateUntil: staleWhileRevalidateUntil as number,
    staleIfErrorUntil: staleIfErrorUntil as number,
  }
}
