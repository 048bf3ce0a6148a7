import { once } from 'node:events'
import type { Request, Response } from 'express'
import { compareStreamIds, type EventMeta, type Notifier } from 'express-redis-kit'
import { z } from 'zod'

/** The user events the app publishes and streams to /events. */
export const USER_EVENTS = ['user.created', 'user.updated', 'user.deleted'] as const
export type UserEventName = (typeof USER_EVENTS)[number]

/** Payload of every user event; subscribers validate it (a message that does not fit is logged and dropped). */
export const UserEvent = z.object({ id: z.number().int().positive() }).strict()
export type UserEvent = z.infer<typeof UserEvent>

/**
 * One Server-Sent Events message. What comes from elsewhere (the id of a message received from
 * Redis, the event name) loses CR, LF and NUL: a line break would end the field and let the
 * rest forge fields or whole events (the notifier refuses such ids already; this does not rely on
 * it). `data` is JSON.stringify's output, which escapes every control character: one line.
 */
export function sseMessage(fields: { id?: string; event: string; data: unknown }): string {
  const line = (text: string) => text.replace(/[\r\n\0]/g, '')
  const id = fields.id === undefined ? '' : `id: ${line(fields.id)}\n`
  return `${id}event: ${line(fields.event)}\ndata: ${JSON.stringify(fields.data)}\n\n`
}

/** The one channel of every user event: one stream, one total order that every client sees. */
export const USER_CHANNEL = 'users'

/** What travels on {@link USER_CHANNEL}: the event's name and its payload. */
export const UserEventMessage = z.object({ type: z.enum(USER_EVENTS), id: z.number().int().positive() }).strict()
export type UserEventMessage = z.infer<typeof UserEventMessage>

/**
 * Publishes a user event to every instance (and their /events clients). `messageId`, when given,
 * is the message's id on every publication of this event (the outbox relays a row with
 * `outbox-<rowId>`), so that a repeat is recognised and dropped by /events.
 */
export function publishUserEvent(
  notifier: Notifier,
  name: UserEventName,
  event: UserEvent,
  messageId?: string,
): Promise<string> {
  const message: UserEventMessage = { type: name, id: event.id }
  return notifier.publish(USER_CHANNEL, message, messageId === undefined ? {} : { id: messageId })
}

const HEARTBEAT_MS = 15_000
/** Unsent bytes a client may have queued before it is disconnected. */
const MAX_BUFFERED_BYTES = 1024 * 1024
/** Events read from Redis per round trip when a client catches up. */
const REPLAY_PAGE = 1000
/** Message ids remembered to recognise a repeat (the outbox relaying a row again). */
const RECENT_IDS = 10_000
/** What a Last-Event-ID must be: a stream entry id, as /events writes them. */
const LAST_EVENT_ID = /^\d{1,20}-\d{1,20}$/

interface StreamEvent {
  message: UserEventMessage
  meta: EventMeta
}

interface Client {
  res: Response
  /** The stream id of the last event written to it; undefined until the first (a new client). */
  last: string | undefined
  /** While it catches up from history: the live events that arrive meanwhile, written after. */
  pending: StreamEvent[] | undefined
}

/**
 * The first stream id each recent message id was seen at: a message published again (same
 * `meta.id`, a later stream entry) is a repeat. Bounded: the oldest ids are forgotten first.
 */
export class RecentIds {
  readonly #first = new Map<string, string>()

  constructor(readonly max = RECENT_IDS) {}

  /** Whether the message `id` at stream entry `streamId` repeats one seen at an earlier entry. */
  isRepeat(id: string, streamId: string): boolean {
    const first = this.#first.get(id)
    if (first !== undefined && compareStreamIds(first, streamId) <= 0) return first !== streamId
    this.#first.set(id, streamId)
    if (this.#first.size > this.max) this.#first.delete(this.#first.keys().next().value as string)
    return false
  }
}

/**
 * Streams user events to Server-Sent Events clients. Each instance subscribes once to the
 * `users` channel of the notifier (fan-out mode: every instance reads every event from a Redis
 * Stream, and resumes after an outage where it stopped) and writes each event to its clients
 * with the stream entry id as the SSE `id:`. A client that reconnects with `Last-Event-ID`
 * (EventSource sends it), to this instance or another, first gets what came after that id from
 * the stream's history (live events that arrive meanwhile wait, and an event is never written
 * twice), then the live events. When events it missed are no longer in the stream (trimmed by
 * EVENTS_MAX_LENGTH, or lost with Redis), it gets `resync`: reload what you show.
 */
export class EventStream {
  readonly #notifier: Notifier
  readonly #logger: Pick<Console, 'warn'>
  readonly #clients = new Set<Client>()
  readonly #recent = new RecentIds()
  readonly #ready: Promise<void>
  #heartbeat: NodeJS.Timeout | undefined
  #stop: (() => Promise<void>) | undefined

  constructor(notifier: Notifier, logger: Pick<Console, 'warn'>) {
    this.#notifier = notifier
    this.#logger = logger
    this.#ready = notifier
      .subscribe(USER_CHANNEL, (message, meta) => this.#live({ message, meta }), {
        parse: UserEventMessage.parse,
        // this instance missed events (it fell behind, or Redis lost the stream): so did its clients
        onGap: () => this.resync(),
      })
      .then((stop) => {
        this.#stop = stop
      })
    this.#ready.catch((error: unknown) => logger.warn('events: subscribing failed', error))
  }

