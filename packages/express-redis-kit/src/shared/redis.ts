import { createHash } from 'node:crypto'
import {
  type NodeClient,
  nodeAnswered,
  nodeReady,
  nodeTimedOut,
  refreshTopology,
  slotNode,
  untilReady,
  wasReady,
} from './cluster-health.js'

export { clusterSlot } from './cluster-health.js'

import { type RedisCallContext, redisTracing } from './diagnostics.js'
import { RedisKitError } from './errors.js'

/**
 * A connected node-redis client (`createClient()`) or Redis Cluster client (`createCluster()`),
 * node-redis 5.0.1 or later (5 or 6). Typed by what express-redis-kit calls, so that every
 * client and cluster fits whatever its modules, scripts, RESP version or type mapping.
 * express-redis-kit never connects, closes or reconfigures it. ioredis is not supported.
 */
export interface RedisClient {
  /** Whether the client was connected and not closed. */
  readonly isOpen: boolean
  /** Whether commands can be sent now (node-redis 5 clusters do not have it: then `isOpen` says). */
  readonly isReady?: boolean
  // biome-ignore-start lint/suspicious/noExplicitAny: node-redis's signatures vary with modules, scripts, RESP and type mapping.
  evalSha(...args: any[]): Promise<unknown>
  eval(...args: any[]): Promise<unknown>
  get(...args: any[]): Promise<unknown>
  incr(...args: any[]): Promise<unknown>
  del(...args: any[]): Promise<unknown>
  unlink(...args: any[]): Promise<unknown>
  hGetAll(...args: any[]): Promise<unknown>
  hmGet(...args: any[]): Promise<unknown>
  zRem(...args: any[]): Promise<unknown>
  /** A new connection with the same options (the notifier's subscriber and readers). */
  duplicate(...args: any[]): unknown
  /** The same client answering with other types (the cache reads bodies as Buffers). */
  withTypeMapping(...args: any[]): unknown
  /** The same client with other command options (rateLimit's binary decisions). */
  withCommandOptions(...args: any[]): unknown
  // biome-ignore-end lint/suspicious/noExplicitAny: -
}

interface ScriptOptions {
  keys: string[]
  arguments: (string | Buffer)[]
}

/** The calls express-redis-kit makes, common to a client and a cluster. */
export interface ScriptCapable {
  readonly isOpen: boolean
  readonly isReady?: boolean
  evalSha(sha1: string, options: ScriptOptions): Promise<unknown>
  eval(script: string, options: ScriptOptions): Promise<unknown>
  del(keys: string | string[]): Promise<number>
  zRem(key: string, members: string | string[]): Promise<number>
  hmGet(key: string, fields: string[]): Promise<(string | null)[]>
  hGetAll(key: string): Promise<Record<string, string>>
  get(key: string): Promise<string | Buffer | null>
  incr(key: string): Promise<number>
  unlink(keys: string | string[]): Promise<number>
}

/** A Lua script whose SHA1 is computed once, run with `EVALSHA` and `EVAL` only after `NOSCRIPT`. */
export class Script {
  readonly sha1: string

  /** The traced context of its runs (see diagnostics.ts). */
  readonly #call: RedisCallContext

  /** `operation` names what the script does in traces, e.g. `rateLimit.decide`. */
  constructor(
    readonly source: string,
    operation: string,
  ) {
    this.sha1 = createHash('sha1').update(source).digest('hex')
    this.#call = { operation, command: 'EVALSHA' }
  }

  /**
   * Runs the script in one round trip. Rejects with `ERK_REDIS_UNAVAILABLE` when
   * the client is not ready (so nothing waits in node-redis's offline queue), on
   * any Redis error, and when no reply came within `timeoutMs`. Never retries
   * after an error other than `NOSCRIPT`: the script may have run, and a retry
   * would count a request twice. `onLateReply` receives a reply that came after the
   * timeout (the script did run), so that the caller can undo what it took.
   */
  run(
    client: RedisClient,
    keys: string[],
    args: (string | Buffer)[],
    timeoutMs: number,
    onLateReply?: (reply: unknown) => void,
  ): Promise<unknown> {
    const options = { keys, arguments: args }
    return runCommand(
      client,
      keys[0] ?? '',
      (redis) =>
        redis.evalSha(this.sha1, options).catch((error: unknown) => {
          if (error instanceof Error && error.message.startsWith('NOSCRIPT')) return redis.eval(this.source, options)
          throw error
        }),
      timeoutMs,
      onLateReply,
      this.#call,
    )
  }
}

const UNNAMED_CALL: RedisCallContext = { operation: 'command', command: 'unknown' }

/**
 * Sends `command` (about `key`) only if the connection that would carry it is ready, so
 * that nothing waits in node-redis's offline queue, and gives up after `timeoutMs`;
 * every failure becomes `ERK_REDIS_UNAVAILABLE`. On a cluster, the connection is the one to
 * the master of `key`'s slot (see cluster-health.ts): one still opening (a replica just
 * promoted) is waited for within `timeoutMs`; one that is down, or that keeps timing out (a
 * frozen master), makes the cluster ask for its topology again. `call` names the round trip
 * for the `express-redis-kit:redis` tracing channel.
 */
