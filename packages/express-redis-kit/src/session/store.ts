import { createHash, randomBytes } from 'node:crypto'
import { encodeKeyPart, type RedisClient } from '../shared/redis.js'
import { DESTROY, END_USER_SESSIONS, LIST_USER, LOAD, SAVE } from './scripts.js'

/** A session's place in Redis, derived from its token (see scripts.ts for the data model). */
export interface SessionRef {
  /** The secret: 32 random bytes, base64url. Only ever in the client's cookie. */
  token: string
  /** The hash tag: the user's (for a session bound to a user) or a random one. */
  tag: string
  /** base64url(SHA-256(token)): what Redis knows of the session. */
  hash: string
}

/** What the cookie holds: `<tag>.<token>`. */
export const COOKIE_VALUE = /^[A-Za-z0-9_-]{11}\.[A-Za-z0-9_-]{43}$/

/** A loaded session: its data fields (JSON), its times, Redis's clock. */
export interface LoadedSession {
  /** JSON of each data field, by name. */
  fields: Map<string, string>
  /** JSON of the meta fields ('' for none). */
  meta: string
  createdAt: number
  now: number
}

/** A session as the per-user operations report it. */
export interface IndexedSession {
  handle: string
  createdAt: number
  lastSeenAt: number
  meta: Record<string, unknown>
}

/** What a save wrote: the session's times, and the sessions a `maxSessionsPerUser` limit ended. */
export type SaveResult = { saved: true; createdAt: number; now: number; ended: number } | { saved: false }

/** Timeouts of the sessions, in ms. */
export interface Lifetimes {
  idle: number
  absolute: number
  /** A read-only request refreshes `lastSeenAt` (one write) at most this often. */
  refreshEvery: number
}

const DATA_FIELD = 'd:'

/** The public handle of a session: the start of its hash (it cannot be turned back into the token). */
export const handleOf = (hash: string): string => hash.slice(0, 22)

/**
 * The Redis side of the sessions: key names, token hashing, scripts and timeouts. Every
 * call is one round trip; a per-user operation is one script in the user's slot.
 */
export class SessionStore {
  constructor(
    private readonly client: RedisClient,
    private readonly prefix: string,
    private readonly lifetimes: Lifetimes,
    private readonly timeoutMs: number,
  ) {}

  /** A new session's token; its tag is decided when it is first stored. */
  static newToken(): string {
    return randomBytes(32).toString('base64url')
  }

  static hashOf(token: string): string {
    return createHash('sha256').update(token).digest('base64url')
  }

  /** The tag of a user's sessions: the start of a hash of the user id. */
  static userTag(user: string): string {
    return createHash('sha256').update(`user\n${user}`).digest('base64url').slice(0, 11)
  }

  static randomTag(): string {
    return randomBytes(8).toString('base64url').slice(0, 11)
  }

  /** The session a cookie value names (checked against {@link COOKIE_VALUE} first). */
  static refOf(cookieValue: string): SessionRef {
    const token = cookieValue.slice(12)
    return { tag: cookieValue.slice(0, 11), token, hash: SessionStore.hashOf(token) }
  }

  private sessionKey(ref: { tag: string; hash: string }): string {
    return `${this.prefix}{${ref.tag}}:${ref.hash}`
  }

  private indexKey(user: string): string {
    return `${this.prefix}{${SessionStore.userTag(user)}}:user:${encodeKeyPart(user)}`
  }

  /** Reads a session; undefined when there is none (expired, destroyed, never stored). */
  async load(ref: SessionRef): Promise<LoadedSession | undefined> {
    const { idle, absolute, refreshEvery } = this.lifetimes
    const reply = (await LOAD.run(
      this.client,
      [this.sessionKey(ref)],
      [String(idle), String(absolute), String(refreshEvery)],
      this.timeoutMs,
    )) as (string | number)[] | null
    if (!reply) return undefined
    const fields = new Map<string, string>()
    let createdAt = 0
    let meta = ''
    for (let i = 1; i < reply.length; i += 2) {
      const field = String(reply[i])
      if (field === 'c') createdAt = Number(reply[i + 1])
      else if (field === 'm') meta = String(reply[i + 1])
      else if (field.startsWith(DATA_FIELD)) fields.set(field.slice(DATA_FIELD.length), String(reply[i + 1]))
    }
    return { fields, meta, createdAt, now: Number(reply[0]) }
  }

