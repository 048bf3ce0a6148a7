import type { Request, Response } from 'express'
import { withCallback } from '../shared/callback.js'
import { publishSession } from '../shared/diagnostics.js'
import { ArgumentError, RedisKitError } from '../shared/errors.js'
import type { Warn } from '../shared/logger.js'
import { SESSION_HAS_DATA, SESSION_USER } from '../shared/session-marks.js'
import { isMisplacedUser, misplacedUserWarning, userIdOf, valueAt } from '../shared/user-key.js'
import type { CookieCodec, VerifiedCookie } from './cookie.js'
import type { SessionConfig } from './options.js'
import { deadlineOf, handleOf, type LoadedSession, type SaveResult, type SessionRef, SessionStore } from './store.js'
import type { Session, SessionCallback, SessionCookie, SessionMethods } from './types.js'

/**
 * Where one request's session stands:
 *   'new'          not in Redis: stored by the first save that has data to keep
 *   'stored'       in Redis; changes are saved before the response goes out
 *   'ended'        destroyed in this request, or found gone when saving: nothing more is saved
 *   'unavailable'  Redis failed and `onRedisError` is 'anonymous': an empty session, never saved
 */
export type Phase = 'new' | 'stored' | 'ended' | 'unavailable'

/** The state behind one request's `req.session`. */
export interface RequestSession {
  phase: Phase
  /** The session's token, tag and hash; the token of a new session is drawn when first needed, its tag when stored. */
  ref: SessionRef | undefined
  /** `req.session`: the proxy of {@link RequestSession.target}. */
  object: Session
  /** The session object itself: what the middleware reads and writes (no traps). */
  target: Session
  req: Request
  res: Response
  /** The response is held until the session is saved (see hold.ts): set once the session may have changed. */
  held: boolean
  /** JSON of each data field as Redis holds it. */
  snapshot: Map<string, string>
  /**
   * The user whose index holds this session, as loaded or last saved: every write of the
   * session names that user's index to the save script, which places the session by what it stores.
   */
  indexedUser: string | undefined
  /** JSON of the meta fields stored with the session ('' for none). */
  meta: string
  createdAt: number
  /** Its own lifetime as stored (field `e`, see store.ts): '' for none, 'session', or its own deadline. */
  expiry: string
  /**
   * A lifetime set in this request (`req.session.cookie.maxAge`), for the next save: 'session'
   * or '+<ms>' (see SAVE's ARGV[10] in scripts.ts); undefined when none was set.
   */
  lifetime: string | undefined
  /** ms the cookie should live: what is left until the session's deadline (Redis clock); undefined for a browser-session cookie. */
  cookieMaxAge: number | undefined
  /** The cookie must be (re)sent: a new or moved session, or one whose cookie a retired secret signed. */
  sendCookie: boolean
  /** The request's cookie, until the first save checks which secret signed it. */
  cookie: VerifiedCookie | undefined
  /** This request ended the session its cookie named: clear the cookie unless a new session is stored. */
  killedHere: boolean
  touched: boolean
  /** The cookie named a session that could not be loaded (Redis failed, `'anonymous'`). */
  loadFailed: boolean
  /**
   * The state behind an object that `regenerate()` replaced as `req.session`: a read-only
   * copy of the session before it (see {@link Sessions.regenerate}). Never saved.
   */
  detached: boolean
}

/** Names `req.session` cannot use for data: its methods and getters. */
const RESERVED = new Set([
  'id',
  'handle',
  'regenerate',
  'destroy',
  'save',
  'reload',
  'touch',
  'storeUnavailable',
  'cookie',
])

/** JSON of the meta fields: strings cut at this length, the whole dropped past {@link META_MAX_BYTES}. */
const META_MAX_STRING = 256
export const META_MAX_BYTES = 1024

/**
 * The sessions of one `session()` middleware: what happens to a request's session between
 * its load and its save. The HTTP flow is in index.ts, Redis in store.ts.
 */
export class Sessions {
  /** The traps of every `req.session` proxy (see {@link Sessions.fresh}). */
  private readonly traps: ProxyHandler<SessionObject>

