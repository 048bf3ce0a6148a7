/**
 * The regression gate: the package's hot paths (src/gate-paths.ts) on the last release
 * (src/gate-release.ts finds and builds it) and on this tree, side by side in one process, and
 * a failure when this tree is slower. Run it before every release:
 *
 *   pnpm bench:gate                  (3 to 4 minutes here; exit code 0 pass, 1 slower, 2 could not measure)
 *   BENCH_ROUNDS=10 pnpm bench:gate  (a quicker look, 2 to 3 minutes here)
 *
 * What is measured, per path and build:
 *   - CPU µs per call in this process, the main thread's (Linux schedstat) and every thread's
 *     (process.cpuUsage): HTTP paths are requests built in memory (src/callgrind.ts's
 *     sendInMemory), so no HTTP parsing or socket I/O dilutes the middleware; 20 calls in flight.
 *     BENCH_ROUNDS rounds; in each, every path runs one batch on each build, back to back, the
 *     order swapped every round (A B, B A, ...), and the ratio this tree / release is taken per
 *     round, so what the machine's load does to one batch it mostly does to its neighbour. A
 *     batch is about BENCH_BATCH_MS of CPU (its size set per path by an uncounted round). A
 *     batch in which a call failed (a Redis timeout under load) is measured again, at most twice.
 *   - Redis commands per call (commands run by scripts included) from `INFO commandstats`
 *     deltas around each batch, read on the batch's own connection (so after everything the batch
 *     sent), on a redis-server of the gate's own (src/private-redis.ts): nobody else's traffic.
 *     A MONITOR probe of 100 calls splits them into commands sent (round trips) and run in Lua.
 *   - Redis µs per call: the commandstats `usec` of the commands sent (a script's includes what
 *     it runs), per batch, compared per round like CPU.
 *   - Redis instructions per call: the same paths against a second private redis-server under
 *     callgrind (src/redis-callgrind.ts), which counts only command processing: a figure the
 *     machine's load does not move. BENCH_GATE_CALLGRIND_REPEAT batches of
 *     BENCH_GATE_CALLGRIND_REQUESTS calls per build, alternating.
 *
 * The rule (a path fails when any of these holds):
 *   - CPU of the main thread: the median of the per-round ratios is above 1.05 AND their lower
 *     quartile is above 1.00 (more than 5% slower, and slower in three rounds out of four or
 *     more). Every thread's CPU is reported, not judged: V8's compiler and collector threads
 *     land in whichever batch runs, which doubled the spread of the same code's ratios here.
 *   - Redis commands per call: more than the release's (+0.005, for rounding); deterministic.
 *   - Redis instructions per call: the same rule as CPU over the repeats' ratios. Without
 *     callgrind (not installed, or BENCH_GATE_CALLGRIND=0) Redis µs takes its place with that
 *     rule; with it, Redis µs is reported, not judged.
 *
 * Environment: BENCH_ROUNDS (default 30), BENCH_BATCH_MS (default 80), BENCH_GATE_BASE (a git
 * revision to compare with instead of the release), BENCH_GATE_PATHS (comma-separated subset of
 * src/gate-paths.ts's PATHS), BENCH_GATE_CALLGRIND ('0': skip), BENCH_GATE_CALLGRIND_REQUESTS
 * (default 500), BENCH_GATE_CALLGRIND_REPEAT (default 3). Single Redis only.
 */
import { cpus, loadavg } from 'node:os'
import { setImmediate as nextTurn, setTimeout as sleep } from 'node:timers/promises'
import { createClient } from 'redis'
import {
  type Client,
  type HotPath,
  hotPath,
  type Kit,
  PATH_LABELS,
  PATH_NOTES,
  PATHS,
  type PathName,
} from './gate-paths.js'
import { type Build, buildRelease, buildThisTree, findRelease, type Release, repositoryRoot } from './gate-release.js'
import { log, median, positive, quantile, thousands } from './harness.js'
import { type CpuPerCall, cpuPerOperation } from './in-process.js'
import { privateRedis } from './private-redis.js'
import { callgrindAvailable, countedRedis } from './redis-callgrind.js'
import { commandDelta, commandStats, monitorWhile, total } from './redis-stats.js'

