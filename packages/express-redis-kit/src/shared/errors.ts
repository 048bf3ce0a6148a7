/**
 * Stable error codes thrown or passed to `next(err)` by express-redis-kit.
 * Match on `err.code`, never on the message.
 */
export type ErrorCode =
  /** An option given at creation is invalid. Thrown synchronously. */
  | 'ERK_INVALID_OPTION'
  /** An argument of a method (`resetKey`, `getKey`, `destroyUserSession`...) is invalid. Thrown or rejected at once. */
  | 'ERK_INVALID_ARGUMENT'
  /** A user callback (`keyGenerator`, `limit`, `cost`, ...) threw or returned an invalid value. */
  | 'ERK_INVALID_CALLBACK_RESULT'
  /** Redis failed, timed out or was not connected. */
  | 'ERK_REDIS_UNAVAILABLE'
  /** The app is set up in a way the middleware cannot work with (e.g. session without cookie-parser). */
  | 'ERK_MISCONFIGURED'
  /** A notifier message could not be published: its payload is not JSON or too large. */
  | 'ERK_INVALID_MESSAGE'
  /** The notifier was closed; nothing more can be published or subscribed. */
  | 'ERK_CLOSED'
  /**
   * A `cached()` loader returned a value the serializer cannot store so that it comes back
   * as it was (a cycle, a function, an instance of a class it does not know): nothing is
   * stored, the call rejects. Pass a `serializer` that handles it.
   */
  | 'ERK_UNSERIALIZABLE'
  /** Something that cannot happen did (a broken invariant). Please report it. */
  | 'ERK_INTERNAL'

/** Base class of every error this package creates: an `Error` with a stable `code`. */
export class RedisKitError extends Error {
  /** Machine-readable reason; see {@link ErrorCode}. */
  readonly code: ErrorCode
  /** HTTP status a handler should answer with when it sees this error. */
  readonly status: number

  constructor(code: ErrorCode, message: string, options?: { cause?: unknown; status?: number }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause })
    this.name = 'RedisKitError'
    this.code = code
    this.status = options?.status ?? 500
  }
}

/**
 * Thrown at creation for an invalid option. It is a `TypeError` (what users of
 * express-rate-limit expect) that carries the stable code `ERK_INVALID_OPTION`.
 */
export class OptionError extends TypeError {
  readonly code = 'ERK_INVALID_OPTION' as const

  constructor(option: string, expected: string, received: unknown) {
    super(`express-redis-kit: option \`${option}\` must be ${expected}; received ${describe(received)}`)
    this.name = 'OptionError'
  }
}

/**
 * Thrown for an invalid argument of a method (`resetKey(key)`, `destroyUserSession(userId, handle)`,
 * `history(channel, { after })`...): a `TypeError` with the stable code `ERK_INVALID_ARGUMENT`.
 * Such arguments often come from a request (a handle, a `Last-Event-ID`), hence status 400.
 */
export class ArgumentError extends TypeError {
  readonly code = 'ERK_INVALID_ARGUMENT' as const
  /** HTTP status a handler should answer with when it sees this error. */
  readonly status = 400

  constructor(method: string, argument: string, expected: string, received: unknown) {
    super(
      `express-redis-kit: argument \`${argument}\` of ${method}() must be ${expected}; received ${describe(received)}`,
    )
    this.name = 'ArgumentError'
  }

  /** For an invalid value assigned to a property (`req.session.cookie.maxAge = ...`). */
  static property(property: string, expected: string, received: unknown): ArgumentError {
    const error = new ArgumentError(property, 'value', expected, received)
    error.message = `express-redis-kit: \`${property}\` must be ${expected}; received ${describe(received)}`
    return error
  }
}

/** A short, safe description of a value for error messages (never a dump of user data). */
export function describe(value: unknown): string {
  if (value === null) return 'null'
  if (value === undefined) return 'undefined'
  if (typeof value === 'string') {
    const shown = value.length > 40 ? `${value.slice(0, 40)}…` : value
    return `the string ${JSON.stringify(shown)}`
  }
  if (typeof value === 'number') return Number.isNaN(value) ? 'NaN' : `the number ${value}`
  if (typeof value === 'function') return 'a function'
  if (Array.isArray(value)) return 'an array'
  if (typeof value === 'object') return 'an object'
  return `${typeof value} ${String(value)}`
}
