import { OptionError } from './errors.js'
import { type Logger, warning } from './logger.js'
import { isRedisClient, type RedisClient } from './redis.js'

/** Throws an {@link OptionError} naming `option` unless `condition` holds. */
export function check(condition: boolean, option: string, expected: string, received: unknown): void {
  if (!condition) throw new OptionError(option, expected, received)
}

/**
 * What to say about an option name that is not ours, by name: a peer package's option
 * (express-rate-limit, express-session, apicache...) with what to use here instead
 * ({@link use}), or why it does not apply ({@link notNeeded}, {@link notSupported}).
 */
export type Hints = Readonly<Record<string, string>>

/** The hint for a name whose counterpart here is `option` (a `note` says how it differs). */
export function use(option: string, note?: string): string {
  return `use \`${option}\`${note ? `: ${note}` : ''}`
}

/** The hint for a name whose job is done here without an option, saying how. */
export function notNeeded(why: string): string {
  return `not needed: ${why}`
}

/** The hint for a name whose behaviour this package does not offer, saying what it does instead. */
export function notSupported(why: string): string {
  return `not supported: ${why}`
}

/**
 * Rejects an option that is not in `known` (a typo, or an option of a peer package), naming
 * it with a hint: the one `hints` gives for it, else the known option or peer name it is a
 * near miss of. An option given as `undefined` is ignored, as if absent.
 */
export function rejectUnknownOptions(
  options: object,
  known: ReadonlySet<string>,
  hints: Hints = {},
  /** Where the options are, when they are not the top level (`limits[0]`). */
  within?: string,
): void {
  for (const [name, value] of Object.entries(options)) {
    if (known.has(name) || value === undefined) continue
    const hint = Object.hasOwn(hints, name) ? hints[name] : nearMiss(name, known, hints)
    check(false, within ? `${within}.${name}` : name, `a known option${hint ? ` (${hint})` : ''}`, value)
  }
}

/**
 * The hint for a typo (at most 2 edits, fewer for short names): `use` the known option it is
 * closest to, or the hint of the peer name it is closest to.
 */
function nearMiss(name: string, known: ReadonlySet<string>, hints: Hints): string | undefined {
  const allowed = name.length <= 4 ? 1 : 2
  let best: string | undefined
  let bestDistance = allowed + 1
  for (const candidate of [...known, ...Object.keys(hints)]) {
    const distance = editDistance(name.toLowerCase(), candidate.toLowerCase())
    if (distance < bestDistance) {
      best = candidate
      bestDistance = distance
    }
  }
  if (best === undefined) return undefined
  return known.has(best) ? use(best) : hints[best]
}

/** Levenshtein distance (insertions, deletions, substitutions). */
function editDistance(a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_, i) => i)
  for (let i = 1; i <= a.length; i++) {
    const current = [i]
    for (let j = 1; j <= b.length; j++) {
      current[j] = Math.min(previous[j]! + 1, current[j - 1]! + 1, previous[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1))
    }
    previous = current
  }
  return previous[b.length]!
}

/**
 * The `client` option: a node-redis client or cluster. An ioredis client (or anything else)
 * is refused with a message that says what to pass instead.
 */
export function parseClient(client: unknown): RedisClient {
  const ioredis =
    typeof (client as { evalsha?: unknown })?.evalsha === 'function' &&
    typeof (client as { defineCommand?: unknown })?.defineCommand === 'function'
  check(
    !ioredis,
    'client',
    "a node-redis client or cluster: ioredis is not supported, pass createClient() or createCluster() from 'redis'",
    client,
  )
  check(
    isRedisClient(client),
    'client',
    "a node-redis client or cluster (createClient() or createCluster() from 'redis')",
    client,
  )
  return client as RedisClient
}

/**
 * Warns once per client (`ERK_NOT_CONNECTED`) when `client` is neither open nor connecting
 * right after `feature` was created with it (once the code that created it has run, so that
 * creating the middleware just before calling `connect()` is fine): `connect()` was never
 * called, and every command would fail until it is. Never throws: an app may create its
 * middleware before it connects.
 */
export function warnIfNotConnected(client: RedisClient, logger: Logger, feature: string): void {
  if (client.isOpen) return
  const later = setImmediate(() => {
    if (client.isOpen || warnedNotConnected.has(client)) return
    warnedNotConnected.add(client)
    logger.warn(
      warning(
        feature,
        'ERK_NOT_CONNECTED',
        'the Redis client is neither open nor connecting: did you call connect()? Until it connects every ' +
          'Redis command fails, and each feature does what it does when Redis is down. To listen before Redis ' +
          "answers, call `client.connect()` without awaiting it (node-redis keeps retrying); a cluster's " +
          '`connect()` rejects when no root node answers: call it again until it resolves.',
      ),
    )
  })
  later.unref()
}

const warnedNotConnected = new WeakSet<RedisClient>()

/**
 * The `logger` option: anything with `warn` and `error` (default `console`). console and
 * winston take `(message, error)`; pino takes `(object, message)`, so a pino logger gets
 * `({ err: error }, message)` and keeps the error with its stack.
 */
export function parseLogger(logger: unknown): Logger {
  const value = logger ?? console
  check(
    typeof (value as Logger)?.warn === 'function' && typeof (value as Logger)?.error === 'function',
    'logger',
    'an object with warn() and error() (console, pino and winston fit)',
    value,
  )
  if (!isPino(value)) return value as Logger
  // One adapter per pino logger, so that what is done once per logger (throttling, one-time warnings) stays once.
  let adapter = pinoAdapters.get(value as Logger)
  if (!adapter) {
    adapter = pinoAdapter(value as Logger)
    pinoAdapters.set(value as Logger, adapter)
  }
  return adapter
}

const pinoAdapters = new WeakMap<Logger, Logger>()

/** A pino logger: it has levels, child() and bindings(). */
function isPino(value: unknown): boolean {
  const candidate = value as { levels?: { values?: unknown }; child?: unknown; bindings?: unknown }
  return (
    typeof candidate.levels?.values === 'object' &&
    typeof candidate.child === 'function' &&
    typeof candidate.bindings === 'function'
  )
}

type PinoMethod = (object: object, message: string) => void

function pinoAdapter(pino: Logger): Logger {
  const call = (level: 'warn' | 'error', message: string, details: unknown[]) => {
    const [error, ...rest] = details
    if (error === undefined) (pino[level] as unknown as (message: string) => void).call(pino, message)
    else
      (pino[level] as unknown as PinoMethod).call(
        pino,
        rest.length > 0 ? { err: error, details: rest } : { err: error },
        message,
      )
  }
  return {
    warn: (message, ...details) => call('warn', message, details),
    error: (message, ...details) => call('error', message, details),
  }
}

/** The `timeoutMs` option: a positive integer of milliseconds (default 500). */
export function parseTimeoutMs(timeoutMs: unknown): number {
  const value = timeoutMs ?? 500
  check(Number.isSafeInteger(value) && (value as number) > 0, 'timeoutMs', 'a positive integer of milliseconds', value)
  return value as number
}

/** The `prefix` option: a string without `{` or `}` (they would break the keys' hash tags). */
export function parsePrefix(prefix: unknown, fallback: string): string {
  const value = prefix ?? fallback
  check(typeof value === 'string' && !/[{}]/.test(value), 'prefix', 'a string without { or }', value)
  return value as string
}
