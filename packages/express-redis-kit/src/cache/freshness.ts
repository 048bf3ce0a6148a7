import type { StoredHeader } from './http.js'
import type { Lifetimes } from './store.js'

/*
 * How long a stored response stays fresh, decided as a shared cache must (RFC 9111 section 4.2,
 * RFC 9213, RFC 5861), from the response's own headers.
 */

/** What the response says about its own freshness (all durations in ms). */
export interface Freshness {
  /**
   * How long the response is fresh from when it was generated: from `CDN-Cache-Control`
   * (RFC 9213, which then replaces `Cache-Control`), else `s-maxage`, `max-age`, `Expires`
   * minus `Date`; undefined when it says nothing (the cache's `ttl` applies).
   */
  lifetime: number | undefined
  /** How old the response already is when received: RFC 9111 4.2.3's corrected initial age. */
  initialAge: number
  /** The response's own `stale-while-revalidate` window, if any. */
  staleWhileRevalidate: number | undefined
  /** The response's own `stale-if-error` window, if any. */
  staleIfError: number | undefined
  /** `must-revalidate`, `proxy-revalidate` or `s-maxage`: never served stale, not even on errors. */
  mustRevalidate: boolean
  /** A shared cache must not store it (`no-store`, `private`, in the field that applies). */
  noStore: boolean
  /** It may be stored but not served without revalidation (`no-cache`). */
  noCache: boolean
  /** It carries a validator (`ETag`, `Last-Modified`): a stale copy can be revalidated. */
  validator: boolean
}

/** The values of one header, joined by commas ('' if absent). */
function header(headers: StoredHeader[], name: string): string | undefined {
  const values = headers
    .filter(([key]) => key === name)
    .flatMap(([, value]) => (Array.isArray(value) ? value : [value]))
  return values.length === 0 ? undefined : values.join(',')
}

/**
 * Cache-Control directives, lowercase names; a value of a directive given twice is the first
 * one's; `true` for a directive without a value. Quoted values are unquoted.
 */
export function parseCacheControl(value: string | undefined): Map<string, string | true> {
  const directives = new Map<string, string | true>()
  if (value === undefined) return directives
  for (const part of splitList(value)) {
    const equals = part.indexOf('=')
    const name = (equals === -1 ? part : part.slice(0, equals)).trim().toLowerCase()
    if (name === '' || directives.has(name)) continue
    let argument: string | true = true
    if (equals !== -1) {
      argument = part.slice(equals + 1).trim()
      if (argument.startsWith('"') && argument.endsWith('"') && argument.length >= 2) argument = argument.slice(1, -1)
    }
    directives.set(name, argument)
  }
  return directives
}

/** Splits a comma-separated header on the commas that are not inside a quoted string. */
function splitList(value: string): string[] {
  const parts: string[] = []
  let current = ''
  let quoted = false
  for (let i = 0; i < value.length; i++) {
    const char = value[i]!
    if (char === '"' && value[i - 1] !== '\\') quoted = !quoted
    if (char === ',' && !quoted) {
      parts.push(current)
      current = ''
    } else current += char
  }
  parts.push(current)
  return parts.map((part) => part.trim()).filter((part) => part !== '')
}

/**
 * RFC 8941 dictionary, as far as CDN-Cache-Control needs it: `name`, `name=integer`,
 * `name="string"`; undefined when the field does not parse or a directive has a value of the
 * wrong type (the field is then ignored, RFC 9213).
 */
function parseTargetedField(value: string | undefined): Map<string, string | true> | undefined {
  if (value === undefined) return undefined
  const directives = new Map<string, string | true>()
  for (const part of value.split(',')) {
    const item = part.trim()
    if (item === '') return undefined
    const match =
      /^([a-z*][a-z0-9_\-.*]*)(?:=(-?\d{1,15}|"[^"\\]*"|[A-Za-z*][A-Za-z0-9:/!#$%&'*+\-.^_`|~]*))?((?:;[^;,]*)*)$/.exec(
        item,
      )
    if (!match) return undefined
    const [, name, argument] = match
    // A directive whose value has the wrong type makes the whole field invalid.
    if (INTEGER_DIRECTIVES.has(name!) && !/^-?\d+$/.test(argument ?? '')) return undefined
    directives.set(name!, argument === undefined ? true : argument.replace(/^"|"$/g, ''))
  }
  return directives
}

