import { OptionError } from '../shared/errors.js'
import { isCluster, runCommand } from '../shared/redis.js'
import { DurableSubscription, ENTRY_FIELD } from './durable.js'
import { type EventHandler, encodeEnvelope, Subscriber } from './envelope.js'
import { isValidName, NAME_EXPECTED, type NotifierOptions, parseNotifierOptions } from './options.js'
import { closedError, PubSubTransport } from './pubsub.js'

export type { Envelope, EventHandler, EventMeta } from './envelope.js'
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
  readonly mode: 'pubsub' | 'durable'
  /**
   * Publishes `payload` (any JSON value) on `channel` in one round trip (`PUBLISH`,
   * `SPUBLISH` on a Cluster, `XADD ... MAXLEN ~` in durable mode) and resolves to the
   * message's id. Rejects with `ERK_INVALID_MESSAGE` for a payload that is not JSON or too
   * large, and with `ERK_REDIS_UNAVAILABLE` when Redis is down or did not answer within
   * `timeoutMs`; nothing is retried.
   */
  publish(channel: string, payload: unknown, options?: PublishOptions): Promise<string>
  /**
   * Calls `handler` for each message on `channel`, one at a time and in order. Resolves
   * once the subscription is in place (it waits while Redis is unreachable). Handlers must
   * tolerate a message delivered twice (compare `meta.id`): durable delivery is
   * at-least-once, and pub/sub may repeat a message when a Cluster moves a slot.
   */
  subscribe<T = unknown>(channel: string, handler: EventHandler<T>, options?: SubscribeOptions<T>): Promise<Unsubscribe>
  /** Ends every subscription (running handlers finish) and closes the notifier's own connections. */
  close(): Promise<void>
}

/**
 * Creates a notifier: events between the instances of an app, over Redis.
 *
 * - `mode: 'pubsub'` (default): at-most-once broadcast to every subscriber that is
 *   connected. Subscriptions share one connection the notifier duplicates from `client`
 *   (a Cluster uses sharded pub/sub), renewed after a reconnect, then `onReconnect` runs.
 * - `mode: 'durable'`: Redis Streams and consumer groups. Each group receives every
 *   message once (several processes in one group share the work); a message is
 *   acknowledged after its handler resolved, redelivered after `claimIdle` otherwise.
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
  let closed = false

  function checkChannel(channel: unknown): asserts channel is string {
    if (!isValidName(channel)) throw new OptionError('channel', NAME_EXPECTED, channel)
  }

  return {
    mode,

    async publish(channel, payload, publishOptions = {}) {
      checkChannel(channel)
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
          if (mode === 'durable') {
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
      )
      return id
    },

    async subscribe<T>(channel: string, handler: EventHandler<T>, subscribeOptions: SubscribeOptions<T> = {}) {
      checkChannel(channel)
      if (typeof handler !== 'function') throw new OptionError('handler', 'a function', handler)
      const { parse, group = parsed.group } = subscribeOptions
      if (parse !== undefined && typeof parse !== 'function') {
        throw new OptionError('parse', 'a function (a zod schema’s parse fits)', parse)
      }
      if (!isValidName(group)) throw new OptionError('group', NAME_EXPECTED, group)
      if (closed) throw closedError()
      const subscriber = new Subscriber(channel, handler, parse, parsed.logger) as Subscriber<unknown>

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

    async close() {
      if (closed) return
      closed = true
      await Promise.all([...durable.values()].map((subscription) => subscription.stop()))
      durable.clear()
      await pubsub?.close()
    },
  }
}
