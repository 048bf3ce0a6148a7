import { expect } from 'chai'
import { parseDuration } from '../../../src/shared/duration.js'
import { OptionError } from '../../../src/shared/errors.js'
import { recordingLogger } from '../../helpers/outage.js'

const SECOND = 1_000
const MINUTE = 60 * SECOND
const HOUR = 60 * MINUTE
const DAY = 24 * HOUR

/** The error parseDuration throws for `value`, or a failure if it returns. */
function refusal(value: unknown, option = 'ttl'): OptionError {
  try {
    parseDuration(value, option)
  } catch (error) {
    return error as OptionError
  }
  throw new Error(`${JSON.stringify(value)} was accepted`)
}

describe('parseDuration', () => {
  describe('units', () => {
    const cases: [string, number][] = [
      ['500ms', 500],
      ['1msec', 1],
      ['2msecs', 2],
      ['3millisecond', 3],
      ['4milliseconds', 4],
      ['10s', 10 * SECOND],
      ['10sec', 10 * SECOND],
      ['10secs', 10 * SECOND],
      ['1second', SECOND],
      ['30 seconds', 30 * SECOND],
      ['15m', 15 * MINUTE],
      ['15min', 15 * MINUTE],
      ['15mins', 15 * MINUTE],
      ['1 minute', MINUTE],
      ['5 minutes', 5 * MINUTE],
      ['1h', HOUR],
      ['1hr', HOUR],
      ['2hrs', 2 * HOUR],
      ['1 hour', HOUR],
      ['2 hours', 2 * HOUR],
      ['1d', DAY],
      ['1 day', DAY],
      ['2 days', 2 * DAY],
      ['2w', 14 * DAY],
      ['1 week', 7 * DAY],
      ['3 weeks', 21 * DAY],
    ]
    for (const [text, ms] of cases) {
      it(`'${text}' is ${ms} ms`, () => expect(parseDuration(text, 'ttl')).to.equal(ms))
    }

    it('any letter case, spaces around and between: the same duration', () => {
      for (const text of ['15M', '15 Minutes', ' 15m ', '15   min', '15MIN', '\t15m\n'])
        expect(parseDuration(text, 'ttl'), JSON.stringify(text)).to.equal(15 * MINUTE)
    })

    it('fractions, with or without a leading digit, rounded to whole milliseconds', () => {
      expect(parseDuration('1.5h', 'ttl')).to.equal(90 * MINUTE)
      expect(parseDuration('.5s', 'ttl')).to.equal(500)
      expect(parseDuration('0.25 days', 'ttl')).to.equal(6 * HOUR)
      expect(parseDuration('1.4ms', 'ttl')).to.equal(1)
      expect(parseDuration('1.5ms', 'ttl')).to.equal(2)
      expect(parseDuration(2.5, 'ttl')).to.equal(3)
    })

    it('a number is milliseconds', () => {
      expect(parseDuration(1, 'ttl')).to.equal(1)
      expect(parseDuration(60_000, 'ttl')).to.equal(MINUTE)
      expect(parseDuration(Number.MAX_SAFE_INTEGER, 'ttl')).to.equal(Number.MAX_SAFE_INTEGER)
    })
  })

  describe('bounds and hostile input: an OptionError (TypeError, ERK_INVALID_OPTION) naming the option', () => {
    const refused: [string, unknown][] = [
      ['zero', 0],
      ['zero with a unit', '0 ms'],
      ['under one millisecond', 0.4],
      ['under one millisecond as text', '0.4ms'],
      ['negative', -5],
      ['negative text', '-5s'],
      ['NaN', Number.NaN],
      ['Infinity', Number.POSITIVE_INFINITY],
      ['an exponent', '1e3ms'],
      ['a bare number as text', '1000'],
      ['a unit alone', 'ms'],
      ['months', '1 month'],
      ['years', '1y'],
      ['an unknown unit', '5 fortnights'],
      ['two durations', '1h 30m'],
      ['a comma', '1,5s'],
      ['a trailing dot', '5.s'],
      ['a prototype name as unit', '5constructor'],
      ['__proto__ as unit', '5__proto__'],
      ['hasOwnProperty as unit', '5hasownproperty'],
      ['an empty string', ''],
      ['null', null],
      ['a boolean', true],
      ['an object', { ms: 5 }],
      ['a boxed number', Object(5)],
      ['a bigint', 5n],
      ['a float that overflows to Infinity', `${'9'.repeat(400)}ms`],
    ]
    for (const [what, value] of refused) {
      it(what, () => {
        const error = refusal(value)
        expect(error).to.be.instanceOf(OptionError).and.instanceOf(TypeError)
        expect(error.code).to.equal('ERK_INVALID_OPTION')
        expect(error.message).to.match(/^express-redis-kit: option `ttl` must be a positive number of milliseconds/)
        expect(error.message).to.include('months and years are not durations here')
      })
    }

    it('names the option it is given, and describes the value without dumping it', () => {
      const error = refusal(`${'x'.repeat(100)}`, 'limits[1].windowMs')
      expect(error.message).to.include('option `limits[1].windowMs` must be')
      expect(error.message).to.include(`received the string "${'x'.repeat(40)}…"`)
      expect(refusal({ secret: 'hunter2' }).message).to.match(/received an object$/)
    })
  })

  describe('secondsCheck: a bare number under 1,000 warns (ERK_DURATION_UNIT)', () => {
    const unitWarnings = (logger: ReturnType<typeof recordingLogger>) =>
      logger.warnings.map(([message]) => String(message)).filter((message) => message.includes('ERK_DURATION_UNIT'))

    it('once per logger, option and value; read as milliseconds all the same', () => {
      const logger = recordingLogger()
      const check = { logger, feature: 'rateLimit' }
      expect(parseDuration(60, 'windowMs', check)).to.equal(60)
      expect(parseDuration(60, 'windowMs', check)).to.equal(60)
      expect(unitWarnings(logger)).to.deep.equal([
        'express-redis-kit rateLimit [ERK_DURATION_UNIT]: option `windowMs` is 60, read as 60 milliseconds: did ' +
          "you mean seconds? Write '60s' for seconds, or '60ms' to keep milliseconds without this warning.",
      ])
      parseDuration(60, 'blockDuration', check)
      parseDuration(61, 'windowMs', check)
      expect(unitWarnings(logger)).to.have.length(3)
      const other = recordingLogger()
      parseDuration(60, 'windowMs', { logger: other, feature: 'rateLimit' })
      expect(unitWarnings(other)).to.have.length(1)
    })

    it('no warning from 1,000 up, nor for a string with a unit', () => {
      const logger = recordingLogger()
      const check = { logger, feature: 'session' }
      parseDuration(1_000, 'idleTimeout', check)
      parseDuration(999.5, 'idleTimeout', check)
      parseDuration('60ms', 'idleTimeout', check)
      parseDuration('60 s', 'idleTimeout', check)
      // 999.5 is under 1,000: warned; the rest are not
      expect(unitWarnings(logger)).to.have.length(1)
      expect(unitWarnings(logger)[0]).to.include('is 999.5')
    })

    it('an invalid number is refused before any warning', () => {
      const logger = recordingLogger()
      expect(() => parseDuration(0, 'windowMs', { logger, feature: 'rateLimit' })).to.throw(OptionError)
      expect(logger.warnings).to.deep.equal([])
    })
  })
})
