import { Writable } from 'node:stream'
import { expect } from 'chai'
import { Redis as IORedis } from 'ioredis'
import pino from 'pino'
import { createClient } from 'redis'
import request from 'supertest'
import winston from 'winston'
import { RedisStore } from '../../src/express-session/index.js'
import { cacheResponse, createNotifier, OptionError, rateLimit, session } from '../../src/index.js'
import { appWith } from '../helpers/app.js'
import { connectRedis, mode, type RedisClient, uniquePrefix } from '../helpers/redis.js'

/*
 * What every factory does the same way: unknown options, the client option, loggers.
 */
describe(`the factories, alike (${mode} Redis)`, () => {
  let client: RedisClient
  before(async () => {
    client = await connectRedis()
  })
  after(async () => {
    await client.close()
  })

  const factories: [string, (options: Record<string, unknown>) => unknown][] = [
    ['rateLimit', (options) => rateLimit({ client, ...options } as never)],
    ['session', (options) => session({ client, ...options } as never)],
    ['cacheResponse', (options) => cacheResponse({ client, ...options } as never)],
    ['createNotifier', (options) => createNotifier({ client, ...options } as never)],
    ['RedisStore (express-redis-kit/express-session)', (options) => new RedisStore({ client, ...options } as never)],
  ]
  const thrownBy = (create: () => unknown): Error & { code?: string } => {
    try {
      const made = create() as { close?: () => Promise<void> }
      void made?.close?.()
    } catch (error) {
      return error as Error & { code?: string }
    }
    throw new Error('nothing was thrown')
  }

  for (const [name, create] of factories) {
    describe(name, () => {
      it('an unknown option: OptionError (a TypeError, ERK_INVALID_OPTION) naming it', () => {
        const error = thrownBy(() => create({ notAnOption: 1 }))
        expect(error).to.be.instanceOf(OptionError).and.instanceOf(TypeError)
        expect(error.code).to.equal('ERK_INVALID_OPTION')
        expect(error.message).to.match(/option `notAnOption` must be a known option; received the number 1/)
      })

      it('a near miss of a known option: the message suggests it', () => {
        const error = thrownBy(() => create({ prefx: 'x:' }))
        expect(error.message).to.include('`prefx`').and.include('(use `prefix`)')
      })

      it('an unknown option given as undefined is ignored, as if absent', () => {
        const made = create({ prefix: uniquePrefix(name), notAnOption: undefined }) as { close?: () => Promise<void> }
        expect(typeof made === 'function' || typeof made === 'object').to.equal(true)
        void made.close?.()
      })

      it('an ioredis client: the error says ioredis is not supported and what to pass', () => {
        const ioredis = new IORedis({ lazyConnect: true })
        try {
          const error = thrownBy(() => create({ client: ioredis }))
          expect(error.code).to.equal('ERK_INVALID_OPTION')
          expect(error.message)
            .to.include('ioredis is not supported')
            .and.include("createClient() or createCluster() from 'redis'")
        } finally {
          ioredis.disconnect()
        }
      })
    })
  }

  it("peers' option names point to ours", () => {
    expect(thrownBy(() => rateLimit({ client, max: 5 } as never)).message).to.include('(use `limit`)')
    expect(thrownBy(() => session({ client, secret: 'x' } as never)).message).to.include('(use `secrets`')
    expect(thrownBy(() => cacheResponse({ client, expire: 60 } as never)).message).to.include('(use `ttl`)')
  })

  describe('loggers: console, pino and winston, as they are', () => {
    /** A request through a limiter whose client is not connected: it logs the Redis error. */
    const failOnce = async (logger: unknown) => {
      const offline = createClient({ url: 'redis://127.0.0.1:1' })
      const limiter = rateLimit({ client: offline, logger: logger as never, prefix: uniquePrefix('logger') })
      expect((await request(appWith(limiter)).get('/')).status).to.equal(200)
    }

    it('pino: the error is logged as `err`, with its message and stack, beside the message', async () => {
      const lines: string[] = []
      const stream = new Writable({
        write(chunk, _encoding, done) {
          lines.push(String(chunk))
          done()
        },
      })
      await failOnce(pino({ level: 'warn' }, stream))
      const entries = lines.map(
        (line) => JSON.parse(line) as { msg?: string; err?: { message?: string; stack?: string } },
      )
      const entry = entries.find((each) => each.err !== undefined) ?? {}
      expect(entry.msg).to.match(/express-redis-kit rateLimit/)
      expect(entry.err?.message).to.match(/not connected/)
      expect(entry.err?.stack).to.include('RedisKitError')
    })

    it('winston: the message and the error reach the transport', async () => {
      const lines: unknown[] = []
      const logger = winston.createLogger({
        level: 'warn',
        format: winston.format.json(),
        transports: [
          new winston.transports.Stream({
            stream: new Writable({
              write(chunk, _encoding, done) {
                lines.push(JSON.parse(String(chunk)))
                done()
              },
            }),
          }),
        ],
      })
      await failOnce(logger)
      const text = JSON.stringify(lines)
      expect(text)
        .to.match(/express-redis-kit rateLimit/)
        .and.to.match(/not connected/)
    })
  })
})
