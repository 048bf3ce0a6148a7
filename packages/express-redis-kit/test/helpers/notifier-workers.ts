import type { Duration } from '../../src/index.js'
import { forkWorkers, stopWorkers, type Worker } from './workers.js'

export { stopWorkers }

/*
 * Worker processes for the notifier's multi-process tests: each runs its own notifier on
 * its own Redis connection (single or Cluster, per REDIS_MODE), subscribes to one channel
 * and reports every handler call to the parent over IPC; see notifier-worker.ts.
 */

/** What a worker subscribes to, and how its handler behaves. */
export interface NotifierWorkerConfig {
  mode: 'pubsub' | 'durable'
  prefix: string
  channel: string
  group?: string
  claimIdle?: Duration
  batchSize?: number
  /** How long each handler call takes, in ms. Default 0. */
  delayMs?: number
  /**
   * `'hang'`: the handler reports the message and never finishes (it holds it unacknowledged);
   * `'exit'`: the handler reports the message, then the process exits (a crash mid-handler).
   */
  behaviour?: 'normal' | 'hang' | 'exit'
}

/** A handler call a worker reported. */
export interface WorkerReceipt {
  pid: number
  payload: unknown
  id: string
  deliveries: number
}

/** What a worker sends its parent. */
export type NotifierWorkerMessage =
  | { type: 'ready'; port: number }
  | ({ type: 'received' } & WorkerReceipt)
  | { type: 'log'; level: 'warn' | 'error'; message: string }

/** A worker process and what it reported so far. */
export interface NotifierWorker extends Worker {
  received: WorkerReceipt[]
  logs: string[]
}

/**
 * Forks `count` notifier workers (notifier-worker.ts) and resolves once each has subscribed
 * and is told to go (its handler reports nothing before: nobody would listen yet).
 */
export async function startNotifierWorkers(count: number, config: NotifierWorkerConfig): Promise<NotifierWorker[]> {
  const workers = await forkWorkers(new URL('./notifier-worker.ts', import.meta.url), config, count)
  return workers.map((worker) => {
    const received: WorkerReceipt[] = []
    const logs: string[] = []
    worker.child.on('message', (message: NotifierWorkerMessage) => {
      if (message?.type === 'received') {
        const { type: _, ...receipt } = message
        received.push(receipt)
      } else if (message?.type === 'log') logs.push(`${message.level}: ${message.message}`)
    })
    worker.child.send({ type: 'go' })
    return { ...worker, received, logs }
  })
}
