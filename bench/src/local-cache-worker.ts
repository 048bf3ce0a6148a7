/**
 * One process of the local cache's coherence benchmark (src/local-cache.ts), by BENCH_ROLE:
 *
 *   reader   its own client with `cached(client, key, { localCache, tags: [tag] }, loader)`;
 *            the loader GETs the key's version from a plain key outside the cache's prefix.
 *            On 'run' it reads the keys round robin, one at a time and continuously (a
 *            setImmediate after each read, so that invalidations and the fence's PINGs are
 *            handled between reads, as a server handles I/O between requests), and keeps for
 *            every read its start time, the version it got and whether it was a local hit (the
 *            diagnostics event's `local: true`). Given the writer's log ('judge'), it reports
 *            its stale reads.
 *   tracker  the same client and cache, one read to start tracking, then idle (the fence's PINGs
 *            stop after 2 s without local hits): what an instance costs Redis in BCAST pushes.
 *   writer   a plain client. 'run': every 1/rate s, INCR a key's version then
 *            `invalidateTags([its tag])`, logging when the call was made and when it resolved.
 *            'set': plain SETs of keys under the tracked prefix at a fixed rate (the fan-out cost).
 *
 * Environment: BENCH_ROLE, BENCH_PREFIX (the cache's), BENCH_SOURCE (prefix of the version
 * keys), BENCH_KEYS (how many keys), BENCH_FENCE_MS, BENCH_REDIS_URL or BENCH_CLUSTER_NODES.
 * IPC: tells `{ type: 'ready' }`, answers each command with its result, exits on 'stop' or
 * when the parent goes away.
 */
import { subscribe } from 'node:diagnostics_channel'
import { setTimeout as sleep, setImmediate as yieldToLoop } from 'node:timers/promises'
import { CHANNELS, cached, invalidateTags } from 'express-redis-kit'
import { createClient, createCluster } from 'redis'
import type { ReaderReport, WorkerCommand, WriteLog } from './local-cache-protocol.js'

process.on('disconnect', () => process.exit(0))

const env = process.env
const role = env.BENCH_ROLE as 'reader' | 'tracker' | 'writer'
const prefix = env.BENCH_PREFIX!
const source = env.BENCH_SOURCE!
const keyCount = Number(env.BENCH_KEYS)
const fenceMs = Number(env.BENCH_FENCE_MS)

/** Milliseconds since the epoch with sub-millisecond resolution, comparable between processes of one host. */
const now = (): number => performance.timeOrigin + performance.now()

async function connect() {
  if (env.BENCH_CLUSTER_NODES) {
    const cluster = createCluster({
      rootNodes: env.BENCH_CLUSTER_NODES.split(',').map((node) => ({ url: `redis://${node}` })),
    })
    cluster.on('error', (error: unknown) => console.error(`[${role}] redis:`, error))
    await cluster.connect()
    return cluster
  }
  const client = createClient({ url: env.BENCH_REDIS_URL })
  client.on('error', (error: unknown) => console.error(`[${role}] redis:`, error))
  await client.connect()
  return client
}

const client = await connect()
const keyName = (index: number) => `k${index}`
const tagOf = (index: number) => `t${index}`
const versionKey = (index: number) => `${source}${index}`

// A reader's last lookup was a local hit (the event is published before cached() resolves, and reads are one at a time).
let localHit = false
subscribe(CHANNELS.cache, (message) => {
  const event = message as { source?: string; result?: string; local?: true }
  if (event.source === 'cached' && event.result === 'hit' && event.local) localHit = true
})

/** One read of key `index`: the version it returned. */
async function read(index: number): Promise<number> {
  return cached(
    client,
    keyName(index),
    // A long timeout: a slow reply under a saturated CPU is not what is measured here.
    { ttl: '1h', prefix, tags: [tagOf(index)], localCache: { fenceMs }, timeoutMs: 5000 },
    async () => Number((await client.get(versionKey(index))) ?? 0),
  )
}

/** Every read of one key, in order: start times, versions, and whether each was a local hit. */
interface KeyReads {
  starts: Float64Array
  versions: Float64Array
  local: Uint8Array
  length: number
}

const reads: KeyReads[] = Array.from({ length: keyCount }, () => ({
  starts: new Float64Array(1 << 16),
  versions: new Float64Array(1 << 16),
  local: new Uint8Array(1 << 16),
  length: 0,
}))
let readCount = 0
let localHits = 0

function grow<T extends Float64Array | Uint8Array>(array: T): T {
  const grown = new (array.constructor as new (length: number) => T)(array.length * 2)
  grown.set(array)
  return grown
}

