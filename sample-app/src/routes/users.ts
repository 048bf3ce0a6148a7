import { setTimeout as sleep } from 'node:timers/promises'
import { type Request, type RequestHandler, Router } from 'express'
import { cacheResponse, invalidateTags, rateLimit, type SessionMiddleware } from 'express-redis-kit'
import { z } from 'zod'
import type { Config } from '../config.js'
import { userTag } from '../credentials.js'
import { HttpError } from '../errors.js'
import type { UserEventName } from '../events.js'
import type { Prisma, PrismaClient } from '../generated/prisma/client.js'
import {
  body,
  email,
  givenPassword,
  name,
  ownUser,
  password,
  publicUser,
  requireUser,
  tooMany,
  uniqueEmail,
  userId,
} from '../http.js'
import { outboxJob } from '../jobs/index.js'
import { writeOutbox } from '../outbox.js'
import { hashPassword, verifyPassword } from '../passwords.js'
import type { Redis } from '../services.js'

const SignUp = z.object({ email, name, password }).strict()
const UserChanges = z
  .object({ email, name, password, currentPassword: givenPassword })
  .partial()
  .strict()
  .refine(
    (changes) => Object.keys(changes).some((key) => key !== 'currentPassword'),
    'give at least one of email, name, password',
  )
/** DELETE /users/:id's body: the current password (a missing one is answered current_password_required). */
const AccountDeletion = z.object({ currentPassword: givenPassword }).partial().strict()
const ListQuery = z
  .object({
    limit: z.coerce.number().int().min(1).max(100).default(20),
    after: z.coerce.number().int().min(0).max(2_147_483_647).default(0),
  })
  .strict()

/**
 * The only user a request may change or delete: the signed-in user themself. 401 signed out, 403
 * for another user's id, before the body is read or any password checked (so that such a request
 * never counts as a wrong current password of the caller).
 */
const ownAccountOnly: RequestHandler = async (req, _res, next) => {
  const id = userId(req)
  if ((await requireUser(req)) !== id) throw new HttpError(403, 'forbidden', 'You can only change your own account.')
  next()
}

/** A DELETE may come without a body: read as `{}`, so that the missing password is named (400 current_password_required). */
const bodyOrEmpty: RequestHandler = (req, _res, next) => {
  req.body ??= {}
  next()
}

const currentPasswordRequired = (what: string) =>
  new HttpError(400, 'current_password_required', `${what} needs the current password (currentPassword).`)

/** The answer for a user id with no account (GET /users/:id, and a change to an account deleted meanwhile). */
const noSuchUser = (id: number) => new HttpError(404, 'user_not_found', `There is no user ${id}.`)

/** The window of the wrong-current-password limit, and how long its lockout lasts (as for login). */
const PASSWORD_CHECK_WINDOW = '15m'

/**
 * POST /users, GET /users (a cached response, tag `users`), GET /users/:id (a cached response,
 * 404s too, tag `user:<id>`), PATCH and DELETE /users/:id. Every write invalidates the tags it
 * affects, on every instance: the list, and the user's tag, which both the user's page and
 * the record GET /me reads through cached() carry (a sign-up's drops a 404 cached while its id
 * was probed). With Redis failing the invalidation waits in the outbox. Each write also
 * writes its user event to the outbox in the same transaction as the change: the outbox
 * relay publishes it (src/outbox.ts).
 */
