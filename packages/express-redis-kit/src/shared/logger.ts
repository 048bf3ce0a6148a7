/** Where express-redis-kit writes warnings and errors. `console` fits. */
export interface Logger {
  warn(message: string, ...details: unknown[]): void
  error(message: string, ...details: unknown[]): void
}

/** Logs a warning or an error (throttled): what fails where no caller can be told. */
export type Warn = (message: string, error?: unknown) => void

/**
 * Returns a function that logs at most once per `intervalMs`, counting what it
 * suppressed in between, so that a Redis outage under load does not flood the log.
 */
export function throttledLogger(
  logger: Logger,
  level: 'warn' | 'error',
  intervalMs = 5_000,
): (message: string, error?: unknown) => void {
  let lastLoggedAt = Number.NEGATIVE_INFINITY
  let suppressed = 0
  return (message, error) => {
    const now = Date.now()
    if (now - lastLoggedAt < intervalMs) {
      suppressed++
      return
    }
    const note = suppressed > 0 ? ` (${suppressed} similar messages suppressed)` : ''
    lastLoggedAt = now
    suppressed = 0
    if (error === undefined) logger[level](`${message}${note}`)
    else logger[level](`${message}${note}`, error)
  }
}

/**
 * Stable codes of the warnings about how an app is set up, each logged once through the
 * `logger` option's `warn`, its message starting `express-redis-kit <feature> [<code>]:`.
 * Match on the code, never on the rest of the message.
 */
export type WarningCode =
  /** A client given to a factory was neither open nor connecting: `connect()` was not called. */
  | 'ERK_NOT_CONNECTED'
  /** A duration given as a bare number under 1,000 (milliseconds): most likely meant as seconds. */
  | 'ERK_DURATION_UNIT'
  /** rateLimit: Express's `trust proxy` is `true`, so any client can choose its IP (`X-Forwarded-For`). */
  | 'ERK_PERMISSIVE_TRUST_PROXY'
  /** rateLimit: a request came with `X-Forwarded-For` while `trust proxy` is off: every client behind the proxy shares one IP. */
  | 'ERK_UNEXPECTED_X_FORWARDED_FOR'
  /** rateLimit: the limiter was created while Express was handling a request. */
  | 'ERK_CREATED_IN_REQUEST_HANDLER'
  /** rateLimit: one request was counted twice under the same prefix and client key. */
  | 'ERK_DOUBLE_COUNT'
  /** rateLimit: two limiters on one client share a prefix, so they count together. */
  | 'ERK_SHARED_PREFIX'

/** A setup warning's message (see {@link WarningCode}). */
export function warning(feature: string, code: WarningCode, text: string): string {
  return `express-redis-kit ${feature} [${code}]: ${text}`
}

const warned = new WeakMap<object, Set<string>>()

/** Logs `message` through `logger.warn` unless it was already logged for `subject` (a logger, a client...). */
export function warnOnce(logger: Logger, subject: object, message: string): void {
  let messages = warned.get(subject)
  if (!messages) {
    messages = new Set()
    warned.set(subject, messages)
  }
  if (messages.has(message)) return
  messages.add(message)
  logger.warn(message)
}
