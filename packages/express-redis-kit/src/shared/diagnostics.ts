/**
 * What the kit decides, published on Node's `diagnostics_channel` (see the README's
 * "Observability"). Nothing is built unless a channel has subscribers: every publisher checks
 * `hasSubscribers` first, so an app that does not listen pays one property read per decision.
 */
import diagnostics from 'node:diagnostics_channel'

/** The channel names, for `diagnostics_channel.subscribe(name, listener)`. */
export const CHANNELS = {
  /** {@link RateLimitEvent}: one message per request the limiter decided on. */
  rateLimit: 'express-redis-kit:rate-limit',
  /** {@link SessionEvent}: one message per session load, save or destroy. */
  session: 'express-redis-kit:session',
  /** {@link CacheEvent}: lookups, fills and invalidations of `cacheResponse` and `cached()`. */
  cache: 'express-redis-kit:cache',
  /** {@link NotifierEvent}: messages published, delivered, dropped, reclaimed. */
  notifier: 'express-redis-kit:notifier',
  /**
   * A `TracingChannel` (`start`, `end`, `asyncStart`, `asyncEnd`, `error` sub-channels named
   * `tracing:express-redis-kit:redis:<event>`) around every Redis round trip the kit makes,
   * with a {@link RedisCallContext}: what an APM needs to make spans without patching.
   */
  redis: 'express-redis-kit:redis',
} as const

/** A rate-limit decision (channel {@link CHANNELS.rateLimit}). */
export interface RateLimitEvent {
  /**
   * `'allowed'` or `'limited'` (in `'shadow'` mode: would have been limited, and was let
   * through), or `'error'`: Redis could not decide and `onRedisError` (`'allow'` or `'block'`) applied.
   */
  result: 'allowed' | 'limited' | 'error'
  /**
   * Who decided: `'redis'`; `'local-block'`, the local block cache (no Redis command); `'local'`,
   * the in-process limiter of `onRedisError: 'local'`; `'static'`, a limit of 0 (nothing passes,
   * Redis is not asked); `'none'` for a `result: 'error'`.
   */
  source: 'redis' | 'local-block' | 'local' | 'static' | 'none'
  /** `'enforce'` or `'shadow'` (the limiter's `mode`). */
  mode: 'enforce' | 'shadow'
  /** The limiter's Redis key prefix: which limiter decided. */
  prefix: string
  /** The client key, as `keyGenerator` made it. */
  key: string
  /** The binding window's policy name (the draft-8 `RateLimit-Policy` name, e.g. `100-in-1min`). */
  policy: string
  limit: number
  remaining: number
  /** Milliseconds until the binding window lets the client in again. */
  resetMs: number
  /** Only for `result: 'error'`: what `onRedisError` did. */
  onRedisError?: 'allow' | 'block'
  /** Why Redis did not decide (`result: 'error'`, or `source: 'local'` right after a failure). */
  error?: unknown
}

/** A session operation (channel {@link CHANNELS.session}). Never carries a token or a handle. */
export interface SessionEvent {
  operation: 'load' | 'save' | 'destroy'
  /**
   * `load`: `'loaded'`, `'not-found'` (a cookie naming no session: unknown, forged or already
   * ended), `'expired-idle'`, `'expired-absolute'`; `save`: `'saved'`; `destroy`: `'destroyed'`;
   * any: `'error'` (the store failed; `error` says why).
   */
  result: 'loaded' | 'not-found' | 'expired-idle' | 'expired-absolute' | 'saved' | 'destroyed' | 'error'
  /** The session's user (`userKey`), when known. */
  userId?: string
  error?: unknown
}

