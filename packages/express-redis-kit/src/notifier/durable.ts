import { publishNotifier } from '../shared/diagnostics.js'
import { throttledLogger } from '../shared/logger.js'
import { duplicateConnection } from '../shared/redis.js'
import { decodeEnvelope, type EventMeta, type Subscriber } from './envelope.js'
import { Interruptible, retryDelay, stopLoop } from './interruptible.js'
import type { ParsedNotifierOptions } from './options.js'
import { MovedWhileWaiting, StallWatch } from './stall-watch.js'

/** The field of a stream entry that holds the JSON envelope. */
export const ENTRY_FIELD = 'm'

/** A consumer with nothing pending and idle this long is removed from its group. */
const PRUNE_IDLE_MS = 3_600_000

interface StreamMessage {
  id: string
  message: Record<string, string> | null
}

/** The stream commands a durable subscription sends, on a client or a cluster. */
interface StreamConnection {
  connect(): Promise<unknown>
  destroy(): void
  xGroupCreate(key: string, group: string, id: string, options: { MKSTREAM: true }): Promise<unknown>
  xReadGroup(
    group: string,
    consumer: string,
    stream: { key: string; id: string },
    options: { COUNT: number; BLOCK?: number },
  ): Promise<{ name: string; messages: StreamMessage[] }[] | null>
  xAutoClaim(
    key: string,
    group: string,
    consumer: string,
    minIdleTime: number,
    start: string,
    options: { COUNT: number },
  ): Promise<{ nextId: string; messages: (StreamMessage | null)[] }>
  xPendingRange(
    key: string,
    group: string,
    start: string,
    end: string,
    count: number,
    options: { consumer: string },
  ): Promise<{ id: string; deliveriesCounter: number }[]>
  xAck(key: string, group: string, ids: string[]): Promise<number>
  xInfoStream(key: string): Promise<{ length: number; 'entries-added'?: number }>
  xInfoGroups(key: string): Promise<{ name: string; 'last-delivered-id': string; 'entries-read'?: number | null }[]>
  xInfoConsumers(key: string, group: string): Promise<{ name: string; pending: number; idle: number }[]>
  xGroupDelConsumer(key: string, group: string, consumer: string): Promise<number>
}

/**
 * One durable subscription: a consumer of a consumer group on the channel's stream, on a
 * connection of its own (its reads block). It first takes back what this consumer had
 * received but not acknowledged, then reads new messages; every `claimIdle / 2` it claims
 * the group's messages that stayed unacknowledged for `claimIdle` (`XAUTOCLAIM`).
 * A message is acknowledged once its handler succeeded, or when it can never succeed
 * (malformed, rejected by `parse`, or failed `maxDeliveries` times).
 */
export class DurableSubscription {
  readonly #options: ParsedNotifierOptions
  readonly #subscriber: Subscriber<unknown>
  readonly #key: string
  readonly #group: string
  readonly #warn: (message: string, error?: unknown) => void
  #connection: StreamConnection | undefined
  #loop: Promise<void> | undefined
  #stopping = false
  /** Interrupts what the loop is waiting on (a blocking read or a pause), not a handler. */
  readonly #waiting = new Interruptible()
  /** Follows the key's slot to another node when the one a command waits on stops answering. */
  readonly #watch: StallWatch
  #lastClaimAt = 0
  #lastPruneAt = 0
  /** Messages trimmed from the stream before this group read them, as last reported. */
  #reportedLost = 0

  constructor(options: ParsedNotifierOptions, subscriber: Subscriber<unknown>, group: string) {
    this.#options = options
    this.#subscriber = subscriber
    this.#group = group
    this.#key = options.prefix + subscriber.channel
    this.#warn = throttledLogger(options.logger, 'warn')
    this.#watch = new StallWatch(options, this.#key, `durable subscriber ${this.#key} (group "${group}")`)
  }

