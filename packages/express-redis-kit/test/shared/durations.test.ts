import { expect } from 'chai'
import { cached, cacheResponse, createNotifier, type Notifier, rateLimit, session } from '../../src/index.js'
import { type RecordingLogger, recordingLogger } from '../helpers/outage.js'
import { connectRedis, mode, type RedisClient, uniquePrefix } from '../helpers/redis.js'

/*
 * Durations everywhere: milliseconds as a number, or a number and a unit, short or spelled
 * out ('5 minutes', '1 hour'); and a bare number under 1,000 for a duration that is most likely
 * seconds (rate-limiter-flexible's `duration` and `blockDuration`, connect-redis's `ttl`) warns
 * once, naming the option. Each feature's own tests check what a duration does.
 */
describe(`durations: units and the seconds warning (${mode} Redis)`, () => {
  let client: RedisClient
  const notifiers: Notifier[] = []
  before(async () => {
    client = await connectRedis()
  })
  after(async () => {
    await Promise.all(notifiers.map((notifier) => notifier.close()))
    await client.close()
  })

  type Create = (options: Record<string, unknown>, logger: RecordingLogger) => Promise<unknown>
  const entryPoints: Record<string, Create> = {
    rateLimit: async (options, logger) => rateLimit({ client, prefix: uniquePrefix('d'), logger, ...options } as never),
    session: async (options, logger) => session({ client, logger, ...options } as never),
    cacheResponse: async (options, logger) => cacheResponse({ client, prefix: uniquePrefix('d'), logger, ...options }),
    cached: (options, logger) => cached(client, 'd', { prefix: uniquePrefix('d'), logger, ...options }, () => 1),
    createNotifier: async (options, logger) => {
      notifiers.push(createNotifier({ client, prefix: uniquePrefix('d'), logger, ...options } as never))
    },
  }
  // entry point, duration option, and what it must be given beside it to be valid
  const durations: [string, string, Record<string, unknown>?][] = [
    ['rateLimit', 'windowMs'],
    ['rateLimit', 'blockDuration'],
    ['session', 'idleTimeout'],
    ['session', 'absoluteTimeout', { idleTimeout: '10ms' }],
    ['cacheResponse', 'ttl'],
    ['cacheResponse', 'staleWhileRevalidate'],
    ['cacheResponse', 'staleIfError'],
    ['cacheResponse', 'lockTimeout'],
    ['cacheResponse', 'maxTtl'],
    ['cached', 'ttl'],
    ['cached', 'negativeTtl'],
    ['cached', 'lockTimeout'],
    ['createNotifier', 'claimIdle'],
  ]
  const seconds = (logger: RecordingLogger) =>
    logger.warnings.map(([message]) => String(message)).filter((message) => message.includes('[ERK_DURATION_UNIT]'))

  for (const [entry, option, beside = {}] of durations) {
    const create = (value: unknown, logger = recordingLogger()) =>
      entryPoints[entry]!({ ...beside, [option]: value }, logger).then(() => logger)

    describe(`${entry}: ${option}`, () => {
      it('a bare number under 1,000: one warning naming the option, "did you mean seconds?"', async () => {
        const logger = await create(60)
        const warnings = seconds(logger)
        expect(warnings).to.have.length(1)
        expect(warnings[0]).to.equal(
          `express-redis-kit ${entry} [ERK_DURATION_UNIT]: option \`${option}\` is 60, read as 60 milliseconds: ` +
            "did you mean seconds? Write '60s' for seconds, or '60ms' to keep milliseconds without this warning.",
        )
        await create(60, logger)
        expect(seconds(logger)).to.have.length(1)
      })

      const accepted = [1_000, '60ms', '60s', '5 minutes', '1 hour', '2 hours', '30 seconds', '1 day', '500 ms']
      it(`accepted, no warning: ${accepted.map((value) => JSON.stringify(value)).join(', ')}`, async () => {
        for (const value of accepted) expect((await create(value)).warnings, String(value)).to.deep.equal([])
      })

      const refused = ['5 fortnights', '1 month', '1 year', 'soon', '-5s', '0 ms']
      it(`refused, naming \`${option}\` and the units it takes: ${refused.map((value) => `'${value}'`).join(', ')}`, async () => {
        for (const value of refused) {
          const error = await create(value).catch((caught) => caught)
          expect(error, value).to.have.property('code', 'ERK_INVALID_OPTION')
          expect((error as Error).message, value)
            .to.include(`option \`${option}\` must be a positive number of milliseconds, or a number and a unit`)
            .and.include("'5 minutes'")
        }
      })
    })
  }

  it('options named in milliseconds are not checked: timeoutMs 100, localCache.fenceMs 20', async () => {
    const logger = recordingLogger()
    rateLimit({ client, prefix: uniquePrefix('d'), logger, timeoutMs: 100 })
    cacheResponse({ client, prefix: uniquePrefix('d'), logger, timeoutMs: 100, localCache: { fenceMs: 20 } })
    expect(logger.warnings).to.deep.equal([])
  })

  it('units in any case, with or without a space: 1H, 1 Hour, 90Min', async () => {
    const logger = recordingLogger()
    for (const windowMs of ['1H', '1 Hour', '90Min']) {
      expect(rateLimit({ client, prefix: uniquePrefix('d'), logger, windowMs: windowMs as never })).to.be.a('function')
    }
    expect(logger.warnings).to.deep.equal([])
  })
})
