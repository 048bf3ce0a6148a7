import { type Duration, parseDuration } from '../shared/duration.js'
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

/** How sessions are written to and read from Redis (connect-redis's `serializer`). */
export interface StoreSerializer {
  /** The session from what `stringify` wrote (may return a promise). */
  parse(text: string): unknown
  stringify(session: unknown): string
}

/** Options of {@link RedisStore}. Only `client` is required. */
export interface RedisStoreOptions {
  /** A connected node-redis client or Redis Cluster client. Never connected or closed by the store. */
  client: RedisClient
  /**
   * Prefix of every Redis key of the store. Do not share it with the kit's own `session()`.
   * @default 'sess:'
   */
  prefix?: string
  /**
   * How long a session lives in Redis when its cookie has no expiry (express-session's
   * `cookie.maxAge` unset: a browser-session cookie). A duration with its unit (`'1d'`,
   * `'86400s'`, `'30m'`, `'5000ms'`): a bare number is refused, since connect-redis counted it
   * in seconds where the kit counts milliseconds.
   * @default '1d'
   */
  ttl?: Exclude<Duration, number>
  /**
   * Make `touch()` do nothing: a session's expiry in Redis then moves only when it is saved.
   * @default false
   */
  disableTouch?: boolean
  /**
   * How many keys each SCAN step asks for in `all()`, `length()` and `clear()`.
   * @default 100
   */
  scanCount?: number
  /**
   * How sessions are written to Redis and read back.
   * @default JSON
   */
  serializer?: StoreSerializer
  /**
   * Where the session names its user (a property name or a dotted path, `'passport.user'` for
   * passport): enables `listUserSessions`, `destroyUserSession` and `destroyUserSessions`. The
   * value there must be a string or a number.
   * @default none
   */
  userKey?: string
  /**
   * The longest a store call waits for Redis before it fails with `ERK_REDIS_UNAVAILABLE`
   * (express-session then passes the error to `next(err)`: a 503).
   * @default 500
   */
  timeoutMs?: number
  /**
   * Receives warnings (a session that cannot be parsed, a `userKey` that holds no user id).
   * Session ids never appear in what is logged.
   * @default console
   */
  logger?: Logger
}

export interface StoreConfig {
  client: RedisClient
  prefix: string
  ttl: number
  disableTouch: boolean
  scanCount: number
  serializer: StoreSerializer
  userKey: string | undefined
  userPath: UserPath | undefined
  timeoutMs: number
  logger: Logger
}

const KNOWN = new Set([
  'client',
  'prefix',
  'ttl',
  'disableTouch',
  'scanCount',
  'serializer',
  'userKey',
  'timeoutMs',
  'logger',
])

/** Option names of connect-redis and of the kit's session() that are not this store's. */
const PEER_OPTIONS: Hints = {
  disableTTL: notSupported('every session expires: when its cookie does, else after `ttl`'),
  idleTimeout: use(
    'ttl',
    "or express-session's `cookie.maxAge` with `rolling`: this store keeps what express-session asks",
  ),
  absoluteTimeout: use('ttl', "or express-session's `cookie.maxAge`"),
  secrets: notNeeded("express-session's `secret` signs the cookie"),
  maxSessionsPerUser: notSupported("the kit's own session() offers it"),
}

const EXPECTED_TTL =
  "a duration with its unit ('1d', '86400s', '30m', '5000ms'): a bare number is ambiguous " +
  '(connect-redis counted seconds, the kit counts milliseconds)'

/** Validates `options` and resolves every default; throws an `OptionError` (a `TypeError`) naming the option. */
export function parseStoreOptions(options: RedisStoreOptions): StoreConfig {
  check(typeof options === 'object' && options !== null, 'options', 'an object', options)
  rejectUnknownOptions(options, KNOWN, PEER_OPTIONS)
  parseClient(options.client)
  const logger = parseLogger(options.logger)
  const prefix = parsePrefix(options.prefix, 'sess:')
  const ttlOption: unknown = options.ttl ?? '1d'
  check(typeof ttlOption === 'string', 'ttl', EXPECTED_TTL, ttlOption)
  const ttl = parseDuration(ttlOption, 'ttl')
  const disableTouch = options.disableTouch ?? false
  check(typeof disableTouch === 'boolean', 'disableTouch', 'a boolean', disableTouch)
  const scanCount = options.scanCount ?? 100
  check(Number.isSafeInteger(scanCount) && scanCount > 0, 'scanCount', 'a positive integer', scanCount)
  const serializer = options.serializer ?? JSON
  check(
    typeof serializer?.parse === 'function' && typeof serializer?.stringify === 'function',
    'serializer',
    'an object with parse() and stringify() (JSON fits)',
    serializer,
  )
  const userPath = parseUserKey(options.userKey)
  const timeoutMs = parseTimeoutMs(options.timeoutMs)
  warnIfNotConnected(options.client, logger, 'express-session store')
  return {
    client: options.client,
    prefix,
    ttl,
    disableTouch,
    scanCount,
    serializer,
    userKey: options.userKey,
    userPath,
    timeoutMs,
    logger,
  }
}
