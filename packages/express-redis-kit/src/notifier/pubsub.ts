import { clusterSlot, type NodeClient, rediscoverUnmapped, refreshTopology } from '../shared/cluster-health.js'
import { publishNotifier } from '../shared/diagnostics.js'
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
  /** On a Cluster: checks every second that each channel is subscribed on its slot's master. */
  #shardWatch: NodeJS.Timeout | undefined
  /** A subscription moved or was found on the wrong node: onReconnect runs once it is back. */
  #shardGap = false
  readonly #watchedPubSubClients = new WeakSet<object>()

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
    clearInterval(this.#shardWatch)
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
        if (this.#sharded) {
          await connection.sSubscribe(name, listener)
          // The channel's node connection exists now: hear at once when its channels move.
          this.#watchPubSubClients(connection)
        } else await connection.subscribe(name, listener)
        return
      } catch (error) {
        if (this.#closed) throw closedError()
        // A connection made while the cluster was being created knows no master for the channel.
        if (this.#sharded && this.#raw) rediscoverUnmapped(this.#raw, name)
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
      publishNotifier(() => ({ result: 'dropped', channel, mode: 'pubsub', reason: 'malformed' }))
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
      if (this.#sharded) {
        this.#shardWatch = setInterval(() => this.#checkShards(connection), SHARD_CHECK_MS).unref()
        // node-redis moves the listeners of a node that lost its slots (a failover, MOVED on a
        // pub/sub connection) to the new masters with this event: a gap.
        connection.on(RESUBSCRIBE_EVENT, () => {
          this.#shardGap = true
        })
      }
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
  /**
   * Sharded subscriptions can move without their connection dropping: after a graceful
   * failover the old master unsubscribes them and node-redis subscribes them again on the new
   * one (`sharded-channel-moved`), and a frozen master keeps them, silent, until it comes
   * back. Messages published meanwhile are lost, so this is a gap like a reconnect. A move
   * of listeners (node-redis's resubscribe event) opens a gap. Every second: a channel whose slot's master is another node in the app's client (which the
   * kit's commands keep current) than in ours makes ours ask for the topology (node-redis then
   * subscribes the channel on the new master); a channel not subscribed on its master, or a
   * `sharded-channel-moved`, opens a gap; once every channel is subscribed where it belongs,
   * `onReconnect` runs.
   */
  #checkShards(connection: SubscriberConnection): void {
    if (this.#closed) return
    const ours = connection as unknown as ShardedView
    const theirs = this.#options.client as unknown as ShardedView
    this.#watchPubSubClients(connection)
    let settled = true
    for (const name of this.#channels.keys()) {
      const slot = clusterSlot(name)
      const master = ours.slots?.[slot]?.master
      const expected = theirs.slots?.[slot]?.master?.address
      if (master && expected && master.address !== expected) {
        this.#shardGap = true
        settled = false
        // Ask our connection for the topology, from another master than the one it still believes in.
        if (master.client) refreshTopology(connection, master.client)
        continue
      }
      const subscriber = master?.pubSub?.client
      if (!subscriber?.isReady || !subscriber.getPubSubListeners('SHARDED').has(name)) {
        this.#shardGap = true
        settled = false
      }
    }
    if (!settled || !this.#shardGap) return
    this.#shardGap = false
    Promise.resolve()
      .then(() => this.#options.onReconnect?.())
      .catch((error: unknown) => this.#options.logger.error('express-redis-kit notifier: onReconnect failed', error))
  }

  /** Listens for `sharded-channel-moved` on every node pub/sub connection of ours (once each). */
  #watchPubSubClients(connection: SubscriberConnection): void {
    for (const master of (connection as unknown as ShardedView).masters ?? []) {
      const client = master.pubSub?.client
      if (client && !this.#watchedPubSubClients.has(client)) {
        this.#watchedPubSubClients.add(client)
        client.on('sharded-channel-moved', () => {
          this.#shardGap = true
        })
      }
    }
  }

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

/** The (internal) event node-redis 5 and 6 clusters emit when they move pub/sub listeners to other nodes. */
const RESUBSCRIBE_EVENT = '__resubscribeListeners'

/** How often sharded subscriptions are checked against the topology (ms). */
const SHARD_CHECK_MS = 1_000

/** What node-redis's cluster shows of its nodes, for the shard check. */
interface ShardedView {
  slots?: ({ master?: ShardMaster } | undefined)[]
  masters?: ShardMaster[]
}
interface ShardMaster {
  address?: string
  client?: NodeClient
  pubSub?: {
    client?: NodeClient & {
      on(event: 'sharded-channel-moved', listener: () => void): unknown
      getPubSubListeners(type: 'SHARDED'): Map<string, unknown>
    }
  }
}

export function closedError(): RedisKitError {
  return new RedisKitError('ERK_CLOSED', 'express-redis-kit: the notifier is closed')
}
