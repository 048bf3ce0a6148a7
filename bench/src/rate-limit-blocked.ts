/**
 * The blocked-client group of the rate-limit benchmark (run by src/rate-limit.ts, same
 * harness): one client key hammering a limit of 1 per hour, so each server admits its first
 * request (during the warm-up) and must answer every later one 429. Compares what a
 * rejection costs: throughput against plain Express and the Redis commands per rejected
 * request (INFO commandstats deltas over the measured run, and MONITOR on the server's own
 * connection over unloaded rejections).
 *
 * A run in which a limiter lets a request through after the first, answers anything but 429,
 * or has connection errors is a failed run: logged at once on stderr, flagged in the report,
 * and the process exits with status 1.
 */
import { type Server, startServer } from './children.js'
import {
  CONNECTIONS,
  DURATION,
  type LoadRun,
  log,
  measureLoad,
  median,
  PIPELINING,
  PROFILE_DIR,
  ROUNDS,
  ratio,
  runRounds,
  thousands,
  WARMUP,
} from './harness.js'
import { type Client, deleteUnder, describeCounts, type MonitorCounts, monitorWhile, total } from './redis-stats.js'
import { BLOCKED_LIMIT, isBlocked, LABELS, type Scenario, usesRedis } from './scenarios.js'

/** Unloaded rejected requests watched with MONITOR per limiter, after the first rejected one. */
const PROBE_REJECTED = 200
/** Our limiter's scenario, compared with each peer. */
const OURS: Scenario = 'erk-blocked'
/** The peer the issue sets as the throughput target. */
const IN_MEMORY_PEER: Scenario = 'rate-limiter-flexible-in-memory-blocked'

interface BlockedRun extends LoadRun {
  scenario: Scenario
  round: number
  /** Why this run is a failed run (requests let through, other statuses, errors); empty if it is not. */
  problems: string[]
}

interface BlockedProbe {
  /** What the server's connection sent for the first rejected request (MONITOR). */
  first: MonitorCounts | undefined
  /** ... and for the {@link PROBE_REJECTED} rejected requests after it. */
  rest: MonitorCounts | undefined
  problems: string[]
}

/** Runs the blocked-client group over `scenarios` (plain Express first) and returns its Markdown report. */
export async function runBlockedGroup(
  client: Client,
  version: string,
  runPrefix: string,
  scenarios: readonly Scenario[],
): Promise<string> {
  const groupPrefix = `${runPrefix}blocked:`
  log(`blocked-client group: ${scenarios.length} scenarios, limit ${BLOCKED_LIMIT} per window, one client key`)

  const probes = new Map<Scenario, BlockedProbe>()
  for (const scenario of scenarios) probes.set(scenario, await probe(client, scenario, groupPrefix))

  const { runs, repeated } = await runRounds(scenarios, {
    name: (scenario) => scenario,
    label: (scenario) => LABELS[scenario],
    usesRedis,
    measure: (scenario, round) => measure(client, scenario, round, groupPrefix),
  })
  const { markdown, failed } = report(scenarios, runs, probes, version, repeated)
  if (failed) process.exitCode = 1
  return markdown
}

/** What is wrong with one request, if anything: `expected` is the status it must answer (200 with 'ok', or 429). */
async function request(server: Server, expected: 200 | 429): Promise<string | undefined> {
  try {
    const response = await fetch(server.url)
    const body = await response.text()
    if (response.status !== expected || (expected === 200 && body !== 'ok')) {
      return `answered ${response.status} ${JSON.stringify(body.slice(0, 100))}, expected ${expected}`
    }
  } catch (error) {
    return `failed: ${(error as Error).message}`
  }
  return undefined
}

/**
 * Unloaded check on a fresh server: the first request must be admitted, the next
 * 1 + {@link PROBE_REJECTED} rejected (plain Express: all admitted). MONITOR counts what the
 * server's own connection sent (other clients of Redis do not count), for the first
 * rejection and for the ones after it separately.
 */
