import { expect } from 'chai'
import type { Express } from 'express'
import { type SessionOptions, session } from '../../src/index.js'
import { connectRedis, pauseRedis, type RedisClient, uniquePrefix } from '../helpers/redis.js'
import { SessionClient, sessionApp, sessionIdOf, setCookieOf } from '../helpers/session-app.js'
import {
  type DisposableStore,
  describeDeep,
  type RecordingLogger,
  recordingLogger,
  startDisposableStore,
  waitForRedisResume,
} from '../helpers/session-redis.js'

const TIMEOUT_MS = 300
/** Generous: proves "within timeoutMs" without being a timing test. */
const WITHIN_MS = 1_500

interface Setup {
  app: Express
  logger: RecordingLogger
  /** Logged in as user 7 while Redis was up. */
  user: SessionClient
  id: string
}

async function setup(client: RedisClient, onRedisError: SessionOptions['onRedisError']): Promise<Setup> {
  const logger = recordingLogger()
  const sessions = session({ client, prefix: uniquePrefix('sess-fail'), onRedisError, timeoutMs: TIMEOUT_MS, logger })
  const app = sessionApp(sessions)
  const user = new SessionClient(app)
  const id = sessionIdOf(await user.post('/login?user=7'))
  expect(await user.data()).to.deep.equal({ userId: 7 })
  return { app, logger, user, id }
}

async function timed<T>(action: () => Promise<T>): Promise<[T, number]> {
  const start = Date.now()
  const result = await action()
  return [result, Date.now() - start]
}

/** The id never appears in what was logged or in the errors passed to next(). */
function expectIdNotLeaked({ app, logger, id }: Setup): void {
  const errors = (app.locals.errors as unknown[]).map(describeDeep).join('\n')
  expect(logger.text()).to.not.include(id)
  expect(errors).to.not.include(id)
}

function expectUnavailable(res: { status: number; body: Record<string, unknown> }, app: Express): void {
  expect(res.status).to.equal(503)
  expect(res.body).to.include({ code: 'ERK_REDIS_UNAVAILABLE', status: 503 })
  const [error] = app.locals.errors as { status?: number; code?: string }[]
  expect(error, 'the error went through next(err)').to.include({ status: 503, code: 'ERK_REDIS_UNAVAILABLE' })
}

function expectAnonymous(res: { status: number; body: { data?: unknown } }, logger: RecordingLogger): void {
  expect(res.status).to.equal(200)
  expect(res.body.data).to.deep.equal({})
  expect(logger.warnings.length).to.be.at.least(1)
  expect(String(logger.warnings[0]?.[0])).to.match(/Redis|session store/i)
}

