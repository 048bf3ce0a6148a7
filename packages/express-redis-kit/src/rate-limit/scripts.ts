import { Script } from '../shared/redis.js'

/*
 * The Lua that makes every rate-limit decision, one script per algorithm.
 *
 * Common contract of the four decision scripts:
 *   KEYS[1..n]  the client's key of each window, all in one slot (`<prefix>{<identifier>}`, or
 *               `<prefix>{<identifier>}:<windowMs>` with several windows; sliding-window adds
 *               `:sw` to each, see WINDOW_KEY_SUFFIX)
 *   KEYS[n+1]   the client's block key (blockDuration), `<prefix>{<identifier>}:block`
 *   ARGV[1]  cost of this request (integer >= 0)
 *   ARGV[2]  '1' to consume, '0' to only read the state (getKey)
 *   ARGV[3]  burst (token-bucket only; '' for each window's limit)
 *   ARGV[4]  '1' when the caller may refund (skipSuccessfulRequests / skipFailedRequests):
 *            only then does fixed-window pay for the refund token
 *   ARGV[5]  the caller's deadline (Redis ms; '' for none): a decision that reaches Redis after
 *            it (queued behind a stalled connection, redirected after a failover, run by a
 *            frozen master that woke up) was already answered without Redis, so it counts
 *            nothing and replies { -1, now }
 *   ARGV[6]  blockDuration in ms ('0' for none): a request over the limit blocks the client
 *            for this long, whatever its windows say
 *   ARGV[7], ARGV[8], ...  limit (integer >= 1) and window (ms) of each window
 * Reply: { allowed (1|0), now (Redis ms), blockMs, then for each window: used, remaining,
 *          resetMs, refundToken, fits (1|0) }
 *   allowed  1 when every window admits the request (it is then counted in every window), 0
 *            when any refuses it or the client is blocked (nothing is counted in any window)
 *   blockMs  how long the client stays blocked (0: not blocked)
 *   resetMs  counted: ms until the window's quota resets (see the README per algorithm);
 *            refused by this window (fits 0): ms until a request of this cost would fit.
 *   refundToken  what the refund script needs to give this request back to this window.
 * A read on a client with nothing counted in any window replies nil.
 *
 * Each algorithm is two Lua functions: `evaluate(key, limit, window)` reads one window and
 * returns what it holds and whether the request fits, `apply(key, limit, window, evaluation)`
 * counts it there: the wrapper counts in no window unless the request fits in all. Time always comes from Redis
 * (TIME, read once by the wrapper as nowMs / nowUs, or the key's own TTL), never from the app
 * host, and a refused request writes nothing (but the block key, with blockDuration).
 *
 * sliding-window with the default options (one window, consuming, no blockDuration) has a
 * decision script of its own, SLIDING_WINDOW_ONE, that reads and writes the same keys.
 */

