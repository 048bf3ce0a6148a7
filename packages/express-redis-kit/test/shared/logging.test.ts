import type { Server } from 'node:http'
import { expect } from 'chai'
import express from 'express'
import { cached, cacheResponse } from '../../src/index.js'
import { throttledLogger } from '../../src/shared/logger.js'
import { PUBLIC_HOST, rawRequest } from '../helpers/cache-app.js'
import { closeServer, listen, type RecordingLogger, recordingLogger, waitUntil } from '../helpers/outage.js'
import {
  connectTo,
  type DisposableCluster,
  type DisposableRedis,
  mode,
  type RedisClient,
  startDisposableCluster,
  startDisposableRedis,
  uniquePrefix,
} from '../helpers/redis.js'

/*
 * What fails where no caller can be told is logged, throttled so that an outage under load
 * does not flood the log: each kind of message (each feature's, each failure's) has a window
 * of its own, its first message is logged at once, and what the window suppressed is counted
 * in a line of its own when the window ends, whether or not anything comes after.
 */
const messages = (logger: RecordingLogger) => logger.warnings.map(([message]) => String(message))

describe('throttled logging: one window per kind of message', () => {
  const WINDOW_MS = 200

  it('two kinds at once: both logged at once, each suppressing only its own repeats', () => {
    const logger = recordingLogger()
    const warn = throttledLogger(logger, 'warn', WINDOW_MS)
    for (let i = 0; i < 3; i++) {
      warn('feature A: Redis unavailable')
      warn('feature B: Redis unavailable')
    }
    expect(messages(logger)).to.deep.equal(['feature A: Redis unavailable', 'feature B: Redis unavailable'])
  })

  it('the same message with errors of different codes: two kinds', () => {
    const logger = recordingLogger()
    const warn = throttledLogger(logger, 'warn', WINDOW_MS)
    warn('could not store', Object.assign(new Error('a'), { code: 'ERK_REDIS_UNAVAILABLE' }))
    warn('could not store', Object.assign(new Error('b'), { code: 'ERK_UNSERIALIZABLE' }))
    warn('could not store', Object.assign(new Error('c'), { code: 'ERK_UNSERIALIZABLE' }))
    expect(logger.warnings.map(([, error]) => (error as Error).message)).to.deep.equal(['a', 'b'])
  })

  it('what a window suppressed is counted when it ends, with no later message; a quiet window logs nothing', async () => {
    const logger = recordingLogger()
    const warn = throttledLogger(logger, 'warn', WINDOW_MS)
    const started = Date.now()
    for (let i = 1; i <= 5; i++) warn('cache: Redis unavailable', new Error(`failure ${i}`))
    await waitUntil(() => logger.warnings.length === 2, 5_000, 'the count of what was suppressed')
    // time is the behaviour here: the count comes when the window ends, not before
    expect(Date.now() - started).to.be.at.least(WINDOW_MS - 1)
    expect(messages(logger)).to.deep.equal([
      'cache: Redis unavailable',
      `cache: Redis unavailable (4 more like this suppressed in the last ${WINDOW_MS / 1000} s)`,
    ])
    expect((logger.warnings[1]![1] as Error).message, 'with the last error').to.equal('failure 5')
    // the line that counted opened a window of its own: quiet, it ends with nothing to say
    await new Promise((resolve) => setTimeout(resolve, WINDOW_MS * 3))
    expect(logger.warnings).to.have.length(2)
    warn('cache: Redis unavailable')
    expect(messages(logger).at(-1), 'after a quiet window, logged at once').to.equal('cache: Redis unavailable')
  })

  it('a steady stream: one line per window, each counting the window before', async () => {
    const logger = recordingLogger()
    const warn = throttledLogger(logger, 'error', WINDOW_MS)
    const until = Date.now() + WINDOW_MS * 3.5
    let sent = 0
    while (Date.now() < until) {
      warn('rateLimit: Redis unavailable')
      sent++
      await new Promise((resolve) => setTimeout(resolve, 5))
    }
    // the last window ends with its count, then a quiet one with nothing
    await new Promise((resolve) => setTimeout(resolve, WINDOW_MS * 3))
    const lines = logger.errors.map(([message]) => String(message))
    // 3.5 windows of messages: about one line per window (the first message, then the count at the end
    // of each window), never a line per message; each message either logged or counted
    expect(lines.length, lines.join('\n')).to.be.within(2, 8)
    const logged = lines.map((line) => Number(/\((\d+) more like this/.exec(line)?.[1] ?? 1))
    expect(
      logged.reduce((sum, count) => sum + count, 0),
      `every one of the ${sent} messages logged or counted`,
    ).to.equal(sent)
  })
})

describe(`throttled logging: features failing at once with one logger (${mode} Redis)`, function () {
  this.timeout(30_000)
  let redis: DisposableRedis | DisposableCluster
  let client: RedisClient
  let server: Server | undefined

  beforeEach(async () => {
    if (mode === 'cluster') {
      const cluster = await startDisposableCluster()
      redis = cluster
      client = await cluster.connect()
    } else {
      const single = await startDisposableRedis()
      redis = single
      client = await connectTo(single)
    }
  })

  afterEach(async () => {
    await closeServer(server)
    server = undefined
    client.destroy()
    await redis.stop()
  })

  it('cacheResponse and cached() with Redis down: both log within their window, and each window ends with the count of what it suppressed', async () => {
    const logger = recordingLogger()
    const prefix = uniquePrefix('logging')
    const app = express()
    app.get('/page', cacheResponse({ client, prefix, ttl: '1m', logger }), (_req, res) => {
      res.send('page')
    })
    server = await listen(app)
    await redis.stop()
    const listening = server
    const failedAt = Date.now()
    for (let i = 0; i < 5; i++) {
      const res = await rawRequest(listening, '/page', { headers: { host: PUBLIC_HOST } })
      expect(res.headers['x-cache']).to.equal('BYPASS')
      expect(await cached(client, 'value', { prefix, ttl: '1m', logger }, () => 'loaded')).to.equal('loaded')
    }
    const cacheLine = 'express-redis-kit cacheResponse: Redis unavailable, answering without the cache'
    const cachedLine = 'express-redis-kit cached: Redis unavailable, calling the loader without the cache'
    expect(messages(logger), 'logged at once').to.include.members([cacheLine, cachedLine])
    // no later message: the windows (5 s) end by themselves, each with its count
    await waitUntil(
      () =>
        messages(logger).filter((message) => message.includes('4 more like this suppressed in the last 5 s')).length ===
        2,
      10_000,
      'both counts',
    )
    expect(Date.now() - failedAt, 'ms until the counts (a 5 s window)').to.be.at.least(4_900)
    expect(messages(logger)).to.include.members([
      `${cacheLine} (4 more like this suppressed in the last 5 s)`,
      `${cachedLine} (4 more like this suppressed in the last 5 s)`,
    ])
  })
})
