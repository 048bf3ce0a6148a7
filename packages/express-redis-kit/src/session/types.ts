import type { RequestHandler } from 'express'

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

/**
 * The callback the methods of `req.session` take besides returning a promise (passport and
 * other express-session middleware pass one): called once, after the promise settled, with
 * `null` or the error.
 */
export type SessionCallback = (error: Error | null) => void

/**
 * `req.session.cookie`: the session's own lifetime, written as express-session users write it.
 * Not data (it is not stored as a field, and `JSON.stringify(req.session)` leaves it out).
 */
export interface SessionCookie {
  /**
   * Ms until the session cookie expires, as the session stands (null: a cookie that ends
   * with the browser session). Set it to give this session a lifetime of its own ("remember
   * me"): `ms` from now, capped by `absoluteTimeout`; the cookie's Max-Age and the session's
   * deadline in Redis follow, and later requests keep it. `null` (or undefined) makes a
   * browser-session cookie (no Max-Age) while the session lives on in Redis until its idle or
   * absolute timeout. Not a positive number: throws `ERK_INVALID_ARGUMENT`.
   * @default what is left of `absoluteTimeout`
   */
  maxAge: number | null
  /**
   * When the session cookie expires (null: with the browser session). Setting a Date in the
   * future is `maxAge = date - now`; null or false, a browser-session cookie.
   */
  get expires(): Date | null
  set expires(date: Date | null | false | undefined)
}

/**
 * The methods of `req.session`: non-enumerable, so they never mix with the data. Each returns
 * a promise and also takes an optional Node-style callback (see {@link SessionCallback}), as
 * express-session's do: passport's `req.login()` and `req.logout()` work unchanged.
 */
export interface SessionMethods {
  /**
   * The session's public name: not a secret, and it cannot be turned back into the token
   * (which only the cookie holds). Compare it with the `handle` of
   * {@link SessionMiddleware.listUserSessions} entries ("this device"), and pass it to
   * `destroyUserSession` / `destroyUserSessions({ except })`. It changes with the token: on
   * `regenerate()`, and when the session is bound to another user.
   */
  readonly handle: string
  /**
   * The {@link SessionMethods.handle}, under the name express-session gives it (`req.session.id`
   * equals `req.sessionID` there too). Never the token.
   */
  readonly id: string
  /**
   * Replaces the token with a fresh one and ends the old session (call it on login and on
   * any privilege change, against session fixation). The data is dropped unless `keepData`.
   * `req.session` becomes a new object, as with express-session: the object it was keeps a
   * read-only copy of the data from before (what passport's `keepSessionInfo` copies back);
   * writing to it or calling its methods throws `ERK_MISCONFIGURED`.
   */
  regenerate(options?: { keepData?: boolean }, callback?: SessionCallback): Promise<void>
  regenerate(callback: SessionCallback): Promise<void>
  /** Deletes the session from Redis now and clears the cookie; later changes in this request are not saved. */
  destroy(callback?: SessionCallback): Promise<void>
  /** Saves changes now (they are also saved automatically before the response is sent). */
  save(callback?: SessionCallback): Promise<void>
  /** Replaces the data with what Redis holds now. */
  reload(callback?: SessionCallback): Promise<void>
  /** Marks the session active: its idle timeout restarts when the session is saved (at the latest, before the response). */
  touch(callback?: SessionCallback): Promise<void>
  /**
   * `true` when this request's session could not be loaded because Redis failed and
   * `onRedisError` is `'anonymous'`: the request runs with an empty session that is never
   * saved, whether or not the client was signed in. Answer 503 rather than 401 on routes
   * that need a user. `regenerate()` and `destroy()` reject with `ERK_REDIS_UNAVAILABLE` then
   * (the session in Redis could not be ended). `false` otherwise.
   */
  readonly storeUnavailable: boolean
  /**
   * The session's own lifetime ("remember me"): `req.session.cookie.maxAge = 30 * 86_400_000`
   * for a long-lived session, `= null` for a cookie that ends with the browser session. See
   * {@link SessionCookie}.
   */
  readonly cookie: SessionCookie
}

/** `req.session`: the data as plain properties plus the {@link SessionMethods}. */
export type Session = SessionMethods & Partial<SessionData>

/**
 * One of a user's live sessions, as {@link SessionMiddleware.listUserSessions} reports it:
 * its handle, times, and the fields the `meta` option stored when it was created. Never a token.
 */
export type UserSessionInfo = Record<string, unknown> & {
  handle: string
  createdAt: Date
  lastSeenAt: Date
}

/**
 * The middleware returned by `session()`, with the per-user operations (they need `userKey`).
 * A `userId` that is not a string or a finite number (`undefined` when nobody is signed in)
 * rejects with an `ArgumentError` (`ERK_INVALID_ARGUMENT`, status 400).
 */
export interface SessionMiddleware extends RequestHandler {
  /** The user's live sessions, least recently created first. */
  listUserSessions(userId: string | number): Promise<UserSessionInfo[]>
  /**
   * Ends one of the user's sessions by its handle ("sign out that device"). Resolves to
   * `false` if the user has no live session with that handle (someone else's handle included).
   */
  destroyUserSession(userId: string | number, handle: string): Promise<boolean>
  /**
   * Logs the user out everywhere: ends all their sessions but `except` (a handle, e.g. the
   * current `req.session.handle`). Requests in flight on those sessions cannot write them
   * back. Resolves to the number of sessions ended.
   */
  destroyUserSessions(userId: string | number, options?: { except?: string }): Promise<number>
}

declare global {
  namespace Express {
    interface Request {
      /** Set by express-redis-kit's `session` middleware. */
      session: Session
      /**
       * Set by express-redis-kit's `session` middleware: the session's handle
       * (`req.session.handle`), where express-session puts the session id. Never the token:
       * it is safe to log and to show.
       */
      sessionID: string
    }
  }
}
