import { Script } from '../shared/redis.js'

/*
 * The cache's Redis data model. All the variants of one URL (or one cached() key) live in
 * one hash, `<prefix>{<h>}`, h being a hash of the URL or key, with its lock beside it in
 * the same slot, `<prefix>{<h>}:lock`:
 *   vary       the request headers the response varies on ('' for none), as stored
 *   m:<var>    a variant's metadata: JSON of its status, headers and age (see entry.ts); ''
 *              for a cached() value
 *   b:<var>    its body (or a cached() value), as it was sent
 *   t:<var>    its times in Redis ms: '<storedAt>,<freshUntil>,<staleWhileRevalidateUntil>,<staleIfErrorUntil>'
 *              (storedAt: when the response was made, on Redis's clock)
 *   p:<var>, q:<var>  the metadata and body of a variant being filled, until its commit
 *              (lookups ignore them)
 *   i          how many times the URL was invalidated by an unsafe request (POST, PUT, PATCH,
 *              DELETE, ...): a fill that began before an invalidation is not committed. An
 *              unsafe request writes it only where something is stored or a fill is in
 *              progress, and writes nothing for a URL with neither. A response's fill marks
 *              itself when it takes the lock: `i` is '0' if there was none (kept an hour in a hash of its
 *              own), so that an unsafe request sees the fill even after its lock expired; its
 *              commit or release takes the '0' away. A fill that lost its lock commits only
 *              against a count it finds. '' and '0' are the same count.
 * The hash expires with its longest-lived variant (an entry that can be revalidated, as long
 * as that is possible). Beside it (same slot) `<prefix>{<h>}:tags`,
 * the JSON of the tags it was last stored with: an invalidation leaves it, so that the next
 * fill knows which tags to fence itself with before the handler runs.
 * Tags (another slot each): `<prefix>tag:{<tag>}`, a set of the entry hashes carrying the
 * tag, and beside it `<prefix>tag:{<tag>}:inv`, a hash of the tag's invalidations: `n` how many
 * there were, `t` when the last one was (Redis ms, the tag's node). That pair is the tag's
 * fence. On a Cluster each tag has three copies of it, in slots spread round the slot space
 * (`<prefix>tag:{<tag>#<j>.<i>}` and its `:inv`, see tagCopyKeys in store.ts): a fill fences
 * itself on one copy, the first that answers of those on its entry's own node and then the
 * others; an invalidation counts and empties every copy. A fill adds its entry to its tags'
 * sets only if none of them was invalidated since the fill began: for tags known before
 * the handler runs (an array, cached()'s tags, or the tags a function gave the entry last
 * time), `n` is read then (from one copy) and must be unchanged on that copy; for a tag first
 * seen in the response, `t` must be older than the fill's lookup (on any copy: on the entry's
 * node; on a Cluster minus a margin for two nodes' clocks). An invalidation that comes later
 * finds the entry in the set and deletes it, staged or committed. So no fill that overlapped
 * an invalidation survives it: every invalidation that succeeds reached every copy, so it
 * either changed the copy a fill checks or found the fill's entry in that copy's set.
 * Availability: a fill needs one copy of each of its tags, preferably on its own shard, so a
 * shard that is down stops only the fills of the entries it holds (and those in flight that
 * had fenced themselves on it). An invalidation needs every copy of its tags: while one is
 * unreachable it invalidates what it can reach, puts the entries it could not delete back in
 * their sets, and rejects, never reporting success while an entry of its tags may survive.
 */

/**
 * Lookup, and the lock when the entry is missing or no longer fresh.
 * KEYS[1] entry hash, KEYS[2] its lock, KEYS[3] its last tags.
 * ARGV[1] variant field suffix, ARGV[2] lock token ('' = do not lock), ARGV[3] lock ms,
 * ARGV[4] for a response's fill, ms to keep its mark in a hash created for it (see `i`); ''
 * for a cached() value's, which unsafe requests never invalidate: no mark.
 * Reply: { now, vary or false, meta or false, body or false, times or false, lock
 * [, last tags or false, invalidation count, when 'owned'] } where lock is
 *   'fresh'  the entry is fresh: no lock needed
 *   'owned'  this caller holds the lock now and should fill (or revalidate) the entry
 *   'held'   another caller holds it (fill in progress)
 *   'none'   not requested, and no fill in progress
 *   'uncacheable' the last fill found the response not cacheable: go to the origin
 */
