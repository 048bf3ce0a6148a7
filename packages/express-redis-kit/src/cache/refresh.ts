import { IncomingMessage, ServerResponse } from 'node:http'
import type { Socket } from 'node:net'
import { Duplex } from 'node:stream'
import type { Request } from 'express'
import type { Warn } from '../shared/logger.js'
import type { CacheStore, Lookup } from './store.js'

/** Marks the request replayed by {@link startRefresh}. */
export const REFRESH = Symbol('express-redis-kit.cache.refresh')

export interface Refresh {
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
export function startRefresh(req: Request, refresh: Refresh, store: CacheStore, warn: Warn): void {
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
    store.giveBack(refresh.entryKey, refresh.lookup.token, warn)
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
