import { createHmac, randomBytes } from 'node:crypto'
import type { NextFunction, Request, RequestHandler, Response } from 'express'
import { RedisKitError } from '../shared/errors.js'
import { throttledLogger } from '../shared/logger.js'
import { encodeKeyPart, runCommand } from '../shared/redis.js'
import { SESSION_HAS_DATA, SESSION_USER } from '../shared/session-marks.js'
import { parseSessionOptions, type SessionOptions } from './options.js'
import { INDEX_ADD, INDEX_LIST, LOAD, SAVE } from './scripts.js'

export type { SessionCookieOptions, SessionOptions } from './options.js'

/**
 * The data of a session, typed by declaration merging:
 * ```ts
 * declare module 'express-redis-kit' {
 *   interface SessionData { userId: number; cart: string[] }
 * }
 * ```
 * Values must survive `JSON.stringify` (a `Date` comes back as a string).
 */
// biome-ignore lint/suspicious/noEmptyInterface: filled in by users through declaration merging.
export interface SessionData {}

/** The methods of `req.session`: non-enumerable, so they never mix with the data. */
export interface SessionMethods {
  /** The session id (read-only). Never log it: it is a bearer credential. */
  readonly id: string
  /**
   * Replaces the id with a fresh one and kills the old one (call it on login and on
   * any privilege change, against session fixation). The data is dropped unless `keepData`.
   */
  regenerate(options?: { keepData?: boolean }): Promise<void>
  /** Deletes the session from Redis now and clears the cookie; later changes in this request are not saved. */
  destroy(): Promise<void>
  /** Saves changes now (they are also saved automatically before the response is sent). */
  save(): Promise<void>
  /** Replaces the data with what Redis holds now. */
  reload(): Promise<void>
  /** Marks the session active: its idle timeout restarts when the session is saved (at the latest, before the response). */
  touch(): Promise<void>
  /**
   * `true` when this request's session could not be loaded because Redis failed and
   * `onRedisError` is `'anonymous'`: the request runs with an empty session that is never
   * saved, whether or not the client was signed in. Answer 503 rather than 401 on routes
   * that need a user. `regenerate()` and `destroy()` reject with `ERK_REDIS_UNAVAILABLE` then
   * (the session in Redis could not be ended). `false` otherwise.
   */
  readonly storeUnavailable: boolean
}

/** `req.session`: the data as plain properties plus the {@link SessionMethods}. */
export type Session = SessionMethods & Partial<SessionData>

/** One of a user's live sessions, as {@link SessionMiddleware.listUserSessions} reports it. */
export interface UserSessionInfo {
  id: string
  createdAt: Date
  lastSeenAt: Date
}

/** The middleware returned by {@link session}, with the per-user operations. */
export interface SessionMiddleware extends RequestHandler {
  /** The user's live sessions (needs the `userKey` option). */
  listUserSessions(userId: string | number): Promise<UserSessionInfo[]>
  /**
   * Logs the user out everywhere: deletes all their sessions but `except` (e.g. the current
   * `req.session.id`). Requests in flight on those sessions cannot write them back.
   * Resolves to the number of sessions destroyed.
   */
  destroyUserSessions(userId: string | number, options?: { except?: string }): Promise<number>
}

declare global {
  namespace Express {
    interface Request {
      /** Set by express-redis-kit's `session` middleware. */
      session: Session
    }
  }
}

const RESERVED = new Set(['id', 'regenerate', 'destroy', 'save', 'reload', 'touch', 'storeUnavailable'])

/** 32 random bytes in base64url. */
const ID_PATTERN = /^[A-Za-z0-9_-]{43}$/
const DATA_FIELD = 'd:'

