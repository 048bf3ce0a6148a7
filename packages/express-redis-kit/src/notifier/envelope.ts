import { randomUUID } from 'node:crypto'
import { type NotifierEvent, notifierChannel } from '../shared/diagnostics.js'
import { describe, RedisKitError } from '../shared/errors.js'
import type { Logger } from '../shared/logger.js'

/** What travels through Redis: the payload wrapped with its identity. */
export interface Envelope {
  /**
   * A random UUID given at `publish` (or the id `publish` was given); the same on every delivery of this message. A received
   * message whose id is not 1 to 200 characters of `A-Z a-z 0-9 . _ : -` is dropped
   * ({@link ENVELOPE_ID}), so an id is always safe to write into a header, a log line or an SSE `id:` field.
   */
  id: string
  /** The channel it was published on, without the prefix. */
  channel: string
  /** When it was published: milliseconds since the epoch, on the publisher's clock. */
  time: number
  /** The published value, as JSON gave it back. */
  payload: unknown
}

/** What a handler receives besides the event. */
export interface EventMeta {
  /** The message's id (see {@link Envelope.id}): use it to recognise a duplicate delivery. */
  id: string
  channel: string
  /** Publication time, milliseconds since the epoch. */
  time: number
  /** How many times this message has been delivered to the group (durable), 1 in pub/sub. */
  deliveries: number
  /** The Redis Stream entry id (durable mode only). */
  streamId?: string
}

/** A subscriber's handler; a returned promise is awaited (and, in durable mode, acknowledged after). */
export type EventHandler<T> = (event: T, meta: EventMeta) => void | Promise<void>

/**
 * Serializes a new message, or throws `ERK_INVALID_MESSAGE` naming what is wrong. `id` is the
 * caller's (see `PublishOptions.id`), a random UUID when not given.
 */
export function encodeEnvelope(
  channel: string,
  payload: unknown,
  maxBytes: number,
  id: string = randomUUID(),
): { id: string; json: string } {
  if (typeof id !== 'string' || !ENVELOPE_ID.test(id))
    throw invalid(`the id must be ${ENVELOPE_ID_EXPECTED}; it is ${describe(id)}`)
  let payloadJson: string | undefined
  try {
    payloadJson = JSON.stringify(payload)
  } catch (error) {
    throw invalid(`the payload cannot be serialized to JSON (${(error as Error).message})`)
  }
  if (payloadJson === undefined) {
    throw invalid(
      'the payload must be a JSON value (undefined, a function, a symbol or a toJSON() giving undefined is not)',
    )
  }
  // the envelope around the payload's JSON, without serializing the payload a second time
  const json = `{"id":"${id}","channel":${JSON.stringify(channel)},"time":${Date.now()},"payload":${payloadJson}}`
  const bytes = Buffer.byteLength(json)
  if (bytes > maxBytes) throw invalid(`the message is ${bytes} bytes, more than maxMessageBytes (${maxBytes})`)
  return { id, json }
}

function invalid(reason: string): RedisKitError {
  return new RedisKitError('ERK_INVALID_MESSAGE', `express-redis-kit: cannot publish: ${reason}`, { status: 400 })
}

/** What a received envelope's id must be: no spaces, quotes or control characters (CR, LF) in it. */
export const ENVELOPE_ID = /^[A-Za-z0-9._:-]{1,200}$/
const ENVELOPE_ID_EXPECTED = '1 to 200 characters of A-Z, a-z, 0-9, ".", "_", ":" and "-"'

/** Parses a received message; returns why it is unusable instead of throwing. */
export function decodeEnvelope(text: string, channel: string, maxBytes: number): Envelope | string {
  if (Buffer.byteLength(text) > maxBytes) return `it is larger than maxMessageBytes (${maxBytes})`
  let value: unknown
  try {
    value = JSON.parse(text)
  } catch {
    return 'it is not valid JSON'
  }
  const envelope = value as Partial<Envelope> | null
  if (
    typeof envelope !== 'object' ||
    envelope === null ||
    typeof envelope.id !== 'string' ||
    envelope.channel !== channel ||
    typeof envelope.time !== 'number' ||
    !('payload' in envelope)
  ) {
    return 'it is not an express-redis-kit envelope ({ id, channel, time, payload }) for this channel'
  }
  if (!ENVELOPE_ID.test(envelope.id)) return `its id is not ${ENVELOPE_ID_EXPECTED}`
  return envelope as Envelope
}

/** One `subscribe()` call: its handler, optional `parse`, and the order its messages run in. */
export class Subscriber<T> {
  #tail: Promise<unknown> = Promise.resolve()

  constructor(
    readonly channel: string,
    private readonly handler: EventHandler<T>,
    private readonly parse: ((payload: unknown) => T) | undefined,
    private readonly logger: Logger,
    /** The notifier's mode, for the diagnostics events (a failed handler is retried only in durable mode). */
    readonly mode: NotifierEvent['mode'] = 'pubsub',
  ) {}

  /**
   * Runs the handler for one message, after the ones before it. Resolves to `true` when
   * the message is done with (handled, or dropped because `parse` rejected it) and `false`
   * when the handler threw (the message may be delivered again). Never rejects.
   */
  deliver(envelope: Envelope, meta: EventMeta): Promise<boolean> {
    const run = this.#tail.then(() => this.#run(envelope, meta))
    this.#tail = run
    return run
  }

  /** Resolves when every message handed to `deliver` so far has been handled. */
  idle(): Promise<unknown> {
    return this.#tail
  }

  async #run(envelope: Envelope, meta: EventMeta): Promise<boolean> {
    let event: T
    try {
      event = this.parse === undefined ? (envelope.payload as T) : this.parse(envelope.payload)
    } catch (error) {
      this.logger.warn(
        `express-redis-kit notifier: dropped message ${meta.id} on "${this.channel}": its payload failed parse()`,
        error,
      )
      this.#publish(meta, 'dropped', 'parse')
      return true
    }
    try {
      await this.handler(event, meta)
      this.#publish(meta, meta.deliveries > 1 ? 'redelivered' : 'delivered')
      return true
    } catch (error) {
      this.logger.error(
        `express-redis-kit notifier: the handler of "${this.channel}" failed on message ${meta.id}`,
        error,
      )
      // In durable mode the message is delivered again (dropped after maxDeliveries: see durable.ts).
      if (this.mode !== 'durable') this.#publish(meta, 'dropped', 'handler')
      return false
    }
  }

  #publish(meta: EventMeta, result: NotifierEvent['result'], reason?: string): void {
    if (notifierChannel.hasSubscribers) {
      notifierChannel.publish({
        result,
        channel: this.channel,
        id: meta.id,
        mode: this.mode,
        ...(reason ? { reason } : {}),
      } satisfies NotifierEvent)
    }
  }
}
