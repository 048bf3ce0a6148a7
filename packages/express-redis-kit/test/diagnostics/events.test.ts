/**
 * The decisions the kit publishes on diagnostics_channel, as an operator's subscriber sees them
 * for real requests: rate-limit decisions (from Redis, from the local block cache, shadow, Redis
 * errors), session loads of every kind (never a token or a handle), cache hits, misses, bypass
 * and refusal reasons, waits and invalidations, and the tracing channel around Redis calls.
 */
import diagnostics from 'node:diagnostics_channel'
import { expect } from 'chai'
import express from 'express'
import request from 'supertest'
import {
  type CacheEvent,
  CHANNELS,
  cached,
  cacheResponse,
  type RateLimitEvent,
  type RedisCallContext,
  rateLimit,
  type SessionEvent,
  session,
} from '../../src/index.js'
import { countingApp } from '../helpers/cache-app.js'
import { recordingLogger } from '../helpers/outage.js'
import {
  connectRedis,
  connectTo,
  type DisposableRedis,
  mode,
  type RedisClient,
  startDisposableRedis,
  uniquePrefix,
} from '../helpers/redis.js'
import {
  neverIssuedId,
  SessionClient,
  sessionApp,
  sessionIdOf,
  sessionKey,
  signedCookieHeader,
} from '../helpers/session-app.js'
import { sleep } from '../helpers/session-redis.js'

/** Records what a channel publishes while a test runs. */
function record<T>(name: string): { events: T[]; stop: () => void } {
  const events: T[] = []
  const listener = (message: unknown) => events.push(message as T)
  diagnostics.subscribe(name, listener)
  return { events, stop: () => diagnostics.unsubscribe(name, listener) }
}

/** Waits until `condition` holds (events of work that finishes after the response). */
async function until(condition: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 5_000
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await sleep(10)
  }
}