const ROUNDS = Math.round(positive('BENCH_ROUNDS', 30))
const BATCH_MS = positive('BENCH_BATCH_MS', 80)
const WARMUP_CALLS = 1000
const CALLGRIND_REQUESTS = Math.round(positive('BENCH_GATE_CALLGRIND_REQUESTS', 500))
const CALLGRIND_REPEAT = Math.round(positive('BENCH_GATE_CALLGRIND_REPEAT', 3))
const PROBE_CALLS = 100
/** Slower than the release by more than this (median ratio) fails, if the lower quartile agrees. */
const THRESHOLD = 1.05
/** Redis commands per operation may exceed the release's by this much (rounding) before failing. */
const COMMANDS_TOLERANCE = 0.005
const paths: PathName[] = process.env.BENCH_GATE_PATHS
  ? process.env.BENCH_GATE_PATHS.split(',').map((name) => {
      if (!(PATHS as readonly string[]).includes(name))
        throw new Error(`BENCH_GATE_PATHS: unknown path ${name} (known: ${PATHS.join(', ')})`)
      return name as PathName
    })
  : [...PATHS]

/** One batch of one path on one build. */
interface Batch {
  cpu: CpuPerCall
  calls: number
  usec: Map<string, number>
}

/** One path on one build, against the gate's plain private Redis. */
interface Variant {
  hot: HotPath
  client: Client
  /** Calls per batch (the same for both builds of a path). */
  count: number
  /** Commands sent per call (MONITOR probe), and run in Lua per call; the names sent. */
  sent: number
  inLua: number
  sentNames: Set<string>
  batches: Batch[]
  /** Redis instructions per call, one per callgrind batch. */
  instructions: number[]
  /** Redis commands per call in the callgrind batches (a check that they took the same path). */
  callgrindCalls: number[]
}

/** Per-round ratios this tree / release, with the rule's verdict. */
interface Judged {
  ratios: number[]
  median: number
  q1: number
  q3: number
  min: number
  max: number
  slower: boolean
}

const ratioOf = (current: number, release: number): number =>
  release === 0 ? (current === 0 ? 1 : Number.POSITIVE_INFINITY) : current / release

function judge(release: number[], current: number[]): Judged {
  const ratios = current.map((value, i) => ratioOf(value, release[i]!))
  const judged = {
    ratios,
    median: median(ratios),
    q1: quantile(ratios, 0.25),
    q3: quantile(ratios, 0.75),
    min: Math.min(...ratios),
    max: Math.max(...ratios),
  }
  return { ...judged, slower: judged.median > THRESHOLD && judged.q1 > 1 }
}

async function connect(url: string): Promise<Client> {
  const client: Client = createClient({ url })
  client.on('error', (error: unknown) => log(`redis client: ${error}`))
  await client.connect()
  return client
}

/**
 * CPU per call over `count` calls of `hot`, 20 in flight. Every call is awaited even when one
 * fails (none may still run when the next batch starts); then the first failure is thrown.
 */
async function checkedCalls(hot: HotPath, count: number): Promise<CpuPerCall> {
  let failure: unknown
  const cpu = await cpuPerOperation(async () => {
    try {
      await hot.run()
    } catch (error) {
      failure ??= error
    }
  }, count)
  if (failure) throw failure
  return cpu
}

/** Measurements run again after a failed call (a Redis timeout on the loaded machine), for the report. */
const repeated: string[] = []

/** `measure`, run again (at most twice) when one of its calls failed. */
async function retried<T>(what: string, measure: () => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await measure()
    } catch (error) {
      if (attempt === 3) throw error
      log(`${what}: ${error instanceof Error ? error.message : error}; measuring it again`)
      repeated.push(what)
    }
  }
}

const calls = async (hot: HotPath, count: number): Promise<void> => {
  await checkedCalls(hot, count)
}

async function measureBatch(variant: Variant): Promise<Batch> {
  await nextTurn()
  // INFO on the batch's own connection: Redis runs it after every command the batch sent.
  const before = await commandStats(variant.client)
  const cpu = await checkedCalls(variant.hot, variant.count)
  await nextTurn()
  const after = await commandStats(variant.client)
  return {
    cpu,
    calls: total(commandDelta(before.calls, after.calls)),
    usec: commandDelta(before.usec, after.usec),
  }
}

const redisUsec = (variant: Variant, batch: Batch): number =>
  [...variant.sentNames].reduce((sum, name) => sum + (batch.usec.get(name) ?? 0), 0) / variant.count

const pct = (ratio: number): string => (Number.isFinite(ratio) ? `${ratio.toFixed(3)}x` : 'new')
const spread = (judged: Judged): string =>
  `${pct(judged.q1)} to ${pct(judged.q3)}; ${pct(judged.min)} to ${pct(judged.max)}`
