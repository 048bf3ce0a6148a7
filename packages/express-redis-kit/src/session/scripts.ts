import { Script } from '../shared/redis.js'

/*
 * The session's Redis data model. The token (32 random bytes) lives only in the client's
 * cookie, as `<tag>.<token>`; Redis holds a SHA-256 of it, so nothing read from Redis opens a
 * session. `tag` places the session: a session bound to a user is stored under the user's
 * tag (a hash of the user id), so that all of a user's sessions and their index share one
 * hash slot and every per-user operation is one atomic script, on a Cluster too; a session
 * with no user has a random tag.
 *
 * A session is one hash, `<prefix>{<tag>}:<h>`, h = base64url(SHA-256(token)):
 *   c        created at (Redis ms)      -- drives the absolute timeout, never changes
 *   s        last seen at (Redis ms)    -- drives the idle timeout, rolled on activity
 *   m        JSON of the `meta` fields, written once at creation (optional)
 *   e        the session's own lifetime (optional; `req.session.cookie.maxAge`): its own
 *            deadline (Redis ms), or 'session' for a cookie that ends with the browser session
 *   d:<name> JSON of the top-level session property <name>
 * Its deadline is the creation time plus the absolute timeout, or its own deadline `e` if
 * sooner. Its TTL is min(idle timeout, what is left until its deadline), set by every write,
 * so Redis drops it when it could no longer be used: a read is a plain HGETALL. The scripts
 * that write also check both timestamps themselves.
 *
 * Per-user index (with `userKey`): a sorted set `<prefix>{<tag>}:user:<user id>` of the
 * user's session hashes h, scored by their deadline, in the sessions' slot, expiring
 * with the last of them. A session's public handle is the first 22 characters of h.
 * Invariant: a session whose user field (`d:<name>`, name the first step of `userKey`) names a
 * user (a string or a number at the rest of the `userKey` path, see shared/user-key.ts) is in
 * that user's index. A session under a user's tag is bound to that user or to none (binding
 * it to another moves it), so every script that writes or refreshes a session whose user the
 * caller knows is given that user's index and places the session by the field as stored after
 * the write (see `place`): whatever wrote the field before (another request, another instance
 * with other timeouts), the next write puts it right.
 */

/**
 * Lua shared by the scripts that touch a user's index: `prune(index, idle, absolute, now)`
 * drops the entries whose session is gone or past a timeout (deleting such a session) and
 * returns the live ones as { h, created, seen, meta }; `keyOf(index, h)` is the session key
 * of an entry (the index key is `<prefix>{<tag>}:user:<id>`, a session `<prefix>{<tag>}:<h>`);
 * `place(...)` keeps the index invariant for one session that was just written (see below).
 */
const INDEX_LUA = `
local function keyOf(index, h)
  return string.sub(index, 1, string.find(index, '}', 1, true)) .. ':' .. h
end
-- A session's deadline: created + absolute, or its own deadline 'own' (field e) if sooner.
local function deadlineOf(created, own, absolute)
  local deadline = created + absolute
  local mine = tonumber(own)
  if mine and mine < deadline then return mine end
  return deadline
end
local function prune(index, idle, absolute, now)
  local live = {}
  for _, h in ipairs(redis.call('ZRANGE', index, 0, -1)) do
    local key = keyOf(index, h)
    local stored = redis.call('HMGET', key, 'c', 's', 'm', 'e')
    local created, seen = tonumber(stored[1]), tonumber(stored[2])
    if not created or not seen or now - seen >= idle or now >= deadlineOf(created, stored[4], absolute) then
      redis.call('DEL', key)
      redis.call('ZREM', index, h)
    else
      live[#live + 1] = { h, created, seen, stored[3] or '' }
    end
  end
  return live
end
-- Whether the JSON 'raw' of a session's user field names a user at 'path' (the rest of the
-- userKey path, dotted; '' for the field itself): a string or a number there, as
-- shared/user-key.ts reads it (own keys of objects only: a step into an array finds nothing).
local function namesUser(raw, path)
  if not raw then return false end
  if path == '' then
    local first = string.sub(raw, 1, 1)
    return first == '"' or first == '-' or string.find(first, '%d') ~= nil
  end
  local ok, value = pcall(cjson.decode, raw)
  if not ok then return false end
  for step in string.gmatch(path, '[^.]+') do
    if type(value) ~= 'table' then return false end
    value = value[step]
  end
  return type(value) == 'string' or type(value) == 'number'
end
local function clock()
  local time = redis.call('TIME')
  return tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
end
-- Session h (key 'key', live until 'deadline') joins 'index' if its user field ('field',
-- at 'path') names a user, else leaves it. A session that joins, or whose deadline moved (another
-- absolute timeout, its own lifetime set), has its index pruned, the least recently used others past 'limit'
-- (0 = none) ended (their hashes appended to 'ended'), and the index's expiry pushed to the
-- latest deadline. A session already in with its deadline costs an HGET and a ZADD.
local function place(index, key, h, field, path, deadline, idle, absolute, now, limit, ended)
  if not namesUser(redis.call('HGET', key, field), path) then
    redis.call('ZREM', index, h)
    return
  end
  if redis.call('ZADD', index, 'CH', deadline, h) == 0 then return end
  local live = prune(index, idle, absolute, now)
  if limit > 0 and #live > limit then
    table.sort(live, function(a, b) return a[3] < b[3] end)
    local excess = #live - limit
    for _, entry in ipairs(live) do
      if excess == 0 then break end
      if entry[1] ~= h then
        redis.call('DEL', keyOf(index, entry[1]))
        redis.call('ZREM', index, entry[1])
        ended[#ended + 1] = entry[1]
        excess = excess - 1
      end
    end
  end
  local newest = redis.call('ZRANGE', index, -1, -1, 'WITHSCORES')
  if newest[2] then redis.call('PEXPIREAT', index, newest[2]) end
end
`

