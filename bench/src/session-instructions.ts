/**
 * Instructions per request of each session scenario, counted by valgrind's callgrind: a
 * figure that, unlike req/s on this shared 2-core machine, comes out nearly the same from run
 * to run. Each scenario runs in its own process under callgrind (src/session-instructions-child.ts)
 * twice, with BENCH_FEW and BENCH_MANY requests; the difference divided by the extra requests
 * is what one request costs once the code is warm (start-up and JIT compilation cancel out).
 * What it leaves out: the HTTP parsing and socket writes of a real server, and the time
 * spent waiting. What it keeps: everything the app, Express, the middleware and the Redis
 * client execute per request.
 *
 *   pnpm bench:session:instructions     (the package must be built first; about 15 minutes for the read route)
 *
 * Fewer requests leave part of the JIT warm-up in the difference: 1000 against 6000 gave a
 * quarter more instructions per request than 2000 against 10000 for the same scenario.
 *
 * Environment: BENCH_ROUTES (default 'read'; 'read,write' for both), BENCH_FEW (default 2000), BENCH_MANY (default 10000), BENCH_REPEAT (default 1:
 * each difference is measured that many times, the median is kept).
 */
import { callgrindInstructions } from './callgrind.js'
import { log, median, positive, ratio, thousands } from './harness.js'
import { ROUTE_REQUESTS, ROUTES, type Route, SESSION_LABELS, type SessionScenario } from './session-scenarios.js'

const FEW = Math.round(positive('BENCH_FEW', 2000))
const MANY = Math.round(positive('BENCH_MANY', 10000))
const REPEAT = Math.round(positive('BENCH_REPEAT', 1))
const ROUTES_MEASURED = (process.env.BENCH_ROUTES || 'read').split(',').map((route) => {
  if (!ROUTES.includes(route as Route)) throw new Error(`BENCH_ROUTES: unknown route ${route}`)
  return route as Route
})
const SCENARIOS: SessionScenario[] = ['one-evalsha', 'erk-session', 'erk-session-cookie-parser', 'express-session']
const CHILD = new URL('./session-instructions-child.ts', import.meta.url).pathname

/** Instructions of one child run. */
const instructions = (scenario: SessionScenario, route: Route, requests: number): Promise<number> =>
  callgrindInstructions(CHILD, {
    BENCH_SCENARIO: scenario,
    BENCH_ROUTE: route,
    BENCH_REQUESTS: String(requests),
    BENCH_PREFIX: `bench-instructions:${process.pid}:${scenario}:`,
  })

const results = new Map<string, number>()
for (const route of ROUTES_MEASURED) {
  for (const scenario of SCENARIOS) {
    const perRequest: number[] = []
    for (let i = 0; i < REPEAT; i++) {
      const few = await instructions(scenario, route, FEW)
      const many = await instructions(scenario, route, MANY)
      perRequest.push((many - few) / (MANY - FEW))
      log(`${route} ${scenario}: ${thousands(perRequest.at(-1)!)} instructions/request`)
    }
    results.set(`${route} ${scenario}`, median(perRequest))
  }
}

const date = new Date().toISOString().slice(0, 16).replace('T', ' ')
const lines = [
  `## session: instructions per request (${date} UTC, callgrind)`,
  '',
  `Node ${process.version}; (instructions with ${MANY} requests - with ${FEW}) / ${MANY - FEW}, median of ${REPEAT}.`,
  '',
  '| Route | Scenario | instructions / request | vs the floor | vs express-session |',
  '|---|---|--:|--:|--:|',
]
for (const route of ROUTES_MEASURED) {
  const floor = results.get(`${route} one-evalsha`)!
  const peer = results.get(`${route} express-session`)!
  for (const scenario of SCENARIOS) {
    const value = results.get(`${route} ${scenario}`)!
    lines.push(
      `| ${ROUTE_REQUESTS[route].method} ${ROUTE_REQUESTS[route].path} | ${SESSION_LABELS[scenario]} | ${thousands(value)} | ${ratio(value, floor)} | ${ratio(value, peer)} |`,
    )
  }
}
process.stdout.write(`${lines.join('\n')}\n`)
