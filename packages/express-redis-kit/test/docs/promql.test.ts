/*
 * The PromQL of both READMEs names series and labels that the OpenTelemetry Prometheus exporter
 * really produces from enableMetrics(): every feature is exercised against the real Redis (a
 * rejection, a local-block refusal, a cache hit and bypass, a session, a dropped and a lagging
 * notifier message, a failed Redis command), the exporter's text is read, and every metric and
 * label name in the queries (and the series the root README lists) is looked up in it. A name
 * the exporter never writes, such as a unit suffix it does not add, fails here.
 */
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { PrometheusExporter, PrometheusSerializer } from '@opentelemetry/exporter-prometheus'
import { MeterProvider } from '@opentelemetry/sdk-metrics'
import { expect } from 'chai'
import express from 'express'
import request from 'supertest'
import { repositoryRoot } from '../../consumers/examples/extract.mjs'
import { cacheResponse, createNotifier, type Notifier, rateLimit, session } from '../../src/index.js'
import { enableMetrics, METRIC_NAMES } from '../../src/metrics.js'
import { countingApp } from '../helpers/cache-app.js'
import { connectRedis, mode, type RedisClient, uniquePrefix } from '../helpers/redis.js'
import { SessionClient, sessionApp } from '../helpers/session-app.js'
import { sleep } from '../helpers/session-redis.js'

/** The kit's instruments as Prometheus names them, without suffixes: `rate_limiting_requests`. */
const STEMS = Object.values(METRIC_NAMES).map((name) => name.replaceAll('.', '_'))

