import { expect } from 'chai'
import request from 'supertest'
import { type CacheResponseOptions, cacheResponse } from '../../src/index.js'
import { countingApp, responseEntryKey, storedTimes, untilStored, xCache } from '../helpers/cache-app.js'
import { recordingLogger } from '../helpers/outage.js'
import { connectRedis, mode, type RedisClient, uniquePrefix } from '../helpers/redis.js'

/*
 * Issue 4 and the house style: durations accept milliseconds or strings like '15m';
 * misconfiguration is caught at creation with a TypeError (code ERK_INVALID_OPTION) naming
 * the option, the expected value and what was given.
 */
describe(`cacheResponse options (${mode} Redis)`, () => {
  let client: RedisClient
  before(async () => {
    client = await connectRedis()
  })
  after(async () => {
    await client.close()
  })

  /** The error `create` throws, or undefined. */
  const thrownBy = (create: () => unknown): unknown => {
    try {
      create()
    } catch (error) {
      return error
    }
    return undefined
  }

  describe('validation at creation', () => {
    const invalid: [string, Record<string, unknown>, string][] = [
      // description, options (over a valid client), option named
      ['statuses [99]', { statuses: [99] }, 'statuses'],
      ['statuses [600]', { statuses: [600] }, 'statuses'],
      ["statuses '200'", { statuses: '200' }, 'statuses'],
      ['maxBodyBytes -1', { maxBodyBytes: -1 }, 'maxBodyBytes'],
      ['maxBodyBytes 1.5', { maxBodyBytes: 1.5 }, 'maxBodyBytes'],
      ["tags 'x'", { tags: 'x' }, 'tags'],
      ['tags [1]', { tags: [1] }, 'tags'],
      ["key 'x'", { key: 'x' }, 'key'],
      ["perUser 'yes'", { perUser: 'yes' }, 'perUser'],
      ['ttl 0', { ttl: 0 }, 'ttl'],
      ["ttl '5 fortnights'", { ttl: '5 fortnights' }, 'ttl'],
      ["maxTtl '1 year'", { maxTtl: '1 year' }, 'maxTtl'],
      ["staleWhileRevalidate 'x'", { staleWhileRevalidate: 'x' }, 'staleWhileRevalidate'],
      ['staleIfError -1', { staleIfError: -1 }, 'staleIfError'],
      ["lockTimeout 'x'", { lockTimeout: 'x' }, 'lockTimeout'],
      ['timeoutMs 0', { timeoutMs: 0 }, 'timeoutMs'],
      ['timeoutMs 1.5', { timeoutMs: 1.5 }, 'timeoutMs'],
      ['logger {}', { logger: {} }, 'logger'],
      ["prefix 'a}'", { prefix: 'a}' }, 'prefix'],
      ['client {}', { client: {} }, 'client'],
      ["bypass 'jwt'", { bypass: 'jwt' }, 'bypass'],
      ['an unknown option (a typo)', { perUsers: true }, 'perUsers'],
      ["apicache's expire", { expire: 60 }, 'expire'],
    ]
    for (const [description, options, option] of invalid) {
      it(`${description}: TypeError ERK_INVALID_OPTION naming \`${option}\``, () => {
        const error = thrownBy(() => cacheResponse({ client, ...options } as unknown as CacheResponseOptions))
        expect(error).to.be.instanceOf(TypeError)
        expect(error).to.have.property('code', 'ERK_INVALID_OPTION')
        expect((error as Error).message).to.include(`\`${option}\``)
        expect((error as Error).message).to.match(/must be .+; received /)
      })
    }

    it('no options at all: TypeError ERK_INVALID_OPTION', () => {
      const error = thrownBy(() => cacheResponse(undefined as unknown as CacheResponseOptions))
      expect(error).to.be.instanceOf(TypeError)
      expect(error).to.have.property('code', 'ERK_INVALID_OPTION')
    })

    it('staleWhileRevalidate 0 and staleIfError 0 mean "off" and are valid', () => {
      expect(() => cacheResponse({ client, staleWhileRevalidate: 0, staleIfError: 0 })).not.to.throw()
    })

    it("invalidateTags('x') on the middleware: TypeError ERK_INVALID_OPTION naming `tags`", async () => {
      const cache = cacheResponse({ client, prefix: uniquePrefix('options') })
      let error: unknown
      try {
        await cache.invalidateTags('x' as unknown as string[])
      } catch (caught) {
        error = caught
      }
      expect(error).to.be.instanceOf(TypeError)
      expect(error).to.have.property('code', 'ERK_INVALID_OPTION')
      expect((error as Error).message).to.include('`tags`')
    })
  })

  describe('durations', () => {
    const cases: [CacheResponseOptions['ttl'], number][] = [
      [2_500, 2_500],
      ['800ms', 800],
      ['10s', 10_000],
      ['15m', 900_000],
      ['1h', 3_600_000],
      ['30 seconds', 30_000],
      ['5 minutes', 300_000],
      ['1 hour', 3_600_000],
      [undefined, 300_000],
    ]
    for (const [ttl, ms] of cases) {
      it(`ttl ${JSON.stringify(ttl) ?? 'not given (default 5m)'}: the entry is fresh ${ms} ms, and kept as long again to be revalidated`, async () => {
        const prefix = uniquePrefix('options-ttl')
        const { app } = countingApp(cacheResponse({ client, prefix, ...(ttl === undefined ? {} : { ttl }) }))
        await request(app).get('/ttl')
        const entryKey = responseEntryKey(prefix, '/ttl')
        await untilStored(client, entryKey)
        const times = await storedTimes(client, entryKey)
        expect(times.freshUntil - times.storedAt).to.equal(ms)
        // Express's res.send gave the response an ETag: it can be revalidated once stale.
        const pttl = await client.pTTL(entryKey)
        expect(pttl).to.be.within(2 * ms - 1_000, 2 * ms)
      })
    }

    it('the entry is kept for ttl + the longer of staleWhileRevalidate and staleIfError', async () => {
      const prefix = uniquePrefix('options-keep')
      const { app } = countingApp(
        cacheResponse({ client, prefix, ttl: '10s', staleWhileRevalidate: '20s', staleIfError: '1m' }),
      )
      await request(app).get('/keep')
      await untilStored(client, responseEntryKey(prefix, '/keep'))
      const pttl = await client.pTTL(responseEntryKey(prefix, '/keep'))
      expect(pttl).to.be.within(69_000, 70_000)
    })
  })

  describe('the default prefix', () => {
    it("is 'cache:'", async () => {
      const path = `/default-prefix-${uniquePrefix('p').replace(/:/g, '-')}`
      const { app } = countingApp(cacheResponse({ client, ttl: '2s' }))
      await request(app).get(path)
      expect(await client.exists(responseEntryKey('cache:', path))).to.equal(1)
      await client.del(responseEntryKey('cache:', path))
    })
  })

  describe('a tags function that fails', () => {
    for (const [name, tags] of [
      [
        'throws',
        () => {
          throw new Error('no tags')
        },
      ],
      ['returns a string', () => 'users' as unknown as string[]],
    ] as const) {
      it(`${name}: the response still goes out (200), is not stored, and a warning is logged`, async () => {
        const logger = recordingLogger()
        const { app, runs } = countingApp(cacheResponse({ client, prefix: uniquePrefix('options-tags'), tags, logger }))
        const first = await request(app).get('/tags')
        expect(first.status).to.equal(200)
        const second = await request(app).get('/tags')
        expect([second.status, xCache(second)]).to.deep.equal([200, 'MISS'])
        expect(runs.count).to.equal(2)
        expect(logger.warnings.length).to.be.at.least(1)
      })
    }
  })
})
