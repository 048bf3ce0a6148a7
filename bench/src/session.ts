/**
 * Load benchmark of express-redis-kit's session (with its own `secrets`, and behind
 * cookie-parser) against express-session + connect-redis, and of express-session on the kit's
 * store (express-redis-kit/express-session) against it on connect-redis, with plain Express (no session) as
 * the baseline and a middleware that sends one EVALSHA and does nothing else as the floor of
 * any Redis-backed session, on the same two routes:
 *   GET /read    a read-only request with a logged-in session (answers `userId`)
 *   POST /write  a request that changes the session (increments `counter`)
 *
 *   pnpm bench:session    (from the repository root; the package must be built first)
 *
 * Each run starts a fresh server in a child process (src/session-server.ts), logs in once
 * (POST /login), and drives autocannon with that session's cookie on every request. The
 * twelve runs (2 routes x 6 scenarios) are interleaved over several rounds in alternating
 * order and the medians are reported, as ratios measured in the same run. Before the load,
 * MONITOR counts, over unloaded requests, the commands each server's own connection sends
 * and the ones its Lua scripts run, and which of them write. Prints Markdown on stdout,
 * progress on stderr.
 *
 * Environment: BENCH_DURATION, BENCH_WARMUP, BENCH_ROUNDS, BENCH_CONNECTIONS, BENCH_PROFILE,
 * as for `pnpm bench` (src/harness.ts).
 *
 * Nothing shared is flushed: every key lives under a prefix unique to this run, and the
 * keys are deleted (SCAN + UNLINK) after each run and again on exit.
 */
import { type Server, startServer } from './children.js'
import {
  CONNECTIONS,
  changesPerRequest,
  columnNotes,
  commandMedians,
  DURATION,
  failures,
  type LoadRun,
  log,
  measureLoad,
  median,
  PIPELINING,
  PROFILE_DIR,
  ROUNDS,
  ratio,
  redisUsecPerRequest,
  runBenchmark,
  runRounds,
  thousands,
  WARMUP,
} from './harness.js'
import {
  type Client,
  deleteUnder,
  describeCounts,
  describeSent,
  describeWrites,
  type MonitorCounts,
  monitorWhile,
  rdbChanges,
  total,
  writeCommands,
} from './redis-stats.js'
import {
  ROUTE_REQUESTS,
  ROUTES,
  type Route,
  SESSION_LABELS,
  SESSION_SCENARIOS,
  type SessionScenario,
  USER_ID,
} from './session-scenarios.js'

const SESSION_SERVER = new URL('./session-server.ts', import.meta.url)
const PROBE_REQUESTS = 200
const PEER: SessionScenario = 'express-session'
const MINE: SessionScenario = 'erk-session'
const FLOOR: SessionScenario = 'one-evalsha'

/** Every key this run creates starts with this. */
const RUN_PREFIX = `bench-session:${process.pid}:${Date.now().toString(36)}:`

interface Unit {
  route: Route
  scenario: SessionScenario
}
const UNITS: Unit[] = ROUTES.flatMap((route) => SESSION_SCENARIOS.map((scenario) => ({ route, scenario })))
const usesRedis = (scenario: SessionScenario): boolean => scenario !== 'express'
const routeLabel = (route: Route): string => `${ROUTE_REQUESTS[route].method} ${ROUTE_REQUESTS[route].path}`

interface Run extends LoadRun, Unit {
  round: number
}

/** What MONITOR saw over {@link PROBE_REQUESTS} unloaded requests on one route. */
interface RouteProbe {
  monitor: MonitorCounts
  /** `rdb_changes_since_last_save` delta over those requests (every client of the Redis). */
  changes: number | undefined
  /** Responses that carried a Set-Cookie. */
  setCookies: number
}
type Probe = Record<Route, RouteProbe>

async function main(client: Client, version: string): Promise<string> {
  log(
    `Redis ${version} at 127.0.0.1:6379, Node ${process.version}; ${ROUNDS} rounds of ${UNITS.length} runs, ` +
      `${WARMUP} s warm-up + ${DURATION} s each, ${CONNECTIONS} connections, pipelining ${PIPELINING}; key prefix ${RUN_PREFIX}`,
  )
  const probes = new Map<SessionScenario, Probe>()
  for (const scenario of SESSION_SCENARIOS) {
    if (usesRedis(scenario)) probes.set(scenario, await probe(client, scenario))
  }
  const seen = [...probes.values()].flatMap((p) =>
    ROUTES.flatMap((route) => [...p[route].monitor.sent.keys(), ...p[route].monitor.inScripts.keys()]),
  )
  const writes = await writeCommands(client, seen)

  const { runs, repeated } = await runRounds(UNITS, {
    name: (unit) => `${unit.route} ${unit.scenario}`,
    label: (unit) => `${routeLabel(unit.route)} ${SESSION_LABELS[unit.scenario]}`,
    usesRedis: (unit) => usesRedis(unit.scenario),
    measure: (unit, round) => measure(client, unit, round),
  })
  return report(runs, probes, writes, version, repeated)
}

