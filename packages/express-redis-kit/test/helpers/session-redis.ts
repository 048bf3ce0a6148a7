import { setTimeout as sleep } from 'node:timers/promises'
import { createClient } from 'redis'

import { mode, type RedisClient, startDisposableCluster, startDisposableRedis } from './redis.js'

export { sleep }

interface Address {
  host: string
  port: number
}

/**
 * A Redis of the suite's mode that only this test file uses (a single redis-server, or a
 * 3-master cluster of its own): command counts on it are exact, and a test may kill it.
 */
export interface DisposableStore {
  addresses: Address[]
  /** A new client of the suite's mode, connected to this store. */
  connect(): Promise<RedisClient>
  /** Kills every server (SIGKILL); safe to call more than once. */
  stop(): Promise<void>
}

export async function startDisposableStore(): Promise<DisposableStore> {
  if (mode === 'cluster') return startDisposableCluster()
  const redis = await startDisposableRedis()
  return {
    addresses: [{ host: '127.0.0.1', port: redis.port }],
    async connect() {
      const client = createClient({ url: redis.url })
      client.on('error', () => {})
      await client.connect()
      return client
    },
    stop: () => redis.stop(),
  }
}

const adminClient = (address: Address) =>
  createClient({ socket: { ...address, reconnectStrategy: false, connectTimeout: 1_000 } })

async function admin<T>(address: Address, use: (client: ReturnType<typeof adminClient>) => Promise<T>): Promise<T> {
  const client = adminClient(address)
  client.on('error', () => {})
  await client.connect()
  try {
    return await use(client)
  } finally {
    client.destroy()
  }
}

/** Commands that clients send to manage their connection, not to read or write data. */
const HOUSEKEEPING = new Set(['info', 'config', 'cluster', 'client', 'hello', 'command', 'ping', 'select', 'readonly'])

/** What a set of Redis servers executed between two snapshots. */
export interface CommandDelta {
  /**
   * Calls per data command, summed over the servers (housekeeping such as INFO, CLUSTER
   * and HELLO left out). Redis counts the commands a Lua script runs as well: an EVALSHA
   * of a script that runs HGETALL counts as `{ evalsha: 1, hgetall: 1 }`.
   */
  calls: Record<string, number>
  /** Total of `calls`. */
  total: number
  /** Changes to the data set (`rdb_changes_since_last_save`; the servers never save). */
  writes: number
}

interface Snapshot {
  calls: Map<string, number>
  writes: number
}

/** Reads `INFO commandstats` and `INFO persistence` on every server of `addresses`. */
export function commandCounter(addresses: Address[]) {
  async function snapshot(): Promise<Snapshot> {
    const calls = new Map<string, number>()
    let writes = 0
    for (const address of addresses) {
      const [stats, persistence] = await admin(address, async (client) => [
        await client.info('commandstats'),
        await client.info('persistence'),
      ])
      for (const match of stats.matchAll(/^cmdstat_([^:]+):calls=(\d+)/gm)) {
        const command = match[1] as string
        if (HOUSEKEEPING.has(command.split('|')[0] as string)) continue
        calls.set(command, (calls.get(command) ?? 0) + Number(match[2]))
      }
      writes += Number(/rdb_changes_since_last_save:(\d+)/.exec(persistence)?.[1])
    }
    return { calls, writes }
  }

  return {
    /** Runs `action` and reports what the servers executed meanwhile. */
    async during(action: () => Promise<unknown>): Promise<CommandDelta> {
      const before = await snapshot()
      await action()
      const after = await snapshot()
      const calls: Record<string, number> = {}
      let total = 0
      for (const [command, count] of after.calls) {
        const delta = count - (before.calls.get(command) ?? 0)
        if (delta === 0) continue
        calls[command] = delta
        total += delta
      }
      return { calls, total, writes: after.writes - before.writes }
    },
  }
}

export { describeDeep, type RecordingLogger, recordingLogger, waitForRedisResume } from './outage.js'
