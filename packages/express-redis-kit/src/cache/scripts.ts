import { Script } from '../shared/redis.js'

/*
 * The cache's Redis data model. All the variants of one URL (or one cached() key) live in
 * one hash, `<prefix>{<h>}`, h being a hash of the URL or key, with its lock beside it in
 * the same slot, `<prefix>{<h>}:lock`:
 *   vary       the request headers the response varies on ('' for none), as stored
 *   v:<var>    a variant's entry: status, headers and body, binary (see entry.ts)
 *   p:<var>    a variant being filled, until its commit (lookups ignore it)
 *   t:<var>    its times in Redis ms: '<storedAt>,<freshUntil>,<staleWhileRevalidateUntil>,<staleIfErrorUntil>'
 * The hash expires with its longest-lived variant. Beside it (same slot) `<prefix>{<h>}:tags`,
 * the JSON of the tags it was last stored with: an invalidation leaves it, so that the next
 * fill knows which tags to fence itself with before the handler runs.
 * Tags (another slot each): `<prefix>tag:{<tag>}`, a set of the entry hashes carrying the
 * tag, and beside it `<prefix>tag:{<tag>}:inv`, a hash of the tag's invalidations: `n` how many
 * there were, `t` when the last one was (Redis ms, the tag's node). A fill adds its entry to its
 * tags' sets only if none of them was invalidated since the fill began: for tags known before
 * the handler runs (an array, cached()'s tags, or the tags a function gave the entry last
 * time), `n` is read then and must be unchanged; for a tag first seen in the response, `t`
 * must be older than the fill's lookup (on the entry's node; on a Cluster minus a margin for
 * two nodes' clocks). An invalidation that comes later finds
 * the entry in the set and deletes it, staged or committed. So no fill that overlapped an
 * invalidation survives it, and each tag's fence lives in the tag's own slot: a shard that is
 * down stops only the fills and invalidations of the tags it holds.
 */

/**
 * Lookup, and the lock when the entry is missing or no longer fresh.
 * KEYS[1] entry hash, KEYS[2] its lock, KEYS[3] its last tags.
 * ARGV[1] variant field suffix, ARGV[2] lock token ('' = do not lock), ARGV[3] lock ms.
 * Reply: { now, vary or false, entry or false, times or false, lock [, last tags or false
 * when 'owned'] } where lock is
 *   'fresh'  the entry is fresh: no lock needed
 *   'owned'  this caller holds the lock now and should fill the entry
 *   'held'   another caller holds it (fill in progress)
 *   'none'   not requested, and no fill in progress
 *   'uncacheable' the last fill found the response not cacheable: go to the origin
 */
export const LOOKUP = new Script(`
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local stored = redis.call('HMGET', KEYS[1], 'vary', 'v:' .. ARGV[1], 't:' .. ARGV[1])
local vary, entry, times = stored[1], stored[2], stored[3]
local state = 'none'
if entry and times then
  local fresh = tonumber(string.match(times, '^[^,]*,([^,]*)'))
  if now < fresh then return { now, vary, entry, times, 'fresh' } end
end
if ARGV[2] == '' then
  -- no lock wanted (HEAD): still say whether a fill is in progress, so the caller can wait for it
  if redis.call('EXISTS', KEYS[2]) == 1 then state = 'held' end
else
  if redis.call('SET', KEYS[2], ARGV[2], 'NX', 'PX', ARGV[3]) then
    -- the filler also gets the tags the entry had last time: it fences the fill with their counts
    return { now, vary, entry, times, 'owned', redis.call('GET', KEYS[3]) }
  elseif redis.call('GET', KEYS[2]) == 'uncacheable' then
    state = 'uncacheable'
  else
    state = 'held'
  end
end
return { now, vary, entry, times, state }
`)

/**
 * Stage a variant: stored under `p:<var>`, which lookups ignore, until COMMIT makes it the
 * entry (after its tags are written and the invalidation counter checked). The lock stays.
 * KEYS[1] entry hash. ARGV[1] variant suffix, ARGV[2] entry, ARGV[3] ms the staged
 * value may wait for its commit.
 */
