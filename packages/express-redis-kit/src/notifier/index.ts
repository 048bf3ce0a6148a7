import { publishNotifier } from '../shared/diagnostics.js'
import { ArgumentError, OptionError, RedisKitError } from '../shared/errors.js'
import { isCluster, runCommand } from '../shared/redis.js'
import { DurableSubscription, ENTRY_FIELD } from './durable.js'
import { type EventHandler, type EventMeta, encodeEnvelope, Subscriber } from './envelope.js'
import {
  afterPosition,
  entryEnvelope,
  type FanoutCommands,
  FanoutSubscription,
  type GapInfo,
  parseStreamId,
  STREAM_ID_EXPECTED,
} from './fanout.js'
import { checkCallOptions, isValidName, NAME_EXPECTED, type NotifierOptions, parseNotifierOptions } from './options.js'
import { closedError, PubSubTransport } from './pubsub.js'

export type { Envelope, EventHandler, EventMeta } from './envelope.js'
export { compareStreamIds, type GapInfo } from './fanout.js'
export type { NotifierOptions } from './options.js'

/** Options of one `subscribe` call. */
export interface SubscribeOptions<T> {
  /**
   * Validates and converts the payload before the handler sees it; a message it throws on
   * is logged and dropped (acknowledged in durable mode). A zod schema's `parse` fits:
   * `{ parse: UserEvent.parse }`.
   * @default undefined (the payload as JSON gave it)
   */
  parse?: (payload: unknown) => T
  /**
   * Durable mode: the consumer group; each group gets every message once.
   * @default the notifier's `group`
   */
  group?: string
  /**
   * Fan-out mode: where the subscription starts. `'$'`: with the messages published once
   * `subscribe` resolved; `'0'`: with the oldest message the stream still holds; a stream
   * entry id (`meta.streamId`, e.g. `'1700000000000-0'`): with the messages after it (when some
   * of them were trimmed, `onGap` is called first). An id is checked as Redis reads it (two
   * integers from 0 to 2^64-1; leading zeros are dropped): anything else, e.g. a malformed
   * `Last-Event-ID`, rejects with an `ArgumentError` (`ERK_INVALID_ARGUMENT`, status 400)
   * before any Redis command.
   * @default '$'
   */
  from?: string
  /**
   * Fan-out mode: called, and awaited, before the subscription delivers past messages it never
   * read because the stream no longer holds them: it started from an id that was trimmed, fell
   * more than about `maxLength` messages behind, or Redis lost the stream (a restart without
   * persistence; noticed when the subscription reconnects). Delivery then goes on with the oldest
   * message still there (`oldest`). Errors it throws are logged.
   * @default undefined (the gap is logged as an error)
   */
  onGap?: (info: GapInfo) => void | Promise<void>
}

/** Options of {@link Notifier.history}. */
export interface HistoryOptions {
  /**
   * A stream entry id (`meta.streamId`): the messages after it are returned (exclusive). Checked
   * as Redis reads ids (two integers from 0 to 2^64-1; leading zeros are dropped): anything
   * else rejects with an `ArgumentError` (`ERK_INVALID_ARGUMENT`, status 400) before any Redis command.
   * @default undefined (from the oldest message the stream holds)
   */
  after?: string
  /**
   * The most messages returned, 1 to 10,000; read on from the last one's `meta.streamId`.
   * @default 1000
   */
  limit?: number
}

/** What {@link Notifier.history} returns. */
export interface History<T = unknown> {
  /** The messages, oldest first; `meta.streamId` is each one's position. Malformed entries are skipped (logged). */
  messages: { event: T; meta: EventMeta }[]
  /**
   * Whether messages after `after` are missing: trimmed (`maxLength`) or lost with the stream
   * (Redis restarted without persistence). Always `false` without `after`.
   */
  trimmed: boolean
}

/** Options of one `publish` call. */
export interface PublishOptions {
  /**
   * The message's id, instead of a random UUID: 1 to 200 characters of `A-Z a-z 0-9 . _ : -`.
   * Give the same id to every publication of one event (a transactional outbox relaying a row
   * again after a crash does), and subscribers recognise the repeat by `meta.id`.
   * @default a random UUID
   */
  id?: string
}

/** Stops one subscription: no handler call starts after it resolves. */
export type Unsubscribe = () => Promise<void>

