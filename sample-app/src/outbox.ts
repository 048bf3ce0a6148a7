/**
 * The transactional outbox. A change writes what it must announce (a user event, a background job, a cache
 * invalidation) as rows of the `Outbox` table in its own transaction (writeOutbox): both commit, or neither. A relay,
 * which any instance may run, claims rows in id order, hands each to the handler registered for its kind (a user event
 * is published through the notifier as message `outbox-<row id>`), deletes the rows it relayed and commits.
 *
 * - At least once: a row is deleted in the transaction that claimed it, after its handler succeeded. A relay that dies
 *   between the two (killed, its database connection cut) leaves the row, which is relayed again, with the same
 *   message id: consumers drop the repeat by id.
 * - Claims take `FOR UPDATE SKIP LOCKED`: relays running at once claim different rows, and a row is never relayed by
 *   two of them unless one died (above).
 * - Order: each relay relays its rows in id order and stops at the first failure (the rows behind wait), so one relay
 *   publishes in id order. Relays running at once publish their batches side by side: two rows claimed by different
 *   relays may come out in either order. Ids are given at insert, not at commit: a row whose transaction commits late
 *   can be relayed after rows with higher ids.
 * - Woken by PostgreSQL `LISTEN outbox` (the table's insert trigger notifies on commit) on a connection of its own,
 *   and every `pollMs` anyway (a notification missed while that connection was down, rows a dead relay left).
 */
import type { Notifier } from 'express-redis-kit'
import { invalidateTags } from 'express-redis-kit'
import pg from 'pg'
import { z } from 'zod'
import { publishUserEvent, USER_EVENTS, UserEvent } from './events.js'
import type { Prisma } from './generated/prisma/client.js'
import type { Redis } from './redis.js'

/**
 * The kinds of outbox rows: `event` a user event (name: user.created...; payload: { id }), `job` a background job
 * (name and data of the job), `cache` cache tags to invalidate (name: invalidate; payload: { tags }).
 */
export type OutboxKind = 'event' | 'job' | 'cache'

/** One outbox row, as a handler receives it. */
export interface OutboxMessage {
  /** The row's id (a bigint, in decimal): the order of the rows, and the same on every relay of this row. */
  id: string
  kind: OutboxKind
  name: string
  /** The JSON payload, as written: handlers validate it. */
  payload: unknown
  createdAt: Date
  /** Earlier relays of this row that failed. */
  attempts: number
}

/** Relays one row; resolves once it is done (the row is then deleted), rejects to have it retried. */
export type OutboxHandler = (message: OutboxMessage) => Promise<void>

/** A row to write: see {@link OutboxKind} for each kind's name and payload. */
export interface OutboxEntry {
  kind: OutboxKind
  name: string
  payload: Prisma.InputJsonValue
}

/**
 * Writes rows to the outbox inside the caller's transaction (`prisma.$transaction(async (tx) => ...)`), in the
 * order given, in one INSERT; they are relayed once it commits. Resolves to their ids (decimal), in the same order.
 */
export async function writeOutbox(tx: Prisma.TransactionClient, entries: OutboxEntry[]): Promise<string[]> {
  const rows = await tx.outbox.createManyAndReturn({ data: entries, select: { id: true } })
  return rows.map((row) => String(row.id))
}

/** The message id a row is relayed with, on every relay of it: `outbox-<row id>`. */
export function outboxMessageId(message: Pick<OutboxMessage, 'id'>): string {
  return `outbox-${message.id}`
}

/** The handler of `event` rows: publishes the user event through the notifier, as message `outbox-<row id>`. */
export function userEventHandler(notifier: Notifier): OutboxHandler {
  const name = z.enum(USER_EVENTS)
  return async function relayUserEvent(message) {
    await publishUserEvent(
      notifier,
      name.parse(message.name),
      UserEvent.parse(message.payload),
      outboxMessageId(message),
    )
  }
}

const CacheInvalidation = z.object({ tags: z.array(z.string().min(1)).min(1) }).strict()

/** The handler of `cache` rows: invalidates their tags (payload `{ tags }`) in the app's cache at `prefix`. */
export function cacheInvalidationHandler(redis: Redis, prefix: string): OutboxHandler {
  return async function relayCacheInvalidation(message) {
    await invalidateTags(redis, CacheInvalidation.parse(message.payload).tags, { prefix })
  }
}

