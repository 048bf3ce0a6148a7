import express from 'express'
import { type Notifier, rateLimit, session } from 'express-redis-kit'
import type { Config } from './config.js'
import { accountCheck } from './credentials.js'
import { csrfProtection } from './csrf.js'
import { errorHandler, notFound } from './errors.js'
import type { EventStream } from './events.js'
import type { PrismaClient } from './generated/prisma/client.js'
import { tooMany } from './http.js'
import { authRoutes } from './routes/auth.js'
import { sessionRoutes } from './routes/sessions.js'
import { systemRoutes } from './routes/system.js'
import { uiRoutes } from './routes/ui.js'
import { userRoutes } from './routes/users.js'
import { securityHeaders } from './security-headers.js'
import type { Redis } from './services.js'
import { trustProxyWarning } from './trust-proxy.js'

/** What the app needs from outside; the server builds them from the configuration, tests inject their own. */
export interface AppDependencies {
  config: Config
  prisma: PrismaClient
  /** A node-redis client or cluster client (src/redis.ts) created with `disableOfflineQueue: true`, connected or connecting. */
  redis: Redis
  notifier: Notifier
  events: EventStream
  logger?: Pick<Console, 'warn' | 'error'>
}

/** Creates the Express app (without listening). */
export function createApp(deps: AppDependencies): express.Express {
  const { config, prisma, redis, events, logger = console } = deps
  const prefix = config.redisPrefix
  const app = express()
  app.disable('x-powered-by')
  app.set('trust proxy', config.trustProxy)
  const proxyWarning = trustProxyWarning(config.trustProxy)
  if (proxyWarning) logger.warn(proxyWarning)
  // helmet's headers (one CSP, nosniff, no framing...) on every response, errors and 429s included
  app.use(securityHeaders())

  // A general limit on every route; it lets requests through when Redis is down (availability first)
  app.use(
    rateLimit({
      client: redis,
      limit: config.apiRateLimit,
      windowMs: '1m',
      prefix: `${prefix}rl:api:`,
      onRedisError: 'allow',
      handler: tooMany,
      logger,
    }),
  )
  // unsafe methods from another site (Sec-Fetch-Site, else Origin): 403 before the body or the session is read
  app.use(csrfProtection())
  app.use(express.json({ limit: '10kb' }))
  const sessions = session({
    client: redis,
    // The session signs and checks its own cookie (the first secret signs, all verify)
    secrets: config.sessionSecrets,
    prefix: `${prefix}sess:`,
    userKey: 'userId',
    idleTimeout: '1d',
    absoluteTimeout: '7d',
    // Redis down: requests go on signed out (reads keep working); routes that need a user answer 503 (requireUser)
    onRedisError: 'anonymous',
    // stored with each session when it is created: GET /sessions shows it ("which device")
    meta: (req) => ({ agent: req.get('user-agent')?.slice(0, 200) ?? '' }),
    logger,
  })
  app.use(sessions)
  const cachePrefix = `${prefix}cache:`
  // lets requireUser() refuse a session from before its user's last password or email change
  // (credentials.ts); reads nothing until a route asks for the user
  app.use(accountCheck({ prisma, redis, cachePrefix, logger }))

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