/** Publishes and receives JSON events through Redis; see {@link createNotifier}. */
export interface Notifier {
  readonly mode: 'pubsub' | 'durable' | 'fanout'
  /**
   * Publishes `payload` (any JSON value) on `channel` in one round trip (`PUBLISH`,
   * `SPUBLISH` on a Cluster, `XADD ... MAXLEN ~` in durable mode) and resolves to the
   * message's id. Rejects with `ERK_INVALID_MESSAGE` for a payload that is not JSON or too
   * large, and with `ERK_REDIS_UNAVAILABLE` when Redis is down or did not answer within
   * `timeoutMs`; nothing is retried. A timeout means "not confirmed", not "not published": a
   * frozen Redis runs what it held once it wakes up, so such a message may still be delivered,
   * seconds later and after messages published since (pub/sub on a Cluster: `onReconnect` is
   * called after it, see its option).
   */
  publish(channel: string, payload: unknown, options?: PublishOptions): Promise<string>
  /**
   * Calls `handler` for each message on `channel`, one at a time and in order. Resolves
   * once the subscription is in place (it waits while Redis is unreachable). Handlers must
   * tolerate a message delivered twice (compare `meta.id`): durable delivery is
   * at-least-once, and pub/sub may repeat a message when a Cluster moves a slot. In fan-out
   * mode each subscription holds a connection of its own (blocking `XREAD`) and delivers every
   * message once, in stream order, after a reconnect too (publishers may still repeat a message:
   * the same `meta.id` under a new `meta.streamId`). Rejects with `ERK_INVALID_ARGUMENT` for a bad
   * `from`, before any Redis command.
   */
  subscribe<T = unknown>(channel: string, handler: EventHandler<T>, options?: SubscribeOptions<T>): Promise<Unsubscribe>
  /**
   * Durable and fan-out modes: the messages of `channel` after `options.after`, oldest first, in
   * one command on `client` (`XRANGE` from `after` itself, which tells whether some after it were
   * trimmed): a server replays what one client missed without a connection per client. `parse`
   * is not applied. Rejects with `ERK_INVALID_ARGUMENT` for a bad `after` or `limit` (an
   * `ArgumentError`, status 400, before any Redis command; and in pub/sub mode, which keeps no
   * history) and with `ERK_REDIS_UNAVAILABLE` like `publish`.
   */
  history<T = unknown>(channel: string, options?: HistoryOptions): Promise<History<T>>
  /** Ends every subscription (running handlers finish) and closes the notifier's own connections. */
  close(): Promise<void>
}

/**
 * Creates a notifier: events between the instances of an app, over Redis.
 *
 * - `mode: 'pubsub'` (default): at-most-once broadcast to every subscriber that is
 *   connected. Subscriptions share one connection the notifier duplicates from `client`
 *   (a Cluster uses sharded pub/sub), renewed after a reconnect; `onReconnect` reports each
 *   gap (a reconnect, a channel moved to another node) before the first message after it, and
 *   on a Cluster follows the late messages of a frozen master that woke up.
 * - `mode: 'durable'`: Redis Streams and consumer groups. Each group receives every
 *   message once (several processes in one group share the work); a message is
 *   acknowledged after its handler resolved, redelivered after `claimIdle` otherwise.
 * - `mode: 'fanout'`: Redis Streams without groups. Every subscription reads every message
 *   from its own position (`from`), resumes after a reconnect from the last one it delivered,
 *   and hears of trimmed messages through `onGap`; `history()` reads what a client missed.
 *
 * Malformed messages, payloads that fail `parse` and failing handlers are logged and
 * never affect other messages or subscribers.
 */