describe('session when Redis fails', () => {
  describe('Redis stopped (killed)', () => {
    let store: DisposableStore
    let client: RedisClient
    let failing: Setup
    let anonymous: Setup
    before(async () => {
      store = await startDisposableStore()
      client = await store.connect()
      failing = await setup(client, 'fail')
      anonymous = await setup(client, 'anonymous')
      await store.stop()
    })
    after(async () => {
      client?.destroy()
      await store?.stop()
    })

    it("onRedisError 'fail' (default): a request with a session gets a 503 through next(err), within timeoutMs", async () => {
      const [res, elapsed] = await timed(() => failing.user.get('/me'))
      expectUnavailable(res, failing.app)
      expect(elapsed).to.be.below(WITHIN_MS)
      expect(setCookieOf(res)).to.equal(undefined)
      expectIdNotLeaked(failing)
    })

    it("onRedisError 'fail': a new session that would be saved gets a 503, without a cookie", async () => {
      const [res, elapsed] = await timed(() => new SessionClient(failing.app).post('/set/color?value=red'))
      expect(res.status).to.equal(503)
      expect(elapsed).to.be.below(WITHIN_MS)
      expect(setCookieOf(res)).to.equal(undefined)
    })

    it("onRedisError 'anonymous': the request goes on with an empty session, no cookie, a warning, no id in the log", async () => {
      const [res, elapsed] = await timed(() => anonymous.user.get('/me'))
      expectAnonymous(res, anonymous.logger)
      expect(elapsed).to.be.below(WITHIN_MS)
      expect(setCookieOf(res)).to.equal(undefined)
      const write = await anonymous.user.post('/set/color?value=red')
      expect(write.status).to.equal(200)
      expect(setCookieOf(write), 'an anonymous session is never saved').to.equal(undefined)
      expect(anonymous.user.raw, 'the client keeps its cookie for when Redis is back').to.not.equal(undefined)
      expectIdNotLeaked(anonymous)
    })

    it("onRedisError 'anonymous': the warning is throttled (one for a burst of failing requests)", async () => {
      const logger = recordingLogger()
      const sessions = session({ client, prefix: uniquePrefix('sess-throttle'), onRedisError: 'anonymous', logger })
      const user = new SessionClient(sessionApp(sessions))
      user.raw = anonymous.user.raw
      for (let i = 0; i < 5; i++) expect((await user.get('/me')).status).to.equal(200)
      expect(logger.warnings).to.have.length(1)
    })
  })

  describe('Redis paused (CLIENT PAUSE on the suite’s Redis for 1.5 s)', () => {
    let client: RedisClient
    let pausedUntil = 0
    before(async () => {
      client = await connectRedis()
    })
    afterEach(async () => {
      await waitForRedisResume(pausedUntil)
    })
    after(async () => {
      await client.close()
    })

    async function pause(): Promise<void> {
      pausedUntil = Date.now() + 1_500
      await pauseRedis(1_500)
    }

    it("onRedisError 'fail': 503 through next(err) within timeoutMs, for a load and for a save", async () => {
      const failing = await setup(client, 'fail')
      await pause()
      const [[load, save], elapsed] = await timed(() =>
        Promise.all([failing.user.get('/me'), new SessionClient(failing.app).post('/set/color?value=red')]),
      )
      expectUnavailable(load, failing.app)
      expect(save.status).to.equal(503)
      expect(setCookieOf(save)).to.equal(undefined)
      expect(elapsed).to.be.below(WITHIN_MS)
      expectIdNotLeaked(failing)
    })

    it("onRedisError 'anonymous': 200 with an empty, unsaved session within timeoutMs, a warning, no id in the log", async () => {
      const anonymous = await setup(client, 'anonymous')
      await pause()
      const [[res, write], elapsed] = await timed(() =>
        Promise.all([anonymous.user.get('/me'), anonymous.user.post('/set/color?value=red')]),
      )
      expectAnonymous(res, anonymous.logger)
      expect(setCookieOf(res)).to.equal(undefined)
      expect(write.status).to.equal(200)
      expect(setCookieOf(write)).to.equal(undefined)
      expect(elapsed).to.be.below(WITHIN_MS)
      expectIdNotLeaked(anonymous)
      await waitForRedisResume(pausedUntil)
      expect(await anonymous.user.data(), 'the session is back, unchanged, once Redis is').to.deep.equal({ userId: 7 })
    })
  })

  describe('a save that fails once the handler has started its response (Redis paused)', () => {
    let client: RedisClient
    let pausedUntil = 0
    before(async () => {
      client = await connectRedis()
    })
    afterEach(async () => {
      await waitForRedisResume(pausedUntil)
    })
    after(async () => {
      await client.close()
    })

    /** An app whose routes change the session, then start their response in the ways a handler can. */
    const startingApp = (logger: RecordingLogger) =>
      sessionApp(
        session({ client, prefix: uniquePrefix('sess-head'), onRedisError: 'fail', timeoutMs: TIMEOUT_MS, logger }),
        {
          routes: (app) => {
            app.post('/write-head', async (req, res) => {
              req.session.color = 'red'
              pausedUntil = Date.now() + 1_500
              await pauseRedis(1_500)
              res.writeHead(200, { 'Content-Type': 'text/plain' })
              res.end('head first')
            })
            app.post('/change', (req, res) => {
              req.session.color = 'red'
              res.writeHead(200, { 'Content-Type': 'text/plain' })
              res.end('changed')
            })
            app.post('/flush-headers', async (req, res) => {
              req.session.color = 'red'
              pausedUntil = Date.now() + 1_500
              await pauseRedis(1_500)
              res.flushHeaders()
              res.write('streamed ')
              res.end('body')
            })
          },
        },
      )

    for (const route of ['/write-head', '/flush-headers']) {
      it(`${route === '/write-head' ? 'res.writeHead()' : 'res.flushHeaders()'} then the body: the head waits for the save, which fails: 503 within timeoutMs, never a hang`, async () => {
        const logger = recordingLogger()
        const user = new SessionClient(startingApp(logger))
        const [res, elapsed] = await timed(() => user.post(route))
        expect(res.status).to.equal(503)
        expect(setCookieOf(res)).to.equal(undefined)
        expect(res.text).to.not.include('head first').and.not.include('streamed')
        expect(elapsed).to.be.below(WITHIN_MS)
        expect(logger.errors).to.have.length(1)
      })
    }

    it("failed saves in 'fail' mode are logged throttled: one error for a burst", async () => {
      const logger = recordingLogger()
      const app = startingApp(logger)
      pausedUntil = Date.now() + 1_500
      await pauseRedis(1_500)
      const answers = await Promise.all(Array.from({ length: 5 }, () => new SessionClient(app).post('/change')))
      expect(answers.map((res) => res.status)).to.deep.equal([503, 503, 503, 503, 503])
      expect(logger.errors, logger.text()).to.have.length(1)
    })
  })

  describe('Redis dies between the load and the save', () => {
    for (const onRedisError of ['fail', 'anonymous'] as const) {
      it(`onRedisError '${onRedisError}': ${onRedisError === 'fail' ? 'the response becomes a 503' : 'the response goes out, unsaved, without a cookie'}`, async () => {
        const store = await startDisposableStore()
        const client = await store.connect()
        try {
          const logger = recordingLogger()
          const sessions = session({
            client,
            prefix: uniquePrefix('sess-die'),
            onRedisError,
            timeoutMs: TIMEOUT_MS,
            logger,
          })
          const app = sessionApp(sessions, {
            routes: (app) =>
              app.post('/die-then-set', async (req, res) => {
                await store.stop()
                req.session.color = 'never saved'
                res.set('ETag', '"abc"').json({ saved: 'yes' })
              }),
          })
          const user = new SessionClient(app)
          const id = sessionIdOf(await user.post('/login?user=7'))
          const [res, elapsed] = await timed(() => user.post('/die-then-set'))
          expect(elapsed).to.be.below(WITHIN_MS)
          expect(setCookieOf(res)).to.equal(undefined)
          if (onRedisError === 'fail') {
            expect(res.status).to.equal(503)
            expect(res.body).to.not.have.property('saved')
            expect(res.headers.etag).to.equal(undefined)
            expect(logger.errors.length + logger.warnings.length, 'the failure is logged').to.be.at.least(1)
          } else {
            expect(res.status).to.equal(200)
            expect(res.body).to.deep.equal({ saved: 'yes' })
            expect(logger.warnings).to.have.length(1)
          }
          expect(logger.text()).to.not.include(id)
        } finally {
          client.destroy()
          await store.stop()
        }
      })
    }
  })
})
