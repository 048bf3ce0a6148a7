/*
 * A child process for the local cache's multi-process tests (started by local.test.ts with
 * forkWorkers): its own Express app and its own Redis client, with `localCache: true`, on the
 * Redis (or Cluster) the test names. Its connections carry the client name the test gives
 * (CLIENT SETNAME), so that the test finds them in CLIENT LIST and MONITOR; the tracking
 * connections carry it too, with the `t` flag.
 *   GET  /page/:name          cacheResponse, ttl 1 min, tagged `name`
 *   POST /page/:name          the same cache (an unsafe request): bumps the page's version
 *   GET  /short/:name         cacheResponse, ttl `shortTtlMs`
 *   GET  /value/:name         cached(), ttl 1 min, tagged `name`
 *   GET  /short-value/:name   cached(), ttl `shortTtlMs`
 *   POST /invalidate/:tag     invalidateTags(); answers { count, resolvedAt } (Date.now() once it resolved)
 * Every body is `<name> v<version> made <Date.now() at the origin>`: the version is read from
 * `<prefix>v:<name>` (outside the cache's keys, so not tracked), so every fill's body is new.
 * A response served from the local cache carries `X-Local: 1` (from the diagnostics event).
 */
import { AsyncLocalStorage } from 'node:async_hooks'
import diagnostics from 'node:diagnostics_channel'
import express, { type Response } from 'express'
import { createClient, createCluster } from 'redis'
import { type CacheEvent, CHANNELS, cached, cacheResponse, invalidateTags } from '../../src/index.js'
import { serveWorker } from './workers.js'

export interface LocalCacheWorkerConfig {
  /** The client name of every connection of this worker. */
  name: string
  prefix: string
  /** A single Redis (`url`) or the seed nodes of a Cluster. */
  redis: { url: string } | { cluster: string[] }
  shortTtlMs: number
}

const config = JSON.parse(process.argv[2] ?? '{}') as LocalCacheWorkerConfig
const socket = { reconnectStrategy: () => 50 }
const client =
  'cluster' in config.redis
    ? createCluster({
        rootNodes: config.redis.cluster.map((url) => ({ url })),
        defaults: { name: config.name, socket },
      })
    : createClient({ url: config.redis.url, name: config.name, socket })
client.on('error', () => {})
await client.connect()

const { prefix } = config
const requests = new AsyncLocalStorage<Response>()
diagnostics.subscribe(CHANNELS.cache, (message) => {
  const event = message as CacheEvent
  const res = requests.getStore()
  if (event.result === 'hit' && event.local && res && !res.headersSent) res.setHeader('X-Local', '1')
})

async function body(name: string): Promise<string> {
  const version = (await client.get(`${prefix}v:${name}`)) ?? '0'
  return `${name} v${version} made ${Date.now()}`
}

const logger = { warn: () => {}, error: () => {} }
const common = { prefix, localCache: true, logger } as const
const page = cacheResponse({ client, ...common, ttl: '1m', tags: (req) => [String(req.params.name)] })
const short = cacheResponse({ client, ...common, ttl: config.shortTtlMs })

const app = express()
app.use((_req, res, next) => requests.run(res, next))
app.get('/page/:name', page, async (req, res) => {
  res.send(await body(String(req.params.name)))
})
app.post('/page/:name', page, async (req, res) => {
  await client.incr(`${prefix}v:${req.params.name}`)
  res.send('changed')
})
app.get('/short/:name', short, async (req, res) => {
  res.send(await body(String(req.params.name)))
})
app.get('/value/:name', async (req, res) => {
  const { name } = req.params
  res.send(await cached(client, name, { ...common, ttl: '1m', tags: [name] }, () => body(name)))
})
app.get('/short-value/:name', async (req, res) => {
  const { name } = req.params
  res.send(await cached(client, `short:${name}`, { ...common, ttl: config.shortTtlMs }, () => body(name)))
})
app.post('/invalidate/:tag', async (req, res) => {
  const count = await invalidateTags(client, [req.params.tag], { prefix })
  res.json({ count, resolvedAt: Date.now() })
})

serveWorker(app, client)
