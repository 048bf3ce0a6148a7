import cookieParser from 'cookie-parser'
import express, { type NextFunction, type Request, type RequestHandler, type Response } from 'express'
import {
  cached,
  cacheResponse,
  invalidateTags,
  type Notifier,
  type RateLimitInfo,
  type RedisClient,
  rateLimit,
  session,
} from 'express-redis-kit'
import { z } from 'zod'
import type { Config } from './config.js'
import {
  databaseUnavailable,
  errorHandler,
  HttpError,
  isDatabaseUnavailable,
  notFound,
  unauthorized,
} from './errors.js'
import type { EventStream, UserEventName } from './events.js'
import type { PrismaClient } from './generated/prisma/client.js'
import { hashPassword, verifyAgainstDummy, verifyPassword } from './passwords.js'

declare module 'express-redis-kit' {
  interface SessionData {
    userId: number
  }
}

/** What the app needs from outside; the server builds them from the configuration, tests inject their own. */
export interface AppDependencies {
  config: Config
  prisma: PrismaClient
  /** A node-redis client created with `disableOfflineQueue: true`, connected or connecting. */
  redis: RedisClient
  notifier: Notifier
  events: EventStream
  logger?: Pick<Console, 'warn' | 'error'>
}

/** Fields anyone may see. */
const publicUser = { id: true, name: true, createdAt: true } as const
/** Fields the user sees about themself. */
const ownUser = { id: true, email: true, name: true, createdAt: true, updatedAt: true } as const

const email = z
  .string()
  .trim()
  .toLowerCase()
  .pipe(z.email({ message: 'must be an email address' }).max(254))
const name = z.string().trim().min(1, 'must not be empty').max(100)
const password = z.string().min(8, 'must be at least 8 characters').max(200)

const SignUp = z.object({ email, name, password }).strict()
const Login = z.object({ email, password: z.string().min(1).max(200) }).strict()
const UserChanges = z
  .object({ email, name, password })
  .partial()
  .strict()
  .refine((changes) => Object.keys(changes).length > 0, 'give at least one of email, name, password')
const ListQuery = z
  .object({
    limit: z.coerce.number().int().min(1).max(100).default(20),
    after: z.coerce.number().int().min(0).max(2_147_483_647).default(0),
  })
  .strict()

/** A user id in a path: 1 to 2147483647 (PostgreSQL's integer), digits only. */
function userId(req: Request): number {
  const text = String(req.params.id)
  const id = Number(text)
  if (!/^[1-9]\d{0,9}$/.test(text) || id > 2_147_483_647) {
    throw new HttpError(400, 'invalid_id', `User ids are positive integers; got ${JSON.stringify(text.slice(0, 20))}.`)
  }
  return id
}

/** Validates the JSON body against `schema` and replaces it with the parsed value. */
function body(schema: z.ZodType): RequestHandler {
  return (req, _res, next) => {
    if (req.body === undefined) {
      throw new HttpError(415, 'unsupported_media_type', 'Send a JSON body with Content-Type: application/json.')
    }
    req.body = schema.parse(req.body)
    next()
  }
}

