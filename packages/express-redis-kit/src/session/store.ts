import { createHash, randomBytes } from 'node:crypto'
import { encodeKeyPart, type RedisClient, runCommand } from '../shared/redis.js'
import { type UserPath, userIdOf, userTag, valueAt } from '../shared/user-key.js'
import { DESTROY, END_USER_SESSIONS, LIST_USER, REFRESH, SAVE } from './scripts.js'

/** A session's place in Redis, derived from its token (see scripts.ts for the data model). */
export interface SessionRef {
  /** The secret: 32 random bytes, base64url. Only ever in the client's cookie. */
  token: string
  /** The hash tag: the user's (for a session bound to a user) or a random one. */
  tag: string
  /** base64url(SHA-256(token)): what Redis knows of the session. */
  hash: string
  /** Its Redis key, once computed (a remembered cookie's ref keeps it). */
  key?: string
}

/** What the cookie holds: `<tag>.<token>`. */
export const COOKIE_VALUE = /^[A-Za-z0-9_-]{11}\.[A-Za-z0-9_-]{43}$/

/** A loaded session: its data fields (JSON), its times, and the time of the load (this host's clock). */
export interface LoadedSession {
  /** JSON of each data field, by name. */
  fields: Map<string, string>
  /** JSON of the meta fields ('' for none). */
  meta: string
  createdAt: number
  /** Its own lifetime as stored (field `e`): '' for none, 'session', or its own deadline (Redis ms). */
  expiry: string
  now: number
  /** The user whose index holds the session: the one its user field names, when it is stored under that user's tag. */
  user: string | undefined
}

/** A session as the per-user operations report it. */
export interface IndexedSession {
  handle: string
  createdAt: number
  lastSeenAt: number
  meta: Record<string, unknown>
}

/** What a save wrote: the session's times, and the sessions a `maxSessionsPerUser` limit ended. */
export type SaveResult =
  | { saved: true; createdAt: number; now: number; expiry: string; ended: number }
  | { saved: false }

/** The per-user index (`userKey`): where the session's data names the user, and the most sessions per user. */
export interface UserIndexing {
  path: UserPath
  /** 0: no limit. */
  limit: number
}

/** Timeouts of the sessions, in ms. */
export interface Lifetimes {
  idle: number
  absolute: number
  /** A read-only request refreshes `lastSeenAt` (one write) at most this often. */
  refreshEvery: number
}

const DATA_FIELD = 'd:'
/**
 * Why a cookie's session could not be loaded: none stored (never, destroyed, or already
 * dropped by Redis when its TTL ran out), or found past its idle or absolute timeout.
 */
export type SessionMiss = 'not-found' | 'expired-idle' | 'expired-absolute'
/** What REFRESH's replies 0, -1 and -2 mean (see scripts.ts). */
const REFRESH_MISSES: Record<number, SessionMiss> = { 0: 'not-found', [-1]: 'expired-idle', [-2]: 'expired-absolute' }
/** Traced names of the store's plain commands (see shared/diagnostics.ts). */
const READ_CALL = { operation: 'session.read', command: 'HGETALL' }
const DELETE_CALL = { operation: 'session.delete', command: 'DEL' }

/** The public handle of a session: the start of its hash (it cannot be turned back into the token). */
export const handleOf = (hash: string): string => hash.slice(0, 22)

