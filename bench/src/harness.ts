/**
 * What the load generators (src/rate-limit.ts, src/session.ts, src/cache.ts) share: their
 * settings from the environment, autocannon runs, the measurement of one run against a
 * server running in a child process (src/children.ts), the rounds in alternating order,
 * medians, number formatting and the report's per-run figures, and the clean-up on exit or
 * on a signal.
 *
 * Environment (every benchmark):
 *   BENCH_DURATION     seconds measured per run (default 10)
 *   BENCH_WARMUP       seconds of unmeasured load before each run (default 2)
 *   BENCH_ROUNDS       rounds over all scenarios (default 4)
 *   BENCH_CONNECTIONS  autocannon connections (default 50; pipelining 1)
 *   BENCH_PROFILE      a directory: the servers run with --cpu-prof and write their profiles there
 */
import { setTimeout as sleep } from 'node:timers/promises'
import autocannon from 'autocannon'
import { createClient } from 'redis'
import { killAll, type Server } from './children.js'
import { type Client, commandDelta, commandStats, deleteUnder, REDIS_URL, rdbChanges, total } from './redis-stats.js'

const env = process.env
export const positive = (name: string, fallback: number): number => {
  const value = env[name] === undefined || env[name] === '' ? fallback : Number(env[name])
  if (!(Number.isFinite(value) && value > 0)) throw new Error(`${name} must be a positive number; got ${env[name]}`)
  return value
}
export const DURATION = positive('BENCH_DURATION', 10)
export const WARMUP = positive('BENCH_WARMUP', 2)
export const ROUNDS = Math.round(positive('BENCH_ROUNDS', 4))
export const CONNECTIONS = Math.round(positive('BENCH_CONNECTIONS', 50))
export const PIPELINING = 1
export const PROFILE_DIR = env.BENCH_PROFILE || undefined

export const log = (message: string) => process.stderr.write(`${message}\n`)

/** What autocannon sends, on every connection. */
export interface LoadRequest {
  url: string
  method?: 'GET' | 'POST'
  headers?: Record<string, string>
}

/** autocannon's promise is also its instance, with `stop()`. */
let currentLoad: (Promise<autocannon.Result> & Pick<autocannon.Instance, 'stop'>) | undefined

export async function load(request: LoadRequest, seconds: number): Promise<autocannon.Result> {
  const instance = autocannon({
    url: request.url,
    method: request.method ?? 'GET',
    headers: request.headers,
    connections: CONNECTIONS,
    pipelining: PIPELINING,
    duration: seconds,
  })
  currentLoad = instance as typeof currentLoad
  try {
    return await instance
  } finally {
    currentLoad = undefined
  }
}

/** One measured run against one server. */
export interface LoadRun {
  requestsPerSecond: number
  p99: number
  completed: number
  non2xx: number
  errors: number
  /** Responses per HTTP status during the measured run. */
  statusCodes: Map<number, number>
  /** Responses per HTTP status, and connection errors, during the unmeasured warm-up. */
  warmup: { statusCodes: Map<number, number>; errors: number }
  /** Redis calls per command during the run (INFO commandstats delta; every client of the Redis). */
  commands: Map<string, number>
  /** Redis time per command (microseconds) during the run. */
  usec: Map<string, number>
  /** Redis's `rdb_changes_since_last_save` delta during the run (every client); undefined if it was reset. */
  changes: number | undefined
  /** The server process's CPU time (user + system) per completed request, microseconds. */
  serverCpuPerRequest: number
  /** Another client stalled Redis (CLIENT PAUSE, DEBUG SLEEP) during the warm-up or the run. */
  stalled: boolean
}

/** Commands that stall every client of the Redis, issued by someone else during the run. */
const STALLS = ['client|pause', 'debug', 'debug|sleep']

/**
 * A run against a fresh server: `WARMUP` s of unmeasured load, then `DURATION` s measured,
 * with the Redis counters and the server's CPU time read just before and after.
 */
