import { expect } from 'chai'
import { createClient } from 'redis'
import { parseLocalCache } from '../../../src/cache/local.js'
import {
  type CacheResponseOptions,
  checkTags,
  parseCommonOptions,
  parseResponseOptions,
} from '../../../src/cache/options.js'
import type { RedisClient } from '../../../src/shared/redis.js'
import { optionErrorOf } from '../../helpers/option-error.js'
import { recordingLogger } from '../../helpers/outage.js'

/** A node-redis client that is never connected: option parsing sends nothing. */
const client = createClient() as unknown as RedisClient
const logger = recordingLogger()

const parse = (options: Record<string, unknown> = {}) =>
  parseResponseOptions({ client, logger, ...options } as CacheResponseOptions)

describe('cache option parsing', () => {
  it('cacheResponse: every default resolved', () => {
    const config = parse()
    expect(config.lifetimes).to.deep.equal({ ttl: 300_000, staleWhileRevalidate: 0, staleIfError: 0 })
    expect(config.settings).to.deep.equal({
      ttl: 300_000,
      staleWhileRevalidate: 0,
      staleIfError: 0,
      freshness: 'response',
      maxTtl: Number.POSITIVE_INFINITY,
    })
    expect(config).to.include({ statuses: config.statuses, maxBodyBytes: 1_048_576, perUser: false })
    expect(config.statuses).to.deep.equal([200])
    expect(config.tags).to.deep.equal([])
    expect(config).to.include({ key: undefined, bypass: undefined, invalidateOnUnsafe: true })
    expect(config.store).to.include({ prefix: 'cache:', timeoutMs: 500, lockMs: 5_000, local: undefined })
  })

  it('durations in any form; 0 turns a stale window off', () => {
    const config = parse({
      ttl: '1 hour',
      staleWhileRevalidate: '30s',
      staleIfError: 0,
      maxTtl: '1d',
      lockTimeout: 250,
    })
    expect(config.settings).to.include({
      ttl: 3_600_000,
      staleWhileRevalidate: 30_000,
      staleIfError: 0,
      maxTtl: 86_400_000,
    })
    expect(config.store.lockMs).to.equal(250)
  })

  it('one store per client and settings, shared by every cache that asks for the same', () => {
    const prefix = 'unit-shared:'
    const first = parse({ prefix }).store
    expect(parse({ prefix, ttl: '1h', tags: ['a'] }).store, 'other lifetimes, same store').to.equal(first)
    expect(parseCommonOptions(client, { prefix, logger }, 'cached').store, 'cached() shares it').to.equal(first)
    expect(parse({ prefix: 'unit-other:' }).store).not.to.equal(first)
    expect(parse({ prefix, timeoutMs: 900 }).store).not.to.equal(first)
    expect(parse({ prefix, lockTimeout: '9s' }).store).not.to.equal(first)
  })

  describe('each entry point refuses the others’ options and its peers’, with a hint', () => {
    const hinted: [string, Record<string, unknown>, string][] = [
      ['apicache expire', { expire: 60 }, '`expire` must be a known option (use `ttl`)'],
      ['apicache statusCodes', { statusCodes: [200] }, '(use `statuses`: an array of the statuses that are stored)'],
      ['cache-manager store', { store: {} }, '(use `client`: the node-redis client itself, no store object)'],
      ['cache-manager refreshThreshold', { refreshThreshold: 1 }, '(use `staleWhileRevalidate`'],
      ['apicache headerBlacklist', { headerBlacklist: [] }, '(not supported: a response is stored with its headers'],
      ['cached() negativeTtl', { negativeTtl: '1s' }, '`negativeTtl` must be a known option'],
      ['a typo', { statuss: [200] }, '(use `statuses`)'],
    ]
    for (const [what, options, message] of hinted) {
      it(`cacheResponse: ${what}`, () => expect(optionErrorOf(() => parse(options))).to.include(message))
    }

    it('cached(): its own hints; `client` is its first argument', () => {
      const cached = (options: Record<string, unknown>) => () =>
        parseCommonOptions(client, { logger, ...options }, 'cached')
      expect(optionErrorOf(cached({ isCacheable: () => true }))).to.include('(use `negativeTtl`')
      expect(optionErrorOf(cached({ client }))).to.include("(not needed: the client is cached()'s first argument)")
      expect(optionErrorOf(cached({ statuses: [200] }))).to.include('`statuses` must be a known option')
    })

    it('invalidateTags: prefix and timeoutMs only', () => {
      parseCommonOptions(client, { prefix: 'p:', timeoutMs: 100, logger: undefined }, 'invalidateTags')
      expect(optionErrorOf(() => parseCommonOptions(client, { ttl: '1m' }, 'invalidateTags'))).to.include(
        '`ttl` must be a known option',
      )
    })
  })

  it('cacheResponse: values checked, naming the option', () => {
    const refused: [Record<string, unknown>, string][] = [
      [{ statuses: [200, 99] }, 'statuses'],
      [{ statuses: [200.5] }, 'statuses'],
      [{ maxBodyBytes: Number.POSITIVE_INFINITY }, 'maxBodyBytes'],
      [{ freshness: 'headers' }, 'freshness'],
      [{ invalidateOnUnsafe: 'no' }, 'invalidateOnUnsafe'],
      [{ tags: [''] }, 'tags'],
      [{ ttl: '2 months' }, 'ttl'],
      [{ maxTtl: 0 }, 'maxTtl'],
    ]
    for (const [options, option] of refused) {
      expect(
        optionErrorOf(() => parse(options)),
        JSON.stringify(options),
      ).to.include(`option \`${option}\` must be`)
    }
    expect(optionErrorOf(() => parseResponseOptions(null as unknown as CacheResponseOptions))).to.include(
      'option `options` must be an object; received null',
    )
    // an empty list of statuses is valid: nothing is stored
    expect(parse({ statuses: [] }).statuses).to.deep.equal([])
  })

  it('checkTags: an array of non-empty strings', () => {
    expect(checkTags(['a', 'b c', '{x}'], 'tags')).to.deep.equal(['a', 'b c', '{x}'])
    expect(checkTags([], 'tags')).to.deep.equal([])
    for (const tags of ['a', [''], [1], [null], {}, undefined])
      expect(
        optionErrorOf(() => checkTags(tags, 'tags')),
        JSON.stringify(tags),
      ).to.include('option `tags` must be an array of non-empty strings')
  })

  describe('parseLocalCache', () => {
    it('off: undefined or false; true: the defaults (64 MiB, a 20 ms fence)', () => {
      expect(parseLocalCache(undefined)).to.equal(undefined)
      expect(parseLocalCache(false)).to.equal(undefined)
      expect(parseLocalCache(true)).to.deep.equal({ maxBytes: 64 * 1024 * 1024, fenceMs: 20 })
      expect(parseLocalCache({})).to.deep.equal({ maxBytes: 64 * 1024 * 1024, fenceMs: 20 })
      expect(parseLocalCache({ maxBytes: 1, fenceMs: 4 })).to.deep.equal({ maxBytes: 1, fenceMs: 4 })
      expect(parseLocalCache({ fenceMs: 60_000 })).to.include({ fenceMs: 60_000 })
    })

    it('bounds: maxBytes a positive integer, fenceMs 4 to 60000; unknown settings named by path', () => {
      expect(optionErrorOf(() => parseLocalCache({ maxBytes: 0 }))).to.include('option `localCache.maxBytes` must be')
      expect(optionErrorOf(() => parseLocalCache({ maxBytes: 1.5 }))).to.include('`localCache.maxBytes`')
      expect(optionErrorOf(() => parseLocalCache({ fenceMs: 3 }))).to.include(
        'option `localCache.fenceMs` must be a number of milliseconds from 4 to 60000; received the number 3',
      )
      expect(optionErrorOf(() => parseLocalCache({ fenceMs: 60_001 }))).to.include('`localCache.fenceMs`')
      expect(optionErrorOf(() => parseLocalCache({ fenceMs: Number.NaN }))).to.include('`localCache.fenceMs`')
      expect(optionErrorOf(() => parseLocalCache({ maxbytes: 5 }))).to.include(
        'option `localCache.maxbytes` must be a known option (use `maxBytes`)',
      )
      for (const value of ['yes', 1, [], null])
        expect(optionErrorOf(() => parseLocalCache(value))).to.include(
          'option `localCache` must be true, false or { maxBytes, fenceMs }',
        )
    })
  })
})
