import { createHash } from 'node:crypto'
import expressSession from 'express-session'
import { withCallback } from '../shared/callback.js'
import { ArgumentError, RedisKitError } from '../shared/errors.js'
import { throttledLogger, type Warn } from '../shared/logger.js'
import { encodeKeyPart, isCluster, runCommand } from '../shared/redis.js'
import { isMisplacedUser, misplacedUserWarning, userIdOf, userTag, valueAt } from '../shared/user-key.js'
import { parseStoreOptions, type RedisStoreOptions, type StoreConfig } from './options.js'
import { END_SESSION, INDEX_ADD, INDEX_TOUCH, SET_SESSION } from './scripts.js'

/** A session as express-session hands it to a store and gets it back: its data and its cookie. */
export type StoredSession = expressSession.SessionData

/** One of a user's sessions, as {@link RedisStore.listUserSessions} reports it: never its id. */
export interface StoredSessionInfo {
  /** Its public name (see {@link RedisStore.handleOf}): pass it to `destroyUserSession` or as `except`. */
  handle: string
  /** When it expires in Redis, as last set or touched. */
  expiresAt: Date
  /** The session as stored (its data and cookie). */
  session: StoredSession
}

/** Store callbacks as express-session passes them. */
type Callback<T = void> = (error: Error | null, value?: T) => void

/** The commands the store sends besides its scripts, common to a client and a cluster. */
interface StoreCommands {
  get(key: string): Promise<string | null>
  pExpire(key: string, ms: number): Promise<number>
  zRangeWithScores(key: string, start: number, stop: number): Promise<{ value: string; score: number }[]>
  zRem(key: string, members: string[]): Promise<number>
  unlink(keys: string | string[]): Promise<number>
}

/** What SCAN needs of one node. */
interface ScanNode {
  scanIterator(options: { MATCH: string; COUNT: number }): AsyncIterable<string[]>
}

/** A handle: the first 22 characters of the base64url SHA-256 of the session id. */
const HANDLE = /^[A-Za-z0-9_-]{22}$/
/** The end of a session key: a base64url SHA-256 (43 characters). */
const SESSION_HASH = /^[A-Za-z0-9_-]{43}$/
const READ_CALL = { operation: 'expressSession.get', command: 'GET' }
const TOUCH_CALL = { operation: 'expressSession.touch', command: 'PEXPIRE' }

/**
 * A session store for express-session, in place of connect-redis: `session({ store: new
 * RedisStore({ client }) })`. Redis never holds a session id: a session is stored under a
 * SHA-256 of it, so a Redis dump, replica or `MONITOR` names no session a client could
 * present. Works on a single Redis and on a Redis Cluster (each call touches one key). A
 * destroyed session cannot be written back by a request still in flight. With `userKey`,
 * per-user listing and revocation ("log out everywhere").
 *
 * @example
 * ```ts
 * import session from 'express-session'
 * import { RedisStore } from 'express-redis-kit/express-session'
 *
 * app.use(session({ store: new RedisStore({ client, userKey: 'passport.user' }), secret, resave: false, saveUninitialized: false }))
 * ```
 * @throws {TypeError} (code `ERK_INVALID_OPTION`) naming the first invalid option.
 */
export class RedisStore extends expressSession.Store {
  readonly #config: StoreConfig
  readonly #warn: Warn

  constructor(options: RedisStoreOptions) {
    super()
    this.#config = parseStoreOptions(options)
    this.#warn = throttledLogger(this.#config.logger, 'warn')
  }

  /**
   * The public name of the session with this id (`req.sessionID`): the start of its SHA-256,
   * as `listUserSessions` reports it. It cannot be turned back into the id.
   */
  handleOf(sid: string): string {
    return hashOf(sid).slice(0, 22)
  }

