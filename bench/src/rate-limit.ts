/**
 * Load benchmark of express-redis-kit's rateLimit against plain Express and its peers.
 *
 *   pnpm bench            (from the repository root; the package must be built first)
 *
 * This process is the load generator (autocannon, programmatic); every server runs in its
 * own child process (src/server.ts) and talks to the Redis at 127.0.0.1:6379. Scenarios are
 * interleaved over several rounds (alternating order) and the medians are reported, as
 * ratios to plain Express measured in the same run. Prints Markdown on stdout, progress
 * on stderr.
 *
 * Two groups, each with its own rounds and its own plain Express: the allowed path (limits
 * never reached) and the blocked client (limit 1, every request after the first rejected;
 * src/rate-limit-blocked.ts).
 *
 * Environment: BENCH_DURATION, BENCH_WARMUP, BENCH_ROUNDS, BENCH_CONNECTIONS, BENCH_PROFILE
 * (see src/harness.ts, shared with the session benchmark), and
 *   BENCH_GROUP        'allowed', 'blocked' or 'all' (default): which groups to run
 *   BENCH_SCENARIOS    comma-separated subset of the scenarios of either group (plain Express is
 *                      always kept; a group left with plain Express only is skipped)
 *
 * Nothing shared is flushed: every key lives under a prefix unique to this run, and the
 * keys are deleted (SCAN + UNLINK) after each scenario and again on exit.
 */
