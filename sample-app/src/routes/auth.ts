import { setTimeout as sleep } from 'node:timers/promises'
import { type Request, type Response, Router } from 'express'
import { ipKeyGenerator, rateLimit, type SessionMiddleware } from 'express-redis-kit'
import { z } from 'zod'
import type { Config } from '../config.js'
import { checkSession } from '../credentials.js'
import { HttpError } from '../errors.js'
import type { PrismaClient } from '../generated/prisma/client.js'
import { body, email, givenPassword, requireUser, tooMany } from '../http.js'
import { hashPassword, needsRehash, verifyAgainstDummy, verifyPassword } from '../passwords.js'
import type { Redis } from '../services.js'

const Login = z.object({ email, password: givenPassword }).strict()

/** The window of the login limits, and how long a lockout lasts. */
const LOGIN_WINDOW = '15m'
const LOGIN_LOCKOUT = '15m'

/** The validated body of POST /login (the email normalized: trimmed, lowercase). */
const loginOf = (req: Request) => req.body as z.infer<typeof Login>

/** The client IP as the per-IP limit counts it (rateLimit's default key: IPv6 grouped by /56). */
function clientIp(req: Request): string {
  const ip = req.ip ?? req.socket.remoteAddress
  if (!ip) throw new Error('POST /login: the client IP is unknown')
  return ipKeyGenerator(ip)
}

/** POST /login, POST /logout, POST /logout-everywhere, GET /me. */
export function authRoutes(deps: {
  config: Config
  prisma: PrismaClient
  redis: Redis
  sessions: SessionMiddleware
  cachePrefix: string
  logger: Pick<Console, 'warn' | 'error'>
}): Router {
  const { config, prisma, redis, sessions, logger } = deps
  const router = Router()

  // Login protection (README, "Login protection"). Only wrong passwords (401, the answer of a
  // checked password) count: successes are given back, and a 429 of a later limit, a 503 or a 400
  // counts against nothing. The first two limits lock out (429 for 15 min); with Redis down they
  // answer 503 rather than let guesses through. The third only slows an account down, never
  // refuses it: its owner must always be able to sign in from an IP that has not failed.
  const prefix = `${config.redisPrefix}rl:`
  const failures = {
    client: redis,
    windowMs: LOGIN_WINDOW,
    skipSuccessfulRequests: true,
    requestWasSuccessful: (_req: Request, res: Response) => res.statusCode !== 401,
    logger,
  } as const
  // sliding-log: the counts are exact, so the bounds in the README hold exactly
  const lockout = {
    ...failures,
    algorithm: 'sliding-log',
    blockDuration: LOGIN_LOCKOUT,
    onRedisError: 'block',
    handler: tooMany,
  } as const
  const slowedDown = new WeakSet<Request>()
  router.post(
    '/login',
    body(Login),
    // 1. credential stuffing: one client IP failing across many emails
    rateLimit({
      ...lockout,
      limit: config.loginFailuresPerIp,
      prefix: `${prefix}login-ip:`,
      identifier: 'login-ip',
    }),
    // 2. guessing one account's password from one IP: locks that (email, IP) pair out, not the account
    rateLimit({
      ...lockout,
      limit: config.loginFailuresPerAccountAndIp,
      prefix: `${prefix}login-account-ip:`,
      identifier: 'login-account-ip',
      keyGenerator: (req) => JSON.stringify([clientIp(req), loginOf(req).email]),
    }),
    // 3. one account guessed from many IPs: over the limit, each attempt waits before its password
    // is checked. Shadow mode never refuses; headers off (they would tell anyone how many
    // failures an account has); its own property, so that req.rateLimit stays the lockouts'.
    rateLimit({
      ...failures,
      mode: 'shadow',
      limit: config.loginFailuresPerAccount,
      prefix: `${prefix}login-account:`,
      keyGenerator: (req) => loginOf(req).email,
      requestPropertyName: 'loginAccountLimit',
      standardHeaders: false,
      onRedisError: 'allow',
      // called for a request over the limit (remaining 0 is also the last one within it)
      onLimit: (req) => void slowedDown.add(req),
    }),
    async (req, _res, next) => {
      if (slowedDown.has(req) && config.loginSlowdownMs > 0) await sleep(config.loginSlowdownMs)
      next()
    },
    async (req, res) => {
      const { email, password } = loginOf(req)
      const user = await prisma.user.findUnique({ where: { email } })
      const valid = user ? await verifyPassword(password, user.passwordHash) : await verifyAgainstDummy(password)
      if (!user || !valid) throw new HttpError(401, 'invalid_credentials', 'Wrong email or password.')
      await req.session.regenerate() // a new session id at sign-in: no session fixation
      req.session.userId = user.id
      // a later password or email change raises the user's version: this session is refused from then on
      req.session.credentialVersion = user.credentialVersion
      if (needsRehash(user.passwordHash)) await rehash(user.id, password, user.passwordHash)
      res.json({ id: user.id, email: user.email, name: user.name })
    },
  )

  /**
   * Replaces a hash of an older scheme (scrypt) or weaker parameters with an Argon2id one, once the
   * password was verified: the same password, so the credential version stays. Only if the hash is
   * still the one verified (a password change meanwhile wins); updatedAt kept. Failing only logs.
   */
  async function rehash(id: number, password: string, verified: string): Promise<void> {
    try {
      const passwordHash = await hashPassword(password)
      await prisma.$executeRaw`UPDATE "User" SET "passwordHash" = ${passwordHash} WHERE "id" = ${id} AND "passwordHash" = ${verified}`
    } catch (error) {
      logger.warn(`login: rehashing the password of user ${id} failed; it is kept as it was`, error)
    }
  }

  router.post('/logout', async (req, res) => {
    await req.session.destroy()
    res.status(204).end()
  })

  router.post('/logout-everywhere', async (req, res) => {
    const id = await requireUser(req)
    const ended = await sessions.destroyUserSessions(id)
    await req.session.destroy()
    res.json({ sessionsEnded: ended })
  })

  router.get('/me', async (req, res) => {
    // the seed's get_user: the record requireUser checked the session against, read through the
    // cache in front of the database (every write to the user invalidates its tag, see users.ts)
    const { credentialVersion: _, ...user } = await checkSession(req, await requireUser(req))
    res.set('Cache-Control', 'private, no-store').json(user)
  })

  return router
}
