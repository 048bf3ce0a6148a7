import type { Request } from 'express'
import { type Duration, parseDuration, type SecondsCheck } from '../shared/duration.js'
import type { Logger } from '../shared/logger.js'
import {
  check,
  type Hints,
  notNeeded,
  notSupported,
  parseClient,
  parseLogger,
  parsePrefix,
  parseTimeoutMs,
  rejectUnknownOptions,
  use,
  warnIfNotConnected,
} from '../shared/options.js'
import type { RedisClient } from '../shared/redis.js'
import { parseUserKey, type UserPath } from '../shared/user-key.js'

/** Options of the session cookie. */
export interface SessionCookieOptions {
  /**
   * Hide the cookie from JavaScript in the page.
   * @default true
   */
  httpOnly?: boolean
  /**
   * `'auto'` marks the cookie `Secure` when the request came over HTTPS (`req.secure`,
   * which honours Express's `trust proxy`); `true` always; `false` never.
   * @default 'auto'
   */
  secure?: boolean | 'auto'
  /**
   * @default 'lax'
   */
  sameSite?: 'lax' | 'strict' | 'none'
  /**
   * @default '/'
   */
  path?: string
  /**
   * @default none (host-only cookie)
   */
  domain?: string
  /**
   * CHIPS partitioned cookie (requires `secure`).
   * @default false
   */
  partitioned?: boolean
}

/** Options of {@link session}. Only `client` is required. */
export interface SessionOptions {
  /** A connected node-redis client or Redis Cluster client. Never connected or closed by the middleware. */
  client: RedisClient
  /**
   * Cookie name. With `secure: true`, `path: '/'` and no `domain`, a name starting with
   * `__Host-` makes browsers refuse the cookie from subdomains and plain HTTP.
   * @default 'sid'
   */
  name?: string
  /**
   * Prefix of every Redis key of these sessions.
   * @default 'sess:'
   */
  prefix?: string
  /**
   * A session unused for this long is dead; activity extends it (rolling).
   * @default '7d'
   */
  idleTimeout?: Duration
  /**
   * A session is dead this long after it was created, whatever its activity.
   * @default '30d'
   */
  absoluteTimeout?: Duration
  /** The session cookie's attributes. */
  cookie?: SessionCookieOptions
  /**
   * The session property that names its user (e.g. `'userId'`), or a dotted path to it
   * through nested objects: `'passport.user'` for passport, which keeps the user in
   * `req.session.passport.user` (`'passport.user.id'` if serializeUser stores an object).
   * The value there must be a string or a number (anything else binds no user, with a
   * warning). Enables the per-user index: `listUserSessions`, `destroyUserSession` and
   * `destroyUserSessions`, and `maxSessionsPerUser`. A session bound to a user is stored
   * beside the user's index.
   * @default none
   */
  userKey?: string
  /**
   * The secrets that sign the session cookie: the first signs, all verify (list a retired
   * secret after the new one while cookies signed with it are still out there; they are
   * re-signed with the first on their next save). With them the session reads only its own
   * cookie and remembers the cookies it verified (no HMAC for a repeat cookie), and
   * cookie-parser is not needed. Without them, mount cookie-parser with a secret first: its
   * secrets sign and verify. The cookie format is the same either way.
   * @default cookie-parser's secrets
   */
  secrets?: string | string[]
  /**
   * Fields stored with a session when it is created and listed by `listUserSessions`, e.g.
   * `(req) => ({ userAgent: req.get('user-agent'), ip: req.ip })`. Strings are cut at 256
   * characters; past 1 KiB of JSON nothing is stored (and a warning is logged).
   * @default none
   */
  meta?: (req: Request) => Record<string, string | number | boolean | null | undefined>
  /**
   * The most live sessions one user may have (needs `userKey`). When a user signs in beyond
   * it (a new session, or one bound to them again in place), their least recently used
   * sessions end, in the same atomic step that adds it to their index.
   * @default no limit
   */
  maxSessionsPerUser?: number
  /**
   * When Redis fails or times out while loading or saving: `'fail'` passes a 503 error to
   * `next(err)`; `'anonymous'` continues with an empty session that is never saved, and logs
   * a warning (at most once per 5 s).
   * @default 'fail'
   */
  onRedisError?: 'fail' | 'anonymous'
  /**
   * The longest a request waits for Redis before `onRedisError` applies.
   * @default 500
   */
  timeoutMs?: number
  /**
   * Receives warnings and errors. Session ids never appear in what is logged.
   * @default console
   */
  logger?: Logger
}

