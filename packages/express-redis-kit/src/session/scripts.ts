import { Script } from '../shared/redis.js'

/*
 * A session is one Redis hash, `<prefix>{<id>}`:
 *   c        created at (Redis ms)      -- drives the absolute timeout, never changes
 *   s        last seen at (Redis ms)    -- drives the idle timeout, rolled on activity
 *   d:<name> JSON of the top-level session property <name>
 * Its TTL is min(idle timeout, what is left of the absolute timeout), so Redis drops it
 * when it could no longer be used; the scripts also check both timestamps themselves.
 *
 * Per-user index (with `userKey`): a sorted set `<prefix>user:{<user id>}` of session
 * ids scored by their absolute deadline; it lives in another slot than the sessions, so
 * it is updated by separate commands and pruned lazily (see index.ts).
 */

/**
 * Load. KEYS[1] the session. ARGV[1] idle timeout ms, ARGV[2] absolute timeout ms,
 * ARGV[3] rolling refresh interval ms (0 = no refresh).
 * Reply: nil when there is no usable session (an expired one is deleted), else
 * { now, field1, value1, field2, value2, ... } (HGETALL order).
 * A refresh is the only write, at most once per interval: `s` = now and a new TTL.
 */
export const LOAD = new Script(`
local idle, absolute, refreshEvery = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local fields = redis.call('HGETALL', KEYS[1])
if #fields == 0 then return nil end
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local created, seen
for i = 1, #fields, 2 do
  if fields[i] == 'c' then created = tonumber(fields[i + 1]) elseif fields[i] == 's' then seen = tonumber(fields[i + 1]) end
end
if not created or not seen or now - seen >= idle or now - created >= absolute then
  redis.call('DEL', KEYS[1])
  return nil
end
if refreshEvery > 0 and now - seen >= refreshEvery then
  redis.call('HSET', KEYS[1], 's', now)
  redis.call('PEXPIRE', KEYS[1], math.min(idle, created + absolute - now))
end
return { now, unpack(fields) }
`)

/**
 * Save. KEYS[1] the session.
 * ARGV[1] 'create' (the id must be new) or 'update' (the session must still exist and be
 *         within both timeouts: a destroyed or expired session is never written back),
 * ARGV[2] idle timeout ms, ARGV[3] absolute timeout ms,
 * ARGV[4] number N of fields to set, then N field/value pairs, then the fields to delete.
 * Reply: { 1, createdAt, lastSeenAt } when written, or { 0 } when the session is gone.
 */
export const SAVE = new Script(`
local mode, idle, absolute, setCount = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local created
if mode == 'create' then
  if redis.call('EXISTS', KEYS[1]) == 1 then return { 0 } end
  created = now
  redis.call('HSET', KEYS[1], 'c', now)
else
  local stored = redis.call('HMGET', KEYS[1], 'c', 's')
  created = tonumber(stored[1])
  local seen = tonumber(stored[2])
  if not created or not seen or now - seen >= idle or now - created >= absolute then
    redis.call('DEL', KEYS[1])
    return { 0 }
  end
end
local last = 4 + setCount * 2
redis.call('HSET', KEYS[1], 's', now, unpack(ARGV, 5, last))
if #ARGV > last then redis.call('HDEL', KEYS[1], unpack(ARGV, last + 1)) end
redis.call('PEXPIRE', KEYS[1], math.min(idle, created + absolute - now))
return { 1, created, now }
`)

/**
 * Add a session to its user's index. KEYS[1] the index. ARGV[1] session id, ARGV[2] its
 * absolute deadline (Redis ms). Prunes entries past their deadline and keeps the index
 * alive exactly as long as its longest-lived session.
 */
export const INDEX_ADD = new Script(`
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
local time = redis.call('TIME')
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', tonumber(time[1]) * 1000)
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
if last[2] then redis.call('PEXPIREAT', KEYS[1], last[2]) end
return 1
`)

/**
 * List a user's sessions. KEYS[1] the index. Prunes entries past their absolute deadline.
 * Reply: { now (Redis ms), id1, id2, ... }.
 */
export const INDEX_LIST = new Script(`
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
return { now, unpack(redis.call('ZRANGE', KEYS[1], 0, -1)) }
`)
