import { type Job, UnrecoverableError, Worker } from 'bullmq'
import type { Config } from '../config.js'
import { checkEvictionPolicy, connectQueueRedis, QUEUE_NAME, queueLocation, queuePrefix } from './connection.js'
import { JobInputError, type JobName, parseJob } from './definitions.js'
import type { JobHandler, JobHandlers } from './handlers.js'

export interface JobWorker {
  worker: Worker
  /**
   * Stops taking jobs and waits for the ones running to finish, for `graceMs` at most (not at all
   * while the queue's Redis is unreachable: they could not complete); past it the worker stops
   * without them: their locks expire and the stalled check of any worker puts them back to wait
   * (they run again). Then closes the connections. Never throws.
   * @param graceMs default 10000
   */
  close(graceMs?: number): Promise<void>
}

/**
 * Starts a BullMQ worker on the queue (`config.jobs`: concurrency, lock duration, stalled check
 * interval). A job's data is validated again before its handler runs: data that does not fit fails
 * the job at once (no retry) with the reason, kept in the failed set. Failures and connection
 * errors are logged, never thrown: Redis being down makes the worker wait and reconnect.
 */
export function startJobWorker(
  config: Config,
  handlers: JobHandlers,
  logger: Pick<Console, 'warn' | 'error'> = console,
): JobWorker {
  const connection = connectQueueRedis(config, 'worker', logger)
  checkEvictionPolicy(connection, queueLocation(config), logger)
  const worker = new Worker(
    QUEUE_NAME,
    async (job: Job) => {
      let data: unknown
      try {
        data = parseJob(job.name, job.data)
      } catch (error) {
        if (error instanceof JobInputError) throw new UnrecoverableError(error.message)
        throw error
      }
      const handler = handlers[job.name as JobName] as JobHandler<JobName>
      return handler(data as never, job.id ?? '')
    },
    {
      connection,
      prefix: queuePrefix(config),
      concurrency: config.jobs.workerConcurrency,
      lockDuration: config.jobs.lockMs,
      stalledInterval: config.jobs.stalledIntervalMs,
    },
  )
  // connection errors are reported once by the connection's listener; a worker with no 'error' listener would throw
  worker.on('error', () => {})
  worker.on('failed', (job, error) => {
    if (!job) return
    const final = job.attemptsMade >= (job.opts.attempts ?? 1) || error instanceof UnrecoverableError
    logger.warn(
      `jobs: ${job.name} ${job.id} failed (attempt ${job.attemptsMade} of ${job.opts.attempts ?? 1}): ${error.message}` +
        (final ? '; no more attempts: kept in the failed set' : '; retrying with backoff'),
    )
  })
  return {
    worker,
    async close(graceMs = 10_000) {
      // Without Redis no job in hand can complete (completion is a Redis write): no reason to wait.
      // (A second worker.close() returns the first one's promise: a force close must be the first.)
      const finished =
        connection.status === 'ready' ? await within(worker.close(), graceMs) : await within(worker.close(true), 1_000)
      if (!finished) {
        logger.warn(
          `jobs: the worker did not stop in time (jobs still running, or Redis unreachable): stopping without ` +
            'them (they run again after the stalled check)',
        )
        // its connections closed under it: whatever it still waits for fails at once
        await within(worker.disconnect(), 1_000)
      }
      connection.disconnect()
    },
  }
}

/** Whether `promise` settled within `ms` (its rejection counts as settled). */
async function within(promise: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined
  const late = new Promise<false>((resolve) => {
    timer = setTimeout(() => resolve(false), ms)
  })
  try {
    return await Promise.race([
      promise.then(
        () => true,
        () => true,
      ),
      late,
    ])
  } finally {
    clearTimeout(timer)
  }
}
