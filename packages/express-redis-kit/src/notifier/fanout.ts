import { publishNotifier } from '../shared/diagnostics.js'
import { throttledLogger } from '../shared/logger.js'
import { duplicateConnection } from '../shared/redis.js'
import { ENTRY_FIELD } from './durable.js'
import { decodeEnvelope, type Envelope, type EventMeta, type Subscriber } from './envelope.js'
import { Interruptible, retryDelay, stopLoop } from './interruptible.js'
import type { ParsedNotifierOptions } from './options.js'
import { MovedWhileWaiting, StallWatch } from './stall-watch.js'

/** What a fan-out subscriber learns when messages it should have received were trimmed away. */
export interface GapInfo {
  /** The channel, without the prefix. */
  channel: string
  /**
   * The position the subscription continues from: the stream id of the last message it
   * delivered, or the `from` it was given. Messages published after it may be missing.
   */
  after: string
  /**
   * The id of the oldest message still in the stream, delivered next; `undefined` when the stream
   * is empty or gone (found after a reconnect: Redis restarted without persistence).
   */
  oldest: string | undefined
}

interface StreamMessage {
  id: string
  message: Record<string, string> | null
}

/** The stream commands of a fan-out subscription or a history read, on a client or a cluster. */
export interface FanoutCommands {
  xRead(
    stream: { key: string; id: string },
    options: { COUNT: number; BLOCK?: number },
  ): Promise<{ name: string; messages: StreamMessage[] }[] | null>
  xRange(key: string, start: string, end: string, options: { COUNT: number }): Promise<StreamMessage[]>
  xRevRange(key: string, end: string, start: string, options: { COUNT: number }): Promise<StreamMessage[]>
}

interface FanoutConnection extends FanoutCommands {
  connect(): Promise<unknown>
  destroy(): void
}

/** The largest part of a stream entry id: Redis reads each as an unsigned 64-bit integer. */
const MAX_PART = 18_446_744_073_709_551_615n

/** The longest id Redis reads (a longer one is refused, whatever it holds). */
const MAX_ID_LENGTH = 127

const ID_PARTS = /^(\d+)-(\d+)$/

/**
 * A stream entry id (`<ms>-<seq>`) as Redis reads it in XREAD and XRANGE: each part decimal
 * digits, leading zeros allowed, at most 2^64-1 (compared as BigInt), at most 127 characters in
 * all. Returns it in the form Redis writes ids (no leading zeros), or `undefined` for anything
 * else: an id Redis would refuse (a part past 2^64-1, an empty part, a fraction), and also the
 * forms Redis 7.0 lets through `strtoull` but never writes (a sign, spaces), a bare `<ms>`, and
 * special ids (`$`, `-`, `+`, `>`, `*`), which mean something else or nothing here.
 */
export function parseStreamId(value: unknown): string | undefined {
  if (typeof value !== 'string' || value.length > MAX_ID_LENGTH) return undefined
  const parts = ID_PARTS.exec(value)
  if (!parts) return undefined
  const ms = BigInt(parts[1] as string)
  const seq = BigInt(parts[2] as string)
  return ms > MAX_PART || seq > MAX_PART ? undefined : `${ms}-${seq}`
}

/** What {@link parseStreamId} accepts, for error messages. */
export const STREAM_ID_EXPECTED = "a stream entry id like '1700000000000-0' (two integers from 0 to 2^64-1)"

/**
 * Orders two Redis Stream entry ids (`meta.streamId`, `<ms>-<seq>`): negative when `a` comes
 * first, 0 when equal, positive after. Both must be valid ids (no default).
 */
export function compareStreamIds(a: string, b: string): number {
  const [aMs = 0n, aSeq = 0n] = a.split('-').map(BigInt)
  const [bMs = 0n, bSeq = 0n] = b.split('-').map(BigInt)
  if (aMs !== bMs) return aMs < bMs ? -1 : 1
  return aSeq === bSeq ? 0 : aSeq < bSeq ? -1 : 1
}

/** The id right before `id` (`'0-0'` has none: itself), so that a read "after" it includes `id`. */
function previousId(id: string): string {
  const [ms = 0n, seq = 0n] = id.split('-').map(BigInt)
  if (seq > 0n) return `${ms}-${seq - 1n}`
  return ms > 0n ? `${ms - 1n}-${MAX_PART}` : '0-0'
}