export interface SessionConfig {
  client: RedisClient
  name: string
  prefix: string
  idleTimeout: number
  absoluteTimeout: number
  /** A read-only request refreshes `lastSeenAt` (one write) at most this often. */
  refreshEvery: number
  cookie: Required<Omit<SessionCookieOptions, 'domain'>> & { domain: string | undefined }
  userKey: string | undefined
  /** `userKey` split at its dots. */
  userPath: UserPath | undefined
  secrets: string[] | undefined
  meta: ((req: Request) => Record<string, unknown>) | undefined
  /** 0: no limit. */
  maxSessionsPerUser: number
  onRedisError: 'fail' | 'anonymous'
  timeoutMs: number
  logger: Logger
}

const KNOWN = new Set([
  'client',
  'name',
  'prefix',
  'idleTimeout',
  'absoluteTimeout',
  'cookie',
  'userKey',
  'secrets',
  'meta',
  'maxSessionsPerUser',
  'onRedisError',
  'timeoutMs',
  'logger',
])
const KNOWN_COOKIE = new Set(['httpOnly', 'secure', 'sameSite', 'path', 'domain', 'partitioned'])
const EXPIRES = notNeeded('every session expires after `idleTimeout` unused and `absoluteTimeout` in all')

/** Option names of express-session and connect-redis that are not ours. */
const PEER_OPTIONS: Hints = {
  maxAge: use('idleTimeout'),
  // express-session
  secret: use('secrets', 'the first signs, all verify; or mount cookie-parser with a secret before session()'),
  store: use('client', 'the node-redis client itself, no store object'),
  rolling: use('idleTimeout', 'every use extends a session, up to `absoluteTimeout`'),
  resave: notNeeded('a session is saved only when it changed'),
  saveUninitialized: notNeeded('a new session is stored, and gets a cookie, only once it holds data'),
  genid: notSupported('the token is 256 random bits from the CSPRNG, and Redis keeps only its SHA-256'),
  proxy: notNeeded("`cookie.secure: 'auto'` follows `req.secure`, which honours Express's `trust proxy`"),
  unset: notNeeded('end a session with `await req.session.destroy()`'),
  // connect-redis
  ttl: use('idleTimeout', 'in milliseconds, where connect-redis counts seconds'),
  disableTTL: EXPIRES,
  disableTouch: notNeeded('a request that changes nothing moves the expiry at most once per tenth of `idleTimeout`'),
  scanCount: notNeeded("sessions are never SCANned: a user's sessions are listed from the user's index"),
  serializer: notSupported('each session property is stored as JSON in a field of its own'),
}

/** express-session's cookie options that are not ours. */
const PEER_COOKIE_OPTIONS: Hints = {
  maxAge: use(
    'idleTimeout',
    'an option of session() itself, not of its cookie; for one session, set `req.session.cookie.maxAge` in a request',
  ),
  expires: use(
    'absoluteTimeout',
    'an option of session() itself: the cookie lasts what is left of it; for one session, set `req.session.cookie.maxAge`',
  ),
  signed: notNeeded('the cookie is always signed'),
  priority: notSupported('the cookie has no Priority attribute'),
  encode: notSupported('the cookie holds the signed token, encoded as it must be'),
}

