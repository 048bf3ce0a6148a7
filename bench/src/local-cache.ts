/**
 * The local cache's coherence benchmark (`localCache`): how long after a write resolved any
 * instance still serves the old value, and what tracking costs Redis.
 *
 *   pnpm bench:local-cache:coherence    (from the repository root; the package must be built first)
 *
 * Coherence: one writer process and BENCH_READERS reader processes (src/local-cache-worker.ts),
 * each with its own client and `cached(client, key, { localCache: { fenceMs }, tags }, loader)`
 * over BENCH_KEYS keys (no HTTP: the read is timed where the value is chosen). The writer, every
 * 1/BENCH_WRITE_RATE s, INCRs a key's version (a plain key the loaders GET) and calls
 * `invalidateTags([the key's tag])`, logging when the call resolved. The readers read
 * continuously and log every read's start, version and whether it was a local hit. A stale read
 * is one that started after a write of its key resolved and returned an older version; a write's
 * staleness is how long after it resolved the last such read started, over every reader (0 when
 * none). Reported: staleness p50 / p99 / max over writes, the writes past fenceMs (never hidden),
 * and the reads, local hits and stale reads (local or from Redis).
 *
 * Fan-out: Redis CPU (INFO cpu used_cpu_sys + used_cpu_user, delta per second of wall time) while
 * a writer SETs keys under a tracked prefix at BENCH_FANOUT_RATE per second, with
 * BENCH_FANOUT_TRACKERS idle instances tracking the prefix (one cached() read each, then idle
 * past the fence's 2 s, so no PINGs) against the same writes with none; rounds alternate.
 *
 * BENCH_REDIS=single (default) starts a private redis-server on a free loopback port, so that
 * other people's traffic on the shared Redis neither delays the readers nor shows in its CPU;
 * BENCH_REDIS=cluster runs the coherence part on the shared Cluster (BENCH_CLUSTER_NODES,
 * default 127.0.0.1:7000-7002, started by scripts/cluster.sh), under a prefix of its own,
 * deleted afterwards (the fan-out part then still uses a private single Redis).
 *
 * Environment: BENCH_READERS (3), BENCH_KEYS (8), BENCH_WRITE_RATE (100 writes/s),
 * BENCH_DURATION (10 s per round), BENCH_ROUNDS (3), BENCH_FENCE_MS (20), BENCH_FANOUT_RATE (500),
 * BENCH_FANOUT_TRACKERS (3), BENCH_FANOUT_SECONDS (10), BENCH_FANOUT_ROUNDS (4).
 * Prints Markdown on stdout, progress on stderr.
 */
import { type ChildProcess, fork } from 'node:child_process'
import { setTimeout as sleep } from 'node:timers/promises'
import { createClient, createCluster } from 'redis'
import { log, median, positive, thousands } from './harness.js'
import type { ReaderReport, WorkerCommand, WorkerMessage, WriteLog } from './local-cache-protocol.js'
import { privateRedis } from './private-redis.js'
import { deleteUnder } from './redis-stats.js'

const WORKER = new URL('./local-cache-worker.ts', import.meta.url)
const READERS = Math.round(positive('BENCH_READERS', 3))
const KEYS = Math.round(positive('BENCH_KEYS', 8))
const WRITE_RATE = positive('BENCH_WRITE_RATE', 100)
const DURATION = positive('BENCH_DURATION', 10)
const ROUNDS = Math.round(positive('BENCH_ROUNDS', 3))
const FENCE_MS = positive('BENCH_FENCE_MS', 20)
const FANOUT_RATE = positive('BENCH_FANOUT_RATE', 500)
const FANOUT_TRACKERS = Math.round(positive('BENCH_FANOUT_TRACKERS', 3))
const FANOUT_SECONDS = positive('BENCH_FANOUT_SECONDS', 10)
const FANOUT_ROUNDS = Math.round(positive('BENCH_FANOUT_ROUNDS', 4))
const MODE = process.env.BENCH_REDIS === 'cluster' ? 'cluster' : 'single'
const CLUSTER_NODES = process.env.BENCH_CLUSTER_NODES || '127.0.0.1:7000,127.0.0.1:7001,127.0.0.1:7002'
const RUN_PREFIX = `bench-local:${process.pid}:${Date.now().toString(36)}:`

