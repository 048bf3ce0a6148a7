/**
 * What the diagnostics events cost (issue 15): instructions per request, counted by callgrind
 * (src/callgrind.ts), of a rate limit never reached, a session read and a cache hit, for
 *   - the package without events: a checkout of the commit before them, built, at BENCH_BASELINE;
 *   - this checkout, nobody subscribed to the channels;
 *   - this checkout with express-redis-kit/metrics recording into an OpenTelemetry SDK MeterProvider.
 * Instruction counts do not depend on the load of the machine, so the three columns compare
 * although each child runs on its own.
 *
 *   git worktree add /tmp/erk-baseline 7989a47 && (cd /tmp/erk-baseline && pnpm install --offline && pnpm build)
 *   BENCH_BASELINE=/tmp/erk-baseline pnpm bench:overhead      (this checkout's package built first)
 *
 * Environment: BENCH_BASELINE (required), BENCH_FEATURES (default 'rate-limit,session,cache'),
 * BENCH_FEW (default 2000), BENCH_MANY (default 6000).
 */
import { copyFile } from 'node:fs/promises'
import { join } from 'node:path'
import { callgrindInstructions } from './callgrind.js'
import { log, positive, thousands } from './harness.js'

const FEW = Math.round(positive('BENCH_FEW', 2000))
const MANY = Math.round(positive('BENCH_MANY', 6000))
const baseline = process.env.BENCH_BASELINE
if (!baseline) throw new Error('BENCH_BASELINE: the path of a built checkout of the commit before the events')
const FEATURES = (process.env.BENCH_FEATURES || 'rate-limit,session,cache').split(',')
const here = new URL('.', import.meta.url).pathname
const CHILD = join(here, 'overhead-child.ts')
// The same child, run from the baseline checkout so that it imports that checkout's package.
const BASELINE_CHILD = join(baseline, 'bench', 'src', 'overhead-child.ts')
await copyFile(CHILD, BASELINE_CHILD)

type Variant = 'baseline' | 'events' | 'metrics'
const VARIANTS: Variant[] = ['baseline', 'events', 'metrics']

async function perRequest(feature: string, variant: Variant): Promise<number> {
  const child = variant === 'baseline' ? BASELINE_CHILD : CHILD
  const run = (requests: number) =>
    callgrindInstructions(child, {
      BENCH_FEATURE: feature,
      BENCH_METRICS: variant === 'metrics' ? '1' : '0',
      BENCH_REQUESTS: String(requests),
      BENCH_PREFIX: `bench-overhead:${process.pid}:${feature}:${variant}:`,
    })
  const few = await run(FEW)
  const many = await run(MANY)
  const value = (many - few) / (MANY - FEW)
  log(`${feature} ${variant}: ${thousands(value)} instructions/request`)
  return value
}

const lines = [
  `## diagnostics events: instructions per request (${new Date().toISOString().slice(0, 16).replace('T', ' ')} UTC, callgrind)`,
  '',
  `Node ${process.version}; (instructions with ${MANY} requests - with ${FEW}) / ${MANY - FEW}, whole request in process (Express, the middleware, node-redis).`,
  '',
  '| path | without events | events, no subscriber | vs without | with express-redis-kit/metrics | vs without |',
  '|---|--:|--:|--:|--:|--:|',
]
for (const feature of FEATURES) {
  const [without, events, withMetrics] = await Promise.all(VARIANTS.map((variant) => perRequest(feature, variant)))
  const change = (value: number) =>
    `${value >= without! ? '+' : ''}${(((value - without!) / without!) * 100).toFixed(2)}%`
  lines.push(
    `| ${feature} | ${thousands(without!)} | ${thousands(events!)} | ${change(events!)} | ${thousands(withMetrics!)} | ${change(withMetrics!)} |`,
  )
}
process.stdout.write(`${lines.join('\n')}\n`)