export async function measureLoad(client: Client, server: Server, request: LoadRequest): Promise<LoadRun> {
  const start = await commandStats(client)
  const warmup = await load(request, WARMUP)
  await sleep(300) // let the warm-up's last requests finish
  const before = await commandStats(client)
  const changesBefore = await rdbChanges(client)
  const cpuBefore = await server.cpuTime()
  const result = await load(request, DURATION)
  const cpuAfter = await server.cpuTime()
  await sleep(300)
  const after = await commandStats(client)
  const changesAfter = await rdbChanges(client)
  const completed = result['2xx'] + result.non2xx
  return {
    requestsPerSecond: completed / result.duration,
    p99: result.latency.p99,
    completed,
    non2xx: result.non2xx,
    errors: result.errors,
    statusCodes: statusCounts(result),
    warmup: { statusCodes: statusCounts(warmup), errors: warmup.errors },
    commands: commandDelta(before.calls, after.calls),
    usec: commandDelta(before.usec, after.usec),
    changes: changesAfter >= changesBefore ? changesAfter - changesBefore : undefined,
    serverCpuPerRequest: (cpuAfter - cpuBefore) / completed,
    stalled: STALLS.some((name) => (after.calls.get(name) ?? 0) > (start.calls.get(name) ?? 0)),
  }
}

/** autocannon's responses per HTTP status. */
function statusCounts(result: autocannon.Result): Map<number, number> {
  const counts = new Map<number, number>()
  for (const [status, stats] of Object.entries(result.statusCodeStats ?? {})) {
    if (stats?.count) counts.set(Number(status), stats.count)
  }
  return counts
}

export interface RoundsOptions<S, R extends LoadRun> {
  /** Short name for the progress log. */
  name(scenario: S): string
  /** Label for the report. */
  label(scenario: S): string
  /** Whether a stall of Redis by another client spoils the scenario's run. */
  usesRedis(scenario: S): boolean
  measure(scenario: S, round: number): Promise<R>
}

/**
 * `ROUNDS` rounds over the scenarios, in alternating order (every second round backwards).
 * A run of a Redis scenario during which another client paused Redis (e.g. a failure test
 * of a parallel session) measured that, not the middleware: it is run again, at most twice.
 */
export async function runRounds<S, R extends LoadRun>(
  scenarios: readonly S[],
  options: RoundsOptions<S, R>,
): Promise<{ runs: R[]; repeated: string[] }> {
  const runs: R[] = []
  const repeated: string[] = []
  for (let round = 1; round <= ROUNDS; round++) {
    const order = round % 2 === 1 ? scenarios : [...scenarios].reverse()
    for (const scenario of order) {
      let run = await options.measure(scenario, round)
      for (let retry = 1; retry <= 2 && options.usesRedis(scenario) && run.stalled; retry++) {
        log(
          `round ${round}/${ROUNDS} ${options.name(scenario)}: Redis was paused by another client during the warm-up or the run; running it again`,
        )
        repeated.push(`${options.label(scenario)}, round ${round}`)
        run = await options.measure(scenario, round)
      }
      runs.push(run)
      log(
        `round ${round}/${ROUNDS} ${options.name(scenario).padEnd(22)} ${Math.round(run.requestsPerSecond)} req/s, p99 ${run.p99} ms, ` +
          `server CPU ${Math.round(run.serverCpuPerRequest)} µs/request, ` +
          `${(total(run.commands) / run.completed).toFixed(2)} Redis commands/request`,
      )
    }
  }
  return { runs, repeated }
}

export const median = (values: number[]): number => {
  const sorted = [...values].sort((a, b) => a - b)
  const middle = Math.floor(sorted.length / 2)
  return sorted.length % 2 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2
}
/** The `q` quantile of `values` (0 <= q <= 1), linearly interpolated between the two nearest ranks. */
export const quantile = (values: number[], q: number): number => {
  const sorted = [...values].sort((a, b) => a - b)
  const position = (sorted.length - 1) * q
  const below = sorted[Math.floor(position)]!
  const above = sorted[Math.ceil(position)]!
  return below + (above - below) * (position - Math.floor(position))
}
export const thousands = (n: number): string => Math.round(n).toLocaleString('en-US')
export const ratio = (value: number, base: number): string => `${(value / base).toFixed(2)}x`