  constructor(
    readonly config: SessionConfig,
    readonly store: SessionStore,
    readonly codec: CookieCodec,
    readonly warn: Warn,
    /** Holds a response until its session is saved. */
    private readonly hold: (res: Response, state: RequestSession) => void,
  ) {
    const mayChange = (target: SessionObject) => {
      const { state } = target[STATE]
      if (state.detached) throw replacedError()
      this.mayChange(state)
    }
    this.traps = {
      get(target, name, receiver) {
        const value = Reflect.get(target, name, target)
        // A data field holding an object can be changed in place (cart.push(...)): hold the response.
        if (typeof name === 'string' && typeof value === 'object' && value !== null && receiver) {
          if (!target[STATE].state.detached) mayChange(target)
        }
        return value
      },
      set(target, name, value) {
        mayChange(target)
        return Reflect.set(target, name, value, target)
      },
      deleteProperty(target, name) {
        mayChange(target)
        return Reflect.deleteProperty(target, name)
      },
      defineProperty(target, name, descriptor) {
        mayChange(target)
        return Reflect.defineProperty(target, name, descriptor)
      },
    }
  }

  /**
   * A new, empty session for a request (its token is drawn when first needed). `req.session`
   * is a proxy of it that holds the response only once the session may change (a field set
   * or deleted, an object field read, a method that changes it): a request that only reads
   * fields adds nothing to its response.
   */
  fresh(req: Request, res: Response): RequestSession {
    const state: RequestSession = {
      phase: 'new',
      ref: undefined,
      object: undefined as unknown as Session,
      target: undefined as unknown as Session,
      req,
      res,
      held: false,
      snapshot: new Map(),
      indexedUser: undefined,
      meta: '',
      createdAt: 0,
      expiry: '',
      lifetime: undefined,
      cookieMaxAge: undefined,
      sendCookie: false,
      cookie: undefined,
      killedHere: false,
      touched: false,
      loadFailed: false,
      detached: false,
    }
    this.newObject(state)
    return state
  }

  /** Gives `state` a new session object (and `req.session` proxy), with no data. */
  private newObject(state: RequestSession): void {
    const target = new SessionObject(this, state)
    state.target = target as unknown as Session
    state.object = new Proxy(target, this.traps) as unknown as Session
  }

  /** The session may change in this request: hold the response until it is saved (once). */
  mayChange(state: RequestSession): void {
    if (state.held) return
    state.held = true
    this.hold(state.res, state)
  }

  /** Makes `state` the session the request's cookie named, as loaded; false if its data is corrupt. */
  adopt(state: RequestSession, ref: SessionRef, loaded: LoadedSession, cookie: VerifiedCookie): boolean {
    const data = parseFields(loaded.fields)
    if (!data) {
      this.warn('express-redis-kit session: a session holds data that is not valid JSON; treating it as no session')
      return false
    }
    state.phase = 'stored'
    state.ref = ref
    state.snapshot = loaded.fields
    state.meta = loaded.meta
    state.createdAt = loaded.createdAt
    state.expiry = loaded.expiry
    state.cookieMaxAge = this.cookieMaxAge(loaded.createdAt, loaded.expiry, loaded.now)
    state.cookie = cookie
    setData(state.target, data)
    state.indexedUser = loaded.user
    return true
  }

  /** The user the session's data names at `userKey` (see shared/user-key.ts), if any. */
  userOf(state: RequestSession): string | undefined {
    const { userPath, userKey } = this.config
    if (!userPath) return undefined
    const value = valueAt(state.target, userPath)
    const user = userIdOf(value)
    if (user === undefined && isMisplacedUser(value)) this.warn(misplacedUserWarning('session', userKey!))
    return user
  }

  /** Whether `persist` would write anything (synchronous, so that most responses are not held). */
  needsSave(state: RequestSession): boolean {
    if (state.phase === 'ended' || state.phase === 'unavailable') return false
    if (state.phase === 'new') return serializeData(state.target).size > 0
    if (state.touched || state.lifetime !== undefined || this.userOf(state) !== state.indexedUser) return true
    // The most common case, a read: compare field by field without building the new snapshot.
    let fields = 0
    for (const name in state.target) {
      const value = (state.target as unknown as Record<string, unknown>)[name]
      if (value === undefined || typeof value === 'function') continue
      fields++
      if (state.snapshot.get(name) !== JSON.stringify(value)) return true
    }
    return fields !== state.snapshot.size
  }

