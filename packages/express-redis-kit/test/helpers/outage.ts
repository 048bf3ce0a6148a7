import { spawn } from 'node:child_process'
import { once } from 'node:events'
import type { Server } from 'node:http'
import { setTimeout as sleep } from 'node:timers/promises'
import type { Express } from 'express'
import { createClient } from 'redis'
import type { Logger } from '../../src/index.js'
import { type DisposableRedis, redisAddresses } from './redis.js'

/** A logger that keeps every message and detail it is given. */
export interface RecordingLogger extends Logger {
  warnings: unknown[][]
  errors: unknown[][]
  /** Every message and detail as text, errors with their message, stack and causes. */
  text(): string
}

export function recordingLogger(): RecordingLogger {
  const warnings: unknown[][] = []
  const errors: unknown[][] = []
  return {
    warnings,
    errors,
    warn: (...args: unknown[]) => void warnings.push(args),
    error: (...args: unknown[]) => void errors.push(args),
    text: () => [...warnings, ...errors].flat().map(describeDeep).join('\n'),
  }
}

/** A value as text, following an error's `cause` chain (what a log shipper would record). */
export function describeDeep(value: unknown): string {
  if (value instanceof Error) {
    const fields = JSON.stringify({ ...value })
    return `${value.name}: ${value.message}\n${value.stack ?? ''}\n${fields}\ncause: ${describeDeep(value.cause)}`
  }
  if (typeof value === 'string') return value
  try {
    return JSON.stringify(value) ?? String(value)
  } catch {
    return String(value)
  }
}

export async function waitUntil(condition: () => boolean, withinMs = 10_000, what = 'the condition'): Promise<void> {
  const deadline = Date.now() + withinMs
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${withinMs} ms waiting for ${what}`)
    await sleep(20)
  }
}

/** Listens on an ephemeral loopback port (one server for many requests, unlike `request(app)`). */
export async function listen(app: Express): Promise<Server> {
  const server = app.listen(0, '127.0.0.1')
  await once(server, 'listening')
  return server
}

export async function closeServer(server: Server | undefined): Promise<void> {
  if (!server?.listening) return
  server.closeAllConnections()
  await new Promise((resolve) => server.close(resolve))
}

/**
 * Starts a redis-server on a given port (e.g. again on the port of a `DisposableRedis`
 * that was killed, so that its clients reconnect) and resolves once it answers.
 */
export async function startRedisOnPort(port: number): Promise<DisposableRedis> {
  const server = spawn(
    'redis-server',
    ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'],
    { stdio: 'ignore' },
  )
  const url = `redis://127.0.0.1:${port}`
  await answering(url, 5_000)
  return {
    port,
    url,
    async stop() {
      if (server.exitCode !== null || server.signalCode !== null) return
      const exited = once(server, 'exit')
      server.kill('SIGKILL')
      await exited
    },
  }
}

/** Resolves once a fresh connection to `url` gets an answer to PING. */
async function answering(url: string, withinMs: number): Promise<void> {
  const deadline = Date.now() + withinMs
  for (;;) {
    const probe = createClient({ url, socket: { reconnectStrategy: false, connectTimeout: 1_000 } })
    probe.on('error', () => {})
    try {
      await probe.connect()
      await probe.ping()
      probe.destroy()
      return
    } catch (error) {
      if (probe.isOpen) probe.destroy()
      if (Date.now() > deadline) throw new Error(`no Redis answered at ${url} within ${withinMs} ms`, { cause: error })
      await sleep(50)
    }
  }
}

/**
 * Waits until `pausedUntil` (a `Date.now()` value) has passed and every Redis of the
 * suite answers PING again, so that a `pauseRedis` never leaks into later tests.
 */
export async function waitForRedisResume(pausedUntil: number): Promise<void> {
  const left = pausedUntil - Date.now()
  if (left > 0) await sleep(left)
  await Promise.all(redisAddresses().map(({ host, port }) => answering(`redis://${host}:${port}`, 10_000)))
}