/**
 * Rolling refresh of a session that was read: `s` = now and a new TTL, only if the session
 * still exists within both timeouts (a dead one is deleted). KEYS[1] the session; KEYS[2], when
 * given, the index of the user it is bound to (the session is placed in it, see `place`).
 * ARGV[1] idle timeout ms, ARGV[2] absolute timeout ms, ARGV[3] the session hash h,
 * ARGV[4] the user field (`d:` and the first step of `userKey`), ARGV[5] the rest of the
 * `userKey` path ('' for none), ARGV[6] the most sessions per user (0 = no limit).
 * Reply: now (Redis ms); or 0 (no session), -1 (past its idle timeout), -2 (past its deadline:
 * the absolute timeout, or its own lifetime), the session deleted.
 * A read itself is a plain HGETALL: the TTL (min(idle timeout, what is left of the absolute
 * timeout), set by every write) makes Redis drop a session the moment it could no longer be
 * used; the reader checks the timestamps too (see store.ts).
 */
export const REFRESH = new Script(
  `${INDEX_LUA}
local stored = redis.call('HMGET', KEYS[1], 'c', 's', 'e')
local created, seen = tonumber(stored[1]), tonumber(stored[2])
local now = clock()
local idle, absolute = tonumber(ARGV[1]), tonumber(ARGV[2])
if not created or not seen then
  redis.call('DEL', KEYS[1])
  return 0
end
local deadline = deadlineOf(created, stored[3], absolute)
if now >= deadline then
  redis.call('DEL', KEYS[1])
  return -2
end
if now - seen >= idle then
  redis.call('DEL', KEYS[1])
  return -1
end
redis.call('HSET', KEYS[1], 's', now)
redis.call('PEXPIRE', KEYS[1], math.min(idle, deadline - now))
if KEYS[2] then
  place(KEYS[2], KEYS[1], ARGV[3], ARGV[4], ARGV[5], deadline, idle, absolute, now, tonumber(ARGV[6]), {})
end
return now
`,
  'session.refresh',
)

/**
 * Save. KEYS[1] the session; KEYS[2], when given, the index of the user the session is (or,
 * until this write, was) bound to: after the write the session is placed in it or out of it
 * by its user field (see `place`).
 * ARGV[1] 'create' (the key must be new) or 'update' (the session must still exist and be
 *         within both timeouts: a destroyed or expired session is never written back),
 * ARGV[2] idle timeout ms, ARGV[3] absolute timeout ms,
 * ARGV[4] 'create': the creation time to keep (Redis ms; '' = now, a moved session keeps its own),
 * ARGV[5] 'create': JSON of the meta fields ('' = none),
 * ARGV[6] with an index: the most sessions the user may have (0 = no limit); when the session
 *         joins the index, the least recently used others are ended (deleted, and taken out),
 * ARGV[7] the session hash h (its index entry),
 * ARGV[8] the user field (`d:` and the first step of `userKey`; with an index),
 * ARGV[9] the rest of the `userKey` path ('' for none),
 * ARGV[10] the session's own lifetime (field e): '' keeps it (none for 'create'), 'session' a
 *         browser-session cookie, '+<ms>' a deadline that many ms from now, '=<deadline>' that
 *         deadline (Redis ms; a moved session keeps its own),
 * ARGV[11] number N of fields to set, then N field/value pairs, then the fields to delete.
 * Reply: { 1, createdAt, lastSeenAt, e, ended... } when written (e: field e as stored, '' for
 * none; ended: the hashes of the sessions the limit ended), or { 0 } when the session is gone,
 * past its deadline (or, for 'create', exists).
 */