/** Wraps an algorithm's `evaluate` and `apply` with the deadline, the block, the windows and the reply. */
function decision(algorithm: string): Script {
  return new Script(
    `
local clock = redis.call('TIME')
local nowMs = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local nowUs = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local cost, consume, burstArg, refunds = tonumber(ARGV[1]), ARGV[2] == '1', ARGV[3], ARGV[4] == '1'
local deadline, blockMs = ARGV[5], tonumber(ARGV[6])
if consume and deadline ~= '' and nowMs > tonumber(deadline) then return { -1, nowMs } end
${algorithm}
local windows = (#ARGV - 6) / 2
local blocked = 0
if blockMs > 0 then blocked = math.max(0, redis.call('PTTL', KEYS[windows + 1])) end
if windows == 1 then
  -- one window (the common case): no table of results
  local r = evaluate(KEYS[1], tonumber(ARGV[7]), tonumber(ARGV[8]))
  if not consume then
    if not r.exists and blocked == 0 then return nil end
    return { 1, nowMs, blocked, r.used, r.remaining, r.reset, '', r.ok and 1 or 0 }
  end
  if r.ok and blocked == 0 then
    local used, remaining, reset, token = apply(KEYS[1], tonumber(ARGV[7]), tonumber(ARGV[8]), r)
    return { 1, nowMs, 0, used, remaining, reset, token, 1 }
  end
  if blocked == 0 and blockMs > 0 then
    redis.call('SET', KEYS[2], '1', 'PX', blockMs)
    blocked = blockMs
  end
  return { 0, nowMs, blocked, r.used, r.remaining, r.reset, '', r.ok and 1 or 0 }
end
local results, counted, fits = {}, false, true
for i = 1, windows do
  local r = evaluate(KEYS[i], tonumber(ARGV[5 + 2 * i]), tonumber(ARGV[6 + 2 * i]))
  results[i] = r
  counted = counted or r.exists
  fits = fits and r.ok
end
if not consume and not counted and blocked == 0 then return nil end
local allowed = consume and fits and blocked == 0
if consume and not allowed and blocked == 0 and blockMs > 0 then
  redis.call('SET', KEYS[windows + 1], '1', 'PX', blockMs)
  blocked = blockMs
end
local reply = { allowed and 1 or 0, nowMs, blocked }
if not consume then reply[1] = 1 end
for i = 1, windows do
  local r = results[i]
  local used, remaining, reset, token = r.used, r.remaining, r.reset, ''
  if allowed then used, remaining, reset, token = apply(KEYS[i], tonumber(ARGV[5 + 2 * i]), tonumber(ARGV[6 + 2 * i]), r) end
  local n = #reply
  reply[n + 1], reply[n + 2], reply[n + 3], reply[n + 4], reply[n + 5] = used, remaining, reset, token, r.ok and 1 or 0
end
return reply
`,
    'rateLimit.decide',
  )
}

const FIXED_WINDOW = `
local function evaluate(key, limit, window)
  local ttl = redis.call('PTTL', key)
  -- no key (or one without a TTL): a new window starts with this request
  local fresh = ttl <= 0
  local used = 0
  if fresh then ttl = window else used = tonumber(redis.call('GET', key)) or 0 end
  return { exists = used > 0, used = used, remaining = math.max(limit - used, 0), reset = ttl, ok = used + cost <= limit, fresh = fresh }
end
local function apply(key, limit, window, r)
  if r.fresh then
    redis.call('SET', key, cost, 'PX', window)
  else
    -- the window in progress keeps its end, even when a refund brought its count to 0
    redis.call('INCRBY', key, cost)
  end
  -- the window's absolute end identifies it for a later refund
  local token = ''
  if refunds then token = tostring(nowMs + r.reset) end
  return r.used + cost, limit - r.used - cost, r.reset, token
end
`

/*
 * sliding-window keeps each window's state in ONE string key, the window key + `:sw` (see
 * WINDOW_KEY_SUFFIX):
 * 32 bytes, four little-endian doubles (Lua's `struct` library, format '<dddd'):
 *   offset 0   start of the current fixed window (Redis ms, a multiple of the window length)
 *   offset 8   how much was counted in it
 *   offset 16  how much was counted in the window before it
 *   offset 24  when the key expires (Redis ms): start + 2 x window, set with PXAT, so that the
 *              key's PTTL gives Redis's clock (now = expiry - PTTL) without TIME
 * A new fixed window rewrites the whole key (SET ... PXAT); a request counted within the window
 * writes only its count (SETRANGE at offset 8, which keeps the TTL). A key written with another
 * window length (its expiry is not start + 2 x window) counts for nothing, and for
 * SLIDING_WINDOW_ONE so does a key whose TTL is no longer the one it was written with (PERSIST,
 * EXPIRE): both are written anew.
 */

