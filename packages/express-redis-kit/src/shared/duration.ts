import { OptionError } from './errors.js'
import { type Logger, warning, warnOnce } from './logger.js'

/** The units a {@link Duration} string may end with (any case): short, or spelled out as apicache and `ms` users write them. */
export type DurationUnit =
  | 'ms'
  | 'msec'
  | 'msecs'
  | 'millisecond'
  | 'milliseconds'
  | 's'
  | 'sec'
  | 'secs'
  | 'second'
  | 'seconds'
  | 'm'
  | 'min'
  | 'mins'
  | 'minute'
  | 'minutes'
  | 'h'
  | 'hr'
  | 'hrs'
  | 'hour'
  | 'hours'
  | 'd'
  | 'day'
  | 'days'
  | 'w'
  | 'week'
  | 'weeks'

/**
 * A duration: milliseconds as a number, or a number and a unit: `'500ms'`, `'10s'`, `'15m'`,
 * `'1h'`, `'1d'`, `'2w'`, or spelled out, `'30 seconds'`, `'5 minutes'`, `'1 hour'`, `'2 days'`.
 */
export type Duration = number | `${number}${DurationUnit}` | `${number} ${DurationUnit}`

const SECOND = 1_000
const MINUTE = 60 * SECOND
const HOUR = 60 * MINUTE
const DAY = 24 * HOUR
const UNIT_MS: Readonly<Record<DurationUnit, number>> = {
  ms: 1,
  msec: 1,
  msecs: 1,
  millisecond: 1,
  milliseconds: 1,
  s: SECOND,
  sec: SECOND,
  secs: SECOND,
  second: SECOND,
  seconds: SECOND,
  m: MINUTE,
  min: MINUTE,
  mins: MINUTE,
  minute: MINUTE,
  minutes: MINUTE,
  h: HOUR,
  hr: HOUR,
  hrs: HOUR,
  hour: HOUR,
  hours: HOUR,
  d: DAY,
  day: DAY,
  days: DAY,
  w: 7 * DAY,
  week: 7 * DAY,
  weeks: 7 * DAY,
}
const DURATION_PATTERN = /^(\d+(?:\.\d+)?|\.\d+)\s*([a-z]+)$/

const EXPECTED =
  "a positive number of milliseconds, or a number and a unit: '500ms', '10s', '15m', '1h', '1d', '2w', " +
  "'30 seconds', '5 minutes', '1 hour', '2 days' (months and years are not durations here: use days)"

/** Where {@link parseDuration} warns of a bare number that looks like seconds. */
export interface SecondsCheck {
  logger: Logger
  /** The factory the option is of, for the message (`rateLimit`). */
  feature: string
}

/**
 * Parses a {@link Duration} into whole milliseconds, or throws an {@link OptionError}
 * naming `option`. Accepts only positive, finite values.
 *
 * With `secondsCheck`, a bare number under 1,000 logs a warning (`ERK_DURATION_UNIT`) through
 * it, once per logger, option and value: for options where so short a time is far more likely
 * seconds written where milliseconds are read (rate-limiter-flexible's `duration` and
 * `blockDuration`, connect-redis's `ttl` count seconds) than meant.
 */
export function parseDuration(value: unknown, option: string, secondsCheck?: SecondsCheck): number {
  let ms: number | undefined
  if (typeof value === 'number') ms = value
  else if (typeof value === 'string') {
    const match = DURATION_PATTERN.exec(value.trim().toLowerCase())
    const unit = match && Object.hasOwn(UNIT_MS, match[2]!) ? UNIT_MS[match[2] as DurationUnit] : undefined
    if (match && unit !== undefined) ms = Number(match[1]) * unit
  }
  if (ms === undefined || !Number.isFinite(ms) || ms < 1) throw new OptionError(option, EXPECTED, value)
  if (secondsCheck && typeof value === 'number' && value < SECOND) {
    const { logger, feature } = secondsCheck
    warnOnce(
      logger,
      logger,
      warning(
        feature,
        'ERK_DURATION_UNIT',
        `option \`${option}\` is ${value}, read as ${value} milliseconds: did you mean seconds? ` +
          `Write '${value}s' for seconds, or '${value}ms' to keep milliseconds without this warning.`,
      ),
    )
  }
  return Math.round(ms)
}