const decimal = (value: number, digits = 1): string => value.toFixed(digits)

async function main(): Promise<number> {
  const root = await repositoryRoot(process.cwd())
  const release: Release = await findRelease(root)
  log(`release: ${release.label}, found by ${release.found}`)
  const useCallgrind = process.env.BENCH_GATE_CALLGRIND !== '0' && (await callgrindAvailable())
  /** What to undo on the way out (the release's worktree, servers, connections), last first, each with its time limit. */
  const disposals: { dispose: () => unknown; limitMs: number }[] = []
  let cleaning: Promise<void> | undefined
  const cleanUp = (): Promise<void> => {
    cleaning ??= (async () => {
      for (const { dispose, limitMs } of disposals.splice(0).reverse()) {
        // A step that hangs (a connection to a server already gone) cannot keep the worktree in place.
        await Promise.race([(async () => dispose())().catch(() => {}), sleep(limitMs, undefined, { ref: false })])
      }
    })()
    return cleaning
  }
  /** Registers `dispose`; runs it at once if the gate is already stopping (a signal came meanwhile). */
  const onExit = (dispose: () => unknown, limitMs = 5000): void => {
    if (cleaning) void (async () => dispose())().catch(() => {})
    else disposals.push({ dispose, limitMs })
  }
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.on(signal, () => {
      log(`${signal}: cleaning up`)
      void cleanUp().finally(() => process.exit(130))
    })
  }
  try {
    const builds: Build[] = [
      await buildRelease(root, release, (dispose) => onExit(dispose, 120_000)),
      await buildThisTree(root),
    ]
    const kits = (await Promise.all(builds.map((build) => import(build.entry)))) as Kit[]
    const loadBefore = loadavg()
    const started = Date.now()

    const redis = await privateRedis()
    onExit(() => redis.stop())
    const stats = await connect(redis.url)
    onExit(() => stats.destroy())
    const redisVersion = /redis_version:(\S+)/.exec(await stats.info('server'))?.[1] ?? '?'

    // The variants, warmed (JIT, scripts loaded) and probed with MONITOR.
    const variants = new Map<PathName, Variant[]>()
    for (const path of paths) {
      const pair: Variant[] = []
      for (const [side, kit] of kits.entries()) {
        const client = await connect(redis.url)
        onExit(() => client.destroy())
        const hot = await hotPath(path, kit, client, `gate:${side}:${path}:`)
        onExit(() => hot.close())
        await retried(`${PATH_LABELS[path]} warm-up`, () => calls(hot, WARMUP_CALLS))
        const { addr } = await client.clientInfo()
        const monitor = await retried(`${PATH_LABELS[path]} MONITOR probe`, () =>
          monitorWhile(stats, addr, () => calls(hot, PROBE_CALLS)),
        )
        pair.push({
          hot,
          client,
          count: 0,
          sent: total(monitor.sent) / PROBE_CALLS,
          inLua: total(monitor.inScripts) / PROBE_CALLS,
          sentNames: new Set(monitor.sent.keys()),
          batches: [],
          instructions: [],
          callgrindCalls: [],
        })
      }
      variants.set(path, pair)
    }
    // A round not counted, which sets each path's batch size: about BATCH_MS of CPU per batch.
    for (let pass = 0; pass < 2; pass++) {
      for (const path of paths) {
        const pair = variants.get(path)!
        const cpu: number[] = []
        for (const variant of pair) {
          cpu.push(
            (await retried(`${PATH_LABELS[path]} sizing`, () => checkedCalls(variant.hot, WARMUP_CALLS))).process,
          )
        }
        const count = Math.max(100, Math.round((BATCH_MS * 1000) / median(cpu)))
        for (const variant of pair) variant.count = count
        if (pass === 1) log(`${PATH_LABELS[path]}: ${count} calls per batch`)
      }
    }

    for (let round = 0; round < ROUNDS; round++) {
      for (const path of paths) {
        const pair = variants.get(path)!
        const order = round % 2 === 0 ? [0, 1] : [1, 0]
        for (const side of order) {
          const batch = await retried(`${PATH_LABELS[path]} round ${round + 1}`, () => measureBatch(pair[side]!))
          pair[side]!.batches.push(batch)
        }
      }
      const latest = paths.map((path) => {
        const [a, b] = variants.get(path)!
        const [before, after] = [a!.batches.at(-1)!.cpu, b!.batches.at(-1)!.cpu]
        return `${PATH_LABELS[path]} ${pct(after.mainThread / before.mainThread)} (${pct(after.process / before.process)})`
      })
      log(`round ${round + 1}/${ROUNDS} (load ${loadavg()[0]!.toFixed(1)}): ${latest.join(', ')}`)
    }

    if (useCallgrind) {
      log('Redis instructions: starting a redis-server under callgrind')
      const counted = await countedRedis()
      onExit(() => counted.stop())
      for (const path of paths) {
        const pair: { hot: HotPath; client: Client }[] = []
        for (const [side, kit] of kits.entries()) {
          const client = await connect(counted.url)
          onExit(() => client.destroy())
          const hot = await hotPath(path, kit, client, `gate-cg:${side}:${path}:`)
          onExit(() => hot.close())
          await retried(`${PATH_LABELS[path]} callgrind warm-up`, () => calls(hot, CALLGRIND_REQUESTS))
          pair.push({ hot, client })
        }
        for (let repeat = 0; repeat < CALLGRIND_REPEAT; repeat++) {
          for (const side of repeat % 2 === 0 ? [0, 1] : [1, 0]) {
            const { hot, client } = pair[side]!
            const { instructions, commands } = await retried(`${PATH_LABELS[path]} callgrind`, async () => {
              const before = await commandStats(client)
              const start = await counted.instructions()
              await calls(hot, CALLGRIND_REQUESTS)
              await client.ping() // after everything the calls sent
              const end = await counted.instructions()
              const after = await commandStats(client)
              const delta = commandDelta(before.calls, after.calls)
              delta.delete('ping')
              return { instructions: (end - start) / CALLGRIND_REQUESTS, commands: total(delta) / CALLGRIND_REQUESTS }
            })
            const variant = variants.get(path)![side]!
            variant.instructions.push(instructions)
            variant.callgrindCalls.push(commands)
          }
        }
        const [a, b] = variants.get(path)!
        log(
          `${PATH_LABELS[path]}: ${thousands(median(a!.instructions))} / ${thousands(median(b!.instructions))} Redis instructions per call`,
        )
      }
    }
    const loadAfter = loadavg()
    const minutes = (Date.now() - started) / 60_000

    // The report.
    const [releaseLabel, currentLabel] = builds.map((build) => build.label)
    const lines = [
      `## Regression gate: ${releaseLabel} against ${currentLabel}`,
      '',
      `${new Date().toISOString().slice(0, 16).replace('T', ' ')} UTC, \`pnpm bench:gate\`; the release found by ${release.found}. ` +
        `Node ${process.version}, ${cpus().length} CPUs, load average ${loadBefore[0]!.toFixed(1)} before and ` +
        `${loadAfter[0]!.toFixed(1)} after; redis-server ${redisVersion} of the gate's own, single Redis. ` +
        `${ROUNDS} rounds of one batch per path and build (about ${BATCH_MS} ms of CPU, 20 calls in flight), ${minutes.toFixed(1)} minutes in all` +
        (useCallgrind
          ? `; Redis instructions from ${CALLGRIND_REPEAT} batches of ${CALLGRIND_REQUESTS} calls per build under callgrind.`
          : '; callgrind not used (Redis µs judged instead of instructions).'),
      '',
      `| path | measure | ${releaseLabel} | ${currentLabel} | ratio (median) | spread: quartiles; lowest to highest | verdict |`,
      '|---|---|--:|--:|--:|---|---|',
    ]
    const failures: string[] = []
    /** Measurements that cannot be trusted (exit code 2). */
    const problems: string[] = []
    for (const path of paths) {
      const [base, current] = variants.get(path)!
      const cpuOf = (variant: Variant, which: keyof CpuPerCall) => variant.batches.map((batch) => batch.cpu[which])
      // The main thread's CPU is judged; where it cannot be read, the process's.
      const judgedCpu: keyof CpuPerCall = base!.batches.every((batch) => Number.isFinite(batch.cpu.mainThread))
        ? 'mainThread'
        : 'process'
      const cpu = judge(cpuOf(base!, judgedCpu), cpuOf(current!, judgedCpu))
      const processCpu = judge(cpuOf(base!, 'process'), cpuOf(current!, 'process'))
      const commandsOf = (variant: Variant) =>
        variant.batches.reduce((sum, batch) => sum + batch.calls, 0) / (variant.batches.length * variant.count)
      const commands = [commandsOf(base!), commandsOf(current!)] as const
      const moreCommands = commands[1] > commands[0] + COMMANDS_TOLERANCE
      const usec = judge(
        base!.batches.map((batch) => redisUsec(base!, batch)),
        current!.batches.map((batch) => redisUsec(current!, batch)),
      )
      const instructions = useCallgrind ? judge(base!.instructions, current!.instructions) : undefined
      const redisSide = instructions ?? usec
      const verdicts = [
        cpu.slower && `CPU ${pct(cpu.median)}`,
        moreCommands && `Redis commands ${decimal(commands[0], 2)} -> ${decimal(commands[1], 2)}`,
        redisSide.slower && `Redis ${instructions ? 'instructions' : 'µs'} ${pct(redisSide.median)}`,
      ].filter((text): text is string => Boolean(text))
      if (verdicts.length) failures.push(`${PATH_LABELS[path]}: ${verdicts.join(', ')}`)
      const label = PATH_LABELS[path]
      const verdict = (failed: boolean) => (failed ? '**FAIL**' : 'pass')
      const commandText = (variant: Variant, perCall: number) =>
        `${decimal(perCall, 2)} (${decimal(variant.sent, 2)} sent + ${decimal(variant.inLua, 2)} in Lua)`
      lines.push(
        `| ${label} | CPU µs / call, ${judgedCpu === 'mainThread' ? 'main thread' : 'process'} | ${decimal(median(cpuOf(base!, judgedCpu)))} | ${decimal(median(cpuOf(current!, judgedCpu)))} | ${pct(cpu.median)} | ${spread(cpu)} | ${verdict(cpu.slower)} |`,
        ...(judgedCpu === 'mainThread'
          ? [
              `| ${label} | CPU µs / call, every thread | ${decimal(median(cpuOf(base!, 'process')))} | ${decimal(median(cpuOf(current!, 'process')))} | ${pct(processCpu.median)} | ${spread(processCpu)} | reported |`,
            ]
          : []),
        `| ${label} | Redis commands / call | ${commandText(base!, commands[0])} | ${commandText(current!, commands[1])} | | | ${verdict(moreCommands)} |`,
      )
      if (instructions) {
        lines.push(
          `| ${label} | Redis instructions / call | ${thousands(median(base!.instructions))} | ${thousands(median(current!.instructions))} | ${pct(instructions.median)} | ${spread(instructions)} | ${verdict(instructions.slower)} |`,
        )
      }
      lines.push(
        `| ${label} | Redis µs / call | ${decimal(median(base!.batches.map((b) => redisUsec(base!, b))), 2)} | ${decimal(median(current!.batches.map((b) => redisUsec(current!, b))), 2)} | ${pct(usec.median)} | ${spread(usec)} | ${instructions ? 'reported' : verdict(usec.slower)} |`,
      )
      // The callgrind batches must have taken the path the measured batches took (e.g. no timeout
      // against the slower server that let a request through without Redis).
      for (const variant of [base!, current!]) {
        if (variant.callgrindCalls.some((perCall) => Math.abs(perCall - commandsOf(variant)) > 0.05)) {
          problems.push(
            `${label}: the callgrind batches ran ${variant.callgrindCalls.map((n) => decimal(n, 2)).join(', ')} Redis commands per call, ` +
              `the measured ones ${decimal(commandsOf(variant), 2)}: the instruction counts do not measure the same path`,
          )
        }
      }
    }
    lines.push(
      '',
      ...(repeated.length
        ? [`Measured again after a failed call (a Redis timeout under load): ${repeated.join(', ')}.`, '']
        : []),
      ...paths.map(
        (path) => `- ${PATH_LABELS[path]}: ${PATH_NOTES[path]}; ${variants.get(path)![0]!.count} calls per batch.`,
      ),
      '',
      ...(failures.length ? [`**FAIL**: ${failures.join('; ')}.`, ''] : []),
      ...(problems.length ? [`**NOT MEASURED**: ${problems.join('; ')}.`, ''] : []),
      ...(failures.length || problems.length
        ? []
        : [
            `**PASS**: no path is more than ${Math.round((THRESHOLD - 1) * 100)}% slower than the release, none sends more Redis commands.`,
            '',
          ]),
    )
    process.stdout.write(`${lines.join('\n')}\n`)
    return problems.length ? 2 : failures.length ? 1 : 0
  } finally {
    await cleanUp()
  }
}

main().then(
  (code) => {
    process.exitCode = code
  },
  (error: unknown) => {
    console.error(error)
    process.exitCode = 2
  },
)