  /** The session with this id, or null (none, expired, ended, or not readable: logged). */
  get(sid: string, callback?: Callback<StoredSession | null>): Promise<StoredSession | null> {
    return withCallback(this.#get(hashOf(sid)), callback)
  }

  /** Stores the session until its cookie expires (else for `ttl`); one that was ended stays ended. */
  set(sid: string, session: StoredSession, callback?: Callback): Promise<void> {
    return withCallback(this.#set(sid, session), callback)
  }

  /** Moves the session's expiry (one PEXPIRE; with `userKey`, its index entry too, in parallel). */
  override touch(sid: string, session: StoredSession, callback?: Callback): Promise<void> {
    return withCallback(this.#touch(sid, session), callback)
  }

  /** Ends the session: requests still in flight cannot write it back. */
  destroy(sid: string, callback?: Callback): Promise<void> {
    return withCallback(
      this.#end(hashOf(sid)).then(() => undefined),
      callback,
    )
  }

  /**
   * Every live session, each with its `handle` (the store holds no session ids). SCANs the
   * prefix on every master of a Cluster: for administration, not for requests.
   */
  override all(
    callback?: Callback<(StoredSession & { handle: string })[]>,
  ): Promise<(StoredSession & { handle: string })[]> {
    return withCallback(this.#all(), callback)
  }

  /** How many live sessions there are (a SCAN, as `all()`). */
  override length(callback?: Callback<number>): Promise<number> {
    return withCallback(
      this.#all().then((sessions) => sessions.length),
      callback,
    )
  }

  /** Deletes every key of the store (sessions, ended sessions, user indexes). */
  override clear(callback?: Callback): Promise<void> {
    return withCallback(this.#clear(), callback)
  }

  /** The user's live sessions (needs `userKey`), soonest to expire first. */
  async listUserSessions(userId: string | number): Promise<StoredSessionInfo[]> {
    const user = this.#userOf('listUserSessions', userId)
    return (await this.#userSessions(user)).map(({ h, expiresAt, session }) => ({
      handle: h.slice(0, 22),
      expiresAt: new Date(expiresAt),
      session,
    }))
  }

  /** Ends the user's session with this handle ("sign out that device"); false if they have none with it. */
  async destroyUserSession(userId: string | number, handle: string): Promise<boolean> {
    const user = this.#userOf('destroyUserSession', userId)
    if (typeof handle !== 'string' || !HANDLE.test(handle))
      throw new ArgumentError(
        'destroyUserSession',
        'handle',
        'a session handle (store.handleOf(req.sessionID))',
        handle,
      )
    return (await this.#endUserSessions(user, (h) => h.startsWith(handle))) > 0
  }

  /**
   * Logs the user out everywhere: ends all their sessions but `except` (a handle, e.g.
   * `store.handleOf(req.sessionID)`). Resolves to the number of sessions ended.
   */
  async destroyUserSessions(userId: string | number, { except }: { except?: string } = {}): Promise<number> {
    const user = this.#userOf('destroyUserSessions', userId)
    if (except !== undefined && (typeof except !== 'string' || !HANDLE.test(except)))
      throw new ArgumentError(
        'destroyUserSessions',
        'except',
        'a session handle (store.handleOf(req.sessionID))',
        except,
      )
    return this.#endUserSessions(user, (h) => except === undefined || !h.startsWith(except))
  }

  #sessionKey(h: string): string {
    return this.#config.prefix + h
  }

  #indexKey(user: string): string {
    return `${this.#config.prefix}{${userTag(user)}}:by-user:${encodeKeyPart(user)}`
  }

  async #get(h: string): Promise<StoredSession | null> {
    const key = this.#sessionKey(h)
    const text = await this.#command(key, (redis) => redis.get(key), READ_CALL)
    return text ? this.#parse(text) : null
  }

  async #parse(text: string): Promise<StoredSession | null> {
    try {
      const session = await this.#config.serializer.parse(text)
      if (typeof session === 'object' && session !== null) return session as StoredSession
    } catch {}
    this.#warn('express-redis-kit express-session store: a stored session cannot be parsed; treating it as none')
    return null
  }

