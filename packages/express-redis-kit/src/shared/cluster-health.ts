/*
 * What runCommand needs to know of a Redis Cluster's nodes to stay available through a
 * failover. node-redis keeps a cluster client ready while one of its masters is down, holds
 * commands for that master's slots in the node connection's offline queue, and refreshes its
 * slot map only when a node's connection reconnects (after
 * `topologyRefreshOnReconnectionAttemptStrategy`, 5 s by default) or a command meets MOVED. A
 * frozen master (a stopped process, a partition) keeps its connection open and answers
 * nothing: no reconnect, no MOVED, so node-redis would keep sending its slots' commands
 * there until it came back. Here:
 *   - a node whose connection is down, after having been up, fails at once and asks the
 *     cluster for its topology (throttled), so that a promoted replica is found;
 *   - a node whose connection has never been up yet (a replica promoted a moment ago) is
 *     waited for, within the command's timeout;
 *   - a node that times out twice within 2 s asks for the topology again: a frozen master's
 *     slots move to its replica as soon as the cluster promotes it;
 *   - a node that the notifier's own connections wait on (a blocking stream read, a sharded
 *     subscription: a frozen node and one with nothing to say look alike there) is pinged through
 *     the app's client once a second, unless that client heard from it within the second, so
 *     that a frozen master is found (as above) in a process that sends it nothing else.
 * The refresh uses node-redis's own rediscovery (`_slots.rediscover`, node-redis 5.1+ and 6),
 * started from another master; node-redis 5.0.x does not expose it and then relies on its
 * own refreshes.
 */

/** The Redis Cluster slot of a key: CRC16 (XMODEM) of its hash tag, or of the whole key, mod 16384. */
export function clusterSlot(key: string): number {
  const open = key.indexOf('{')
  const close = open === -1 ? -1 : key.indexOf('}', open + 1)
  const hashed = Buffer.from(close > open + 1 ? key.slice(open + 1, close) : key)
  let crc = 0
  for (const byte of hashed) {
    crc ^= byte << 8
    for (let bit = 0; bit < 8; bit++) crc = crc & 0x8000 ? ((crc << 1) ^ 0x1021) & 0xffff : (crc << 1) & 0xffff
  }
  return crc % 16384
}

/** A node's connection, as node-redis keeps it in a cluster's slot table. */
export interface NodeClient {
  readonly isReady: boolean
  readonly options?: { socket?: { host?: string; port?: number } }
  once(event: 'ready', listener: () => void): unknown
  off(event: 'ready', listener: () => void): unknown
  /** Sends a raw command (node-redis 5 and 6 clients have it; checked before use). */
  sendCommand?(args: string[]): Promise<unknown>
}

interface ClusterInternals {
  slots?: ({ master?: { client?: NodeClient } } | undefined)[]
  masters?: { client?: NodeClient; address?: string }[]
  _slots?: { rediscover?: (startWith?: NodeClient, excluded?: Set<string>) => Promise<void> }
}

/** The connection to the master of `key`'s slot, or undefined (a single client, or a slot not known yet). */
export function slotNode(redis: unknown, key: string): NodeClient | undefined {
  const { slots } = redis as ClusterInternals
  if (!Array.isArray(slots)) return undefined
  return slots[clusterSlot(key)]?.master?.client
}

/** Node connections seen ready at least once. */
const seenReady = new WeakSet<NodeClient>()
/** Recent timeouts of each node: the time of the last one and how many in a row. */
const timeouts = new WeakMap<NodeClient, { at: number; count: number }>()
/** When each node last answered a command of the kit, or a probe. */
const answeredAt = new WeakMap<NodeClient, number>()
/** When each node was last probed (see probeNode). */
const probedAt = new WeakMap<NodeClient, number>()
/** When each cluster last asked for its topology (keyed by node-redis's slot table). */
const refreshedAt = new WeakMap<object, number>()

const REFRESH_EVERY_MS = 250
const TIMEOUTS_BEFORE_REFRESH = 2
const TIMEOUT_WINDOW_MS = 2_000
const PROBE_EVERY_MS = 1_000

export function wasReady(node: NodeClient): boolean {
  return seenReady.has(node)
}