export function runCommand<T>(
  client: RedisClient,
  key: string,
  command: (redis: ScriptCapable) => Promise<T>,
  timeoutMs: number,
  onLateReply?: (reply: T) => void,
  call: RedisCallContext = UNNAMED_CALL,
): Promise<T> {
  const redis = client as unknown as ScriptCapable
  if (redisTracing.hasSubscribers) {
    // Each traced round trip gets its own context object: subscribers keep state on it.
    const context = { ...call }
    const run = command
    command = (connection) => redisTracing.tracePromise(() => run(connection), context)
  }
  const node = slotNode(redis, key)
  // A cluster is as ready as the node of the key's slot (its own isReady drops while it
  // rediscovers the topology, and node-redis 5 clusters have none): it must only be open.
  if (!(node === undefined ? (redis.isReady ?? redis.isOpen) : redis.isOpen))
    return Promise.reject(unavailable('the Redis client is not connected'))
  if (node === undefined) return withTimeout(command(redis), timeoutMs, onLateReply)
  if (node.isReady) {
    nodeReady(node)
    return withTimeout(answered(command(redis), node), timeoutMs, onLateReply, () => nodeTimedOut(redis, node))
  }
  if (!wasReady(node)) {
    // A connection still opening (a replica promoted a moment ago): worth waiting for, within the timeout.
    const started = Date.now()
    return untilReady(node, timeoutMs).then((ready) => {
      if (!ready) {
        refreshTopology(redis, node)
        throw unavailable(`the Redis node of this key did not connect within ${timeoutMs} ms`)
      }
      return withTimeout(
        answered(command(redis), node),
        Math.max(1, timeoutMs - (Date.now() - started)),
        onLateReply,
        () => nodeTimedOut(redis, node),
      )
    })
  }
  // Down (killed, partitioned): fail at once, and let the cluster find the node's replacement.
  refreshTopology(redis, node)
  return Promise.reject(unavailable('the Redis node of this key is not connected'))
}

/** `command`, noting on its reply that its node answers. */
function answered<T>(command: Promise<T>, node: NodeClient): Promise<T> {
  return command.then((reply) => {
    nodeAnswered(node)
    return reply
  })
}

/**
 * Races `promise` against a timer; the loser's outcome is ignored (never unhandled),
 * except that a value arriving after the timeout goes to `onLateValue`.
 */
export function withTimeout<T>(
  promise: Promise<T>,
  timeoutMs: number,
  onLateValue?: (value: T) => void,
  onTimeout?: () => void,
): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    let timedOut = false
    const timer = setTimeout(() => {
      timedOut = true
      onTimeout?.()
      reject(unavailable(`Redis did not answer within ${timeoutMs} ms`))
    }, timeoutMs)
    promise.then(
      (value) => {
        clearTimeout(timer)
        if (timedOut) onLateValue?.(value)
        else resolve(value)
      },
      (error: unknown) => {
        clearTimeout(timer)
        reject(error instanceof RedisKitError ? error : unavailable('the Redis command failed', error))
      },
    )
  })
}

function unavailable(message: string, cause?: unknown): RedisKitError {
  const detail = cause instanceof Error ? `: ${cause.message}` : ''
  return new RedisKitError('ERK_REDIS_UNAVAILABLE', `express-redis-kit: ${message}${detail}`, {
    cause,
    status: 503,
  })
}

/** Whether `client` is a cluster client (`createCluster()`): it has a slot table. */
export function isCluster(client: RedisClient): boolean {
  return Array.isArray((client as { slots?: unknown }).slots)
}

/**
 * A connection of our own, duplicated from the user's client or cluster (theirs is never
 * reconfigured), for what must not run on it (subscriptions, blocking reads). Its errors go to
 * `onError`: an `error` event without a listener would crash the process. Not connected yet.
 */
export function duplicateConnection<T>(client: RedisClient, onError: (error: unknown) => void): T {
  const connection = (
    client as unknown as { duplicate(): { on(event: 'error', listener: (error: unknown) => void): unknown } }
  ).duplicate()
  connection.on('error', onError)
  return connection as T
}

/** Whether `value` looks like a node-redis client or cluster (checked once, at creation). */
export function isRedisClient(value: unknown): value is RedisClient {
  return (
    typeof value === 'object' &&
    value !== null &&
    typeof (value as ScriptCapable).evalSha === 'function' &&
    typeof (value as ScriptCapable).eval === 'function'
  )
}

const RAW_KEY_PART = /^[\x20-\x22\x24-\x7a\x7c\x7e]{1,200}$/

/**
 * Encodes a caller-controlled identifier (an IP, a user id, an API key...) for use
 * inside a Redis key and its `{hash tag}`. Short printable ASCII without `{`, `}`
 * or `#` is kept as is (readable in `redis-cli`); anything else (unicode, braces,
 * control characters, very long values) becomes `#` + its SHA-256 in base64url.
 * The mapping is injective: no raw part starts with `#`.
 */
export function encodeKeyPart(identifier: string): string {
  if (RAW_KEY_PART.test(identifier)) return identifier
  return `#${createHash('sha256').update(identifier).digest('base64url')}`
}
