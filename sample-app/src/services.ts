import { PrismaPg } from '@prisma/adapter-pg'
import { createNotifier, type Notifier } from 'express-redis-kit'
import type { Config } from './config.js'
import { EventStream } from './events.js'
import { PrismaClient } from './generated/prisma/client.js'
import { createJobQueue, type JobQueue, jobOutboxHandler } from './jobs/index.js'
import { type AppLogger, pinoOf } from './logging.js'
import { Metrics } from './metrics.js'
import { cacheInvalidationHandler, OutboxRelay, userEventHandler } from './outbox.js'
import { connectRedis, type Redis } from './redis.js'
import { RequestStats } from './stats.js'

export type { Redis } from './redis.js'

/** The app's connections, built from the configuration. */
export interface Services {
  prisma: PrismaClient
  redis: Redis
  notifier: Notifier
  events: EventStream
  /** The background job queue (connects on first use): the relay enqueues the outbox's `job` rows into it. */
  jobs: JobQueue
  /**
   * This instance's outbox relay (started; `undefined` with OUTBOX_RELAY=false): it relays `event` and `cache` rows;
   * register the handler of another kind with `outbox.register(kind, handler)`.
   */
  outbox: OutboxRelay | undefined
  /** The app's metrics (GET /metrics): the kit's instruments on a MeterProvider of this instance's own. */
  metrics: Metrics
  /** This instance's cache hits and misses and rate-limited requests (GET /stats). */
  stats: RequestStats
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
export function createServices(config: Config, logger: AppLogger = console): Services {
  const prisma = new PrismaClient({
    adapter: new PrismaPg({
      connectionString: config.databaseUrl,
      // a database that does not answer fails the request within seconds instead of holding it
      connectionTimeoutMillis: 2_000,
      statement_timeout: 5_000,
      max: 10,
    }),
  })
  // a single Redis, or a Redis Cluster with REDIS_CLUSTER_NODES (the notifier then uses sharded pub/sub)
  const connection = connectRedis(config, logger)
  const redis = connection.redis
  // fan-out with history: every instance reads every user event from a Redis Stream, resumes
  // after an outage where it stopped, and /events replays what a reconnecting browser missed
  const notifier = createNotifier({
    client: redis,
    prefix: `${config.redisPrefix}events:`,
    mode: 'fanout',
    maxLength: config.eventsMaxLength,
    logger: pinoOf(logger),
  })
  const stream = new EventStream(notifier, logger)
  const jobs = createJobQueue(config, logger)
  const outbox = config.outbox.relay
    ? new OutboxRelay({
        databaseUrl: config.databaseUrl,
        pollMs: config.outbox.pollMs,
        batchSize: config.outbox.batchSize,
        retryMaxMs: config.outbox.retryMaxMs,
        logger,
      })
        .register('event', userEventHandler(notifier))
        // the prefix app.ts gives the response cache and cached()
        .register('cache', cacheInvalidationHandler(redis, `${config.redisPrefix}cache:`))
        // job rows: enqueued as job `<name>.outbox-<row id>` (a row relayed twice is one job)
        .register('job', jobOutboxHandler(jobs, logger))
        .start()
    : undefined
  const metrics = new Metrics()
  const stats = new RequestStats(config.redisPrefix)
  return {
    prisma,
    redis,
    notifier,
    events: stream,
    jobs,
    outbox,
    metrics,
    stats,
    redisReady: (ms) => connection.ready(ms),
    async close() {
      await outbox?.stop()
      await jobs.close()
      await stream.close()
      await notifier.close()
      connection.destroy()
      await prisma.$disconnect()
      stats.close()
      await metrics.close()
    },
  }
}
