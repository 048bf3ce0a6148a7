import { expect } from 'chai'
import { createClient } from 'redis'
import { parseStoreOptions, type RedisStoreOptions } from '../../../src/express-session/options.js'
import type { RedisClient } from '../../../src/shared/redis.js'
import { optionErrorOf } from '../../helpers/option-error.js'
import { recordingLogger } from '../../helpers/outage.js'

/** A node-redis client that is never connected: option parsing sends nothing. */
const client = createClient() as unknown as RedisClient
const logger = recordingLogger()
const DAY = 86_400_000

describe('express-session RedisStore option parsing', () => {
  const parse = (options: Record<string, unknown> = {}) =>
    parseStoreOptions({ client, logger, ...options } as unknown as RedisStoreOptions)

  it('every default resolved', () => {
    const config = parse()
    expect(config).to.include({
      prefix: 'sess:',
      ttl: DAY,
      disableTouch: false,
      scanCount: 100,
      serializer: JSON,
      userKey: undefined,
      userPath: undefined,
      timeoutMs: 500,
    })
  })

  it('ttl: a duration with its unit; a bare number is refused (connect-redis counted seconds)', () => {
    expect(parse({ ttl: '86400s' }).ttl).to.equal(DAY)
    expect(parse({ ttl: '5000ms' }).ttl).to.equal(5_000)
    for (const ttl of [86_400, 5_000, 0]) {
      expect(
        optionErrorOf(() => parse({ ttl })),
        String(ttl),
      ).to.include(
        "option `ttl` must be a duration with its unit ('1d', '86400s', '30m', '5000ms'): a bare number is ambiguous",
      )
    }
    expect(optionErrorOf(() => parse({ ttl: '1 month' }))).to.include('option `ttl` must be a positive number')
  })

  it("the kit session()'s options and connect-redis's disableTTL: named, with why", () => {
    expect(optionErrorOf(() => parse({ idleTimeout: '1h' }))).to.include('(use `ttl`')
    expect(optionErrorOf(() => parse({ maxSessionsPerUser: 2 }))).to.include(
      "(not supported: the kit's own session() offers it)",
    )
    expect(optionErrorOf(() => parse({ disableTTL: true }))).to.include('(not supported: every session expires')
    expect(optionErrorOf(() => parse({ secrets: ['s'] }))).to.include("(not needed: express-session's `secret`")
  })

  it('values checked, naming the option', () => {
    const refused: [Record<string, unknown>, string][] = [
      [{ disableTouch: 'yes' }, 'option `disableTouch` must be a boolean'],
      [{ scanCount: 0 }, 'option `scanCount` must be a positive integer'],
      [{ serializer: { parse: JSON.parse } }, 'option `serializer` must be an object with parse() and stringify()'],
      [{ userKey: '' }, 'option `userKey` must be'],
      [{ prefix: 'a{' }, 'option `prefix` must be a string without { or }'],
    ]
    for (const [options, message] of refused)
      expect(
        optionErrorOf(() => parse(options)),
        JSON.stringify(options),
      ).to.include(message)
  })
})
