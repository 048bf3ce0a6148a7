import { type Request, Router } from 'express'
import { cacheResponse, invalidateTags, type Notifier, type SessionMiddleware } from 'express-redis-kit'
import { z } from 'zod'
import { HttpError } from '../errors.js'
import type { UserEventName } from '../events.js'
import type { PrismaClient } from '../generated/prisma/client.js'
import { body, email, name, ownUser, password, publicUser, requireUser, uniqueEmail, userId } from '../http.js'
import { hashPassword } from '../passwords.js'
import type { Redis } from '../services.js'

const SignUp = z.object({ email, name, password }).strict()
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

/** The only user a request may change: the signed-in user themself. */
function ownAccount(req: Request): number {
  const id = userId(req)
  if (requireUser(req) !== id) throw new HttpError(403, 'forbidden', 'You can only change your own account.')
  return id
}

/**
 * POST /users, GET /users (a cached response, tag `users`), GET /users/:id (a cached response,
 * 404s too), PATCH and DELETE /users/:id. The writes to a user go through the same response
 * cache as its page: a successful PATCH or DELETE invalidates `/users/:id`, and a sign-up
 * the `/users/:id` of its `Location` (a 404 cached while the id was probed), on every
 * instance, with no code here. Every write also invalidates the tags it affects (the list,
 * and the user's record that GET /me reads through cached()) and publishes a user event.
 */
export function userRoutes(deps: {
  prisma: PrismaClient
  redis: Redis
  notifier: Notifier
  sessions: SessionMiddleware
  cachePrefix: string
  logger: Pick<Console, 'warn' | 'error'>
}): Router {
  const { prisma, redis, notifier, sessions, cachePrefix, logger } = deps
  const router = Router()

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

  // One user's public page: its writes below go through it too, and invalidate it (RFC 9111 4.4).
  const userPage = cacheResponse({ client: redis, prefix: cachePrefix, ttl: '5m', statuses: [200, 404], logger })

  router.post('/users', userPage, body(SignUp), async (req, res) => {
    const { email, name, password } = req.body as z.infer<typeof SignUp>
    const passwordHash = await hashPassword(password)
    const user = await prisma.user.create({ data: { email, name, passwordHash }, select: ownUser }).catch(uniqueEmail)
    await announce('user.created', user.id)
    // the Location makes userPage drop a "no such user" cached for this id before it existed
    res.status(201).location(`/users/${user.id}`).json(user)
  })

  router.get(
    '/users',
    cacheResponse({ client: redis, prefix: cachePrefix, ttl: '5m', tags: ['users'], logger }),
    async (req, res) => {
      const { limit, after } = ListQuery.parse(req.query)
      const users = await prisma.user.findMany({
        where: { id: { gt: after } },
        orderBy: { id: 'asc' },
        take: limit,
        select: publicUser,
      })
      const next = users.length === limit ? `/users?after=${users.at(-1)?.id}&limit=${limit}` : null
      res.json({ users, next })
    },
  )

  router.get('/users/:id', userPage, async (req, res) => {
    const id = userId(req)
    const user = await prisma.user.findUnique({ where: { id }, select: publicUser })
    if (!user) throw new HttpError(404, 'user_not_found', `There is no user ${id}.`)
    res.json(user)
  })

  router.patch('/users/:id', userPage, body(UserChanges), async (req, res) => {
    const id = ownAccount(req)
    const { password, ...changes } = req.body as z.infer<typeof UserChanges>
    const data = password === undefined ? changes : { ...changes, passwordHash: await hashPassword(password) }
    const user = await prisma.user.update({ where: { id }, data, select: ownUser }).catch(uniqueEmail)
    // a new password ends the account's other sessions
    if (password !== undefined) await sessions.destroyUserSessions(id, { except: req.session.handle })
    await announce('user.updated', id)
    res.json(user)
  })

  router.delete('/users/:id', userPage, async (req, res) => {
    const id = ownAccount(req)
    await prisma.user.delete({ where: { id } })
    await sessions.destroyUserSessions(id)
    await req.session.destroy()
    await announce('user.deleted', id)
    res.status(204).end()
  })

  return router
}