/** Options of {@link OutboxRelay}. */
export interface OutboxRelayOptions {
  /** The PostgreSQL database that holds the `Outbox` table (the app's DATABASE_URL). */
  databaseUrl: string
  /**
   * Rows claimed, relayed and deleted per transaction. Larger batches cost fewer round trips; a relay that dies
   * mid-batch relays up to a batch again.
   * @default 100
   */
  batchSize?: number
  /**
   * How often (ms) the relay looks for rows without being notified: rows inserted while its LISTEN connection was
   * down, or left by a relay that died.
   * @default 5000
   */
  pollMs?: number
  /**
   * The longest wait (ms) between two tries while relaying fails (Redis or the database down, a handler failing); the
   * wait starts at 100 ms and doubles.
   * @default 30000
   */
  retryMaxMs?: number
  /** Where failures and recoveries are reported. @default console */
  logger?: Pick<Console, 'warn' | 'error'>
}

/** How long after a warning about rows of a kind no handler is registered for it is repeated. */
const WAITING_REPORT_MS = 60_000
const FIRST_RETRY_MS = 100

/**
 * Relays outbox rows: register a handler per kind, then start(). Never throws after start(): failures are logged
 * and retried with backoff. Rows of a kind without a handler wait in the table (logged once a minute).
 */
export class OutboxRelay {
  readonly #handlers = new Map<OutboxKind, OutboxHandler>()
  readonly #options: Required<OutboxRelayOptions>
  readonly #pool: pg.Pool
  readonly #sleepers = new Set<{ wake: () => void; onNotify: boolean }>()
  #listener: pg.Client | undefined
  #notified = false
  #stopped = false
  #running: Promise<void>[] = []
  #relayed = 0
  #waitingReportedAt = 0

