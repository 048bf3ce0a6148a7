import type { Request, RequestHandler } from 'express'
import { type CachedOptions, cached } from 'express-redis-kit'
import type { Config } from './config.js'
import { unauthorized } from './errors.js'
import type { PrismaClient } from './generated/prisma/client.js'
import type { Redis } from './services.js'

/**
 * A session is only as good as the credentials it signed in with. Every password or email change
 * raises the user's `credentialVersion` in the same UPDATE (routes/users.ts); sign-in stores the
 * version in the session (routes/auth.ts); requireUser() (http.ts) compares the two on every
 * request that needs a user, and ends a session whose version is not the user's (401). Ending the
 * other sessions in Redis after a change is then only a clean-up: with Redis failing at that
 * moment, they are still refused from the commit on.
 *
 * The check reads the user through the read-through cache (no database query on a hit), under
 * the tag every write to the user invalidates. A change invalidates it before its commit, with the
 * row locked, and the loader reads the row `FOR SHARE` (it waits for a change in progress): no
 * cached copy from before a change can outlive it, even when Redis fails right after the commit.
 * With the local cache (LOCAL_CACHE), an instance may serve its copy up to `fenceMs` after the
 * invalidation: a credential change waits that long before its commit (routes/users.ts).
 */

/** The user's record as the session check and GET /me read it: the own fields and the credential version. */
export interface Account {
  id: number
  email: string
  name: string
  createdAt: Date
  updatedAt: Date
  credentialVersion: number
}

export interface AccountDeps {
  prisma: PrismaClient
  redis: Redis
  /** The prefix of the app's cache keys (the one invalidateTags is given). */
  cachePrefix: string
  /** The app's `localCache` option (config.localCache): the same as GET /users/:id's, one local cache per client. */
  localCache: Config['localCache']
  logger: Pick<Console, 'warn' | 'error'>
}

/** The cache tag of everything read about user `id`: every write to the user invalidates it. */
export const userTag = (id: number) => `user:${id}`

/** The user's record (or null) through the read-through cache; the database when Redis fails. */
export function loadAccount(deps: AccountDeps, id: number): Promise<Account | null> {
  const { prisma, redis, cachePrefix, localCache, logger } = deps
  const options: CachedOptions = { prefix: cachePrefix, ttl: '5m', tags: [userTag(id)], localCache, logger }
  return cached(redis, `account:${id}`, options, async () => {
    const rows = await prisma.$queryRaw<Account[]>`
      SELECT "id", "email", "name", "createdAt", "updatedAt", "credentialVersion"
      FROM "User" WHERE "id" = ${id} FOR SHARE`
    return rows[0] ?? null
  })
}

const depsOf = new WeakMap<Request, AccountDeps>()
const checked = new WeakMap<Request, Promise<Account>>()

/** Mounted after the session middleware: what {@link checkSession} reads the user with (nothing is read until then). */
export function accountCheck(deps: AccountDeps): RequestHandler {
  return (req, _res, next) => {
    depsOf.set(req, deps)
    next()
  }
}

/**
 * The record of the session's user `id` once the session is checked against it (once per
 * request); a user deleted, or a session from before a password or email change, ends the
 * session and answers 401.
 */
export function checkSession(req: Request, id: number): Promise<Account> {
  let result = checked.get(req)
  if (!result) {
    result = check(req, id)
    checked.set(req, result)
  }
  return result
}

async function check(req: Request, id: number): Promise<Account> {
  const deps = depsOf.get(req)
  if (!deps) throw new Error('requireUser: accountCheck() is not mounted after the session middleware')
  const account = await loadAccount(deps, id)
  // sessions signed in before the column existed carry no version: they are at version 0
  if (account && account.credentialVersion === (req.session.credentialVersion ?? 0)) return account
  // refused whether or not it can be ended now: the next request checks it again
  await req.session
    .destroy()
    .catch((error: unknown) => deps.logger.warn(`sessions: ending a stale session of user ${id} failed`, error))
  throw unauthorized()
}