/** The directives of a targeted field whose value is an Integer (RFC 9213 2.1). */
const INTEGER_DIRECTIVES = new Set(['max-age', 's-maxage', 'stale-while-revalidate', 'stale-if-error'])

/** A delta-seconds value in ms, or undefined if it is not one (RFC 9111 1.2.2). */
function deltaSeconds(value: string | true | undefined): number | undefined {
  if (typeof value !== 'string' || !/^\d+$/.test(value)) return undefined
  return Math.min(Number(value), 2 ** 31) * 1000
}

const MONTHS = ['jan', 'feb', 'mar', 'apr', 'may', 'jun', 'jul', 'aug', 'sep', 'oct', 'nov', 'dec']

const TIME = '(?<hours>\\d{2}):(?<minutes>\\d{2}):(?<seconds>\\d{2})'

/**
 * The three forms of HTTP-date recipients must accept (RFC 9110 5.6.7), in any letter case:
 * IMF-fixdate `Sun, 06 Nov 1994 08:49:37 GMT`, RFC 850 `Sunday, 06-Nov-94 08:49:37 GMT` and
 * asctime `Sun Nov  6 08:49:37 1994`.
 */
const HTTP_DATE = [
  `^[a-z]{3}, (?<day>\\d{2}) (?<month>[a-z]{3}) (?<year>\\d{4}) ${TIME} gmt$`,
  `^[a-z]{6,9}, (?<day>\\d{2})-(?<month>[a-z]{3})-(?<year>\\d{2}) ${TIME} gmt$`,
  `^[a-z]{3} (?<month>[a-z]{3}) (?<day>[ \\d]\\d) ${TIME} (?<year>\\d{4})$`,
].map((form) => new RegExp(form, 'i'))

/** An HTTP-date in ms, or undefined if it is not one (such as `0`, or two dates). */
function httpDate(value: string | undefined): number | undefined {
  const text = value?.trim() ?? ''
  const fields = HTTP_DATE.map((form) => form.exec(text)?.groups).find((groups) => groups !== undefined)
  if (!fields) return undefined
  const [day, hours, minutes, seconds] = [fields.day, fields.hours, fields.minutes, fields.seconds].map(Number)
  const month = MONTHS.indexOf(fields.month!.toLowerCase())
  let year = Number(fields.year)
  if (fields.year!.length === 2) {
    // RFC 9110 5.6.7: a two-digit year more than 50 years ahead is the latest past one.
    const thisYear = new Date().getUTCFullYear()
    year += thisYear - (thisYear % 100)
    if (year > thisYear + 50) year -= 100
  }
  if (month === -1 || day! < 1 || day! > 31 || hours! > 23 || minutes! > 59 || seconds! > 60) return undefined
  return Date.UTC(year, month, day, hours, minutes, seconds)
}

/**
 * What the response says about its freshness. `requestTime` and `responseTime` (this host's
 * clock) are when the handler was asked and when its answer began: they correct the age of a
 * response that was already old (an `Age` from an upstream cache, a `Date` in the past).
 */
