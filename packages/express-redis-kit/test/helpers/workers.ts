import { type ChildProcess, fork } from 'node:child_process'
import { once } from 'node:events'
import { Agent, get } from 'node:http'
import { fileURLToPath } from 'node:url'
import type { Express } from 'express'
import type { Algorithm, Duration, RateLimitOptions } from '../../src/index.js'

/**
 * One limiter a worker mounts on `GET <path>`; every worker given the same list counts together.
 * Either `limit` and `windowMs`, or `limits`; the other options are passed through as given.
 */
export interface WorkerLimiter extends Pick<RateLimitOptions, 'limits' | 'blockDuration' | 'localBlockCache' | 'mode'> {
  path: string
  algorithm: Algorithm
  /** Shared by every worker, so that all of them count the same Redis key. */
  prefix: string
  limit?: number
  windowMs?: Duration
  cost?: number
}

/** A child process running its own Express app and its own Redis connection. */
export interface Worker {
  port: number
  child: ChildProcess
}

/** What a worker sends its parent once it listens. */
export interface WorkerReady {
  type: 'ready'
  port: number
}

const packageRoot = fileURLToPath(new URL('../..', import.meta.url))

/**
 * Forks `count` workers (`node --import tsx <entry> <JSON of argument>`), each with the
 * parent's environment (so `REDIS_MODE`, `REDIS_URL` and `CLUSTER_NODES` carry over), and
 * resolves once every one of them reports `{ type: 'ready', port }`. If one fails, the
 * others are stopped.
 */
export async function forkWorkers(entry: URL, argument: unknown, count: number): Promise<Worker[]> {
  const started = await Promise.allSettled(Array.from({ length: count }, () => forkWorker(entry, argument)))
  const workers = started.flatMap((result) => (result.status === 'fulfilled' ? [result.value] : []))
  const failure = started.find((result) => result.status === 'rejected')
  if (failure) {
    await stopWorkers(workers)
    throw failure.reason
  }
  return workers
}

/** Rate-limit workers (rate-limit-worker.ts), each mounting `limiters`. */
export function startWorkers(count: number, limiters: WorkerLimiter[]): Promise<Worker[]> {
  return forkWorkers(new URL('./rate-limit-worker.ts', import.meta.url), limiters, count)
}

function forkWorker(entry: URL, argument: unknown, readyWithinMs = 30_000): Promise<Worker> {
  const name = fileURLToPath(entry).split('/').pop()
  const child = fork(fileURLToPath(entry), [JSON.stringify(argument)], {
    cwd: packageRoot,
    env: process.env,
    execArgv: ['--import', 'tsx'],
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  })
  return new Promise<Worker>((resolve, reject) => {
    const fail = (error: Error): void => {
      clearTimeout(timer)
      child.off('exit', onExit)
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
      reject(error)
    }
    const onExit = (code: number | null, signal: string | null): void =>
      fail(new Error(`a worker (${name}) exited (${code ?? signal}) before it listened`))
    const timer = setTimeout(
      () => fail(new Error(`a worker (${name}) did not listen within ${readyWithinMs} ms`)),
      readyWithinMs,
    )
    child.once('exit', onExit)
    child.once('error', fail)
    child.on('message', (message: WorkerReady) => {
      if (message?.type !== 'ready') return
      clearTimeout(timer)
      child.off('exit', onExit)
      resolve({ port: message.port, child })
    })
  })
}

/** Stops every worker (SIGTERM, then SIGKILL after 5 s) and waits for it to exit. */
export async function stopWorkers(workers: Worker[]): Promise<void> {
  await Promise.all(
    workers.map(async ({ child }) => {
      if (child.exitCode !== null || child.signalCode !== null) return
      const exited = once(child, 'exit')
      child.kill('SIGTERM')
      const force = setTimeout(() => child.kill('SIGKILL'), 5_000)
      await exited
      clearTimeout(force)
    }),
  )
}

/**
 * Sends `perWorker` GET requests to `path` on every worker, all issued in one
 * synchronous loop (interleaved across the workers) before any answer is awaited,
 * each on its own socket. Resolves with every status code once all have answered.
 */
export async function fireAtOnce(workers: Worker[], path: string, perWorker: number): Promise<number[]> {
  const agent = new Agent({ keepAlive: true, maxSockets: Number.POSITIVE_INFINITY })
  const pending: Promise<number>[] = []
  for (let i = 0; i < perWorker; i++) {
    for (const { port } of workers) pending.push(getStatus(agent, port, path))
  }
  try {
    return await Promise.all(pending)
  } finally {
    agent.destroy()
  }
}

function getStatus(agent: Agent, port: number, path: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = get({ host: '127.0.0.1', port, path, agent }, (res) => {
      res.resume()
      res.once('error', reject)
      res.once('end', () => resolve(res.statusCode ?? 0))
    })
    req.once('error', reject)
  })
}

/** Counts each status code: `{ 200: 100, 429: 400 }`. */
export function countStatuses(statuses: number[]): Record<number, number> {
  const counts: Record<number, number> = {}
  for (const status of statuses) counts[status] = (counts[status] ?? 0) + 1
  return counts
}

/**
 * The child side: listens on an ephemeral loopback port, reports it to the parent over
 * IPC, and on SIGTERM or when the parent goes away closes the server and `client`, then exits.
 */
export function serveWorker(app: Express, client: { close(): Promise<unknown> }): void {
  const server = app.listen(0, '127.0.0.1', () => {
    const { port } = server.address() as { port: number }
    const ready: WorkerReady = { type: 'ready', port }
    process.send?.(ready)
  })
  let stopping = false
  const shutdown = async (): Promise<void> => {
    if (stopping) return
    stopping = true
    server.closeAllConnections()
    server.close()
    try {
      await client.close()
    } finally {
      process.exit(0)
    }
  }
  process.on('SIGTERM', () => void shutdown())
  process.on('disconnect', () => void shutdown())
}