  /**
   * Writes what changed since the session was loaded; a new, empty session is never stored.
   * A session bound to another user than before moves under that user's tag with a new
   * token (a new cookie), as `regenerate({ keepData: true })` would.
   */
  async persist(state: RequestSession): Promise<void> {
    try {
      await this.write(state)
    } catch (error) {
      publishSession(() => ({ operation: 'save', result: 'error', userId: this.userOf(state), error }))
      throw error
    }
  }

  private async write(state: RequestSession): Promise<void> {
    if (state.phase === 'ended' || state.phase === 'unavailable') return
    const current = serializeData(state.target)
    const user = this.userOf(state)
    let result: SaveResult
    if (state.phase === 'new' || (user !== undefined && state.ref!.tag !== SessionStore.userTag(user))) {
      if (state.phase === 'new' && current.size === 0) return
      const moved = state.phase === 'stored' ? { ref: state.ref!, user: state.indexedUser } : undefined
      const token = state.phase === 'new' ? this.refOf(state).token : SessionStore.newToken()
      const ref: SessionRef = {
        token,
        hash: SessionStore.hashOf(token),
        tag: user === undefined ? SessionStore.randomTag() : SessionStore.userTag(user),
      }
      if (state.phase === 'new') state.meta = this.metaOf(state.req)
      result = await this.store.create(ref, current, {
        user,
        createdAt: moved ? state.createdAt : undefined,
        meta: state.meta,
        // A moved session keeps its own lifetime, unless this request set another.
        lifetime:
          state.lifetime ??
          (!moved || state.expiry === '' || state.expiry === 'session' ? state.expiry : `=${state.expiry}`),
      })
      if (!result.saved) {
        if (!moved)
          throw new RedisKitError(
            'ERK_INTERNAL',
            'express-redis-kit session: a freshly drawn session token already exists',
          )
        return this.lost(state)
      }
      if (moved) await this.store.destroy(moved.ref, moved.user)
      state.ref = ref
      state.sendCookie = true
    } else {
      const changed = new Map([...current].filter(([name, json]) => state.snapshot.get(name) !== json))
      const removed = [...state.snapshot.keys()].filter((name) => !current.has(name))
      const lifetime = state.lifetime ?? ''
      if (changed.size + removed.length === 0 && !state.touched && lifetime === '' && user === state.indexedUser) return
      // Bound (user) or until now bound (indexedUser): the script places the session in or out
      // of that user's index by what it stores, whatever another request wrote meanwhile.
      result = await this.store.update(state.ref!, changed, removed, user ?? state.indexedUser, lifetime)
      if (!result.saved) return this.lost(state)
      // A new lifetime goes out with the cookie's Max-Age.
      if (lifetime !== '' || (state.cookie && !this.codec.signedWithCurrent(state.req, state.cookie)))
        state.sendCookie = true
    }
    state.cookie = undefined
    state.phase = 'stored'
    state.touched = false
    state.snapshot = current
    state.indexedUser = user
    state.createdAt = result.createdAt
    state.expiry = result.expiry
    state.lifetime = undefined
    state.cookieMaxAge = this.cookieMaxAge(result.createdAt, result.expiry, result.now)
    publishSession(() => ({ operation: 'save', result: 'saved', userId: user }))
  }

  /**
   * Destroyed (logout, regenerate, another device's "log out everywhere", a session limit)
   * or expired since this request loaded it: never written back, and the cookie is left
   * alone (the client may hold a newer one by now). The request goes on with no session.
   */
  private lost(state: RequestSession): void {
    publishSession(() => ({ operation: 'save', result: 'not-found', userId: state.indexedUser }))
    state.phase = 'ended'
    state.cookie = undefined
  }

  /** Ends the stored session of this request in Redis. */
  private async end(state: RequestSession): Promise<void> {
    try {
      await this.store.destroy(state.ref!, state.indexedUser)
    } catch (error) {
      publishSession(() => ({ operation: 'destroy', result: 'error', userId: state.indexedUser, error }))
      throw error
    }
    publishSession(() => ({ operation: 'destroy', result: 'destroyed', userId: state.indexedUser }))
    state.killedHere = true
  }

