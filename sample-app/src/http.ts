import type { NextFunction, Request, RequestHandler, Response } from 'express'
import type { RateLimitInfo } from 'express-redis-kit'
import { z } from 'zod'
import { checkSession } from './credentials.js'
import { HttpError, unauthorized } from './errors.js'

declare module 'express-redis-kit' {
  interface SessionData {
    userId: number
    /** The user's credentialVersion when this session signed in (credentials.ts). */
    credentialVersion: number
  }
}

/** Fields anyone may see. */
export const publicUser = { id: true, name: true, createdAt: true } as const
/** Fields the user sees about themself. */
export const ownUser = { id: true, email: true, name: true, createdAt: true, updatedAt: true } as const

export const email = z
  .string()
  .trim()
  .toLowerCase()
  .pipe(z.email({ message: 'must be an email address' }).max(254))
export const name = z.string().trim().min(1, 'must not be empty').max(100)
export const password = z.string().min(8, 'must be at least 8 characters').max(200)

/** Validates the JSON body against `schema` and replaces it with the parsed value. */
export function body(schema: z.ZodType): RequestHandler {
  return (req, _res, next) => {
    if (req.body === undefined) {
      throw new HttpError(415, 'unsupported_media_type', 'Send a JSON body with Content-Type: application/json.')
    }
    req.body = schema.parse(req.body)
    next()
  }
}

/** A user id in a path: 1 to 2147483647 (PostgreSQL's integer), digits only. */
export function userId(req: Request): number {
  const text = String(req.params.id)
  const id = Number(text)
  if (!/^[1-9]\d{0,9}$/.test(text) || id > 2_147_483_647) {
    throw new HttpError(400, 'invalid_id', `User ids are positive integers; got ${JSON.stringify(text.slice(0, 20))}.`)
  }
  return id
}

/**
 * The signed-in user's id; 401 when signed out or when the session predates its user's last password
 * or email change (it is then ended: credentials.ts), 503 when the session could not be loaded (Redis failing).
 */
export async function requireUser(req: Request): Promise<number> {
  const id = req.session.userId
  if (typeof id === 'number') return (await checkSession(req, id)).id
  if (req.session.storeUnavailable) {
    throw new HttpError(503, 'service_unavailable', 'Sessions are unavailable; try again shortly.')
  }
  throw unauthorized()
}

/** Prisma's unique-constraint error on `email` becomes a 409. */
export function uniqueEmail(error: unknown): never {
  if ((error as { code?: string }).code === 'P2002') {
    throw new HttpError(409, 'email_taken', 'An account with this email already exists.')
  }
  throw error
}

/** The rate limiters' answer: a 429 in the app's error shape (their RateLimit and Retry-After headers are set). */
export function tooMany(_req: Request, _res: Response, next: NextFunction, info: RateLimitInfo): void {
  const seconds = Math.max(1, Math.ceil((info.resetTime.getTime() - Date.now()) / 1000))
  next(new HttpError(429, 'rate_limited', `Too many requests; try again in ${seconds} s.`))
}
