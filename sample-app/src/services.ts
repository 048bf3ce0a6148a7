import { PrismaPg } from '@prisma/adapter-pg'
import { createNotifier, type Notifier } from 'express-redis-kit'
import { createClient } from 'redis'
import type { Config } from './config.js'
import { EventStream } from './events.js'
import { PrismaClient } from './generated/prisma/client.js'

/** The app's connections, built from the configuration. */
/**
 * The app's Redis client (node-redis), not connected yet. Commands issued while it is
 * disconnected fail at once instead of waiting in the offline queue.
 */
function newRedisClient(url: string) {
  return createClient({ url, disableOfflineQueue: true })
}

/** The app's Redis connection: what the kit's middleware and the routes use. */
export type Redis = ReturnType<typeof newRedisClient>

export interface Services {
  prisma: PrismaClient
  redis: Redis
  notifier: Notifier
  events: EventStream
  /** Resolves once Redis is connected, or after `ms` if it is not (the app then starts without it). */
  redisReady(ms: number): Promise<boolean>
  /** Ends the event streams and subscriptions, then the connections. */
  close(): Promise<void>
}

/**
 * Creates the database client and starts connecting to Redis without waiting for it: the app
 * starts and serves what it can while Redis is down (nothing waits in an offline queue; the
 * middleware treat a disconnected client as unavailable) and uses Redis as soon as it answers.
 */
export function createServices(config: Config, logger: Pick<Console, 'warn' | 'error'> = console): Services {
  const prisma = new PrismaClient({
    adapter: new PrismaPg({
      connectionString: config.databaseUrl,
      // a database that does not answer fails the request within seconds instead of holding it
      connectionTimeoutMillis: 2_000,
      statement_timeout: 5_000,
      max: 10,
    }),
  })
  const client = newRedisClient(config.redisUrl)
  let lastError = ''
  client.on('error', (error: Error) => {
    // node-redis reconnects by itself; say so once per distinct error, not on every retry
    if (error.message !== lastError) logger.warn(`Redis: ${error.message} (reconnecting)`)
    lastError = error.message
  })
  client.on('ready', () => {
    lastError = ''
  })
  client.connect().catch(() => {}) // rejected only when closed before it connected
  const redis = client
  let events: EventStream | undefined
  const notifier = createNotifier({
    client: redis,
    prefix: `${config.redisPrefix}events:`,
    logger,
    // events published while this instance was cut off from Redis are lost: tell the browsers to reload
    onReconnect: () => events?.resync(),
  })
  events = new EventStream(notifier, logger)
  const stream = events
  return {
    prisma,
    redis,
    notifier,
    events: stream,
    redisReady(ms) {
      if (client.isReady) return Promise.resolve(true)
      return new Promise((resolve) => {
        const timer = setTimeout(() => {
          client.off('ready', onReady)
          resolve(false)
        }, ms)
        const onReady = () => {
          clearTimeout(timer)
          resolve(true)
        }
        client.once('ready', onReady)
      })
    },
    async close() {
      await stream.close()
      await notifier.close()
      client.destroy()
      await prisma.$disconnect()
    },
  }
}
