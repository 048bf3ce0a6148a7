import { OptionError } from './errors.js'
import type { Logger } from './logger.js'

/** Throws an {@link OptionError} naming `option` unless `condition` holds. */
export function check(condition: boolean, option: string, expected: string, received: unknown): void {
  if (!condition) throw new OptionError(option, expected, received)
}

/**
 * Rejects an option that is not in `known` (a typo, or an option of a peer package), naming
 * it; `hints` says what to use instead of a peer's option name. An option given as
 * `undefined` is ignored, as if absent.
 */
export function rejectUnknownOptions(
  options: object,
  known: ReadonlySet<string>,
  hints: Readonly<Record<string, string>> = {},
): void {
  for (const [name, value] of Object.entries(options)) {
    if (known.has(name) || value === undefined) continue
    const hint = Object.hasOwn(hints, name) ? ` (use ${hints[name]})` : ''
    check(false, name, `a known option${hint}`, value)
  }
}

/** The `logger` option: anything with `warn` and `error` (default `console`). */
export function parseLogger(logger: unknown): Logger {
  const value = logger ?? console
  check(
    typeof (value as Logger)?.warn === 'function' && typeof (value as Logger)?.error === 'function',
    'logger',
    'an object with warn() and error() (console fits)',
    value,
  )
  return value as Logger
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
