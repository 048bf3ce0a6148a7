/**
 * Throughput of express-redis-kit's createNotifier against raw node-redis, end to end:
 * messages per second from the first publish until the subscriber (a child process,
 * src/notifier-subscriber.ts) received all N, with up to 64 publishes in flight.
 *
 *   pnpm bench:notifier    (from the repository root; the package must be built first)
 *
 * Scenarios (src/notifier-scenarios.ts): raw PUBLISH/SUBSCRIBE; the notifier in 'pubsub'
 * mode, without and with `parse`; raw XADD + XREADGROUP + XACK, acknowledging per message
 * and per read; the notifier in 'durable' mode, batchSize 10 and 100; raw XADD + XREAD from
 * the last id (no group); the notifier in 'fanout' mode, batchSize 10 and 100. Each run is a fresh
 * subscriber process and a fresh channel/stream: W unmeasured warm-up messages, then N
 * measured. The scenarios run in rounds, in alternating order; medians are reported, with
 * each notifier scenario's ratio to its raw baseline in each round. Redis commands per
 * message come from INFO commandstats deltas over the measured messages.
 *
 * Redis: its own throwaway redis-server (`--port BENCH_REDIS_PORT`, default 6480, no
 * persistence), stopped at the end, so that the commandstats are this benchmark's alone;
 * or an existing one at BENCH_REDIS_URL (its keys under this run's prefix are deleted).
 *
 * Environment: BENCH_ROUNDS (default 5), BENCH_MESSAGES (N, 50000), BENCH_WARMUP_MESSAGES
 * (5000), BENCH_IN_FLIGHT (64), BENCH_MAXLEN (stream MAXLEN ~, 100000: above W + N, so
 * that nothing is trimmed before it is read), BENCH_SCENARIOS (a comma-separated subset),
 * BENCH_PIN=1 (Linux, taskset: the publisher on CPU 0, Redis and the subscriber on CPU 1; unpinned,
 * the scheduler decides per run whether the subscriber shares Redis's CPU, and a durable
 * subscriber's serial round trips run at one of two speeds). Prints Markdown on stdout,
 * progress on stderr.
 */
import { type ChildProcess, execFileSync, fork, spawn } from 'node:child_process'
import { setTimeout as sleep } from 'node:timers/promises'
import { createNotifier, type Notifier } from 'express-redis-kit'
import { createClient } from 'redis'
import { log, median, positive, ratio, thousands } from './harness.js'
import {
  BASELINE,
  CHANNEL,
  FIELD,
  LABELS,
  modeOf,
  payload,
  SCENARIOS,
  type Scenario,
  type SubscriberMessage,
} from './notifier-scenarios.js'
import { type Client, commandDelta, commandStats, deleteUnder, describeCounts, total } from './redis-stats.js'

const ROUNDS = Math.round(positive('BENCH_ROUNDS', 5))
const MESSAGES = Math.round(positive('BENCH_MESSAGES', 50_000))
const WARMUP = Math.round(positive('BENCH_WARMUP_MESSAGES', 5_000))
const IN_FLIGHT = Math.round(positive('BENCH_IN_FLIGHT', 64))
const MAXLEN = Math.round(positive('BENCH_MAXLEN', 100_000))
const PORT = Math.round(positive('BENCH_REDIS_PORT', 6480))
const PIN = process.env.BENCH_PIN === '1'
const REDIS_URL = process.env.BENCH_REDIS_URL || `redis://127.0.0.1:${PORT}`
const SELECTED = process.env.BENCH_SCENARIOS
  ? SCENARIOS.filter((scenario) => process.env.BENCH_SCENARIOS!.split(',').includes(scenario))
  : SCENARIOS
const RUN_PREFIX = `bench:notifier:${process.pid}-${Date.now()}:`

interface Run {
  scenario: Scenario
  perSecond: number
  publishesPerSecond: number
  publisherCpu: number
  subscriberCpu: number
  redisUsec: number
  commands: Map<string, number>
  received: number
  unique: number
  outOfOrder: number
  publishErrors: number
}

const children = new Set<ChildProcess>()
const cpu = () => {
  const { user, system } = process.cpuUsage()
  return user + system
}

/** Publishes ids `from` .. `to - 1` with up to IN_FLIGHT publishes in flight; returns the number that failed. */
async function publishRange(publish: (id: number) => Promise<unknown>, from: number, to: number): Promise<number> {
  let next = from
  let errors = 0
  const worker = async () => {
    while (next < to) await publish(next++).catch(() => errors++)
  }
  await Promise.all(Array.from({ length: IN_FLIGHT }, worker))
  return errors
}