async function probe(client: Client, scenario: Scenario, groupPrefix: string): Promise<BlockedProbe> {
  const result: BlockedProbe = { first: undefined, rest: undefined, problems: [] }
  const prefix = `${groupPrefix}probe:${scenario}:`
  const server = await startServer(scenario, { prefix, limit: BLOCKED_LIMIT })
  const later: 200 | 429 = isBlocked(scenario) ? 429 : 200
  const note = (index: number, problem: string | undefined) => {
    if (problem && result.problems.length < 5) result.problems.push(`probe request ${index}: ${problem}`)
  }
  const first = async () => note(2, await request(server, later))
  const rest = async () => {
    for (let i = 0; i < PROBE_REJECTED; i++) note(i + 3, await request(server, later))
  }
  try {
    note(1, await request(server, 200))
    if (server.redisAddr) {
      result.first = await monitorWhile(client, server.redisAddr, first)
      result.rest = await monitorWhile(client, server.redisAddr, rest)
    } else {
      await first()
      await rest()
    }
  } finally {
    await server.stop()
    await deleteUnder(client, prefix)
  }
  for (const problem of result.problems) log(`*** FAILED: ${LABELS[scenario]}: ${problem}`)
  log(`probe ${scenario}: ${result.problems.length ? 'FAILED' : 'ok'}`)
  return result
}

async function measure(client: Client, scenario: Scenario, round: number, groupPrefix: string): Promise<BlockedRun> {
  const prefix = `${groupPrefix}r${round}:${scenario}:`
  const server = await startServer(scenario, { prefix, limit: BLOCKED_LIMIT, profileDir: PROFILE_DIR })
  try {
    const run = await measureLoad(client, server, { url: server.url })
    const problems = check(scenario, run)
    for (const problem of problems) log(`*** FAILED RUN: ${LABELS[scenario]}, round ${round}: ${problem}`)
    return { ...run, scenario, round, problems }
  } finally {
    await server.stop()
    await deleteUnder(client, prefix)
  }
}

/** What makes the run a failed one: a limiter must admit one request (in the warm-up) and reject all others with 429. */
function check(scenario: Scenario, run: LoadRun): string[] {
  const problems: string[] = []
  const warmup = run.warmup.statusCodes
  const measured = run.statusCodes
  if (run.warmup.errors || run.errors) {
    problems.push(`connection errors: ${run.warmup.errors} in the warm-up, ${run.errors} measured`)
  }
  if (!isBlocked(scenario)) {
    const others = [...warmup, ...measured].filter(([status]) => status !== 200)
    if (others.length) problems.push(`answered other than 200: ${statuses(new Map(others))}`)
    return problems
  }
  const admittedFirst = warmup.get(200) ?? 0
  if (admittedFirst !== 1) {
    problems.push(`warm-up admitted ${admittedFirst} requests (expected exactly 1, the first): ${statuses(warmup)}`)
  }
  if ((measured.get(200) ?? 0) > 0 || run.completed === 0 || (measured.get(429) ?? 0) !== run.completed) {
    problems.push(`measured run answered ${statuses(measured)} (expected 429 only)`)
  }
  const odd = [...warmup].filter(([status]) => status !== 200 && status !== 429)
  if (odd.length) problems.push(`warm-up answered ${statuses(new Map(odd))}`)
  return problems
}

const statuses = (counts: Map<number, number>): string =>
  counts.size
    ? [...counts]
        .sort((a, b) => a[0] - b[0])
        .map(([status, count]) => `${status} ×${thousands(count)}`)
        .join(', ')
    : 'nothing'

const rejected = (run: LoadRun): number => run.statusCodes.get(429) ?? 0

