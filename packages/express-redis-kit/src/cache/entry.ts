/** A cached response: status, headers and body, byte for byte. */
export interface CachedResponse {
  status: number
  /** Header name (as sent) and value(s), in the order they were set. */
  headers: [string, string | string[]][]
  body: Buffer
}

/*
 * Binary layout of a stored entry: a 4-byte big-endian length, that many bytes of JSON
 * ({ status, headers }), then the body as is. No base64: bodies of any type, compressed or
 * not, cost their own size.
 */

export function encodeEntry(entry: CachedResponse): Buffer {
  const meta = Buffer.from(JSON.stringify({ status: entry.status, headers: entry.headers }))
  const length = Buffer.alloc(4)
  length.writeUInt32BE(meta.length)
  return Buffer.concat([length, meta, entry.body])
}

/** The entry in `data`, or undefined when it is not one (corrupt or from another version). */
export function decodeEntry(data: Buffer): CachedResponse | undefined {
  if (data.length < 4) return undefined
  const length = data.readUInt32BE(0)
  if (4 + length > data.length) return undefined
  try {
    const meta = JSON.parse(data.subarray(4, 4 + length).toString()) as Omit<CachedResponse, 'body'>
    if (!Number.isInteger(meta.status) || !Array.isArray(meta.headers)) return undefined
    return { status: meta.status, headers: meta.headers, body: data.subarray(4 + length) }
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
