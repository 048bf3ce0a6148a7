import { session } from 'express-redis-kit'
import type { Config } from '../config.js'
import type { Prisma } from '../generated/prisma/client.js'
import type { Redis } from '../redis.js'
import { queueLocation } from './connection.js'
import { type JobData, JobInputError, type JobName, outboxJobId, parseJob } from './definitions.js'
import { jobHandlers } from './handlers.js'
import { createMailer } from './mail.js'
import type { JobQueue } from './queue.js'
import { type JobWorker, startJobWorker } from './worker.js'

export { QUEUE_NAME, queueLocation, queuePrefix } from './connection.js'
export { JOB_NAMES, JOBS, type JobData, JobInputError, type JobName, outboxJobId } from './definitions.js'
export { createMailer, type Mail, type Mailer } from './mail.js'
export { createJobQueue, EnqueueError, type JobQueue } from './queue.js'
export type { JobWorker } from './worker.js'

/**
 * Runs a job worker with the app's handlers: mail through `config.jobs` (SMTP or the mail log),
 * sessions and cached copies on the app's Redis (`redis`, connected or connecting). Used by the
 * worker process (src/worker.ts) and by the server when RUN_WORKER is true.
 */
export function runJobWorker(config: Config, redis: Redis, logger: Pick<Console, 'log' | 'warn' | 'error'>): JobWorker {
  const mailer = createMailer(config.jobs)
  // the session middleware of app.ts, as far as its per-user index goes (same prefix and userKey)
  const sessions = session({
    client: redis,
    secrets: config.sessionSecrets,
    prefix: `${config.redisPrefix}sess:`,
    userKey: 'userId',
    logger,
  })
  const handlers = jobHandlers({ mailer, sessions, redis, cachePrefix: `${config.redisPrefix}cache:` })
  const running = startJobWorker(config, handlers, logger)
  running.worker.waitUntilReady().then(
    () => logger.log(`job worker ready: queue on ${queueLocation(config)}, mail to ${mailer.destination}`),
    () => {}, // closed before it connected
  )
  return {
    worker: running.worker,
    async close(graceMs) {
      await running.close(graceMs)
      mailer.close()
    },
  }
}

/** One row of the transactional outbox, as far as the job handler reads it. */
interface OutboxJobRow {
  id: string
  name: string
  payload: unknown
}

/**
 * The outbox relay's handler of `job` rows: enqueues the job named by the row with the row's
 * payload, as job id `<name>.outbox-<row id>`, so a row relayed twice is one job, and every real
 * event (a new sign-up after a deletion too) a job of its own. A row that can never be a job (an
 * unknown name, data that does not fit: rows are validated when written, so only a row from
 * another version or written by hand) is logged as an error and dropped rather than retried: the
 * relay keeps its order and would hold every row behind it.
 */
export function jobOutboxHandler(jobs: JobQueue, logger: Pick<Console, 'error'>): (row: OutboxJobRow) => Promise<void> {
  return async (row) => {
    try {
      const name = row.name as JobName
      await jobs.enqueue(name, row.payload as JobData<typeof name>, outboxJobId(name, row.id))
    } catch (error) {
      if (!(error instanceof JobInputError)) throw error
      logger.error(`jobs: dropped outbox row ${row.id}, which is no job: ${error.message}`)
    }
  }
}

/** A `job` row for the outbox (`writeOutbox`), its data validated now: a change with a malformed job fails. */
export function outboxJob<N extends JobName>(
  name: N,
  data: JobData<N>,
): { kind: 'job'; name: N; payload: Prisma.InputJsonValue } {
  return { kind: 'job', name, payload: parseJob(name, data) as Prisma.InputJsonValue }
}