  /**
   * Ends the session and starts a new one under a new token, as a new object: `req.session`
   * is replaced, as express-session does, and the object it was keeps a read-only copy of the
   * data from before (what passport's `keepSessionInfo` merges back). Writing to that old
   * object, or calling its methods, throws: nothing written there could ever be saved.
   */
  async regenerate(state: RequestSession, keepData: boolean): Promise<void> {
    if (state.loadFailed) throw cannotEnd('regenerate')
    this.mayChange(state)
    if (state.phase === 'stored') await this.end(state)
    const old = state.target as unknown as SessionObject
    old[STATE].state = { ...state, detached: true }
    this.startOver(state)
    this.newObject(state)
    if (keepData) copyData(old, state.target)
    ;(state.req as { session?: Session }).session = state.object
  }

  async destroy(state: RequestSession): Promise<void> {
    if (state.loadFailed) throw cannotEnd('destroy')
    this.mayChange(state)
    if (state.phase === 'stored') await this.end(state)
    if (state.phase !== 'unavailable') state.phase = 'ended'
    state.sendCookie = false
    clearData(state.target)
  }

  async reload(state: RequestSession): Promise<void> {
    if (state.phase !== 'stored') return
    this.mayChange(state)
    const loaded = await this.store.load(state.ref!)
    if (typeof loaded === 'string') {
      // Destroyed or expired meanwhile: go on as a new session under a new token, so that
      // nothing can bring the dead one back.
      this.startOver(state)
      clearData(state.target)
      return
    }
    const data = parseFields(loaded.fields)
    if (!data) {
      // As when loading: data that is not valid JSON is no session.
      this.warn('express-redis-kit session: a session holds data that is not valid JSON; treating it as no session')
      this.startOver(state)
      clearData(state.target)
      return
    }
    state.snapshot = loaded.fields
    state.indexedUser = loaded.user
    setData(state.target, data)
  }

  /** A new, not yet stored session under a new token. */
  private startOver(state: RequestSession): void {
    state.phase = 'new'
    state.ref = undefined
    state.expiry = ''
    state.lifetime = undefined
    state.snapshot = new Map()
    state.indexedUser = undefined
    state.meta = ''
    state.sendCookie = false
    state.cookie = undefined
  }

  /** The session's token, tag and hash (a new session's token is drawn now; its tag is set when stored). */
  refOf(state: RequestSession): SessionRef {
    if (!state.ref) {
      const token = SessionStore.newToken()
      state.ref = { token, hash: SessionStore.hashOf(token), tag: '' }
    }
    return state.ref
  }

  /** Sets or clears the session cookie on the response (before its head goes out). */
  applyCookie(res: Response, state: RequestSession): void {
    if (res.headersSent || state.phase === 'unavailable') return
    const send = state.phase === 'stored' && state.sendCookie
    if (!send && !(state.killedHere && state.phase !== 'stored')) return
    const { cookie } = this.config
    const attributes = {
      path: cookie.path,
      domain: cookie.domain,
      httpOnly: cookie.httpOnly,
      secure: cookie.secure === 'auto' ? state.req.secure : cookie.secure,
      sameSite: cookie.sameSite,
      partitioned: cookie.partitioned,
    }
    if (send) {
      const { value, signed } = this.codec.encode(`${state.ref!.tag}.${state.ref!.token}`)
      res.cookie(this.config.name, value, { ...attributes, signed, maxAge: state.cookieMaxAge })
    } else {
      res.clearCookie(this.config.name, attributes)
    }
    res.setHeader('Cache-Control', 'no-store')
  }

  // The cookie lives as long as the session could (its deadline), so it never needs re-sending:
  // the idle timeout is the server's business. A response that re-sent it could overwrite the
  // cookie of a login that happened meanwhile. A browser-session cookie has no Max-Age.
  private cookieMaxAge(createdAt: number, expiry: string, now: number): number | undefined {
    if (expiry === 'session') return undefined
    return Math.max(0, deadlineOf(createdAt, expiry, this.config.absoluteTimeout) - now)
  }