export const SAVE = new Script(
  `${INDEX_LUA}
local mode, idle, absolute = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local limit, h, lifetime, setCount = tonumber(ARGV[6]), ARGV[7], ARGV[10], tonumber(ARGV[11])
local now = clock()
local created, own
if mode == 'create' then
  if redis.call('EXISTS', KEYS[1]) == 1 then return { 0 } end
  created = tonumber(ARGV[4]) or now
else
  local stored = redis.call('HMGET', KEYS[1], 'c', 's', 'e')
  created, own = tonumber(stored[1]), stored[3]
  local seen = tonumber(stored[2])
  if not created or not seen or now - seen >= idle or now >= deadlineOf(created, own, absolute) then
    redis.call('DEL', KEYS[1])
    return { 0 }
  end
end
if lifetime == 'session' then own = 'session'
elseif lifetime ~= '' then
  own = tonumber(string.sub(lifetime, 2))
  if string.sub(lifetime, 1, 1) == '+' then own = now + own end
end
local deadline = deadlineOf(created, own, absolute)
if now >= deadline then return { 0 } end
if mode == 'create' then
  redis.call('HSET', KEYS[1], 'c', created)
  if ARGV[5] ~= '' then redis.call('HSET', KEYS[1], 'm', ARGV[5]) end
end
if lifetime ~= '' then redis.call('HSET', KEYS[1], 'e', own) end
local last = 11 + setCount * 2
redis.call('HSET', KEYS[1], 's', now, unpack(ARGV, 12, last))
if #ARGV > last then redis.call('HDEL', KEYS[1], unpack(ARGV, last + 1)) end
redis.call('PEXPIRE', KEYS[1], math.min(idle, deadline - now))
local reply = { 1, created, now, own or '' }
if KEYS[2] then place(KEYS[2], KEYS[1], h, ARGV[8], ARGV[9], deadline, idle, absolute, now, limit, reply) end
return reply
`,
  'session.save',
)

/**
 * End a session. KEYS[1] the session, KEYS[2] (optional) the user index holding it.
 * ARGV[1] the session hash h. Reply: 1 if the session existed.
 */
export const DESTROY = new Script(
  `
local existed = redis.call('DEL', KEYS[1])
if KEYS[2] then redis.call('ZREM', KEYS[2], ARGV[1]) end
return existed
`,
  'session.destroy',
)

/**
 * A user's live sessions. KEYS[1] the index. ARGV[1] idle timeout ms, ARGV[2] absolute
 * timeout ms. Prunes what died. Reply: { h1, created1, seen1, meta1, h2, ... }.
 */
export const LIST_USER = new Script(
  `${INDEX_LUA}
local flat = {}
for _, entry in ipairs(prune(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), clock())) do
  for _, value in ipairs(entry) do flat[#flat + 1] = value end
end
return flat
`,
  'session.listUser',
)

/**
 * End some of a user's sessions. KEYS[1] the index. ARGV[1] 'one' (end the session whose
 * handle is ARGV[2]) or 'all' (end all but the one whose handle is ARGV[2], '' = none kept).
 * A handle is the first 22 characters of h. Reply: the number of sessions ended.
 */
export const END_USER_SESSIONS = new Script(
  `${INDEX_LUA}
local mode, handle = ARGV[1], ARGV[2]
local ended = 0
for _, h in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local match = handle ~= '' and string.sub(h, 1, 22) == handle
  if (mode == 'one' and match) or (mode == 'all' and not match) then
    ended = ended + redis.call('DEL', keyOf(KEYS[1], h))
    redis.call('ZREM', KEYS[1], h)
  end
end
return ended
`,
  'session.endUserSessions',
)
