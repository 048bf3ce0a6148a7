import { throttledLogger } from '../shared/logger.js'
import { duplicateConnection } from '../shared/redis.js'
import { ENTRY_FIELD } from './durable.js'
import { decodeEnvelope, type Envelope, type EventMeta, type Subscriber } from './envelope.js'
import { Interruptible, stopLoop } from './interruptible.js'
import type { ParsedNotifierOptions } from './options.js'

/** What a fan-out subscriber learns when messages it should have received were trimmed away. */
export interface GapInfo {
  /** The channel, without the prefix. */
  channel: string
  /**
   * The position the subscription continues from: the stream id of the last message it
   * delivered, or the `from` it was given. Messages published after it are missing.
   */
  after: string
  /**
   * The id of the oldest message still in the stream (delivered next), or `undefined` when the
   * stream is empty or gone (Redis restarted without persistence, or the key was deleted).
   */
  oldest: string | undefined
}

interface StreamMessage {
  id: string
  message: Record<string, string> | null
}

/** What XINFO STREAM tells about trimming (Redis 7: `max-deleted-entry-id`). */
interface StreamInfo {
  'last-generated-id'?: string
  'max-deleted-entry-id'?: string
  'first-entry'?: StreamMessage | null
}

/** The stream commands of a fan-out subscription or a history read, on a client or a cluster. */
export interface FanoutCommands {
  xRead(
    stream: { key: string; id: string },
    options: { COUNT: number; BLOCK?: number },
  ): Promise<{ name: string; messages: StreamMessage[] }[] | null>
  xRange(key: string, start: string, end: string, options: { COUNT: number }): Promise<StreamMessage[]>
  xRevRange(key: string, end: string, start: string, options: { COUNT: number }): Promise<StreamMessage[]>
  xInfoStream(key: string): Promise<StreamInfo>
}

interface FanoutConnection extends FanoutCommands {
  connect(): Promise<unknown>
  destroy(): void
}

/** A stream entry id: milliseconds, `-`, sequence number. */
export const STREAM_ID = /^\d{1,20}-\d{1,20}$/

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

/**
 * Whether entries published after `position` may be missing from the stream. `MAXLEN ~`
 * trimming does not move Redis's `max-deleted-entry-id` (only `XDEL` does), so a gap is
 * inferred the conservative way: the entry at `position` is gone itself (the oldest entry is
 * newer), an entry after it was deleted, or the stream does not know `position` at all (gone,
 * or recreated after a restart without persistence and not written to beyond it). It may say
 * so when only `position` itself was trimmed and its successor is still there: never the
 * other way round. `undefined` info: no such stream.
 */
export function isGap(info: StreamInfo | undefined, position: string): boolean {
  if (position === '0-0') return false
  if (info === undefined) return true
  const last = info['last-generated-id']
  if (last !== undefined && compareStreamIds(last, position) < 0) return true
  const deleted = info['max-deleted-entry-id']
  if (deleted !== undefined && compareStreamIds(deleted, position) > 0) return true
  const oldest = info['first-entry']?.id
  if (oldest === undefined) return last !== undefined && compareStreamIds(last, position) > 0
  return compareStreamIds(oldest, position) > 0
}

/** XINFO STREAM, or `undefined` when the stream does not exist. */
export async function streamInfo(redis: FanoutCommands, key: string): Promise<StreamInfo | undefined> {
  try {
    return await redis.xInfoStream(key)
  } catch (error) {
    if (error instanceof Error && /no such key/i.test(error.message)) return undefined
    throw error
  }
}

/** The oldest entry of a stream, from XINFO STREAM. */
export const oldestOf = (info: StreamInfo | undefined): string | undefined => info?.['first-entry']?.id ?? undefined

/** Longest wait of one blocking read: a connection that froze is noticed within it. */
const BLOCK_MS = 5_000

/**
 * One fan-out subscription: reads the channel's stream from its own position with `XREAD
 * BLOCK` (no consumer group: every subscription gets every message) on a connection of its
 * own, delivering each message once, in stream order. After a read fails (the connection
 * dropped, Redis restarted, a failover) it reads again from the last message it delivered,
 * once node-redis has reconnected. Before delivering past a gap (entries trimmed before they
 * were read) it calls `onGap`.
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
  }

  /** Connects and fixes the start position: messages published once it resolved are delivered. */
  async start(): Promise<void> {
    const connection = duplicateConnection<FanoutConnection>(this.#options.client, (error) =>
      this.#warn(`express-redis-kit notifier: the connection of fan-out subscriber ${this.#key} failed`, error),
    )
    this.#connection = connection
    let checkFirst = false
    try {
      await connection.connect()
      if (this.#from === '$') {
        const [last] = await connection.xRevRange(this.#key, '+', '-', { COUNT: 1 })
        this.#position = last?.id ?? '0-0'
      } else if (this.#from === '0') {
        this.#position = '0-0'
      } else {
        this.#position = this.#from
        checkFirst = true
      }
    } catch (error) {
      connection.destroy()
      throw error
    }
    if (this.#stopping) connection.destroy()
    else this.#loop = this.#run(connection, checkFirst)
  }

  /** Stops reading, lets a running handler finish, then closes the connection. */
  async stop(): Promise<void> {
    this.#stopping = true
    await stopLoop(this.#waiting, this.#subscriber, this.#loop, this.#connection, this.#options.timeoutMs)
  }

  async #run(connection: FanoutConnection, checkFirst: boolean): Promise<void> {
    // a gap is possible at the start from an id, after a failed read, and when a read comes back
    // full (only then can more than maxLength entries have been added since the last one: MAXLEN ~
    // keeps at least maxLength entries, so a trimmed one has at least a full batch after it)
    let check = checkFirst
    let failures = 0
    const count = Math.min(this.#options.batchSize, this.#options.maxLength)
    while (!this.#stopping) {
      try {
        if (check) await this.#checkGap(connection)
        check = false
        const messages = await this.#read(connection, count)
        failures = 0
        if (messages.length >= count) {
          await this.#checkGap(connection)
        }
        await this.#handle(messages)
      } catch (error) {
        if (this.#stopping) break
        this.#warn(`express-redis-kit notifier: reading ${this.#key} failed; resuming after ${this.#position}`, error)
        check = true
        failures++
        await this.#waiting.pause(Math.min(1_000, 50 * 2 ** Math.min(failures, 5)))
      }
    }
  }

  async #read(connection: FanoutConnection, count: number): Promise<StreamMessage[]> {
    const reading = connection.xRead({ key: this.#key, id: this.#position }, { COUNT: count, BLOCK: BLOCK_MS })
    const reply = await this.#waiting.wait(reading)
    return reply?.[0]?.messages ?? []
  }

  /** Calls `onGap` (or logs) when entries after the position were trimmed before they were read. */
  async #checkGap(connection: FanoutConnection): Promise<void> {
    if (this.#gapReportedAt === this.#position) return
    const info = await streamInfo(connection, this.#key)
    if (!isGap(info, this.#position)) return
    this.#gapReportedAt = this.#position
    const gap: GapInfo = { channel: this.#subscriber.channel, after: this.#position, oldest: oldestOf(info) }
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
  return undefined
}