/** Lua: counts `cost` in the window key `key`: only the count within a window, the whole key when one starts. */
const SLIDING_WINDOW_WRITE = `
if s == start then
  redis.call('SETRANGE', key, '8', struct.pack('<d', c))
else
  redis.call('SET', key, struct.pack('<dddd', start, c, p, start + 2 * window), 'PXAT', start + 2 * window)
end`

const SLIDING_WINDOW = `
local function evaluate(key, limit, window)
  local start = nowMs - (nowMs % window)
  local s, c, p, e = nil, 0, 0, nil
  local stored = redis.call('GET', key)
  if stored then
    s, c, p, e = struct.unpack('<dddd', stored)
    if e ~= s + 2 * window then s, c, p = nil, 0, 0 end
  end
  local exists = s ~= nil
  if s ~= start then
    if s == start - window then p = c else p = 0 end
    c = 0
  end
  local toEnd = start + window - nowMs
  local estimate = p * toEnd / window + c
  local used = math.ceil(estimate)
  local r = { exists = exists, used = used, remaining = math.max(limit - used, 0), reset = toEnd,
    ok = estimate + cost <= limit, start = start, s = s, c = c, p = p }
  if consume and not r.ok then
    -- the ms until a request of this cost would fit (the same as slidingWindowEstimate in local.ts)
    local wait
    if cost > limit then
      wait = toEnd
    elseif c + cost <= limit then
      -- later in this window the previous window's share shrinks enough
      wait = math.ceil(window * (1 - (limit - c - cost) / p)) - (window - toEnd)
    else
      -- in the next window this window's count becomes the shrinking share
      wait = toEnd + math.max(0, math.ceil(window * (1 - (limit - cost) / c)))
    end
    r.reset = math.max(wait, 1)
  end
  return r
end
local function apply(key, limit, window, r)
  local s, start, p, c, toEnd = r.s, r.start, r.p, r.c + cost, r.reset
  ${SLIDING_WINDOW_WRITE}
  local used = math.ceil(p * toEnd / window + c - 1e-9)
  return used, math.max(limit - used, 0), toEnd, tostring(start)
end
`

/*
 * The sliding-window decision of the default options (one window, consuming, no blockDuration),
 * in the fewest Redis commands and Lua calls: GET, PTTL (Redis's time, from the key's own
 * expiry; TIME only when the key is missing or its TTL is not the one it was written with) and
 * SETRANGE (SET when a window starts), no Lua function or table, one binary argument and a binary
 * reply (a number never goes through a string); what the caller can compute from the reply
 * (rounding, the wait of a refused request) it computes.
 *   KEYS[1]  the client's window key, `<prefix>{<identifier>}:sw`
 *   ARGV[1]  32 bytes, four little-endian doubles: limit, window (ms), cost, deadline (Redis ms,
 *            as ARGV[5] of the decision scripts: past it, the request counts nothing)
 * Reply: little-endian doubles, told apart by their length, now (Redis ms) always last:
 *   8 bytes   now: the deadline had passed, nothing was counted
 *   16 bytes  estimate, now: admitted and counted; the estimated count with it (used is its
 *             ceiling), resetMs the end of the fixed window that counted it (window - now %
 *             window), the refund token that window's start (now - now % window)
 *   24 bytes  count, previous count, now: refused, nothing written; the window's counts, from
 *             which the caller computes used and when the request would fit
 */
const SLIDING_WINDOW_ONE = `
local limit, window, cost, deadline = struct.unpack('<dddd', ARGV[1])
local key = KEYS[1]
local stored = redis.call('GET', key)
local now, s, c, p = nil, nil, 0, 0
if stored then
  local e
  s, c, p, e = struct.unpack('<dddd', stored)
  local ttl = redis.call('PTTL', key)
  if ttl > 0 and ttl <= 2 * window and e == s + 2 * window then now = e - ttl else s, c, p = nil, 0, 0 end
end
if not now then
  local clock = redis.call('TIME')
  now = clock[1] * 1000 + math.floor(clock[2] / 1000)
end
if now > deadline then return struct.pack('<d', now) end
local start = now - now % window
if s ~= start then
  if s == start - window then p = c else p = 0 end
  c = 0
end
local share = p * (start + window - now) / window
if share + c + cost > limit then return struct.pack('<ddd', c, p, now) end
c = c + cost
${SLIDING_WINDOW_WRITE}
return struct.pack('<dd', share + c, now)
`

