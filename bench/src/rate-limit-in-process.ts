/**
 * The rateLimit allowed path against its peers, CPU per request side by side in one process
 * (src/in-process.ts): what req/s on this shared machine cannot settle (its rounds spread by
 * ±30%). Requests built in memory (Express, the limiter and its Redis client; no HTTP parsing or
 * socket I/O), a real Redis, limits never reached, one client key; the scenarios of src/scenarios.ts.
 *
 *   pnpm bench:rate-limit:cpu      (the package built first)
 *
 * Environment: BENCH_ROUNDS (default 20), BENCH_REQUESTS (per batch, default 2000), BENCH_SCENARIOS
 * (comma-separated allowed-path scenarios; default rate-limiter-flexible, the rateLimit scenarios,
 * express-rate-limit and plain Express; the first is the reference).
 */
import express from 'express'
import { createClient } from 'redis'
import type { Handler } from './callgrind.js'
import { log, positive } from './harness.js'
import { compare, table } from './in-process.js'
import { ALLOWED_SCENARIOS, buildMiddleware, defaultLimit, LABELS, type Scenario } from './scenarios.js'

const ROUNDS = Math.round(positive('BENCH_ROUNDS', 20))
const REQUESTS = Math.round(positive('BENCH_REQUESTS', 2000))
const DEFAULT: Scenario[] = [
  'rate-limiter-flexible',
  'erk-sliding-window',
  'erk-fixed-window',
  'erk-no-headers',
  'express-rate-limit',
  'express',
]
const chosen = (process.env.BENCH_SCENARIOS?.split(',') as Scenario[] | undefined) ?? DEFAULT
for (const name of chosen) {
  if (!(ALLOWED_SCENARIOS as readonly string[]).includes(name)) throw new Error(`BENCH_SCENARIOS: unknown ${name}`)
}
const client: ReturnType<typeof createClient> = createClient({ url: process.env.REDIS_URL ?? 'redis://127.0.0.1:6379' })
await client.connect()
const prefix = `bench-rl-cpu:${process.pid}:`

const variants = chosen.map((scenario) => {
  const app = express()
  const middleware = buildMiddleware(scenario, client, `${prefix}${scenario}:`, defaultLimit(scenario))
  if (middleware) app.use(middleware)
  app.get('/', (_req, res) => {
    res.send('ok')
  })
  return { name: LABELS[scenario], app: app as unknown as Handler, path: '/' }
})
const results = await compare(variants, ROUNDS, REQUESTS)
for (const result of results) log(`${result.name}: ${result.cpuUs.toFixed(1)} µs, ${result.ratio.toFixed(3)}x`)

const keys = await client.keys(`${prefix}*`)
if (keys.length > 0) await client.unlink(keys)
await client.close()
process.stdout.write(
  [
    `## rateLimit allowed path: CPU per request side by side (${new Date().toISOString().slice(0, 16).replace('T', ' ')} UTC, \`pnpm bench:rate-limit:cpu\`)`,
    '',
    `Node ${process.version}; one process, requests built in memory, ${ROUNDS} rounds of ${REQUESTS} requests per scenario in rotating order after a warm-up round; ratios per round against ${LABELS[chosen[0]!]}.`,
    '',
    ...table(results, LABELS[chosen[0]!]),
    '',
  ].join('\n'),
)