  /**
   * Creates a session (its key must be new): with `user`, under the user's tag and in their
   * index, ending their least recently used sessions beyond `limit` in the same script.
   */
  async create(
    ref: SessionRef,
    fields: Map<string, string>,
    options: { user: string | undefined; createdAt?: number; meta?: string; limit: number },
  ): Promise<SaveResult> {
    const keys = [this.sessionKey(ref)]
    if (options.user !== undefined) keys.push(this.indexKey(options.user))
    const args = [
      'create',
      ...this.timeouts(),
      options.createdAt === undefined ? '' : String(options.createdAt),
      options.meta ?? '',
      String(options.limit),
      ref.hash,
      String(fields.size),
      ...pairs(fields),
    ]
    return saveResult(await SAVE.run(this.client, keys, args, this.timeoutMs))
  }

  /**
   * Writes the changed fields of a stored session and deletes the removed ones, only if it
   * still exists within both timeouts (a destroyed session is never written back). With
   * `unbindFrom`, the session also leaves that user's index.
   */
  async update(
    ref: SessionRef,
    changed: Map<string, string>,
    removed: string[],
    unbindFrom: string | undefined,
  ): Promise<SaveResult> {
    const keys = [this.sessionKey(ref)]
    if (unbindFrom !== undefined) keys.push(this.indexKey(unbindFrom))
    const args = [
      'update',
      ...this.timeouts(),
      '',
      '',
      '0',
      ref.hash,
      String(changed.size),
      ...pairs(changed),
      ...removed.map((name) => DATA_FIELD + name),
    ]
    return saveResult(await SAVE.run(this.client, keys, args, this.timeoutMs))
  }

  /** Ends a session (and takes it out of its user's index). */
  async destroy(ref: { tag: string; hash: string }, user: string | undefined): Promise<void> {
    const keys = [this.sessionKey(ref)]
    if (user !== undefined) keys.push(this.indexKey(user))
    await DESTROY.run(this.client, keys, [ref.hash], this.timeoutMs)
  }

  /** A user's live sessions (what died is pruned on the way). */
  async listUser(user: string): Promise<IndexedSession[]> {
    const { idle, absolute } = this.lifetimes
    const flat = (await LIST_USER.run(
      this.client,
      [this.indexKey(user)],
      [String(idle), String(absolute)],
      this.timeoutMs,
    )) as (string | number)[]
    const sessions: IndexedSession[] = []
    for (let i = 0; i + 3 < flat.length; i += 4) {
      sessions.push({
        handle: handleOf(String(flat[i])),
        createdAt: Number(flat[i + 1]),
        lastSeenAt: Number(flat[i + 2]),
        meta: parseMeta(String(flat[i + 3])),
      })
    }
    return sessions
  }

  /** Ends the user's session with this handle (`one`), or all but it (`all`; '' keeps none). */
  async endUserSessions(user: string, mode: 'one' | 'all', handle: string): Promise<number> {
    return Number(await END_USER_SESSIONS.run(this.client, [this.indexKey(user)], [mode, handle], this.timeoutMs))
  }

  private timeouts(): string[] {
    return [String(this.lifetimes.idle), String(this.lifetimes.absolute)]
  }
}

function pairs(fields: Map<string, string>): string[] {
  const flat: string[] = []
  for (const [name, json] of fields) flat.push(DATA_FIELD + name, json)
  return flat
}

function saveResult(reply: unknown): SaveResult {
  const values = reply as number[]
  if (Number(values[0]) !== 1) return { saved: false }
  return { saved: true, createdAt: Number(values[1]), now: Number(values[2]), ended: values.length - 3 }
}

function parseMeta(text: string): Record<string, unknown> {
  if (text === '') return {}
  try {
    const meta = JSON.parse(text) as unknown
    return meta !== null && typeof meta === 'object' && !Array.isArray(meta) ? (meta as Record<string, unknown>) : {}
  } catch {
    return {}
  }
}