/** Logs in (POST /login) and returns the session cookie as a Cookie header (none for plain Express). */
async function login(server: Server): Promise<string | undefined> {
  const response = await fetch(new URL('/login', server.url), { method: 'POST' })
  const body = await response.text()
  if (response.status !== 200) throw new Error(`${server.scenario}: POST /login answered ${response.status} ${body}`)
  const cookie = response.headers.getSetCookie()[0]?.split(';')[0]
  if (!cookie && server.scenario !== 'express' && server.scenario !== 'one-evalsha')
    throw new Error(`${server.scenario}: POST /login set no cookie`)
  return cookie
}

/** `count` sequential requests on `route` that must all answer 200 with the session's data; returns how many set a cookie. */
async function requests(server: Server, route: Route, cookie: string | undefined, count: number): Promise<number> {
  const { method, path } = ROUTE_REQUESTS[route]
  let setCookies = 0
  for (let i = 0; i < count; i++) {
    const response = await fetch(new URL(path, server.url), { method, headers: cookie ? { cookie } : {} })
    const text = await response.text()
    const body = response.status === 200 ? (JSON.parse(text) as { userId?: unknown; counter?: unknown }) : undefined
    const ok = route === 'read' ? body?.userId === USER_ID : typeof body?.counter === 'number'
    if (!ok) throw new Error(`${server.scenario}: ${method} ${path} answered ${response.status} ${text.slice(0, 200)}`)
    if (response.headers.getSetCookie().length > 0) setCookies++
  }
  return setCookies
}

/** Unloaded checks of one session scenario: the routes answer with the session, and what each sends to Redis. */
async function probe(client: Client, scenario: SessionScenario): Promise<Probe> {
  const prefix = `${RUN_PREFIX}probe:${scenario}:`
  const server = await startServer(scenario, { prefix, module: SESSION_SERVER })
  try {
    const cookie = await login(server)
    // Steady state only: the scripts are loaded by now (a first EVALSHA may have met NOSCRIPT).
    for (const route of ROUTES) await requests(server, route, cookie, 10)
    const result = {} as Probe
    for (const route of ROUTES) {
      let setCookies = 0
      const changesBefore = await rdbChanges(client)
      const monitor = await monitorWhile(client, server.redisAddr!, async () => {
        setCookies = await requests(server, route, cookie, PROBE_REQUESTS)
      })
      const changesAfter = await rdbChanges(client)
      const changes = changesAfter >= changesBefore ? changesAfter - changesBefore : undefined
      result[route] = { monitor, changes, setCookies }
    }
    log(`probe ${scenario}: ok`)
    return result
  } finally {
    await server.stop()
    await deleteUnder(client, prefix)
  }
}

async function measure(client: Client, unit: Unit, round: number): Promise<Run> {
  const prefix = `${RUN_PREFIX}r${round}:${unit.scenario}:${unit.route}:`
  const server = await startServer(unit.scenario, { prefix, module: SESSION_SERVER, profileDir: PROFILE_DIR })
  try {
    const cookie = await login(server)
    const { method, path } = ROUTE_REQUESTS[unit.route]
    const run = await measureLoad(client, server, {
      url: new URL(path, server.url).href,
      method,
      headers: cookie ? { cookie } : undefined,
    })
    return { ...run, ...unit, round }
  } finally {
    await server.stop()
    await deleteUnder(client, prefix)
  }
}

