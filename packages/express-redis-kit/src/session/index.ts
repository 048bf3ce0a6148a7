import type { NextFunction, Request, Response } from 'express'
import { publishSession, type SessionEvent, sessionChannel } from '../shared/diagnostics.js'
import { ArgumentError, RedisKitError } from '../shared/errors.js'
import { throttledLogger } from '../shared/logger.js'
import { userIdOf } from '../shared/user-key.js'
import { CookieCodec } from './cookie.js'
import { responseHolder } from './hold.js'
import { parseSessionOptions, type SessionOptions } from './options.js'
import { type RequestSession, Sessions } from './sessions.js'
import { COOKIE_VALUE, type SessionRef, SessionStore } from './store.js'
import type { SessionMiddleware, UserSessionInfo } from './types.js'

export type { SessionCookieOptions, SessionOptions } from './options.js'
export type {
  Session,
  SessionCallback,
  SessionCookie,
  SessionData,
  SessionMethods,
  SessionMiddleware,
  UserSessionInfo,
} from './types.js'

/**
 * `req.sessionID`: the handle of the request's session (after `regenerate()`, of the new one).
 * The token never: express-session's session id is what its cookie holds, and apps log it
 * (request loggers, error reports) and show it; the handle is safe for both. An assignment (by
 * another session middleware) turns it into a plain property.
 */
const SESSION_ID: PropertyDescriptor = {
  get(this: Request): string | undefined {
    return this.session?.handle
  },
  set(this: Request, value: unknown) {
    Object.defineProperty(this, 'sessionID', { value, writable: true, enumerable: true, configurable: true })
  },
  enumerable: false,
  configurable: true,
}

/** A session handle: the first 22 characters of a base64url SHA-256. */
const HANDLE = /^[A-Za-z0-9_-]{22}$/

/**
 * Redis-backed sessions with a promise API, fixation-safe `regenerate`, idle and absolute
 * timeouts enforced by the server, lazy saving, no resurrection of destroyed sessions,
 * per-session handles ("sign out that device"), "log out everywhere" and a limit of sessions
 * per user. The token lives only in the signed cookie: Redis keeps a SHA-256 of it.
 *
 * @example
 * ```ts
 * const sessions = session({ client, secrets: process.env.SESSION_SECRETS.split(','), userKey: 'userId' })
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
  const warn = throttledLogger(config.logger, 'warn')
  const logError = throttledLogger(config.logger, 'error')
  const store = new SessionStore(
    config.client,
    config.prefix,
    { idle: config.idleTimeout, absolute: config.absoluteTimeout, refreshEvery: config.refreshEvery },
    config.timeoutMs,
    config.userPath === undefined ? undefined : { path: config.userPath, limit: config.maxSessionsPerUser },
  )
  const holdResponseUntilSaved: (res: Response, state: RequestSession) => void = responseHolder<RequestSession>({
    needsSave: (state): boolean => sessions.needsSave(state),
    save: async (state) => {
      try {
        await sessions.persist(state)
        return true
      } catch (error) {
        state.phase = 'unavailable' // no cookie for what was not saved
        if (config.onRedisError === 'anonymous') {
          warn('express-redis-kit session: could not save the session; the response goes out without it', error)
          return true
        }
        logError('express-redis-kit session: could not save the session; answering 503', error)
        return false
      }
    },
    applyCookie: (res, state) => sessions.applyCookie(res, state),
    logError,
  })
  const sessions: Sessions = new Sessions(
    config,
    store,
    new CookieCodec(config.name, config.secrets),
    warn,
    holdResponseUntilSaved,
  )

  /** Redis failed while loading: per `onRedisError`, go on without a session, or answer 503. */
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
    if (sessions.codec.missingCookieParser(req)) {
      return next(
        new RedisKitError(
          'ERK_MISCONFIGURED',
          'express-redis-kit session: give session() its `secrets`, or mount cookie-parser with a secret before it',
        ),
      )
    }
    const state = sessions.fresh(req, res)
    const cookie = sessions.codec.read(req)
    // Only a correctly signed, well-formed cookie costs a Redis call.
    if (cookie && COOKIE_VALUE.test(cookie.value)) {
      // The token's hash is kept with a remembered cookie: a repeat cookie costs no SHA-256 either.
      cookie.derived ??= SessionStore.refOf(cookie.value)
      const ref = cookie.derived as SessionRef
      try {
        const loaded = await store.load(ref)
        if (typeof loaded !== 'string') sessions.adopt(state, ref, loaded, cookie)
        if (sessionChannel.hasSubscribers) {
          sessionChannel.publish({
            operation: 'load',
            result: typeof loaded === 'string' ? loaded : 'loaded',
            userId: state.indexedUser,
          } satisfies SessionEvent)
        }
      } catch (error) {
        publishSession(() => ({ operation: 'load', result: 'error', error }))
        if (!redisFailed(error, next)) return
        state.phase = 'unavailable'
        state.loadFailed = true
      }
    }
    req.session = state.object
    Object.defineProperty(req, 'sessionID', SESSION_ID)
    next()
  } as SessionMiddleware

  // A user id as the `userKey` binding reads one; anything else (undefined: nobody signed in) is
  // the caller's error, never the user "undefined".
  const userOf = (method: string, userId: string | number): string => {
    if (!config.userKey)
      throw new RedisKitError(
        'ERK_MISCONFIGURED',
        'express-redis-kit session: set the `userKey` option to use the per-user index',
      )
    const user = userIdOf(userId)
    if (user === undefined) throw new ArgumentError(method, 'userId', 'a string or a number', userId)
    return user
  }

  middleware.listUserSessions = async (userId) => {
    const listed = await store.listUser(userOf('listUserSessions', userId))
    return listed.map(
      ({ handle, createdAt, lastSeenAt, meta }): UserSessionInfo => ({
        ...meta,
        handle,
        createdAt: new Date(createdAt),
        lastSeenAt: new Date(lastSeenAt),
      }),
    )
  }

  middleware.destroyUserSession = async (userId, handle) => {
    const user = userOf('destroyUserSession', userId)
    if (typeof handle !== 'string' || !HANDLE.test(handle))
      throw new ArgumentError('destroyUserSession', 'handle', 'a session handle (req.session.handle)', handle)
    return (await store.endUserSessions(user, 'one', handle)) > 0
  }

  middleware.destroyUserSessions = async (userId, { except } = {}) => {
    const user = userOf('destroyUserSessions', userId)
    if (except !== undefined && (typeof except !== 'string' || !HANDLE.test(except)))
      throw new ArgumentError('destroyUserSessions', 'except', 'a session handle (req.session.handle)', except)
    return store.endUserSessions(user, 'all', except ?? '')
  }

  return middleware
}
