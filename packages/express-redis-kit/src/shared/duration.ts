import { OptionError } from './errors.js'

/** A duration: milliseconds as a number, or a string such as `'500ms'`, `'10s'`, `'15m'`, `'1h'`, `'1d'`. */
export type Duration = number | `${number}${'ms' | 's' | 'm' | 'h' | 'd'}`

const UNIT_MS = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 } as const
const DURATION_PATTERN = /^(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)$/

/**
 * Parses a {@link Duration} into whole milliseconds, or throws an {@link OptionError}
 * naming `option`. Accepts only positive, finite values.
 */
export function parseDuration(value: unknown, option: string): number {
  const expected = "a positive number of milliseconds or a string like '500ms', '10s', '15m', '1h', '1d'"
  let ms: number | undefined
  if (typeof value === 'number') ms = value
  else if (typeof value === 'string') {
    const match = DURATION_PATTERN.exec(value.trim())
    if (match) ms = Number(match[1]) * UNIT_MS[match[2] as keyof typeof UNIT_MS]
  }
  if (ms === undefined || !Number.isFinite(ms) || ms < 1) throw new OptionError(option, expected, value)
  return Math.round(ms)
}