/** Creates the Express app (without listening). */
export function createApp(deps: AppDependencies): express.Express {
  const { config, prisma, redis, notifier, events, logger = console } = deps
  const prefix = config.redisPrefix
  const cachePrefix = `${prefix}cache:`
  const app = express()
  app.disable('x-powered-by')
  app.set('trust proxy', config.trustProxy)

  const tooMany = (_req: Request, _res: Response, next: NextFunction, info: RateLimitInfo) => {
    const seconds = Math.max(1, Math.ceil((info.resetTime.getTime() - Date.now()) / 1000))
    next(new HttpError(429, 'rate_limited', `Too many requests; try again in ${seconds} s.`))
  }
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
  app.use(express.json({ limit: '10kb' }))
  app.use(cookieParser(config.sessionSecrets))
  const sessions = session({
    client: redis,
    prefix: `${prefix}sess:`,
    userKey: 'userId',
    idleTimeout: '1d',
    absoluteTimeout: '7d',
    // Redis down: requests go on signed out (reads keep working); routes that need a user answer 503, see requireUser
    onRedisError: 'anonymous',
    logger,
  })
  app.use(sessions)

  /** The signed-in user's id; 401 when signed out, 503 when the session could not be loaded (Redis failing). */
  function requireUser(req: Request): number {
    const id = req.session.userId
    if (typeof id === 'number') return id
    if (req.session.storeUnavailable) {
      throw new HttpError(503, 'service_unavailable', 'Sessions are unavailable; try again shortly.')
    }
    throw unauthorized()
  }

  /** Runs a database call; a database that cannot be reached becomes a 503. */
  async function db<T>(query: Promise<T>): Promise<T> {
    try {
      return await query
    } catch (error) {
      if (isDatabaseUnavailable(error)) throw databaseUnavailable(error)
      throw error
    }
  }

  /** After a write: drop the cached copies everywhere, tell every instance. Redis failing here only logs. */
  async function announce(event: UserEventName, id: number): Promise<void> {
    await Promise.all([
      invalidateTags(redis, ['users', `user:${id}`], { prefix: cachePrefix }).catch((error: unknown) =>
        logger.warn(`cache: invalidating user ${id} failed; cached copies expire with their ttl`, error),
      ),
      notifier
        .publish(event, { id })
        .catch((error: unknown) => logger.warn(`events: publishing ${event} failed`, error)),
    ])
  }

  const uniqueEmail = (error: unknown): never => {
    if ((error as { code?: string }).code === 'P2002') {
      throw new HttpError(409, 'email_taken', 'An account with this email already exists.')
    }
    throw error
  }

  app.get('/healthz', async (_req, res) => {
    const within = <T>(promise: Promise<T>, ms: number) =>
      Promise.race([promise, new Promise<never>((_, reject) => setTimeout(() => reject(new Error('timeout')), ms))])
    const [redisUp, databaseUp] = await Promise.all([
      redis.isReady
        ? within(redis.ping(), 500).then(
            () => true,
            () => false,
          )
        : false,
      within(prisma.$queryRaw`SELECT 1`, 2000).then(
        () => true,
        () => false,
      ),
    ])
    const status = !databaseUp ? 'down' : redisUp ? 'ok' : 'degraded'
    res
      .status(databaseUp ? 200 : 503)
      .set('Cache-Control', 'no-store')
      .json({ status, redis: redisUp ? 'up' : 'down', database: databaseUp ? 'up' : 'down' })
  })

  app.post('/users', body(SignUp), async (req, res) => {
    const { email, name, password } = req.body as z.infer<typeof SignUp>
    const passwordHash = await hashPassword(password)
    const user = await db(prisma.user.create({ data: { email, name, passwordHash }, select: ownUser })).catch(
      uniqueEmail,
    )
    await announce('user.created', user.id)
    res.status(201).location(`/users/${user.id}`).json(user)
  })

  const loginLimit = { client: redis, windowMs: '15m', onRedisError: 'block', handler: tooMany, logger } as const
  app.post(
    '/login',
    body(Login),
    rateLimit({ ...loginLimit, limit: config.loginRateLimitPerIp, prefix: `${prefix}rl:login-ip:` }),
    rateLimit({
      ...loginLimit,
      limit: config.loginRateLimitPerEmail,
      prefix: `${prefix}rl:login-email:`,
      keyGenerator: (req) => (req.body as z.infer<typeof Login>).email,
      // only failed attempts count against an email: its owner signing in is never locked out by their own logins
      skipSuccessfulRequests: true,
    }),
    async (req, res) => {
      const { email, password } = req.body as z.infer<typeof Login>
      const user = await db(prisma.user.findUnique({ where: { email } }))
      const valid = user ? await verifyPassword(password, user.passwordHash) : await verifyAgainstDummy(password)
      if (!user || !valid) throw new HttpError(401, 'invalid_credentials', 'Wrong email or password.')
      await req.session.regenerate() // a new session id at sign-in: no session fixation
      req.session.userId = user.id
      res.json({ id: user.id, email: user.email, name: user.name })
    },
  )

  app.post('/logout', async (req, res) => {
    await req.session.destroy()
    res.status(204).end()
  })

  app.post('/logout-everywhere', async (req, res) => {
    const id = requireUser(req)
    const ended = await sessions.destroyUserSessions(id)
    await req.session.destroy()
    res.json({ sessionsEnded: ended })
  })

  app.get('/me', async (req, res) => {
    const id = requireUser(req)
    const user = await db(prisma.user.findUnique({ where: { id }, select: ownUser }))
    if (!user) {
      await req.session.destroy()
      throw unauthorized()
    }
    res.set('Cache-Control', 'private, no-store').json(user)
  })

  app.get(
    '/users',
    cacheResponse({ client: redis, prefix: cachePrefix, ttl: '5m', tags: ['users'], logger }),
    async (req, res) => {
      const { limit, after } = ListQuery.parse(req.query)
      const users = await db(
        prisma.user.findMany({ where: { id: { gt: after } }, orderBy: { id: 'asc' }, take: limit, select: publicUser }),
      )
      const next = users.length === limit ? `/users?after=${users.at(-1)?.id}&limit=${limit}` : null
      res.json({ users, next })
    },
  )

  // the seed's get_user: a read-through cache in front of the database
  app.get('/users/:id', async (req, res) => {
    const id = userId(req)
    const user = await cached(
      redis,
      `user:${id}`,
      { prefix: cachePrefix, ttl: '5m', tags: [`user:${id}`], logger },
      () => db(prisma.user.findUnique({ where: { id }, select: publicUser })),
    )
    if (!user) throw new HttpError(404, 'user_not_found', `There is no user ${id}.`)
    res.json(user)
  })

  /** The target user of PATCH / DELETE: only the signed-in user themself. */
  function ownAccount(req: Request): number {
    const id = userId(req)
    if (requireUser(req) !== id) throw new HttpError(403, 'forbidden', 'You can only change your own account.')
    return id
  }

  app.patch('/users/:id', body(UserChanges), async (req, res) => {
    const id = ownAccount(req)
    const { password, ...changes } = req.body as z.infer<typeof UserChanges>
    const data = password === undefined ? changes : { ...changes, passwordHash: await hashPassword(password) }
    const user = await db(prisma.user.update({ where: { id }, data, select: ownUser })).catch(uniqueEmail)
    // a new password ends the account's other sessions
    if (password !== undefined) await sessions.destroyUserSessions(id, { except: req.session.id })
    await announce('user.updated', id)
    res.json(user)
  })

  app.delete('/users/:id', async (req, res) => {
    const id = ownAccount(req)
    await db(prisma.user.delete({ where: { id } }))
    await sessions.destroyUserSessions(id)
    await req.session.destroy()
    await announce('user.deleted', id)
    res.status(204).end()
  })

  app.get('/events', async (req, res) => {
    let timer: NodeJS.Timeout | undefined
    const ready = await Promise.race([
      events.ready().then(() => true),
      new Promise<false>((resolve) => {
        timer = setTimeout(resolve, 2_000, false)
      }),
    ]).finally(() => clearTimeout(timer))
    if (!ready) throw new HttpError(503, 'service_unavailable', 'Live events are unavailable; try again shortly.')
    await events.connect(req, res)
  })

  app.use(notFound)
  app.use(errorHandler(logger))
  return app
}
