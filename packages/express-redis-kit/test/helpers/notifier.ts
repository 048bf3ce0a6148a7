import { execFile } from 'node:child_process'
import { createClient } from 'redis'
import type { EventHandler, EventMeta } from '../../src/index.js'
import { clusterSlot } from '../../src/shared/redis.js'
import { mode, type RedisClient, redisAddresses } from './redis.js'

/*
 * Helpers of the notifier tests (test/notifier): handlers that record what they get, raw
 * Redis access to publish what the notifier would not, and killing subscriber connections.
 */

/** One handler call. */
export interface Delivery<T = unknown> {
  event: T
  meta: EventMeta
}

/** A handler that records every call; `events()` lists the events in the order handled. */
export interface Inbox<T = unknown> {
  handler: EventHandler<T>
  deliveries: Delivery<T>[]
  events(): T[]
}

export function inbox<T = unknown>(): Inbox<T> {
  const deliveries: Delivery<T>[] = []
  return {
    deliveries,
    handler: (event, meta) => {
      deliveries.push({ event, meta })
    },
    events: () => deliveries.map((delivery) => delivery.event),
  }
}

/** The error `work` throws synchronously or rejects with; fails when it succeeds. */
export async function failureOf(work: () => unknown): Promise<Error & { code?: string; status?: number }> {
  let outcome: unknown
  try {
    outcome = await work()
  } catch (error) {
    return error as Error & { code?: string }
  }
  throw new Error(`expected a failure, got ${JSON.stringify(outcome) ?? String(outcome)}`)
}

/**
 * Publishes `message` as is on the Redis channel `name` (prefix included), as the
 * notifier would on this Redis: `PUBLISH`, or `SPUBLISH` (sharded) on a Cluster.
 */
export async function rawPublish(client: RedisClient, name: string, message: string): Promise<void> {
  const commands = client as unknown as {
    publish(channel: string, message: string): Promise<number>
    sPublish(channel: string, message: string): Promise<number>
  }
  if (mode === 'cluster') await commands.sPublish(name, message)
  else await commands.publish(name, message)
}

/** Runs `redis-cli -p <port> ...args` and resolves with its output. */
export function redisCli(port: number, args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile('redis-cli', ['-p', String(port), ...args], (error, stdout) => (error ? reject(error) : resolve(stdout)))
  })
}

/** `CLIENT KILL TYPE pubsub` on the suite's Redis, or on every master of the Cluster at once. */
export async function killPubSubConnections(): Promise<void> {
  await Promise.all(redisAddresses().map(({ port }) => redisCli(port, ['CLIENT', 'KILL', 'TYPE', 'pubsub'])))
}

/** One line of `CLIENT LIST`, as its `name=value` fields, and `node`: the port of the Redis that listed it. */
export type ClientInfo = Record<string, string>

/** `CLIENT LIST` of every Redis of the suite (one, or each master). */
export async function clientList(): Promise<ClientInfo[]> {
  const clients: ClientInfo[] = []
  for (const { host, port } of redisAddresses()) {
    const admin = createClient({ socket: { host, port } })
    admin.on('error', () => {})
    await admin.connect()
    try {
      const text = String(await admin.sendCommand(['CLIENT', 'LIST']))
      for (const line of text.trim().split('\n')) {
        const fields = line.split(' ').map((field) => field.split('=', 2) as [string, string])
        clients.push({ ...Object.fromEntries(fields), node: String(port) })
      }
    } finally {
      admin.destroy()
    }
  }
  return clients
}

/** Whether a `CLIENT LIST` line is a connection in subscriber state. */
export function isSubscriber(info: ClientInfo): boolean {
  return (info.flags ?? '').includes('P') || Number(info.sub) > 0 || Number(info.ssub) > 0
}

/**
 * The `CLIENT ID` of every connection `client` has open: its own, or (on a Cluster) the
 * one of each master it has opened, as `<port>:<id>` so that ids of different nodes differ.
 */
export async function connectionIds(client: RedisClient): Promise<string[]> {
  if (mode !== 'cluster') {
    const single = client as unknown as { sendCommand(args: string[]): Promise<unknown> }
    return [`${redisAddresses()[0]?.port}:${await single.sendCommand(['CLIENT', 'ID'])}`]
  }
  const cluster = client as unknown as {
    masters: { port: number; client?: { sendCommand(args: string[]): Promise<unknown> } }[]
  }
  const ids: string[] = []
  for (const master of cluster.masters) {
    if (master.client !== undefined) ids.push(`${master.port}:${await master.client.sendCommand(['CLIENT', 'ID'])}`)
  }
  return ids
}

/** Collects `unhandledRejection`s from `start()` to `stop()`. */
export function unhandledRejections(): { reasons: unknown[]; start(): void; stop(): void } {
  const reasons: unknown[] = []
  const record = (reason: unknown): void => {
    reasons.push(reason)
  }
  return {
    reasons,
    start: () => process.on('unhandledRejection', record),
    stop: () => process.off('unhandledRejection', record),
  }
}

/** A parse function that validates like a zod schema's `parse`: returns the value or throws. */
export function parseUser(payload: unknown): { name: string } {
  if (typeof payload === 'object' && payload !== null && typeof (payload as { name?: unknown }).name === 'string') {
    return { name: (payload as { name: string }).name }
  }
  const error = new Error(
    JSON.stringify([{ code: 'invalid_type', expected: 'string', path: ['name'], message: 'Required' }]),
  )
  error.name = 'ZodError'
  throw error
}

type Slots = { slots: ({ master: { port: number } } | undefined)[] }

/** The port of the master that serves `key`'s slot, as `client` sees it. */
export function masterPort(client: RedisClient, key: string): number {
  const port = (client as unknown as Slots).slots[clusterSlot(key)]?.master.port
  if (port === undefined) throw new Error(`no master known for ${key}`)
  return port
}

/** Channel names whose prefixed keys cover every master of `client` (at least `perMaster` on each). */
export function channelsOnEveryMaster(client: RedisClient, prefix: string, perMaster = 2): Map<string, number> {
  const masters = new Set((client as unknown as Slots).slots.map((slot) => slot?.master.port))
  const channels = new Map<string, number>()
  const counts = new Map<number, number>()
  for (let i = 0; channels.size < masters.size * perMaster && i < 10_000; i++) {
    const channel = `channel-${i}`
    const port = masterPort(client, prefix + channel)
    if ((counts.get(port) ?? 0) >= perMaster) continue
    counts.set(port, (counts.get(port) ?? 0) + 1)
    channels.set(channel, port)
  }
  return channels
}
