import { expect } from 'chai'
import type { Request, Response } from 'express'
import { createClient } from 'redis'
import { parseRateLimitOptions, policyName, type RateLimitOptions } from '../../../src/rate-limit/options.js'
import type { RedisClient } from '../../../src/shared/redis.js'
import { optionErrorOf } from '../../helpers/option-error.js'
import { recordingLogger } from '../../helpers/outage.js'

/** A node-redis client that is never connected: option parsing sends nothing. */
const client = createClient() as unknown as RedisClient
const logger = recordingLogger()
const parse = (options: Record<string, unknown> = {}) =>
  parseRateLimitOptions({ client, logger, ...options } as RateLimitOptions)

describe('rateLimit option parsing', () => {
  it('every default resolved', () => {
    const config = parse()
    expect(config).to.include({
      client,
      limit: 100,
      windowMs: 60_000,
      limits: undefined,
      blockMs: 0,
      mode: 'enforce',
      onLimit: undefined,
      localBlockCache: 10_000,
      algorithm: 'sliding-window',
      burst: undefined,
      prefix: 'rl:',
      cost: 1,
      skip: undefined,
      skipSuccessfulRequests: false,
      skipFailedRequests: false,
      statusCode: 429,
      message: 'Too many requests, please try again later.',
      handler: undefined,
      standardHeaders: 'draft-8',
      legacyHeaders: false,
      identifier: undefined,
      requestPropertyName: 'rateLimit',
      onRedisError: 'allow',
      timeoutMs: 500,
      logger,
      keysByIp: true,
    })
    expect(config.validate).to.deep.equal({
      trustProxy: true,
      xForwardedForHeader: true,
      creationStack: true,
      singleCount: true,
      unsharedStore: true,
    })
  })

  it('0 and false are values, not "use the default"', () => {
    const config = parse({ limit: 0, cost: 0, localBlockCache: false, standardHeaders: false, validate: false })
    expect(config).to.include({ limit: 0, cost: 0, localBlockCache: false, standardHeaders: false })
    expect(Object.values(config.validate)).to.deep.equal([false, false, false, false, false])
  })

  describe('the default keyGenerator: the client IP', () => {
    const key = (ip: string | undefined, options: Record<string, unknown> = {}) =>
      parse(options).keyGenerator({ ip, socket: { remoteAddress: '10.9.9.9' } } as Request, {} as Response)

    it('IPv4 as it is; IPv6 by its /56, or by the ipv6Subnet given', () => {
      expect(key('203.0.113.7')).to.equal('203.0.113.7')
      expect(key('2001:db8:1:2345::1')).to.equal('2001:db8:1:2300::/56')
      expect(key('2001:db8:1:2345::1', { ipv6Subnet: 64 })).to.equal('2001:db8:1:2345::/64')
      expect(key('2001:db8:1:2345::1', { ipv6Subnet: false })).to.equal('2001:db8:1:2345::1')
    })

    it('no req.ip: the socket’s address; neither: ERK_MISCONFIGURED, asking for a keyGenerator', () => {
      expect(key(undefined)).to.equal('10.9.9.9')
      const generator = parse().keyGenerator
      expect(() => generator({ socket: {} } as Request, {} as Response))
        .to.throw('the client IP is unknown (req.ip is undefined); pass a keyGenerator')
        .with.property('code', 'ERK_MISCONFIGURED')
    })

    it('a keyGenerator of the app: used, and the proxy checks are off', () => {
      const keyGenerator = () => 'k'
      const config = parse({ keyGenerator })
      expect(config.keyGenerator).to.equal(keyGenerator)
      expect(config.keysByIp).to.equal(false)
    })
  })

  it('requestWasSuccessful by default: a status under 400', () => {
    const { requestWasSuccessful } = parse()
    const of = (statusCode: number) => requestWasSuccessful({} as Request, { statusCode } as Response)
    expect([of(200), of(304), of(399), of(400), of(500)]).to.deep.equal([true, true, true, false, false])
  })

  describe('limits: several windows', () => {
    it('each with its policy name, durations in any form', () => {
      const config = parse({
        limits: [
          { limit: 10, windowMs: '1s' },
          { limit: 1_000, windowMs: '1h', identifier: 'hourly' },
        ],
      })
      expect(config.limits).to.deep.equal([
        { limit: 10, windowMs: 1_000, identifier: '10-in-1sec' },
        { limit: 1_000, windowMs: 3_600_000, identifier: 'hourly' },
      ])
    })

    const refused: [string, Record<string, unknown>, string][] = [
      ['with limit', { limit: 5, limits: [{ limit: 1, windowMs: 1_000 }] }, 'given without `limit` and `windowMs`'],
      ['with windowMs', { windowMs: 5, limits: [{ limit: 1, windowMs: 1_000 }] }, 'given without `limit`'],
      ['empty', { limits: [] }, 'option `limits` must be a non-empty array of { limit, windowMs }'],
      ['not an array', { limits: { limit: 1, windowMs: 1 } }, 'option `limits` must be a non-empty array'],
      ['a window that is not an object', { limits: [null] }, 'option `limits[0]` must be an object'],
      ['a limit of 0', { limits: [{ limit: 0, windowMs: 1_000 }] }, 'option `limits[0].limit` must be a positive'],
      ['a bad window', { limits: [{ limit: 1, windowMs: '1 month' }] }, 'option `limits[0].windowMs` must be'],
      [
        'two windows of one length',
        {
          limits: [
            { limit: 1, windowMs: '1s' },
            { limit: 2, windowMs: 1_000 },
          ],
        },
        'windows of different lengths (two share a windowMs)',
      ],
      [
        'a policy name with a quote',
        { limits: [{ limit: 1, windowMs: 1_000, identifier: 'a"b' }] },
        'option `limits[0].identifier` must be a non-empty string without quotes',
      ],
      [
        'a peer option in a window',
        { limits: [{ max: 1, windowMs: 1_000 }] },
        'option `limits[0].max` must be a known option (use `limit`)',
      ],
      ['with burst', { limits: [{ limit: 1, windowMs: 1_000 }], algorithm: 'token-bucket', burst: 2 }, '`burst`'],
      ['with identifier', { limits: [{ limit: 1, windowMs: 1_000 }], identifier: 'x' }, 'give each window its own'],
    ]
    for (const [what, options, message] of refused) {
      it(`refused: ${what}`, () => expect(optionErrorOf(() => parse(options))).to.include(message))
    }
  })

  describe('validate', () => {
    it('an object: the named checks as given, `default` for the others', () => {
      expect(parse({ validate: { xForwardedForHeader: false } }).validate).to.deep.equal({
        trustProxy: true,
        xForwardedForHeader: false,
        creationStack: true,
        singleCount: true,
        unsharedStore: true,
      })
      expect(parse({ validate: { default: false, singleCount: true } }).validate).to.deep.equal({
        trustProxy: false,
        xForwardedForHeader: false,
        creationStack: false,
        singleCount: true,
        unsharedStore: false,
      })
    })

    it("express-rate-limit's checks that have no switch here: named, with why", () => {
      expect(optionErrorOf(() => parse({ validate: { ip: false } }))).to.include(
        'option `validate.ip` must be a known option (not needed: an unknown client IP is an error',
      )
      expect(optionErrorOf(() => parse({ validate: { trustproxy: false } }))).to.include('(use `trustProxy`)')
      expect(optionErrorOf(() => parse({ validate: { singleCount: 'no' } }))).to.include(
        'option `validate.singleCount` must be a boolean',
      )
      expect(optionErrorOf(() => parse({ validate: [] }))).to.include(
        'option `validate` must be a boolean or an object of booleans',
      )
    })
  })

  describe('peer options: named, with what to use here', () => {
    const hinted: [string, unknown, string][] = [
      ['max', 5, '(use `limit`)'],
      ['headers', true, '(use `legacyHeaders`)'],
      ['store', {}, '(use `client`: the node-redis client itself, no store object)'],
      ['points', 5, '(use `limit`)'],
      ['duration', 60, '(use `windowMs`: in milliseconds, where rate-limiter-flexible counts seconds)'],
      ['keyPrefix', 'rl', '(use `prefix`)'],
      ['delayMs', 100, '(not supported: a request is admitted or refused at once, never delayed)'],
      ['insuranceLimiter', {}, "(use `onRedisError`: 'local' limits in this process's memory while Redis fails)"],
      ['windowMS', 5, '(use `windowMs`)'],
      ['keyGen', () => 'k', ''],
    ]
    for (const [name, value, hint] of hinted) {
      it(name, () => {
        const message = optionErrorOf(() => parse({ [name]: value }))
        expect(message).to.include(`option \`${name}\` must be a known option${hint ? ` ${hint}` : ';'}`)
      })
    }
  })

  it('values checked, naming the option', () => {
    const refused: [Record<string, unknown>, string, string][] = [
      [{ limit: -1 }, 'limit', 'a non-negative integer or a function'],
      [{ limit: 1.5 }, 'limit', 'a non-negative integer'],
      [{ limit: '100' }, 'limit', 'a non-negative integer'],
      [{ windowMs: 0 }, 'windowMs', 'a positive number of milliseconds'],
      [
        { algorithm: 'leaky-bucket' },
        'algorithm',
        "one of 'sliding-window', 'fixed-window', 'sliding-log', 'token-bucket'",
      ],
      [{ burst: 5 }, 'burst', "used only with algorithm 'token-bucket'"],
      [{ algorithm: 'token-bucket', burst: 0 }, 'burst', 'a positive integer'],
      [{ ipv6Subnet: 0 }, 'ipv6Subnet', 'an integer from 1 to 128, or false'],
      [{ ipv6Subnet: 129 }, 'ipv6Subnet', 'an integer from 1 to 128'],
      [{ ipv6Subnet: true }, 'ipv6Subnet', 'an integer from 1 to 128'],
      [{ cost: -1 }, 'cost', 'a non-negative integer or a function'],
      [{ statusCode: 200 }, 'statusCode', 'an HTTP error status (400-599)'],
      [{ statusCode: 600 }, 'statusCode', 'an HTTP error status'],
      [
        { standardHeaders: true },
        'standardHeaders',
        "'draft-6', 'draft-7', 'draft-8' or false (express-rate-limit's `true` is 'draft-6')",
      ],
      [{ identifier: 'a\nb' }, 'identifier', 'a string without quotes, backslashes or newlines'],
      [{ requestPropertyName: '' }, 'requestPropertyName', 'a non-empty string'],
      [{ onRedisError: 'fail' }, 'onRedisError', "'allow', 'block' or 'local'"],
      [{ mode: 'dry-run' }, 'mode', "'enforce' or 'shadow'"],
      [{ localBlockCache: 0 }, 'localBlockCache', 'a positive integer (how many blocked clients to remember) or false'],
      [{ localBlockCache: true }, 'localBlockCache', 'a positive integer'],
      [{ blockDuration: '1 year' }, 'blockDuration', 'a positive number of milliseconds'],
      [{ skip: true }, 'skip', 'a function'],
      [{ legacyHeaders: 'yes' }, 'legacyHeaders', 'a boolean'],
      [{ skipFailedRequests: 1 }, 'skipFailedRequests', 'a boolean'],
      [{ prefix: '{rl}:' }, 'prefix', 'a string without { or }'],
    ]
    for (const [options, option, expected] of refused) {
      expect(
        optionErrorOf(() => parse(options)),
        JSON.stringify(options),
      ).to.include(`option \`${option}\` must be ${expected}`)
    }
  })

  it('policyName: the identifier given, else limit and window', () => {
    expect(policyName(parse(), 100)).to.equal('100-in-1min')
    expect(policyName(parse({ windowMs: '15m' }), 7)).to.equal('7-in-15min')
    expect(policyName(parse({ identifier: 'api' }), 100)).to.equal('api')
    // a function identifier is the middleware's to call: the default name stands in
    expect(policyName(parse({ identifier: () => 'x' }), 5)).to.equal('5-in-1min')
  })
})
