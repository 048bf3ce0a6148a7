import { probeNode, rediscoverUnmapped, refreshTopology } from '../shared/cluster-health.js'
import { publishNotifier } from '../shared/diagnostics.js'
import { RedisKitError } from '../shared/errors.js'
import { throttledLogger } from '../shared/logger.js'
import { duplicateConnection, isCluster, withTimeout } from '../shared/redis.js'
import { DepartedNodes } from './departed.js'
import { decodeEnvelope, type Subscriber } from './envelope.js'
import type { ParsedNotifierOptions } from './options.js'
import { heldAnywhere, homeOf, type PubSubClient, pubSubClients, RESUBSCRIBE_EVENT, slotMaster } from './shards.js'

type Listener = (message: string, channel: string) => void

/** The subscriber side of node-redis that we use, on a client or a cluster. */
interface SubscriberConnection {
  readonly isReady?: boolean
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
  /** Redis confirmed it once: from then on, it can have gaps. */
  subscribed: boolean
  listener: Listener
}

/**
 * Pub/sub delivery: one duplicated connection (a cluster duplicate on a Cluster, where
 * channels are sharded) carries every subscription of the notifier; each Redis channel
 * is subscribed once and its messages are fanned out to the subscribers.
 *
 * Redis keeps nothing for a subscription that is away, so every event after which one may
 * have missed a message opens a gap on its channels: its connection dropped (node-redis
 * subscribes again before it reports the connection ready), and on a Cluster its channel moved
 * to another node (a graceful failover: the old master unsubscribes it, node-redis subscribes
 * it on the new one), node-redis moved its listeners off a node that left the topology, or the
 * shard check found it away from its slot's master. `onReconnect` runs once every channel with
 * a gap is subscribed again, and in any case before the first message on a channel with a gap
 * is delivered (that message shows the channel is back), so that every gap is reported between
 * the last message before it and the first one after it.
 *
 * A channel that left a node without being handed over (the node died, or froze and its replica
 * was promoted) gets onReconnect once more when that node answers again (see DepartedNodes): a
 * frozen master that wakes up delivers, through the new master, what publishers sent it while it
 * was frozen, after messages published later.
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
  /** Channels that may have missed a message since onReconnect last ran. */
  readonly #gaps = new Set<string>()
  /** Channels no pub/sub connection of ours held at the last shard check, and those we subscribe again. */
  #unheld = new Set<string>()
  readonly #resubscribing = new Set<string>()
  readonly #watchedPubSubClients = new WeakSet<object>()
  /** The node pub/sub connection each channel was last seen at home on (Cluster). */
  readonly #seenOn = new Map<string, PubSubClient>()
  readonly #departed = new DepartedNodes()

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
      const created: Channel = { subscribers: new Set(), listener, ready: Promise.resolve(), subscribed: false }
      created.ready = this.#subscribe(name, listener).then(() => {
        created.subscribed = true
      })
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
      this.#gaps.delete(name)
      this.#seenOn.delete(name)
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
    this.#departed.close()
    this.#channels.clear()
    this.#connection = undefined
    // destroy() also ends a connect() still waiting for Redis, which then rejects.
    this.#raw?.destroy()
    this.#raw = undefined
  }

  /**
   * Subscribes, retrying every 500 ms while the connection is down (until `close()`, or until
   * `wanted` says the channel is no longer wanted).
   */
  async #subscribe(name: string, listener: Listener, wanted: () => boolean = () => true): Promise<void> {
    for (;;) {
      if (!wanted()) return
      try {
        const connection = await this.#connect()
        if (this.#sharded) {
          await connection.sSubscribe(name, listener)
          // The channel's node connection exists now: hear at once when its channels move.
          this.#watchPubSubClients(connection)
          const holder = pubSubClients(connection).find((client) => client.getPubSubListeners('SHARDED').has(name))
          if (holder) this.#seenOn.set(name, holder)
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
    // The first message after a gap: the application hears of the gap before it (onReconnect
    // runs in a microtask queued before the handlers').
    if (this.#gaps.has(name)) this.#reportGaps(name)
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
      if (this.#sharded) {
        this.#shardWatch = setInterval(() => this.#checkShards(connection), SHARD_CHECK_MS).unref()
        // Every node connection node-redis opens (a channel's new shard included) is watched
        // before anything can arrive on it.
        connection.on('node-connect', () => this.#watchPubSubClients(connection))
        // node-redis moves the listeners of a node that left the topology (a failover, MOVED on
        // a pub/sub connection) to the new masters with this event: a gap.
        connection.on(RESUBSCRIBE_EVENT, (listeners: unknown) => {
          const sharded = [...((listeners as { SHARDED?: Map<string, unknown> } | undefined)?.SHARDED?.keys() ?? [])]
          this.#openGap(sharded)
          this.#watchDeparted(sharded)
        })
        // node-redis could not move a channel (its slot had no master in the topology it read
        // back, as during a failover): it dropped the channel's listeners, so we subscribe again.
        connection.on('sharded-channel-moved-error', (error: unknown, name: unknown) => {
          if (typeof name !== 'string') return
          this.#warn(
            `express-redis-kit notifier: ${name} did not follow its slot to another node; subscribing again`,
            error,
          )
          this.#openGap([name])
          this.#resubscribe(name)
        })
      } else {
        // node-redis subscribes again before it reports the connection ready.
        connection.on('reconnecting', () => this.#openGap())
        connection.on('ready', () => this.#reportGaps())
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

  /** Opens a gap on `names` (every channel by default): onReconnect is owed once they are back. */
  #openGap(names: Iterable<string> = this.#channels.keys()): void {
    for (const name of names) if (this.#channels.get(name)?.subscribed) this.#gaps.add(name)
  }

  /**
   * Runs onReconnect once every channel with a gap is subscribed again, or as soon as one is
   * when `partial` (the shard check: a shard that stays away does not hold back the report of
   * the others), or when a message just `arrived` on one. The gaps of the channels that are
   * back are then closed; the others stay open, and are reported in turn.
   */
  #reportGaps(arrived?: string, partial = false): void {
    if (this.#closed || this.#gaps.size === 0) return
    // One connection carries every channel of a single Redis: a message on it shows they are all back.
    const back = [...this.#gaps].filter(
      (name) => name === arrived || (!this.#sharded && arrived !== undefined) || this.#isBack(name),
    )
    if (back.length === 0 || (arrived === undefined && !partial && back.length < this.#gaps.size)) return
    for (const name of back) this.#gaps.delete(name)
    Promise.resolve()
      .then(() => this.#options.onReconnect?.())
      .catch((error: unknown) => this.#options.logger.error('express-redis-kit notifier: onReconnect failed', error))
  }

  /**
   * Whether `name` is subscribed where it belongs: on a single Redis, the connection is ready
   * (node-redis renewed its subscriptions first); on a Cluster, it is at home (see homeOf) and
   * its node's pub/sub connection has no command awaiting a reply (its SSUBSCRIBE was answered).
   */
  #isBack(name: string): boolean {
    if (!this.#sharded) return this.#raw?.isReady === true
    const home = homeOf(this.#raw, this.#options.client, name)
    return home !== undefined && home._getQueue?.().isEmpty() !== false
  }

  /**
   * Sharded subscriptions can move without an event we hear: a frozen master keeps them, silent,
   * and a master that stepped down while its pub/sub connection awaited a reply unsubscribes
   * them without node-redis noticing. Every second, a channel away from home (see homeOf) is a
   * gap, and is brought back: when our connection knows no master for its slot it asks for the
   * topology, and when it knows another one than the app's client, both do (each from another
   * master than the one it believes in; node-redis then moves the channel to the slot's master);
   * when no pub/sub connection of ours has held it at two checks in a row (node-redis lost its
   * listeners), it is subscribed again. Then the gaps of the channels that are back are reported.
   */
  #checkShards(connection: SubscriberConnection): void {
    if (this.#closed) return
    this.#watchPubSubClients(connection)
    // a node our channels left woke up a second ago: what it held has been delivered
    this.#openGap(this.#departed.due())
    const theirs = this.#options.client
    const unheld = new Set<string>()
    for (const [name, channel] of this.#channels) {
      if (!channel.subscribed) continue
      const home = homeOf(connection, theirs, name)
      if (home !== undefined) {
        this.#seenOn.set(name, home)
        // a frozen master says nothing on a subscription: ask the app's client to check it
        const node = slotMaster(theirs, name)?.client
        if (node) probeNode(theirs, node, this.#options.timeoutMs)
        continue
      }
      this.#gaps.add(name)
      const master = slotMaster(connection, name)
      const expected = slotMaster(theirs, name)
      if (master === undefined) rediscoverUnmapped(connection, name)
      else if (master.client && expected?.client && master.address !== expected.address) {
        refreshTopology(connection, master.client)
        refreshTopology(theirs, expected.client)
      }
      if (!heldAnywhere(connection, name)) {
        if (this.#unheld.has(name)) this.#resubscribe(name)
        unheld.add(name)
      }
    }
    this.#unheld = unheld
    this.#reportGaps(undefined, true)
  }

  /** Watches the nodes that the channels `names` left without being handed over (see DepartedNodes). */
  #watchDeparted(names: string[]): void {
    const byNode = new Map<PubSubClient, string[]>()
    for (const name of names) {
      const node = this.#seenOn.get(name)
      if (node === undefined) continue
      this.#seenOn.delete(name)
      byNode.set(node, [...(byNode.get(node) ?? []), name])
    }
    for (const [node, moved] of byNode) this.#departed.watch(node, moved)
  }

  /** Subscribes `name` again (its listeners were lost), once at a time, retrying until it is done or removed. */
  #resubscribe(name: string): void {
    const channel = this.#channels.get(name)
    if (channel === undefined || this.#resubscribing.has(name)) return
    this.#resubscribing.add(name)
    this.#subscribe(name, channel.listener, () => this.#channels.get(name) === channel)
      .catch(() => {})
      .finally(() => this.#resubscribing.delete(name))
  }

  /**
   * Watches each node pub/sub connection of ours once: a connection that drops opens a gap on
   * its channels, and so does a channel it reports moved (`sharded-channel-moved`: its node
   * unsubscribed it, node-redis subscribes it on the slot's new master); one that is ready again
   * may close them.
   */
  #watchPubSubClients(connection: SubscriberConnection): void {
    for (const client of pubSubClients(connection)) {
      if (this.#watchedPubSubClients.has(client)) continue
      this.#watchedPubSubClients.add(client)
      client.on('sharded-channel-moved', (name) => this.#openGap([name]))
      client.on('reconnecting', () => this.#openGap(client.getPubSubListeners('SHARDED').keys()))
      client.on('ready', () => this.#reportGaps())
    }
  }
}

/** How often sharded subscriptions are checked against the topology (ms). */
const SHARD_CHECK_MS = 1_000

export function closedError(): RedisKitError {
  return new RedisKitError('ERK_CLOSED', 'express-redis-kit: the notifier is closed')
}