type Target = { url: string } | { clusterNodes: string }

const workers = new Set<ChildProcess>()
process.on('exit', () => {
  for (const child of workers) child.kill('SIGKILL')
})

/** A worker process, and a way to wait for its next message of a type. */
interface Worker {
  child: ChildProcess
  send(command: WorkerCommand): void
  next<T extends WorkerMessage['type']>(type: T): Promise<Extract<WorkerMessage, { type: T }>>
  stop(): Promise<void>
}

function startWorker(role: 'reader' | 'tracker' | 'writer', target: Target, prefix: string): Promise<Worker> {
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    BENCH_ROLE: role,
    BENCH_PREFIX: `${prefix}cache:`,
    BENCH_SOURCE: `${prefix}version:`,
    BENCH_KEYS: String(KEYS),
    BENCH_FENCE_MS: String(FENCE_MS),
  }
  if ('url' in target) env.BENCH_REDIS_URL = target.url
  else env.BENCH_CLUSTER_NODES = target.clusterNodes
  const child = fork(WORKER, [], { env, execArgv: process.execArgv, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
  workers.add(child)
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))
  void exited.then(() => workers.delete(child))
  const worker: Worker = {
    child,
    send: (command) => child.send(command),
    next: (type) =>
      new Promise((resolve, reject) => {
        const onMessage = (message: WorkerMessage) => {
          if (message?.type !== type) return
          child.off('message', onMessage)
          child.off('exit', onExit)
          resolve(message as never)
        }
        const onExit = (code: number | null) => reject(new Error(`${role} exited (code ${code}) before '${type}'`))
        child.on('message', onMessage)
        child.once('exit', onExit)
      }),
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return
      child.send({ type: 'stop' } satisfies WorkerCommand)
      const killer = setTimeout(() => child.kill('SIGKILL'), 5000)
      await exited
      clearTimeout(killer)
    },
  }
  return worker.next('ready').then(() => worker)
}

const percentile = (sorted: number[], p: number): number =>
  sorted.length ? sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]! : Number.NaN
const ms = (value: number): string => (Number.isNaN(value) ? '-' : value.toFixed(2))

/** One coherence round's figures. */
interface CoherenceRound {
  round: number
  writes: WriteLog[]
  /** Per write, the worst staleness over every reader (ms, 0 when no reader served the old value). */
  staleness: number[]
  readers: ReaderReport[]
  cpuPoints: number
}

/** INFO cpu used_cpu_sys + used_cpu_user (seconds), and the wall clock (ms). */
async function redisCpu(info: () => Promise<string>): Promise<{ cpu: number; at: number }> {
  const text = await info()
  const field = (name: string) => Number(new RegExp(`^${name}:([\\d.]+)`, 'm').exec(text)?.[1] ?? Number.NaN)
  return { cpu: field('used_cpu_sys') + field('used_cpu_user'), at: performance.now() }
}
const points = (before: { cpu: number; at: number }, after: { cpu: number; at: number }): number =>
  ((after.cpu - before.cpu) / ((after.at - before.at) / 1000)) * 100

async function coherenceRound(round: number, target: Target, infoCpu: () => Promise<string>): Promise<CoherenceRound> {
  const prefix = `${RUN_PREFIX}c${round}:`
  const writer = await startWorker('writer', target, prefix)
  const readers = await Promise.all(Array.from({ length: READERS }, () => startWorker('reader', target, prefix)))
  try {
    const lead = 0.5
    for (const reader of readers) reader.send({ type: 'read', seconds: DURATION + 2 * lead })
    await sleep(lead * 1000)
    const cpuBefore = await redisCpu(infoCpu)
    writer.send({ type: 'write', seconds: DURATION, rate: WRITE_RATE })
    const { writes } = await writer.next('written')
    const cpuAfter = await redisCpu(infoCpu)
    await Promise.all(readers.map((reader) => reader.next('read-done')))
    const reports = await Promise.all(
      readers.map((reader) => {
        const judged = reader.next('judged')
        reader.send({ type: 'judge', writes })
        return judged
      }),
    )
    const staleness = writes.map((_, i) => Math.max(0, ...reports.map((report) => report.staleness[i]!)))
    return { round, writes, staleness, readers: reports, cpuPoints: points(cpuBefore, cpuAfter) }
  } finally {
    await Promise.all([writer, ...readers].map((worker) => worker.stop()))
  }
}