function publisher(scenario: Scenario, client: Client, prefix: string): [(id: number) => Promise<unknown>, Notifier?] {
  const key = prefix + CHANNEL
  if (scenario === 'raw-pubsub') return [(id) => client.publish(key, JSON.stringify(payload(id)))]
  if (scenario.startsWith('raw-')) {
    const trim = { TRIM: { strategy: 'MAXLEN', strategyModifier: '~', threshold: MAXLEN } } as const
    return [(id) => client.xAdd(key, '*', { [FIELD]: JSON.stringify(payload(id)) }, trim)]
  }
  const notifier = createNotifier({
    client,
    prefix,
    mode: modeOf(scenario),
    maxLength: MAXLEN,
  })
  return [(id) => notifier.publish(CHANNEL, payload(id)), notifier]
}

async function measure(scenario: Scenario, client: Client, round: number): Promise<Run> {
  const prefix = `${RUN_PREFIX}${scenario}:${round}:`
  const env = {
    ...process.env,
    BENCH_SCENARIO: scenario,
    BENCH_REDIS_URL: REDIS_URL,
    BENCH_PREFIX: prefix,
    BENCH_MESSAGES: String(MESSAGES),
    BENCH_WARMUP_MESSAGES: String(WARMUP),
    BENCH_PIN_CPU: PIN ? '1' : '',
  }
  const child = fork(new URL('./notifier-subscriber.ts', import.meta.url), [], { env })
  children.add(child)
  const next = (type: SubscriberMessage['type']) =>
    new Promise<SubscriberMessage>((resolve, reject) => {
      const onMessage = (message: SubscriberMessage) => {
        if (message.type !== type) return
        child.off('message', onMessage)
        child.off('exit', onExit)
        resolve(message)
      }
      const onExit = (code: number | null) => reject(new Error(`${scenario}: the subscriber exited (${code})`))
      child.on('message', onMessage)
      child.once('exit', onExit)
    })
  const [publish, notifier] = publisher(scenario, client, prefix)
  try {
    await next('ready')
    const warm = next('warm')
    await publishRange(publish, 0, WARMUP)
    const warmCpu = ((await warm) as { cpu: number }).cpu
    const done = next('done')
    const before = await commandStats(client)
    const cpuBefore = cpu()
    const start = process.hrtime.bigint()
    const publishErrors = await publishRange(publish, WARMUP, WARMUP + MESSAGES)
    const published = process.hrtime.bigint()
    const result = (await done) as Extract<SubscriberMessage, { type: 'done' }>
    const publisherCpu = cpu() - cpuBefore
    const after = await commandStats(client)
    const seconds = (ns: bigint) => Number(ns - start) / 1e9
    return {
      scenario,
      perSecond: (result.unique - WARMUP) / seconds(BigInt(result.at)),
      publishesPerSecond: MESSAGES / seconds(published),
      publisherCpu: publisherCpu / MESSAGES,
      subscriberCpu: (result.cpu - warmCpu) / MESSAGES,
      redisUsec: total(commandDelta(before.usec, after.usec)) / MESSAGES,
      commands: commandDelta(before.calls, after.calls),
      received: result.received - WARMUP,
      unique: result.unique - WARMUP,
      outOfOrder: result.outOfOrder,
      publishErrors,
    }
  } finally {
    child.send('stop')
    await notifier?.close()
    await deleteUnder(client, prefix)
  }
}