function record(index: number, start: number, version: number, local: boolean): void {
  const log = reads[index]!
  if (log.length === log.starts.length) {
    log.starts = grow(log.starts)
    log.versions = grow(log.versions)
    log.local = grow(log.local)
  }
  log.starts[log.length] = start
  log.versions[log.length] = version
  log.local[log.length] = local ? 1 : 0
  log.length++
  readCount++
  if (local) localHits++
}

async function readFor(seconds: number): Promise<void> {
  const until = now() + seconds * 1000
  for (let index = 0; now() < until; index = (index + 1) % keyCount) {
    const start = now()
    localHit = false
    const version = await read(index)
    record(index, start, version, localHit)
    await yieldToLoop()
  }
}

/**
 * Stale reads against the writer's log: a read of a key that started after a write of that
 * key resolved and returned an older version. For each write, the latest such read's start
 * minus the write's resolution is this reader's staleness for it.
 */
function judge(writes: WriteLog[]): ReaderReport {
  const staleness: number[] = writes.map(() => -1)
  let staleReads = 0
  let staleLocal = 0
  const byKey = new Map<number, number[]>()
  writes.forEach((write, position) => {
    const list = byKey.get(write.key) ?? []
    list.push(position)
    byKey.set(write.key, list)
  })
  for (const [key, positions] of byKey) {
    const log = reads[key]!
    // Writes of one key resolve in order; walk the reads with the newest resolved write so far.
    let next = 0
    let current = -1
    for (let i = 0; i < log.length; i++) {
      const start = log.starts[i]!
      while (next < positions.length && writes[positions[next]!]!.resolvedAt < start) current = positions[next++]!
      if (current < 0) continue
      const write = writes[current]!
      if (log.versions[i]! >= write.version) continue
      staleReads++
      // Which write did it miss? The first one (of this key) that resolved before it with a newer version.
      let missed = current
      for (let p = next - 1; p >= 0; p--) {
        const candidate = writes[positions[p]!]!
        if (candidate.version <= log.versions[i]!) break
        missed = positions[p]!
      }
      staleness[missed] = Math.max(staleness[missed]!, start - writes[missed]!.resolvedAt)
      if (log.local[i] === 1) staleLocal++
    }
  }
  return { type: 'judged', reads: readCount, localHits, staleReads, staleLocal, staleness }
}

/** INCR then invalidateTags, every 1/rate s, keys round robin. */
async function writeFor(seconds: number, rate: number): Promise<WriteLog[]> {
  const log: WriteLog[] = []
  const start = now()
  const interval = 1000 / rate
  for (let n = 0; ; n++) {
    const due = start + n * interval
    if (due >= start + seconds * 1000) break
    const wait = due - now()
    if (wait > 0) await sleep(wait)
    const key = n % keyCount
    const version = Number(await client.incr(versionKey(key)))
    const calledAt = now()
    await invalidateTags(client, [tagOf(key)], { prefix, timeoutMs: 5000 })
    log.push({ key, version, calledAt, resolvedAt: now() })
  }
  return log
}

/** Plain SETs under the tracked prefix, `rate` per second in batches every 10 ms. */
async function setFor(seconds: number, rate: number): Promise<number> {
  const start = now()
  let sent = 0
  let n = 0
  while (now() - start < seconds * 1000) {
    const due = Math.floor(((now() - start) / 1000) * rate)
    const batch: Promise<unknown>[] = []
    for (; sent < due; sent++) batch.push(client.set(`${prefix}{set:${n++ % 1000}}`, String(sent)))
    await Promise.all(batch)
    await sleep(10)
  }
  return sent
}

process.on('message', async (command: WorkerCommand) => {
  try {
    if (command.type === 'stop') {
      await client.close().catch(() => {})
      process.exit(0)
    }
    if (command.type === 'read') {
      await readFor(command.seconds)
      process.send?.({ type: 'read-done' })
    } else if (command.type === 'judge') {
      process.send?.(judge(command.writes))
    } else if (command.type === 'write') {
      process.send?.({ type: 'written', writes: await writeFor(command.seconds, command.rate) })
    } else if (command.type === 'set') {
      process.send?.({ type: 'set-done', sent: await setFor(command.seconds, command.rate) })
    }
  } catch (error) {
    console.error(`[${role}]`, error)
    process.exit(1)
  }
})

if (role === 'reader' || role === 'tracker') {
  // Warm: every key read once (tracking registered, entries filled), until local hits come.
  for (let attempt = 0; ; attempt++) {
    localHit = false
    for (let index = 0; index < keyCount; index++) await read(index)
    if (localHit) break
    if (attempt === 200) throw new Error(`${role}: no local hit after 200 passes over the keys`)
    await sleep(10)
  }
}
process.send?.({ type: 'ready' })