export function createNotifier(options: NotifierOptions): Notifier {
  const parsed = parseNotifierOptions(options)
  const { client, prefix, mode, timeoutMs, maxMessageBytes, maxLength } = parsed
  const cluster = isCluster(client)
  const pubsub = mode === 'pubsub' ? new PubSubTransport(parsed) : undefined
  /** Durable subscriptions by channel and group: one consumer per group and channel per notifier. */
  const durable = new Map<string, DurableSubscription>()
  /** Fan-out subscriptions, each with its own connection. */
  const fanout = new Set<FanoutSubscription>()
  let closed = false

  function checkChannel(channel: unknown): asserts channel is string {
    if (!isValidName(channel)) throw new OptionError('channel', NAME_EXPECTED, channel)
  }

  /** The traced name of a publication (see shared/diagnostics.ts). */
  const publishCall = {
    operation: 'notifier.publish',
    command: mode !== 'pubsub' ? 'XADD' : cluster ? 'SPUBLISH' : 'PUBLISH',
  }

  return {
    mode,

    async publish(channel, payload, publishOptions = {}) {
      checkChannel(channel)
      checkCallOptions(publishOptions, 'publish')
      if (closed) throw closedError()
      const { id, json } = encodeEnvelope(channel, payload, maxMessageBytes, publishOptions.id)
      const key = prefix + channel
      await runCommand<unknown>(
        client,
        key,
        (redis) => {
          const commands = redis as unknown as {
            publish(channel: string, message: string): Promise<number>
            sPublish(channel: string, message: string): Promise<number>
            xAdd(key: string, id: string, fields: Record<string, string>, options: unknown): Promise<string>
          }
          if (mode !== 'pubsub') {
            return commands.xAdd(
              key,
              '*',
              { [ENTRY_FIELD]: json },
              {
                TRIM: { strategy: 'MAXLEN', strategyModifier: '~', threshold: maxLength },
              },
            )
          }
          return cluster ? commands.sPublish(key, json) : commands.publish(key, json)
        },
        timeoutMs,
        undefined,
        publishCall,
      )
      publishNotifier(() => ({ result: 'published', channel, id, mode }))
      return id
    },

    async subscribe<T>(channel: string, handler: EventHandler<T>, subscribeOptions: SubscribeOptions<T> = {}) {
      checkChannel(channel)
      if (typeof handler !== 'function') throw new OptionError('handler', 'a function', handler)
      checkCallOptions(subscribeOptions, 'subscribe')
      const { parse, group = parsed.group, from, onGap } = subscribeOptions
      if (parse !== undefined && typeof parse !== 'function') {
        throw new OptionError('parse', 'a function (a zod schema’s parse fits)', parse)
      }
      if (!isValidName(group)) throw new OptionError('group', NAME_EXPECTED, group)
      if (mode !== 'fanout' && (from !== undefined || onGap !== undefined)) {
        throw new OptionError(from !== undefined ? 'from' : 'onGap', "unset outside mode 'fanout'", from ?? onGap)
      }
      const start = from === undefined || from === '$' || from === '0' ? from : parseStreamId(from)
      if (from !== undefined && start === undefined) {
        throw new ArgumentError('subscribe', 'from', `'$', '0' or ${STREAM_ID_EXPECTED}`, from)
      }
      if (onGap !== undefined && typeof onGap !== 'function') throw new OptionError('onGap', 'a function', onGap)
      if (closed) throw closedError()
      const subscriber = new Subscriber(channel, handler, parse, parsed.logger, mode) as Subscriber<unknown>

      if (mode === 'fanout') {
        const subscription = new FanoutSubscription(parsed, subscriber, start ?? '$', onGap)
        fanout.add(subscription)
        try {
          await subscription.start()
        } catch (error) {
          fanout.delete(subscription)
          throw closed ? closedError() : error
        }
        return async () => {
          if (!fanout.delete(subscription)) return
          await subscription.stop()
        }
      }

      if (pubsub !== undefined) {
        await pubsub.add(subscriber).catch((error: unknown) => {
          throw closed ? closedError() : error
        })
        return async () => {
          await pubsub.remove(subscriber)
          await subscriber.idle()
        }
      }

      const slot = `${channel}\n${group}`
      if (durable.has(slot)) {
        throw new OptionError(
          'group',
          `a group this notifier does not consume "${channel}" in yet (one consumer per group and channel per process)`,
          group,
        )
      }
      const subscription = new DurableSubscription(parsed, subscriber, group)
      durable.set(slot, subscription)
      try {
        await subscription.start()
      } catch (error) {
        durable.delete(slot)
        throw closed ? closedError() : error
      }
      return async () => {
        if (durable.get(slot) !== subscription) return
        await subscription.stop()
        if (durable.get(slot) === subscription) durable.delete(slot)
      }
    },

    async history<T>(channel: string, historyOptions: HistoryOptions = {}): Promise<History<T>> {
      checkChannel(channel)
      const method = 'history'
      if (mode === 'pubsub') {
        throw new RedisKitError('ERK_INVALID_ARGUMENT', "express-redis-kit: history() needs mode 'fanout' or 'durable'")
      }
      if (typeof historyOptions !== 'object' || historyOptions === null) {
        throw new ArgumentError(method, 'options', 'an object', historyOptions)
      }
      checkCallOptions(historyOptions, 'history')
      const { limit = 1000 } = historyOptions
      const after = historyOptions.after === undefined ? undefined : parseStreamId(historyOptions.after)
      if (historyOptions.after !== undefined && after === undefined) {
        throw new ArgumentError(method, 'after', STREAM_ID_EXPECTED, historyOptions.after)
      }
      if (!Number.isSafeInteger(limit) || limit < 1 || limit > 10_000) {
        throw new ArgumentError(method, 'limit', 'an integer from 1 to 10000', limit)
      }
      if (closed) throw closedError()
      const key = prefix + channel
      // from `after` itself (inclusive): if the stream still holds it, nothing after it was trimmed
      const start = after === undefined ? '-' : after
      const range = await runCommand(
        client,
        key,
        (redis) =>
          (redis as unknown as FanoutCommands).xRange(key, start, '+', {
            COUNT: limit + (after === undefined ? 0 : 1),
          }),
        timeoutMs,
      )
      const read = after === undefined ? { entries: range, gap: false } : afterPosition(after, range)
      const messages: History<T>['messages'] = []
      for (const { id, message } of read.entries.slice(0, limit)) {
        const envelope = entryEnvelope(parsed, channel, key, id, message)
        if (envelope === undefined) continue
        const meta: EventMeta = { id: envelope.id, channel, time: envelope.time, deliveries: 1, streamId: id }
        messages.push({ event: envelope.payload as T, meta })
      }
      // a stream that no longer holds `after` (trimmed, or lost with a restart) cannot say what followed it
      return { messages, trimmed: after !== undefined && (read.gap || range.length === 0) }
    },

    async close() {
      if (closed) return
      closed = true
      await Promise.all([...durable.values(), ...fanout].map((subscription) => subscription.stop()))
      durable.clear()
      fanout.clear()
      await pubsub?.close()
    },
  }
}
