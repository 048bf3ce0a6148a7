import { Agent, get } from 'node:http'
import { performance } from 'node:perf_hooks'
import type { Duration } from '../../src/index.js'
import { forkWorkers, stopWorkers, type Worker } from './workers.js'

export { stopWorkers }

/*
 * Worker processes for the cache's multi-process tests: each runs its own Express app
 * with its own Redis connection (single or Cluster, per REDIS_MODE), see cache-worker.ts.
 */

/** Settings shared by every worker of a test. */
export interface CacheWorkerConfig {
  /** How long the origin (handler or loader) takes. */
  delayMs: number
  /** The caches' lockTimeout. */
  lockTimeout: Duration
}

/** A worker process: its port, and the origin runs it reported over IPC. */
export type CacheWorker = Worker

/** What a worker sends its parent. */
export type CacheWorkerMessage = { type: 'ready'; port: number } | { type: 'origin'; prefix: string; run: number }

/** Forks `count` cache workers (cache-worker.ts) and resolves once every one listens. */
export function startCacheWorkers(count: number, config: CacheWorkerConfig): Promise<CacheWorker[]> {
  return forkWorkers(new URL('./cache-worker.ts', import.meta.url), config, count)
}

/** Resolves with the next origin run a worker reports for `prefix`. */
export function nextOriginRun(worker: CacheWorker, prefix: string): Promise<number> {
  return new Promise((resolve) => {
    const onMessage = (message: CacheWorkerMessage) => {
      if (message?.type !== 'origin' || message.prefix !== prefix) return
      worker.child.off('message', onMessage)
      resolve(message.run)
    }
    worker.child.on('message', onMessage)
  })
}

export interface WorkerAnswer {
  status: number
  xCache: string | undefined
  cacheStatus: string | undefined
  body: string
  ms: number
}

/** One GET to a worker, each on its own socket of `agent` (a new connection when none is given). */
export function getFrom(
  worker: CacheWorker,
  path: string,
  headers: Record<string, string>,
  agent: Agent | false = false,
): Promise<WorkerAnswer> {
  const started = performance.now()
  return new Promise((resolve, reject) => {
    // Every worker sees the one Host of the app, as behind a load balancer (the cache keys on it).
    const req = get(
      { host: '127.0.0.1', port: worker.port, path, headers: { host: 'app.test', ...headers }, agent },
      (res) => {
        const chunks: Buffer[] = []
        res.on('data', (chunk: Buffer) => chunks.push(chunk))
        res.once('error', reject)
        res.once('end', () =>
          resolve({
            status: res.statusCode ?? 0,
            xCache: res.headers['x-cache'] as string | undefined,
            cacheStatus: res.headers['cache-status'] as string | undefined,
            body: Buffer.concat(chunks).toString(),
            ms: performance.now() - started,
          }),
        )
      },
    )
    req.once('error', reject)
  })
}

/**
 * Sends `perWorker` GETs of `path` to every worker, all issued in one synchronous loop
 * (interleaved across the workers) before any answer is awaited, each on its own socket.
 */
export async function fireAtOnce(
  workers: CacheWorker[],
  path: string,
  perWorker: number,
  headers: Record<string, string>,
): Promise<WorkerAnswer[]> {
  const agent = new Agent({ keepAlive: true, maxSockets: Number.POSITIVE_INFINITY })
  const pending: Promise<WorkerAnswer>[] = []
  for (let i = 0; i < perWorker; i++) {
    for (const worker of workers) pending.push(getFrom(worker, path, headers, agent))
  }
  try {
    return await Promise.all(pending)
  } finally {
    agent.destroy()
  }
}
