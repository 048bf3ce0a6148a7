import type { Request, Response } from 'express'
import type { EventMeta, Notifier } from 'express-redis-kit'
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

/**
 * Publishes a user event to every instance (and their /events clients). `messageId`, when given,
 * is the message's id on every publication of this event, so that a repeat is recognised.
 */
export function publishUserEvent(
  notifier: Notifier,
  name: UserEventName,
  event: UserEvent,
  messageId?: string,
): Promise<string> {
  return notifier.publish(name, event, messageId === undefined ? {} : { id: messageId })
}

const HEARTBEAT_MS = 15_000
/** Unsent bytes a client may have queued before it is disconnected. */
const MAX_BUFFERED_BYTES = 1024 * 1024

/**
 * Streams user events to Server-Sent Events clients. Each instance subscribes once per event
 * (through the notifier, so events published by any instance arrive) and writes them to its own
 * connected clients. When the subscriber connection to Redis came back after an outage, events may
 * have been missed: clients get a `resync` event telling them to reload what they show.
 */
export class EventStream {
  readonly #clients = new Set<Response>()
  readonly #ready: Promise<void>
  #heartbeat: NodeJS.Timeout | undefined
  #stops: (() => Promise<void>)[] = []

  constructor(notifier: Notifier, logger: Pick<Console, 'warn'>) {
    this.#ready = Promise.all(
      USER_EVENTS.map((name) =>
        notifier.subscribe(name, (event, meta) => this.#broadcast(name, event, meta), { parse: UserEvent.parse }),
      ),
    ).then((stops) => {
      this.#stops = stops
    })
    this.#ready.catch((error: unknown) => logger.warn('events: subscribing failed', error))
  }

  /** Resolves once the subscriptions are in place (they wait while Redis is unreachable). */
  ready(): Promise<void> {
    return this.#ready
  }

  /** Tells every client that events may have been missed. Call it from the notifier's `onReconnect`. */
  resync(): void {
    this.#write('event: resync\ndata: {}\n\n')
  }

  /** Handles GET /events: keeps the response open and writes each event to it. */
  async connect(req: Request, res: Response): Promise<void> {
    res.writeHead(200, {
      'Content-Type': 'text/event-stream; charset=utf-8',
      'Cache-Control': 'no-store',
      Connection: 'keep-alive',
      'X-Accel-Buffering': 'no',
    })
    res.write('retry: 3000\n: connected\n\n')
    this.#clients.add(res)
    this.#heartbeat ??= setInterval(() => this.#write(': heartbeat\n\n'), HEARTBEAT_MS).unref()
    req.on('close', () => {
      this.#clients.delete(res)
      if (this.#clients.size === 0 && this.#heartbeat !== undefined) {
        clearInterval(this.#heartbeat)
        this.#heartbeat = undefined
      }
    })
  }

  /** Ends every client stream and the subscriptions. */
  async close(): Promise<void> {
    for (const res of this.#clients) res.end()
    this.#clients.clear()
    clearInterval(this.#heartbeat)
    await Promise.all(this.#stops.map((stop) => stop()))
  }

  #broadcast(name: UserEventName, event: UserEvent, meta: EventMeta): void {
    this.#write(sseMessage({ id: meta.id, event: name, data: { ...event, time: meta.time } }))
  }

  #write(chunk: string): void {
    for (const res of this.#clients) {
      // a client that stopped reading would make its unsent events pile up in memory: drop it (it reconnects)
      if (res.writableLength > MAX_BUFFERED_BYTES) {
        this.#clients.delete(res)
        res.destroy()
      } else res.write(chunk)
    }
  }
}