import { type Server, startServer } from './children.js'
import {
  CONNECTIONS,
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
import { runBlockedGroup } from './rate-limit-blocked.js'
import {
  type Client,
  deleteUnder,
  describeCounts,
  type KeyMemory,
  keyMemory,
  type MonitorCounts,
  monitorWhile,
  total,
} from './redis-stats.js'
import {
  ALLOWED_SCENARIOS,
  BLOCKED_SCENARIOS,
  LABELS,
  redisKeyOf,
  SCENARIOS,
  type Scenario,
  usesRedis,
} from './scenarios.js'

const env = process.env
const PROBE_REQUESTS = 200
const MEMORY_LIMIT = 1000

const GROUPS = ['allowed', 'blocked', 'all'] as const
const group = (env.BENCH_GROUP || 'all') as (typeof GROUPS)[number]
if (!GROUPS.includes(group)) throw new Error(`BENCH_GROUP must be one of ${GROUPS.join(', ')}; got ${env.BENCH_GROUP}`)
const wanted = env.BENCH_SCENARIOS?.split(',').filter(Boolean)
const unknown = wanted?.filter((name) => !(SCENARIOS as readonly string[]).includes(name))
if (unknown?.length) throw new Error(`BENCH_SCENARIOS: unknown ${unknown.join(', ')}; known: ${SCENARIOS.join(', ')}`)

/** The group's scenarios that BENCH_GROUP and BENCH_SCENARIOS keep: none if only plain Express would be left. */
function pick(name: (typeof GROUPS)[number], scenarios: readonly Scenario[]): Scenario[] {
  if (group !== 'all' && group !== name) return []
  if (!wanted) return [...scenarios]
  const kept = scenarios.filter((scenario) => scenario === 'express' || wanted.includes(scenario))
  return kept.length > 1 ? kept : []
}
const selected = pick('allowed', ALLOWED_SCENARIOS)
const blockedSelected = pick('blocked', BLOCKED_SCENARIOS)
if (!selected.length && !blockedSelected.length) throw new Error('BENCH_GROUP and BENCH_SCENARIOS leave nothing to run')

/** Every key this run creates starts with this. */
const RUN_PREFIX = `bench:${process.pid}:${Date.now().toString(36)}:`

interface Run extends LoadRun {
  scenario: Scenario
  round: number
  memory: KeyMemory | undefined
}

interface Probe {
  monitor: MonitorCounts | undefined
  after10: KeyMemory | undefined
  after1000: KeyMemory | undefined
}

async function main(client: Client, version: string): Promise<string> {
  log(
    `Redis ${version} at 127.0.0.1:6379, Node ${process.version}; ${ROUNDS} rounds of ${selected.length} allowed-path ` +
      `and ${blockedSelected.length} blocked-client scenarios, ${WARMUP} s warm-up + ${DURATION} s each, ` +
      `${CONNECTIONS} connections, pipelining ${PIPELINING}; key prefix ${RUN_PREFIX}`,
  )
  const allowed = selected.length ? await allowedGroup(client, version) : ''
  const blocked = blockedSelected.length ? await runBlockedGroup(client, version, RUN_PREFIX, blockedSelected) : ''
  return allowed && blocked ? `${allowed}\n${blocked}` : allowed || blocked
}

/** The allowed-path group: limits never reached. */
async function allowedGroup(client: Client, version: string): Promise<string> {
  const probes = new Map<Scenario, Probe>()
  for (const scenario of selected) probes.set(scenario, await probe(client, scenario))

  const { runs, repeated } = await runRounds(selected, {
    name: (scenario) => scenario,
    label: (scenario) => LABELS[scenario],
    usesRedis,
    measure: (scenario, round) => measure(client, scenario, round),
  })
  return report(runs, probes, version, repeated)
}

/**
 * Unloaded checks on one server with limit 1,000 (a limit that makes every algorithm keep
 * its key: at 1e9/h a token bucket is full again, and its key gone, 1 ms after a request):
 * the responses, key memory after 10 requests, the round trips seen by MONITOR over the
 * next requests, and key memory after 1,000 requests.
 */
async function probe(client: Client, scenario: Scenario): Promise<Probe> {
  const result: Probe = { monitor: undefined, after10: undefined, after1000: undefined }
  const prefix = `${RUN_PREFIX}probe:${scenario}:`
  const server = await startServer(scenario, { prefix, limit: MEMORY_LIMIT })
  const key = redisKeyOf(scenario, prefix)
  try {
    await requests(server, 10)
    if (key) result.after10 = await keyMemory(client, key)
    // Steady state only: the scripts are loaded by now (a first EVALSHA may have met NOSCRIPT).
    if (server.redisAddr) {
      result.monitor = await monitorWhile(client, server.redisAddr, () => requests(server, PROBE_REQUESTS))
    }
    await requests(server, MEMORY_LIMIT - 10 - (server.redisAddr ? PROBE_REQUESTS : 0))
    if (key) result.after1000 = await keyMemory(client, key)
  } finally {
    await server.stop()
    await deleteUnder(client, prefix)
  }
  log(`probe ${scenario}: ok`)
  return result
}

/** `count` sequential GET / that must all answer 200 'ok'. */
async function requests(server: Server, count: number): Promise<void> {
  for (let i = 0; i < count; i++) {
    const response = await fetch(server.url)
    const body = await response.text()
    if (response.status !== 200 || body !== 'ok') {
      throw new Error(`${server.scenario}: request ${i + 1} answered ${response.status} ${body.slice(0, 200)}`)
    }
  }
}

async function measure(client: Client, scenario: Scenario, round: number): Promise<Run> {
  const prefix = `${RUN_PREFIX}r${round}:${scenario}:`
  const server = await startServer(scenario, {
    prefix,
    profileDir: PROFILE_DIR,
  })
  try {
    const run = await measureLoad(client, server, { url: server.url })
    const key = redisKeyOf(scenario, prefix)
    return { ...run, scenario, round, memory: key ? await keyMemory(client, key) : undefined }
  } finally {
    await server.stop()
    await deleteUnder(client, prefix)
  }
}

const bytes = (n: number): string =>
  n < 10_000 ? `${n} B` : n < 1024 * 1024 ? `${(n / 1024).toFixed(1)} KiB` : `${(n / 1024 / 1024).toFixed(1)} MiB`
const memoryCell = (memory: KeyMemory | undefined, withSize = false): string => {
  if (!memory) return 'no key (expired)'
  const entries = withSize && memory.type !== 'string' ? `, ${thousands(memory.size)} entries` : ''
  return `${bytes(memory.bytes)} (${memory.type}, ${memory.encoding}${entries})`
}

function report(runs: Run[], probes: Map<Scenario, Probe>, version: string, repeated: string[]): string {
  const of = (scenario: Scenario) => runs.filter((run) => run.scenario === scenario)
  const baseRps = median(of('express').map((run) => run.requestsPerSecond))
  const baseP99 = median(of('express').map((run) => run.p99))
  const lines: string[] = []
  const date = new Date().toISOString().slice(0, 16).replace('T', ' ')
  lines.push(
    `## rateLimit load benchmark (${date} UTC)`,
    '',
    `Node ${process.version}, Redis ${version} on 127.0.0.1:6379; autocannon ${CONNECTIONS} connections, ` +
      `pipelining ${PIPELINING}, ${WARMUP} s warm-up + ${DURATION} s measured per run; ${ROUNDS} rounds ` +
      'in alternating order, medians. Limits never reached; one client key.',
    '',
    '| Scenario | req/s | vs Express | p99 ms | vs Express | server CPU µs / request | Redis µs / request | ' +
      'Redis commands / request (commandstats) | sent / request (MONITOR) | commands executed / request |',
    '|---|--:|--:|--:|--:|--:|--:|--:|--:|---|',
  )
  const warnings: string[] = []
  for (const scenario of selected) {
    const mine = of(scenario)
    const rps = median(mine.map((run) => run.requestsPerSecond))
    const p99 = median(mine.map((run) => run.p99))
    const perRequest = median(mine.map((run) => total(run.commands) / run.completed))
    const cpu = median(mine.map((run) => run.serverCpuPerRequest))
    const monitor = probes.get(scenario)?.monitor
    // Redis time of the commands this server sends (a script's time includes what it runs).
    const redisUsec = monitor ? redisUsecPerRequest(mine, monitor.sent.keys()) : undefined
    const sent = monitor
      ? `${(total(monitor.sent) / PROBE_REQUESTS).toFixed(2)} (+${(total(monitor.inScripts) / PROBE_REQUESTS).toFixed(2)} in Lua)`
      : '0 (no Redis)'
    lines.push(
      `| ${LABELS[scenario]} | ${thousands(rps)} | ${ratio(rps, baseRps)} | ${p99} | ${ratio(p99, baseP99)} | ` +
        `${Math.round(cpu)} | ${redisUsec === undefined ? '-' : redisUsec.toFixed(1)} | ` +
        `${perRequest.toFixed(2)} | ${sent} | ${describeCounts(commandMedians(mine), 1)} |`,
    )
    const failed = failures(LABELS[scenario], mine)
    if (failed) warnings.push(failed)
  }
  lines.push(
    '',
    'Requests/s of each round (in the order run):',
    '',
    ...selected.map(
      (scenario) =>
        `- ${LABELS[scenario]}: ${of(scenario)
          .map((run) => `${thousands(run.requestsPerSecond)} (p99 ${run.p99})`)
          .join(', ')}`,
    ),
    '',
    '"server CPU" is the server process\'s user + system CPU time over the measured run divided by the ' +
      'requests completed; "Redis µs" is the time Redis spent in the commands the server sends (INFO commandstats ' +
      "usec; a script's time includes the commands it runs). " +
      '"Redis commands / request" counts every call in INFO commandstats deltas (commands inside Lua scripts ' +
      "included, INFO excluded) over the requests autocannon completed; it also counts any other client's " +
      `traffic on this Redis (plain Express shows that noise); medians over the rounds. "sent / request" counts, ` +
      `over ${PROBE_REQUESTS} unloaded requests, only the commands the server's own connection sent (MONITOR), ` +
      'i.e. its round trips, and in brackets the commands its Lua scripts ran.',
  )
  if (repeated.length) {
    warnings.push(`Run again because another client paused Redis during the warm-up or the run: ${repeated.join('; ')}`)
  }
  if (warnings.length) lines.push('', '**Warnings:**', '', ...warnings.map((warning) => `- ${warning}`))

  lines.push(
    '',
    '### Redis memory per client key (MEMORY USAGE ... SAMPLES 0)',
    '',
    `| Limiter | after 10 requests | after ${thousands(MEMORY_LIMIT)} requests (limit ${thousands(MEMORY_LIMIT)}) | after a load run (last round) |`,
    '|---|--:|--:|--:|',
  )
  for (const scenario of selected) {
    const probeResult = probes.get(scenario)
    if (!redisKeyOf(scenario, '')) continue
    const lastRun = of(scenario).at(-1)
    lines.push(
      `| ${LABELS[scenario]} | ${memoryCell(probeResult?.after10)} | ${memoryCell(probeResult?.after1000, true)} | ` +
        `${memoryCell(lastRun?.memory, true)} |`,
    )
  }
  lines.push('')
  return `${lines.join('\n')}\n`
}

await runBenchmark(RUN_PREFIX, main)