/** Validates `options` and resolves every default; throws an `OptionError` (a `TypeError`) naming the option. */
export function parseSessionOptions(options: SessionOptions): SessionConfig {
  check(typeof options === 'object' && options !== null, 'options', 'an object', options)
  rejectUnknownOptions(options, KNOWN, PEER_OPTIONS)
  parseClient(options.client)
  const logger = parseLogger(options.logger)
  const secondsCheck: SecondsCheck = { logger, feature: 'session' }

  const name = options.name ?? 'sid'
  check(
    typeof name === 'string' && /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/.test(name),
    'name',
    'a cookie name (RFC 6265 token)',
    name,
  )
  const prefix = parsePrefix(options.prefix, 'sess:')

  const idleTimeout = parseDuration(options.idleTimeout ?? '7d', 'idleTimeout', secondsCheck)
  const absoluteTimeout = parseDuration(options.absoluteTimeout ?? '30d', 'absoluteTimeout', secondsCheck)
  check(idleTimeout <= absoluteTimeout, 'idleTimeout', `at most absoluteTimeout (${absoluteTimeout} ms)`, idleTimeout)

  const cookie = options.cookie ?? {}
  check(typeof cookie === 'object' && cookie !== null, 'cookie', 'an object', cookie)
  rejectUnknownOptions(cookie, KNOWN_COOKIE, PEER_COOKIE_OPTIONS, 'cookie')
  const httpOnly = cookie.httpOnly ?? true
  check(typeof httpOnly === 'boolean', 'cookie.httpOnly', 'a boolean', httpOnly)
  const secure = cookie.secure ?? 'auto'
  check(secure === 'auto' || typeof secure === 'boolean', 'cookie.secure', "true, false or 'auto'", secure)
  const sameSite = cookie.sameSite ?? 'lax'
  check(['lax', 'strict', 'none'].includes(sameSite), 'cookie.sameSite', "'lax', 'strict' or 'none'", sameSite)
  check(sameSite !== 'none' || secure !== false, 'cookie.secure', "true or 'auto' with sameSite 'none'", secure)
  const path = cookie.path ?? '/'
  check(typeof path === 'string' && path.startsWith('/'), 'cookie.path', "a path starting with '/'", path)
  check(cookie.domain === undefined || typeof cookie.domain === 'string', 'cookie.domain', 'a string', cookie.domain)
  const partitioned = cookie.partitioned ?? false
  check(typeof partitioned === 'boolean', 'cookie.partitioned', 'a boolean', partitioned)

  const userPath = parseUserKey(options.userKey)
  const secrets = typeof options.secrets === 'string' ? [options.secrets] : options.secrets
  check(
    secrets === undefined ||
      (Array.isArray(secrets) &&
        secrets.length > 0 &&
        secrets.every((secret) => typeof secret === 'string' && secret.length > 0)),
    'secrets',
    'a non-empty string or a non-empty array of them',
    options.secrets,
  )
  check(options.meta === undefined || typeof options.meta === 'function', 'meta', 'a function', options.meta)
  const maxSessionsPerUser = options.maxSessionsPerUser ?? 0
  check(
    options.maxSessionsPerUser === undefined || (Number.isSafeInteger(maxSessionsPerUser) && maxSessionsPerUser > 0),
    'maxSessionsPerUser',
    'a positive integer',
    options.maxSessionsPerUser,
  )
  check(
    options.maxSessionsPerUser === undefined || options.userKey !== undefined,
    'maxSessionsPerUser',
    'used with `userKey` (the index it limits)',
    options.maxSessionsPerUser,
  )
  const onRedisError = options.onRedisError ?? 'fail'
  check(onRedisError === 'fail' || onRedisError === 'anonymous', 'onRedisError', "'fail' or 'anonymous'", onRedisError)
  const timeoutMs = parseTimeoutMs(options.timeoutMs)
  warnIfNotConnected(options.client, logger, 'session')

  return {
    client: options.client,
    name,
    prefix,
    idleTimeout,
    absoluteTimeout,
    // A tenth of the idle timeout: a session read now and then stays alive, at a write
    // per 17 hours for the default 7-day idle timeout.
    refreshEvery: Math.max(1, Math.floor(idleTimeout / 10)),
    cookie: { httpOnly, secure, sameSite, path, domain: cookie.domain, partitioned },
    userKey: options.userKey,
    userPath,
    secrets: secrets ? [...secrets] : undefined,
    meta: options.meta,
    maxSessionsPerUser,
    onRedisError,
    timeoutMs,
    logger,
  }
}
