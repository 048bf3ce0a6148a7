/**
 * Load benchmark of express-redis-kit's cacheResponse against apicache-plus (Redis store),
 * on one route whose handler takes 20 ms, GET /items?page=1 answering about 2 kB of JSON:
 *   no cache        the 20 ms handler on every request (the baseline)
 *   erk-cache       cacheResponse({ client, ttl: '1h', prefix }), warm
 *   erk-cache-local the same with localCache: true (fresh hits from the process's memory, kept
 *                   coherent by CLIENT TRACKING on one more connection, which PINGs every 5 ms
 *                   while hits are asked for: counted apart as background commands per second)
 *   apicache-plus   apicache-plus 2.x with an ioredis client ('1 hour'), warm
 *   apicache-plus-br the same, with a client that accepts br (apicache-plus stores bodies
 *                   brotli-compressed and decompresses them on a hit for other clients)
 *   express         plain Express answering the same body without the delay (the ceiling)
 *
 *   pnpm bench:cache    (from the repository root; the package must be built first)
 *
 * Each run starts a fresh server in a child process (src/cache-server.ts); a cached
 * scenario is warmed first (sequential requests until one is answered from the cache),
 * then autocannon loads it. The server counts its handler's runs and its responses by
 * outcome (X-Cache; apicache-plus's `apicache-store` header), so the report can tell that
 * the handler never ran under load and every response under load was a hit. The runs are
 * interleaved over several rounds in alternating order and the medians are reported, as
 * ratios measured in the same run. Before the load, MONITOR counts, over unloaded hits, the
 * commands each cached server's own connection sends and the ones its Lua scripts run, and
 * which of them write. Prints Markdown on stdout, progress on stderr.
 *
 * Environment: BENCH_DURATION, BENCH_WARMUP, BENCH_ROUNDS, BENCH_CONNECTIONS, BENCH_PROFILE,
 * as for `pnpm bench` (src/harness.ts); BENCH_FENCE_MS, the local cache's fenceMs in
 * erk-cache-local (default: the package's default, 20).
 *
 * Nothing shared is flushed: every key lives under a prefix unique to this run, and the
 * keys are deleted (SCAN + UNLINK) after each run and again on exit.
 */
import { setTimeout as sleep } from 'node:timers/promises'
import {
  BODY_TEXT,
  CACHE_LABELS,
  CACHE_SCENARIOS,
  CACHED_SCENARIOS,
  type CacheScenario,
  clientNameOf,
  HANDLER_MS,
  isCached,
  outcomeOf,
  PATH,
  requestHeaders,
  type ServerStats,
  STATS_PATH,
} from './cache-scenarios.js'
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

const CACHE_SERVER = new URL('./cache-server.ts', import.meta.url)
const PROBE_REQUESTS = 200
const MINE: CacheScenario = 'erk-cache'
const LOCAL: CacheScenario = 'erk-cache-local'
const PEERS: readonly CacheScenario[] = ['apicache-plus', 'apicache-plus-br']
const BASE: CacheScenario = 'no-cache'
const CEILING: CacheScenario = 'express'

/** Every key this run creates starts with this. */
const RUN_PREFIX = `bench-cache:${process.pid}:${Date.now().toString(36)}:`

interface Run extends LoadRun {
  scenario: CacheScenario
  round: number
  /** Handler runs before the load (warming the cache). */
  warmRuns: number
  /** Handler runs during the load (autocannon's warm-up and the measured run). */
  loadRuns: number
  /** Responses the server finished during the load, by outcome. */
  outcomes: Record<string, number>
}

/** What MONITOR saw over {@link PROBE_REQUESTS} unloaded hits. */
interface Probe {
  monitor: MonitorCounts
  /** `rdb_changes_since_last_save` delta over those requests (every client of the Redis). */
  changes: number | undefined
  /** Handler runs it took to warm the cache, and during the probe's hits. */
  warmRuns: number
  probeRuns: number
  /** The server's other connections (a local cache's tracking connection), watched apart. */
  background: string[]
}

async function main(client: Client, version: string): Promise<string> {
  log(
    `Redis ${version} at 127.0.0.1:6379, Node ${process.version}; ${ROUNDS} rounds of ${CACHE_SCENARIOS.length} scenarios, ` +
      `${WARMUP} s warm-up + ${DURATION} s each, ${CONNECTIONS} connections, pipelining ${PIPELINING}; key prefix ${RUN_PREFIX}`,
  )
  const probes = new Map<CacheScenario, Probe>()
  for (const scenario of CACHED_SCENARIOS) probes.set(scenario, await probe(client, scenario))
  const seen = [...probes.values()].flatMap((p) => [...p.monitor.sent.keys(), ...p.monitor.inScripts.keys()])
  const writes = await writeCommands(client, seen)

  const { runs, repeated } = await runRounds(CACHE_SCENARIOS, {
    name: (scenario) => scenario,
    label: (scenario) => CACHE_LABELS[scenario],
    usesRedis: isCached,
    measure: (scenario, round) => measure(client, scenario, round),
  })
  return report(runs, probes, writes, version, repeated)
}