  /** Resolves once the subscription is in place (it waits while Redis is unreachable). */
  ready(): Promise<void> {
    return this.#ready
  }

  /** Tells every client that events may have been missed. */
  resync(): void {
    for (const client of this.#clients) this.#send(client, 'event: resync\ndata: {}\n\n')
  }

  /**
   * Handles GET /events: keeps the response open and writes each event to it, after what the
   * client missed since its `Last-Event-ID` header, or `?lastEventId=` when there is none (a
   * malformed one gets `resync`).
   */
  async connect(req: Request, res: Response): Promise<void> {
    res.writeHead(200, {
      'Content-Type': 'text/event-stream; charset=utf-8',
      'Cache-Control': 'no-store',
      Connection: 'keep-alive',
      'X-Accel-Buffering': 'no',
    })
    res.write('retry: 3000\n: connected\n\n')
    // the header EventSource sends on its reconnects, or the query of a new EventSource that resumes
    const query = typeof req.query.lastEventId === 'string' ? req.query.lastEventId : undefined
    const header = (req.get('Last-Event-ID') ?? query)?.trim()
    const resume = header !== undefined && header !== '' && LAST_EVENT_ID.test(header) ? header : undefined
    const client: Client = { res, last: resume, pending: resume === undefined ? undefined : [] }
    this.#clients.add(client)
    this.#heartbeat ??= setInterval(() => this.#writeAll(': heartbeat\n\n'), HEARTBEAT_MS).unref()
    req.on('close', () => {
      this.#clients.delete(client)
      if (this.#clients.size === 0 && this.#heartbeat !== undefined) {
        clearInterval(this.#heartbeat)
        this.#heartbeat = undefined
      }
    })
    if (header !== undefined && header !== '' && resume === undefined) this.#send(client, 'event: resync\ndata: {}\n\n')
    if (resume !== undefined) await this.#replay(client)
  }

  /** Ends every client stream and the subscription. */
  async close(): Promise<void> {
    for (const client of this.#clients) client.res.end()
    this.#clients.clear()
    clearInterval(this.#heartbeat)
    await this.#stop?.()
  }

  /** Writes what `client` missed from the stream's history, then the live events held meanwhile. */
  async #replay(client: Client): Promise<void> {
    try {
      for (;;) {
        const after = client.last as string
        const page = await this.#notifier.history<unknown>(USER_CHANNEL, { after, limit: REPLAY_PAGE })
        if (!this.#clients.has(client)) return
        if (page.trimmed) {
          // what it missed is gone: it reloads, then goes on with the live events
          this.#send(client, 'event: resync\ndata: {}\n\n')
          client.last = undefined
          break
        }
        for (const { event, meta } of page.messages) {
          const message = UserEventMessage.safeParse(event)
          if (message.success) this.#deliver(client, { message: message.data, meta })
          else client.last = meta.streamId
          // a client that reads slowly is waited for: the replay does not pile up in memory
          if (client.res.writableLength > MAX_BUFFERED_BYTES / 2) {
            await Promise.race([once(client.res, 'drain'), once(client.res, 'close')])
          }
          if (!this.#clients.has(client)) return
        }
        if (page.messages.length < REPLAY_PAGE) break
      }
    } catch (error) {
      if ((error as { code?: unknown }).code === 'ERK_INVALID_ARGUMENT') {
        // an id of the right shape that Redis refuses (a part above 2^64-1): what it missed
        // cannot be found, as for a malformed one; it reloads, then goes on with the live events
        if (!this.#clients.has(client)) return
        this.#send(client, 'event: resync\ndata: {}\n\n')
        client.last = undefined
        return this.#flushHeld(client)
      }
      // Redis failed: end the stream; EventSource reconnects (retry: 3000) with the same Last-Event-ID
      this.#logger.warn('events: replaying missed events failed', error)
      this.#clients.delete(client)
      client.res.end()
      return
    }
    this.#flushHeld(client)
  }

  /** Delivers the live events held while `client`'s replay ran; from now on they go out at once. */
  #flushHeld(client: Client): void {
    const held = client.pending ?? []
    client.pending = undefined
    for (const event of held) this.#deliver(client, event)
  }

  #live(event: StreamEvent): void {
    for (const client of this.#clients) {
      if (client.pending !== undefined) client.pending.push(event)
      else this.#deliver(client, event)
    }
  }

  /** Writes `event` to `client` unless it already has it (by stream id) or it repeats a message (by message id). */
  #deliver(client: Client, { message, meta }: StreamEvent): void {
    const streamId = meta.streamId as string
    if (client.last !== undefined && compareStreamIds(streamId, client.last) <= 0) return
    client.last = streamId
    if (this.#recent.isRepeat(meta.id, streamId)) return
    this.#send(client, sseMessage({ id: streamId, event: message.type, data: { id: message.id, time: meta.time } }))
  }

  #writeAll(chunk: string): void {
    for (const client of this.#clients) this.#send(client, chunk)
  }

  #send(client: Client, chunk: string): void {
    // a client that stopped reading would make its unsent events pile up in memory: drop it (it reconnects)
    if (client.res.writableLength > MAX_BUFFERED_BYTES) {
      this.#clients.delete(client)
      client.res.destroy()
    } else client.res.write(chunk)
  }
}
