import express from 'express'
import { type Notifier, rateLimit, session } from 'express-redis-kit'
import type { Config } from './config.js'
import { accountCheck } from './credentials.js'
import { csrfProtection } from './csrf.js'
import { errorHandler, notFound } from './errors.js'
import type { EventStream } from './events.js'
import type { PrismaClient } from './generated/prisma/client.js'
import { tooMany } from './http.js'
import { type AppLogger, consoleStyle, createLogger, type Logger, pinoOf, requestLogging } from './logging.js'
import { type Metrics, metricsRoutes } from './metrics.js'
import { authRoutes } from './routes/auth.js'
import { sessionRoutes } from './routes/sessions.js'
import { systemRoutes } from './routes/system.js'
import { uiRoutes } from './routes/ui.js'
import { userRoutes } from './routes/users.js'
import { securityHeaders } from './security-headers.js'
import type { Redis } from './services.js'
import { type RequestStats, statsRoutes } from './stats.js'
import { trustProxyWarning } from './trust-proxy.js'

/** What the app needs from outside; the server builds them from the configuration, tests inject their own. */
export interface AppDependencies {
  config: Config
  prisma: PrismaClient
  /** A node-redis client or cluster client (src/redis.ts) created with `disableOfflineQueue: true`, connected or connecting. */
  redis: Redis
  notifier: Notifier
  events: EventStream
  /** GET /metrics (services.ts). */
  metrics: Metrics
  /** GET /stats (services.ts). */
  stats: RequestStats
  /**
   * The pino logger of the request logs (logging.ts), and of the kit's middleware when `logger` is not given.
   * @default a new one on standard output at LOG_LEVEL
   */
  log?: Logger
  /**
   * Where the app's own warnings and errors go (and the kit's: a test's recorder).
   * @default `log`, through consoleStyle()
   */
  logger?: AppLogger
}

/** Creates the Express app (without listening). */
export function createApp(deps: AppDependencies): express.Express {
  const { config, prisma, redis, events, metrics, stats } = deps
  const log = deps.log ?? createLogger(config.observability.logLevel)
  const logger = deps.logger ?? consoleStyle(log)
  // the kit's middleware take the pino logger itself (they log `{ err }` and a message, as pino wants)
  const kitLogger = pinoOf(logger)
  const prefix = config.redisPrefix
  const app = express()
  app.disable('x-powered-by')
  app.set('trust proxy', config.trustProxy)
  // first: the request id (X-Request-Id) and one log line per response, 429s and errors included
  app.use(requestLogging(log))
  const proxyWarning = trustProxyWarning(config.trustProxy)
  if (proxyWarning) logger.warn(proxyWarning)
  // helmet's headers (one CSP, nosniff, no framing...) on every response, errors and 429s included
  app.use(securityHeaders())
  // GET /metrics (with METRICS_TOKEN): before the general rate limiter, so that scrapes neither count
  // against the scraper's IP nor show up in its numbers (wrong tokens have a limit of their own); never cached
  app.use(
    metricsRoutes(metrics, config.observability, {
      client: redis,
      prefix: `${prefix}rl:metrics-token:`,
      logger: kitLogger,
    }),
  )

  // A general limit on every route; it lets requests through when Redis is down (availability first)
  app.use(
    rateLimit({
      client: redis,
      limit: config.apiRateLimit,
      windowMs: '1m',
      prefix: `${prefix}rl:api:`,
      onRedisError: 'allow',
      handler: tooMany,
      logger: kitLogger,
    }),
  )
  // unsafe methods from another site (Sec-Fetch-Site, else Origin): 403 before the body or the session is read
  app.use(csrfProtection())
  // GET /stats: numbers only, rate-limited like any public route, before the session (it needs none)
  app.use(statsRoutes(stats))
  app.use(express.json({ limit: '10kb' }))
  const sessions = session({
    client: redis,
    // The session signs and checks its own cookie (the first secret signs, all verify)
    secrets: config.sessionSecrets,
    prefix: `${prefix}sess:`,
    // In production the cookie is always Secure: behind a TLS proxy the app sees plain HTTP, and
    // without TRUST_PROXY ('auto') it would send the cookie Secure-less. Elsewhere, Secure when the
    // request came over HTTPS (so that http://127.0.0.1 works in development).
    cookie: { secure: config.production ? true : 'auto' },
    userKey: 'userId',
    idleTimeout: '1d',
    absoluteTimeout: '7d',
    // Redis down: requests go on signed out (reads keep working); routes that need a user answer 503 (requireUser)
    onRedisError: 'anonymous',
    // stored with each session when it is created: GET /sessions shows it ("which device")
    meta: (req) => ({ agent: req.get('user-agent')?.slice(0, 200) ?? '' }),
    logger: kitLogger,
  })
  app.use(sessions)
  const cachePrefix = `${prefix}cache:`
  // lets requireUser() refuse a session from before its user's last password or email change
  // (credentials.ts); reads nothing until a route asks for the user
  app.use(accountCheck({ prisma, redis, cachePrefix, localCache: config.localCache, logger }))

  app.use(
    systemRoutes({ prisma, redis, events, streamLimits: { perIp: config.sseMaxPerIp, total: config.sseMaxTotal } }),
  )
  app.use(authRoutes({ config, prisma, redis, sessions, cachePrefix, logger }))
  app.use(userRoutes({ config, prisma, redis, sessions, cachePrefix, logger }))
  app.use(sessionRoutes({ sessions }))
  app.use(uiRoutes()) // GET / and the UI's files (sample-app/public)

  app.use(notFound)
  app.use(errorHandler(logger))
  return app
}