const SLIDING_LOG = `
-- each window's key is a sorted set of admitted requests scored by Redis time in
-- microseconds; members are '<time>:<n>' so that requests in the same microsecond stay distinct.
local function untilExpired(key, index, windowUs)
  local entry = redis.call('ZRANGE', key, index, index, 'WITHSCORES')
  return math.max(1, math.ceil((tonumber(entry[2]) + windowUs - nowUs) / 1000))
end
local function evaluate(key, limit, window)
  local windowUs = window * 1000
  redis.call('ZREMRANGEBYSCORE', key, '-inf', nowUs - windowUs)
  local count = redis.call('ZCARD', key)
  local r = { exists = count > 0, used = count, remaining = math.max(limit - count, 0), reset = window, ok = count + cost <= limit }
  if not consume then
    if count > 0 then r.reset = untilExpired(key, 0, windowUs) end
  elseif not r.ok and cost <= limit then
    r.reset = untilExpired(key, count + cost - limit - 1, windowUs)
  end
  return r
end
local function apply(key, limit, window, r)
  local members = {}
  local seq = r.used
  for _ = 1, cost do
    local member
    repeat
      seq = seq + 1
      member = string.format('%d:%d', nowUs, seq)
    until redis.call('ZADD', key, 'NX', nowUs, member) == 1
    members[#members + 1] = member
  end
  redis.call('PEXPIRE', key, window)
  local total = r.used + cost
  -- an empty log before this request: its own entries are the oldest, a full window away
  local reset = window
  if total > cost then reset = untilExpired(key, 0, window * 1000) end
  return total, limit - total, reset, table.concat(members, ',')
end
`

const TOKEN_BUCKET = `
-- GCRA. Each window's key holds the theoretical arrival time (TAT) in Redis microseconds:
-- the bucket is full when TAT <= now, and each token pushes TAT one interval later.
local function remainingAt(t, capacity, interval)
  return math.max(0, math.floor((capacity - (t - nowUs)) / interval + 1e-9))
end
local function evaluate(key, limit, window)
  local burst = tonumber(burstArg) or limit
  local interval = window * 1000 / limit
  local capacity = interval * burst
  local stored = tonumber(redis.call('GET', key))
  local tat = math.max(stored or nowUs, nowUs)
  local remaining = remainingAt(tat, capacity, interval)
  local newTat = tat + interval * cost
  local allowAt = newTat - capacity
  local r = { exists = stored ~= nil, used = burst - remaining, remaining = remaining,
    reset = math.ceil((tat - nowUs) / 1000), ok = nowUs >= allowAt, newTat = newTat, burst = burst,
    capacity = capacity, interval = interval }
  if consume and not r.ok then r.reset = math.max(1, math.ceil((allowAt - nowUs) / 1000)) end
  return r
end
local function apply(key, limit, window, r)
  local untilFull = math.max(1, math.ceil((r.newTat - nowUs) / 1000))
  redis.call('SET', key, string.format('%d', math.floor(r.newTat)), 'PX', untilFull)
  local left = remainingAt(r.newTat, r.capacity, r.interval)
  return r.burst - left, left, untilFull, ''
end
`

/*
 * Refund scripts: give back a request admitted earlier (skipSuccessfulRequests /
 * skipFailedRequests), only into the window that counted it.
 *   KEYS[1]  the client's key
 *   ARGV[1]  cost that was consumed
 *   ARGV[2]  window in ms (sliding-window) or interval data (token-bucket, see below)
 *   ARGV[3..] the refund token the decision script returned
 */

