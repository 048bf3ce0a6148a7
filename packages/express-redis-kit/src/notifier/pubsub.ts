import { RedisKitError } from '../shared/errors.js'
import { throttledLogger } from '../shared/logger.js'
import { duplicateConnection, isCluster, withTimeout } from '../shared/redis.js'
import { decodeEnvelope, type Subscriber } from './envelope.js'
import type { ParsedNotifierOptions } from './options.js'

type Listener = (message: string, channel: string) => void

/** The subscriber side of node-redis that we use, on a client or a cluster. */
interface SubscriberConnection {
  connect(): Promise<unknown>
  destroy(): void
  on(event: string, listener: (...args: unknown[]) => void): unknown
  subscribe(channel: string, listener: Listener): Promise<void>
  unsubscribe(channel: string, listener: Listener): Promise<void>
  sSubscribe(channel: string, listener: Listener): Promise<void>
  sUnsubscribe(channel: string, listener: Listener): Promise<void>
}

interface Channel {
  subscribers: Set<Subscriber<unknown>>
  /** Settles when Redis confirmed the subscription. */
  ready: Promise<void>
  listener: Listener
}

/**
 * Pub/sub delivery: one duplicated connection (a cluster duplicate on a Cluster, where
 * channels are sharded) carries every subscription of the notifier; each Redis channel
 * is subscribed once and its messages are fanned out to the subscribers.
 */
export class PubSubTransport {
  readonly #options: ParsedNotifierOptions
  readonly #sharded: boolean
  readonly #channels = new Map<string, Channel>()
  readonly #warn: (message: string, error?: unknown) => void
  #connection: Promise<SubscriberConnection> | undefined
  #raw: SubscriberConnection | undefined
  #closed = false

  constructor(options: ParsedNotifierOptions) {
    this.#options = options
    this.#sharded = isCluster(options.client)
    this.#warn = throttledLogger(options.logger, 'warn')
  }

  async add(subscriber: Subscriber<unknown>): Promise<void> {
    const name = this.#options.prefix + subscriber.channel
    let channel = this.#channels.get(name)
    if (channel === undefined) {
      const listener: Listener = (message) => this.#dispatch(name, subscriber.channel, message)
      const created: Channel = { subscribers: new Set(), listener, ready: this.#subscribe(name, listener) }
      channel = created
      this.#channels.set(name, created)
      created.ready.catch(() => {
        if (this.#channels.get(name) === created && created.subscribers.size === 0) this.#channels.delete(name)
      })
    }
    await channel.ready
    channel.subscribers.add(subscriber)
  }

  async remove(subscriber: Subscriber<unknown>): Promise<void> {
    const name = this.#options.prefix + subscriber.channel
    const channel = this.#channels.get(name)
    if (channel === undefined || !channel.subscribers.delete(subscriber)) return
    if (channel.subscribers.size === 0 && !this.#closed) {
      this.#channels.delete(name)
      // Bounded: while Redis is down node-redis would hold it until it is back. Messages that still arrive
      // meanwhile find no subscriber and are ignored.
      const unsubscribing = this.#connect().then((connection) =>
        this.#sharded
          ? connection.sUnsubscribe(name, channel.listener)
          : connection.unsubscribe(name, channel.listener),
      )
      await withTimeout(unsubscribing, this.#options.timeoutMs).catch((error: unknown) =>
        this.#warn(`express-redis-kit notifier: unsubscribing from ${name} failed`, error),
      )
    }
  }

  async close(): Promise<void> {
    this.#closed = true
    this.#channels.clear()
    this.#connection = undefined
    // destroy() also ends a connect() still waiting for Redis, which then rejects.
    this.#raw?.destroy()
    this.#raw = undefined
  }

  /** Subscribes, retrying every 500 ms while the connection is down (until `close()`). */
  async #subscribe(name: string, listener: Listener): Promise<void> {
    for (;;) {
      try {
        const connection = await this.#connect()
        if (this.#sharded) await connection.sSubscribe(name, listener)
        else await connection.subscribe(name, listener)
        return
      } catch (error) {
        if (this.#closed) throw closedError()
        this.#warn(`express-redis-kit notifier: subscribing to ${name} failed; retrying`, error)
        await new Promise((resolve) => setTimeout(resolve, 500))
        if (this.#closed) throw closedError()
      }
    }
  }

  #dispatch(name: string, channel: string, message: string): void {
    const subscribers = this.#channels.get(name)?.subscribers
    if (subscribers === undefined || subscribers.size === 0) return
    const envelope = decodeEnvelope(message, channel, this.#options.maxMessageBytes)
    if (typeof envelope === 'string') {
      this.#warn(`express-redis-kit notifier: dropped a message on "${channel}": ${envelope}`)
      return
    }
    const meta = { id: envelope.id, channel, time: envelope.time, deliveries: 1 }
    for (const subscriber of subscribers) void subscriber.deliver(envelope, meta)
  }

  /** The owned subscriber connection, created and connected on first use. */
  #connect(): Promise<SubscriberConnection> {
    if (this.#closed) return Promise.reject(closedError())
    if (this.#connection === undefined) {
      const connection = duplicateConnection<SubscriberConnection>(this.#options.client, (error) =>
        this.#warn('express-redis-kit notifier: the subscriber connection failed', error),
      )
      this.#watchReconnects(connection)
      this.#raw = connection
      this.#connection = connection.connect().then(() => connection)
      this.#connection.catch(() => {
        if (this.#raw === connection) {
          this.#raw = undefined
          this.#connection = undefined
        }
      })
    }
    return this.#connection
  }

  /**
   * node-redis renews a connection's subscriptions before it reports it ready again, so a
   * `ready` that follows a `reconnecting` means they are back. `onReconnect` runs once every
   * connection that dropped is ready again (or gone for good): on a cluster, node-redis reports
   * each node's connections (`node-reconnecting`, `node-ready`, `node-disconnect`) with an
   * object of their own, which tells them apart.
   */
  #watchReconnects(connection: SubscriberConnection): void {
    const lost = new Set<unknown>()
    let missed = false
    const onLost = (client: unknown) => lost.add(client)
    const onBack = (client: unknown) => {
      if (lost.delete(client)) missed = true
      if (!missed || lost.size > 0 || this.#closed) return
      missed = false
      Promise.resolve()
        .then(() => this.#options.onReconnect?.())
        .catch((error: unknown) => this.#options.logger.error('express-redis-kit notifier: onReconnect failed', error))
    }
    if (this.#sharded) {
      connection.on('node-reconnecting', onLost)
      connection.on('node-ready', onBack)
      connection.on('node-disconnect', onBack)
    } else {
      connection.on('reconnecting', () => onLost(connection))
      connection.on('ready', () => onBack(connection))
    }
  }
}

export function closedError(): RedisKitError {
  return new RedisKitError('ERK_CLOSED', 'express-redis-kit: the notifier is closed')
}
