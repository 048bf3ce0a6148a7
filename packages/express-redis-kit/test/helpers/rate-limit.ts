import { createHash } from 'node:crypto'
import { setTimeout as sleep } from 'node:timers/promises'
import type { Express } from 'express'
import { createClient, RESP_TYPES } from 'redis'
import request from 'supertest'
import type { Algorithm, RateLimitMiddleware } from '../../src/index.js'
import { type RedisClient, redisAddresses } from './redis.js'

/** Every algorithm, for suites that run once per algorithm. */
export const ALGORITHMS: readonly Algorithm[] = ['sliding-window', 'fixed-window', 'sliding-log', 'token-bucket']

export const DEFAULT_MESSAGE = 'Too many requests, please try again later.'

/**
 * The part of a client's Redis keys the spec gives for client key `key`, `<prefix>{<key>}`: the
 * key kept readable when it is short printable ASCII without `{`, `}` or `#`, otherwise `#` + its
 * SHA-256 in base64url (its block key adds `:block`). Written from the spec, not imported from
 * src, so that a change in src is caught.
 */
export function expectedClientTag(prefix: string, key: string): string {
  const readable = key.length <= 200 && /^[\x20-\x7e]+$/.test(key) && !/[{}#]/.test(key)
  const part = readable ? key : `#${createHash('sha256').update(key).digest('base64url')}`
  return `${prefix}{${part}}`
}

/** The Redis key the spec gives for the one window of client key `key` (sliding-window's end with `:sw`). */
export function expectedRedisKey(prefix: string, key: string, algorithm: Algorithm = 'sliding-window'): string {
  return `${expectedClientTag(prefix, key)}${algorithm === 'sliding-window' ? ':sw' : ''}`
}

/** What a sliding-window key holds (the README's data model): 32 bytes, four little-endian doubles. */
export interface SlidingWindowState {
  /** Start of the current fixed window (Redis ms). */
  start: number
  /** Counted in it. */
  count: number
  /** Counted in the window before it. */
  previous: number
  /** When the key expires (Redis ms): start + 2 windows. */
  expiresAt: number
}

/** The sliding-window key `key` decoded as the README documents it; undefined when it does not exist. */
export async function slidingWindowState(client: RedisClient, key: string): Promise<SlidingWindowState | undefined> {
  const binary = (
    client as unknown as { withTypeMapping(mapping: object): { get(key: string): Promise<Buffer | null> } }
  ).withTypeMapping({ [RESP_TYPES.BLOB_STRING]: Buffer })
  const value = await binary.get(key)
  if (value === null) return undefined
  if (value.length !== 32) throw new Error(`${key} holds ${value.length} bytes, not 32`)
  return {
    start: value.readDoubleLE(0),
    count: value.readDoubleLE(8),
    previous: value.readDoubleLE(16),
    expiresAt: value.readDoubleLE(24),
  }
}

/** The draft-8 partition key: the first 12 hex digits of SHA-256(key), base64-encoded. */
export function partitionKey(key: string): string {
  return Buffer.from(createHash('sha256').update(key).digest('hex').slice(0, 12)).toString('base64')
}

/** Quota used by `key` right now (0 when nothing is counted), read without counting. */
export async function usedBy(limiter: RateLimitMiddleware, key: string): Promise<number> {
  return (await limiter.getKey(key))?.used ?? 0
}

/**
 * Polls `read` until it returns `expected` or `withinMs` passes, and returns the last
 * value read (for requests given back after 'finish', which land shortly after the response).
 */
export async function settle<T>(read: () => Promise<T>, expected: T, withinMs = 1_000): Promise<T> {
  const deadline = Date.now() + withinMs
  let value = await read()
  while (value !== expected && Date.now() < deadline) {
    await sleep(15)
    value = await read()
  }
  return value
}

/** Sleeps until the wall-clock time `at` (ms since the epoch). */
export async function sleepUntil(at: number): Promise<void> {
  const left = at - Date.now()
  if (left > 0) await sleep(left)
}

/**
 * `INFO commandstats` calls per command, summed over every Redis of the suite (each cluster
 * master), or over `addresses`.
 */
export async function commandCalls(addresses = redisAddresses()): Promise<Map<string, number>> {
  const totals = new Map<string, number>()
  for (const address of addresses) {
    const admin = createClient({ socket: address })
    admin.on('error', () => {})
    await admin.connect()
    try {
      const info = String(await admin.sendCommand(['INFO', 'commandstats']))
      for (const match of info.matchAll(/^cmdstat_([^:]+):calls=(\d+)/gm)) {
        totals.set(match[1]!, (totals.get(match[1]!) ?? 0) + Number(match[2]))
      }
    } finally {
      admin.destroy()
    }
  }
  return totals
}

/** Runs a command on every Redis of the suite (each cluster master), or of `addresses`, e.g. `SCRIPT FLUSH`. */
export async function onEveryNode(command: string[], addresses = redisAddresses()): Promise<void> {
  for (const address of addresses) {
    const admin = createClient({ socket: address })
    admin.on('error', () => {})
    await admin.connect()
    try {
      await admin.sendCommand(command)
    } finally {
      admin.destroy()
    }
  }
}

/** Redis's clock in milliseconds (the clock the scripts use). */
export async function redisTimeMs(): Promise<number> {
  const [address] = redisAddresses()
  const admin = createClient({ socket: address! })
  admin.on('error', () => {})
  await admin.connect()
  try {
    const [seconds, micros] = (await admin.sendCommand(['TIME'])) as [string, string]
    return Number(seconds) * 1000 + Math.floor(Number(micros) / 1000)
  } finally {
    admin.destroy()
  }
}

/** A response with the client-clock interval in which the server handled the request. */
export interface TimedResponse {
  status: number
  /** Just before the request was sent: the server saw it no earlier. */
  sent: number
  /** Just after the response arrived: the server saw it no later. */
  done: number
}

/**
 * GETs `path` and tells when. Timing assertions use `sent` and `done` as bounds, so
 * that a slow, loaded machine delays requests without making a test fail wrongly.
 */
export async function timedGet(app: Express, path = '/'): Promise<TimedResponse> {
  const sent = Date.now()
  const response = await request(app).get(path)
  return { status: response.status, sent, done: Date.now() }
}
