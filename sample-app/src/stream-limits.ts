import type { RequestHandler } from 'express'
import { ipKeyGenerator } from 'express-redis-kit'
import { HttpError } from './errors.js'

/** Retry-After (seconds) of a stream refused for its IP. (A 503 gets the error handler's 5 s.) */
const RETRY_AFTER_SECONDS = 10

export interface StreamLimitOptions {
  /** Open streams per client IP (IPv6 grouped by /56, as the rate limits count). */
  perIp: number
  /** Open streams, all clients together. */
  total: number
}

/**
 * Caps the long-lived responses of a route (GET /events) on this instance: a client IP with
 * `perIp` streams open gets 429 `too_many_streams`, and once `total` are open every new one
 * gets 503 `streams_unavailable`, both with Retry-After. A slot is taken when the request is
 * let through and freed when its response closes, however it ends (client gone, error, shutdown).
 */
export function limitStreams(options: StreamLimitOptions): RequestHandler & { open(): number } {
  const perIp = new Map<string, number>()
  let open = 0
  const handler: RequestHandler = (req, res, next) => {
    const ip = ipKeyGenerator(req.ip ?? req.socket.remoteAddress ?? 'unknown')
    const mine = perIp.get(ip) ?? 0
    if (mine >= options.perIp) {
      res.set('Retry-After', String(RETRY_AFTER_SECONDS))
      throw new HttpError(
        429,
        'too_many_streams',
        `This client already has ${mine} event streams open (at most ${options.perIp}); close one first.`,
      )
    }
    if (open >= options.total) {
      throw new HttpError(
        503,
        'streams_unavailable',
        'This server has no room for more event streams; try again shortly.',
      )
    }
    perIp.set(ip, mine + 1)
    open++
    res.once('close', () => {
      open--
      const left = (perIp.get(ip) ?? 1) - 1
      if (left > 0) perIp.set(ip, left)
      else perIp.delete(ip)
    })
    next()
  }
  return Object.assign(handler, { open: () => open })
}
