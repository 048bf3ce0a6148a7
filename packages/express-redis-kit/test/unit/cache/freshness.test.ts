import { expect } from 'chai'
import {
  type Freshness,
  freshnessOf,
  type LifetimeSettings,
  lifetimesOf,
  parseCacheControl,
} from '../../../src/cache/freshness.js'
import type { StoredHeader } from '../../../src/cache/http.js'

/*
 * Every time here is explicit: freshnessOf takes the request and response times (this host's
 * clock) as arguments. The one clock it reads itself is the current year, for a two-digit year
 * of an RFC 850 date.
 */
const SECOND = 1_000
/** When the handler answered: 250 ms into a second, so that Date's one-second resolution shows. */
const responseTime = Date.UTC(2024, 0, 15, 12, 0, 0) + 250
/** When the handler was asked. */
const requestTime = responseTime - 100
/** responseTime as an HTTP-date (its second). */
const dateNow = new Date(responseTime).toUTCString()
const dateAt = (ms: number) => new Date(ms).toUTCString()

const freshness = (headers: StoredHeader[]) => freshnessOf(headers, requestTime, responseTime)
const lifetime = (headers: StoredHeader[]) => freshness(headers).lifetime

describe('cache freshness (RFC 9111 4.2, RFC 9213, RFC 5861)', () => {
  describe('parseCacheControl', () => {
    it('lowercase names, `true` without a value, values trimmed and unquoted', () => {
      expect([...parseCacheControl('Public, MAX-AGE = 60 ,no-cache="Set-Cookie", s-maxage="30"')]).to.deep.equal([
        ['public', true],
        ['max-age', '60'],
        ['no-cache', 'Set-Cookie'],
        ['s-maxage', '30'],
      ])
    })

    it('a comma inside a quoted value does not split it (an escaped quote stays inside)', () => {
      expect([...parseCacheControl('private="set-cookie, x-user", no-cache="a\\", b", max-age=5')]).to.deep.equal([
        ['private', 'set-cookie, x-user'],
        ['no-cache', 'a\\", b'],
        ['max-age', '5'],
      ])
    })

    it('a directive given twice: the first value counts; empty parts and nameless ones are skipped', () => {
      expect([...parseCacheControl(',, max-age=60, , max-age=0, =5, ')]).to.deep.equal([['max-age', '60']])
      expect(parseCacheControl(undefined).size).to.equal(0)
      expect(parseCacheControl('').size).to.equal(0)
    })
  })

  describe('lifetime', () => {
    it('nothing said: undefined (the cache’s ttl applies)', () => {
      expect(lifetime([])).to.equal(undefined)
      expect(lifetime([['cache-control', 'public']])).to.equal(undefined)
    })

    it('s-maxage, then max-age, then Expires minus Date', () => {
      expect(lifetime([['cache-control', 'max-age=60']])).to.equal(60 * SECOND)
      expect(lifetime([['cache-control', 'max-age=60, s-maxage=30']])).to.equal(30 * SECOND)
      const expires = dateAt(responseTime + 120 * SECOND)
      expect(
        lifetime([
          ['date', dateNow],
          ['expires', expires],
        ]),
      ).to.equal(120 * SECOND)
      expect(
        lifetime([
          ['cache-control', 'max-age=5'],
          ['expires', expires],
        ]),
        'max-age wins over Expires',
      ).to.equal(5 * SECOND)
    })

    it('an invalid max-age or s-maxage (negative, fraction, text, empty) means stale at once', () => {
      for (const value of ['-1', '1.5', 'abc', '', '"', '0x10', '1e3'])
        expect(lifetime([['cache-control', `max-age=${value}`]]), value).to.equal(0)
      expect(lifetime([['cache-control', 'max-age=60, s-maxage=x']])).to.equal(0)
    })

    it('a huge max-age is capped at 2^31 seconds', () => {
      expect(lifetime([['cache-control', `max-age=${'9'.repeat(30)}`]])).to.equal(2 ** 31 * SECOND)
    })

    it('several Cache-Control fields are one list: the first max-age counts', () => {
      expect(lifetime([['cache-control', ['public, max-age=60', 'max-age=10']]])).to.equal(60 * SECOND)
      expect(
        lifetime([
          ['cache-control', 'max-age=70'],
          ['cache-control', 'max-age=10'],
        ]),
      ).to.equal(70 * SECOND)
    })

    it('Expires that is not one HTTP-date ("0", two dates, garbage) or is in the past: stale at once', () => {
      for (const expires of ['0', '-1', 'never', `${dateNow}, ${dateNow}`, dateAt(responseTime - 60 * SECOND)])
        expect(lifetime([['expires', expires]]), expires).to.equal(0)
    })

    it('Expires without Date: counted from when the response came', () => {
      const second = Math.floor(responseTime / SECOND) * SECOND
      expect(lifetime([['expires', dateAt(second + 60 * SECOND)]])).to.equal(second + 60 * SECOND - responseTime)
    })

    it('the three HTTP-date forms, in any letter case', () => {
      const date: StoredHeader = ['date', 'Sun, 06 Nov 1994 08:49:37 GMT']
      for (const expires of [
        'Sun, 06 Nov 1994 08:50:37 GMT',
        'sun, 06 nov 1994 08:50:37 gmt',
        'Sunday, 06-Nov-94 08:50:37 GMT',
        'Sun Nov  6 08:50:37 1994',
      ])
        expect(lifetime([date, ['expires', expires]]), expires).to.equal(60 * SECOND)
    })

    it('impossible dates are not dates', () => {
      for (const expires of [
        'Sun, 32 Nov 1994 08:49:37 GMT',
        'Sun, 06 Nov 1994 24:00:00 GMT',
        'Sun, 06 Xyz 1994 08:49:37 GMT',
        'Sun, 06 Nov 1994 08:49:37 UTC',
      ])
        expect(lifetime([['expires', expires]]), expires).to.equal(0)
    })

    it('an RFC 850 two-digit year more than 50 years ahead is the latest past one', () => {
      const date: StoredHeader = ['date', 'Sun, 06 Nov 1994 08:49:37 GMT']
      // '94 is 1994, not 2094: the Expires below is a minute after Date
      expect(lifetime([date, ['expires', 'Sunday, 06-Nov-94 08:50:37 GMT']])).to.equal(60 * SECOND)
    })
  })

  describe('CDN-Cache-Control (RFC 9213): replaces Cache-Control when it parses', () => {
    it('its max-age wins, and Cache-Control’s must-revalidate no longer applies', () => {
      const found = freshness([
        ['cache-control', 'max-age=10, must-revalidate, no-store'],
        ['cdn-cache-control', 'max-age=120'],
      ])
      expect(found).to.include({ lifetime: 120 * SECOND, mustRevalidate: false, noStore: false })
    })

    it('its own directives: no-store, stale windows, a negative max-age (stale at once)', () => {
      expect(freshness([['cdn-cache-control', 'no-store']]).noStore).to.equal(true)
      expect(freshness([['cdn-cache-control', 'max-age=5, stale-while-revalidate=30']])).to.include({
        lifetime: 5 * SECOND,
        staleWhileRevalidate: 30 * SECOND,
      })
      expect(lifetime([['cdn-cache-control', 'max-age=-5']])).to.equal(0)
    })

    it('a field that does not parse is ignored: Cache-Control applies', () => {
      for (const field of ['max-age="120"', 'MAX-AGE=120', 'max-age=120,,', 'max-age=1.5', 'max-age=5 6', '=5']) {
        const found = freshness([
          ['cache-control', 'max-age=10'],
          ['cdn-cache-control', field],
        ])
        expect(found.lifetime, field).to.equal(10 * SECOND)
      }
    })
  })

  describe('initial age (RFC 9111 4.2.3)', () => {
    it('a response made here, with a Date of this second: no age (the dropped milliseconds are not age)', () => {
      expect(freshness([['date', dateNow]]).initialAge).to.equal(0)
      expect(freshness([]).initialAge).to.equal(0)
    })

    it('an old Date: its apparent age; a Date in the future: none', () => {
      const second = Math.floor(responseTime / SECOND) * SECOND
      expect(freshness([['date', dateAt(second - 10 * SECOND)]]).initialAge).to.equal(10 * SECOND)
      expect(freshness([['date', dateAt(second + 3_600 * SECOND)]]).initialAge).to.equal(0)
    })

    it('an Age from an upstream cache, plus the response delay; the first of several; garbage ignored', () => {
      expect(freshness([['age', '30']]).initialAge).to.equal(30 * SECOND + (responseTime - requestTime))
      expect(freshness([['age', '30, 40']]).initialAge).to.equal(30 * SECOND + 100)
      expect(freshness([['age', '-30']]).initialAge).to.equal(0)
      expect(freshness([['age', 'old']]).initialAge).to.equal(0)
    })

    it('the larger of the apparent and the corrected age', () => {
      const second = Math.floor(responseTime / SECOND) * SECOND
      const found = freshness([
        ['date', dateAt(second - 60 * SECOND)],
        ['age', '5'],
      ])
      expect(found.initialAge).to.equal(60 * SECOND)
    })
  })

  it('flags: no-store and private, no-cache, must-revalidate, proxy-revalidate, s-maxage, validators', () => {
    const of = (control: string, ...more: StoredHeader[]) => freshness([['cache-control', control], ...more])
    expect(of('private').noStore).to.equal(true)
    expect(of('no-store').noStore).to.equal(true)
    expect(of('public').noStore).to.equal(false)
    expect(of('no-cache').noCache).to.equal(true)
    expect(of('must-revalidate').mustRevalidate).to.equal(true)
    expect(of('proxy-revalidate').mustRevalidate).to.equal(true)
    expect(of('s-maxage=5').mustRevalidate).to.equal(true)
    expect(of('max-age=5').mustRevalidate).to.equal(false)
    expect(of('stale-if-error=60, stale-while-revalidate=x')).to.include({
      staleIfError: 60 * SECOND,
      staleWhileRevalidate: undefined,
    })
    expect(of('public', ['etag', '"v1"']).validator).to.equal(true)
    expect(of('public', ['last-modified', dateNow]).validator).to.equal(true)
    expect(of('public').validator).to.equal(false)
  })

  describe('lifetimesOf', () => {
    const said = (overrides: Partial<Freshness>): Freshness => ({
      lifetime: undefined,
      initialAge: 0,
      staleWhileRevalidate: undefined,
      staleIfError: undefined,
      mustRevalidate: false,
      noStore: false,
      noCache: false,
      validator: false,
      ...overrides,
    })
    const settings = (overrides: Partial<LifetimeSettings> = {}): LifetimeSettings => ({
      freshness: 'response',
      ttl: 300 * SECOND,
      maxTtl: Number.POSITIVE_INFINITY,
      staleWhileRevalidate: 10 * SECOND,
      staleIfError: 20 * SECOND,
      ...overrides,
    })

    it("'response': the response's lifetime less its age; ttl when it says nothing", () => {
      expect(lifetimesOf(said({ lifetime: 60 * SECOND, initialAge: 15 * SECOND }), settings())).to.deep.equal({
        ttl: 45 * SECOND,
        staleWhileRevalidate: 10 * SECOND,
        staleIfError: 20 * SECOND,
        revalidateFor: 0,
      })
      expect(lifetimesOf(said({}), settings()).ttl).to.equal(300 * SECOND)
    })

    it("'response': capped at maxTtl before the age is taken off; may come out negative (already stale)", () => {
      const capped = settings({ maxTtl: 30 * SECOND })
      expect(lifetimesOf(said({ lifetime: 3_600 * SECOND, initialAge: 10 * SECOND }), capped).ttl).to.equal(20 * SECOND)
      expect(lifetimesOf(said({ lifetime: 10 * SECOND, initialAge: 30 * SECOND }), settings()).ttl).to.equal(
        -20 * SECOND,
      )
    })

    it("'response': the longer stale windows of the options and the response; none with must-revalidate", () => {
      const own = said({ lifetime: 60 * SECOND, staleWhileRevalidate: 5 * SECOND, staleIfError: 600 * SECOND })
      expect(lifetimesOf(own, settings())).to.include({ staleWhileRevalidate: 10 * SECOND, staleIfError: 600 * SECOND })
      expect(lifetimesOf({ ...own, mustRevalidate: true }, settings())).to.include({
        staleWhileRevalidate: 0,
        staleIfError: 0,
      })
    })

    it("'ttl': the options, whatever the response says (but maxTtl)", () => {
      const told = said({ lifetime: 5 * SECOND, initialAge: 4 * SECOND, mustRevalidate: true, staleIfError: 900 })
      expect(lifetimesOf(told, settings({ freshness: 'ttl' }))).to.deep.equal({
        ttl: 300 * SECOND,
        staleWhileRevalidate: 10 * SECOND,
        staleIfError: 20 * SECOND,
        revalidateFor: 0,
      })
      expect(lifetimesOf(told, settings({ freshness: 'ttl', maxTtl: SECOND })).ttl).to.equal(SECOND)
    })

    it('no-cache: stale at once and never served stale, in both modes; a validator keeps it ttl to revalidate', () => {
      for (const mode of ['response', 'ttl'] as const) {
        expect(
          lifetimesOf(said({ noCache: true, lifetime: 60 * SECOND }), settings({ freshness: mode })),
        ).to.deep.equal({ ttl: 0, staleWhileRevalidate: 0, staleIfError: 0, revalidateFor: 0 })
        expect(
          lifetimesOf(said({ noCache: true, validator: true }), settings({ freshness: mode })).revalidateFor,
        ).to.equal(300 * SECOND)
      }
    })
  })
})