describe(`diagnostics_channel events (${mode === 'cluster' ? 'Redis Cluster' : 'single Redis'})`, () => {
  let client: RedisClient
  let disposable: DisposableRedis
  const stops: (() => void)[] = []
  const listen = <T>(name: string) => {
    const recorder = record<T>(name)
    stops.push(recorder.stop)
    return recorder.events
  }
  before(async () => {
    client = await connectRedis()
    disposable = await startDisposableRedis()
  })
  afterEach(() => {
    for (const stop of stops.splice(0)) stop()
  })
  after(async () => {
    await client.close()
    await disposable.stop()
  })

  describe('rateLimit', () => {
    it('allowed and limited from Redis, then limited from the local block cache; key, policy, remaining', async () => {
      const events = listen<RateLimitEvent>(CHANNELS.rateLimit)
      const prefix = uniquePrefix('dc-rl')
      const app = express()
      app.use(rateLimit({ client, prefix, limit: 2, windowMs: '1m', keyGenerator: () => 'client-7' }))
      app.get('/', (_req, res) => {
        res.send('ok')
      })
      const statuses = []
      for (let i = 0; i < 4; i++) statuses.push((await request(app).get('/')).status)
      expect(statuses).to.deep.equal([200, 200, 429, 429])
      const mine = events.filter((event) => event.prefix === prefix)
      expect(mine.map(({ result, source, remaining }) => [result, source, remaining])).to.deep.equal([
        ['allowed', 'redis', 1],
        ['allowed', 'redis', 0],
        ['limited', 'redis', 0],
        ['limited', 'local-block', 0],
      ])
      for (const event of mine) {
        expect(event).to.include({ key: 'client-7', policy: '2-in-1min', limit: 2, mode: 'enforce' })
        // A sliding window can keep a client out for up to 1.5 windows (the previous window still weighs)
        expect(event.resetMs).to.be.within(1, 90_000)
      }
    })

    it("shadow mode: over the limit is published as limited (mode 'shadow') and the request goes through", async () => {
      const events = listen<RateLimitEvent>(CHANNELS.rateLimit)
      const prefix = uniquePrefix('dc-rl-shadow')
      const app = express()
      app.use(rateLimit({ client, prefix, limit: 1, windowMs: '1m', mode: 'shadow', keyGenerator: () => 'k' }))
      app.get('/', (_req, res) => {
        res.send('ok')
      })
      expect((await request(app).get('/')).status).to.equal(200)
      expect((await request(app).get('/')).status).to.equal(200)
      const mine = events.filter((event) => event.prefix === prefix)
      expect(mine.map(({ result, mode }) => [result, mode])).to.deep.equal([
        ['allowed', 'shadow'],
        ['limited', 'shadow'],
      ])
    })

    it("Redis down: 'error' with the policy applied (allow, block); 'local' decides in memory and says why", async () => {
      const events = listen<RateLimitEvent>(CHANNELS.rateLimit)
      const logger = recordingLogger()
      const down = await startDisposableRedis()
      const downClient = await connectTo(down)
      await down.stop()
      try {
        for (const onRedisError of ['allow', 'block', 'local'] as const) {
          const prefix = uniquePrefix(`dc-rl-${onRedisError}`)
          const app = express()
          app.set('env', 'test') // the 503 of 'block' goes to Express's default handler: no stack printed
          app.use(
            rateLimit({ client: downClient, prefix, limit: 5, windowMs: '1m', onRedisError, timeoutMs: 200, logger }),
          )
          app.get('/', (_req, res) => {
            res.send('ok')
          })
          const res = await request(app).get('/')
          expect(res.status).to.equal(onRedisError === 'block' ? 503 : 200)
          const [event] = events.filter((candidate) => candidate.prefix === prefix)
          if (onRedisError === 'local') {
            expect(event).to.include({ result: 'allowed', source: 'local', remaining: 4 })
          } else {
            expect(event).to.include({ result: 'error', source: 'none', onRedisError })
          }
          expect(event?.error).to.be.instanceOf(Error)
        }
      } finally {
        downClient.destroy()
      }
    })
  })

  describe('session', () => {
    /** Every session event carries neither the token nor the handle of any session it names. */
    function expectNoSecrets(events: SessionEvent[], cookieValues: string[]): void {
      for (const event of events) {
        const text = JSON.stringify(event, (_key, value) => (value instanceof Error ? value.message : value))
        for (const cookie of cookieValues) {
          expect(text).to.not.include(cookie.slice(12), 'a session token in a diagnostics event')
          expect(text).to.not.include(cookie.slice(0, 11), 'a session tag in a diagnostics event')
        }
        expect(Object.keys(event).sort()).to.satisfy((keys: string[]) =>
          keys.every((key) => ['operation', 'result', 'userId', 'error'].includes(key)),
        )
      }
    }

    it('saved, loaded (with the user), destroyed, and a never-issued cookie: not-found', async () => {
      const events = listen<SessionEvent>(CHANNELS.session)
      const prefix = uniquePrefix('dc-sess')
      const app = sessionApp(session({ client, prefix, userKey: 'userId' }))
      const user = new SessionClient(app)
      const id = sessionIdOf(await user.post('/login?user=7'))
      await user.get('/me')
      await user.post('/logout')
      const forged = neverIssuedId()
      await request(app).get('/me').set('Cookie', signedCookieHeader(forged))
      expect(events.map(({ operation, result, userId }) => [operation, result, userId])).to.deep.equal([
        ['save', 'saved', '7'],
        ['load', 'loaded', '7'],
        ['load', 'loaded', '7'],
        ['destroy', 'destroyed', '7'],
        ['load', 'not-found', undefined],
      ])
      expectNoSecrets(events, [id, forged])
    })

    it('expired-idle and expired-absolute, when the session is found past a timeout', async () => {
      const events = listen<SessionEvent>(CHANNELS.session)
      const prefix = uniquePrefix('dc-sess-exp')
      const app = sessionApp(session({ client, prefix, idleTimeout: '400ms', absoluteTimeout: '10s' }))
      const idle = new SessionClient(app)
      const idleId = sessionIdOf(await idle.post('/login?user=1'))
      // Without its TTL, Redis keeps the record: the reader finds it past its idle timeout.
      await client.persist(sessionKey(prefix, idleId))
      await sleep(600)
      await idle.get('/me')

      // Past both timeouts: the absolute one is reported.
      const absoluteApp = sessionApp(session({ client, prefix, idleTimeout: '600ms', absoluteTimeout: '600ms' }))
      const old = new SessionClient(absoluteApp)
      const oldId = sessionIdOf(await old.post('/login?user=2'))
      await client.persist(sessionKey(prefix, oldId))
      await sleep(800)
      await old.get('/me')
      const loads = events.filter((event) => event.operation === 'load').map((event) => event.result)
      expect(loads).to.deep.equal(['expired-idle', 'expired-absolute'])
      expectNoSecrets(events, [idleId, oldId])
    })

    it('a store that fails: load error (the error, no token)', async () => {
      const events = listen<SessionEvent>(CHANNELS.session)
      const down = await startDisposableRedis()
      const downClient = await connectTo(down)
      try {
        const logger = recordingLogger()
        const app = sessionApp(
          session({ client: downClient, prefix: uniquePrefix('dc-sess-down'), timeoutMs: 200, logger }),
        )
        const user = new SessionClient(app)
        const id = sessionIdOf(await user.post('/login?user=3'))
        await down.stop()
        expect((await user.get('/me')).status).to.equal(503)
        const failed = events.filter((event) => event.result === 'error')
        expect(failed.map((event) => event.operation)).to.deep.equal(['load'])
        expect(failed[0]?.error).to.be.instanceOf(Error)
        expectNoSecrets(events, [id])
      } finally {
        downClient.destroy()
      }
    })
  })

  describe('cacheResponse and cached()', () => {
    it('miss, stored, hit; bypass with its reason; refused with its reason', async () => {
      const events = listen<CacheEvent>(CHANNELS.cache)
      const prefix = uniquePrefix('dc-cache')
      const { app } = countingApp(cacheResponse({ client, prefix, ttl: '1m' }), (req, res, run) => {
        if (req.path === '/error') res.status(500).send('failed')
        else res.send(`run ${run}`)
      })
      await request(app).get('/page')
      await until(() => events.some((event) => event.result === 'stored'), 'the fill stored')
      await request(app).get('/page')
      await request(app).get('/page').set('Authorization', 'Bearer x')
      await request(app).get('/error')
      await until(() => events.some((event) => event.result === 'refused'), 'the refusal')
      const mine = events.filter((event) => event.source === 'cacheResponse')
      expect(mine.map(({ result, reason }) => [result, reason])).to.deep.equal([
        ['miss', undefined],
        ['stored', undefined],
        ['hit', undefined],
        ['bypass', 'authorization'],
        ['miss', undefined],
        ['refused', 'status'],
      ])
      expect(mine[0]?.key).to.be.a('string').and.include(prefix)
    })

    it('a request that waits for another fill: waited (how long), then hit', async () => {
      const events = listen<CacheEvent>(CHANNELS.cache)
      const prefix = uniquePrefix('dc-cache-wait')
      const { app } = countingApp(cacheResponse({ client, prefix, ttl: '1m' }), async (_req, res) => {
        await sleep(300)
        res.send('slow')
      })
      const first = request(app).get('/slow')
      await sleep(100)
      const [a, b] = await Promise.all([first, request(app).get('/slow')])
      expect([a.status, b.status]).to.deep.equal([200, 200])
      const waited = events.find((event) => event.result === 'waited')
      expect(waited?.waitedMs).to.be.within(50, 2_000)
      const after = events.slice(events.indexOf(waited!) + 1).find((event) => event.key === waited?.key)
      expect(after?.result).to.equal('hit')
    })

    it('cached(): miss, stored, hit; invalidateTags(): invalidated with the tags and the count', async () => {
      const events = listen<CacheEvent>(CHANNELS.cache)
      const prefix = uniquePrefix('dc-cached')
      const load = () => cached(client, 'user:1', { prefix, ttl: '1m', tags: ['users'] }, () => ({ name: 'Ada' }))
      await load()
      await load()
      const middleware = cacheResponse({ client, prefix, ttl: '1m' })
      expect(await middleware.invalidateTags(['users'])).to.equal(1)
      expect(events.map(({ source, result }) => [source, result])).to.deep.equal([
        ['cached', 'miss'],
        ['cached', 'stored'],
        ['cached', 'hit'],
        ['cacheResponse', 'invalidated'],
      ])
      expect(events[3]).to.include({ count: 1 }).and.have.deep.property('tags', ['users'])
    })
  })

  describe('the Redis tracing channel', () => {
    it('start / asyncEnd around each round trip, with the operation and the command; error when Redis fails', async () => {
      const seen: { phase: string; context: RedisCallContext }[] = []
      const on = (phase: string) => (context: object) => {
        seen.push({ phase, context: context as RedisCallContext })
      }
      const handlers = {
        start: on('start'),
        end: on('end'),
        asyncStart: on('asyncStart'),
        asyncEnd: on('asyncEnd'),
        error: on('error'),
      }
      const tracing = diagnostics.tracingChannel(CHANNELS.redis)
      tracing.subscribe(handlers)
      stops.push(() => tracing.unsubscribe(handlers))
      const app = express()
      app.use(rateLimit({ client, prefix: uniquePrefix('dc-trace'), limit: 5, windowMs: '1m' }))
      app.use(session({ client, prefix: uniquePrefix('dc-trace-sess'), secrets: 's' }))
      app.get('/', (_req, res) => {
        res.send('ok')
      })
      await request(app).get('/')
      const decide = seen.filter(({ context }) => context.operation === 'rateLimit.decide')
      expect(decide.map(({ phase }) => phase)).to.deep.equal(['start', 'end', 'asyncStart', 'asyncEnd'])
      expect(decide[0]?.context.command).to.equal('EVALSHA')
      // The script's reply: with the default options, sliding-window's binary one (16 bytes: admitted).
      expect(decide[3]?.context.result).to.be.an.instanceOf(Buffer).with.lengthOf(16)

      seen.length = 0
      const failing = await connectTo(disposable, { commandOptions: { timeout: 100 } })
      const failingApp = express()
      failingApp.use(
        rateLimit({
          client: failing,
          prefix: uniquePrefix('dc-trace-err'),
          limit: 5,
          windowMs: '1m',
          logger: recordingLogger(),
        }),
      )
      failingApp.get('/', (_req, res) => {
        res.send('ok')
      })
      await failing.sendCommand(['CONFIG', 'SET', 'maxmemory', '1'])
      await failing.sendCommand(['CONFIG', 'SET', 'maxmemory-policy', 'noeviction'])
      try {
        await request(failingApp).get('/')
      } finally {
        await failing.sendCommand(['CONFIG', 'SET', 'maxmemory', '0'])
        failing.destroy()
      }
      const phases = seen.filter(({ context }) => context.operation === 'rateLimit.decide').map(({ phase }) => phase)
      expect(phases).to.include('error')
      expect(seen.find(({ phase }) => phase === 'error')?.context.error).to.be.instanceOf(Error)
    })
  })
})
