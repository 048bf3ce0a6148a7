import { timingSafeEqual } from 'node:crypto'
import { once } from 'node:events'
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import { PrometheusExporter } from '@opentelemetry/exporter-prometheus'
import { MeterProvider } from '@opentelemetry/sdk-metrics'
import { type RequestHandler, Router } from 'express'
import { type RateLimitOptions, rateLimit } from 'express-redis-kit'
import { enableMetrics } from 'express-redis-kit/metrics'
import type { ObservabilityConfig } from './config.js'
import { HttpError } from './errors.js'
import { tooMany } from './http.js'

/**
 * The app's OpenTelemetry metrics, read by Prometheus: the kit's instruments (enableMetrics: rate
 * limiting, cache, sessions, notifier, Redis round trips) and Node's basics, on a MeterProvider
 * of the app's own (not the global one) whose only reader is a Prometheus exporter that starts no
 * server of its own: GET /metrics asks it for the text format.
 */
export class Metrics {
  readonly meterProvider: MeterProvider
  readonly #exporter: PrometheusExporter
  readonly #stopKitMetrics: () => void

  constructor() {
    this.#exporter = new PrometheusExporter({ preventServerStart: true })
    this.meterProvider = new MeterProvider({ readers: [this.#exporter] })
    // Redis round-trip durations too: they cost some CPU per request (see the package README), worth it in a demo
    this.#stopKitMetrics = enableMetrics({ meterProvider: this.meterProvider, redisDurations: true })
    observeProcess(this.meterProvider)
  }

  /** Answers with every metric in Prometheus' text format (version 0.0.4). */
  serve(req: IncomingMessage, res: ServerResponse): void {
    res.setHeader('Cache-Control', 'no-store')
    this.#exporter.getMetricsRequestHandler(req, res)
  }

  /** Stops recording (unsubscribes from the kit's channels) and shuts the provider down. */
  async close(): Promise<void> {
    this.#stopKitMetrics()
    await this.meterProvider.shutdown()
  }
}

/** Two of Node's own numbers: resident memory and V8 heap used, read at each scrape. */
function observeProcess(provider: MeterProvider): void {
  const meter = provider.getMeter('sample-app')
  meter
    .createObservableGauge('process.memory.usage', { description: 'Resident set size', unit: 'By' })
    .addCallback((result) => result.observe(process.memoryUsage.rss()))
  meter
    .createObservableGauge('v8js.memory.heap.used', { description: 'V8 heap used', unit: 'By' })
    .addCallback((result) => result.observe(process.memoryUsage().heapUsed))
}

/** Whether `header` is `Bearer <token>`, compared in constant time (the length is not secret). */
export function bearerMatches(header: string | undefined, token: string): boolean {
  const given = Buffer.from(/^Bearer (.+)$/i.exec(header ?? '')?.[1] ?? '')
  const expected = Buffer.from(token)
  return given.length === expected.length && timingSafeEqual(given, expected)
}

/** 401 (with `WWW-Authenticate: Bearer`) unless the request carries the token; passes when there is none. */
function requireToken(token: string | undefined): RequestHandler {
  return (req, res, next) => {
    if (token === undefined || bearerMatches(req.get('authorization'), token)) return next()
    res.setHeader('WWW-Authenticate', 'Bearer realm="metrics"')
    throw new HttpError(401, 'unauthorized', 'GET /metrics needs Authorization: Bearer <METRICS_TOKEN>.')
  }
}

/** Wrong tokens per client IP in {@link TOKEN_FAILURE_WINDOW}; over it the IP is refused for as long. */
export const TOKEN_FAILURES_PER_IP = 10
const TOKEN_FAILURE_WINDOW = '15m'

/** Where the limit of wrong tokens counts: the app's Redis client, a key prefix and the kit's logger. */
export type TokenLimitStore = Pick<RateLimitOptions, 'client' | 'prefix' | 'logger'>

/**
 * GET /metrics on the app's port, only when METRICS_TOKEN is set (without it there is no such
 * route: the JSON 404), and only with `Authorization: Bearer <METRICS_TOKEN>` (else 401). Wrong
 * tokens are counted per client IP: past {@link TOKEN_FAILURES_PER_IP} in 15 minutes the IP gets
 * 429 for 15 minutes, whatever token it sends, so the token cannot be guessed faster.
 */
export function metricsRoutes(metrics: Metrics, config: ObservabilityConfig, store: TokenLimitStore): Router {
  const router = Router()
  if (config.metricsToken !== undefined) {
    const tokenGuesses = rateLimit({
      ...store,
      limit: TOKEN_FAILURES_PER_IP,
      windowMs: TOKEN_FAILURE_WINDOW,
      algorithm: 'sliding-log',
      blockDuration: TOKEN_FAILURE_WINDOW,
      identifier: 'metrics-token',
      // every request asks the limit (a locked-out IP is refused even with the right token), only 401s count
      skipSuccessfulRequests: true,
      requestWasSuccessful: (_req, res) => res.statusCode !== 401,
      // no RateLimit headers on scrapes; a 429 says when to come back (Retry-After, tooMany)
      standardHeaders: false,
      handler: tooMany,
      // Redis failing must not stop the scrapes that would show it: each instance counts in its memory meanwhile
      onRedisError: 'local',
    })
    router.get('/metrics', tokenGuesses, requireToken(config.metricsToken), (req, res) => metrics.serve(req, res))
  }
  return router
}

/**
 * The metrics port (METRICS_PORT): GET /metrics alone, on `host` (the app's HOST) and this port;
 * with METRICS_TOKEN set, the token is asked there too. Resolves once it listens.
 */
export async function listenForMetrics(
  metrics: Metrics,
  config: ObservabilityConfig & { metricsPort: number },
  host: string,
): Promise<Server> {
  const token = config.metricsToken
  const server = createServer((req, res) => {
    const path = (req.url ?? '').split('?')[0]
    if (path !== '/metrics' || (req.method !== 'GET' && req.method !== 'HEAD')) {
      res.writeHead(404, { 'Content-Type': 'text/plain' }).end('Not found: GET /metrics\n')
    } else if (token !== undefined && !bearerMatches(req.headers.authorization, token)) {
      res
        .writeHead(401, { 'Content-Type': 'text/plain', 'WWW-Authenticate': 'Bearer realm="metrics"' })
        .end('GET /metrics needs Authorization: Bearer <METRICS_TOKEN>.\n')
    } else {
      metrics.serve(req, res)
    }
  })
  server.listen(config.metricsPort, host)
  await Promise.race([
    once(server, 'listening'),
    once(server, 'error').then(([error]) => {
      throw new Error(`cannot listen for metrics on ${host}:${config.metricsPort}: ${(error as Error).message}`)
    }),
  ])
  return server
}