export const LOOKUP = new Script(
  `
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local stored = redis.call('HMGET', KEYS[1], 'vary', 'm:' .. ARGV[1], 'b:' .. ARGV[1], 't:' .. ARGV[1])
local vary, meta, body, times = stored[1], stored[2], stored[3], stored[4]
local state = 'none'
if meta and body and times then
  local fresh = tonumber(string.match(times, '^[^,]*,([^,]*)'))
  if now < fresh then return { now, vary, meta, body, times, 'fresh' } end
end
if ARGV[2] == '' then
  -- no lock wanted (HEAD): still say whether a fill is in progress, so the caller can wait for it
  if redis.call('EXISTS', KEYS[2]) == 1 then state = 'held' end
else
  if redis.call('SET', KEYS[2], ARGV[2], 'NX', 'PX', ARGV[3]) then
    if ARGV[4] ~= '' then
      -- a response's fill marks itself for unsafe requests (see i)
      local created = redis.call('EXISTS', KEYS[1]) == 0
      redis.call('HSETNX', KEYS[1], 'i', '0')
      if created then redis.call('PEXPIRE', KEYS[1], ARGV[4]) end
    end
    -- the filler also gets the tags the entry had last time (to fence the fill with their
    -- counts) and how many times the URL was invalidated (the commit checks it is unchanged)
    return { now, vary, meta, body, times, 'owned', redis.call('GET', KEYS[3]), redis.call('HGET', KEYS[1], 'i') }
  elseif redis.call('GET', KEYS[2]) == 'uncacheable' then
    state = 'uncacheable'
  else
    state = 'held'
  end
end
return { now, vary, meta, body, times, state }
`,
  'cache.lookup',
)

/**
 * Stage a variant: its metadata and body under `p:<var>` and `q:<var>`, which lookups ignore,
 * until COMMIT makes them the entry (after its tags are written). The lock stays.
 * KEYS[1] entry hash. ARGV[1] variant suffix, ARGV[2] metadata, ARGV[3] body, ARGV[4] ms the
 * staged value may wait for its commit.
 */
export const STAGE = new Script(
  `
redis.call('HSET', KEYS[1], 'p:' .. ARGV[1], ARGV[2], 'q:' .. ARGV[1], ARGV[3])
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[4]) then redis.call('PEXPIRE', KEYS[1], ARGV[4]) end
return 1
`,
  'cache.stage',
)

/**
 * Lua shared by COMMIT and REVALIDATE: whether a fill that began when the URL's invalidation
 * count was `began` may be stored now that it is `count` (false when absent): unchanged ('' and
 * '0' alike mean none), and, for a fill that no longer holds its lock and whose entry unsafe
 * requests invalidate (`byUrl`), present (an unsafe request finding neither an entry nor a lock
 * writes nothing: without a count, its mark gone, there is no telling). Then takes the fill's
 * mark away ('0': the entry now stored is what unsafe requests find), so that the hash's life
 * is again its variants'.
 */
const FENCED_LUA = `
local function fenced(count, began, owned, byUrl)
  if (count or '0') ~= (began == '' and '0' or began) then return false end
  if not (owned or not byUrl or count ~= false) then return false end
  if count == '0' then redis.call('HDEL', KEYS[1], 'i') end
  return true
end
`

/**
 * Lua shared by COMMIT and REVALIDATE: sets a variant's times and the hash's expiry. ARGV[4..8]
 * are the variant's lifetimes (ms): fresh for ARGV[4] (0 or less: stale already), then served
 * stale for ARGV[5] (stale-while-revalidate) or ARGV[6] (stale-if-error) at most, and kept
 * ARGV[7] after its freshness to be revalidated; all counted from when the response was made,
 * ARGV[8] ms ago (its `storedAt`: a request that looked before then and waited for the fill
 * may use it). Alone in its hash, the hash lives
 * exactly as long as the variant is of use; beside other variants, as long as the longest
 * of them; and it never shortens the life of the URL's invalidation count (`i`).
 */