async function serverStats(server: Server): Promise<ServerStats> {
  const response = await fetch(new URL(STATS_PATH, server.url))
  if (response.status !== 200) throw new Error(`${server.scenario}: GET ${STATS_PATH} answered ${response.status}`)
  return (await response.json()) as ServerStats
}

/**
 * One GET of the route with the scenario's headers, checked: 200, the expected body (fetch
 * decompresses), and brotli-compressed only from apicache-plus's cache to a client that
 * accepts br. Returns its outcome ('HIT', 'MISS', 'origin'...).
 */
async function request(server: Server): Promise<string> {
  const scenario = server.scenario as CacheScenario
  const response = await fetch(new URL(PATH, server.url), { headers: requestHeaders(scenario) })
  const text = await response.text()
  const outcome = outcomeOf(scenario, (name) => response.headers.get(name) ?? undefined)
  const encoding = response.headers.get('content-encoding') ?? 'identity'
  const expected = scenario === 'apicache-plus-br' && outcome === 'HIT' ? 'br' : 'identity'
  if (response.status !== 200 || text !== BODY_TEXT || encoding !== expected) {
    throw new Error(
      `${scenario}: GET ${PATH} answered ${response.status} (${outcome}, content-encoding ${encoding}) ${text.slice(0, 200)}`,
    )
  }
  return outcome
}

/**
 * Sequential requests until one is answered from the cache (a cache stores a response
 * after sending it); one checked request for a scenario without a cache. Returns the
 * handler's runs so far.
 */
async function warm(server: Server): Promise<number> {
  const scenario = server.scenario as CacheScenario
  let outcome = await request(server)
  for (let attempt = 1; isCached(scenario) && outcome !== 'HIT'; attempt++) {
    if (attempt === 100) throw new Error(`${scenario}: no hit after 100 requests (last outcome ${outcome})`)
    await sleep(20)
    outcome = await request(server)
  }
  return (await serverStats(server)).handlerRuns
}

/** Unloaded checks of one cached scenario: the hits, and what each sends to Redis. */
async function probe(client: Client, scenario: CacheScenario): Promise<Probe> {
  const prefix = `${RUN_PREFIX}probe:${scenario}:`
  const server = await startServer(scenario, { prefix, module: CACHE_SERVER })
  try {
    const warmRuns = await warm(server)
    // Steady state only: the scripts are loaded by now (a first EVALSHA may have met NOSCRIPT).
    for (let i = 0; i < 10; i++) await request(server)
    const background = await otherConnections(client, prefix, server.redisAddr!)
    const changesBefore = await rdbChanges(client)
    const monitor = await monitorWhile(
      client,
      server.redisAddr!,
      async () => {
        for (let i = 0; i < PROBE_REQUESTS; i++) {
          const outcome = await request(server)
          if (outcome !== 'HIT') throw new Error(`${scenario}: probe request ${i + 1} was not a hit (${outcome})`)
        }
      },
      background,
    )
    const changesAfter = await rdbChanges(client)
    const probeRuns = (await serverStats(server)).handlerRuns - warmRuns
    log(`probe ${scenario}: ok (handler ran ${warmRuns} time(s) to warm, ${probeRuns} during the probe)`)
    return {
      monitor,
      changes: changesAfter >= changesBefore ? changesAfter - changesBefore : undefined,
      warmRuns,
      probeRuns,
      background,
    }
  } finally {
    await server.stop()
    await deleteUnder(client, prefix)
  }
}

/**
 * The addresses of the server's connections other than `own`, found in CLIENT LIST by the name
 * the server gave its client (a local cache's tracking connection is a duplicate, same name).
 */
async function otherConnections(client: Client, prefix: string, own: string): Promise<string[]> {
  const name = clientNameOf(prefix)
  const list = String(await client.sendCommand(['CLIENT', 'LIST']))
  return list
    .split('\n')
    .filter((line) => line.includes(` name=${name} `))
    .map((line) => /(?:^| )addr=(\S+)/.exec(line)?.[1] ?? '')
    .filter((addr) => addr && addr !== own)
}