  /**
   * Sets the session's own lifetime (`req.session.cookie.maxAge`): `ms` from now, capped by
   * `absoluteTimeout`, or (null) a cookie that ends with the browser session. Saved with the
   * session; the cookie is sent again with the new Max-Age.
   */
  setLifetime(state: RequestSession, ms: number | null): void {
    if (state.detached) throw replacedError()
    this.mayChange(state)
    state.lifetime = ms === null ? 'session' : `+${ms}`
  }

  /** The cookie's Max-Age as the session stands in this request (ms; null for a browser-session cookie). */
  maxAgeOf(state: RequestSession): number | null {
    const lifetime = state.lifetime ?? state.expiry
    if (lifetime === 'session') return null
    if (lifetime.startsWith('+')) return Math.min(Number(lifetime.slice(1)), this.config.absoluteTimeout)
    if (state.phase !== 'stored') return this.config.absoluteTimeout
    return state.cookieMaxAge ?? this.config.absoluteTimeout
  }

  /** JSON of `meta(req)`, its strings cut to 256 characters; '' if none, if it fails, or past 1 KiB. */
  private metaOf(req: Request): string {
    if (!this.config.meta) return ''
    try {
      const fields = this.config.meta(req)
      const json = JSON.stringify(fields ?? {}, (_key, value) =>
        typeof value === 'string' && value.length > META_MAX_STRING ? value.slice(0, META_MAX_STRING) : value,
      )
      if (Buffer.byteLength(json) <= META_MAX_BYTES) return json
      this.warn(`express-redis-kit session: meta(req) gave more than ${META_MAX_BYTES} bytes of JSON; none is stored`)
    } catch (error) {
      this.warn('express-redis-kit session: meta(req) failed; the session is stored without it', error)
    }
    return ''
  }
}

/** Where a session object keeps its middleware and state: a symbol, so that it works through the proxy. */
const STATE = Symbol('express-redis-kit.session.state')

/**
 * `req.session` (behind its proxy): the data as own enumerable properties; the methods,
 * `handle` and the SESSION_USER / SESSION_HAS_DATA marks on the prototype (non-enumerable,
 * nothing to define per request).
 */
class SessionObject implements SessionMethods {
  declare readonly [STATE]: { sessions: Sessions; state: RequestSession }

  constructor(sessions: Sessions, state: RequestSession) {
    Object.defineProperty(this, STATE, { value: { sessions, state } })
  }

  /** The handle, as express-session's `req.session.id` equals `req.sessionID`: never the token. */
  get id(): string {
    return this.handle
  }

  get handle(): string {
    const { sessions, state } = this[STATE]
    return handleOf(sessions.refOf(state).hash)
  }

  get [SESSION_USER](): string | undefined {
    const { sessions, state } = this[STATE]
    return sessions.userOf(state)
  }

  get [SESSION_HAS_DATA](): boolean {
    for (const _ in this[STATE].state.target) return true
    return false
  }

  get storeUnavailable(): boolean {
    return this[STATE].state.loadFailed
  }

  get cookie(): SessionCookie {
    return new LifetimeCookie(this[STATE])
  }

  regenerate(options?: { keepData?: boolean } | SessionCallback, callback?: SessionCallback): Promise<void> {
    const { sessions, state } = this[STATE]
    if (typeof options === 'function') return this.call(() => sessions.regenerate(state, false), options)
    return this.call(() => sessions.regenerate(state, options?.keepData ?? false), callback)
  }

  destroy(callback?: SessionCallback): Promise<void> {
    const { sessions, state } = this[STATE]
    return this.call(() => sessions.destroy(state), callback)
  }

  save(callback?: SessionCallback): Promise<void> {
    const { sessions, state } = this[STATE]
    return this.call(() => sessions.persist(state), callback)
  }

  reload(callback?: SessionCallback): Promise<void> {
    const { sessions, state } = this[STATE]
    return this.call(() => sessions.reload(state), callback)
  }

  touch(callback?: SessionCallback): Promise<void> {
    const { sessions, state } = this[STATE]
    return this.call(async () => {
      sessions.mayChange(state)
      state.touched = true
    }, callback)
  }