/** One fan-out measurement: Redis CPU points during FANOUT_SECONDS of SETs, with `trackers` idle tracking instances. */
interface FanoutRun {
  trackers: number
  sent: number
  seconds: number
  cpuPoints: number
  /** INFO stats total_net_output_bytes delta per write. */
  outputBytesPerWrite: number
  /** Tracking connections in CLIENT LIST (flags with `t`) during the run. */
  trackingConnections: number
  /** PINGs Redis ran during the run (commandstats), the fence's if any. */
  pings: number
}

async function fanoutRun(url: string, trackers: number, round: number): Promise<FanoutRun> {
  const prefix = `${RUN_PREFIX}f${round}-${trackers}:`
  const stats = createClient({ url })
  stats.on('error', () => {})
  await stats.connect()
  const started = await Promise.all(Array.from({ length: trackers }, () => startWorker('tracker', { url }, prefix)))
  const writer = await startWorker('writer', { url }, prefix)
  try {
    // Past the fence's 2 s idle time: the trackers send nothing, Redis only pushes invalidations.
    await sleep(3000)
    const clients = String(await stats.sendCommand(['CLIENT', 'LIST']))
    const trackingConnections = clients.split('\n').filter((line) => /\bflags=\S*t/.test(line)).length
    const info = async () => stats.info()
    const read = async () => {
      const text = await info()
      const field = (name: string) => Number(new RegExp(`^${name}:([\\d.]+)`, 'm').exec(text)?.[1] ?? Number.NaN)
      const ping = Number(/^cmdstat_ping:calls=(\d+)/m.exec(text)?.[1] ?? 0)
      return {
        cpu: field('used_cpu_sys') + field('used_cpu_user'),
        at: performance.now(),
        output: field('total_net_output_bytes'),
        ping,
      }
    }
    const before = await read()
    writer.send({ type: 'set', seconds: FANOUT_SECONDS, rate: FANOUT_RATE })
    const { sent } = await writer.next('set-done')
    const after = await read()
    return {
      trackers,
      sent,
      seconds: (after.at - before.at) / 1000,
      cpuPoints: points(before, after),
      outputBytesPerWrite: (after.output - before.output) / sent,
      trackingConnections,
      pings: after.ping - before.ping,
    }
  } finally {
    await Promise.all([writer, ...started].map((worker) => worker.stop()))
    await deleteUnder(stats as never, prefix).catch(() => 0)
    await stats.close().catch(() => {})
  }
}