async function measure(client: Client, scenario: CacheScenario, round: number): Promise<Run> {
  const prefix = `${RUN_PREFIX}r${round}:${scenario}:`
  const server = await startServer(scenario, { prefix, module: CACHE_SERVER, profileDir: PROFILE_DIR })
  try {
    await warm(server)
    const before = await serverStats(server)
    const run = await measureLoad(client, server, {
      url: new URL(PATH, server.url).href,
      headers: requestHeaders(scenario),
    })
    const after = await serverStats(server)
    const outcomes: Record<string, number> = {}
    for (const [outcome, count] of Object.entries(after.outcomes)) {
      const during = count - (before.outcomes[outcome] ?? 0)
      if (during > 0) outcomes[outcome] = during
    }
    return {
      ...run,
      scenario,
      round,
      warmRuns: before.handlerRuns,
      loadRuns: after.handlerRuns - before.handlerRuns,
      outcomes,
    }
  } finally {
    await server.stop()
    await deleteUnder(client, prefix)
  }
}

/** The background connections' commands over the probe, per second (the local cache's fence PINGs). */
function describeBackground(probe: Probe): string {
  if (probe.background.length === 0) return ''
  const seconds = probe.monitor.elapsedMs / 1000
  const counts = [...probe.monitor.background]
    .sort((a, b) => b[1] - a[1])
    .map(([name, calls]) => `${name} ${calls} (${(calls / seconds).toFixed(0)}/s)`)
    .join(', ')
  return (
    `; its ${probe.background.length} other connection(s) (tracking) sent over the probe's ${seconds.toFixed(2)} s: ` +
    `${counts || 'nothing'}, ${(total(probe.monitor.background) / PROBE_REQUESTS).toFixed(2)} / hit, off the request path`
  )
}

const describeOutcomes = (outcomes: Record<string, number>): string =>
  Object.entries(outcomes)
    .sort((a, b) => b[1] - a[1])
    .map(([outcome, count]) => `${outcome} ${thousands(count)}`)
    .join(', ') || 'none'