/**
 * Entries read from the id right before `position` (so `position` itself comes first if the
 * stream still holds it), split: the ones after `position`, and whether some before them may be
 * missing. Trimming (`MAXLEN ~`) removes the oldest entries first, so when `position` is still
 * there nothing after it was trimmed; when it is gone and later entries came back, the entries
 * between are missing: trimmed, or lost with the stream (a Redis restarted without persistence
 * knows none of the old ids). Conservative: a gap is reported when only `position` itself was
 * trimmed and its successor is still there, never missed (except entries removed with `XDEL`).
 */
export function afterPosition(position: string, entries: StreamMessage[]): { entries: StreamMessage[]; gap: boolean } {
  if (position === '0-0') return { entries, gap: false }
  if (entries[0]?.id === position) return { entries: entries.slice(1), gap: false }
  return { entries, gap: true }
}

/** The id to read after, to get `position` back first (see {@link afterPosition}). */
export const readFrom = (position: string): string => (position === '0-0' ? position : previousId(position))

/** Longest wait of one blocking read: a connection that froze is noticed within it. */
const BLOCK_MS = 5_000

/**
 * One fan-out subscription: reads the channel's stream from its own position with `XREAD
 * BLOCK` (no consumer group: every subscription gets every message) on a connection of its
 * own, delivering each message once, in stream order. After a read fails (the connection
 * dropped, Redis restarted, a failover) it reads again from the last message it delivered,
 * once node-redis has reconnected, pausing longer after each failure in a row (see
 * `retryDelay`). Before delivering past a gap (entries trimmed before they were read) it calls `onGap`.
 */
export class FanoutSubscription {
  readonly #options: ParsedNotifierOptions
  readonly #subscriber: Subscriber<unknown>
  readonly #key: string
  readonly #from: string
  readonly #onGap: ((info: GapInfo) => void | Promise<void>) | undefined
  readonly #warn: (message: string, error?: unknown) => void
  /** The stream id of the last entry handled (or the start position). */
  #position = '0-0'
  /** The position a gap was last reported at: it is reported once. */
  #gapReportedAt: string | undefined
  #connection: FanoutConnection | undefined
  #loop: Promise<void> | undefined
  #stopping = false
  /** Interrupts what the loop is waiting on (a blocking read or a pause), not a handler. */
  readonly #waiting = new Interruptible()
  /** Follows the key's slot to another node when the one a read waits on stops answering. */
  readonly #watch: StallWatch

  constructor(
    options: ParsedNotifierOptions,
    subscriber: Subscriber<unknown>,
    from: string,
    onGap: ((info: GapInfo) => void | Promise<void>) | undefined,
  ) {
    this.#options = options
    this.#subscriber = subscriber
    this.#key = options.prefix + subscriber.channel
    this.#from = from
    this.#onGap = onGap
    this.#warn = throttledLogger(options.logger, 'warn')
    this.#watch = new StallWatch(options, this.#key, `fan-out subscriber ${this.#key}`)
  }