function report(
  runs: Run[],
  probes: Map<SessionScenario, Probe>,
  writes: Set<string>,
  version: string,
  repeated: string[],
): string {
  const of = (route: Route, scenario: SessionScenario) =>
    runs.filter((run) => run.route === route && run.scenario === scenario)
  const medianOf = (route: Route, scenario: SessionScenario, value: (run: Run) => number) =>
    median(of(route, scenario).map(value))
  const date = new Date().toISOString().slice(0, 16).replace('T', ' ')
  const lines: string[] = [
    `## session load benchmark (${date} UTC)`,
    '',
    `Node ${process.version}, Redis ${version} on 127.0.0.1:6379; autocannon ${CONNECTIONS} connections, ` +
      `pipelining ${PIPELINING}, ${WARMUP} s warm-up + ${DURATION} s measured per run; ${ROUNDS} rounds ` +
      'in alternating order, medians. One logged-in session per run, its cookie on every request.',
    '',
    '| Route | Scenario | req/s | vs Express | p99 ms | vs Express | server CPU µs / request | Redis µs / request | ' +
      'round trips / request (MONITOR) | writes / request (MONITOR) | Redis commands / request (commandstats) | ' +
      'dataset changes / request | commands executed / request |',
    '|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|',
  ]
  const warnings: string[] = []
  for (const route of ROUTES) {
    const baseRps = medianOf(route, 'express', (run) => run.requestsPerSecond)
    const baseP99 = medianOf(route, 'express', (run) => run.p99)
    for (const scenario of SESSION_SCENARIOS) {
      const mine = of(route, scenario)
      const rps = medianOf(route, scenario, (run) => run.requestsPerSecond)
      const p99 = medianOf(route, scenario, (run) => run.p99)
      const cpu = medianOf(route, scenario, (run) => run.serverCpuPerRequest)
      const perRequest = medianOf(route, scenario, (run) => total(run.commands) / run.completed)
      const monitor = probes.get(scenario)?.[route].monitor
      const redisUsec = monitor ? redisUsecPerRequest(mine, monitor.sent.keys()).toFixed(1) : '-'
      lines.push(
        `| ${routeLabel(route)} | ${SESSION_LABELS[scenario]} | ${thousands(rps)} | ${ratio(rps, baseRps)} | ` +
          `${p99} | ${ratio(p99, baseP99)} | ${Math.round(cpu)} | ${redisUsec} | ` +
          `${monitor ? describeSent(monitor, PROBE_REQUESTS) : '0 (no Redis)'} | ` +
          `${monitor ? describeWrites(monitor, writes, PROBE_REQUESTS) : '0 (no Redis)'} | ${perRequest.toFixed(2)} | ` +
          `${changesPerRequest(mine)} | ${describeCounts(commandMedians(mine), 1)} |`,
      )
      const failed = failures(`${routeLabel(route)} ${SESSION_LABELS[scenario]}`, mine)
      if (failed) warnings.push(failed)
    }
  }

  const comparisons: [SessionScenario, SessionScenario][] = [
    [MINE, PEER],
    [MINE, FLOOR],
    ['erk-session-cookie-parser', PEER],
    ['express-session-erk-store', PEER],
  ]
  for (const [one, other] of comparisons) {
    lines.push(
      '',
      `### ${SESSION_LABELS[one]} / ${SESSION_LABELS[other]}`,
      '',
      '| Route | req/s ratio (medians) | p99 ratio (medians) | server CPU ratio (medians) | req/s ratio in each round |',
      '|---|--:|--:|--:|---|',
    )
    for (const route of ROUTES) {
      const value = (scenario: SessionScenario, field: (run: Run) => number) => medianOf(route, scenario, field)
      const perRound = of(route, one).map((run) => {
        const peer = of(route, other).find((candidate) => candidate.round === run.round)
        return peer ? ratio(run.requestsPerSecond, peer.requestsPerSecond) : '?'
      })
      const of2 = (field: (run: Run) => number) => ratio(value(one, field), value(other, field))
      lines.push(
        `| ${routeLabel(route)} | ${of2((run) => run.requestsPerSecond)} | ${of2((run) => run.p99)} | ` +
          `${of2((run) => run.serverCpuPerRequest)} | ${perRound.join(', ')} |`,
      )
    }
  }

  lines.push(
    '',
    'Requests/s of each round (in the order run):',
    '',
    ...UNITS.map(
      ({ route, scenario }) =>
        `- ${routeLabel(route)}, ${SESSION_LABELS[scenario]}: ${of(route, scenario)
          .map((run) => `${thousands(run.requestsPerSecond)} (p99 ${run.p99})`)
          .join(', ')}`,
    ),
    '',
    `Unloaded probe (${PROBE_REQUESTS} sequential requests per route, after 10 of each):`,
    '',
    ...[...probes].flatMap(([scenario, result]) =>
      ROUTES.map(
        (route) =>
          `- ${SESSION_LABELS[scenario]}, ${routeLabel(route)}: ${result[route].setCookies} responses with Set-Cookie; ` +
          `dataset changes ${result[route].changes === undefined ? '?' : (result[route].changes! / PROBE_REQUESTS).toFixed(2)}` +
          ' / request (every client of the Redis)',
      ),
    ),
    '',
    columnNotes(`${PROBE_REQUESTS} unloaded requests`, 'plain Express shows that noise'),
  )
  if (repeated.length) {
    warnings.push(`Run again because another client paused Redis during the warm-up or the run: ${repeated.join('; ')}`)
  }
  if (warnings.length) lines.push('', '**Warnings:**', '', ...warnings.map((warning) => `- ${warning}`))
  lines.push('')
  return `${lines.join('\n')}\n`
}

await runBenchmark(RUN_PREFIX, main)