/** The state behind one request's `req.session`. */
interface RequestSession {
  id: string
  object: Session
  /** The session exists in Redis (loaded, or saved during this request). */
  stored: boolean
  /** JSON of each data field as Redis holds it. */
  snapshot: Map<string, string>
  /** The user the index knows this session under. */
  indexedUser: string | undefined
  createdAt: number
  /** ms the cookie should live: what is left of the absolute timeout (Redis clock). */
  cookieMaxAge: number
  /** The cookie must be (re)sent for the current id: a new session, or a re-signed one. */
  sendCookie: boolean
  /**
   * The request whose cookie loaded this session: on the first save, a cookie signed with a
   * retired secret is re-signed with the current one (checked then, not on every read).
   */
  cookieRequest: Request | undefined
  /** This request destroyed the session its cookie named: clear the cookie unless a new session is stored. */
  killedHere: boolean
  /** Destroyed in this request, or found destroyed/expired when saving: nothing more is saved. */
  destroyed: boolean
  touched: boolean
  /** Redis failed with `onRedisError: 'anonymous'`: never saved. */
  anonymous: boolean
  /** The cookie named a session that could not be loaded (Redis failed, `'anonymous'`). */
  loadFailed: boolean
}

/**
 * Redis-backed sessions with a promise API, fixation-safe `regenerate`, idle and absolute
 * timeouts enforced by the server, lazy saving, no resurrection of destroyed sessions, and
 * "log out everywhere". Mount cookie-parser with a secret (or an array of secrets to rotate)
 * first: the session cookie is signed by it.
 *
 * @example
 * ```ts
 * app.use(cookieParser(process.env.SESSION_SECRETS.split(',')))
 * const sessions = session({ client, userKey: 'userId' })
 * app.use(sessions)
 * app.post('/login', async (req, res) => {
 *   await req.session.regenerate()
 *   req.session.userId = user.id
 *   res.json({ ok: true })
 * })
 * ```
 * @throws {TypeError} (code `ERK_INVALID_OPTION`) naming the first invalid option.
 */