  /** Connects and fixes the start position: messages published once it resolved are delivered. */
  async start(): Promise<void> {
    const connection = duplicateConnection<FanoutConnection>(this.#options.client, (error) =>
      this.#warn(`express-redis-kit notifier: the connection of fan-out subscriber ${this.#key} failed`, error),
    )
    this.#connection = connection
    try {
      await connection.connect()
      if (this.#from === '$') {
        const [last] = await connection.xRevRange(this.#key, '+', '-', { COUNT: 1 })
        this.#position = last?.id ?? '0-0'
      } else {
        this.#position = this.#from === '0' ? '0-0' : this.#from
      }
    } catch (error) {
      connection.destroy()
      throw error
    }
    if (this.#stopping) connection.destroy()
    else this.#loop = this.#run(connection)
  }

  /** Stops reading, lets a running handler finish, then closes the connection. */
  async stop(): Promise<void> {
    this.#stopping = true
    await stopLoop(this.#waiting, this.#subscriber, this.#loop, this.#connection, this.#options.timeoutMs)
  }

  /**
   * While behind, each read is a non-blocking `XREAD` from the id right before the position, which
   * gives the position's own entry back first if the stream still holds it (else: a gap, reported
   * before what follows is delivered). Once caught up (a read returned less than a batch), it waits
   * with a blocking `XREAD` after the position; a blocking read that comes back full may have
   * jumped a gap (only a full batch can: `MAXLEN ~` keeps at least `maxLength`), so it is not
   * delivered but read again the first way. After a failure it starts over the first way, which
   * also notices at once a stream lost with a Redis restart. Failures count as "in a row" until a
   * blocking read succeeds or a read delivers something: a loop whose first read works and whose
   * blocking read fails every time backs off as one whose reads all fail. A read abandoned because
   * its node stopped serving the slot (see StallWatch) starts over the first way at once, on the
   * slot's new master.
   */
  async #run(connection: FanoutConnection): Promise<void> {
    const count = Math.min(this.#options.batchSize, this.#options.maxLength)
    let failures = 0
    let caughtUp = false
    while (!this.#stopping) {
      try {
        if (caughtUp) {
          const entries = await this.#read(connection, this.#position, count, BLOCK_MS)
          failures = 0
          if (entries.length >= count) caughtUp = false
          else await this.#handle(entries)
          continue
        }
        const extra = this.#position === '0-0' ? 0 : 1
        const read = afterPosition(
          this.#position,
          await this.#read(connection, readFrom(this.#position), count + extra, undefined),
        )
        if (read.entries.length > 0) failures = 0
        if (read.gap) await this.#reportGap(read.entries[0]?.id)
        await this.#handle(read.entries)
        caughtUp = read.entries.length < count
      } catch (error) {
        if (this.#stopping) break
        caughtUp = false
        if (error instanceof MovedWhileWaiting) continue
        this.#warn(`express-redis-kit notifier: reading ${this.#key} failed; resuming after ${this.#position}`, error)
        failures++
        await this.#waiting.pause(retryDelay(failures))
      }
    }
  }

  async #read(
    connection: FanoutConnection,
    after: string,
    count: number,
    block: number | undefined,
  ): Promise<StreamMessage[]> {
    const options = block === undefined ? { COUNT: count } : { COUNT: count, BLOCK: block }
    const reading = this.#watch.run(connection, () => connection.xRead({ key: this.#key, id: after }, options), block)
    const reply = await this.#waiting.wait(reading)
    return reply?.[0]?.messages ?? []
  }

  /** Calls `onGap` (or logs) before delivering past messages trimmed before they were read; once per position. */
  async #reportGap(oldest: string | undefined): Promise<void> {
    if (this.#gapReportedAt === this.#position) return
    this.#gapReportedAt = this.#position
    const gap: GapInfo = { channel: this.#subscriber.channel, after: this.#position, oldest }
    publishNotifier(() => ({ result: 'trimmed', channel: gap.channel, mode: 'fanout' }))
    if (this.#onGap === undefined) {
      this.#options.logger.error(
        `express-redis-kit notifier: messages of ${this.#key} after ${gap.after} were trimmed before this ` +
          'subscriber read them: raise maxLength, or consume faster',
      )
      return
    }
    try {
      await this.#onGap(gap)
    } catch (error) {
      this.#options.logger.error(`express-redis-kit notifier: onGap of "${gap.channel}" failed`, error)
    }
  }

  async #handle(messages: StreamMessage[]): Promise<void> {
    for (const { id, message } of messages) {
      if (this.#stopping) return
      const envelope = entryEnvelope(this.#options, this.#subscriber.channel, this.#key, id, message)
      if (envelope !== undefined) {
        const meta: EventMeta = {
          id: envelope.id,
          channel: envelope.channel,
          time: envelope.time,
          deliveries: 1,
          streamId: id,
        }
        await this.#subscriber.deliver(envelope, meta)
      }
      this.#position = id
    }
  }
}

/** The envelope of a stream entry, or `undefined` (logged) when it is malformed. */
export function entryEnvelope(
  options: ParsedNotifierOptions,
  channel: string,
  key: string,
  id: string,
  message: Record<string, string> | null,
): Envelope | undefined {
  const text = message?.[ENTRY_FIELD]
  const envelope =
    text === undefined ? 'it has no message field' : decodeEnvelope(text, channel, options.maxMessageBytes)
  if (typeof envelope !== 'string') return envelope
  options.logger.warn(`express-redis-kit notifier: dropped entry ${id} of ${key}: ${envelope}`)
  publishNotifier(() => ({ result: 'dropped', channel, mode: options.mode, reason: 'malformed' }))
  return undefined
}