/** Series name → the label names it carries, read from the exporter's text format. */
function seriesOf(text: string): Map<string, Set<string>> {
  const series = new Map<string, Set<string>>()
  for (const line of text.split('\n')) {
    const typed = /^# TYPE (\S+) /.exec(line)
    if (typed?.[1]) series.set(typed[1], series.get(typed[1]) ?? new Set())
    const sample = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? /.exec(line)
    if (!sample?.[1]) continue
    const labels = series.get(sample[1]) ?? new Set<string>()
    for (const [, label] of (sample[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="/g)) labels.add(label as string)
    series.set(sample[1], labels)
  }
  return series
}

/** The names a PromQL expression uses: metric names, and the label names of each selector and grouping. */
function namesIn(query: string): { metrics: string[]; labels: { metric: string | undefined; label: string }[] } {
  const metrics: string[] = []
  const labels: { metric: string | undefined; label: string }[] = []
  let rest = query.replace(/"(?:[^"\\]|\\.)*"/g, '""').replace(/\[[^\]]*\]/g, '')
  rest = rest.replace(/([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{([^}]*)\}/g, (_, metric: string, matchers: string) => {
    metrics.push(metric)
    for (const [, label] of matchers.matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)/g))
      labels.push({ metric, label: label as string })
    return ' '
  })
  rest = rest.replace(/\b(?:by|without)\s*\(([^)]*)\)/g, (_, grouping: string) => {
    for (const label of grouping.split(',')) labels.push({ metric: undefined, label: label.trim() })
    return ' '
  })
  const keywords = new Set([
    'by',
    'without',
    'on',
    'ignoring',
    'group_left',
    'group_right',
    'bool',
    'and',
    'or',
    'unless',
  ])
  for (const [, name, call] of rest.matchAll(/([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(\()?/g))
    if (name && !call && !keywords.has(name)) metrics.push(name)
  return { metrics, labels }
}

/** The inline code spans of a Markdown document that are PromQL queries (`\|` in tables unescaped). */
function queriesIn(markdown: string): string[] {
  return [...markdown.matchAll(/`([^`\n]+)`/g)]
    .map(([, code]) => (code as string).replaceAll('\\|', '|'))
    .filter((code) => /\b(?:rate|sum|max|min|avg|histogram_quantile)\s*(?:\(|by\b|without\b)/.test(code))
}

/** Series the text names alone (`cache_fills_total`, `session_operations_total{operation, result}`), the kit's only. */
function listedSeriesIn(markdown: string): { metric: string; labels: string[] }[] {
  return [...markdown.matchAll(/`([a-z][a-z0-9_]*)(\{[^`]*\})?`/g)]
    .filter(([, metric]) => STEMS.some((stem) => metric?.startsWith(stem)))
    .map(([, metric, braces]) => ({
      metric: metric as string,
      labels: [...(braces ?? '').matchAll(/[{,]\s*([a-z_][a-z0-9_]*)/g)].map(([, label]) => label as string),
    }))
}

describe(`the READMEs' PromQL against the Prometheus exporter's output (${mode === 'cluster' ? 'Redis Cluster' : 'single Redis'})`, () => {
  let client: RedisClient
  let provider: MeterProvider
  let exporter: PrometheusExporter
  let stop: () => void
  const notifiers: Notifier[] = []
  let series: Map<string, Set<string>>

  before(async () => {
    client = await connectRedis()
    exporter = new PrometheusExporter({ preventServerStart: true })
    provider = new MeterProvider({ readers: [exporter] })
    stop = enableMetrics({ meterProvider: provider, redisDurations: true })
    const scrape = async () => {
      const { resourceMetrics } = await exporter.collect()
      return seriesOf(new PrometheusSerializer().serialize(resourceMetrics))
    }

    // rate limiting: acquired, rejected by Redis, rejected from the local block cache
    const limited = express()
    limited.use(
      rateLimit({ client, prefix: uniquePrefix('promql-rl'), limit: 1, windowMs: '1m', keyGenerator: () => 'a' }),
    )
    limited.get('/', (_req, res) => {
      res.send('ok')
    })
    for (let i = 0; i < 3; i++) await request(limited).get('/')

    // the response cache: a miss that fills, a hit, a bypass
    const { app: cached } = countingApp(cacheResponse({ client, prefix: uniquePrefix('promql-cache'), ttl: '1m' }))
    await request(cached).get('/a')
    for (let i = 0; i < 100 && (await request(cached).get('/a')).headers['x-cache'] !== 'HIT'; i++) await sleep(20)
    await request(cached).get('/a').set('Authorization', 'Basic x')

    // sessions: a save and a load
    const user = new SessionClient(sessionApp(session({ client, prefix: uniquePrefix('promql-sess') })))
    await user.post('/login?user=1')
    await user.get('/me')

    // the notifier: a message dropped by its handler (pub/sub), a durable group's lag, a failed XADD
    const prefix = uniquePrefix('promql-events')
    const logger = { warn: () => {}, error: () => {} }
    const pubsub = createNotifier({ client, prefix, logger })
    const durable = createNotifier({ client, prefix, logger, mode: 'durable', claimIdle: '200ms' })
    notifiers.push(pubsub, durable)
    await pubsub.subscribe('dropped', () => {
      throw new Error('a handler that fails')
    })
    await durable.subscribe('lagging', () => {})
    await durable.publish('lagging', { n: 1 })
    await client.set(`${prefix}wrong-type`, 'a string where the stream should be')
    await durable.publish('wrong-type', { n: 1 }).catch(() => {})
    const wanted = ['notifier_messages_total', 'notifier_consumer_lag']
    for (let i = 0; ; i++) {
      await pubsub.publish('dropped', { n: i })
      series = await scrape()
      if (wanted.every((name) => series.has(name)) && series.get('notifier_messages_total')?.has('reason')) break
      if (i > 100) throw new Error(`the exporter wrote no ${wanted.join(' or ')} with a reason in 5 s`)
      await sleep(50)
    }
  })

  after(async () => {
    for (const notifier of notifiers) await notifier.close()
    stop()
    await provider.shutdown()
    await client.close()
  })

  for (const file of ['README.md', 'packages/express-redis-kit/README.md']) {
    it(`${file}: every metric and label name of its PromQL is in the exporter's output`, async () => {
      const markdown = await readFile(join(repositoryRoot, file), 'utf8')
      const queries = queriesIn(markdown)
      expect(queries.length, 'PromQL queries found').to.be.at.least(file === 'README.md' ? 2 : 8)
      const wrong: string[] = []
      for (const query of queries) {
        const { metrics, labels } = namesIn(query)
        expect(metrics, query).not.to.be.empty
        for (const metric of metrics) if (!series.has(metric)) wrong.push(`${metric} (in ${query})`)
        for (const { metric, label } of labels) {
          const carriers = metric ? [metric] : metrics
          if (!carriers.some((name) => series.get(name)?.has(label)))
            wrong.push(`the label ${label} of ${carriers.join(', ')} (in ${query})`)
        }
      }
      for (const { metric, labels } of listedSeriesIn(markdown)) {
        if (!series.has(metric)) wrong.push(`${metric} (listed)`)
        for (const label of labels)
          if (!series.get(metric)?.has(label)) wrong.push(`the label ${label} of ${metric} (listed)`)
      }
      expect(wrong, `not in the exporter's output (it has: ${[...series.keys()].join(', ')})`).to.deep.equal([])
    })
  }

  it('finds a wrong name: a unit suffix the exporter does not add, a label it does not write', () => {
    const { metrics, labels } = namesIn(
      'histogram_quantile(0.99, sum by (le, operation) (rate(db_client_operation_duration_seconds_bucket{error_type!=""}[5m])))',
    )
    expect(metrics).to.deep.equal(['db_client_operation_duration_seconds_bucket'])
    expect(series.has('db_client_operation_duration_seconds_bucket')).to.equal(false)
    expect(series.has('db_client_operation_duration_bucket')).to.equal(true)
    expect(labels.map(({ label }) => label)).to.deep.equal(['error_type', 'le', 'operation'])
    expect(series.get('db_client_operation_duration_count')).to.include('error_type')
    expect(series.get('db_client_operation_duration_bucket')).not.to.include('operation')
  })
})
