/*
 * What one feature may know of another's request state, without importing it: the session
 * middleware puts these getters on `req.session` (non-enumerable, on its prototype), the
 * cache reads them to keep one client's responses from another.
 */

/** The id of the user the session is bound to (the session's `userKey` field), or undefined. */
export const SESSION_USER: unique symbol = Symbol.for('express-redis-kit.session.user')

/** Whether the session holds any data (signed in or not: a guest cart counts). */
export const SESSION_HAS_DATA: unique symbol = Symbol.for('express-redis-kit.session.has-data')

/** The marks of `req.session`, when the kit's session middleware ran before. */
export interface SessionMarks {
  readonly [SESSION_USER]?: string | undefined
  readonly [SESSION_HAS_DATA]?: boolean
}

/** The kit session's marks on this request (empty when there is no kit session). */
export function sessionMarks(req: unknown): SessionMarks {
  return ((req as { session?: SessionMarks }).session ?? {}) as SessionMarks
}
