import { expect } from 'chai'
import express, { type Request, type Response } from 'express'
import request from 'supertest'
import { type RateLimitHandlerInfo, type RateLimitOptions, rateLimit } from '../../src/index.js'
import { appWith } from '../helpers/app.js'
import { DEFAULT_MESSAGE } from '../helpers/rate-limit.js'
import { connectRedis, type RedisClient, uniquePrefix } from '../helpers/redis.js'

/*
 * Issue 2: `statusCode` (429), `message` (string, object or function) and
 * `handler(req, res, next, info)` answering a rejected request.
 */
describe('rateLimit rejected responses', () => {
  let client: RedisClient
  before(async () => {
    client = await connectRedis()
  })
  after(async () => {
    await client.close()
  })

  /** An app with a limit of 1 whose second request is rejected; returns that response. */
  async function rejectedWith(options: Partial<RateLimitOptions>, path = '/') {
    const app = appWith(
      rateLimit({
        client,
        prefix: uniquePrefix('reject'),
        keyGenerator: () => 'k',
        limit: 1,
        windowMs: '1h',
        ...options,
      }),
    )
    expect((await request(app).get(path)).status).to.equal(200)
    return request(app).get(path)
  }

  describe('statusCode', () => {
    it('defaults to 429 with the default message', async () => {
      const res = await rejectedWith({})
      expect(res.status).to.equal(429)
      expect(res.text).to.equal(DEFAULT_MESSAGE)
    })

    it('answers the given status', async () => {
      const res = await rejectedWith({ statusCode: 503 })
      expect(res.status).to.equal(503)
      expect(res.text).to.equal(DEFAULT_MESSAGE)
    })
  })

  describe('message', () => {
    it('a string', async () => {
      const res = await rejectedWith({ message: 'Slow down.' })
      expect(res.status).to.equal(429)
      expect(res.text).to.equal('Slow down.')
    })

    it('a string is sent as res.send sends it: the same type, length and body; HEAD gets no body', async () => {
      const plain = express()
      plain.all('/', (_req, res) => {
        res.status(429).send('Slow down, é.')
      })
      const expected = await request(plain).get('/')
      const res = await rejectedWith({ message: 'Slow down, é.' })
      expect(res.status).to.equal(429)
      expect(res.text).to.equal('Slow down, é.')
      expect(res.headers['content-type']).to.equal(expected.headers['content-type'])
      expect(res.headers['content-length']).to.equal(expected.headers['content-length'])

      const app = appWith(
        rateLimit({
          client,
          prefix: uniquePrefix('reject-head'),
          keyGenerator: () => 'k',
          limit: 1,
          message: 'Slow down, é.',
        }),
      )
      expect((await request(app).head('/')).status).to.equal(200)
      const head = await request(app).head('/')
      expect(head.status).to.equal(429)
      expect(head.headers['content-length']).to.equal(expected.headers['content-length'])
      expect(head.text ?? '').to.equal('')
    })

    it('an object, sent as JSON', async () => {
      const res = await rejectedWith({ message: { error: 'rate_limited', retry: true } })
      expect(res.status).to.equal(429)
      expect(res.headers['content-type']).to.match(/^application\/json/)
      expect(res.body).to.deep.equal({ error: 'rate_limited', retry: true })
    })

    it('a function of the request', async () => {
      const res = await rejectedWith({ message: (req: Request) => `Slow down, ${req.query.user}.` }, '/?user=ada')
      expect(res.status).to.equal(429)
      expect(res.text).to.equal('Slow down, ada.')
    })

    it('an async function returning an object', async () => {
      const res = await rejectedWith({ message: async (req: Request) => ({ limit: req.rateLimit?.limit }) })
      expect(res.status).to.equal(429)
      expect(res.body).to.deep.equal({ limit: 1 })
    })

    it('a function that throws: 500 through next(err)', async () => {
      const res = await rejectedWith({
        message: () => {
          throw new Error('template missing')
        },
      })
      expect(res.status).to.equal(500)
      expect(res.body.error).to.equal('template missing')
    })
  })

  describe('handler', () => {
    it('answers instead, with headers already set, given (req, res, next, info)', async () => {
      let seen: { info: RateLimitHandlerInfo; rateLimitHeader: unknown; nextIsFunction: boolean } | undefined
      const startedAt = Date.now()
      const rejected = await rejectedWith({
        handler: (_req, res, next, info) => {
          seen = { info, rateLimitHeader: res.getHeader('RateLimit'), nextIsFunction: typeof next === 'function' }
          res.status(418).json({ used: info.used })
        },
      })
      expect(rejected.status).to.equal(418)
      expect(rejected.body).to.deep.equal({ used: 1 })
      const { info, rateLimitHeader, nextIsFunction } = seen!
      expect(nextIsFunction).to.equal(true)
      expect(rateLimitHeader)
        .to.be.a('string')
        .and.match(/; r=0; t=\d+$/)
      expect(Object.keys(info).sort()).to.deep.equal([
        'key',
        'limit',
        'max',
        'message',
        'remaining',
        'resetTime',
        'statusCode',
        'used',
        'windowMs',
      ])
      expect(info.limit).to.equal(1)
      expect(info.used).to.equal(1)
      expect(info.remaining).to.equal(0)
      expect(info.key).to.equal('k')
      expect(info.resetTime).to.be.instanceOf(Date)
      expect(info.resetTime.getTime()).to.be.greaterThan(startedAt)
    })

    describe('written for express-rate-limit: its 4th argument has the options such a handler reads', () => {
      /** express-rate-limit's documented handler, as it is. */
      const documented = (_req: Request, res: Response, _next: unknown, options: RateLimitHandlerInfo) =>
        res.status(options.statusCode).send(options.message)

      it('res.status(options.statusCode).send(options.message): the default 429 and message', async () => {
        const res = await rejectedWith({ handler: documented })
        expect(res.status).to.equal(429)
        expect(res.text).to.equal(DEFAULT_MESSAGE)
      })

      it('the configured statusCode and message (an object, sent as JSON)', async () => {
        const res = await rejectedWith({ handler: documented, statusCode: 503, message: { error: 'busy' } })
        expect(res.status).to.equal(503)
        expect(res.body).to.deep.equal({ error: 'busy' })
      })

      it('options.windowMs (ms) and options.max / options.limit, beside what req.rateLimit holds', async () => {
        const res = await rejectedWith({
          windowMs: '15m',
          limit: 1,
          handler: (req, res, _next, options) => {
            res.status(options.statusCode).json({
              retryInMinutes: Math.ceil(options.windowMs / 60_000),
              max: options.max,
              limit: options.limit,
              used: options.used,
              sameAsRequest: options.remaining === req.rateLimit?.remaining && options.key === req.rateLimit?.key,
            })
          },
        })
        expect(res.status).to.equal(429)
        expect(res.body).to.deep.equal({ retryInMinutes: 15, max: 1, limit: 1, used: 1, sameAsRequest: true })
      })

      it('with `limits`: windowMs and limit are those of the window that refused', async () => {
        const res = await rejectedWith({
          windowMs: undefined,
          limit: undefined,
          limits: [
            { limit: 5, windowMs: '1s' },
            { limit: 1, windowMs: '1h' },
          ],
          handler: (_req, res, _next, options) => {
            res.status(options.statusCode).json({ windowMs: options.windowMs, limit: options.limit })
          },
        })
        expect(res.body).to.deep.equal({ windowMs: 3_600_000, limit: 1 })
      })
    })

    it('may pass the request on with next()', async () => {
      const res = await rejectedWith({ handler: (_req, _res, next) => next() })
      expect(res.status).to.equal(200)
      expect(res.text).to.equal('ok')
    })

    it('an async handler that rejects: 500 through next(err)', async () => {
      const res = await rejectedWith({ handler: async () => Promise.reject(new Error('handler broke')) })
      expect(res.status).to.equal(500)
      expect(res.body.error).to.equal('handler broke')
    })
  })
})