  constructor(options: OutboxRelayOptions) {
    this.#options = {
      batchSize: 100,
      pollMs: 5_000,
      retryMaxMs: 30_000,
      logger: console,
      ...definedOnly(options),
      databaseUrl: options.databaseUrl,
    }
    this.#pool = new pg.Pool({
      connectionString: options.databaseUrl,
      max: 1,
      connectionTimeoutMillis: 2_000,
      statement_timeout: 5_000,
      // a handler that hangs must not hold its rows forever: the server ends the transaction (the rows are relayed again)
      idle_in_transaction_session_timeout: 60_000,
    })
    this.#pool.on('error', () => {}) // an idle connection the server dropped; the next claim reports it
  }

  /** Rows this relay relayed (and deleted) since it started. */
  get relayed(): number {
    return this.#relayed
  }

  /** Relays rows of `kind` with `handler` (replacing an earlier one); rows of a kind without a handler wait. */
  register(kind: OutboxKind, handler: OutboxHandler): this {
    this.#handlers.set(kind, handler)
    this.#wake()
    return this
  }

  /** Starts listening and relaying (what is already in the table first). */
  start(): this {
    if (this.#running.length > 0 || this.#stopped) return this
    this.#running = [this.#relayLoop(), this.#listenLoop()]
    return this
  }

  /** Stops: the batch in hand is finished (or rolled back by the database), then the connections close. */
  async stop(): Promise<void> {
    this.#stopped = true
    for (const sleeper of this.#sleepers) sleeper.wake()
    await this.#listener?.end().catch(() => {})
    await Promise.all(this.#running)
    await this.#pool.end().catch(() => {})
  }

  async #relayLoop(): Promise<void> {
    let failures = 0
    while (!this.#stopped) {
      this.#notified = false
      let full: boolean
      try {
        full = await this.#relayBatch()
        await this.#reportWaiting()
      } catch (error) {
        failures++
        const waitMs = Math.min(FIRST_RETRY_MS * 2 ** Math.min(failures - 1, 20), this.#options.retryMaxMs)
        this.#options.logger.warn(
          `outbox: relaying failed (${failures} in a row; next try in ${waitMs} ms): ${describe(error)}`,
        )
        await this.#sleep(waitMs, false)
        continue
      }
      if (failures > 0) this.#options.logger.warn(`outbox: relaying again after ${failures} failed tries`)
      failures = 0
      if (!full && !this.#notified) await this.#sleep(this.#options.pollMs, true)
    }
  }

  /** Claims a batch, relays it in id order up to the first failure, deletes what was relayed, commits. */
  async #relayBatch(): Promise<boolean> {
    const kinds = [...this.#handlers.keys()]
    if (kinds.length === 0) return false
    const client = await this.#pool.connect()
    let failure: { row: OutboxMessage; error: unknown } | undefined
    let rows: OutboxMessage[]
    try {
      await client.query('BEGIN')
      ;({ rows } = await client.query<OutboxMessage>(
        `SELECT id::text AS id, kind, name, payload, "createdAt", attempts FROM "Outbox"
         WHERE kind = ANY($1::text[]) ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED`,
        [kinds, this.#options.batchSize],
      ))
      const relayed: string[] = []
      for (const row of rows) {
        try {
          await this.#handlers.get(row.kind)!(row)
          relayed.push(row.id)
        } catch (error) {
          failure = { row, error }
          break
        }
      }
      if (relayed.length > 0) await client.query('DELETE FROM "Outbox" WHERE id = ANY($1::bigint[])', [relayed])
      if (failure) {
        await client.query('UPDATE "Outbox" SET attempts = attempts + 1, "lastError" = $2 WHERE id = $1::bigint', [
          failure.row.id,
          describe(failure.error).slice(0, 1_000),
        ])
      }
      await client.query('COMMIT')
      this.#relayed += relayed.length
      client.release()
    } catch (error) {
      // the transaction is lost with its connection: nothing was deleted, the claimed rows are relayed again
      client.release(true)
      throw new Error(`claiming or deleting outbox rows failed: ${describe(error)}`, { cause: error })
    }
    if (failure) {
      const { row, error } = failure
      throw new Error(`${row.kind} row ${row.id} (${row.name}, try ${row.attempts + 1}): ${describe(error)}`, {
        cause: error,
      })
    }
    return rows.length === this.#options.batchSize
  }

  /** Warns (at most once a minute) about rows that wait because no handler is registered for their kind. */
  async #reportWaiting(): Promise<void> {
    if (Date.now() - this.#waitingReportedAt < WAITING_REPORT_MS) return
    this.#waitingReportedAt = Date.now()
    const { rows } = await this.#pool.query<{ kind: string; count: number }>(
      'SELECT kind, count(*)::int AS count FROM "Outbox" WHERE NOT (kind = ANY($1::text[])) GROUP BY kind',
      [[...this.#handlers.keys()]],
    )
    for (const { kind, count } of rows) {
      const rows = count === 1 ? '1 row' : `${count} rows`
      const verb = count === 1 ? 'waits' : 'wait'
      this.#options.logger.warn(`outbox: ${rows} of kind '${kind}' ${verb}: no handler is registered for it`)
    }
  }

  /** Keeps a connection that LISTENs on `outbox`, reconnecting with backoff; relays once more after each (re)connect. */
  async #listenLoop(): Promise<void> {
    let failures = 0
    while (!this.#stopped) {
      const client = new pg.Client({ connectionString: this.#options.databaseUrl, connectionTimeoutMillis: 2_000 })
      const lost = new Promise<Error>((resolve) => {
        client.on('error', resolve)
        client.on('end', () => resolve(new Error('the connection ended')))
      })
      client.on('notification', () => this.#wake())
      try {
        await client.connect()
        await client.query('LISTEN outbox')
        this.#listener = client
        if (this.#stopped) break
        if (failures > 0) this.#options.logger.warn('outbox: listening for notifications again')
        failures = 0
        this.#wake() // rows inserted while it was not listening
        const error = await lost
        if (this.#stopped) break
        failures++
        this.#options.logger.warn(`outbox: the LISTEN connection was lost (${error.message}); polling meanwhile`)
      } catch (error) {
        failures++
        if (failures === 1 || failures % 10 === 0) {
          this.#options.logger.warn(`outbox: cannot LISTEN (${describe(error)}); polling meanwhile`)
        }
      } finally {
        this.#listener = undefined
        await client.end().catch(() => {})
      }
      await this.#sleep(Math.min(FIRST_RETRY_MS * 2 ** Math.min(failures, 20), this.#options.retryMaxMs), false)
    }
  }

  /** Waits `ms`, or until stop(), or (with `onNotify`) until rows are announced. */
  #sleep(ms: number, onNotify: boolean): Promise<void> {
    if (this.#stopped) return Promise.resolve()
    return new Promise((resolve) => {
      const sleeper = {
        onNotify,
        wake: () => {
          clearTimeout(timer)
          this.#sleepers.delete(sleeper)
          resolve()
        },
      }
      const timer = setTimeout(sleeper.wake, ms)
      this.#sleepers.add(sleeper)
    })
  }

  /** Rows were announced (a notification, a new handler): a relay loop waiting for its next poll goes now. */
  #wake(): void {
    this.#notified = true
    for (const sleeper of this.#sleepers) if (sleeper.onNotify) sleeper.wake()
  }
}

function definedOnly<T extends object>(options: T): Partial<T> {
  return Object.fromEntries(Object.entries(options).filter(([, value]) => value !== undefined)) as Partial<T>
}

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error)
}
