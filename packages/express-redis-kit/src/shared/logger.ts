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