export function freshnessOf(headers: StoredHeader[], requestTime: number, responseTime: number): Freshness {
  const targeted = parseTargetedField(header(headers, 'cdn-cache-control'))
  const control = targeted ?? parseCacheControl(header(headers, 'cache-control'))
  const date = httpDate(header(headers, 'date')) ?? responseTime

  let lifetime: number | undefined
  if (targeted) {
    lifetime = deltaSeconds(targeted.get('s-maxage')) ?? deltaSeconds(targeted.get('max-age'))
    if (lifetime === undefined && (targeted.has('s-maxage') || targeted.has('max-age'))) lifetime = 0
  } else {
    const sMaxAge = control.get('s-maxage')
    const maxAge = control.get('max-age')
    if (sMaxAge !== undefined) lifetime = deltaSeconds(sMaxAge) ?? 0
    else if (maxAge !== undefined) lifetime = deltaSeconds(maxAge) ?? 0
    else {
      const expires = header(headers, 'expires')
      // An Expires that is not one HTTP-date (such as "0") means already expired.
      if (expires !== undefined) lifetime = Math.max(0, (httpDate(expires) ?? 0) - date)
    }
  }

  // RFC 9111 4.2.3. The response delay (the handler's run) counts only for a response that
  // already aged in another cache (it has an Age): one the handler made is new when it answers.
  const ageValue = deltaSeconds(header(headers, 'age')?.split(',')[0]?.trim())
  // Date has a resolution of one second: the part of the second it drops is not age.
  const apparentAge = Math.max(0, Math.floor(responseTime / 1000) * 1000 - date)
  const correctedAgeValue = ageValue === undefined ? 0 : ageValue + Math.max(0, responseTime - requestTime)
  const initialAge = Math.max(apparentAge, correctedAgeValue)

  return {
    lifetime,
    initialAge,
    staleWhileRevalidate: deltaSeconds(control.get('stale-while-revalidate')),
    staleIfError: deltaSeconds(control.get('stale-if-error')),
    mustRevalidate: control.has('must-revalidate') || control.has('proxy-revalidate') || control.has('s-maxage'),
    noStore: control.has('no-store') || control.has('private'),
    noCache: control.has('no-cache'),
    validator: headers.some(([name]) => name === 'etag' || name === 'last-modified'),
  }
}

/** The cache's own settings that decide an entry's lifetimes (all ms). */
export interface LifetimeSettings {
  /** 'response': the response's freshness decides, `ttl` when it says nothing; 'ttl': `ttl` always. */
  freshness: 'response' | 'ttl'
  ttl: number
  /** No entry is fresh for longer than this (Infinity: no cap). */
  maxTtl: number
  staleWhileRevalidate: number
  staleIfError: number
}

/**
 * How long a response stays fresh once stored, and how long it may then be served stale or
 * kept to be revalidated. `no-cache`: stale at once and never served stale (revalidated on
 * every use), in both modes. In 'ttl' mode: `ttl` and the stale windows of the options. In
 * 'response' mode: the response's lifetime (or `ttl`) capped at `maxTtl`, minus the age it
 * already had; the stale windows are the longer of the options' and the response's own, and
 * none at all when the response forbids serving it stale (`must-revalidate`,
 * `proxy-revalidate`, `s-maxage`). An entry with a validator (`ETag`, `Last-Modified`) is kept `ttl` past its
 * freshness, to be revalidated rather than fetched again.
 */
export function lifetimesOf(freshness: Freshness, settings: LifetimeSettings): Lifetimes {
  const revalidateFor = freshness.validator ? settings.ttl : 0
  if (freshness.noCache) return { ttl: 0, staleWhileRevalidate: 0, staleIfError: 0, revalidateFor }
  if (settings.freshness === 'ttl') {
    const { ttl, staleWhileRevalidate, staleIfError } = settings
    return { ttl: Math.min(ttl, settings.maxTtl), staleWhileRevalidate, staleIfError, revalidateFor }
  }
  const lifetime = Math.min(freshness.lifetime ?? settings.ttl, settings.maxTtl)
  const noStale = freshness.mustRevalidate
  return {
    ttl: lifetime - freshness.initialAge,
    staleWhileRevalidate: noStale ? 0 : Math.max(settings.staleWhileRevalidate, freshness.staleWhileRevalidate ?? 0),
    staleIfError: noStale ? 0 : Math.max(settings.staleIfError, freshness.staleIfError ?? 0),
    revalidateFor,
  }
}
