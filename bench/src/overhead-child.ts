/**
 * One measurement of src/overhead.ts, run under callgrind: one feature of express-redis-kit on
 * its common path (a rate limit never reached, a session read, a cache hit) answers
 * BENCH_REQUESTS requests in this process (src/callgrind.ts), optionally with the metrics entry
 * point recording into an OpenTelemetry SDK MeterProvider. Self-contained, so that src/overhead.ts
 * can run it in another checkout (the package version without the diagnostics events).
 * Environment: BENCH_FEATURE ('rate-limit' | 'session' | 'cache'), BENCH_METRICS ('1' to enable),
 * BENCH_REQUESTS, BENCH_PREFIX.
 */
import express from 'express'
import { cacheResponse, type RedisClient, rateLimit, session } from 'express-redis-kit'
import { createClient } from 'redis'
import { type Handler, sendInMemory, sendMany } from './callgrind.js'

const feature = process.env.BENCH_FEATURE
const count = Number(process.env.BENCH_REQUESTS)
const prefix = process.env.BENCH_PREFIX ?? 'bench-overhead:'
const client = await createClient({ url: 'redis://127.0.0.1:6379' }).connect()
const kitClient = client as unknown as RedisClient

if (process.env.BENCH_METRICS === '1') {
  const { MeterProvider, MetricReader } = await import('@opentelemetry/sdk-metrics')
  const { enableMetrics } = await import('express-redis-kit/metrics')
  // Recording only: nothing collects during the run.
  class IdleReader extends MetricReader {
    protected onForceFlush = () => Promise.resolve()
    protected onShutdown = () => Promise.resolve()
  }
  enableMetrics({ meterProvider: new MeterProvider({ readers: [new IdleReader()] }) })
}

const app = express()
let path = '/'
let headers: Record<string, string> = {}
if (feature === 'rate-limit') {
  app.use(rateLimit({ client: kitClient, prefix, limit: 1_000_000_000, windowMs: '1h', keyGenerator: () => 'bench' }))
  app.get('/', (_req, res) => {
    res.send('ok')
  })
} else if (feature === 'session') {
  app.use(session({ client: kitClient, prefix, secrets: 'bench secret' }))
  app.post('/login', async (req, res) => {
    await req.session.regenerate()
    ;(req.session as unknown as { userId: number }).userId = 1
    res.send('ok')
  })
  app.get('/read', (req, res) => {
    res.send(String((req.session as unknown as { userId?: number }).userId))
  })
  const login = await sendInMemory(app as unknown as Handler, 'POST', '/login')
  headers = { cookie: String(login.getHeader('set-cookie')).split(';')[0]! }
  path = '/read'
} else if (feature === 'cache') {
  app.get('/page', cacheResponse({ client: kitClient, prefix, ttl: '1h' }), (_req, res) => {
    res.json({ users: [1, 2, 3] })
  })
  path = '/page'
  await sendInMemory(app as unknown as Handler, 'GET', path)
  for (let i = 0; i < 100 && (await client.keys(`${prefix}*`)).length < 2; i++)
    await new Promise((r) => setTimeout(r, 20))
} else {
  throw new Error(`unknown BENCH_FEATURE ${feature}`)
}

await sendMany(count, 20, async () => {
  const res = await sendInMemory(app as unknown as Handler, 'GET', path, headers)
  if (res.statusCode !== 200) throw new Error(`${feature}: GET ${path} answered ${res.statusCode}`)
  if (feature === 'cache' && res.getHeader('x-cache') !== 'HIT') throw new Error('cache: not a hit')
})
const keys = await client.keys(`${prefix}*`)
if (keys.length > 0) await client.unlink(keys)
await client.close()