  async #set(sid: string, session: StoredSession): Promise<void> {
    const h = hashOf(sid)
    const ttl = this.#ttlOf(session)
    if (ttl <= 0) {
      await this.#end(h)
      return
    }
    const value = this.#config.serializer.stringify(session)
    const written = Number(
      await SET_SESSION.run(this.#config.client, [this.#sessionKey(h)], [value, String(ttl)], this.#config.timeoutMs),
    )
    const user = this.#boundUser(session)
    if (written === 1 && user !== undefined) {
      const now = Date.now()
      await INDEX_ADD.run(
        this.#config.client,
        [this.#indexKey(user)],
        [h, String(now + ttl), String(now)],
        this.#config.timeoutMs,
      )
    }
  }

  async #touch(sid: string, session: StoredSession): Promise<void> {
    if (this.#config.disableTouch) return
    const h = hashOf(sid)
    const ttl = this.#ttlOf(session)
    if (ttl <= 0) {
      await this.#end(h)
      return
    }
    const key = this.#sessionKey(h)
    const user = this.#boundUser(session)
    await Promise.all([
      this.#command(key, (redis) => redis.pExpire(key, ttl), TOUCH_CALL),
      user === undefined
        ? undefined
        : INDEX_TOUCH.run(
            this.#config.client,
            [this.#indexKey(user)],
            [h, String(Date.now() + ttl)],
            this.#config.timeoutMs,
          ),
    ])
  }

  /** Ends the session with hash `h`; resolves to whether a live one was ended. */
  async #end(h: string): Promise<boolean> {
    const ended = await END_SESSION.run(
      this.#config.client,
      [this.#sessionKey(h)],
      [String(this.#config.ttl)],
      this.#config.timeoutMs,
    )
    return Number(ended) === 1
  }

  /** ms the session lives in Redis: until its cookie expires, else `ttl` (what connect-redis does). */
  #ttlOf(session: StoredSession): number {
    const expires = (session?.cookie as { expires?: Date | string | null } | undefined)?.expires
    if (expires) return Math.ceil(new Date(expires).getTime() - Date.now())
    return this.#config.ttl
  }

  /** The user the session names at `userKey`, if the store has one. */
  #boundUser(session: StoredSession): string | undefined {
    const { userPath, userKey } = this.#config
    if (!userPath) return undefined
    const value = valueAt(session, userPath)
    const user = userIdOf(value)
    if (user === undefined && isMisplacedUser(value))
      this.#warn(misplacedUserWarning('express-session store', userKey!))
    return user
  }

  #userOf(method: string, userId: string | number): string {
    if (!this.#config.userPath)
      throw new RedisKitError(
        'ERK_MISCONFIGURED',
        'express-redis-kit express-session store: set the `userKey` option to use the per-user index',
      )
    const user = userIdOf(userId)
    if (user === undefined) throw new ArgumentError(method, 'userId', 'a string or a number', userId)
    return user
  }

  /**
   * The user's live sessions: each entry of the index is read and kept only if the session
   * still names this user; the others (ended, expired, signed out, bound to another user)
   * leave the index.
   */
  async #userSessions(user: string): Promise<{ h: string; expiresAt: number; session: StoredSession }[]> {
    const index = this.#indexKey(user)
    const entries = await this.#command(index, (redis) => redis.zRangeWithScores(index, 0, -1))
    const read = await Promise.all(
      entries.map(async ({ value: h, score }) => ({ h, expiresAt: score, session: await this.#get(h) })),
    )
    const live: { h: string; expiresAt: number; session: StoredSession }[] = []
    const stale: string[] = []
    for (const { h, expiresAt, session } of read) {
      if (session !== null && userIdOf(valueAt(session, this.#config.userPath!)) === user)
        live.push({ h, expiresAt, session })
      else stale.push(h)
    }
    if (stale.length > 0) await this.#command(index, (redis) => redis.zRem(index, stale))
    return live
  }

  async #endUserSessions(user: string, chosen: (h: string) => boolean): Promise<number> {
    const sessions = (await this.#userSessions(user)).filter(({ h }) => chosen(h))
    const ended = await Promise.all(sessions.map(({ h }) => this.#end(h)))
    const index = this.#indexKey(user)
    if (sessions.length > 0)
      await this.#command(index, (redis) =>
        redis.zRem(
          index,
          sessions.map(({ h }) => h),
        ),
      )
    return ended.filter(Boolean).length
  }

  /** The keys of the store, as SCAN finds them on every node (every master of a Cluster). */
  async *#keys(): AsyncGenerator<string[]> {
    const { client, prefix, scanCount } = this.#config
    const options = { MATCH: `${escapeGlob(prefix)}*`, COUNT: scanCount }
    const nodes: ScanNode[] = []
    if (isCluster(client)) {
      const cluster = client as unknown as { masters: unknown[]; nodeClient(node: unknown): Promise<ScanNode> }
      for (const master of cluster.masters) nodes.push(await cluster.nodeClient(master))
    } else nodes.push(client as unknown as ScanNode)
    for (const node of nodes) for await (const keys of node.scanIterator(options)) yield keys
  }

  async #all(): Promise<(StoredSession & { handle: string })[]> {
    const sessions: (StoredSession & { handle: string })[] = []
    for await (const keys of this.#keys()) {
      const hashes = keys.map((key) => key.slice(this.#config.prefix.length)).filter((h) => SESSION_HASH.test(h))
      const read = await Promise.all(hashes.map(async (h) => ({ h, session: await this.#get(h) })))
      for (const { h, session } of read) if (session) sessions.push(Object.assign(session, { handle: h.slice(0, 22) }))
    }
    return sessions
  }

  async #clear(): Promise<void> {
    const { prefix } = this.#config
    for await (const keys of this.#keys()) {
      const ours = keys.filter((key) => {
        const rest = key.slice(prefix.length)
        return SESSION_HASH.test(rest) || /^\{[A-Za-z0-9_-]{11}\}:by-user:/.test(rest)
      })
      // One key per call: on a Cluster the keys of one SCAN step are in different slots.
      await Promise.all(ours.map((key) => this.#command(key, (redis) => redis.unlink(key))))
    }
  }

  #command<T>(
    key: string,
    command: (redis: StoreCommands) => Promise<T>,
    call?: { operation: string; command: string },
  ): Promise<T> {
    return runCommand(
      this.#config.client,
      key,
      (redis) => command(redis as unknown as StoreCommands),
      this.#config.timeoutMs,
      undefined,
      call,
    )
  }
}

function hashOf(sid: string): string {
  return createHash('sha256').update(String(sid)).digest('base64url')
}

/** `text` matched literally by a SCAN pattern. */
function escapeGlob(text: string): string {
  return text.replace(/[*?[\]\\]/g, '\\$&')
}