  /** Runs a method: a promise, and the callback if one was given; a replaced object refuses. */
  private call(method: () => Promise<void>, callback: SessionCallback | undefined): Promise<void> {
    const promise = this[STATE].state.detached ? Promise.reject(replacedError()) : method()
    return withCallback(promise, callback)
  }
}

/**
 * `req.session.cookie`: the session's lifetime, written as express-session users write it
 * (`req.session.cookie.maxAge = ms`, `req.session.cookie.expires = date`). Not data: made on
 * each read, over the session's state.
 */
class LifetimeCookie implements SessionCookie {
  readonly #session: { sessions: Sessions; state: RequestSession }

  constructor(session: { sessions: Sessions; state: RequestSession }) {
    this.#session = session
  }

  get maxAge(): number | null {
    return this.#session.sessions.maxAgeOf(this.#session.state)
  }

  set maxAge(ms: number | null | undefined) {
    if (ms !== null && ms !== undefined && !(typeof ms === 'number' && Number.isFinite(ms) && ms >= 1))
      throw ArgumentError.property(
        'req.session.cookie.maxAge',
        'a positive number of milliseconds, or null for a cookie that ends with the browser session ' +
          '(end the session with req.session.destroy())',
        ms,
      )
    this.#session.sessions.setLifetime(this.#session.state, ms === null || ms === undefined ? null : Math.round(ms))
  }

  get expires(): Date | null {
    const maxAge = this.maxAge
    return maxAge === null ? null : new Date(Date.now() + maxAge)
  }

  set expires(date: Date | null | false | undefined) {
    if (date === null || date === undefined || date === false) {
      this.maxAge = null
      return
    }
    if (!(date instanceof Date) || !(date.getTime() > Date.now()))
      throw ArgumentError.property(
        'req.session.cookie.expires',
        'a Date in the future, or null (or false) for a cookie that ends with the browser session',
        date,
      )
    this.maxAge = date.getTime() - Date.now()
  }

  toJSON(): { maxAge: number | null; expires: string | null } {
    return { maxAge: this.maxAge, expires: this.expires?.toISOString() ?? null }
  }
}

/** JSON of each enumerable data property (undefined and functions are not data). */
function serializeData(object: Session): Map<string, string> {
  const fields = new Map<string, string>()
  for (const [name, value] of Object.entries(object)) {
    if (value === undefined || typeof value === 'function') continue
    fields.set(name, JSON.stringify(value))
  }
  return fields
}

/** The data of stored fields, or undefined if one is not valid JSON. */
function parseFields(fields: Map<string, string>): Map<string, unknown> | undefined {
  const data = new Map<string, unknown>()
  try {
    for (const [name, json] of fields) data.set(name, JSON.parse(json))
  } catch {
    return undefined
  }
  return data
}

function clearData(object: Session): void {
  for (const name of Object.keys(object)) delete (object as unknown as Record<string, unknown>)[name]
}

/** Copies the data of one session object to another (the values themselves, not copies of them). */
function copyData(from: object, to: Session): void {
  for (const [name, value] of Object.entries(from)) {
    Object.defineProperty(to, name, { value, writable: true, enumerable: true, configurable: true })
  }
}

function setData(object: Session, data: Map<string, unknown>): void {
  clearData(object)
  // defineProperty, not assignment: a field named `__proto__` stays a plain field.
  for (const [name, value] of data) {
    if (RESERVED.has(name)) continue
    Object.defineProperty(object, name, { value, writable: true, enumerable: true, configurable: true })
  }
}

/** A write to, or a method of, a session object that `regenerate()` replaced as `req.session`. */
function replacedError(): RedisKitError {
  return new RedisKitError(
    'ERK_MISCONFIGURED',
    'express-redis-kit session: this session object was replaced by regenerate(); it is a read-only copy of ' +
      'the session before it: use req.session',
  )
}

/** `regenerate()` / `destroy()` of a session that could not be loaded: it may live on in Redis. */
function cannotEnd(method: string): RedisKitError {
  return new RedisKitError(
    'ERK_REDIS_UNAVAILABLE',
    `express-redis-kit session: cannot ${method} the session: the session store is unavailable`,
    { status: 503 },
  )
}
