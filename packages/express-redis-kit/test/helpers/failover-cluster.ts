import { type ChildProcess, execFile, spawn } from 'node:child_process'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { clusterSlot } from '../../src/shared/redis.js'
import { clusterPorts } from './redis.js'

/**
 * A 3-master + 3-replica Redis Cluster of our own, on free ports, with a 1 s node timeout (a
 * master that stops answering is failed over after about 2 s) and
 * `cluster-require-full-coverage no` (the shards that still have a master keep serving
 * while one has none), whose nodes a test may kill,
 * freeze and thaw, or fail over gracefully.
 */
export interface FailoverCluster {
  /** The six nodes' ports, masters first. */
  ports: number[]
  /** The master serving `key`'s slot now. */
  masterOf(key: string): Promise<number>
  /** The masters serving the slots now (one CLUSTER NODES): the port of the one that serves a key. */
  mastersNow(): Promise<(key: string) => number>
  /** The replica of the master at `port`. */
  replicaOf(port: number): Promise<number>
  /** SIGKILL. */
  kill(port: number): Promise<void>
  /** SIGSTOP: the process keeps its sockets open and answers nothing. */
  freeze(port: number): void
  /** SIGCONT. */
  thaw(port: number): void
  /**
   * `CLUSTER FAILOVER` on a replica, once it and its master agree that it is its replica (its
   * link up): a graceful switch of roles with its master. Rejects when the replica refuses it.
   */
  failover(replicaPort: number): Promise<void>
  /**
   * A graceful failover ({@link failover}) made again until the replica is a master, once the
   * cluster would allow it (the other masters vote for one failover of a given master per 2
   * node timeouts, so switching a shard back and forth takes about 2 s a round); resolves with
   * when the replica said it was a master (Date.now()).
   */
  promote(replicaPort: number, withinMs?: number): Promise<number>
  /** `CLIENT PAUSE <ms> ALL` on the node at `port`: it stalls every client, the cluster bus goes on (no failover). */
  pause(port: number, ms: number): Promise<void>
  /** Resolves once the node at `port` answers a PING (a pause over). */
  untilAnswers(port: number, withinMs?: number): Promise<void>
  /** Resolves (with when, Date.now()) once the node at `port` says it is a master. */
  untilMaster(port: number, withinMs?: number): Promise<number>
  /** How many connections to the node at `port` have CLIENT TRACKING on (`t` in CLIENT LIST's flags). */
  trackingClients(port: number): Promise<number>
  /** Kills every node; safe to call more than once. */
  stop(): Promise<void>
}

/** The cluster's `cluster-node-timeout` (ms): how long a master may stop answering before its replica is promoted. */
export const NODE_TIMEOUT_MS = 1_000
/** How long a replica's manual failover may take before it gives up (Redis's CLUSTER_MF_TIMEOUT). */
const MANUAL_FAILOVER_MS = 5_000

const cli = (port: number, ...args: string[]) =>
  new Promise<string>((resolve, reject) => {
    execFile('redis-cli', ['-p', String(port), ...args], { timeout: 2_000 }, (error, stdout) =>
      error ? reject(error) : resolve(stdout),
    )
  })

