import type { createClient } from 'redis'

export type Client = ReturnType<typeof createClient>

/** The only Redis the benchmarks ever talk to. */
export const REDIS_URL = 'redis://127.0.0.1:6379'

export interface CommandStats {
  /** Calls per command (`cmdstat_<name>`, subcommands as `client|info`). */
  calls: Map<string, number>
  /** Microseconds Redis spent per command (a script's time includes the commands it ran). */
  usec: Map<string, number>
}

/** `INFO commandstats`, parsed. */
export async function commandStats(client: Client): Promise<CommandStats> {
  const info = await client.info('commandstats')
  const stats: CommandStats = { calls: new Map(), usec: new Map() }
  for (const line of info.split(/\r?\n/)) {
    const match = /^cmdstat_([^:]+):calls=(\d+),usec=(\d+)/.exec(line)
    if (!match) continue
    stats.calls.set(match[1]!, Number(match[2]))
    stats.usec.set(match[1]!, Number(match[3]))
  }
  return stats
}

/**
 * Calls made between two snapshots, per command, without the INFO calls themselves
 * (the benchmark's own snapshots, and anyone else's).
 */
export function commandDelta(before: Map<string, number>, after: Map<string, number>): Map<string, number> {
  const delta = new Map<string, number>()
  for (const [name, calls] of after) {
    if (name === 'info') continue
    const made = calls - (before.get(name) ?? 0)
    if (made > 0) delta.set(name, made)
  }
  return delta
}

/** `rdb_changes_since_last_save` (INFO persistence): writes to the dataset since the last save, by every client. */
export async function rdbChanges(client: Client): Promise<number> {
  return Number(/rdb_changes_since_last_save:(\d+)/.exec(await client.info('persistence'))?.[1] ?? Number.NaN)
}

/** Which of `names` (commands as MONITOR shows them) Redis flags as `write` (COMMAND INFO). */
export async function writeCommands(client: Client, names: Iterable<string>): Promise<Set<string>> {
  const unique = [...new Set(names)]
  if (unique.length === 0) return new Set()
  const reply = (await client.sendCommand(['COMMAND', 'INFO', ...unique])) as unknown[]
  const writes = new Set<string>()
  for (const entry of reply) {
    if (!Array.isArray(entry)) continue
    const flags = entry[2] instanceof Set ? [...entry[2]] : (entry[2] as unknown[])
    if (flags.map(String).includes('write')) writes.add(String(entry[0]).toLowerCase())
  }
  return writes
}

export const total = (counts: Map<string, number>): number => [...counts.values()].reduce((sum, n) => sum + n, 0)

/** `evalsha 1.00, time 1.00, ...` per request, most frequent first, omitting noise below 0.005. */
export function describeCounts(counts: Map<string, number>, requests: number): string {
  if (requests === 0) return 'n/a'
  const parts = [...counts]
    .map(([name, calls]) => [name, calls / requests] as const)
    .filter(([, perRequest]) => perRequest >= 0.005)
    .sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]))
    .map(([name, perRequest]) => `${name} ${perRequest.toFixed(2)}`)
  return parts.length ? parts.join(', ') : 'none'
}

/** Every key of the benchmark under `prefix` (SCAN, never KEYS). */
export async function keysUnder(client: Client, prefix: string): Promise<string[]> {
  const keys: string[] = []
  for await (const batch of client.scanIterator({ MATCH: `${globEscape(prefix)}*`, COUNT: 1000 })) keys.push(...batch)
  return keys
}

/** Deletes the benchmark's keys under `prefix` (SCAN + UNLINK); returns how many. */
export async function deleteUnder(client: Client, prefix: string): Promise<number> {
  const keys = await keysUnder(client, prefix)
  for (let i = 0; i < keys.length; i += 500) await client.unlink(keys.slice(i, i + 500))
  return keys.length
}

export interface KeyMemory {
  bytes: number
  type: string
  encoding: string
  /** Members of a hash or sorted set, or 1 for a string. */
  size: number
}

