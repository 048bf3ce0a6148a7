/**
 * What the diagnostics events cost (issue 15), side by side in one process (src/in-process.ts):
 * a rate limit never reached, a session read and a cache hit, each on
 *   - the package without the events: the build of a checkout of the commit before them
 *     (BENCH_BASELINE), imported by path;
 *   - this checkout's package with nobody subscribed to its channels;
 *   - then, once `express-redis-kit/metrics` records into an OpenTelemetry SDK MeterProvider,
 *     this checkout's package again (the baseline build publishes nothing, so it is unaffected).
 * CPU time per request, requests built in memory (no HTTP parsing or socket I/O: those would
 * only dilute the difference), a real Redis.
 *
 *   git worktree add /tmp/erk-baseline 7989a47 && (cd /tmp/erk-baseline && pnpm install --offline && pnpm build)
 *   BENCH_BASELINE=/tmp/erk-baseline pnpm bench:overhead      (this checkout's package built first)
 *
 * Environment: BENCH_BASELINE (required), BENCH_ROUNDS (default 20), BENCH_REQUESTS (per batch, default 2000),
 * BENCH_FEATURES (default 'rate-limit,session,cache'), BENCH_PHASES (default 'nobody,metrics'),
 * BENCH_REDIS_DURATIONS ('0': enableMetrics({ redisDurations: false })).
 */
import { join } from 'node:path'
import { MeterProvider, MetricReader } from '@opentelemetry/sdk-metrics'
import express from 'express'
import * as current from 'express-redis-kit'
import { enableMetrics } from 'express-redis-kit/metrics'
import { createClient } from 'redis'
import { type Handler, sendInMemory } from './callgrind.js'
import { log, positive } from './harness.js'
import { compare, table, type Variant } from './in-process.js'

type Kit = Pick<typeof current, 'rateLimit' | 'session' | 'cacheResponse'>
const baselineDir = process.env.BENCH_BASELINE
if (!baselineDir) throw new Error('BENCH_BASELINE: the path of a built checkout of the commit before the events')
const baseline = (await import(join(baselineDir, 'packages/express-redis-kit/dist/esm/index.js'))) as Kit
const ROUNDS = Math.round(positive('BENCH_ROUNDS', 20))
const REQUESTS = Math.round(positive('BENCH_REQUESTS', 2000))
const client = await createClient({ url: process.env.REDIS_URL ?? 'redis://127.0.0.1:6379' }).connect()
const kitClient = client as unknown as current.RedisClient
const runPrefix = `bench-overhead:${process.pid}:`
let apps = 0

/** The app of one feature on one build of the package, ready to measure (logged in, cache filled). */
async function variant(name: string, kit: Kit, feature: string): Promise<Variant> {
  const prefix = `${runPrefix}${++apps}:`
  const app = express()
  const handler = app as unknown as Handler
  if (feature === 'rate-limit') {
    app.use(kit.rateLimit({ client: kitClient, prefix, limit: 1_000_000_000, windowMs: '1h', keyGenerator: () => 'b' }))
    app.get('/', (_req, res) => {
      res.send('ok')
    })
    return { name, app: handler, path: '/' }
  }
  if (feature === 'session') {
    app.use(kit.session({ client: kitClient, prefix, secrets: 'bench secret' }))
    app.post('/login', async (req, res) => {
      await req.session.regenerate()
      ;(req.session as unknown as { userId: number }).userId = 1
      res.send('ok')
    })
    app.get('/read', (req, res) => {
      res.send(String((req.session as unknown as { userId?: number }).userId))
    })
    const login = await sendInMemory(handler, 'POST', '/login')
    const cookie = String(login.getHeader('set-cookie')).split(';')[0]!
    return { name, app: handler, path: '/read', headers: { cookie } }
  }
  app.get('/page', kit.cacheResponse({ client: kitClient, prefix, ttl: '1h' }), (_req, res) => {
    res.json({ users: [1, 2, 3] })
  })
  for (let i = 0; i < 100; i++) {
    if ((await sendInMemory(handler, 'GET', '/page')).getHeader('x-cache') === 'HIT') break
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
  const check = (status: number, header: (name: string) => unknown) => {
    if (status !== 200 || header('x-cache') !== 'HIT') throw new Error(`${name}: not a cache hit`)
  }
  return { name, app: handler, path: '/page', check }
}

const FEATURES = (process.env.BENCH_FEATURES || 'rate-limit,session,cache').split(',')
const PHASES = (process.env.BENCH_PHASES || 'nobody,metrics').split(',')
const redisDurations = process.env.BENCH_REDIS_DURATIONS !== '0'
const lines = [
  `## diagnostics events: CPU per request side by side (${new Date().toISOString().slice(0, 16).replace('T', ' ')} UTC, \`pnpm bench:overhead\`)`,
  '',
  `Node ${process.version}; one process, requests built in memory (Express, the middleware and node-redis; no HTTP parsing), ` +
    `${ROUNDS} rounds of ${REQUESTS} requests per variant in rotating order after a warm-up round; ratios are per round against the build without events.`,
  '',
]
for (const feature of PHASES.includes('nobody') ? FEATURES : []) {
  const results = await compare(
    [await variant('without events', baseline, feature), await variant('events, no subscriber', current, feature)],
    ROUNDS,
    REQUESTS,
  )
  log(`${feature}: ${results.map((r) => `${r.name} ${r.cpuUs.toFixed(1)} µs ${r.ratio.toFixed(3)}x`).join(', ')}`)
  lines.push(`### ${feature}, nobody subscribed`, '', ...table(results, 'without events'), '')
}

// Now with the metrics entry point: every channel has subscribers from here on.
class IdleReader extends MetricReader {
  protected onForceFlush = () => Promise.resolve()
  protected onShutdown = () => Promise.resolve()
}
if (PHASES.includes('metrics'))
  enableMetrics({ meterProvider: new MeterProvider({ readers: [new IdleReader()] }), redisDurations })
for (const feature of PHASES.includes('metrics') ? FEATURES : []) {
  const results = await compare(
    [
      await variant('without events', baseline, feature),
      await variant('express-redis-kit/metrics on', current, feature),
    ],
    ROUNDS,
    REQUESTS,
  )
  log(
    `${feature} + metrics: ${results.map((r) => `${r.name} ${r.cpuUs.toFixed(1)} µs ${r.ratio.toFixed(3)}x`).join(', ')}`,
  )
  const what = redisDurations
    ? 'express-redis-kit/metrics recording'
    : 'express-redis-kit/metrics recording, redisDurations: false'
  lines.push(`### ${feature}, with ${what}`, '', ...table(results, 'without events'), '')
}

const keys = await client.keys(`${runPrefix}*`)
if (keys.length > 0) await client.unlink(keys)
await client.close()
process.stdout.write(`${lines.join('\n')}\n`)
