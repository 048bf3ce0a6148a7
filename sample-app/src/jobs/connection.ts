import { Cluster, Redis as IORedis } from 'ioredis'
import type { Config } from '../config.js'

/** An ioredis connection (BullMQ's own driver) to the queue's Redis or Redis Cluster. */
export type QueueRedis = IORedis | Cluster

/** The BullMQ queue every job goes through (one queue; the job's name picks its handler). */
export const QUEUE_NAME = 'jobs'

/**
 * The prefix of the queue's keys: the app's prefix and a hash tag, so that every key of the queue
 * is in one hash slot, as BullMQ's scripts need on a Redis Cluster (and harmless on a single Redis).
 */
export function queuePrefix(config: Config): string {
  return `${config.redisPrefix}{jobs}`
}

/** Where the queue lives, for messages. */
export function queueLocation(config: Config): string {
  if (config.jobs.queueRedisUrl !== undefined) return `the queue's Redis at ${config.jobs.queueRedisUrl}`
  return config.redisClusterNodes.length > 0
    ? `the Redis Cluster at ${config.redisClusterNodes.join(',')}`
    : `Redis at ${config.redisUrl}`
}

/**
 * A connection to the queue's Redis: QUEUE_REDIS_URL, else the app's Redis (REDIS_URL) or Redis
 * Cluster (REDIS_CLUSTER_NODES). ioredis reconnects by itself. A `producer` connection fails a
 * command at once while disconnected (an enqueue never waits for Redis: the outbox relay tries
 * again); a `worker` connection waits and retries, as BullMQ's blocking commands need
 * (`maxRetriesPerRequest: null`). Errors are logged once per distinct message until it is ready again.
 */
export function connectQueueRedis(
  config: Config,
  role: 'producer' | 'worker',
  logger: Pick<Console, 'warn'>,
): QueueRedis {
  const options =
    role === 'producer'
      ? { enableOfflineQueue: false, maxRetriesPerRequest: 1, connectTimeout: 2_000 }
      : { maxRetriesPerRequest: null, connectTimeout: 2_000 }
  const client =
    config.jobs.queueRedisUrl === undefined && config.redisClusterNodes.length > 0
      ? new Cluster(config.redisClusterNodes.map(hostAndPort), {
          redisOptions: options,
          enableOfflineQueue: role === 'worker',
          clusterRetryStrategy: () => 1_000,
        })
      : new IORedis(config.jobs.queueRedisUrl ?? config.redisUrl, options)
  const reported = new Set<string>()
  const where = queueLocation(config)
  client.on('error', (error: Error) => {
    if (!reported.has(error.message)) logger.warn(`jobs: ${where}: ${error.message} (reconnecting)`)
    reported.add(error.message)
  })
  client.on('ready', () => reported.clear())
  return client
}

/** `host:port` or `[v6]:port` as ioredis takes it. */
function hostAndPort(node: string): { host: string; port: number } {
  const url = new URL(`redis://${node}`)
  return { host: url.hostname.replace(/^\[|\]$/g, ''), port: Number(url.port) }
}

/**
 * Warns unless every master of the queue's Redis has `maxmemory-policy noeviction`: with any other
 * policy Redis may evict the queue's keys when memory is full, and jobs vanish or run twice. A
 * Redis that refuses CONFIG (managed services often rename it) gets a warning saying it could not
 * be checked. Runs once the connection is ready; never throws.
 */
export function checkEvictionPolicy(client: QueueRedis, where: string, logger: Pick<Console, 'warn'>): void {
  const check = async () => {
    const nodes = client instanceof Cluster ? client.nodes('master') : [client]
    for (const node of nodes) {
      const name = client instanceof Cluster ? `${where} (node ${node.options.host}:${node.options.port})` : where
      try {
        const reply = (await node.call('CONFIG', 'GET', 'maxmemory-policy')) as string[]
        const policy = reply[1]
        if (policy !== 'noeviction') {
          logger.warn(
            `jobs: ${name} has maxmemory-policy ${policy}: when its memory is full Redis may evict queue keys ` +
              '(jobs lost, or run twice). BullMQ needs noeviction: set it there, or give the queue a Redis of its ' +
              'own with QUEUE_REDIS_URL.',
          )
        }
      } catch (error) {
        logger.warn(
          `jobs: could not read the maxmemory-policy of ${name} (${(error as Error).message}); ` +
            'BullMQ needs noeviction: make sure it is set.',
        )
      }
    }
  }
  if (client.status === 'ready') void check()
  else client.once('ready', () => void check())
}
