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

/*
 * Text fields. Every one is refused (400 validation_failed naming it) before anything is done
 * with it, an Argon2id hash included, when it holds what would fail later or mislead a reader:
 * - a NUL character: PostgreSQL refuses it in text (22021), after the hash was paid for;
 * - other control characters (C0, DEL, C1: line breaks, tabs, escapes) in what is stored or shown;
 * - a lone surrogate (not Unicode: stored as U+FFFD, so two different inputs would become one);
 * - in a name, bidirectional overrides and isolates (U+202A-U+202E, U+2066-U+2069), which reorder
 *   the text shown around them, and a name of nothing but invisible characters.
 * A password being checked (sign-in, currentPassword) is refused only for a NUL: one set before
 * these rules may hold any other character, and it is never stored or shown.
 */
const CONTROL = /\p{Cc}/u
const LONE_SURROGATE = /\p{Cs}/u
const BIDI_CONTROL = /[\u202a-\u202e\u2066-\u2069]/
/** What shows nothing: white space, default-ignorable characters (zero-width spaces and joiners, ...), the braille blank. */
const INVISIBLE = /[\p{White_Space}\p{Default_Ignorable_Code_Point}\u2800]/gu
const NO_CONTROL = 'must not contain control characters (NUL, line breaks, tabs)'
const NO_LONE_SURROGATE = 'must be valid Unicode text (no lone surrogate)'

/** A string without control characters or lone surrogates. */
const text = () =>
  z
    .string()
    .refine((value) => !CONTROL.test(value), NO_CONTROL)
    .refine((value) => !LONE_SURROGATE.test(value), NO_LONE_SURROGATE)

export const email = text()
  .trim()
  .toLowerCase()
  .pipe(z.email({ message: 'must be an email address' }).max(254))
export const name = text()
  .trim()
  .min(1, 'must not be empty')
  .max(100)
  .refine((value) => !BIDI_CONTROL.test(value), 'must not contain bidirectional override or isolate characters')
  .refine((value) => value === '' || value.replace(INVISIBLE, '') !== '', 'must contain a visible character')
/** A new password (sign-up, change): 8 to 200 characters, anything but control characters. */
export const password = text().min(8, 'must be at least 8 characters').max(200)
/** A password to check against the stored hash (sign-in, currentPassword): anything but NUL. */
export const givenPassword = z
  .string()
  .min(1)
  .max(200)
  .refine((value) => !value.includes('\0'), 'must not contain a NUL character')

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

/**
 * The rate limiters' answer: a 429 in the app's error shape, with their RateLimit headers, and a
 * Retry-After (set here for a limiter that sends no RateLimit headers).
 */
export function tooMany(_req: Request, res: Response, next: NextFunction, info: RateLimitInfo): void {
  const seconds = Math.max(1, Math.ceil((info.resetTime.getTime() - Date.now()) / 1000))
  if (!res.hasHeader('Retry-After')) res.setHeader('Retry-After', String(seconds))
  next(new HttpError(429, 'rate_limited', `Too many requests; try again in ${seconds} s.`))
}