/** A cache decision (channel {@link CHANNELS.cache}). */
export interface CacheEvent {
  /** `'cacheResponse'`, `'cached'` (the read-through helper), or `'invalidateTags'` (the function). */
  source: 'cacheResponse' | 'cached' | 'invalidateTags'
  /**
   * `'hit'`, `'stale'` (served stale), `'miss'`, `'bypass'` (`reason`), `'waited'` (for another
   * request's fill: `waitedMs`), `'stored'`, `'refused'` (a fill not stored: `reason`),
   * `'invalidated'` (`tags`, `count`), `'error'` (Redis failed: answered without the cache).
   */
  result: 'hit' | 'stale' | 'miss' | 'bypass' | 'waited' | 'stored' | 'refused' | 'invalidated' | 'error'
  /** The Redis key of the entry (the entry key of a response, the key given to `cached()`). */
  key?: string
  /** Why a request bypassed or a fill was refused, e.g. `authorization`, `session`, `status`, `no-store`. */
  reason?: string
  waitedMs?: number
  tags?: string[]
  /** `invalidated`: how many entries were removed. */
  count?: number
  /** `hit`: served from the local cache (`localCache`), with no Redis command. */
  local?: true
  error?: unknown
}

/** A notifier message event (channel {@link CHANNELS.notifier}). */
export interface NotifierEvent {
  /**
   * `published`; `delivered` (a handler resolved), `redelivered` (the same, for a durable message
   * delivered before); `dropped` (`reason`); `reclaimed` (durable: `count` messages idle past
   * `claimIdle` taken from a dead or failing consumer); `trimmed` (messages `MAXLEN ~` removed
   * before they were read: durable `count`, or a fan-out gap); `lag` (durable: `lag`, the entries
   * the group has not read yet, as `XINFO GROUPS` reports it each claim round).
   */
  result: 'published' | 'delivered' | 'redelivered' | 'dropped' | 'reclaimed' | 'trimmed' | 'lag'
  /** The channel, without the prefix. */
  channel: string
  /** The message id (`meta.id`), when known. */
  id?: string
  mode: 'pubsub' | 'durable' | 'fanout'
  /**
   * `dropped`: `malformed` (not an envelope of this channel), `parse` (`parse` threw), `handler`
   * (pub/sub and fan-out: the handler threw; the message is not retried), `max-deliveries` (durable).
   */
  reason?: string
  lag?: number
  count?: number
}

/** The context of a traced Redis round trip (channel {@link CHANNELS.redis}). */
export interface RedisCallContext {
  /** What the kit was doing, e.g. `rateLimit.decide`, `session.read`, `cache.lookup`. */
  operation: string
  /** The Redis command sent, e.g. `EVALSHA`, `HGETALL`. */
  command: string
  /** Set by the tracing channel: the reply, or the error. */
  result?: unknown
  error?: unknown
}

export const rateLimitChannel = diagnostics.channel(CHANNELS.rateLimit)
export const sessionChannel = diagnostics.channel(CHANNELS.session)
export const cacheChannel = diagnostics.channel(CHANNELS.cache)
export const notifierChannel = diagnostics.channel(CHANNELS.notifier)
/**
 * What the kit uses of the Redis `TracingChannel`, as a type of its own: @types/node swapped
 * `TracingChannel`'s type parameters during 26.x (store then context before, context then
 * store after), so a published declaration that spells them out fails to compile against one
 * side or the other (TS2344 without `skipLibCheck`).
 */
interface RedisTracing {
  readonly hasSubscribers: boolean
  tracePromise<T>(fn: () => Promise<T>, context: RedisCallContext): Promise<T>
  subscribe(handlers: RedisTracingHandlers): void
  unsubscribe(handlers: RedisTracingHandlers): void
}

/** The handlers of the Redis `TracingChannel`'s sub-channels, each given the call's context. */
interface RedisTracingHandlers {
  start(context: RedisCallContext): void
  end(context: RedisCallContext): void
  asyncStart(context: RedisCallContext): void
  asyncEnd(context: RedisCallContext): void
  error(context: RedisCallContext): void
}

export const redisTracing: RedisTracing = diagnostics.tracingChannel(CHANNELS.redis)

/** Publishes a cache event if anyone listens (the event is built only then). */
export function publishCache(event: () => CacheEvent): void {
  if (cacheChannel.hasSubscribers) cacheChannel.publish(event())
}

/** Publishes a session event if anyone listens. */
export function publishSession(event: () => SessionEvent): void {
  if (sessionChannel.hasSubscribers) sessionChannel.publish(event())
}

/** Publishes a notifier event if anyone listens. */
export function publishNotifier(event: () => NotifierEvent): void {
  if (notifierChannel.hasSubscribers) notifierChannel.publish(event())
}
