/**
 * Instructions per request of the rateLimit allowed path and its peers, counted by valgrind's
 * callgrind (see src/callgrind.ts): the comparison that req/s on this shared machine cannot
 * settle. Each scenario runs in its own process under callgrind (src/rate-limit-instructions-child.ts)
 * twice, with BENCH_FEW and BENCH_MANY requests; the difference divided by the extra requests is
 * what one request costs once the code is warm. Left out: HTTP parsing, socket writes, waiting.
 *
 *   pnpm bench:rate-limit:instructions     (the package must be built first)
 *
 * Environment: BENCH_SCENARIOS (comma-separated, default every allowed-path scenario),
 * BENCH_FEW (default 2000), BENCH_MANY (default 10000), BENCH_REPEAT (default 1, median kept).
 */
import { callgrindInstructions } from './callgrind.js'
import { log, median, positive, ratio, thousands } from './harness.js'
import { ALLOWED_SCENARIOS, LABELS, type Scenario } from './scenarios.js'

const FEW = Math.round(positive('BENCH_FEW', 2000))
const MANY = Math.round(positive('BENCH_MANY', 10000))
const REPEAT = Math.round(positive('BENCH_REPEAT', 1))
const CHILD = new URL('./rate-limit-instructions-child.ts', import.meta.url).pathname
const PEERS: Scenario[] = ['express-rate-limit', 'rate-limiter-flexible']
const chosen = process.env.BENCH_SCENARIOS?.split(',')
for (const name of chosen ?? []) {
  if (!(ALLOWED_SCENARIOS as readonly string[]).includes(name)) throw new Error(`BENCH_SCENARIOS: unknown ${name}`)
}
const scenarios = ALLOWED_SCENARIOS.filter((scenario) => !chosen || scenario === 'express' || chosen.includes(scenario))

const instructions = (scenario: Scenario, requests: number): Promise<number> =>
  callgrindInstructions(CHILD, {
    BENCH_SCENARIO: scenario,
    BENCH_REQUESTS: String(requests),
    BENCH_PREFIX: `bench-instructions:${process.pid}:${scenario}:`,
  })

const results = new Map<Scenario, number>()
for (const scenario of scenarios) {
  const perRequest: number[] = []
  for (let i = 0; i < REPEAT; i++) {
    const few = await instructions(scenario, FEW)
    const many = await instructions(scenario, MANY)
    perRequest.push((many - few) / (MANY - FEW))
    log(`${scenario}: ${thousands(perRequest.at(-1)!)} instructions/request`)
  }
  results.set(scenario, median(perRequest))
}

const date = new Date().toISOString().slice(0, 16).replace('T', ' ')
const base = results.get('express')!
const best = Math.min(...PEERS.filter((peer) => results.has(peer)).map((peer) => results.get(peer)!))
const lines = [
  `## rateLimit allowed path: instructions per request (${date} UTC, callgrind)`,
  '',
  `Node ${process.version}; (instructions with ${MANY} requests - with ${FEW}) / ${MANY - FEW}, median of ${REPEAT}; ` +
    'the limiter alone is the scenario minus plain Express.',
  '',
  '| Scenario | instructions / request | the limiter alone | vs the cheapest peer (limiter alone) |',
  '|---|--:|--:|--:|',
]
for (const scenario of scenarios) {
  const value = results.get(scenario)!
  const own = value - base
  const peerCell = scenario === 'express' || !Number.isFinite(best) ? '-' : ratio(own, best - base)
  lines.push(
    `| ${LABELS[scenario]} | ${thousands(value)} | ${scenario === 'express' ? '-' : thousands(own)} | ${peerCell} |`,
  )
}
process.stdout.write(`${lines.join('\n')}\n`)
