/**
 * The local cache's hits against Redis hits and apicache-plus, as CPU per request side by side
 * in one process (src/in-process.ts: requests built in memory, no HTTP parsing or socket I/O,
 * the variants taking turns in short batches and compared round by round), with how many of the
 * local variant's hits were served from memory and the Redis commands per request of each
 * (INFO commandstats deltas over the measured batches, on a Redis nobody else uses). This is the
 * cost a hit adds to a request with HTTP taken out, which `pnpm bench:cache` cannot show on this
 * machine (there, HTTP and autocannon bound every scenario).
 *
 *   pnpm bench:local-cache:cpu      (from the repository root, after building the package)
 *
 * Environment: BENCH_ROUNDS (default 20), BENCH_REQUESTS (per batch, default 2000), BENCH_FENCE_MS
 * (the local variant's fenceMs, default the package's 20).
 */
import diagnostics from 'node:diagnostics_channel'
import { type CacheEvent, CHANNELS } from 'express-redis-kit'
import { Redis } from 'ioredis'
import { createClient } from 'redis'
import {
  BODY_TEXT,
  buildApp,
  CACHE_LABELS,
  type CacheScenario,
  outcomeOf,
  PATH,
  requestHeaders,
} from './cache-scenarios.js'
import { type Handler, sendInMemory } from './callgrind.js'
import { compare, type Variant } from './in-process.js'
import { privateRedis } from './private-redis.js'
import type { ServerRedis } from './serve.js'

const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 20)
const REQUESTS = Number(process.env.BENCH_REQUESTS ?? 2000)
const SCENARIOS: CacheScenario[] = ['erk-cache', 'erk-cache-local', 'apicache-plus', 'apicache-plus-br']

const redis = await privateRedis()
const { url } = redis
const closers: (() => Promise<unknown>)[] = []

async function variantOf(scenario: CacheScenario): Promise<Variant> {
  const prefix = `bench-cpu:${scenario}:`
  const node: ServerRedis = createClient({ url })
  await node.connect()
  const io = new Redis(url, { keyPrefix: prefix, lazyConnect: true })
  await io.connect()
  closers.push(
    () => node.close(),
    () => io.quit(),
  )
  // express's Application has handle() at runtime; its types do not say so.
  const app = buildApp(scenario, { node, io }, prefix) as unknown as Handler
  const headers = requestHeaders(scenario)
  // Warm: until the answer comes from the cache (and, for the local cache, from memory).
  for (let i = 0; i < 200; i++) {
    const res = await sendInMemory(app, 'GET', PATH, headers)
    if (outcomeOf(scenario, (name) => res.getHeader(name)) === 'HIT') break
    await new Promise((resolve) => setTimeout(resolve, 10))
  }
  return {
    name: CACHE_LABELS[scenario],
    app,
    path: PATH,
    headers,
    check(status, header) {
      if (status !== 200 || outcomeOf(scenario, header) !== 'HIT') throw new Error(`${scenario}: not a hit (${status})`)
    },
  }
}

/** Calls per command in INFO commandstats. */
async function commandCalls(): Promise<Map<string, number>> {
  const client = createClient({ url })
  await client.connect()
  const info = await client.info('commandstats')
  await client.close()
  const calls = new Map<string, number>()
  for (const [, name, count] of info.matchAll(/^cmdstat_([^:]+):calls=(\d+)/gm)) calls.set(name!, Number(count))
  return calls
}

let hits = 0
let local = 0
diagnostics.subscribe(CHANNELS.cache, (message) => {
  const event = message as CacheEvent
  if (event.result !== 'hit') return
  hits++
  if (event.local) local++
})

try {
  const variants = []
  for (const scenario of SCENARIOS) variants.push(await variantOf(scenario))
  const before = await commandCalls()
  const hitsBefore = hits
  const localBefore = local
  const results = await compare(variants, ROUNDS, REQUESTS)
  const after = await commandCalls()
  const requests = (ROUNDS + 1) * REQUESTS * variants.length
  const commands = [...after].map(([name, calls]) => [name, calls - (before.get(name) ?? 0)] as const)
  const kitHits = hits - hitsBefore
  const localHits = local - localBefore
  console.log(`\n## Hits in one process, CPU per request side by side (${new Date().toISOString().slice(0, 16)} UTC)\n`)
  console.log(
    `Node ${process.version}; a redis-server of the benchmark's own; ${ROUNDS} rounds of ${REQUESTS} requests per variant (after one warm-up round), 20 in flight; body ${BODY_TEXT.length} bytes.\n`,
  )
  console.log('| variant | CPU µs / request (median) | ratio to Redis hits (median) | lowest | highest |')
  console.log('|---|--:|--:|--:|--:|')
  for (const result of results) {
    console.log(
      `| ${result.name} | ${result.cpuUs.toFixed(1)} | ${result.ratio.toFixed(3)}x | ${result.low.toFixed(3)}x | ${result.high.toFixed(3)}x |`,
    )
  }
  console.log(
    `\nexpress-redis-kit hits in the whole run: ${kitHits}, of which served from memory ${localHits} (the local variant's share: ${((localHits / (kitHits / 2)) * 100).toFixed(1)}%).`,
  )
  console.log(
    `Redis commands over the run (every variant, ${requests} requests): ${commands
      .filter(([name, calls]) => calls > 0 && name !== 'info')
      .map(([name, calls]) => `${name} ${calls}`)
      .join(', ')}`,
  )
} finally {
  for (const close of closers) await close().catch(() => {})
  redis.stop()
}
