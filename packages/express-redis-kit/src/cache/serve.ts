import type { Request, Response } from 'express'
import type { CachedResponse } from './entry.js'

/** What the cache tells the client about an answer from a stored entry. */
export interface ServedAs {
  /** `X-Cache`: HIT, STALE, or REVALIDATED (the handler answered 304 to the cache's conditional request). */
  xCache: 'HIT' | 'STALE' | 'REVALIDATED'
  /** The RFC 9211 `Cache-Status` entry. */
  cacheStatus: string
  /** The entry's age in seconds (RFC 9111 4.2.3). */
  age: number
}

/**
 * Answers from a stored entry: its status, headers and body as stored, plus `X-Cache`,
 * `Cache-Status` and `Age`. Headers set before the cache ran stay, unless the entry has its
 * own value for them (the handler set it). A client whose conditional headers match the
 * entry (Express's `req.fresh`: `If-None-Match`, else `If-Modified-Since`) gets a 304.
 */
export function serveEntry(req: Request, res: Response, entry: CachedResponse, as: ServedAs): void {
  for (const [name, value] of entry.headers) res.setHeader(name, value)
  res.setHeader('X-Cache', as.xCache)
  res.setHeader('Cache-Status', as.cacheStatus)
  res.setHeader('Age', String(as.age))
  res.statusCode = entry.status
  // RFC 9110 13.2.1: a precondition is evaluated only when the answer would be 2xx.
  const success = entry.status >= 200 && entry.status < 300
  if (success && (req.headers['if-none-match'] || req.headers['if-modified-since']) && req.fresh === true) {
    for (const name of ['content-length', 'content-type', 'content-encoding']) res.removeHeader(name)
    res.statusCode = 304
    res.end()
    return
  }
  // Node adds Content-Length on the wire to a body sent in one piece, so it may not be among
  // the stored headers: a HEAD answered from the entry must still carry it.
  if (!res.hasHeader('content-length') && !res.hasHeader('transfer-encoding')) {
    res.setHeader('Content-Length', String(entry.body.length))
  }
  if (req.method === 'HEAD') res.end()
  else res.end(entry.body)
}
