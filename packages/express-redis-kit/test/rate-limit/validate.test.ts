import { expect } from 'chai'
import express from 'express'
import request from 'supertest'
import { type RateLimitOptions, rateLimit } from '../../src/index.js'
import { appWith } from '../helpers/app.js'
import { type RecordingLogger, recordingLogger } from '../helpers/outage.js'
import { connectRedis, mode, type RedisClient, uniquePrefix } from '../helpers/redis.js'

/*
 * The `validate` option: setup mistakes that options cannot show, each a warning with a stable
 * code, logged once per limiter through `logger.warn`, each switchable with express-rate-limit's
 * names (`validate: false` turns them all off).
 */
describe(`rateLimit setup checks: validate (${mode} Redis)`, () => {
  let client: RedisClient
  before(async () => {
    client = await connectRedis()
  })
  after(async () => {
    await client.close()
  })

  /** A limiter with its own prefix and a recording logger. */
  const limiterWith = (logger: RecordingLogger, options: Partial<RateLimitOptions> = {}) =>
    rateLimit({ client, prefix: uniquePrefix('validate'), windowMs: '1m', logger, ...options })
  /** The warnings logged with `code`. */
  const warningsWith = (logger: RecordingLogger, code: string) =>
    logger.warnings.map(([message]) => String(message)).filter((message) => message.includes(`[${code}]`))

  describe("trustProxy: Express's `trust proxy` set to true", () => {
    const permissiveApp = (logger: RecordingLogger, options: Partial<RateLimitOptions> = {}) => {
      const app = appWith(limiterWith(logger, options))
      app.set('trust proxy', true)
      return app
    }

    it('warns once (ERK_PERMISSIVE_TRUST_PROXY), naming the setting, however many requests', async () => {
      const logger = recordingLogger()
      const app = permissiveApp(logger)
      for (let i = 0; i < 3; i++) expect((await request(app).get('/')).status).to.equal(200)
      const warnings = warningsWith(logger, 'ERK_PERMISSIVE_TRUST_PROXY')
      expect(warnings).to.have.length(1)
      expect(warnings[0]).to.match(/^express-redis-kit rateLimit \[ERK_PERMISSIVE_TRUST_PROXY\]: .*`trust proxy`/)
    })

    it('a trust proxy of 1 (one proxy): no warning', async () => {
      const logger = recordingLogger()
      const app = appWith(limiterWith(logger))
      app.set('trust proxy', 1)
      await request(app).get('/').set('X-Forwarded-For', '203.0.113.7')
      expect(logger.warnings).to.deep.equal([])
    })

    it('with a keyGenerator of its own (not keyed by IP): no warning', async () => {
      const logger = recordingLogger()
      await request(permissiveApp(logger, { keyGenerator: () => 'k' })).get('/')
      expect(logger.warnings).to.deep.equal([])
    })

    it('validate: { trustProxy: false }: no warning', async () => {
      const logger = recordingLogger()
      await request(permissiveApp(logger, { validate: { trustProxy: false } })).get('/')
      expect(logger.warnings).to.deep.equal([])
    })
  })

  describe('xForwardedForHeader: X-Forwarded-For while `trust proxy` is off', () => {
    it('warns once (ERK_UNEXPECTED_X_FORWARDED_FOR), however many requests carry it', async () => {
      const logger = recordingLogger()
      const app = appWith(limiterWith(logger))
      expect((await request(app).get('/')).status).to.equal(200)
      expect(logger.warnings).to.deep.equal([])
      for (let i = 0; i < 3; i++) {
        expect((await request(app).get('/').set('X-Forwarded-For', '203.0.113.7')).status).to.equal(200)
      }
      const warnings = warningsWith(logger, 'ERK_UNEXPECTED_X_FORWARDED_FOR')
      expect(warnings).to.have.length(1)
      expect(warnings[0]).to.include('X-Forwarded-For').and.include('`trust proxy`')
      expect(logger.warnings).to.have.length(1)
    })

    it('validate: { xForwardedForHeader: false }: no warning', async () => {
      const logger = recordingLogger()
      const app = appWith(limiterWith(logger, { validate: { xForwardedForHeader: false } }))
      await request(app).get('/').set('X-Forwarded-For', '203.0.113.7')
      expect(logger.warnings).to.deep.equal([])
    })
  })

  describe('creationStack: a limiter created while Express handles a request', () => {
    /** An app whose GET / creates a limiter with `options`, then answers. */
    const creatingApp = (logger: RecordingLogger, options: Partial<RateLimitOptions> = {}) => {
      const app = express()
      app.get('/', (_req, res) => {
        limiterWith(logger, options)
        res.send('made')
      })
      return app
    }

    it('warns (ERK_CREATED_IN_REQUEST_HANDLER)', async () => {
      const logger = recordingLogger()
      expect((await request(creatingApp(logger)).get('/')).text).to.equal('made')
      const warnings = warningsWith(logger, 'ERK_CREATED_IN_REQUEST_HANDLER')
      expect(warnings).to.have.length(1)
      expect(warnings[0]).to.include('created while Express was handling a request')
    })

    it('created at startup (here, in the test): no warning', () => {
      const logger = recordingLogger()
      limiterWith(logger)
      expect(logger.warnings).to.deep.equal([])
    })

    it('validate: { creationStack: false }: no warning', async () => {
      const logger = recordingLogger()
      await request(creatingApp(logger, { validate: { creationStack: false } })).get('/')
      expect(logger.warnings).to.deep.equal([])
    })
  })

  describe('singleCount: one request counted twice under one prefix and client key', () => {
    it('the same limiter mounted twice: warns once (ERK_DOUBLE_COUNT), naming the prefix', async () => {
      const logger = recordingLogger()
      const prefix = uniquePrefix('twice')
      const limiter = limiterWith(logger, { prefix })
      const app = appWith(limiter, limiter)
      for (let i = 0; i < 2; i++) expect((await request(app).get('/')).status).to.equal(200)
      const warnings = warningsWith(logger, 'ERK_DOUBLE_COUNT')
      expect(warnings).to.have.length(1)
      expect(warnings[0]).to.include(`'${prefix}'`)
    })

    it('two limiters on one prefix counting the same client: warns', async () => {
      const logger = recordingLogger()
      const prefix = uniquePrefix('shared')
      const app = appWith(
        limiterWith(logger, { prefix, keyGenerator: () => 'k' }),
        limiterWith(logger, { prefix, keyGenerator: () => 'k', validate: { unsharedStore: false } }),
      )
      await request(app).get('/')
      expect(warningsWith(logger, 'ERK_DOUBLE_COUNT')).to.have.length(1)
      expect(logger.warnings).to.have.length(1)
    })

    it('two limiters with their own prefixes, or one prefix and other client keys: no warning', async () => {
      const logger = recordingLogger()
      const prefix = uniquePrefix('keys')
      const app = appWith(
        limiterWith(logger),
        limiterWith(logger),
        limiterWith(logger, { prefix, keyGenerator: () => 'by-user' }),
        limiterWith(logger, { prefix, keyGenerator: () => 'by-route', validate: { unsharedStore: false } }),
      )
      for (let i = 0; i < 2; i++) expect((await request(app).get('/')).status).to.equal(200)
      expect(logger.warnings).to.deep.equal([])
    })

    it('a request not counted (cost 0) is not a double count', async () => {
      const logger = recordingLogger()
      const limiter = limiterWith(logger, { cost: 0 })
      await request(appWith(limiter, limiter)).get('/')
      expect(logger.warnings).to.deep.equal([])
    })

    it('validate: { singleCount: false }: no warning', async () => {
      const logger = recordingLogger()
      const limiter = limiterWith(logger, { validate: { singleCount: false } })
      await request(appWith(limiter, limiter)).get('/')
      expect(logger.warnings).to.deep.equal([])
    })
  })

  describe('unsharedStore: two limiters created with one prefix on one client', () => {
    it('warns at creation (ERK_SHARED_PREFIX), naming the prefix', () => {
      const logger = recordingLogger()
      const prefix = uniquePrefix('same')
      limiterWith(logger, { prefix })
      expect(logger.warnings).to.deep.equal([])
      limiterWith(logger, { prefix })
      expect(warningsWith(logger, 'ERK_SHARED_PREFIX')).to.have.length(1)
      expect(warningsWith(logger, 'ERK_SHARED_PREFIX')[0]).to.include(`'${prefix}'`)
    })

    it('validate: { unsharedStore: false }: no warning', () => {
      const logger = recordingLogger()
      const prefix = uniquePrefix('same')
      limiterWith(logger, { prefix })
      limiterWith(logger, { prefix, validate: { unsharedStore: false } })
      expect(logger.warnings).to.deep.equal([])
    })
  })

  describe('validate: false, and default', () => {
    /** Every mistake above at once: trust proxy true, X-Forwarded-For, created in a handler, mounted twice, a shared prefix. */
    async function everyMistake(validate: RateLimitOptions['validate']): Promise<RecordingLogger> {
      const logger = recordingLogger()
      const prefix = uniquePrefix('all')
      limiterWith(logger, { prefix, validate })
      const app = express()
      app.set('trust proxy', true)
      app.get('/', (req, res, next) => {
        const limiter = limiterWith(logger, { prefix, validate })
        limiter(req, res, () => limiter(req, res, next))
      })
      app.get('/', (_req, res) => {
        res.send('ok')
      })
      expect((await request(app).get('/').set('X-Forwarded-For', '203.0.113.7')).status).to.equal(200)
      return logger
    }
    const codes = (logger: RecordingLogger) =>
      logger.warnings.map(([message]) => /\[(ERK_[A-Z_]+)\]/.exec(String(message))?.[1]).sort()

    it('all on by default: each mistake warns with its code', async () => {
      expect(codes(await everyMistake(undefined))).to.deep.equal([
        'ERK_CREATED_IN_REQUEST_HANDLER',
        'ERK_DOUBLE_COUNT',
        'ERK_PERMISSIVE_TRUST_PROXY',
        'ERK_SHARED_PREFIX',
      ])
    })

    it('false: none', async () => {
      expect((await everyMistake(false)).warnings).to.deep.equal([])
    })

    it('{ default: false, singleCount: true }: only that one', async () => {
      expect(codes(await everyMistake({ default: false, singleCount: true }))).to.deep.equal(['ERK_DOUBLE_COUNT'])
    })
  })

  describe('the option itself', () => {
    const thrown = (validate: unknown): Error & { code?: string } => {
      try {
        rateLimit({ client, prefix: uniquePrefix('v'), validate: validate as never })
      } catch (error) {
        return error as Error & { code?: string }
      }
      throw new Error('nothing was thrown')
    }

    it("an unknown check: OptionError naming `validate.<name>`, with a near miss's hint", () => {
      const error = thrown({ trustProxi: false })
      expect(error.code).to.equal('ERK_INVALID_OPTION')
      expect(error.message).to.include('`validate.trustProxi`').and.include('(use `trustProxy`)')
    })

    it('an express-rate-limit check that has no switch here: the hint says why (validate.ip)', () => {
      expect(thrown({ ip: false }).message)
        .to.include('`validate.ip` must be a known option (not needed: ')
        .and.include('ERK_MISCONFIGURED')
    })

    it('not a boolean: OptionError naming the check', () => {
      expect(thrown({ singleCount: 'no' }).message).to.include('`validate.singleCount` must be a boolean')
      expect(thrown('off').message).to.include('`validate` must be a boolean or an object of booleans')
    })
  })
})