const TIMES_LUA = `
local function setTimes(hash, variant)
  local ttl, swr, sie, revalidate = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
  local time = redis.call('TIME')
  local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000) - tonumber(ARGV[8])
  redis.call('HSET', hash, 't:' .. variant, string.format('%d,%d,%d,%d', now, now + ttl, now + ttl + swr, now + ttl + sie))
  local keep = math.max(1, ttl + math.max(swr, sie, revalidate))
  local alone = redis.call('HEXISTS', hash, 'i') == 0
  for _, field in ipairs(redis.call('HKEYS', hash)) do
    if string.sub(field, 1, 2) == 't:' and field ~= 't:' .. variant then alone = false end
  end
  if alone or redis.call('PTTL', hash) < keep then redis.call('PEXPIRE', hash, keep) end
  return keep
end
`

/**
 * Commit a staged variant. KEYS[1] entry hash, KEYS[2] its lock, KEYS[3] its last tags.
 * ARGV[1] lock token, ARGV[2] variant suffix, ARGV[3] vary spec, ARGV[4..8] lifetimes (see
 * TIMES_LUA), ARGV[9] JSON of the tags (kept beside the entry, and through its invalidations,
 * for the next fill's fence; '' for none), ARGV[10] the URL's invalidation count the fill
 * began with ('' for none), ARGV[11] '1' when unsafe requests invalidate the entry (a
 * response's; '' for a cached() value). A different vary spec than the stored one drops the
 * old variants. Releases the lock if this caller still holds it. Reply: 1, or 0 when nothing
 * is stored: the staged value is gone (a tag's invalidation deleted it) or the URL may have
 * been invalidated since the fill began (see FENCED_LUA).
 */
export const COMMIT = new Script(
  `${TIMES_LUA}${FENCED_LUA}
local owned = redis.call('GET', KEYS[2]) == ARGV[1]
if owned then redis.call('DEL', KEYS[2]) end
local staged = redis.call('HMGET', KEYS[1], 'p:' .. ARGV[2], 'q:' .. ARGV[2], 'i')
redis.call('HDEL', KEYS[1], 'p:' .. ARGV[2], 'q:' .. ARGV[2])
if not staged[1] or not staged[2] or not fenced(staged[3], ARGV[10], owned, ARGV[11] == '1') then return 0 end
local count = redis.call('HGET', KEYS[1], 'i')
local vary = redis.call('HGET', KEYS[1], 'vary')
if vary and vary ~= ARGV[3] then
  local pttl = redis.call('PTTL', KEYS[1])
  redis.call('DEL', KEYS[1])
  if count then
    redis.call('HSET', KEYS[1], 'i', count)
    if pttl > 0 then redis.call('PEXPIRE', KEYS[1], pttl) end
  end
end
redis.call('HSET', KEYS[1], 'vary', ARGV[3], 'm:' .. ARGV[2], staged[1], 'b:' .. ARGV[2], staged[2])
local keep = setTimes(KEYS[1], ARGV[2])
if ARGV[9] ~= '' then redis.call('SET', KEYS[3], ARGV[9], 'PX', keep) end
return 1
`,
  'cache.commit',
)

/**
 * Revalidated (the origin answered 304 to a conditional request): the variant keeps its body,
 * and gets new metadata and times. KEYS[1] entry hash, KEYS[2] its lock. ARGV[1] lock token,
 * ARGV[2] variant suffix, ARGV[3] metadata, ARGV[4..8] lifetimes (see TIMES_LUA), ARGV[9] the
 * URL's invalidation count the revalidation began with. Releases the lock. Reply: 1, or 0
 * when the variant is gone or the URL may have been invalidated meanwhile (see FENCED_LUA).
 */
export const REVALIDATE = new Script(
  `${TIMES_LUA}${FENCED_LUA}
local owned = redis.call('GET', KEYS[2]) == ARGV[1]
if owned then redis.call('DEL', KEYS[2]) end
local stored = redis.call('HMGET', KEYS[1], 'b:' .. ARGV[2], 'i')
if not stored[1] or not fenced(stored[2], ARGV[9], owned, true) then return 0 end
redis.call('HSET', KEYS[1], 'm:' .. ARGV[2], ARGV[3])
setTimes(KEYS[1], ARGV[2])
return 1
`,
  'cache.revalidate',
)

/**
 * Drop a variant that may no longer be stored (the origin answered its revalidation with a 304
 * that says `private` or `no-store`), and give the lock up telling waiters to go to the
 * origin. KEYS[1] entry hash, KEYS[2] its lock. ARGV[1] variant suffix, ARGV[2] lock token,
 * ARGV[3] ms the lock then says 'uncacheable'.
 */