const REFUND_FIXED_WINDOW = `
-- ARGV[3] is the absolute end (Redis ms) of the window that counted the request
local ttl = redis.call('PTTL', KEYS[1])
if ttl <= 0 then return 0 end
local time = redis.call('TIME')
local windowEnd = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000) + ttl
if math.abs(windowEnd - tonumber(ARGV[3])) > 2 then return 0 end
local used = tonumber(redis.call('GET', KEYS[1])) or 0
local back = math.min(used, tonumber(ARGV[1]))
if back > 0 then redis.call('DECRBY', KEYS[1], back) end
return back
`

const REFUND_SLIDING_WINDOW = `
-- ARGV[2] window ms, ARGV[3] start of the window that counted the request; the key keeps its TTL
local cost, window, counted = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local stored = redis.call('GET', KEYS[1])
if not stored then return 0 end
local s, c, p, e = struct.unpack('<dddd', stored)
if e ~= s + 2 * window then return 0 end
local offset, value
if s == counted then offset, value = '8', c elseif s == counted + window then offset, value = '16', p else return 0 end
local back = math.min(value, cost)
if back > 0 then redis.call('SETRANGE', KEYS[1], offset, struct.pack('<d', value - back)) end
return back
`

const REFUND_SLIDING_LOG = `
-- ARGV[3..] the members the request added; any still in the log are removed
if #ARGV < 3 then return 0 end
return redis.call('ZREM', KEYS[1], unpack(ARGV, 3))
`

const REFUND_TOKEN_BUCKET = `
-- ARGV[2] the interval in microseconds per token; TAT moves back by cost intervals, never before now
local back = tonumber(ARGV[1]) * tonumber(ARGV[2])
local stored = tonumber(redis.call('GET', KEYS[1]))
if not stored then return 0 end
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local tat = stored - back
if tat <= now then redis.call('DEL', KEYS[1]) return 1 end
redis.call('SET', KEYS[1], string.format('%d', math.floor(tat)), 'PX', math.max(1, math.ceil((tat - now) / 1000)))
return 1
`

/** The rate-limit algorithms. */
export type Algorithm = 'sliding-window' | 'fixed-window' | 'sliding-log' | 'token-bucket'

export const ALGORITHMS: readonly Algorithm[] = ['sliding-window', 'fixed-window', 'sliding-log', 'token-bucket']

/**
 * What ends the name of each window key of an algorithm. sliding-window's state moved from a hash
 * (express-redis-kit 0.2) to the packed string above, under a name of its own, so that versions
 * running side by side (a rolling deploy) never meet the other's key (WRONGTYPE); each counts
 * in its own key until the old one is gone.
 */
export const WINDOW_KEY_SUFFIX: Record<Algorithm, string> = {
  'sliding-window': ':sw',
  'fixed-window': '',
  'sliding-log': '',
  'token-bucket': '',
}

/** The sliding-window decision of the default options (see SLIDING_WINDOW_ONE). */
export const SLIDING_WINDOW_ONE_SCRIPT = new Script(SLIDING_WINDOW_ONE, 'rateLimit.decide')

/** Each algorithm's decision script and refund script. */
export const SCRIPTS: Record<Algorithm, { decide: Script; refund: Script }> = {
  'fixed-window': { decide: decision(FIXED_WINDOW), refund: new Script(REFUND_FIXED_WINDOW, 'rateLimit.refund') },
  'sliding-window': { decide: decision(SLIDING_WINDOW), refund: new Script(REFUND_SLIDING_WINDOW, 'rateLimit.refund') },
  'sliding-log': { decide: decision(SLIDING_LOG), refund: new Script(REFUND_SLIDING_LOG, 'rateLimit.refund') },
  'token-bucket': { decide: decision(TOKEN_BUCKET), refund: new Script(REFUND_TOKEN_BUCKET, 'rateLimit.refund') },
}