function describeCoherence(rounds: CoherenceRound[], where: string): string[] {
  const all = rounds.flatMap((round) => round.staleness)
  const sorted = [...all].sort((a, b) => a - b)
  const sum = (field: (report: ReaderReport) => number) =>
    rounds.reduce((n, round) => n + round.readers.reduce((m, report) => m + field(report), 0), 0)
  const pastFence = all.filter((value) => value > FENCE_MS)
  const staleWrites = all.filter((value) => value > 0).length
  const calls = rounds
    .flatMap((round) => round.writes.map((write) => write.resolvedAt - write.calledAt))
    .sort((a, b) => a - b)
  const lines = [
    `Coherence on ${where}: ${READERS} readers, 1 writer, ${KEYS} keys, ${WRITE_RATE} writes/s (INCR + invalidateTags), ` +
      `fenceMs ${FENCE_MS}, ${ROUNDS} rounds of ${DURATION} s.`,
    '',
    '| round | writes | reads | local hits | stale reads (local / from Redis) | writes with a stale read | staleness p50 ms | p99 ms | max ms | past fenceMs | Redis CPU % |',
    '|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|',
  ]
  const row = (label: string, writes: number, list: number[], reports: ReaderReport[], cpu: string) => {
    const s = [...list].sort((a, b) => a - b)
    const reads = reports.reduce((n, r) => n + r.reads, 0)
    const local = reports.reduce((n, r) => n + r.localHits, 0)
    const stale = reports.reduce((n, r) => n + r.staleReads, 0)
    const staleLocal = reports.reduce((n, r) => n + r.staleLocal, 0)
    return (
      `| ${label} | ${thousands(writes)} | ${thousands(reads)} | ${thousands(local)} (${((100 * local) / reads).toFixed(1)}%) | ` +
      `${thousands(stale)} (${thousands(staleLocal)} / ${thousands(stale - staleLocal)}) | ${list.filter((v) => v > 0).length} | ` +
      `${ms(percentile(s, 50))} | ${ms(percentile(s, 99))} | ${ms(s[s.length - 1] ?? Number.NaN)} | ${list.filter((v) => v > FENCE_MS).length} | ${cpu} |`
    )
  }
  for (const round of rounds) {
    lines.push(
      row(String(round.round), round.writes.length, round.staleness, round.readers, round.cpuPoints.toFixed(1)),
    )
  }
  lines.push(
    row(
      'all',
      all.length,
      all,
      rounds.flatMap((round) => round.readers),
      `${median(rounds.map((round) => round.cpuPoints)).toFixed(1)} (median)`,
    ),
    '',
    `Reads ${thousands(sum((r) => r.reads))}, local hits ${thousands(sum((r) => r.localHits))}, stale reads ` +
      `${thousands(sum((r) => r.staleReads))} (${thousands(sum((r) => r.staleLocal))} of them local hits). ` +
      `Writes with a stale read: ${staleWrites} of ${all.length}; staleness of those alone: p50 ${ms(
        percentile(
          sorted.filter((v) => v > 0),
          50,
        ),
      )} ms, ` +
      `max ${ms(sorted[sorted.length - 1] ?? Number.NaN)} ms. invalidateTags took p50 ${ms(percentile(calls, 50))} ms, ` +
      `p99 ${ms(percentile(calls, 99))} ms, max ${ms(calls[calls.length - 1] ?? Number.NaN)} ms.`,
  )
  if (pastFence.length) {
    lines.push(
      '',
      `**${pastFence.length} write(s) were served stale past fenceMs (${FENCE_MS} ms)**: ` +
        pastFence
          .sort((a, b) => b - a)
          .slice(0, 20)
          .map((value) => `${value.toFixed(2)} ms`)
          .join(', '),
    )
  }
  return lines
}

function describeFanout(runs: FanoutRun[]): string[] {
  const tracked = runs.filter((run) => run.trackers > 0)
  const none = runs.filter((run) => run.trackers === 0)
  const trackedPoints = median(tracked.map((run) => run.cpuPoints))
  const nonePoints = median(none.map((run) => run.cpuPoints))
  const lines = [
    `BCAST fan-out on a private redis-server: SETs of keys under the tracked prefix at ${FANOUT_RATE}/s for ` +
      `${FANOUT_SECONDS} s, with ${FANOUT_TRACKERS} idle tracking instances and with none, ${FANOUT_ROUNDS} rounds each, alternating.`,
    '',
    '| run | tracking instances | tracking connections (CLIENT LIST) | writes/s | Redis CPU % | output bytes / write | PINGs |',
    '|--:|--:|--:|--:|--:|--:|--:|',
    ...runs.map(
      (run, i) =>
        `| ${i + 1} | ${run.trackers} | ${run.trackingConnections} | ${thousands(run.sent / run.seconds)} | ${run.cpuPoints.toFixed(2)} | ` +
        `${run.outputBytesPerWrite.toFixed(0)} | ${run.pings} |`,
    ),
    '',
    `Median Redis CPU: ${trackedPoints.toFixed(2)} % with ${FANOUT_TRACKERS} tracking, ${nonePoints.toFixed(2)} % with none: ` +
      `**${(trackedPoints - nonePoints >= 0 ? '+' : '') + (trackedPoints - nonePoints).toFixed(2)} points** ` +
      `(tracked runs ${tracked.map((run) => run.cpuPoints.toFixed(2)).join(', ')}; untracked ${none
        .map((run) => run.cpuPoints.toFixed(2))
        .join(', ')}).`,
  ]
  return lines
}

