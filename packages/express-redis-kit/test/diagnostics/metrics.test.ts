/**
 * `express-redis-kit/metrics`: the OpenTelemetry instruments recorded from real requests, read
 * back through the OpenTelemetry SDK's own MeterProvider and a MetricReader.
 */

import { MeterProvider, MetricReader } from '@opentelemetry/sdk-metrics'
import { expect } from 'chai'
import express from 'express'
import request from 'supertest'
import { cacheResponse, rateLimit, session } from '../../src/index.js'
import { enableMetrics, METRIC_NAMES } from '../../src/metrics.js'
import { countingApp } from '../helpers/cache-app.js'
import { connectRedis, mode, type RedisClient, uniquePrefix } from '../helpers/redis.js'
import { SessionClient, sessionApp } from '../helpers/session-app.js'
import { sleep } from '../helpers/session-redis.js'

/** A reader the test collects from when it wants (no export interval). */
class CollectingReader extends MetricReader {
  protected onForceFlush(): Promise<void> {
    return Promise.resolve()
  }
  protected onShutdown(): Promise<void> {
    return Promise.resolve()
  }
}

interface Point {
  attributes: Record<string, unknown>
  value: unknown
}

/** Every data point of the instrument `name`. */
async function pointsOf(reader: MetricReader, name: string): Promise<Point[]> {
  const { resourceMetrics } = await reader.collect()
  return resourceMetrics.scopeMetrics
    .flatMap((scope) => scope.metrics)
    .filter((metric) => metric.descriptor.name === name)
    .flatMap((metric) => metric.dataPoints as unknown as Point[])
}

/** The sum of the counter points whose attributes include `match`. */
const total = (points: Point[], match: Record<string, unknown>): number =>
  points
    .filter((point) => Object.entries(match).every(([key, value]) => point.attributes[key] === value))
    .reduce((sum, point) => sum + Number(point.value), 0)

describe(`express-redis-kit/metrics (${mode === 'cluster' ? 'Redis Cluster' : 'single Redis'})`, () => {
  let client: RedisClient
  let reader: CollectingReader
  let provider: MeterProvider
  let stop: () => void
  before(async () => {
    client = await connectRedis()
  })
  beforeEach(() => {
    reader = new CollectingReader()
    provider = new MeterProvider({ readers: [reader] })
    stop = enableMetrics({ meterProvider: provider, redisDurations: true })
  })
  afterEach(async () => {
    stop()
    await provider.shutdown()
  })
  after(async () => {
    await client.close()
  })

  it('rate_limiting.requests by result (acquired / rejected) and source, and the Redis round trips', async () => {
    const app = express()
    app.use(
      rateLimit({ client, prefix: uniquePrefix('metrics-rl'), limit: 2, windowMs: '1m', keyGenerator: () => 'a' }),
    )
    app.get('/', (_req, res) => {
      res.send('ok')
    })
    for (let i = 0; i < 4; i++) await request(app).get('/')
    const points = await pointsOf(reader, METRIC_NAMES.rateLimitRequests)
    expect(total(points, { 'rate_limiting.result': 'acquired' })).to.equal(2)
    expect(total(points, { 'rate_limiting.result': 'rejected', 'rate_limiting.source': 'redis' })).to.equal(1)
    expect(total(points, { 'rate_limiting.result': 'rejected', 'rate_limiting.source': 'local-block' })).to.equal(1)
    expect(points[0]?.attributes['rate_limiting.policy']).to.equal('2-in-1min')

    const durations = await pointsOf(reader, METRIC_NAMES.redisDuration)
    const decide = durations.find((point) => point.attributes['express_redis_kit.operation'] === 'rateLimit.decide')
    expect(decide?.attributes).to.include({ 'db.system.name': 'redis', 'db.operation.name': 'EVALSHA' })
    // Three round trips: the fourth request was refused from the local block cache.
    expect((decide?.value as { count: number } | undefined)?.count).to.equal(3)
  })

  it('cache.requests (hit / miss / bypass with its reason), cache.fills, session.operations', async () => {
    const { app } = countingApp(cacheResponse({ client, prefix: uniquePrefix('metrics-cache'), ttl: '1m' }))
    await request(app).get('/a')
    for (let i = 0; i < 50 && total(await pointsOf(reader, METRIC_NAMES.cacheFills), { result: 'stored' }) === 0; i++)
      await sleep(20)
    await request(app).get('/a')
    await request(app).get('/a').set('Authorization', 'Basic x')
    const requests = await pointsOf(reader, METRIC_NAMES.cacheRequests)
    expect(total(requests, { result: 'miss' })).to.equal(1)
    expect(total(requests, { result: 'hit' })).to.equal(1)
    expect(total(requests, { result: 'bypass', reason: 'authorization' })).to.equal(1)
    expect(total(await pointsOf(reader, METRIC_NAMES.cacheFills), { result: 'stored' })).to.equal(1)

    const user = new SessionClient(sessionApp(session({ client, prefix: uniquePrefix('metrics-sess') })))
    await user.post('/login?user=1')
    await user.get('/me')
    const sessions = await pointsOf(reader, METRIC_NAMES.sessionOperations)
    expect(total(sessions, { operation: 'save', result: 'saved' })).to.equal(1)
    expect(total(sessions, { operation: 'load', result: 'loaded' })).to.equal(1)
  })

  it('without redisDurations (the default), no Redis round trip is traced or recorded', async () => {
    stop()
    stop = enableMetrics({ meterProvider: provider })
    const app = express()
    app.use(rateLimit({ client, prefix: uniquePrefix('metrics-nodur'), limit: 5, windowMs: '1m' }))
    app.get('/', (_req, res) => {
      res.send('ok')
    })
    await request(app).get('/')
    expect(total(await pointsOf(reader, METRIC_NAMES.rateLimitRequests), {})).to.equal(1)
    expect(await pointsOf(reader, METRIC_NAMES.redisDuration)).to.deep.equal([])
  })

  it('the function returned stops recording; bad options name the option', async () => {
    stop()
    const app = express()
    app.use(rateLimit({ client, prefix: uniquePrefix('metrics-off'), limit: 5, windowMs: '1m' }))
    app.get('/', (_req, res) => {
      res.send('ok')
    })
    await request(app).get('/')
    expect(await pointsOf(reader, METRIC_NAMES.rateLimitRequests)).to.deep.equal([])
    stop = () => {}
    expect(() => enableMetrics({ meterProvider: {} as never })).to.throw(TypeError, /meterProvider/)
    expect(() => enableMetrics({ meterprovider: provider } as never)).to.throw(TypeError, /meterprovider/)
  })
})