export function session(options: SessionOptions): SessionMiddleware {
  const config = parseSessionOptions(options)
  const { client, prefix, timeoutMs } = config
  const warn = throttledLogger(config.logger, 'warn')
  const logError = throttledLogger(config.logger, 'error')
  const sessionKey = (id: string): string => `${prefix}{${id}}`
  const indexKey = (userId: string): string => `${prefix}user:{${encodeKeyPart(userId)}}`
  const newId = (): string => randomBytes(32).toString('base64url')

  /** Reads a session; undefined when there is none (or it is corrupt). */
  async function load(id: string) {
    const reply = (await LOAD.run(
      client,
      [sessionKey(id)],
      [String(config.idleTimeout), String(config.absoluteTimeout), String(config.refreshEvery)],
      timeoutMs,
    )) as (string | number)[] | null
    if (!reply) return undefined
    const now = Number(reply[0])
    const data = new Map<string, unknown>()
    const snapshot = new Map<string, string>()
    let createdAt = 0
    for (let i = 1; i < reply.length; i += 2) {
      const field = String(reply[i])
      const value = String(reply[i + 1])
      if (field === 'c') createdAt = Number(value)
      else if (field.startsWith(DATA_FIELD)) {
        const name = field.slice(DATA_FIELD.length)
        try {
          data.set(name, JSON.parse(value))
        } catch {
          warn('express-redis-kit session: a session holds data that is not valid JSON; treating it as no session')
          return undefined
        }
        snapshot.set(name, value)
      }
    }
    return { data, snapshot, createdAt, now }
  }

  // The cookie lives as long as the session could (its absolute deadline), so it never needs
  // re-sending: the idle timeout is the server's business. A response that re-sent it could
  // overwrite the cookie of a login that happened meanwhile.
  function cookieMaxAge(createdAt: number, now: number): number {
    return Math.max(0, createdAt + config.absoluteTimeout - now)
  }

  function userOf(state: RequestSession): string | undefined {
    if (!config.userKey) return undefined
    const value = (state.object as unknown as Record<string, unknown>)[config.userKey]
    return value === undefined || value === null ? undefined : String(value)
  }

  async function deleteSession(id: string, user: string | undefined): Promise<void> {
    await runCommand(client, sessionKey(id), (redis) => redis.del(sessionKey(id)), timeoutMs)
    if (user !== undefined)
      await runCommand(client, indexKey(user), (redis) => redis.zRem(indexKey(user), id), timeoutMs)
  }

  /** Writes what changed since the session was loaded; a new, empty session is never stored. */
  async function persist(state: RequestSession): Promise<void> {
    if (state.anonymous || state.destroyed) return
    const current = serialize(state.object)
    let write: string[]
    if (!state.stored) {
      if (current.size === 0) return
      write = ['create', ...timeouts(), String(current.size), ...pairs(current)]
    } else {
      const changed = new Map([...current].filter(([name, json]) => state.snapshot.get(name) !== json))
      const removed = [...state.snapshot.keys()].filter((name) => !current.has(name))
      if (changed.size === 0 && removed.length === 0 && !state.touched) return
      write = ['update', ...timeouts(), String(changed.size), ...pairs(changed), ...removed.map((n) => DATA_FIELD + n)]
    }
    const reply = (await SAVE.run(client, [sessionKey(state.id)], write, timeoutMs)) as number[]
    if (Number(reply[0]) !== 1) {
      if (!state.stored) throw new Error('express-redis-kit session: a freshly generated session id already exists')
      // Destroyed (logout, regenerate, destroyUserSessions) or expired since this request
      // loaded it: never written back, and the cookie is left alone (the client may hold a
      // newer one by now). The request goes on with no session.
      state.stored = false
      state.destroyed = true
      return
    }
    const cookieRequest = state.cookieRequest
    state.cookieRequest = undefined
    if (!state.stored || (cookieRequest && !signedWithCurrentSecret(cookieRequest, config.name, state.id))) {
      state.sendCookie = true
    }
    state.stored = true
    state.touched = false
    state.snapshot = current
    state.createdAt = Number(reply[1])
    state.cookieMaxAge = cookieMaxAge(state.createdAt, Number(reply[2]))
    const user = userOf(state)
    if (user !== state.indexedUser) {
      if (user !== undefined) {
        const deadline = String(state.createdAt + config.absoluteTimeout)
        await INDEX_ADD.run(client, [indexKey(user)], [state.id, deadline], timeoutMs)
      }
      if (state.indexedUser !== undefined) {
        const previous = state.indexedUser
        await runCommand(client, indexKey(previous), (redis) => redis.zRem(indexKey(previous), state.id), timeoutMs)
      }
      state.indexedUser = user
    }
  }

  /** Whether `persist` would write anything (synchronous, so that most responses are not held). */
  function needsSave(state: RequestSession): boolean {
    if (state.anonymous || state.destroyed) return false
    const current = serialize(state.object)
    if (!state.stored) return current.size > 0
    if (state.touched || current.size !== state.snapshot.size) return true
    for (const [name, json] of current) if (state.snapshot.get(name) !== json) return true
    return false
  }

  const timeouts = (): string[] => [String(config.idleTimeout), String(config.absoluteTimeout)]

  /** A new, not yet stored session under a fresh id. */
  function startOver(state: RequestSession): void {
    state.id = newId()
    state.stored = false
    state.destroyed = false
    state.snapshot = new Map()
    state.indexedUser = undefined
    state.sendCookie = false
    state.cookieRequest = undefined
  }

  function clearData(object: Session): void {
    for (const name of Object.keys(object)) delete (object as unknown as Record<string, unknown>)[name]
  }

  function setData(object: Session, data: Map<string, unknown>): void {
    clearData(object)
    // defineProperty, not assignment: a field named `__proto__` stays a plain field.
    for (const [name, value] of data) {
      if (RESERVED.has(name)) continue
      Object.defineProperty(object, name, { value, writable: true, enumerable: true, configurable: true })
    }
  }

  /**
   * `req.session`: the data as own enumerable properties; the methods, `id` and the
   * SESSION_USER / SESSION_HAS_DATA marks on the prototype (non-enumerable, nothing to define per request).
   */
  class SessionObject implements SessionMethods {
    readonly #state: RequestSession

    constructor(state: RequestSession) {
      this.#state = state
    }

    get id(): string {
      return this.#state.id
    }

    get [SESSION_USER](): string | undefined {
      return userOf(this.#state)
    }

    get [SESSION_HAS_DATA](): boolean {
      for (const _ in this) return true
      return false
    }

    get storeUnavailable(): boolean {
      return this.#state.loadFailed
    }

    async regenerate({ keepData = false } = {}): Promise<void> {
      const current = this.#state
      if (current.loadFailed) throw cannotEnd('regenerate')
      if (current.stored && !current.anonymous) await deleteSession(current.id, current.indexedUser)
      if (current.stored) current.killedHere = true
      startOver(current)
      if (!keepData) clearData(current.object)
    }

    async destroy(): Promise<void> {
      const current = this.#state
      if (current.loadFailed) throw cannotEnd('destroy')
      if (current.stored && !current.anonymous) await deleteSession(current.id, current.indexedUser)
      if (current.stored) current.killedHere = true
      current.stored = false
      current.destroyed = true
      current.sendCookie = false
      clearData(current.object)
    }

    async save(): Promise<void> {
      await persist(this.#state)
    }

    async reload(): Promise<void> {
      const current = this.#state
      if (current.anonymous || !current.stored) return
      const loaded = await load(current.id)
      if (!loaded) {
        // Destroyed or expired meanwhile: go on as a new session under a new id, so that
        // nothing can bring the dead id back.
        startOver(current)
        clearData(current.object)
        return
      }
      current.snapshot = loaded.snapshot
      setData(current.object, loaded.data)
    }

    async touch(): Promise<void> {
      this.#state.touched = true
    }
  }

  function applyCookie(req: Request, res: Response, state: RequestSession): void {
    if (res.headersSent || state.anonymous) return
    const { cookie } = config
    const attributes = {
      path: cookie.path,
      domain: cookie.domain,
      httpOnly: cookie.httpOnly,
      secure: cookie.secure === 'auto' ? req.secure : cookie.secure,
      sameSite: cookie.sameSite,
      partitioned: cookie.partitioned,
    }
    const willStore = state.stored ? state.sendCookie : !state.destroyed && serialize(state.object).size > 0
    if (willStore) {
      const maxAge = state.stored ? state.cookieMaxAge : config.absoluteTimeout
      res.cookie(config.name, state.id, { ...attributes, signed: true, maxAge })
    } else if (state.killedHere && !state.stored) {
      res.clearCookie(config.name, attributes)
    } else {
      return
    }
    res.setHeader('Cache-Control', 'no-store')
  }

  /**
   * Holds the response's first byte until the session is saved, so that the cookie goes out
   * with the headers and the next request (a redirect after login) sees the data.
   */
  function holdResponseUntilSaved(req: Request, res: Response, state: RequestSession): void {
    const { writeHead, write, end } = res
    let saved: Promise<boolean> | undefined
    let queued = 0
    let direct = false
    let tail: Promise<unknown> | undefined

    res.writeHead = function writeHeadWithSessionCookie(this: Response, ...args: unknown[]) {
      applyCookie(req, res, state)
      return (writeHead as (...a: unknown[]) => Response).apply(this, args)
    } as typeof res.writeHead

    const save = async (): Promise<boolean> => {
      try {
        await persist(state)
        return true
      } catch (error) {
        if (config.onRedisError === 'anonymous') {
          warn('express-redis-kit session: could not save the session; the response goes out without it', error)
          state.anonymous = true
          return true
        }
        config.logger.error('express-redis-kit session: could not save the session', error)
        state.anonymous = true // no cookie for what was not saved
        return false
      }
    }

    const enqueue = (operation: () => void): void => {
      if (saved === undefined && !needsSave(state)) {
        // Nothing to save (most requests): no reason to hold the response.
        direct = true
        operation()
        return
      }
      saved ??= save()
      queued++
      tail = (tail ?? saved).then((ok) => {
        try {
          if (ok !== false) operation()
          else if (!res.headersSent) sendUnavailable(res, end)
        } catch (error) {
          config.logger.error('express-redis-kit session: writing the response failed', error)
        } finally {
          queued--
          if (queued === 0) direct = true
        }
        return ok
      })
    }

    res.write = function writeAfterSave(this: Response, ...args: unknown[]) {
      if (direct) return (write as (...a: unknown[]) => boolean).apply(this, args)
      let written = true
      enqueue(() => {
        written = (write as (...a: unknown[]) => boolean).apply(res, args)
      })
      return written
    } as typeof res.write

    res.end = function endAfterSave(this: Response, ...args: unknown[]) {
      if (direct) return (end as (...a: unknown[]) => Response).apply(this, args)
      enqueue(() => (end as (...a: unknown[]) => Response).apply(res, args))
      return res
    } as typeof res.end
  }

  function redisFailed(error: unknown, next: NextFunction): boolean {
    if (config.onRedisError === 'anonymous') {
      warn(
        'express-redis-kit session: Redis unavailable, continuing with an empty session that will not be saved',
        error,
      )
      return true
    }
    logError('express-redis-kit session: could not load the session; answering 503', error)
    next(
      new RedisKitError('ERK_REDIS_UNAVAILABLE', 'express-redis-kit session: the session store is unavailable', {
        cause: error,
        status: 503,
      }),
    )
    return false
  }

  const middleware = async function sessionMiddleware(req: Request, res: Response, next: NextFunction) {
    const signedCookies = req.signedCookies as Record<string, unknown> | undefined
    if (signedCookies === undefined || typeof (req as { secret?: unknown }).secret !== 'string') {
      return next(
        new RedisKitError(
          'ERK_MISCONFIGURED',
          'express-redis-kit session: mount cookie-parser with a secret before session(), e.g. app.use(cookieParser(process.env.SESSION_SECRETS.split(",")))',
        ),
      )
    }
    const cookieValue = signedCookies[config.name]
    const state: RequestSession = {
      id: '',
      object: undefined as unknown as Session,
      stored: false,
      snapshot: new Map(),
      indexedUser: undefined,
      createdAt: 0,
      cookieMaxAge: 0,
      sendCookie: false,
      cookieRequest: undefined,
      killedHere: false,
      destroyed: false,
      touched: false,
      anonymous: false,
      loadFailed: false,
    }
    state.object = new SessionObject(state) as unknown as Session

    // Only a correctly signed, well-formed id costs a Redis call.
    if (typeof cookieValue === 'string' && ID_PATTERN.test(cookieValue)) {
      try {
        const loaded = await load(cookieValue)
        if (loaded) {
          state.id = cookieValue
          state.stored = true
          state.snapshot = loaded.snapshot
          state.createdAt = loaded.createdAt
          state.cookieMaxAge = cookieMaxAge(loaded.createdAt, loaded.now)
          state.cookieRequest = req
          setData(state.object, loaded.data)
          state.indexedUser = userOf(state)
        }
      } catch (error) {
        if (!redisFailed(error, next)) return
        state.anonymous = true
        state.loadFailed = true
      }
    }
    if (!state.id) state.id = newId()
    req.session = state.object
    holdResponseUntilSaved(req, res, state)
    next()
  } as SessionMiddleware

  middleware.listUserSessions = async (userId) => {
    const { sessions } = await userSessions(userId)
    return sessions
  }

  middleware.destroyUserSessions = async (userId, { except } = {}) => {
    const { sessions, user } = await userSessions(userId)
    const doomed = sessions.map((entry) => entry.id).filter((id) => id !== except)
    if (doomed.length === 0) return 0
    await Promise.all(
      doomed.map((id) => runCommand(client, sessionKey(id), (redis) => redis.del(sessionKey(id)), timeoutMs)),
    )
    await runCommand(client, indexKey(user), (redis) => redis.zRem(indexKey(user), doomed), timeoutMs)
    return doomed.length
  }

  /** The live sessions of a user; index entries of sessions that died are pruned on the way. */
  async function userSessions(userId: string | number) {
    if (!config.userKey)
      throw new TypeError('express-redis-kit session: set the `userKey` option to use the per-user index')
    const user = String(userId)
    const [now, ...ids] = (await INDEX_LIST.run(client, [indexKey(user)], [], timeoutMs)) as [number, ...string[]]
    const stored = await Promise.all(
      ids.map((id) =>
        runCommand(client, sessionKey(id), (redis) => redis.hmGet(sessionKey(id), ['c', 's']), timeoutMs),
      ),
    )
    const sessions: UserSessionInfo[] = []
    const dead: string[] = []
    ids.forEach((id, index) => {
      const [created, seen] = (stored[index] ?? []).map(Number) as [number, number]
      const alive = created > 0 && seen > 0 && now - seen < config.idleTimeout && now - created < config.absoluteTimeout
      if (alive) sessions.push({ id, createdAt: new Date(created), lastSeenAt: new Date(seen) })
      else dead.push(id)
    })
    if (dead.length > 0)
      await runCommand(client, indexKey(user), (redis) => redis.zRem(indexKey(user), dead), timeoutMs)
    return { sessions, user }
  }

  return middleware
}

/** JSON of each enumerable data property (undefined and functions are not data). */
function serialize(object: Session): Map<string, string> {
  const fields = new Map<string, string>()
  for (const [name, value] of Object.entries(object)) {
    if (value === undefined || typeof value === 'function') continue
    fields.set(name, JSON.stringify(value))
  }
  return fields
}

function pairs(fields: Map<string, string>): string[] {
  const flat: string[] = []
  for (const [name, json] of fields) flat.push(DATA_FIELD + name, json)
  return flat
}

/**
 * Whether the request's session cookie carries the signature of `req.secret` (the first of
 * cookie-parser's secrets) rather than of an older one still accepted. cookie-parser does
 * not say which secret verified a cookie, so the signature is recomputed as
 * cookie-signature makes it (HMAC-SHA256, base64 without padding).
 */
function signedWithCurrentSecret(req: Request, name: string, id: string): boolean {
  const secret = (req as { secret?: string }).secret!
  const expected = `s:${id}.${createHmac('sha256', secret).update(id).digest('base64').replace(/=+$/, '')}`
  for (const part of (req.headers.cookie ?? '').split(';')) {
    const separator = part.indexOf('=')
    if (part.slice(0, separator).trim() !== name) continue
    let value = part.slice(separator + 1).trim()
    try {
      value = decodeURIComponent(value)
    } catch {
      return false
    }
    if (value === expected) return true
  }
  return false
}

/** `regenerate()` / `destroy()` of a session that could not be loaded: it may live on in Redis. */
function cannotEnd(method: string): RedisKitError {
  return new RedisKitError(
    'ERK_REDIS_UNAVAILABLE',
    `express-redis-kit session: cannot ${method} the session: the session store is unavailable`,
    { status: 503 },
  )
}

function sendUnavailable(res: Response, end: Response['end']): void {
  res.statusCode = 503
  for (const header of ['Content-Length', 'ETag', 'Content-Type', 'Set-Cookie']) res.removeHeader(header)
  const body = JSON.stringify({ error: 'The session store is unavailable; nothing was saved. Try again.' })
  res.setHeader('Content-Type', 'application/json; charset=utf-8')
  res.setHeader('Retry-After', '5')
  ;(end as (chunk: string) => Response).call(res, body)
}
