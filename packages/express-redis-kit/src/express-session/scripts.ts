import { Script } from '../shared/redis.js'

/*
 * The Redis data model of the express-session store. express-session draws the session id
 * and keeps it in the cookie; Redis holds a SHA-256 of it, so nothing read from Redis names a
 * session a client could present.
 *
 *   <prefix><h>                       string, h = base64url(SHA-256(session id)): the session
 *                                     as the serializer wrote it (JSON by default). TTL: until
 *                                     its cookie expires, else the `ttl` option.
 *                                     '' (empty): a session ended by destroy() or a per-user
 *                                     revocation, kept as a tombstone for what was left of its
 *                                     TTL, so that a request still in flight cannot write it back.
 *   <prefix>{<user tag>}:by-user:<id> sorted set (with `userKey`): the hashes h of the user's
 *                                     sessions, scored by their expiry (ms) as last set or
 *                                     touched; expires with the last of them. In the user's slot.
 *
 * A session and its user's index are in different slots: each script touches one key, and
 * the index is kept by the store in a second call. An index entry is a claim checked when it
 * is used (listing and revocation read the session and keep it only if it still names the
 * user); every set() and touch() of a session that names a user puts it in that user's index.
 */

/**
 * Stores a session unless it was ended. KEYS[1] the session. ARGV[1] the value, ARGV[2] its
 * TTL (ms). Reply: 1 when written, 0 when the key is a tombstone (nothing written).
 */
export const SET_SESSION = new Script(
  `
if redis.call('STRLEN', KEYS[1]) == 0 and redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
`,
  'expressSession.set',
)

/**
 * Ends a session: its value becomes a tombstone ('') for what is left of its TTL (ARGV[1] ms
 * if it has none). KEYS[1] the session. Reply: 1 if a live session was ended, else 0.
 */
export const END_SESSION = new Script(
  `
local ttl = redis.call('PTTL', KEYS[1])
if ttl == -2 then return 0 end
local live = redis.call('STRLEN', KEYS[1]) > 0
if ttl < 0 then ttl = tonumber(ARGV[1]) end
redis.call('SET', KEYS[1], '', 'PX', ttl)
if live then return 1 end
return 0
`,
  'expressSession.end',
)

/** Lua shared by the index scripts: the index expires with its last entry. */
const EXPIRE_WITH_LAST = `
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
if last[2] then redis.call('PEXPIREAT', KEYS[1], last[2]) end
`

/**
 * A session joins (or stays in) its user's index. KEYS[1] the index. ARGV[1] the session hash
 * h, ARGV[2] its expiry (ms), ARGV[3] now (ms): entries that expired before are dropped.
 */
export const INDEX_ADD = new Script(
  `
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[3])
${EXPIRE_WITH_LAST}
return 1
`,
  'expressSession.indexAdd',
)

/**
 * A touched session's entry moves to its later expiry; a session not in the index (ended,
 * taken out) is not added back. KEYS[1] the index. ARGV[1] h, ARGV[2] its expiry (ms).
 * Reply: 1 if the entry moved.
 */
export const INDEX_TOUCH = new Script(
  `
if redis.call('ZADD', KEYS[1], 'XX', 'GT', 'CH', ARGV[2], ARGV[1]) == 0 then return 0 end
${EXPIRE_WITH_LAST}
return 1
`,
  'expressSession.indexTouch',
)
