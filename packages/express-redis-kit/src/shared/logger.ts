/** Where express-redis-kit writes warnings and errors. `console` fits. */
export interface Logger {
  warn(message: string, ...details: unknown[]): void
  error(message: string, ...details: unknown[]): void
}

/** Logs a warning or an error (throttled): what fails where no caller can be told. */
export type Warn = (message: string, error?: unknown) => void

/** Kinds of message one throttled logger tells apart; past this many, new kinds share one window. */
const MAX_KINDS = 100
/** The key of the window that kinds past {@link MAX_KINDS} share. */
const OTHER_KINDS = '\0other'

interface Window {
  /** Messages of this kind not logged since the window opened. */
  suppressed: number
  /** The last of them (its message and error), logged with their count when the window ends. */
  last?: { message: string; error: unknown }
}

/**
 * Returns a function that logs each kind of message (its text and its error's `code`) at most
 * once per `intervalMs`, so that a Redis outage under load does not flood the log, while each
 * feature's and each failure's first message goes out at once: the first of a kind is logged
 * and opens a window; the others in that window are counted; when it ends, if any were, one
 * line says how many (`<message> (N more like this suppressed in the last 5 s)`, with the last
 * one's error) and opens the next window. The window's timer never keeps the process alive.
 */
export function throttledLogger(logger: Logger, level: 'warn' | 'error', intervalMs = 5_000): Warn {
  const windows = new Map<string, Window>()
  const log = (message: string, error: unknown) => {
    if (error === undefined) logger[level](message)
    else logger[level](message, error)
  }
  const open = (kind: string) => {
    const window: Window = { suppressed: 0 }
    windows.set(kind, window)
    setTimeout(() => {
      const { suppressed, last } = window
      if (suppressed === 0 || !last) {
        windows.delete(kind)
        return
      }
      log(`${last.message} (${suppressed} more like this suppressed in the last ${intervalMs / 1000} s)`, last.error)
      open(kind)
    }, intervalMs).unref()
  }
  return (message, error) => {
    let kind = `${message}\0${(error as { code?: unknown } | undefined)?.code ?? ''}`
    if (!windows.has(kind) && windows.size >= MAX_KINDS) kind = OTHER_KINDS
    const window = windows.get(kind)
    if (window) {
      window.suppressed++
      window.last = { message, error }
      return
    }
    log(message, error)
    open(kind)
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
