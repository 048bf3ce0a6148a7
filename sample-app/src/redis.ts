import { createClient, createCluster } from 'redis'
import type { Config } from './config.js'

/**
 * A client of a single Redis (node-redis), not connected yet. Commands issued while it is
 * disconnected fail at once instead of waiting in the offline queue.
 */
function newRedisClient(url: string) {
  return createClient({ url, disableOfflineQueue: true })
}

/**
 * A client of a Redis Cluster, not connected yet, with the settings express-redis-kit recommends
 * (its README, "Running on a Redis Cluster"): the topology is asked for 1 s after a node's
 * connection starts reconnecting (a promoted replica is used within a fraction of a second), a
 * node is retried every 100 ms, and, as on a single Redis, commands for a node that is not
 * connected fail at once instead of waiting in its offline queue.
 */
function newRedisCluster(nodes: string[]) {
  return createCluster({
    rootNodes: nodes.map((node) => ({ url: `redis://${node}` })),
    topologyRefreshOnReconnectionAttemptStrategy: 1_000,
    defaults: { disableOfflineQueue: true, socket: { reconnectStrategy: () => 100, connectTimeout: 500 } },
  })
}

/**
 * The app's Redis connection: a client of a single Redis (`REDIS_URL`), or of a Redis Cluster
 * (`REDIS_CLUSTER_NODES`). What the kit's middleware and the routes use.
 */
export type Redis = ReturnType<typeof newRedisClient> | ReturnType<typeof newRedisCluster>

export interface RedisConnection {
  redis: Redis
  /** Resolves to true once Redis is connected, or to false after `ms` if it is not. */
  ready(ms: number): Promise<boolean>
  /** Closes the connections at once (what is pending fails) and stops connecting. */
  destroy(): void
}

/** Where the app's Redis is, for messages: "Redis at redis://..." or "the Redis Cluster at host:port,...". */
export function redisLocation(config: Config): string {
  return config.redisClusterNodes.length > 0
    ? `the Redis Cluster at ${config.redisClusterNodes.join(',')}`
    : `Redis at ${config.redisUrl}`
}

/**
 * Creates the app's Redis client (a cluster client when `REDIS_CLUSTER_NODES` is set) and starts
 * connecting without waiting: node-redis reconnects by itself (a Cluster whose nodes do not
 * answer at startup is tried again every second). Connection errors are logged once per
 * connection and distinct error until that connection is ready again, not on every retry.
 */
export function connectRedis(config: Config, logger: Pick<Console, 'warn'>): RedisConnection {
  const reported = new Map<string, Set<string>>()
  const report = (source: string, error: Error) => {
    const seen = reported.get(source) ?? new Set<string>()
    if (!seen.has(error.message)) logger.warn(`${source}: ${error.message} (reconnecting)`)
    reported.set(source, seen.add(error.message))
  }

  if (config.redisClusterNodes.length === 0) {
    const client = newRedisClient(config.redisUrl)
    client.on('error', (error: Error) => report('Redis', error))
    client.on('ready', () => reported.clear())
    client.connect().catch(() => {}) // rejected only when closed before it connected
    return {
      redis: client,
      ready: (ms) => until(client, 'ready', () => client.isReady, ms),
      destroy: () => client.destroy(),
    }
  }

  const cluster = newRedisCluster(config.redisClusterNodes)
  type Node = { host: string; port: number }
  const nodeName = (node: Node) => `Redis Cluster node ${node.host}:${node.port}`
  // discovering the topology (from the root nodes, or again after a failover)
  cluster.on('error', (error: Error) => report('Redis Cluster', error))
  cluster.on('connect', () => reported.delete('Redis Cluster'))
  // a connection to one node
  cluster.on('node-error', (error: Error, node: Node) => report(nodeName(node), error))
  cluster.on('node-ready', (node: Node) => reported.delete(nodeName(node)))
  let closed = false
  let retry: NodeJS.Timeout | undefined
  const connected = () => cluster.isReady && servesEverySlot(cluster.slots)
  // node-redis gives up when no root node answers at startup: try again until one does. A
  // Cluster still being created answers with some slots or none, a map node-redis would keep
  // (commands for a missing slot fail without asking again): try again until it has them all.
  const connect = () => {
    cluster.connect().then(
      () => {
        if (closed || connected()) return
        report('Redis Cluster', new Error('some hash slots have no master (a Cluster being created?)'))
        cluster.destroy()
        retry = setTimeout(connect, 1_000)
      },
      () => {
        if (!closed) retry = setTimeout(connect, 1_000)
      },
    )
  }
  connect()
  return {
    redis: cluster,
    ready: (ms) => until(cluster, 'connect', connected, ms),
    destroy() {
      closed = true
      clearTimeout(retry)
      cluster.destroy()
    },
  }
}

/** Whether node-redis's slot map of a cluster has a master for each of the 16384 slots. */
function servesEverySlot(slots: readonly ({ master?: unknown } | undefined)[]): boolean {
  if (slots.length !== 16384) return false
  for (const slot of slots) if (slot?.master === undefined) return false
  return true
}

/** Resolves to true once `done()` holds (checked now and on each `event`), to false after `ms`. */
function until(
  emitter: { on(event: string, listener: () => void): unknown; off(event: string, listener: () => void): unknown },
  event: string,
  done: () => boolean,
  ms: number,
): Promise<boolean> {
  if (done()) return Promise.resolve(true)
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      emitter.off(event, onEvent)
      resolve(false)
    }, ms)
    const onEvent = () => {
      // the event comes before what follows it (see connect()) runs: look again once that ran
      setImmediate(() => {
        if (!done()) return
        clearTimeout(timer)
        emitter.off(event, onEvent)
        resolve(true)
      })
    }
    emitter.on(event, onEvent)
  })
}