function report(
  scenarios: readonly Scenario[],
  runs: BlockedRun[],
  probes: Map<Scenario, BlockedProbe>,
  version: string,
  repeated: string[],
): { markdown: string; failed: boolean } {
  const of = (scenario: Scenario) => runs.filter((run) => run.scenario === scenario)
  const baseRps = median(of('express').map((run) => run.requestsPerSecond))
  const baseP99 = median(of('express').map((run) => run.p99))
  const rps = (scenario: Scenario) => median(of(scenario).map((run) => run.requestsPerSecond))
  const p99 = (scenario: Scenario) => median(of(scenario).map((run) => run.p99))
  /** Median over the rounds of every command in the commandstats delta per rejected request. */
  const perRejected = (scenario: Scenario) =>
    median(of(scenario).map((run) => total(run.commands) / Math.max(rejected(run), 1)))
  /** Commands the server sent per rejected request after the first rejection (MONITOR, unloaded). */
  const sentPerRejected = (scenario: Scenario): number | undefined => {
    const rest = probes.get(scenario)?.rest
    return rest ? total(rest.sent) / PROBE_REJECTED : undefined
  }
  const sentCell = (scenario: Scenario): string => {
    const { first, rest } = probes.get(scenario) ?? {}
    if (!first || !rest) return '0 (no Redis)'
    const describe = (monitor: MonitorCounts, requests: number) => {
      const sent = `${(total(monitor.sent) / requests).toFixed(2)} (+${(total(monitor.inScripts) / requests).toFixed(2)} in Lua)`
      return monitor.sent.size ? `${sent}: ${describeCounts(monitor.sent, requests)}` : sent
    }
    return `${describe(rest, PROBE_REJECTED)}; first rejection: ${describe(first, 1)}`
  }
  const failedOf = (scenario: Scenario): string[] => [
    ...(probes.get(scenario)?.problems ?? []),
    ...of(scenario).flatMap((run) => run.problems.map((problem) => `round ${run.round}: ${problem}`)),
  ]
  const failures = scenarios.flatMap((scenario) =>
    failedOf(scenario).map((problem) => `${LABELS[scenario]}: ${problem}`),
  )

  const lines: string[] = []
  const date = new Date().toISOString().slice(0, 16).replace('T', ' ')
  lines.push(
    `## rateLimit blocked-client benchmark (${date} UTC)`,
    '',
    `Node ${process.version}, Redis ${version} on 127.0.0.1:6379; autocannon ${CONNECTIONS} connections, ` +
      `pipelining ${PIPELINING}, ${WARMUP} s warm-up + ${DURATION} s measured per run; ${ROUNDS} rounds ` +
      `in alternating order, medians. One client key, limit ${BLOCKED_LIMIT} per hour: each server admits its ` +
      'first request (in the warm-up) and must reject every later one with 429, so every measured request is a ' +
      'rejection. Each limiter with its defaults apart from limit, window, key and prefix.',
    '',
  )
  if (failures.length) {
    lines.push(
      '**FAILED RUNS: a limiter let requests through, answered other than 429, or had errors. Its figures below ' +
        'do not measure rejections.**',
      '',
      ...failures.map((failure) => `- **FAILED** ${failure}`),
      '',
    )
  }
  lines.push(
    '| Scenario | req/s | vs Express | p99 ms | vs Express | server CPU µs / request | responses (all rounds, warm-up + measured) | ' +
      'check | Redis commands / rejected request (commandstats) | sent / rejected request (MONITOR) | ' +
      'commands executed / rejected request |',
    '|---|--:|--:|--:|--:|--:|---|---|--:|--:|---|',
  )
  for (const scenario of scenarios) {
    const mine = of(scenario)
    const responses = new Map<number, number>()
    for (const run of mine) {
      for (const counts of [run.warmup.statusCodes, run.statusCodes]) {
        for (const [status, count] of counts) responses.set(status, (responses.get(status) ?? 0) + count)
      }
    }
    const cpu = median(mine.map((run) => run.serverCpuPerRequest))
    const blocked = isBlocked(scenario)
    const commands = blocked
      ? perRejected(scenario).toFixed(2)
      : `- (other clients: ${median(mine.map((run) => total(run.commands) / run.completed)).toFixed(2)} / request)`
    const executed = blocked ? describePerRejected(mine) : '-'
    lines.push(
      `| ${LABELS[scenario]} | ${thousands(rps(scenario))} | ${ratio(rps(scenario), baseRps)} | ${p99(scenario)} | ` +
        `${ratio(p99(scenario), baseP99)} | ${Math.round(cpu)} | ${statuses(responses)} | ` +
        `${failedOf(scenario).length ? '**FAILED**' : 'ok'} | ${commands} | ${sentCell(scenario)} | ${executed} |`,
    )
  }

  const peers = scenarios.filter((scenario) => isBlocked(scenario) && scenario !== OURS)
  if (scenarios.includes(OURS) && peers.length) {
    const perRejectedCell = (scenario: Scenario) => perRejected(scenario).toFixed(2)
    const sentValue = (scenario: Scenario) => sentPerRejected(scenario)?.toFixed(2) ?? '?'
    lines.push(
      '',
      `### ${LABELS[OURS]} against each peer (medians; above 1.00x req/s and below 1.00x p99 favour ours)`,
      '',
      `| ${LABELS[OURS]} vs | req/s, ours / peer | p99, ours / peer | Redis commands / rejected request ` +
        '(commandstats), ours vs peer | sent / rejected request (MONITOR), ours vs peer |',
      '|---|--:|--:|--:|--:|',
      ...peers.map(
        (peer) =>
          `| ${LABELS[peer]} | ${ratio(rps(OURS), rps(peer))} | ${ratio(p99(OURS), p99(peer))} | ` +
          `${perRejectedCell(OURS)} vs ${perRejectedCell(peer)} | ${sentValue(OURS)} vs ${sentValue(peer)} |`,
      ),
    )
    const rest = probes.get(OURS)?.rest
    const monitorZero = rest !== undefined && total(rest.sent) === 0
    const statsZero = perRejected(OURS) < 0.005
    const verdict =
      monitorZero && statsZero
        ? 'met'
        : monitorZero
          ? "met by MONITOR (the server sent nothing), not by commandstats (other clients' traffic?)"
          : '**not met**'
    lines.push(
      '',
      'Issue targets for rejections:',
      '',
      `- 0.00 Redis commands per rejected request after the first: ${verdict} (commandstats ` +
        `${perRejectedCell(OURS)} per rejection under load; MONITOR: ${rest ? total(rest.sent) : '?'} commands sent ` +
        `over ${PROBE_REJECTED} unloaded rejections after the first one).`,
    )
    if (scenarios.includes(IN_MEMORY_PEER)) {
      const versus = rps(OURS) / rps(IN_MEMORY_PEER)
      lines.push(
        `- Throughput at least that of ${LABELS[IN_MEMORY_PEER]}: ${versus >= 1 ? 'met' : '**not met**'} ` +
          `(${ratio(rps(OURS), rps(IN_MEMORY_PEER))} of it, median req/s).`,
      )
    }
  }

  lines.push(
    '',
    'Requests/s of each round (in the order run):',
    '',
    ...scenarios.map(
      (scenario) =>
        `- ${LABELS[scenario]}: ${of(scenario)
          .map((run) => `${thousands(run.requestsPerSecond)} (p99 ${run.p99})${run.problems.length ? ' FAILED' : ''}`)
          .join(', ')}`,
    ),
    '',
    '"responses" counts what autocannon received over every round, warm-up included (one 200 per round, the ' +
      'first request, is expected of a limiter); "check" fails a limiter that admits more than that first request ' +
      'or answers anything but 429 after it, or any run with connection errors. "Redis commands / rejected ' +
      'request" counts every call in the INFO commandstats deltas over the measured run (commands inside Lua ' +
      'included, INFO excluded) divided by the 429 responses autocannon received; it also counts any other ' +
      "client's traffic on this Redis (plain Express shows that noise, per request); medians over the rounds. " +
      `"sent / rejected request" counts, over ${PROBE_REJECTED} unloaded rejections on a fresh server after its ` +
      "first (admitted) request and its first rejected one, only the commands the server's own connection sent " +
      '(MONITOR), with in brackets the commands its Lua scripts ran; after the semicolon, the same for that first ' +
      'rejected request alone. rate-limiter-flexible with inMemoryBlockOnConsumed (= points = 1, inMemoryBlockDuration ' +
      'unset) remembers the key as blocked in the server process for the rest of its window from the first ' +
      'admitted request on.',
  )
  if (repeated.length) {
    lines.push(
      '',
      `Run again because another client paused Redis during the warm-up or the run: ${repeated.join('; ')}`,
    )
  }
  lines.push('')
  return { markdown: `${lines.join('\n')}\n`, failed: failures.length > 0 }
}

/** `evalsha 1.00, ...` per rejected request: per command, the median over the runs. */
function describePerRejected(runs: LoadRun[]): string {
  const medians = new Map<string, number>()
  for (const name of new Set(runs.flatMap((run) => [...run.commands.keys()]))) {
    medians.set(name, median(runs.map((run) => (run.commands.get(name) ?? 0) / Math.max(rejected(run), 1))))
  }
  return describeCounts(medians, 1)
}