/** Its own redis-server (unless BENCH_REDIS_URL is set), without persistence; resolves once it answers. */
async function startRedis(): Promise<ChildProcess | undefined> {
  if (process.env.BENCH_REDIS_URL) return undefined
  if (await answers()) throw new Error(`port ${PORT} is taken; set BENCH_REDIS_PORT to a free one`)
  const args = ['--port', String(PORT), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no']
  const server = PIN
    ? spawn('taskset', ['-c', '1', 'redis-server', ...args], { stdio: 'ignore' })
    : spawn('redis-server', args, { stdio: 'ignore' })
  children.add(server)
  for (let attempt = 0; attempt < 50 && server.exitCode === null; attempt++) {
    if (await answers()) return server
    await sleep(100)
  }
  throw new Error(`redis-server did not start on port ${PORT}`)
}

async function answers(): Promise<boolean> {
  const probe = createClient({ url: REDIS_URL, socket: { reconnectStrategy: false } })
  probe.on('error', () => {})
  try {
    await probe.connect()
    await probe.close()
    return true
  } catch {
    return false
  }
}

const sum = (runs: Run[], pick: (run: Run) => number) => runs.reduce((total, run) => total + pick(run), 0)

function report(runs: Run[], redisVersion: string): string {
  const of = (scenario: Scenario) => runs.filter((run) => run.scenario === scenario)
  const med = (scenario: Scenario, pick: (run: Run) => number) => median(of(scenario).map(pick))
  const redis = process.env.BENCH_REDIS_URL ? REDIS_URL : `its own redis-server on port ${PORT}`
  const lines = [
    `Node ${process.version}, Redis ${redisVersion} (${redis}), ${ROUNDS} rounds, N = ${thousands(MESSAGES)} ` +
      `messages per run (after ${thousands(WARMUP)} unmeasured), up to ${IN_FLIGHT} publishes in flight, ` +
      `stream MAXLEN ~ ${thousands(MAXLEN)}${PIN ? '; pinned: publisher on CPU 0, Redis and subscriber on CPU 1' : ''}; medians.`,
    '',
    '| Scenario | messages/s | vs raw baseline | publishes/s | publisher CPU µs / msg | subscriber CPU µs / msg | ' +
      'Redis µs / msg | Redis commands / msg | received of N (each run); out of order (all runs) |',
    '|---|--:|--:|--:|--:|--:|--:|---|---|',
  ]
  for (const scenario of SELECTED) {
    const list = of(scenario)
    const base = BASELINE[scenario]
    const perSecond = med(scenario, (run) => run.perSecond)
    const vsRaw =
      base && of(base).length
        ? ratio(
            perSecond,
            med(base, (run) => run.perSecond),
          )
        : '1.00x'
    const commands = new Map<string, number>()
    for (const name of new Set(list.flatMap((run) => [...run.commands.keys()]))) {
      commands.set(name, median(list.map((run) => run.commands.get(name) ?? 0)))
    }
    const received = [...new Set(list.map((run) => thousands(run.unique)))].join(', ')
    const repeated = sum(list, (run) => run.received - run.unique)
    const failed = sum(list, (run) => run.publishErrors)
    const notes = `${repeated ? `; ${repeated} repeated` : ''}${failed ? `; ${failed} publishes failed` : ''}`
    const cells = [
      LABELS[scenario],
      thousands(perSecond),
      vsRaw,
      thousands(med(scenario, (run) => run.publishesPerSecond)),
      med(scenario, (run) => run.publisherCpu).toFixed(1),
      med(scenario, (run) => run.subscriberCpu).toFixed(1),
      med(scenario, (run) => run.redisUsec).toFixed(1),
      `${(total(commands) / MESSAGES).toFixed(2)}: ${describeCounts(commands, MESSAGES)}`,
      `${received}; ${sum(list, (run) => run.outOfOrder)}${notes}`,
    ]
    lines.push(`| ${cells.join(' | ')} |`)
  }
  lines.push('', 'Each scenario / its raw baseline, messages/s, in each round:', '')
  for (const scenario of SELECTED) {
    const base = BASELINE[scenario]
    if (!base || !of(base).length) continue
    const rounds = of(scenario).map((run, index) => ratio(run.perSecond, of(base)[index]!.perSecond))
    lines.push(`- ${LABELS[scenario]} / ${LABELS[base]}: ${rounds.join(', ')}`)
  }
  lines.push('', 'Messages/s of each round (in the order run; even rounds ran the list backwards):', '')
  for (const scenario of SELECTED) {
    const values = of(scenario).map((run) => thousands(run.perSecond))
    lines.push(`- ${LABELS[scenario]}: ${values.join(', ')}`)
  }
  return `${lines.join('\n')}\n`
}

async function main(): Promise<void> {
  // Every thread; threads started later inherit it.
  if (PIN) execFileSync('taskset', ['-a', '-p', '-c', '0', String(process.pid)])
  const server = await startRedis()
  const client: Client = createClient({ url: REDIS_URL })
  client.on('error', (error) => log(`Redis: ${error.message}`))
  await client.connect()
  try {
    const version = /redis_version:(\S+)/.exec(await client.info('server'))?.[1] ?? '?'
    const runs: Run[] = []
    for (let round = 1; round <= ROUNDS; round++) {
      for (const scenario of round % 2 ? SELECTED : [...SELECTED].reverse()) {
        const run = await measure(scenario, client, round)
        runs.push(run)
        log(
          `round ${round}/${ROUNDS} ${scenario.padEnd(22)} ${thousands(run.perSecond)} msg/s, publishes ${thousands(run.publishesPerSecond)}/s, ` +
            `CPU µs/msg publisher ${run.publisherCpu.toFixed(1)} subscriber ${run.subscriberCpu.toFixed(1)}, ` +
            `received ${run.unique}/${MESSAGES}, out of order ${run.outOfOrder}, ${describeCounts(run.commands, MESSAGES)}` +
            (run.publishErrors ? `, ${run.publishErrors} publishes failed` : ''),
        )
      }
    }
    process.stdout.write(report(runs, version))
  } finally {
    await client.close()
    server?.kill()
  }
}

process.on('exit', () => {
  for (const child of children) child.kill()
})
for (const signal of ['SIGINT', 'SIGTERM'] as const) process.on(signal, () => process.exit(130))

await main().catch((error) => {
  process.exitCode = 1
  console.error(error)
})