async function main(): Promise<void> {
  const date = new Date().toISOString().slice(0, 16).replace('T', ' ')
  const privateServer = await privateRedis()
  const output: string[] = [`## Local cache coherence (${date} UTC)`, '', `Node ${process.version}.`, '']
  try {
    let target: Target
    let where: string
    let infoCpu: () => Promise<string>
    let cleanUp = async () => {}
    if (MODE === 'cluster') {
      const nodes = CLUSTER_NODES.split(',')
      target = { clusterNodes: CLUSTER_NODES }
      where = `the shared Cluster (${nodes.join(', ')}; Redis CPU summed over its nodes)`
      const cluster = createCluster({ rootNodes: nodes.map((node) => ({ url: `redis://${node}` })) })
      cluster.on('error', () => {})
      await cluster.connect()
      const direct = await Promise.all(
        nodes.map(async (node) => {
          const client = createClient({ url: `redis://${node}` })
          client.on('error', () => {})
          await client.connect()
          return client
        }),
      )
      infoCpu = async () => {
        const texts = await Promise.all(direct.map((client) => client.info('cpu')))
        const total = (name: string) =>
          texts.reduce((n, text) => n + Number(new RegExp(`^${name}:([\\d.]+)`, 'm').exec(text)?.[1] ?? 0), 0)
        return `used_cpu_sys:${total('used_cpu_sys')}\nused_cpu_user:${total('used_cpu_user')}\n`
      }
      cleanUp = async () => {
        for (const client of direct) await deleteUnder(client as never, RUN_PREFIX).catch(() => 0)
        for (const client of direct) await client.close().catch(() => {})
        await cluster.close().catch(() => {})
      }
    } else {
      target = { url: privateServer.url }
      where = `a private redis-server (${privateServer.url})`
      const stats = createClient({ url: privateServer.url })
      stats.on('error', () => {})
      await stats.connect()
      infoCpu = () => stats.info('cpu')
      cleanUp = async () => {
        await stats.close().catch(() => {})
      }
    }
    const probe = createClient({ url: privateServer.url })
    await probe.connect()
    const version = /redis_version:(\S+)/.exec(await probe.info('server'))?.[1] ?? '?'
    await probe.close()
    output[2] = `Node ${process.version}, Redis ${version}.`
    const rounds: CoherenceRound[] = []
    try {
      for (let round = 1; round <= ROUNDS; round++) {
        const result = await coherenceRound(round, target, infoCpu)
        rounds.push(result)
        const worst = Math.max(...result.staleness)
        log(
          `coherence round ${round}/${ROUNDS}: ${result.writes.length} writes, ` +
            `${thousands(result.readers.reduce((n, r) => n + r.reads, 0))} reads ` +
            `(${thousands(result.readers.reduce((n, r) => n + r.localHits, 0))} local), ` +
            `${result.readers.reduce((n, r) => n + r.staleReads, 0)} stale reads, worst staleness ${worst.toFixed(2)} ms`,
        )
      }
    } finally {
      await cleanUp()
    }
    output.push(...describeCoherence(rounds, where), '')

    const fanout: FanoutRun[] = []
    for (let round = 1; round <= FANOUT_ROUNDS; round++) {
      const order = round % 2 === 1 ? [FANOUT_TRACKERS, 0] : [0, FANOUT_TRACKERS]
      for (const trackers of order) {
        const run = await fanoutRun(privateServer.url, trackers, round)
        fanout.push(run)
        log(
          `fan-out round ${round}/${FANOUT_ROUNDS}, ${trackers} tracking: ${Math.round(run.sent / run.seconds)} writes/s, ` +
            `Redis CPU ${run.cpuPoints.toFixed(2)} %, ${run.outputBytesPerWrite.toFixed(0)} output bytes/write, ${run.pings} PINGs`,
        )
      }
    }
    output.push(...describeFanout(fanout), '')
    process.stdout.write(`${output.join('\n')}\n`)
  } finally {
    privateServer.stop()
  }
}

for (const signal of ['SIGINT', 'SIGTERM'] as const) process.on(signal, () => process.exit(130))
try {
  await main()
} catch (error) {
  process.exitCode = 1
  console.error(error)
} finally {
  for (const child of workers) child.kill('SIGKILL')
}