export function userRoutes(deps: {
  config: Config
  prisma: PrismaClient
  redis: Redis
  sessions: SessionMiddleware
  cachePrefix: string
  logger: Pick<Console, 'warn' | 'error'>
}): Router {
  const { config, prisma, redis, sessions, cachePrefix, logger } = deps
  const router = Router()

  /**
   * A write found no row to change (Prisma's P2025: it names the id, and for a credential change
   * the password hash just checked): 404 when the account is gone (deleted meanwhile), 409 when
   * it is there but changed (its password changed meanwhile). Any other error as it is.
   */
  async function changedMeanwhile(error: unknown, id: number): Promise<unknown> {
    if ((error as { code?: string }).code !== 'P2025') return error
    const exists = await prisma.user.findUnique({ where: { id }, select: { id: true } })
    return exists ? new HttpError(409, 'conflict', 'The account changed meanwhile; try again.') : noSuchUser(id)
  }

  /** In the change's transaction: its user event, which the outbox relay publishes once the change commits. */
  async function recordEvent(tx: Prisma.TransactionClient, event: UserEventName, id: number): Promise<void> {
    await writeOutbox(tx, [{ kind: 'event', name: event, payload: { id } }])
  }

  /**
   * After the commit: drops the cached copies everywhere. With Redis failing it writes the invalidation to the
   * outbox instead, and the relay makes it once Redis is back (copies cached before stay until then).
   */
  async function invalidate(id: number): Promise<void> {
    const tags = ['users', userTag(id)]
    try {
      await invalidateTags(redis, tags, { prefix: cachePrefix })
    } catch (error) {
      logger.warn(`cache: invalidating user ${id} failed; the outbox makes it once Redis is back`, error)
      await writeOutbox(prisma, [{ kind: 'cache', name: 'invalidate', payload: { tags } }]).catch((error: unknown) =>
        logger.warn(
          `cache: the outbox could not take user ${id}'s invalidation; cached copies expire with their ttl`,
          error,
        ),
      )
    }
  }

  // The page's user id is read (400 for a malformed one) before the cache, which needs it for the key and
  // again for the tags once the response is complete: a 404 is answered by the app's error handler, after
  // the route's params are gone.
  const pageIds = new WeakMap<Request, number>()
  const pageId = (req: Request): number => {
    const id = pageIds.get(req)
    if (id === undefined) throw new Error('userPage: the page id was not read')
    return id
  }

  // One user's public page, cached under the user's id, not its URL: /users/7/, /Users/7,
  // /users/7?x=1 under any Host reach the same handler (Express routes paths case-insensitively,
  // with or without a trailing slash) and get the same answer, so they share one entry, and no
  // copy under another spelling outlives a change. It carries the user's tag: invalidate() below,
  // the outbox's relay of it when Redis failed, and the account clean-up job all drop it. Its
  // writes go through it too and drop it at once (RFC 9111 4.4). With LOCAL_CACHE (the default) a
  // fresh page is served from this instance's memory, no Redis command, and dropped on every
  // instance within fenceMs of its invalidation anywhere.
  const pageCache = cacheResponse({
    client: redis,
    prefix: cachePrefix,
    ttl: '5m',
    statuses: [200, 404],
    key: (req) => `user-page:${pageId(req)}`,
    tags: (req) => [userTag(pageId(req))],
    localCache: config.localCache,
    logger,
  })
  const userPage: RequestHandler = (req, res, next) => {
    pageIds.set(req, userId(req))
    return pageCache(req, res, next)
  }

  // Sign-ups per client IP (each costs an Argon2id hash, and makes an account): every attempt counts.
  // With Redis failing, each instance goes on counting in its own memory ('local'): still bounded.
  // sliding-log: the count is exact, and a refused client is told to come back when its oldest
  // attempt leaves the hour, never later (the default sliding-window estimate may say up to two hours).
  const signUps = rateLimit({
    client: redis,
    limit: config.signupRateLimit,
    windowMs: '1h',
    algorithm: 'sliding-log',
    prefix: `${config.redisPrefix}rl:signup:`,
    identifier: 'signup',
    onRedisError: 'local',
    handler: tooMany,
    logger,
  })

  router.post('/users', signUps, body(SignUp), async (req, res) => {
    const { email, name, password } = req.body as z.infer<typeof SignUp>
    const passwordHash = await hashPassword(password)
    const user = await prisma
      .$transaction(async (tx) => {
        const created = await tx.user.create({ data: { email, name, passwordHash }, select: ownUser })
        await recordEvent(tx, 'user.created', created.id)
        // its welcome mail: a job (src/jobs/) the relay enqueues, its id from this row's (unique per sign-up)
        await writeOutbox(tx, [
          outboxJob('welcome-email', { userId: created.id, email: created.email, name: created.name }),
        ])
        return created
      })
      .catch(uniqueEmail)
    // drops a "no such user" page cached for this id before it existed (and the list)
    await invalidate(user.id)
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
    if (!user) throw noSuchUser(id)
    res.json(user)
  })

  // Wrong current passwords (403) per user, as login counts wrong passwords per account and IP:
  // over the limit the account's credential changes are refused for 15 minutes, so that a stolen
  // session cannot guess the password through PATCH.
  const wrongPasswords = new WeakSet<Request>()
  /** 403 wrong_password, counted by passwordChecks, unless `given` is the password of `stored`. */
  async function checkCurrentPassword(req: Request, given: string, stored: string): Promise<void> {
    if (await verifyPassword(given, stored)) return
    wrongPasswords.add(req)
    throw new HttpError(403, 'wrong_password', 'The current password is wrong.')
  }
  const passwordChecks = rateLimit({
    client: redis,
    limit: config.loginFailuresPerAccountAndIp,
    windowMs: PASSWORD_CHECK_WINDOW,
    algorithm: 'sliding-log',
    blockDuration: PASSWORD_CHECK_WINDOW,
    prefix: `${config.redisPrefix}rl:current-password:`,
    identifier: 'current-password',
    keyGenerator: (req) => `user:${req.session.userId}`,
    skip: (req) =>
      typeof req.session.userId !== 'number' ||
      (req.body as { currentPassword?: string }).currentPassword === undefined,
    // only a wrong current password counts: not a 403 for another user's id, nor a 409 or a 503
    skipSuccessfulRequests: true,
    requestWasSuccessful: (req) => !wrongPasswords.has(req),
    onRedisError: 'block',
    handler: tooMany,
    logger,
  })

  router.patch('/users/:id', userPage, ownAccountOnly, body(UserChanges), passwordChecks, async (req, res) => {
    const id = userId(req)
    const { currentPassword, password, ...changes } = req.body as z.infer<typeof UserChanges>
    // email and password are the credentials: changing either needs the current password
    const credentials = password !== undefined || changes.email !== undefined
    const stored = credentials
      ? await prisma.user.findUnique({ where: { id }, select: { email: true, passwordHash: true } })
      : null
    if (credentials && !stored) throw noSuchUser(id) // deleted since the session was checked
    if (!stored || (password === undefined && changes.email === stored.email)) {
      const user = await prisma
        .$transaction(async (tx) => {
          const updated = await tx.user.update({ where: { id }, data: changes, select: ownUser })
          await recordEvent(tx, 'user.updated', id)
          return updated
        })
        .catch(async (error: unknown) => uniqueEmail(await changedMeanwhile(error, id)))
      await invalidate(id)
      res.json(user)
      return
    }
    if (currentPassword === undefined) throw currentPasswordRequired('Changing the email or the password')
    await checkCurrentPassword(req, currentPassword, stored.passwordHash)
    const passwordHash = password === undefined ? undefined : await hashPassword(password)
    const version = req.session.credentialVersion
    const { credentialVersion: _, ...user } = await prisma
      .$transaction(async (tx) => {
        // The same UPDATE raises the credential version: from its commit on, every session signed in
        // before is refused (credentials.ts), whatever happens to Redis afterwards.
        const updated = await tx.user.update({
          where: { id, passwordHash: stored.passwordHash }, // the hash just checked: a change meanwhile fails
          data: { ...changes, ...(passwordHash && { passwordHash }), credentialVersion: { increment: 1 } },
          select: { ...ownUser, credentialVersion: true },
        })
        await recordEvent(tx, 'user.updated', id)
        // a new email: a notice to the old address and one to the new, a job each
        if (updated.email !== stored.email) {
          const notice = (to: string) =>
            outboxJob('email-change-notice', { userId: id, to, oldEmail: stored.email, newEmail: updated.email })
          await writeOutbox(tx, [notice(stored.email), notice(updated.email)])
        }
        // Before the commit, the row locked: no cached copy of the old version outlives the change
        // (the check's loader waits for the row). Redis failing here rolls everything back (503).
        await invalidateTags(redis, [userTag(id)], { prefix: cachePrefix })
        const invalidatedAt = Date.now()
        // this session stays signed in: it carries the new version
        req.session.credentialVersion = updated.credentialVersion
        await req.session.save()
        // Local copies of the record (LOCAL_CACHE) may be served up to fenceMs after the invalidation:
        // the commit waits that long, so that from the commit on no instance has the old version.
        const fenced = config.localCache ? invalidatedAt + config.localCache.fenceMs - Date.now() : 0
        if (fenced > 0) await sleep(fenced)
        return updated
      })
      .catch(async (error: unknown) => {
        if (version === undefined) delete req.session.credentialVersion
        else req.session.credentialVersion = version
        return uniqueEmail(await changedMeanwhile(error, id))
      })
    // Ends the other sessions now; if Redis fails here, they are refused all the same.
    await sessions
      .destroyUserSessions(id, { except: req.session.handle })
      .catch((error: unknown) =>
        logger.warn(`sessions: ending the other sessions of user ${id} failed; they are refused anyway`, error),
      )
    await invalidate(id)
    res.json(user)
  })

  // Deleting the account needs the current password too: a stolen session alone cannot destroy it.
  router.delete(
    '/users/:id',
    userPage,
    ownAccountOnly,
    bodyOrEmpty,
    body(AccountDeletion),
    passwordChecks,
    async (req, res) => {
      const id = userId(req)
      const { currentPassword } = req.body as z.infer<typeof AccountDeletion>
      if (currentPassword === undefined) throw currentPasswordRequired('Deleting the account')
      const stored = await prisma.user.findUnique({ where: { id }, select: { passwordHash: true } })
      if (!stored) throw noSuchUser(id) // deleted since the session was checked
      await checkCurrentPassword(req, currentPassword, stored.passwordHash)
      await prisma
        .$transaction(async (tx) => {
          // the hash just checked: a password change meanwhile fails it
          await tx.user.delete({ where: { id, passwordHash: stored.passwordHash } })
          await recordEvent(tx, 'user.deleted', id)
          // ends its sessions and drops its cached copies again, retried, whatever fails below
          await writeOutbox(tx, [outboxJob('account-cleanup', { userId: id })])
        })
        .catch(async (error: unknown) => {
          throw await changedMeanwhile(error, id)
        })
      await sessions.destroyUserSessions(id)
      await req.session.destroy()
      await invalidate(id)
      res.status(204).end()
    },
  )

  return router
}