/** A session's deadline: its creation plus the absolute timeout, or its own deadline (`expiry`) if sooner. */
export function deadlineOf(createdAt: number, expiry: string, absolute: number): number {
  const deadline = createdAt + absolute
  // '' (none) and 'session' have no deadline of their own; Number('') would be 0.
  const own = expiry === '' ? Number.NaN : Number(expiry)
  return Number.isFinite(own) ? Math.min(own, deadline) : deadline
}

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
    private readonly users: UserIndexing | undefined,
  ) {}

  /** A new session's token; its tag is decided when it is first stored. */
  static newToken(): string {
    return randomBytes(32).toString('base64url')
  }

  static hashOf(token: string): string {
    return createHash('sha256').update(token).digest('base64url')
  }

  /** The tag of a user's sessions (see shared/user-key.ts). */
  static userTag(user: string): string {
    return userTag(user)
  }

  static randomTag(): string {
    return randomBytes(8).toString('base64url').slice(0, 11)
  }

  /** The session a cookie value names (checked against {@link COOKIE_VALUE} first). */
  static refOf(cookieValue: string): SessionRef {
    const token = cookieValue.slice(12)
    return { tag: cookieValue.slice(0, 11), token, hash: SessionStore.hashOf(token) }
  }

  private sessionKey(ref: { tag: string; hash: string; key?: string }): string {
    ref.key ??= `${this.prefix}{${ref.tag}}:${ref.hash}`
    return ref.key
  }

  private indexKey(user: string): string {
    return `${this.prefix}{${SessionStore.userTag(user)}}:user:${encodeKeyPart(user)}`
  }

  /**
   * The user whose index holds a session with these fields: the user its user field names
   * (as `String(value)`, what `req.session[userKey]` names), if the session is under that
   * user's tag (it is, unless it is about to move).
   */
  userOf(ref: { tag: string }, fields: Map<string, string>): string | undefined {
    if (!this.users) return undefined
    const [field, ...rest] = this.users.path
    const json = fields.get(field)
    if (json === undefined) return undefined
    let value: unknown
    try {
      value = JSON.parse(json)
    } catch {
      return undefined // corrupt: the session is refused as a whole
    }
    const user = userIdOf(valueAt(value, rest))
    return user !== undefined && ref.tag === SessionStore.userTag(user) ? user : undefined
  }

  /**
   * Reads a session (one HGETALL); undefined when there is none (expired, destroyed, never
   * stored). Redis drops a session when its TTL runs out; its timestamps are checked here too,
   * on Redis's clock as last seen in a reply (so that a session whose TTL was removed still
   * dies). A session last seen `refreshEvery` ago or more is refreshed: `lastSeenAt` and its
   * TTL restart (a second round trip, once per interval), and a bound session is placed in its
   * user's index in the same script (see scripts.ts).
   */
  async load(ref: SessionRef): Promise<LoadedSession | SessionMiss> {
    const key = this.sessionKey(ref)
    const stored = await runCommand(
      this.client,
      key,
      (redis) => redis.hGetAll(key),
      this.timeoutMs,
      undefined,
      READ_CALL,
    )
    const fields = new Map<string, string>()
    let createdAt = 0
    let seenAt = 0
    let meta = ''
    let expiry = ''
    for (const field in stored) {
      const value = stored[field] as string
      if (field.startsWith(DATA_FIELD)) fields.set(field.slice(DATA_FIELD.length), value)
      else if (field === 'c') createdAt = Number(value)
      else if (field === 's') seenAt = Number(value)
      else if (field === 'm') meta = value
      else if (field === 'e') expiry = value
    }
    if (fields.size === 0 && createdAt === 0) return 'not-found'
    const { refreshEvery, idle, absolute } = this.lifetimes
    let now = Date.now() + this.clockOffset
    const miss: SessionMiss | undefined = !(createdAt > 0 && seenAt > 0)
      ? 'not-found'
      : now >= deadlineOf(createdAt, expiry, absolute)
        ? 'expired-absolute'
        : now - seenAt >= idle
          ? 'expired-idle'
          : undefined
    if (miss) {
      await runCommand(this.client, key, (redis) => redis.del(key), this.timeoutMs, undefined, DELETE_CALL)
      return miss
    }
    const user = this.userOf(ref, fields)
    if (refreshEvery > 0 && now - seenAt >= refreshEvery) {
      const keys = this.withIndex(key, user)
      const args = [String(idle), String(absolute), ref.hash, ...this.indexArgs()]
      const refreshed = Number(await REFRESH.run(this.client, keys, args, this.timeoutMs))
      if (refreshed <= 0) return REFRESH_MISSES[refreshed] ?? 'not-found'
      now = this.sawRedisClock(refreshed)
    }
    return { fields, meta, createdAt, expiry, now, user }
  }

  /** The keys of a script about session `key`: with the index of `user`, when there is one. */
  private withIndex(key: string, user: string | undefined): string[] {
    return user === undefined || !this.users ? [key] : [key, this.indexKey(user)]
  }

  /**
   * The user field (`d:` and the first step of `userKey`), the rest of the path ('' for none)
   * and the limit, as the scripts that place a session in an index take them.
   */
  private indexArgs(): [string, string, string] {
    if (!this.users) return ['', '', '0']
    const [field, ...rest] = this.users.path
    return [DATA_FIELD + field, rest.join('.'), String(this.users.limit)]
  }

  /**
   * How far Redis's clock is ahead of this host's (ms), as last seen in a script's reply:
   * reads check timestamps without asking Redis for the time. (The TTL is what ends a
   * session on time; this check only catches a session whose TTL was removed.)
   */
  private clockOffset = 0

  private sawRedisClock(redisNow: number): number {
    this.clockOffset = redisNow - Date.now()
    return redisNow
  }

  /**
   * Creates a session (its key must be new): with `user`, under the user's tag and in their
   * index, ending their least recently used sessions beyond the limit in the same script.
   */
  async create(
    ref: SessionRef,
    fields: Map<string, string>,
    options: { user: string | undefined; createdAt?: number; meta?: string; lifetime: string },
  ): Promise<SaveResult> {
    const keys = this.withIndex(this.sessionKey(ref), options.user)
    const [userField, userPath, limit] = this.indexArgs()
    const args = [
      'create',
      ...this.timeouts(),
      options.createdAt === undefined ? '' : String(options.createdAt),
      options.meta ?? '',
      limit,
      ref.hash,
      userField,
      userPath,
      options.lifetime,
      String(fields.size),
      ...pairs(fields),
    ]
    return this.saved(await SAVE.run(this.client, keys, args, this.timeoutMs))
  }

  private saved(reply: unknown): SaveResult {
    const result = saveResult(reply)
    if (result.saved) this.sawRedisClock(result.now)
    return result
  }

  /**
   * Writes the changed fields of a stored session and deletes the removed ones, only if it
   * still exists within both timeouts (a destroyed session is never written back). `user`: the
   * user the session is, or until this write was, bound to; the same script then places the
   * session in that user's index, or out of it, by its user field as stored after the write.
   * `lifetime`: the session's own lifetime to set ('' keeps it; see SAVE's ARGV[10]).
   */
  async update(
    ref: SessionRef,
    changed: Map<string, string>,
    removed: string[],
    user: string | undefined,
    lifetime: string,
  ): Promise<SaveResult> {
    const keys = this.withIndex(this.sessionKey(ref), user)
    const [userField, userPath, limit] = this.indexArgs()
    const args = [
      'update',
      ...this.timeouts(),
      '',
      '',
      limit,
      ref.hash,
      userField,
      userPath,
      lifetime,
      String(changed.size),
      ...pairs(changed),
      ...removed.map((name) => DATA_FIELD + name),
    ]
    return this.saved(await SAVE.run(this.client, keys, args, this.timeoutMs))
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
  const values = reply as (number | string)[]
  if (Number(values[0]) !== 1) return { saved: false }
  return {
    saved: true,
    createdAt: Number(values[1]),
    now: Number(values[2]),
    expiry: String(values[3]),
    ended: values.length - 4,
  }
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
