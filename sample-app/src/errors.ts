import type { ErrorRequestHandler, RequestHandler } from 'express'
import { RedisKitError } from 'express-redis-kit'
import { ZodError } from 'zod'

/**
 * Every error response has this shape:
 * `{ "error": { "code": "validation_failed", "message": "...", "details": [...] } }`.
 * `code` is stable (clients match on it); `message` is for people; `details` is optional.
 */
export interface ErrorBody {
  error: { code: string; message: string; details?: unknown }
}

/** An error that becomes a JSON response with `status` and `code`. */
export class HttpError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly details?: unknown,
  ) {
    super(message)
    this.name = 'HttpError'
  }
}

export const unauthorized = () => new HttpError(401, 'unauthorized', 'Sign in first (POST /login).')

/** Error codes (Prisma's P1xxx are all about reaching the database) and driver adapter error kinds meaning "unreachable". */
const UNREACHABLE_CODES = new Set(['P2024', 'ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'ENOTFOUND', '57P01', '57P03'])
const UNREACHABLE_KINDS = new Set(['DatabaseNotReachable', 'DatabaseDoesNotExist', 'ConnectionClosed', 'SocketTimeout'])

/** Whether `error` (from Prisma or the pg driver) means the database cannot be reached. */
function isDatabaseUnavailable(error: unknown): boolean {
  for (let current = error, depth = 0; current instanceof Object && depth < 5; depth++) {
    const { name, code, kind, message } = current as { name?: string; code?: string; kind?: string; message?: string }
    if (name === 'PrismaClientInitializationError' || (kind !== undefined && UNREACHABLE_KINDS.has(kind))) return true
    if (typeof code === 'string' && (UNREACHABLE_CODES.has(code) || /^P1\d{3}$/.test(code))) return true
    if (
      typeof message === 'string' &&
      // (P2028 "Unable to start a transaction in the given time": an interactive transaction, such as
      // a write with its outbox row, found no connection that answers)
      /ECONNREFUSED|ETIMEDOUT|Connection terminated|timeout exceeded when trying to connect|database system is (starting up|shutting down)|Unable to start a transaction in the given time/i.test(
        message,
      )
    ) {
      return true
    }
    const { cause, meta } = current as { cause?: unknown; meta?: { driverAdapterError?: unknown } }
    current = cause ?? meta?.driverAdapterError
  }
  return false
}

/** Answers unknown routes with a JSON 404. */
export const notFound: RequestHandler = (req) => {
  throw new HttpError(404, 'not_found', `No route for ${req.method} ${req.path}.`)
}

/** Turns any error into the JSON error shape; 5xx details are logged, never sent. */
export function errorHandler(logger: Pick<Console, 'error'>): ErrorRequestHandler {
  return (error: unknown, req, res, _next) => {
    const { status, body } = describe(error)
    if (status >= 500 && status !== 503) logger.error(`${req.method} ${req.originalUrl} failed:`, error)
    if (res.headersSent) {
      res.destroy()
      return
    }
    if (status === 503) res.setHeader('Retry-After', '5')
    res.status(status).json(body)
  }
}

function describe(error: unknown): { status: number; body: ErrorBody } {
  const reply = (status: number, code: string, message: string, details?: unknown) => ({
    status,
    body: { error: details === undefined ? { code, message } : { code, message, details } },
  })
  if (error instanceof HttpError) return reply(error.status, error.code, error.message, error.details)
  if (error instanceof ZodError) {
    const details = error.issues.map((issue) => ({ path: issue.path.join('.'), message: issue.message }))
    const summary = details.map(({ path, message }) => (path ? `${path}: ${message}` : message)).join('; ')
    return reply(400, 'validation_failed', `Invalid request: ${summary}`, details)
  }
  if (error instanceof RedisKitError && error.code === 'ERK_REDIS_UNAVAILABLE') {
    return reply(503, 'service_unavailable', 'A backing service is unavailable; try again shortly.')
  }
  // body-parser's errors carry `type` and `status`
  const { type, status } = (error ?? {}) as { type?: string; status?: number }
  if (type === 'entity.parse.failed') return reply(400, 'invalid_json', 'The request body is not valid JSON.')
  if (type === 'entity.too.large')
    return reply(413, 'payload_too_large', 'The request body is too large (10 kB at most).')
  if (type === 'encoding.unsupported' || type === 'charset.unsupported') {
    return reply(415, 'unsupported_encoding', 'The request body must be UTF-8 JSON.')
  }
  if ((error as { code?: string } | null)?.code === 'P2025')
    return reply(404, 'not_found', 'The record no longer exists.')
  if (isDatabaseUnavailable(error))
    return reply(503, 'database_unavailable', 'The database is unavailable; try again shortly.')
  if (typeof status === 'number' && status >= 400 && status < 500) return reply(status, 'bad_request', 'Bad request.')
  return reply(500, 'internal_error', 'Something went wrong on our side.')
}