/** Per command, the median over `runs` of its calls per completed request (robust to another client's burst during one run). */
export function commandMedians(runs: LoadRun[]): Map<string, number> {
  const medians = new Map<string, number>()
  for (const name of new Set(runs.flatMap((run) => [...run.commands.keys()]))) {
    medians.set(name, median(runs.map((run) => (run.commands.get(name) ?? 0) / run.completed)))
  }
  return medians
}

/** The median over `runs` of the time (µs) Redis spent per completed request in the commands `names` (a server's own). */
export function redisUsecPerRequest(runs: LoadRun[], names: Iterable<string>): number {
  const list = [...names]
  return median(runs.map((run) => list.reduce((sum, name) => sum + (run.usec.get(name) ?? 0), 0) / run.completed))
}

/** The median over `runs` of the dataset changes per completed request, '?' if a run saw the counter reset. */
export function changesPerRequest(runs: LoadRun[]): string {
  return runs.every((run) => run.changes !== undefined)
    ? median(runs.map((run) => run.changes! / run.completed)).toFixed(2)
    : '?'
}

/** `<label>: N non-2xx responses, M errors` when the runs had any. */
export function failures(label: string, runs: LoadRun[]): string | undefined {
  const non2xx = runs.reduce((sum, run) => sum + run.non2xx, 0)
  const errors = runs.reduce((sum, run) => sum + run.errors, 0)
  return non2xx || errors ? `${label}: ${non2xx} non-2xx responses, ${errors} errors` : undefined
}

/**
 * What the columns of a report with a MONITOR probe mean: `probed` names what MONITOR
 * watched (e.g. "200 unloaded requests"), `noise` which scenarios show other clients' traffic.
 */
export function columnNotes(probed: string, noise: string): string {
  return (
    '"server CPU" is the server process\'s user + system CPU time over the measured run divided by the ' +
    'requests completed; "Redis µs" is the time Redis spent in the commands the server sends (INFO commandstats ' +
    "usec; a script's time includes the commands it runs). " +
    `"round trips" counts, over ${probed}, the commands the server's own connection sent ` +
    '(MONITOR), with in brackets the commands its Lua scripts ran; "writes" counts those of them (sent or in Lua) ' +
    'that Redis flags as write commands (COMMAND INFO). "Redis commands / request" counts every call in INFO ' +
    'commandstats deltas over the measured run (commands inside Lua included, INFO excluded) over the requests ' +
    'autocannon completed, and "dataset changes" the delta of INFO persistence\'s rdb_changes_since_last_save: ' +
    `both also count any other client's traffic on this Redis (${noise}); medians over the rounds.`
  )
}

/**
 * Runs a load generator: connects the statistics client (the benchmark's own connection,
 * never a server's), runs `main`, prints its Markdown on stdout, and on exit, error or
 * signal kills the servers and deletes every key under `runPrefix` (SCAN + UNLINK).
 */
export async function runBenchmark(
  runPrefix: string,
  main: (stats: Client, redisVersion: string) => Promise<string>,
): Promise<void> {
  let stats: Client | undefined
  let stopping = false

  const cleanUp = async (): Promise<void> => {
    killAll()
    if (stats?.isReady) {
      const deleted = await deleteUnder(stats, runPrefix).catch(() => 0)
      if (deleted) log(`deleted ${deleted} leftover keys under ${runPrefix}`)
      await stats.close().catch(() => {})
    }
  }

  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.on(signal, () => {
      if (stopping) return
      stopping = true
      log(`${signal}: stopping`)
      currentLoad?.stop()
      void cleanUp().finally(() => process.exit(130))
    })
  }
  process.on('exit', killAll)

  try {
    stats = createClient({ url: REDIS_URL, socket: { connectTimeout: 2000, reconnectStrategy: false } })
    stats.on('error', () => {})
    try {
      await stats.connect()
    } catch (error) {
      throw new Error(`Redis does not answer at ${REDIS_URL}: ${(error as Error).message}`)
    }
    const version = /redis_version:(\S+)/.exec(await stats.info('server'))?.[1] ?? '?'
    process.stdout.write(await main(stats, version))
  } catch (error) {
    process.exitCode = 1
    console.error(error)
  } finally {
    if (!stopping) await cleanUp()
  }
}