export const STAGE = new Script(`
redis.call('HSET', KEYS[1], 'p:' .. ARGV[1], ARGV[2])
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[3]) then redis.call('PEXPIRE', KEYS[1], ARGV[3]) end
return 1
`)

/**
 * Commit a staged variant. KEYS[1] entry hash, KEYS[2] its lock, KEYS[3] its last tags.
 * ARGV[1] lock token, ARGV[2] variant suffix, ARGV[3] vary spec, ARGV[4] ttl ms,
 * ARGV[5] stale-while-revalidate ms, ARGV[6] stale-if-error ms, ARGV[7] JSON of the tags
 * (kept beside the entry, and through its invalidations, for the next fill's fence).
 * A different vary spec than the stored one drops the old variants. Releases the lock
 * if this caller still holds it. Reply: 1, or 0 when the staged value is gone (an
 * invalidation deleted the entry meanwhile: nothing is stored).
 */
export const COMMIT = new Script(`
if redis.call('GET', KEYS[2]) == ARGV[1] then redis.call('DEL', KEYS[2]) end
local entry = redis.call('HGET', KEYS[1], 'p:' .. ARGV[2])
if not entry then return 0 end
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local ttl, swr, sie = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local vary = redis.call('HGET', KEYS[1], 'vary')
if vary and vary ~= ARGV[3] then redis.call('DEL', KEYS[1]) else redis.call('HDEL', KEYS[1], 'p:' .. ARGV[2]) end
local times = string.format('%d,%d,%d,%d', now, now + ttl, now + ttl + swr, now + ttl + sie)
redis.call('HSET', KEYS[1], 'vary', ARGV[3], 'v:' .. ARGV[2], entry, 't:' .. ARGV[2], times)
local keep = ttl + math.max(swr, sie)
-- alone in its hash: exactly its own lifetime; beside other variants: the longest of them
if redis.call('HLEN', KEYS[1]) == 3 or redis.call('PTTL', KEYS[1]) < keep then redis.call('PEXPIRE', KEYS[1], keep) end
if ARGV[7] ~= '' then redis.call('SET', KEYS[3], ARGV[7], 'PX', keep) end
return 1
`)

/**
 * Give the lock up without storing. KEYS[1] the lock. ARGV[1] token, ARGV[2] '1' to mark
 * the response uncacheable for ARGV[3] ms (waiters then go to the origin at once).
 */
export const RELEASE = new Script(`
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[2] == '1' then
  redis.call('SET', KEYS[1], 'uncacheable', 'PX', ARGV[3])
else
  redis.call('DEL', KEYS[1])
end
return 1
`)

/**
 * Tag an entry, unless the tag was invalidated since the fill began. KEYS[1] the tag's set,
 * KEYS[2] its invalidations. ARGV[1] entry hash key, ARGV[2] ms the set may live, ARGV[3]
 * 'n' (ARGV[4]: the invalidation count read before the handler ran, '' for none) or 't'
 * (ARGV[4]: when the fill began, minus the clock margin, Redis ms). Reply: 1 tagged, 0 refused.
 */
export const TAG = new Script(`
local stored = redis.call('HMGET', KEYS[2], 'n', 't')
if ARGV[3] == 'n' then
  if (stored[1] or '') ~= ARGV[4] then return 0 end
elseif stored[2] and tonumber(stored[2]) >= tonumber(ARGV[4]) then
  return 0
end
redis.call('SADD', KEYS[1], ARGV[1])
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[2]) then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 1
`)

/**
 * Invalidate a tag: count it and note its time (fills that began before will not tag
 * themselves), then take its entries. KEYS[1] the tag's set, KEYS[2] its invalidations.
 * ARGV[1] ms to keep the invalidations (far longer than any fill). Reply: the entry hashes
 * the set held; the set is deleted.
 */
export const TAKE_TAG = new Script(`
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
redis.call('HINCRBY', KEYS[2], 'n', 1)
redis.call('HSET', KEYS[2], 't', now)
redis.call('PEXPIRE', KEYS[2], ARGV[1])
local members = redis.call('SMEMBERS', KEYS[1])
redis.call('DEL', KEYS[1])
return members
`)
