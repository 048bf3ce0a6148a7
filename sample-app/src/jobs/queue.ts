import { type JobsOptions, Queue } from 'bullmq'
import type { Config } from '../config.js'
import {
  checkEvictionPolicy,
  connectQueueRedis,
  QUEUE_NAME,
  type QueueRedis,
  queueLocation,
  queuePrefix,
} from './connection.js'
import { type JobData, JobId, JobInputError, type JobName, parseJob } from './definitions.js'

/** How long an enqueue may take before it fails (Redis unreachable or too slow). */
const ENQUEUE_TIMEOUT_MS = 5_000

const DAY_S = 24 * 60 * 60

/**
 * The options of every job. Completed jobs are kept 7 days: while a job is kept, enqueueing its id
 * again is a no-op (BullMQ's deduplication), which is what makes a repeated enqueue (the outbox
 * relay retrying a row) harmless. That is also the trap: an id derived from the user or the email
 * would block a later, real job with the same id for those 7 days, so ids are unique per event
 * (`outboxJobId`). Failed jobs (every attempt used) are kept for inspection, the last 10,000.
 */
function jobOptions(config: Config, jobId: string): JobsOptions {
  return {
    jobId,
    attempts: config.jobs.attempts,
    backoff: { type: 'exponential', delay: config.jobs.backoffMs },
    removeOnComplete: { age: 7 * DAY_S, count: 100_000 },
    removeOnFail: { count: 10_000 },
  }
}

/** Thrown by `enqueue` when the queue's Redis did not take the job (down, slow, or refusing). */
export class EnqueueError extends Error {
  override name = 'EnqueueError'
}

/** The producer side of the jobs: what the app (the outbox relay) uses to enqueue. */
export interface JobQueue {
  /**
   * Adds job `name` with `data` (validated: a {@link JobInputError} names the problem) under
   * `jobId`. A job with that id already in the queue (waiting, running, completed or failed and
   * still kept) makes this a no-op. Rejects with an {@link EnqueueError} within 5 s when Redis does
   * not take it (nothing waits for a Redis that is down; the caller tries again with the same id).
   */
  enqueue<N extends JobName>(name: N, data: JobData<N>, jobId: string): Promise<void>
  /** The BullMQ queue (created on first use): counts, inspection of failed jobs. */
  queue(): Queue
  /** Closes the queue and its connection. */
  close(): Promise<void>
}

/**
 * The job queue on the queue's Redis (QUEUE_REDIS_URL, else the app's Redis or Cluster), under
 * the app's prefix. Nothing connects until the first use; then its `maxmemory-policy` is checked
 * (a warning unless noeviction).
 */
export function createJobQueue(config: Config, logger: Pick<Console, 'warn'> = console): JobQueue {
  let connection: QueueRedis | undefined
  let queue: Queue | undefined
  const open = (): Queue => {
    if (queue) return queue
    connection = connectQueueRedis(config, 'producer', logger)
    checkEvictionPolicy(connection, queueLocation(config), logger)
    queue = new Queue(QUEUE_NAME, { connection, prefix: queuePrefix(config) })
    queue.on('error', () => {}) // the connection's own listener reports it once
    return queue
  }
  return {
    async enqueue(name, data, jobId) {
      const parsed = parseJob(name, data)
      const id = JobId.safeParse(jobId)
      if (!id.success)
        throw new JobInputError(`invalid job id ${JSON.stringify(jobId)}: ${id.error.issues[0]?.message}`)
      let timer: NodeJS.Timeout | undefined
      const timeout = new Promise<never>((_, reject) => {
        timer = setTimeout(
          () => reject(new EnqueueError(`enqueueing ${name} ${jobId} timed out after ${ENQUEUE_TIMEOUT_MS} ms`)),
          ENQUEUE_TIMEOUT_MS,
        )
      })
      try {
        // an add that completes after the timeout is harmless: the retry with the same id is a no-op
        await Promise.race([open().add(name, parsed, jobOptions(config, jobId)), timeout])
      } catch (error) {
        if (error instanceof EnqueueError) throw error
        throw new EnqueueError(`enqueueing ${name} ${jobId} failed: ${(error as Error).message}`, { cause: error })
      } finally {
        clearTimeout(timer)
      }
    },
    queue: open,
    async close() {
      await queue?.close().catch(() => {})
      connection?.disconnect()
    },
  }
}