function report(
  runs: Run[],
  probes: Map<CacheScenario, Probe>,
  writes: Set<string>,
  version: string,
  repeated: string[],
): string {
  const of = (scenario: CacheScenario) => runs.filter((run) => run.scenario === scenario)
  const medianOf = (scenario: CacheScenario, value: (run: Run) => number) => median(of(scenario).map(value))
  const rpsOf = (scenario: CacheScenario) => medianOf(scenario, (run) => run.requestsPerSecond)
  const p99Of = (scenario: CacheScenario) => medianOf(scenario, (run) => run.p99)
  const cpuOf = (scenario: CacheScenario) => medianOf(scenario, (run) => run.serverCpuPerRequest)
  const date = new Date().toISOString().slice(0, 16).replace('T', ' ')
  const lines: string[] = [
    `## cacheResponse load benchmark (${date} UTC)`,
    '',
    `Node ${process.version}, Redis ${version} on 127.0.0.1:6379; autocannon ${CONNECTIONS} connections, ` +
      `pipelining ${PIPELINING}, ${WARMUP} s warm-up + ${DURATION} s measured per run; ${ROUNDS} rounds ` +
      `in alternating order, medians. GET ${PATH}, a ${HANDLER_MS} ms handler answering ` +
      `${thousands(Buffer.byteLength(BODY_TEXT))} bytes of JSON; the caches warmed before each run.`,
    '',
    '| Scenario | req/s | vs no cache | vs plain Express | p99 ms | vs no cache | vs plain Express | ' +
      'server CPU µs / request | ' +
      'Redis µs / request | round trips / hit (MONITOR) | writes / hit (MONITOR) | ' +
      'Redis commands / request (commandstats) | dataset changes / request | commands executed / request |',
    '|---|--:|--:|--:|--:|--:|--:|--:|--:|---|--:|--:|--:|---|',
  ]
  const warnings: string[] = []
  const baseRps = rpsOf(BASE)
  const ceilingRps = rpsOf(CEILING)
  const baseP99 = p99Of(BASE)
  const ceilingP99 = p99Of(CEILING)
  for (const scenario of CACHE_SCENARIOS) {
    const mine = of(scenario)
    const rps = rpsOf(scenario)
    const p99 = p99Of(scenario)
    const perRequest = medianOf(scenario, (run) => total(run.commands) / run.completed)
    const monitor = probes.get(scenario)?.monitor
    // A local hit sends nothing, but a hit the fence sends to Redis sends what erk-cache's does.
    const sent = scenario === LOCAL ? probes.get(MINE)?.monitor.sent : monitor?.sent
    const redisUsec = monitor && sent ? redisUsecPerRequest(mine, sent.keys()).toFixed(1) : '-'
    lines.push(
      `| ${CACHE_LABELS[scenario]} | ${thousands(rps)} | ${ratio(rps, baseRps)} | ${ratio(rps, ceilingRps)} | ` +
        `${p99} | ${ratio(p99, baseP99)} | ${ratio(p99, ceilingP99)} | ${Math.round(cpuOf(scenario))} | ${redisUsec} | ` +
        `${monitor ? describeSent(monitor, PROBE_REQUESTS) : '0 (no Redis)'} | ` +
        `${monitor ? describeWrites(monitor, writes, PROBE_REQUESTS) : '0 (no Redis)'} | ${perRequest.toFixed(2)} | ` +
        `${changesPerRequest(mine)} | ${describeCounts(commandMedians(mine), 1)} |`,
    )
    const failed = failures(CACHE_LABELS[scenario], mine)
    if (failed) warnings.push(failed)
    if (isCached(scenario)) {
      const loadRuns = mine.reduce((sum, run) => sum + run.loadRuns, 0)
      const notHits = mine.reduce(
        (sum, run) => sum + Object.entries(run.outcomes).reduce((n, [o, c]) => n + (o === 'HIT' ? 0 : c), 0),
        0,
      )
      if (loadRuns || notHits) {
        warnings.push(
          `${CACHE_LABELS[scenario]}: the handler ran ${loadRuns} times under load and ${notHits} responses ` +
            'under load were not hits',
        )
      }
    }
  }

  const compare = (mine: CacheScenario, against: readonly CacheScenario[]) => {
    lines.push(
      '',
      `### ${CACHE_LABELS[mine]} / others`,
      '',
      '| against | req/s ratio (medians) | p99 ratio (medians) | server CPU ratio (medians) | req/s ratio in each round |',
      '|---|--:|--:|--:|---|',
    )
    for (const peer of against) {
      const perRound = of(mine).map((run) => {
        const other = of(peer).find((candidate) => candidate.round === run.round)
        return other ? ratio(run.requestsPerSecond, other.requestsPerSecond) : '?'
      })
      lines.push(
        `| ${CACHE_LABELS[peer]} | ${ratio(rpsOf(mine), rpsOf(peer))} | ${ratio(p99Of(mine), p99Of(peer))} | ` +
          `${ratio(cpuOf(mine), cpuOf(peer))} | ${perRound.join(', ')} |`,
      )
    }
  }
  compare(LOCAL, [MINE, ...PEERS, CEILING])
  compare(MINE, PEERS)

  lines.push(
    '',
    'Requests/s of each round (in the order run):',
    '',
    ...CACHE_SCENARIOS.map(
      (scenario) =>
        `- ${CACHE_LABELS[scenario]}: ${of(scenario)
          .map((run) => `${thousands(run.requestsPerSecond)} (p99 ${run.p99})`)
          .join(', ')}`,
    ),
    '',
    "Hits: the server counts its handler's runs and its responses by outcome (X-Cache for express-redis-kit, " +
      'the `apicache-store` header of a replay for apicache-plus); "under load" covers autocannon\'s warm-up and ' +
      'the measured run:',
    '',
    ...CACHE_SCENARIOS.map((scenario) => {
      const mine = of(scenario)
      const outcomes: Record<string, number> = {}
      for (const run of mine) {
        for (const [outcome, count] of Object.entries(run.outcomes))
          outcomes[outcome] = (outcomes[outcome] ?? 0) + count
      }
      const sum = (field: (run: Run) => number) => thousands(mine.reduce((n, run) => n + field(run), 0))
      return (
        `- ${CACHE_LABELS[scenario]}: handler runs before the load ${mine.map((run) => run.warmRuns).join(', ')} ` +
        `(per run), under load ${sum((run) => run.loadRuns)}; responses under load: ${describeOutcomes(outcomes)}; ` +
        `measured: ${sum((run) => run.completed)} completed, ${sum((run) => run.non2xx)} non-2xx, ` +
        `${sum((run) => run.errors)} errors`
      )
    }),
    '',
    `Unloaded probe (${PROBE_REQUESTS} sequential hits after 10, each checked: 200, the same body, a hit, ` +
      'brotli-compressed only from apicache-plus to the client that accepts br):',
    '',
    ...[...probes].map(
      ([scenario, result]) =>
        `- ${CACHE_LABELS[scenario]}: handler ran ${result.warmRuns} time(s) to warm, ${result.probeRuns} during ` +
        `the probe; dataset changes ${
          result.changes === undefined ? '?' : (result.changes / PROBE_REQUESTS).toFixed(2)
        } / hit (every client of the Redis)${describeBackground(result)}`,
    ),
    '',
    columnNotes(`${PROBE_REQUESTS} unloaded hits`, 'the scenarios without Redis show that noise'),
  )
  if (repeated.length) {
    warnings.push(`Run again because another client paused Redis during the warm-up or the run: ${repeated.join('; ')}`)
  }
  if (warnings.length) lines.push('', '**Warnings:**', '', ...warnings.map((warning) => `- ${warning}`))
  lines.push('')
  return `${lines.join('\n')}\n`
}

await runBenchmark(RUN_PREFIX, main)
