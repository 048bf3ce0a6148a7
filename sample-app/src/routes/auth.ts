import { Router } from 'express'
import { cached, rateLimit, type SessionMiddleware } from 'express-redis-kit'
import { z } from 'zod'
import type { Config } from '../config.js'
import { HttpError, unauthorized } from '../errors.js'
import type { PrismaClient } from '../generated/prisma/client.js'
import { body, email, ownUser, requireUser, tooMany } from '../http.js'
import { verifyAgainstDummy, verifyPassword } from '../passwords.js'
import type { Redis } from '../services.js'

const Login = z.object({ email, password: z.string().min(1).max(200) }).strict()

/** POST /login, POST /logout, POST /logout-everywhere, GET /me. */
export function authRoutes(deps: {
  config: Config
  prisma: PrismaClient
  redis: Redis
  sessions: SessionMiddleware
  cachePrefix: string
  logger: Pick<Console, 'warn' | 'error'>
}): Router {
  const { config, prisma, redis, sessions, cachePrefix, logger } = deps
  const router = Router()

  // Login limits protect against password guessing: with Redis down they answer 503 rather than let guesses through.
  const loginLimit = { client: redis, windowMs: '15m', onRedisError: 'block', handler: tooMany, logger } as const
  router.post(
    '/login',
    body(Login),
    rateLimit({ ...loginLimit, limit: config.loginRateLimitPerIp, prefix: `${config.redisPrefix}rl:login-ip:` }),
    rateLimit({
      ...loginLimit,
      limit: config.loginRateLimitPerEmail,
      prefix: `${config.redisPrefix}rl:login-email:`,
      keyGenerator: (req) => (req.body as z.infer<typeof Login>).email,
      // only failed attempts count against an email: its owner signing in is never locked out by their own logins
      skipSuccessfulRequests: true,
    }),
    async (req, res) => {
      const { email, password } = req.body as z.infer<typeof Login>
      const user = await prisma.user.findUnique({ where: { email } })
      const valid = user ? await verifyPassword(password, user.passwordHash) : await verifyAgainstDummy(password)
      if (!user || !valid) throw new HttpError(401, 'invalid_credentials', 'Wrong email or password.')
      await req.session.regenerate() // a new session id at sign-in: no session fixation
      req.session.userId = user.id
      res.json({ id: user.id, email: user.email, name: user.name })
    },
  )

  router.post('/logout', async (req, res) => {
    await req.session.destroy()
    res.status(204).end()
  })

  router.post('/logout-everywhere', async (req, res) => {
    const id = requireUser(req)
    const ended = await sessions.destroyUserSessions(id)
    await req.session.destroy()
    res.json({ sessionsEnded: ended })
  })

  router.get('/me', async (req, res) => {
    const id = requireUser(req)
    // the seed's get_user: a read-through cache in front of the database (every write to the
    // user invalidates the tag, see users.ts)
    const user = await cached(
      redis,
      `user:${id}`,
      { prefix: cachePrefix, ttl: '5m', tags: [`user:${id}`], logger },
      () => prisma.user.findUnique({ where: { id }, select: ownUser }),
    )
    if (!user) {
      await req.session.destroy()
      throw unauthorized()
    }
    res.set('Cache-Control', 'private, no-store').json(user)
  })

  return router
}