export const DROP = new Script(
  `
redis.call('HDEL', KEYS[1], 'm:' .. ARGV[1], 'b:' .. ARGV[1], 't:' .. ARGV[1])
if redis.call('GET', KEYS[2]) == ARGV[2] then
  if redis.call('HGET', KEYS[1], 'i') == '0' then redis.call('HDEL', KEYS[1], 'i') end
  redis.call('SET', KEYS[2], 'uncacheable', 'PX', ARGV[3])
end
return 1
`,
  'cache.drop',
)

/**
 * Invalidate a URL's stored responses (after a successful unsafe request): count the
 * invalidation, so that a fill or revalidation in progress is not committed, and delete every
 * variant, staged ones included. With nothing stored and no fill in progress (no hash: a fill
 * marks itself in it; no lock), there is nothing to delete or to fence: nothing is written.
 * KEYS[1] entry hash, KEYS[2] its lock.
 * ARGV[1] ms to keep the count. Reply: the count, or 0 when nothing was written.
 */
export const INVALIDATE_URL = new Script(
  `
if redis.call('EXISTS', KEYS[1]) == 0 then
  local lock = redis.call('GET', KEYS[2])
  if not lock or lock == 'uncacheable' then return 0 end
end
local count = redis.call('HINCRBY', KEYS[1], 'i', 1)
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'i', count)
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return count
`,
  'cache.invalidateUrl',
)

/**
 * Give the lock up without storing, and take the fill's mark away (see `i`). KEYS[1] entry
 * hash, KEYS[2] its lock. ARGV[1] token, ARGV[2] '1' to mark the response uncacheable for
 * ARGV[3] ms (waiters then go to the origin at once).
 */
export const RELEASE = new Script(
  `
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
if redis.call('HGET', KEYS[1], 'i') == '0' then redis.call('HDEL', KEYS[1], 'i') end
if ARGV[2] == '1' then
  redis.call('SET', KEYS[2], 'uncacheable', 'PX', ARGV[3])
else
  redis.call('DEL', KEYS[2])
end
return 1
`,
  'cache.release',
)

/**
 * Tag an entry, unless the tag was invalidated since the fill began. KEYS[1] the tag's set,
 * KEYS[2] its invalidations. ARGV[1] entry hash key, ARGV[2] ms the set may live, ARGV[3]
 * 'n' (ARGV[4]: the invalidation count read before the handler ran, '' for none) or 't'
 * (ARGV[4]: when the fill began, minus the clock margin, Redis ms). Reply: 1 tagged, 0 refused.
 */
export const TAG = new Script(
  `
local stored = redis.call('HMGET', KEYS[2], 'n', 't')
if ARGV[3] == 'n' then
  if (stored[1] or '') ~= ARGV[4] then return 0 end
elseif stored[2] and tonumber(stored[2]) >= tonumber(ARGV[4]) then
  return 0
end
redis.call('SADD', KEYS[1], ARGV[1])
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[2]) then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 1
`,
  'cache.tag',
)

/**
 * Put entries an invalidation took but could not delete back in a tag's set (their shard
 * failed), so that the next invalidation finds them. KEYS[1] the tag's set (one copy). ARGV[1]
 * ms the set may live at least, ARGV[2..] the entry hashes.
 */
export const PUT_BACK = new Script(
  `
redis.call('SADD', KEYS[1], unpack(ARGV, 2))
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[1]) then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return 1
`,
  'cache.putBackTag',
)

/**
 * Invalidate a tag: count it and note its time (fills that began before will not tag
 * themselves), then take its entries. KEYS[1] the tag's set, KEYS[2] its invalidations.
 * ARGV[1] ms to keep the invalidations (far longer than any fill). Reply: the entry hashes
 * the set held; the set is deleted.
 */
export const TAKE_TAG = new Script(
  `
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
redis.call('HINCRBY', KEYS[2], 'n', 1)
redis.call('HSET', KEYS[2], 't', now)
redis.call('PEXPIRE', KEYS[2], ARGV[1])
local members = redis.call('SMEMBERS', KEYS[1])
redis.call('DEL', KEYS[1])
return members
`,
  'cache.invalidateTag',
)