/** A command goes to `node`, whose connection is up. */
export function nodeReady(node: NodeClient): void {
  seenReady.add(node)
}

/** `node` answered: its timeouts in a row end. */
export function nodeAnswered(node: NodeClient): void {
  timeouts.delete(node)
  answeredAt.set(node, Date.now())
}

/** A command to `node` timed out: after a second one within 2 s, ask for the topology. */
export function nodeTimedOut(redis: unknown, node: NodeClient): void {
  const now = Date.now()
  const last = timeouts.get(node)
  const count = last && now - last.at < TIMEOUT_WINDOW_MS ? last.count + 1 : 1
  timeouts.set(node, { at: now, count })
  if (count >= TIMEOUTS_BEFORE_REFRESH) refreshTopology(redis, node)
}

/**
 * Checks that `node` (a connection of the cluster client `redis`, the app's) still answers, for a
 * caller that cannot tell from where it waits: a blocking read or a subscription of the notifier,
 * on a connection of its own to the same node, sees a frozen node as one with nothing to say. A
 * PING, at most one per node per second and none when the node answered within the last second;
 * one that gets no reply within `timeoutMs` counts as a timeout of the node (see nodeTimedOut), so
 * that the cluster asks for its topology again and its slots follow a promoted replica.
 */
export function probeNode(redis: unknown, node: NodeClient, timeoutMs: number): void {
  const now = Date.now()
  if (typeof node.sendCommand !== 'function' || !node.isReady) return
  if (now - (answeredAt.get(node) ?? 0) < PROBE_EVERY_MS || now - (probedAt.get(node) ?? 0) < PROBE_EVERY_MS) return
  probedAt.set(node, now)
  let answered = false
  const timer = setTimeout(() => {
    if (!answered) nodeTimedOut(redis, node)
  }, timeoutMs)
  timer.unref()
  node.sendCommand(['PING']).then(
    () => {
      answered = true
      clearTimeout(timer)
      nodeAnswered(node)
    },
    // A connection closed under it (the node left the topology) or an error: not a stall.
    () => clearTimeout(timer),
  )
}

/** Resolves true once `node` is ready, false after `timeoutMs`. */
export function untilReady(node: NodeClient, timeoutMs: number): Promise<boolean> {
  if (node.isReady) return Promise.resolve(true)
  return new Promise((resolve) => {
    const onReady = () => {
      clearTimeout(timer)
      resolve(true)
    }
    const timer = setTimeout(() => {
      node.off('ready', onReady)
      resolve(false)
    }, timeoutMs)
    node.once('ready', onReady)
  })
}

/**
 * Asks the cluster for its slot map again, from a master other than `unhealthy` (at most
 * every 250 ms per cluster; errors are node-redis's to report on the cluster's 'error').
 */
export function refreshTopology(redis: unknown, unhealthy: NodeClient): void {
  const cluster = redis as ClusterInternals
  const rediscover = cluster._slots?.rediscover
  if (typeof rediscover !== 'function') return
  const table = cluster._slots as object
  const now = Date.now()
  if (now - (refreshedAt.get(table) ?? 0) < REFRESH_EVERY_MS) return
  refreshedAt.set(table, now)
  const startWith = cluster.masters?.find((master) => master.client?.isReady && master.client !== unhealthy)?.client
  const address = unhealthy.options?.socket
  const excluded = new Set(address?.host && address.port ? [`${address.host}:${address.port}`] : [])
  rediscover.call(cluster._slots, startWith, excluded).catch(() => {})
}

/**
 * Asks a cluster connection for its topology again when its slot map has no master for
 * `key`'s slot: it connected while the cluster was still being created (no slots assigned
 * yet), and node-redis would keep that map until a reconnect or a MOVED that never comes.
 */
export function rediscoverUnmapped(redis: unknown, key: string): void {
  const cluster = redis as ClusterInternals
  const rediscover = cluster._slots?.rediscover
  if (typeof rediscover !== 'function' || !Array.isArray(cluster.slots)) return
  if (cluster.slots[clusterSlot(key)]?.master) return
  rediscover.call(cluster._slots).catch(() => {})
}