/** `MEMORY USAGE key SAMPLES 0` (exact, every nested value counted), with the key's type and encoding. */
export async function keyMemory(client: Client, key: string): Promise<KeyMemory | undefined> {
  const type = await client.type(key)
  if (type !== 'zset' && type !== 'hash' && type !== 'string') return undefined
  // One transaction, so that a key expiring meanwhile (a token bucket's) cannot mix states.
  const multi = client.multi().type(key).memoryUsage(key, { SAMPLES: 0 }).objectEncoding(key)
  if (type === 'zset') multi.zCard(key)
  else if (type === 'hash') multi.hLen(key)
  const [typeNow, bytes, encoding, size] = (await multi.exec()) as unknown[]
  if (typeNow !== type || typeof bytes !== 'number') return undefined
  return { bytes, type, encoding: String(encoding), size: typeof size === 'number' ? size : 1 }
}

function globEscape(text: string): string {
  return text.replace(/[*?[\]\\]/g, (char) => `\\${char}`)
}

export interface MonitorCounts {
  /** Commands this server's connection sent, i.e. network round trips (MULTI/EXEC would count each). */
  sent: Map<string, number>
  /** Commands its Lua scripts ran inside Redis. */
  inScripts: Map<string, number>
  /** Commands sent by the `background` connections (e.g. a local cache's tracking connection), off the request path. */
  background: Map<string, number>
  /** How long the watch lasted (ms), for a background rate. */
  elapsedMs: number
}

/**
 * Watches `MONITOR` while `work` runs and counts what the connection `addr` sent, and what
 * the scripts it started ran (MONITOR shows them as `[db lua]` right after the EVAL/EVALSHA
 * that started them, and a script runs alone, so they are attributed to the last top-level
 * command). Other clients of a shared Redis do not disturb these counts. Commands of the
 * `background` connections (addresses) are counted apart, over the time `work` took.
 */
export async function monitorWhile(
  client: Client,
  addr: string,
  work: () => Promise<void>,
  background: readonly string[] = [],
): Promise<MonitorCounts> {
  const counts: MonitorCounts = { sent: new Map(), inScripts: new Map(), background: new Map(), elapsedMs: 0 }
  const sentinel = `bench-monitor-end-${process.pid}-${Date.now()}`
  let ownsScript = false
  let ended: () => void = () => {}
  const end = new Promise<void>((resolve) => {
    ended = resolve
  })
  const monitor = client.duplicate()
  await monitor.connect()
  try {
    await monitor.monitor((line: string) => {
      const match = /^[\d.]+ \[\d+ ([^\]]+)\] "([^"]*)"(?: "([^"]*)")?/.exec(line)
      if (!match) return
      const [, from, command, firstArg] = match
      const name = command!.toLowerCase()
      if (from === 'lua') {
        if (ownsScript) add(counts.inScripts, name)
        return
      }
      if (name === 'echo' && firstArg === sentinel) ended()
      ownsScript = from === addr
      if (ownsScript) add(counts.sent, name)
      else if (background.includes(from!)) add(counts.background, name)
    })
    const started = performance.now()
    await work()
    counts.elapsedMs = performance.now() - started
    // Everything the server sent was executed before this ECHO, so MONITOR showed it first.
    await client.echo(sentinel)
    await Promise.race([end, new Promise((resolve) => setTimeout(resolve, 5000))])
  } finally {
    monitor.destroy()
  }
  return counts
}

/** Round trips per request as MONITOR saw them: `1.00 (+2.00 in Lua): evalsha 1.00`. */
export function describeSent(monitor: MonitorCounts, requests: number): string {
  const sent = `${(total(monitor.sent) / requests).toFixed(2)} (+${(total(monitor.inScripts) / requests).toFixed(2)} in Lua)`
  return monitor.sent.size ? `${sent}: ${describeCounts(monitor.sent, requests)}` : sent
}

/** The write commands (`writes`, see {@link writeCommands}) among what MONITOR saw, sent or run in Lua, per request. */
export function describeWrites(monitor: MonitorCounts, writes: Set<string>, requests: number): string {
  const counts = new Map<string, number>()
  for (const map of [monitor.sent, monitor.inScripts]) {
    for (const [name, calls] of map) {
      if (writes.has(name)) counts.set(name, (counts.get(name) ?? 0) + calls)
    }
  }
  return counts.size ? `${(total(counts) / requests).toFixed(2)} (${describeCounts(counts, requests)})` : '0.00'
}

function add(counts: Map<string, number>, name: string): void {
  counts.set(name, (counts.get(name) ?? 0) + 1)
}
