/*
 * A child process for the cache's multi-process tests (started by `startCacheWorkers` in
 * cache-workers.ts): its own Express app and its own Redis connection (single or Cluster,
 * per REDIS_MODE). The test names the key prefix of each request in `X-Prefix`, so that
 * every test has keys of its own; the origin counts its runs in Redis (`<prefix>runs`, one
 * counter for every process) and reports each run over IPC.
 *   GET /page          cacheResponse; the handler answers `page run <n>` after delayMs,
 *                      or never with `X-Hang` (its process then holds the fill lock until killed)
 *   GET /value         cached(); the loader returns `value run <n>` after delayMs
 * It listens on an ephemeral loopback port, reports `{ type: 'ready', port }`, and exits on
 * SIGTERM or when its parent goes away.
 */
import { setTimeout as sleep } from 'node:timers/promises'
import express, { type Request } from 'express'
import { type CacheMiddleware, cached, cacheResponse } from '../../src/index.js'
import type { CacheWorkerConfig, CacheWorkerMessage } from './cache-workers.js'
import { connectRedis } from './redis.js'
import { serveWorker } from './workers.js'

const config = JSON.parse(process.argv[2] ?? '{}') as CacheWorkerConfig
const client = await connectRedis()
// Under the load of 50 requests at once, a slow Redis reply is not an outage.
const common = { ttl: '1m', lockTimeout: config.lockTimeout, timeoutMs: 10_000 } as const

const prefixOf = (req: Request): string => String(req.headers['x-prefix'])
async function originRun(prefix: string): Promise<number> {
  const run = Number(await client.incr(`${prefix}runs`))
  const message: CacheWorkerMessage = { type: 'origin', prefix, run }
  process.send?.(message)
  return run
}

const caches = new Map<string, CacheMiddleware>()
const app = express()
app.get(
  '/page',
  (req, res, next) => {
    const prefix = prefixOf(req)
    let cache = caches.get(prefix)
    if (!cache) {
      cache = cacheResponse({ client, prefix, ...common })
      caches.set(prefix, cache)
    }
    return cache(req, res, next)
  },
  async (req, res) => {
    const run = await originRun(prefixOf(req))
    if (req.headers['x-hang'] !== undefined) return
    await sleep(config.delayMs)
    res.send(`page run ${run}`)
  },
)
app.get('/value', async (req, res) => {
  const prefix = prefixOf(req)
  const value = await cached(client, 'value', { prefix, ...common }, async () => {
    const run = await originRun(prefix)
    await sleep(config.delayMs)
    return `value run ${run}`
  })
  res.send(value)
})

serveWorker(app, client)