export async function startFailoverCluster(): Promise<FailoverCluster> {
  const dir = await mkdtemp(join(tmpdir(), 'erk-failover-'))
  const ports = await clusterPorts(6)
  const servers = new Map<number, ChildProcess>()
  /** When each master was last replaced by a graceful failover (see promote). */
  const steppedDownAt = new Map<number, number>()
  for (const port of ports) {
    servers.set(
      port,
      spawn(
        'redis-server',
        [
          ...['--port', String(port), '--bind', '127.0.0.1', '--cluster-enabled', 'yes'],
          ...['--cluster-config-file', join(dir, `${port}.conf`), '--cluster-node-timeout', String(NODE_TIMEOUT_MS)],
          // As the README recommends: the other shards keep serving while one has no master.
          ...['--cluster-require-full-coverage', 'no'],
          ...['--dir', dir, '--save', '', '--appendonly', 'no'],
        ],
        { stdio: 'ignore' },
      ),
    )
  }
  const kill = async (port: number) => {
    const server = servers.get(port)
    if (!server || server.exitCode !== null || server.signalCode !== null) return
    const exited = new Promise((resolve) => server.once('exit', resolve))
    server.kill('SIGCONT')
    server.kill('SIGKILL')
    await exited
  }
  let stopped: Promise<void> | undefined
  const stop = () => {
    stopped ??= Promise.all(ports.map(kill)).then(() => rm(dir, { recursive: true, force: true }))
    return stopped
  }
  const nodes = async (port: number) =>
    (await cli(port, 'cluster', 'nodes'))
      .trim()
      .split('\n')
      .map((line) => {
        const [id, address, flags, masterId, , , , , ...ranges] = line.split(' ')
        return {
          id,
          port: Number(address?.split(':')[1]?.split('@')[0]),
          flags: flags?.split(',') ?? [],
          masterId,
          ranges,
        }
      })
  /** The port of the master the replica at `port` replicates (its own port if it is a master). */
  const masterPortOf = async (port: number) => {
    const replication = await cli(port, 'info', 'replication')
    return Number(/master_port:(\d+)/.exec(replication)?.[1] ?? port)
  }
  const failover = async (replicaPort: number) => {
    // A master ignores a replica's request until it knows it as its replica, and a master that
    // stepped down a moment ago is not one yet: wait for both to agree, and for the link.
    await until(async () => {
      const master = await masterPortOf(replicaPort)
      const [view, replication] = await Promise.all([nodes(master), cli(replicaPort, 'info', 'replication')])
      const masterId = view.find((node) => node.flags.includes('myself'))?.id
      return (
        replication.includes('master_link_status:up') &&
        view.find((node) => node.port === replicaPort)?.masterId === masterId
      )
    })
    const reply = await cli(replicaPort, 'cluster', 'failover')
    if (!reply.startsWith('OK')) throw new Error(`CLUSTER FAILOVER on ${replicaPort}: ${reply.trim()}`)
  }

  try {
    for (const port of ports) await until(async () => (await cli(port, 'ping')).includes('PONG'))
    await new Promise<void>((resolve, reject) =>
      execFile(
        'redis-cli',
        [
          '--cluster',
          'create',
          ...ports.map((port) => `127.0.0.1:${port}`),
          '--cluster-replicas',
          '1',
          '--cluster-yes',
        ],
        (error) => (error ? reject(error) : resolve()),
      ),
    )
    for (const port of ports) {
      await until(async () => (await cli(port, 'cluster', 'info')).includes('cluster_state:ok'))
    }
    // Every replica attached and in sync, so that a failover has somewhere to go.
    await until(async () => {
      const all = await nodes(ports[0]!)
      const replicas = all.filter((node) => node.flags.includes('slave'))
      if (replicas.length !== 3) return false
      for (const replica of replicas) {
        if (!(await cli(replica.port, 'info', 'replication')).includes('master_link_status:up')) return false
      }
      return true
    })
  } catch (error) {
    await stop()
    throw error
  }

  return {
    ports,
    async masterOf(key) {
      const slot = clusterSlot(key)
      for (const port of ports) {
        const all = await nodes(port).catch(() => undefined)
        const owner = all?.find((node) => servesSlot(node, slot))
        if (owner) return owner.port
      }
      throw new Error(`no master serves slot ${slot}`)
    },
    async mastersNow() {
      let all: Awaited<ReturnType<typeof nodes>> | undefined
      for (const port of ports) {
        all = await nodes(port).catch(() => undefined)
        if (all) break
      }
      if (!all) throw new Error('no node of the failover cluster answered CLUSTER NODES')
      const known = all
      return (key) => {
        const owner = known.find((node) => servesSlot(node, clusterSlot(key)))
        if (!owner) throw new Error(`no master serves the slot of ${key}`)
        return owner.port
      }
    },
    async replicaOf(port) {
      const all = await nodes(port)
      const master = all.find((node) => node.port === port)
      const replica = all.find((node) => node.masterId === master?.id)
      if (!replica) throw new Error(`the master at ${port} has no replica`)
      return replica.port
    },
    kill,
    freeze(port) {
      servers.get(port)?.kill('SIGSTOP')
    },
    thaw(port) {
      servers.get(port)?.kill('SIGCONT')
    },
    failover,
    async promote(replicaPort, withinMs = 30_000) {
      const deadline = Date.now() + withinMs
      for (;;) {
        const master = await masterPortOf(replicaPort)
        // The other masters vote for a failover of a given master at most once per 2 node
        // timeouts: an attempt sooner is refused, and pauses the master's writers for the
        // manual failover's 5 s.
        const votable = (steppedDownAt.get(master) ?? 0) + 2 * NODE_TIMEOUT_MS + 200
        if (Date.now() < votable) await sleep(votable - Date.now())
        const accepted = await failover(replicaPort).then(
          () => true,
          () => false,
        )
        // An accepted attempt that stalls (the manual failover's 5 s run out) is made again.
        const attemptEnds = Math.min(deadline, Date.now() + (accepted ? MANUAL_FAILOVER_MS + 1_000 : 100))
        while (Date.now() < attemptEnds) {
          if ((await cli(replicaPort, 'role').catch(() => '')).startsWith('master')) {
            const promotedAt = Date.now()
            steppedDownAt.set(master, promotedAt)
            return promotedAt
          }
          await sleep(20)
        }
        if (Date.now() >= deadline)
          throw new Error(`the replica at ${replicaPort} was not promoted within ${withinMs} ms`)
      }
    },
    async pause(port, ms) {
      await cli(port, 'client', 'pause', String(ms), 'all')
    },
    async untilAnswers(port, withinMs = 15_000) {
      await until(async () => (await cli(port, 'ping')).includes('PONG'), withinMs, 50)
    },
    async untilMaster(port, withinMs = 15_000) {
      await until(async () => (await cli(port, 'role')).startsWith('master'), withinMs, 20)
      return Date.now()
    },
    async trackingClients(port) {
      const list = await cli(port, 'client', 'list')
      return list.split('\n').filter((line) => /\bflags=\S*t/.test(line)).length
    },
    stop,
  }
}

/** Whether a node of CLUSTER NODES is a master, not failed, that serves `slot`. */
function servesSlot(node: { flags: string[]; ranges: string[] }, slot: number): boolean {
  return (
    node.flags.includes('master') &&
    !node.flags.includes('fail') &&
    node.ranges.some((range) => {
      const [from = -1, to = from] = range.split('-').map(Number)
      return slot >= from && slot <= to
    })
  )
}

async function until(check: () => Promise<boolean>, withinMs = 15_000, everyMs = 50): Promise<void> {
  const deadline = Date.now() + withinMs
  while (Date.now() < deadline) {
    if (await check().catch(() => false)) return
    await sleep(everyMs)
  }
  throw new Error(`the failover cluster did not get there within ${withinMs} ms`)
}