  /** Connects, creates the group if needed (new messages only) and starts consuming. */
  async start(): Promise<void> {
    const connection = duplicateConnection<StreamConnection>(this.#options.client, (error) =>
      this.#warn(`express-redis-kit notifier: the connection of durable subscriber ${this.#key} failed`, error),
    )
    this.#connection = connection
    try {
      await connection.connect()
      await this.#createGroup()
    } catch (error) {
      connection.destroy()
      throw error
    }
    if (this.#stopping) connection.destroy()
    else this.#loop = this.#run(connection)
  }

  /**
   * Stops reading, lets a running handler finish, gives its acknowledgement `timeoutMs` to
   * go through, then closes the connection, which ends any command still waiting for a Redis
   * that is down (what it did not acknowledge is redelivered later).
   */
  async stop(): Promise<void> {
    this.#stopping = true
    await stopLoop(this.#waiting, this.#subscriber, this.#loop, this.#connection, this.#options.timeoutMs)
  }

  async #createGroup(): Promise<void> {
    try {
      await this.#connection?.xGroupCreate(this.#key, this.#group, '$', { MKSTREAM: true })
    } catch (error) {
      if (!(error instanceof Error && error.message.startsWith('BUSYGROUP'))) throw error
    }
  }

  /**
   * Claims when due, then reads (first what this consumer had pending, then new messages with a
   * blocking read). After a failure it pauses longer for each failure in a row (see
   * `retryDelay`), until a read succeeds; a lost group (`NOGROUP`: the stream was lost) is
   * created again first. A command abandoned because its node stopped serving the slot (see
   * StallWatch) is sent again at once, to the slot's new master, after a read of what this
   * consumer has pending there.
   */
  async #run(connection: StreamConnection): Promise<void> {
    let history = '0'
    let failures = 0
    while (!this.#stopping) {
      try {
        if (Date.now() - this.#lastClaimAt >= this.#options.claimIdleMs / 2) await this.#claim(connection)
        if (history !== '') {
          // what this consumer (a stable `consumer` name, restarted) received and did not acknowledge
          const messages = await this.#read(connection, history, undefined)
          failures = 0
          history = messages.length === 0 ? '' : (messages.at(-1)?.id ?? '')
          await this.#handle(connection, messages, await this.#deliveries(connection, messages))
        } else {
          const messages = await this.#read(connection, '>', this.#blockMs())
          failures = 0
          await this.#handle(connection, messages, 1)
        }
      } catch (error) {
        if (this.#stopping) break
        if (error instanceof MovedWhileWaiting) {
          // what the old master delivered to this consumer but never answered with (it froze
          // before the reply) is pending on the new one: read it first, as after a restart
          history = '0'
          continue
        }
        if (error instanceof Error && error.message.startsWith('NOGROUP')) {
          await this.#createGroup().catch(() => undefined)
        }
        this.#warn(`express-redis-kit notifier: reading ${this.#key} failed; retrying`, error)
        failures++
        await this.#waiting.pause(retryDelay(failures))
      }
    }
  }

  /** Blocking reads wake up in time for the next claim round. */
  #blockMs(): number {
    return Math.max(50, Math.min(5_000, Math.floor(this.#options.claimIdleMs / 2)))
  }

  async #read(connection: StreamConnection, id: string, block: number | undefined): Promise<StreamMessage[]> {
    const options =
      block === undefined ? { COUNT: this.#options.batchSize } : { COUNT: this.#options.batchSize, BLOCK: block }
    const reading = this.#watch.run(
      connection,
      () => connection.xReadGroup(this.#group, this.#options.consumer, { key: this.#key, id }, options),
      block,
    )
    const reply = await this.#waiting.wait(reading)
    return reply?.[0]?.messages ?? []
  }

  /**
   * Claims the group's messages idle for `claimIdle` (this consumer's own failed ones
   * included), drops those delivered `maxDeliveries` times, handles the rest; then, at
   * most once an hour, removes consumers that left nothing pending long ago.
   */
  async #claim(connection: StreamConnection): Promise<void> {
    this.#lastClaimAt = Date.now()
    const { consumer, claimIdleMs, batchSize } = this.#options
    let cursor = '0-0'
    do {
      const reply = await this.#watch.run(connection, () =>
        connection.xAutoClaim(this.#key, this.#group, consumer, claimIdleMs, cursor, { COUNT: batchSize }),
      )
      cursor = reply.nextId
      const messages = reply.messages.filter((message): message is StreamMessage => message !== null)
      if (messages.length === 0) continue
      const { channel } = this.#subscriber
      publishNotifier(() => ({ result: 'reclaimed', channel, mode: 'durable', count: messages.length }))
      await this.#handle(connection, messages, await this.#deliveries(connection, messages))
    } while (cursor !== '0-0' && !this.#stopping)
    await this.#checkTrimmed(connection)
    if (Date.now() - this.#lastPruneAt >= PRUNE_IDLE_MS) await this.#prune(connection)
  }

  /** How many times each of `messages` (pending for this consumer) has been delivered, from `XPENDING`. */
  async #deliveries(connection: StreamConnection, messages: StreamMessage[]): Promise<Map<string, number>> {
    if (messages.length === 0) return new Map()
    const first = messages[0]?.id ?? '-'
    const last = messages.at(-1)?.id ?? '+'
    const pending = await this.#watch.run(connection, () =>
      connection.xPendingRange(this.#key, this.#group, first, last, messages.length, {
        consumer: this.#options.consumer,
      }),
    )
    return new Map(pending.map((entry) => [entry.id, entry.deliveriesCounter]))
  }

  /**
   * `XREADGROUP` silently skips entries that `MAXLEN ~` trimmed before the group read them:
   * count them (entries added, minus those still in the stream, minus those the group read;
   * Redis 7+) and log what is new since the last round.
   */
  async #checkTrimmed(connection: StreamConnection): Promise<void> {
    const [stream, groups] = await this.#watch.run(connection, () =>
      Promise.all([connection.xInfoStream(this.#key), connection.xInfoGroups(this.#key)]),
    )
    const group = groups.find(({ name }) => name === this.#group)
    // Redis 7.0 leaves entries-read unset until the group's first read: from the stream's start, that is 0
    const read = group?.['entries-read'] ?? (group?.['last-delivered-id'] === '0-0' ? 0 : undefined)
    const added = stream['entries-added']
    const { channel } = this.#subscriber
    const lag = (group as { lag?: unknown } | undefined)?.lag
    if (typeof lag === 'number') publishNotifier(() => ({ result: 'lag', channel, mode: 'durable', lag }))
    if (typeof read !== 'number' || typeof added !== 'number') return
    const lost = added - stream.length - read
    if (lost <= this.#reportedLost) return
    const count = lost - this.#reportedLost
    publishNotifier(() => ({ result: 'trimmed', channel, mode: 'durable', count }))
    this.#options.logger.error(
      `express-redis-kit notifier: ${count} messages of ${this.#key} were trimmed before group ` +
        `"${this.#group}" read them: raise maxLength, or consume faster`,
    )
    this.#reportedLost = lost
  }

  async #prune(connection: StreamConnection): Promise<void> {
    this.#lastPruneAt = Date.now()
    const consumers = await this.#watch.run(connection, () => connection.xInfoConsumers(this.#key, this.#group))
    for (const { name, pending, idle } of consumers) {
      if (pending === 0 && idle > PRUNE_IDLE_MS) {
        await this.#watch.run(connection, () => connection.xGroupDelConsumer(this.#key, this.#group, name))
      }
    }
  }

  /** `deliveries`: 1 for fresh messages, or the count per id (claims, history). */
  async #handle(
    connection: StreamConnection,
    messages: StreamMessage[],
    deliveries: Map<string, number> | number | undefined,
  ): Promise<void> {
    const { channel } = this.#subscriber
    const done: string[] = []
    try {
      await this.#handleEach(messages, deliveries, channel, done)
    } finally {
      // one XACK per read, not per message; a crash before it only means redelivery (at least once)
      if (done.length > 0) await this.#ack(connection, done)
    }
  }

  /**
   * Acknowledges `ids`; sent once more when its node stopped serving the slot while it waited (the
   * promoted master holds them pending, as its predecessor replicated them), so that they are not
   * delivered again after `claimIdle`.
   */
  async #ack(connection: StreamConnection, ids: string[]): Promise<void> {
    const ack = () => this.#watch.run(connection, () => connection.xAck(this.#key, this.#group, ids))
    await ack().catch((error: unknown) => {
      if (error instanceof MovedWhileWaiting) return ack()
      throw error
    })
  }

  async #handleEach(
    messages: StreamMessage[],
    deliveries: Map<string, number> | number | undefined,
    channel: string,
    done: string[],
  ): Promise<void> {
    for (const { id, message } of messages) {
      if (this.#stopping) return
      const count = typeof deliveries === 'number' ? deliveries : (deliveries?.get(id) ?? 1)
      const text = message?.[ENTRY_FIELD]
      const envelope =
        text === undefined
          ? 'it has been trimmed from the stream'
          : decodeEnvelope(text, channel, this.#options.maxMessageBytes)
      let finished: boolean
      if (typeof envelope === 'string') {
        this.#options.logger.warn(`express-redis-kit notifier: dropped entry ${id} of ${this.#key}: ${envelope}`)
        publishNotifier(() => ({ result: 'dropped', channel, mode: 'durable', reason: 'malformed' }))
        finished = true
      } else if (count > this.#options.maxDeliveries) {
        this.#options.logger.error(
          `express-redis-kit notifier: dropped message ${envelope.id} on "${channel}" after ${count - 1} failed deliveries`,
        )
        publishNotifier(() => ({
          result: 'dropped',
          channel,
          id: envelope.id,
          mode: 'durable',
          reason: 'max-deliveries',
        }))
        finished = true
      } else {
        const meta: EventMeta = { id: envelope.id, channel, time: envelope.time, deliveries: count, streamId: id }
        finished = await this.#subscriber.deliver(envelope, meta)
      }
      if (finished) done.push(id)
    }
  }
}
