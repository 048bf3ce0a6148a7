import type { Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { Writable } from 'node:stream'
import { expect } from 'chai'
import { chromium } from 'playwright-core'
import request from 'supertest'
import { createLogger } from '../src/logging.js'
import { listenForMetrics, TOKEN_FAILURES_PER_IP } from '../src/metrics.js'
import type { StatsBody } from '../src/stats.js'
import { clusterNodes, expectError, startApp, type TestApp, waitUntil } from './helpers/app.js'
import { type DisposableRedis, startDisposableRedis } from './helpers/redis.js'

const TOKEN = 'metrics-token-0123456789abcdef'
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/
/** REDIS_MODE=cluster runs the app on the Redis Cluster (scripts/cluster.sh). */
const clusterEnv: Record<string, string> =
  process.env.REDIS_MODE === 'cluster' ? { REDIS_CLUSTER_NODES: clusterNodes } : {}

/** A pino destination that keeps each line, parsed. */
function logLines(): { lines: Record<string, unknown>[]; stream: Writable } {
  const lines: Record<string, unknown>[] = []
  const stream = new Writable({
    write(chunk: Buffer, _encoding, done) {
      for (const line of chunk.toString('utf8').split('\n')) if (line) lines.push(JSON.parse(line))
      done()
    },
  })
  return { lines, stream }
}

/** The value of the Prometheus sample `name{...}` whose labels include all of `labels` (0 when there is none). */
function sample(text: string, name: string, labels: Record<string, string>): number {
  let total = 0
  for (const line of text.split('\n')) {
    const match = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)/.exec(line)
    if (!match || match[1] !== name) continue
    const found = Object.fromEntries([...(match[2] ?? '').matchAll(/(\w+)="([^"]*)"/g)].map((m) => [m[1], m[2]]))
    if (Object.entries(labels).every(([key, value]) => found[key] === value)) total += Number(match[3])
  }
  return total
}

describe(`observability (${process.env.REDIS_MODE === 'cluster' ? 'Redis Cluster' : 'single Redis'})`, () => {
  describe('GET /metrics with METRICS_TOKEN', () => {
    let app: TestApp
    before(async () => {
      // one sign-up attempt an hour per IP: the second is refused (429) by the limiter, from Redis
      app = await startApp({ ...clusterEnv, METRICS_TOKEN: TOKEN, SIGNUP_RATE_LIMIT: '1' })
    })
    after(() => app?.close())

    const scrape = async () => {
      const res = await app.http().get('/metrics').set('Authorization', `Bearer ${TOKEN}`)
      expect(res.status, res.text).to.equal(200)
      expect(res.headers['content-type']).to.match(/^text\/plain/)
      expect(res.headers['cache-control']).to.equal('no-store')
      return res.text
    }

    it('answers 401 in the JSON error shape without the token or with a wrong one', async () => {
      for (const authorization of [undefined, `Bearer ${TOKEN}x`, `Bearer ${TOKEN.slice(0, -1)}`, TOKEN, 'Basic abc']) {
        const req = app.http().get('/metrics')
        if (authorization) req.set('Authorization', authorization)
        const res = await req
        expectError(res, 401, 'unauthorized')
        expect(res.headers['www-authenticate']).to.match(/^Bearer/)
        expect(res.text).not.to.include('rate_limiting')
      }
    })

    it('answers Prometheus text with the token: a cache hit and a rate-limited request are counted', async () => {
      const before = await scrape()
      const hit = { result: 'hit', source: 'cacheResponse' }
      const rejected = { rate_limiting_result: 'rejected', rate_limiting_source: 'redis' }
      const hitsBefore = sample(before, 'cache_requests_total', hit)
      const rejectedBefore = sample(before, 'rate_limiting_requests_total', rejected)

      // a cached route twice: a miss, then a hit
      const first = await app.http().get('/users?limit=3')
      expect(first.headers['x-cache']).to.equal('MISS')
      const second = await app.http().get('/users?limit=3')
      expect(second.headers['x-cache']).to.equal('HIT')
      // a limited route: the first attempt counts (400: no body), the second is refused
      expect((await app.http().post('/users').send({})).status).to.equal(400)
      expectError(await app.http().post('/users').send({}), 429, 'rate_limited')

      const after = await scrape()
      expect(sample(after, 'cache_requests_total', hit)).to.equal(hitsBefore + 1)
      expect(sample(after, 'rate_limiting_requests_total', rejected)).to.equal(rejectedBefore + 1)
      expect(sample(after, 'rate_limiting_requests_total', { rate_limiting_result: 'acquired' })).to.be.above(0)
      expect(sample(after, 'cache_requests_total', { result: 'miss' })).to.be.above(0)
      expect(after).to.match(/^# TYPE db_client_operation_duration histogram$/m)
      expect(after).to.match(/^process_memory_usage\{otel_scope_name="sample-app"\} \d+$/m)
    })

    it('is not rate-limited or counted: scrapes go before the general limiter', async () => {
      // what the general limiter (and the app's others) let through; the limit of wrong tokens sees every scrape
      const acquired = (text: string) =>
        sample(text, 'rate_limiting_requests_total', { rate_limiting_result: 'acquired' }) -
        sample(text, 'rate_limiting_requests_total', {
          rate_limiting_result: 'acquired',
          rate_limiting_policy: 'metrics-token',
        })
      const before = acquired(await scrape())
      for (let i = 0; i < 3; i++) await scrape()
      const res = await app.http().get('/metrics').set('Authorization', `Bearer ${TOKEN}`)
      expect(res.headers).not.to.have.property('ratelimit')
      expect(acquired(res.text)).to.equal(before)
    })
  })

  describe(`wrong METRICS_TOKENs are limited per client IP (${TOKEN_FAILURES_PER_IP} in 15 minutes)`, () => {
    let app: TestApp
    before(async () => {
      // one proxy in front: each request's client IP is the X-Forwarded-For it sets
      app = await startApp({ ...clusterEnv, METRICS_TOKEN: TOKEN, TRUST_PROXY: 'loopback' })
    })
    after(() => app?.close())

    const get = (ip: string, token: string) =>
      app.http().get('/metrics').set('X-Forwarded-For', ip).set('Authorization', `Bearer ${token}`)

    it('past the limit every request of the IP is 429 with Retry-After, the right token too; right tokens and other IPs are not counted', async () => {
      const guesser = '203.0.113.7'
      const scraper = '198.51.100.2'
      for (let i = 0; i < TOKEN_FAILURES_PER_IP; i++) {
        expectError(await get(guesser, `wrong-token-${i}-0123456789`), 401, 'unauthorized')
        // the right token in between, while under the limit: answered, and not counted
        if (i < TOKEN_FAILURES_PER_IP - 1) expect((await get(guesser, TOKEN)).status).to.equal(200)
      }
      const refused = await get(guesser, TOKEN)
      expectError(refused, 429, 'rate_limited')
      expect(Number(refused.headers['retry-after'])).to.be.within(1, 15 * 60)
      expectError(await get(guesser, 'one-more-wrong-token-0123'), 429, 'rate_limited')
      const scrape = await get(scraper, TOKEN)
      expect(scrape.status, 'another IP with the right token').to.equal(200)
      expect(scrape.headers).not.to.have.property('ratelimit')
    })
  })

  describe('without METRICS_TOKEN', () => {
    let app: TestApp
    let metricsPort: Server | undefined
    before(async () => {
      app = await startApp({ ...clusterEnv })
    })
    after(async () => {
      metricsPort?.close()
      await app?.close()
    })

    it('GET /metrics on the app port is the JSON 404', async () => {
      expectError(await app.http().get('/metrics'), 404, 'not_found')
    })

    it('METRICS_PORT serves GET /metrics alone on a port of its own, bound to HOST', async () => {
      metricsPort = await listenForMetrics(
        app.services.metrics,
        { ...app.config.observability, metricsPort: 0 },
        '127.0.0.1',
      )
      const address = metricsPort.address() as AddressInfo
      expect(address.address).to.equal('127.0.0.1')
      await app.http().get('/users')
      const res = await request(metricsPort).get('/metrics')
      expect(res.status).to.equal(200)
      expect(res.text).to.match(/^cache_requests_total\{/m)
      expect((await request(metricsPort).get('/users')).status).to.equal(404)
      expect((await request(metricsPort).post('/metrics')).status).to.equal(404)
    })

    it('METRICS_PORT asks for the token too when METRICS_TOKEN is set', async () => {
      const server = await listenForMetrics(
        app.services.metrics,
        { ...app.config.observability, metricsToken: TOKEN, metricsPort: 0 },
        '127.0.0.1',
      )
      try {
        expect((await request(server).get('/metrics')).status).to.equal(401)
        expect((await request(server).get('/metrics').set('Authorization', `Bearer ${TOKEN}`)).status).to.equal(200)
      } finally {
        server.close()
      }
    })
  })

  describe('request ids and logs', () => {
    let app: TestApp
    const { lines, stream } = logLines()
    before(async () => {
      app = await startApp({ ...clusterEnv, SIGNUP_RATE_LIMIT: '1' }, { log: createLogger('info', stream) })
    })
    after(() => app?.close())

    it('every response has an X-Request-Id (a UUID): 200, 404, 400, 429', async () => {
      const responses = [
        await app.http().get('/healthz'),
        await app.http().get('/no-such-route'),
        await app.http().post('/users').send({}),
        await app.http().post('/users').send({}),
      ]
      expect(responses.map((res) => res.status)).to.deep.equal([200, 404, 400, 429])
      const ids = responses.map((res) => res.headers['x-request-id'])
      for (const id of ids) expect(id).to.match(UUID)
      expect(new Set(ids).size).to.equal(ids.length)
    })

    it('a well-formed incoming X-Request-Id is kept; any other is replaced by a UUID', async () => {
      for (const id of ['abc', 'trace-0A.b_c', 'x'.repeat(64)]) {
        const res = await app.http().get('/healthz').set('X-Request-Id', id)
        expect(res.headers['x-request-id']).to.equal(id)
      }
      for (const id of ['', 'x'.repeat(65), 'has space', 'semi;colon', 'é', '<script>']) {
        const res = await app.http().get('/healthz').set('X-Request-Id', id)
        expect(res.headers['x-request-id'], JSON.stringify(id)).to.match(UUID)
      }
    })

    it('one JSON line per response, with its request id, method, path, status and time; no header or query', async () => {
      const res = await app.http().get('/users/2147483000?secret=1').set('X-Request-Id', 'log-line-test-1')
      expect(res.status).to.equal(404)
      await waitUntil(() => lines.some((line) => line.reqId === 'log-line-test-1'), 5_000, 'the log line')
      const line = lines.find((line) => line.reqId === 'log-line-test-1')!
      expect(line).to.include({ level: 30, msg: 'GET /users/2147483000 404' })
      expect(line.req).to.deep.equal({ method: 'GET', path: '/users/2147483000' })
      expect(line.res).to.deep.equal({ statusCode: 404 })
      expect(line.responseTime).to.be.a('number')
      expect(JSON.stringify(line)).not.to.include('secret')
    })

    it('every line has a request id, and each response logged is under its own id', async () => {
      const ids: string[] = []
      for (let i = 0; i < 5; i++) {
        const res = await app.http().get('/users').set('Cookie', 'x=1')
        ids.push(String(res.headers['x-request-id']))
      }
      await waitUntil(() => ids.every((id) => lines.some((line) => line.reqId === id)), 5_000, 'the log lines')
      for (const line of lines) expect(line.reqId, JSON.stringify(line)).to.be.a('string')
      expect(JSON.stringify(lines)).not.to.match(/cookie|authorization/i)
    })
  })

  describe("the kit's logger is the same pino: a Redis failure in a request is logged with its request id", () => {
    let redis: DisposableRedis
    let app: TestApp
    const { lines, stream } = logLines()
    before(async () => {
      redis = await startDisposableRedis()
      app = await startApp({ REDIS_URL: redis.url }, { log: createLogger('info', stream) })
    })
    after(async () => {
      redis?.resume()
      await app?.close()
      await redis?.stop()
    })

    it("the rate limiter's error line (Redis not answering, let through) is a pino line with err and reqId", async () => {
      redis.pause()
      const res = await app.http().get('/healthz').set('X-Request-Id', 'redis-stalled-1')
      expect(res.status).to.equal(200)
      expect(res.body.redis).to.equal('down')
      const kitLine = () => lines.find((line) => line.reqId === 'redis-stalled-1' && line.err !== undefined)
      await waitUntil(() => kitLine() !== undefined, 10_000, "the kit's line")
      const { level, msg, err } = kitLine()!
      expect(level).to.equal(50)
      expect(msg).to.match(/^express-redis-kit rateLimit: Redis unavailable, allowing requests/)
      expect(err).to.include({ type: 'RedisKitError' })
      expect((err as { stack?: string }).stack).to.be.a('string')
    })
  })

  describe('GET /stats', () => {
    let app: TestApp
    before(async () => {
      app = await startApp({ ...clusterEnv, SIGNUP_RATE_LIMIT: '1' })
    })
    after(() => app?.close())

    const stats = async (): Promise<StatsBody> => {
      const res = await app.http().get('/stats')
      expect(res.status).to.equal(200)
      expect(res.headers['cache-control']).to.equal('no-store')
      return res.body
    }

    it('starts with no lookup (hit ratio null) and nothing limited', async () => {
      const body = await stats()
      expect(body.cache).to.deep.equal({ hits: 0, misses: 0, hitRatio: null })
      expect(body.rateLimit.limited).to.equal(0)
      expect(Date.parse(body.since)).to.be.at.most(Date.now())
    })

    it('reports the hit ratio and the limited count of real requests, numbers only', async () => {
      for (let i = 0; i < 4; i++) await app.http().get('/users?limit=2') // a miss, then 3 hits
      await app.http().get('/users/2147483001') // a miss (a 404 the route answers)
      await app.http().post('/users').send({})
      expectError(await app.http().post('/users').send({}), 429, 'rate_limited')
      const body = await stats()
      expect(body.cache).to.deep.equal({ hits: 3, misses: 2, hitRatio: 3 / 5 })
      expect(body.rateLimit.limited).to.equal(1)
      expect(body.rateLimit.allowed).to.be.at.least(7)
      expect(Object.keys(body)).to.deep.equal(['since', 'cache', 'rateLimit'])
      expect(JSON.stringify(body)).not.to.include(app.config.redisPrefix)
    })
  })

  describe('the page shows the hit ratio and the limited count (Chromium)', () => {
    /** Debian's chromium (scripts/lib.sh ensure_chromium installs it); never a browser download. */
    const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium'
    let app: TestApp
    before(async () => {
      app = await startApp({ ...clusterEnv, SIGNUP_RATE_LIMIT: '1' })
    })
    after(() => app?.close())

    it("the numbers of GET /stats, under the page's CSP, without a script error", async function () {
      this.timeout(60_000)
      for (let i = 0; i < 3; i++) await app.http().get('/users?limit=1')
      await app.http().post('/users').send({})
      expectError(await app.http().post('/users').send({}), 429, 'rate_limited')
      const browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] })
      try {
        const page = await browser.newPage()
        const problems: string[] = []
        page.on('console', (message) => {
          // (a 401 of GET /me, signed out, is the console's error too: only CSP violations count)
          if (/Content Security Policy/i.test(message.text())) problems.push(message.text())
        })
        page.on('pageerror', (error) => problems.push(error.message))
        await page.goto(`http://127.0.0.1:${(app.server.address() as AddressInfo).port}/#/users`)
        await page.locator('body[data-loaded=users]').waitFor({ timeout: 20_000 })
        // the page's own list request counted too: the page shows what /stats says once it has polled again
        const { cache, rateLimit } = (await app.http().get('/stats')).body as StatsBody
        expect(rateLimit.limited).to.equal(1)
        expect(cache.hits).to.be.at.least(2)
        const ratio = `${Math.round(cache.hitRatio! * 100)}%`
        await page.locator('#limited-count').getByText('1', { exact: true }).waitFor({ timeout: 20_000 })
        await page.locator('#hit-ratio').getByText(ratio, { exact: true }).waitFor({ timeout: 20_000 })
        expect(await page.getAttribute('#hit-ratio', 'title')).to.equal(`${cache.hits} hits, ${cache.misses} misses`)
        expect(problems).to.deep.equal([])
      } finally {
        await browser.close()
      }
    })
  })
})
