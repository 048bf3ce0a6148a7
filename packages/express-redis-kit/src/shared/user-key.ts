/*
 * The `userKey` option of the session and of the express-session store: where a session's data
 * names its user. A property name (`'userId'`) or a dotted path through nested objects
 * (`'passport.user'`, where passport keeps the user; `'passport.user.id'` when serializeUser
 * stores an object). A session names a user when the value there is a string or a finite
 * number; the user id is `String(value)`. Anything else (an object, a boolean, null) names
 * none: an object would make every user "[object Object]". The session's Lua (`namesUser` in
 * session/scripts.ts) reads the stored JSON by the same rules.
 */
import { createHash } from 'node:crypto'
import { check } from './options.js'

/** The steps of a `userKey` path: `'passport.user'` → `['passport', 'user']`. */
export type UserPath = readonly [string, ...string[]]

/** Validates a `userKey` option (undefined: none). */
export function parseUserKey(userKey: unknown): UserPath | undefined {
  if (userKey === undefined) return undefined
  const steps = typeof userKey === 'string' ? userKey.split('.') : []
  check(
    steps.length > 0 && steps.every((step) => step.length > 0),
    'userKey',
    "a property name or a dotted path to it ('userId', 'passport.user')",
    userKey,
  )
  return steps as unknown as UserPath
}

/** The value at `path` in `root`, through own properties of plain objects only (never arrays or prototypes). */
export function valueAt(root: unknown, path: readonly string[]): unknown {
  let value = root
  for (const step of path) {
    if (typeof value !== 'object' || value === null || Array.isArray(value) || !Object.hasOwn(value, step))
      return undefined
    value = (value as Record<string, unknown>)[step]
  }
  return value
}

/** The user id a value names: a string or a finite number, as a string; undefined for anything else. */
export function userIdOf(value: unknown): string | undefined {
  if (typeof value === 'string') return value
  if (typeof value === 'number' && Number.isFinite(value)) return String(value)
  return undefined
}

/** Whether a value at `userKey` is not a user id but something that is meant as one (an object, a boolean). */
export function isMisplacedUser(value: unknown): boolean {
  return value !== undefined && value !== null && userIdOf(value) === undefined
}

/** The warning for {@link isMisplacedUser}: the path should lead to the id itself. */
export function misplacedUserWarning(feature: string, userKey: string): string {
  return (
    `express-redis-kit ${feature}: \`userKey\` '${userKey}' holds a value that is not a user id (a string or a ` +
    `number): the session is not bound to a user and is in no user's index. If it holds the user as an ` +
    `object, point userKey at its id (e.g. '${userKey}.id')`
  )
}

const userTags = new Map<string, string>()

/**
 * The hash tag of a user's keys: the start of a SHA-256 of the user id (remembered for the
 * users seen last). A user's index (and, for the kit's session, their sessions) share its slot.
 */
export function userTag(user: string): string {
  let tag = userTags.get(user)
  if (tag === undefined) {
    tag = createHash('sha256').update(`user\n${user}`).digest('base64url').slice(0, 11)
    if (userTags.size >= 10_000) userTags.clear()
    userTags.set(user, tag)
  }
  return tag
}
