import { expect } from 'chai'
import { createClient, createCluster } from 'redis'
import { describe as describeValue } from '../../../src/shared/errors.js'
import {
  check,
  notNeeded,
  notSupported,
  parseClient,
  parseLogger,
  parsePrefix,
  parseTimeoutMs,
  rejectUnknownOptions,
  use,
  warnIfNotConnected,
} from '../../../src/shared/options.js'
import type { RedisClient } from '../../../src/shared/redis.js'
import { optionErrorOf } from '../../helpers/option-error.js'
import { recordingLogger, waitUntil } from '../../helpers/outage.js'

describe('shared option parsing', () => {
  describe('rejectUnknownOptions: a typo or a peer option is named, with a hint', () => {
    const known = new Set(['windowMs', 'limit', 'prefix', 'keyGenerator', 'ttl'])
    const hints = { max: use('limit'), store: use('client', 'the client itself'), delayMs: notSupported('no delays') }
    const reject = (options: object, within?: string) =>
      optionErrorOf(() => rejectUnknownOptions(options, known, hints, within))

    it('a known option, or an unknown one given as undefined, passes', () => {
      rejectUnknownOptions({ windowMs: 1, limit: 2, notAnOption: undefined }, known, hints)
    })

    it('a peer option: its own hint, whatever its value', () => {
      expect(reject({ max: 5 })).to.equal(
        'express-redis-kit: option `max` must be a known option (use `limit`); received the number 5',
      )
      expect(reject({ store: {} })).to.include('(use `client`: the client itself); received an object')
      expect(reject({ delayMs: () => 1 })).to.include('(not supported: no delays); received a function')
    })

    it('a near miss of a known option: use it (letter case does not count as an edit)', () => {
      expect(reject({ windowMS: 1 })).to.include('option `windowMS` must be a known option (use `windowMs`)')
      expect(reject({ windowsMs: 1 })).to.include('(use `windowMs`)')
      expect(reject({ keygenerator: 1 })).to.include('(use `keyGenerator`)')
      expect(reject({ prefx: 1 })).to.include('(use `prefix`)')
      expect(reject({ perfix: 1 })).to.include('(use `prefix`)')
    })

    it('a near miss of a peer name: that name’s hint', () => {
      expect(reject({ delaysMs: 1 })).to.include('(not supported: no delays)')
      expect(reject({ stores: 1 })).to.include('(use `client`: the client itself)')
    })

    it('short names allow one edit, longer ones two, and nothing further', () => {
      expect(reject({ tl: 1 })).to.include('(use `ttl`)')
      expect(reject({ tx: 1 })).to.equal('express-redis-kit: option `tx` must be a known option; received the number 1')
      expect(reject({ limiit: 1 })).to.include('(use `limit`)')
      expect(reject({ lmiit: 1 })).to.include('(use `limit`)')
      expect(reject({ lixxxx: 1 })).not.to.include('use')
      expect(reject({ somethingElse: 1 })).not.to.include('use')
    })

    it('within a nested object: the option is named by its path', () => {
      expect(reject({ max: 1 }, 'limits[2]')).to.include('option `limits[2].max` must be a known option (use `limit`)')
    })

    it('an option named like an Object.prototype member is unknown, not inherited', () => {
      for (const name of ['constructor', 'toString', 'hasOwnProperty', '__proto__']) {
        const options = JSON.parse(`{"${name}": 1}`) as object
        expect(reject(options), name).to.include(`option \`${name}\` must be a known option`)
      }
    })
  })

  it('hint wording', () => {
    expect(use('limit')).to.equal('use `limit`')
    expect(use('limit', 'per window')).to.equal('use `limit`: per window')
    expect(notNeeded('why')).to.equal('not needed: why')
    expect(notSupported('why')).to.equal('not supported: why')
  })

  it('check: throws the OptionError naming the option, the expectation and the value', () => {
    check(true, 'x', 'anything', 1)
    expect(optionErrorOf(() => check(false, 'limit', 'a positive integer', -1))).to.equal(
      'express-redis-kit: option `limit` must be a positive integer; received the number -1',
    )
  })

  describe('describe: a value for an error message, never its content beyond 40 characters', () => {
    const cases: [unknown, string][] = [
      [null, 'null'],
      [undefined, 'undefined'],
      ['abc', 'the string "abc"'],
      ['a"b\nc', 'the string "a\\"b\\nc"'],
      ['x'.repeat(41), `the string "${'x'.repeat(40)}…"`],
      [Number.NaN, 'NaN'],
      [-0.5, 'the number -0.5'],
      [() => 1, 'a function'],
      [[1, 2], 'an array'],
      [{ password: 'hunter2' }, 'an object'],
      [new Map(), 'an object'],
      [true, 'boolean true'],
      [10n, 'bigint 10'],
      [Symbol('s'), 'symbol Symbol(s)'],
    ]
    for (const [value, text] of cases) it(text, () => expect(describeValue(value)).to.equal(text))
  })

  describe('parseClient', () => {
    it('a node-redis client or cluster, not connected (nothing is sent): accepted as it is', () => {
      const client = createClient()
      const cluster = createCluster({ rootNodes: [{ url: 'redis://127.0.0.1:7000' }] })
      expect(parseClient(client)).to.equal(client)
      expect(parseClient(cluster)).to.equal(cluster)
    })

    it('ioredis (evalsha and defineCommand): refused, saying what to pass instead', () => {
      const ioredisLike = { evalsha() {}, defineCommand() {}, evalSha() {}, eval() {} }
      expect(optionErrorOf(() => parseClient(ioredisLike))).to.equal(
        'express-redis-kit: option `client` must be a node-redis client or cluster: ioredis is not supported, pass ' +
          "createClient() or createCluster() from 'redis'; received an object",
      )
    })

    it('anything else: refused', () => {
      for (const value of [undefined, null, 'redis://127.0.0.1', {}, { evalSha() {} }, () => {}]) {
        expect(
          optionErrorOf(() => parseClient(value)),
          describeValue(value),
        ).to.include("must be a node-redis client or cluster (createClient() or createCluster() from 'redis')")
      }
    })
  })

  describe('parseLogger', () => {
    it('console by default; anything with warn() and error() as it is', () => {
      expect(parseLogger(undefined)).to.equal(console)
      const logger = recordingLogger()
      expect(parseLogger(logger)).to.equal(logger)
    })

    it('without warn or error: refused', () => {
      expect(optionErrorOf(() => parseLogger({ warn() {} }))).to.include(
        'option `logger` must be an object with warn() and error() (console, pino and winston fit)',
      )
      expect(optionErrorOf(() => parseLogger('console'))).to.include('option `logger`')
    })

    it('pino (levels, child, bindings): called (object, message), the error as `err`; one adapter per logger', () => {
      const calls: unknown[][] = []
      const pino = {
        levels: { values: { warn: 40, error: 50 } },
        child() {
          return this
        },
        bindings: () => ({}),
        warn: (...args: unknown[]) => void calls.push(['warn', ...args]),
        error: (...args: unknown[]) => void calls.push(['error', ...args]),
      }
      const adapter = parseLogger(pino)
      expect(adapter).not.to.equal(pino)
      expect(parseLogger(pino)).to.equal(adapter)
      const failure = new Error('down')
      adapter.warn('plain')
      adapter.error('failed', failure)
      adapter.warn('failed twice', failure, { attempt: 2 })
      expect(calls).to.deep.equal([
        ['warn', 'plain'],
        ['error', { err: failure }, 'failed'],
        ['warn', { err: failure, details: [{ attempt: 2 }] }, 'failed twice'],
      ])
    })
  })

  describe('parseTimeoutMs and parsePrefix', () => {
    it('timeoutMs: 500 by default, a positive safe integer', () => {
      expect(parseTimeoutMs(undefined)).to.equal(500)
      expect(parseTimeoutMs(1)).to.equal(1)
      expect(parseTimeoutMs(null), 'null is absent').to.equal(500)
      for (const value of [0, -1, 1.5, Number.NaN, Number.POSITIVE_INFINITY, 2 ** 53, '500', false]) {
        expect(
          optionErrorOf(() => parseTimeoutMs(value)),
          String(value),
        ).to.include('option `timeoutMs` must be a positive integer of milliseconds')
      }
    })

    it('prefix: the fallback by default, any string without braces ("" too)', () => {
      expect(parsePrefix(undefined, 'rl:')).to.equal('rl:')
      expect(parsePrefix('', 'rl:')).to.equal('')
      expect(parsePrefix('app:1:', 'rl:')).to.equal('app:1:')
      expect(parsePrefix(null, 'rl:'), 'null is absent').to.equal('rl:')
      for (const value of ['a{b', 'a}b', '{tag}:', 5, false]) {
        expect(
          optionErrorOf(() => parsePrefix(value, 'rl:')),
          String(value),
        ).to.include('option `prefix` must be a string without { or }')
      }
    })
  })

  describe('warnIfNotConnected', () => {
    const notConnected = (logger: ReturnType<typeof recordingLogger>) =>
      logger.warnings.filter(([message]) => String(message).includes('[ERK_NOT_CONNECTED]'))

    it('a client never connected: one warning per client, after the creating code ran', async () => {
      const client = createClient() as unknown as RedisClient
      const logger = recordingLogger()
      warnIfNotConnected(client, logger, 'rateLimit')
      warnIfNotConnected(client, logger, 'session')
      expect(logger.warnings, 'not before the creating code has run').to.deep.equal([])
      await waitUntil(() => notConnected(logger).length > 0, 1_000, 'the warning')
      await new Promise((resolve) => setImmediate(resolve))
      expect(notConnected(logger)).to.have.length(1)
      expect(String(notConnected(logger)[0]![0])).to.match(
        /^express-redis-kit rateLimit \[ERK_NOT_CONNECTED\]: the Redis client is neither open nor connecting/,
      )
    })

    it('an open client: nothing', async () => {
      const logger = recordingLogger()
      warnIfNotConnected({ isOpen: true } as RedisClient, logger, 'rateLimit')
      await new Promise((resolve) => setImmediate(resolve))
      expect(logger.warnings).to.deep.equal([])
    })
  })
})
