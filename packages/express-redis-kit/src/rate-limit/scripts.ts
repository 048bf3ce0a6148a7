import { Script } from '../shared/redis.js'

/*
 * The Lua that makes every rate-limit decision, one script per algorithm.
 *
 * Common contract of the four decision scripts:
 *   KEYS[1]  the client's key, `<prefix>{<identifier>}`: the only key touched
 *   ARGV[1]  limit (integer >= 1)
 *   ARGV[2]  window in milliseconds
 *   ARGV[3]  cost of this request (integer >= 0)
 *   ARGV[4]  '1' to consume, '0' to only read the state (getKey)
 *   ARGV[5]  burst (token-bucket only)
 *   ARGV[6]  '1' when the caller may refund (skipSuccessfulRequests / skipFailedRequests):
 *            only then does fixed-window pay for the refund token
 *   ARGV[7]  the caller's deadline (Redis ms; '' for none): a decision that reaches Redis after
 *            it (queued behind a stalled connection, redirected after a failover, run by a
 *            frozen master that woke up) was already answered without Redis, so it counts
 *            nothing and replies { -1, now }
 * Reply: { allowed (1|0), used, remaining, resetMs, refundToken, now (Redis ms) }
 *   resetMs  allowed: ms until the quota resets (see the README per algorithm);
 *            rejected: ms until a request of this cost would be allowed.
 *   refundToken  what the refund script needs to give this request back.
 * A read on a key that does not exist replies nil.
 *
 * Time always comes from Redis (TIME, read once by the wrapper below as `clock`, or the key's
 * own TTL), never from the app host, and a rejected request writes nothing.
 */

/** Wraps a decision body (which reads the time from `clock`) with the deadline check and the reply's clock. */
function decision(body: string): Script {
  return new Script(`
local clock = redis.call('TIME')
local nowMs = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
if ARGV[4] == '1' and ARGV[7] and ARGV[7] ~= '' and nowMs > tonumber(ARGV[7]) then return { -1, nowMs } end
local function decide()
${body}
end
local reply = decide()
if not reply then return nil end
if reply[5] == nil then reply[5] = '' end
reply[6] = nowMs
return reply
`)
}

const FIXED_WINDOW = `
local limit, window, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local ttl = redis.call('PTTL', KEYS[1])
-- no key (or one without a TTL): a new window starts with this request
local fresh = ttl <= 0
local used = 0
if fresh then ttl = window else used = tonumber(redis.call('GET', KEYS[1])) or 0 end
if ARGV[4] == '0' then
  if used == 0 then return nil end
  return { 1, used, math.max(limit - used, 0), ttl }
end
if used + cost > limit then return { 0, used, math.max(limit - used, 0), ttl } end
if fresh then
  redis.call('SET', KEYS[1], cost, 'PX', window)
else
  -- the window in progress keeps its end, even when a refund brought its count to 0
  redis.call('INCRBY', KEYS[1], cost)
end
local token = ''
if ARGV[6] == '1' then
  -- the window's absolute end identifies it for a later refund
  local time = clock
  token = tostring(tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000) + ttl)
end
return { 1, used + cost, limit - used - cost, ttl, token }
`

const SLIDING_WINDOW = `
-- KEYS[1] is a hash: s = start of the current window (ms), c = its count, p = the previous window's count
local limit, window, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local time = clock
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local start = now - (now % window)
local stored = redis.call('HMGET', KEYS[1], 's', 'c', 'p')
if ARGV[4] == '0' and not stored[1] then return nil end
local s, c, p = tonumber(stored[1]), tonumber(stored[2]) or 0, tonumber(stored[3]) or 0
if s ~= start then
  if s == start - window then p = c else p = 0 end
  c = 0
end
local elapsed = now - start
local weight = (window - elapsed) / window
local estimate = p * weight + c
local toWindowEnd = window - elapsed
if ARGV[4] == '0' then
  local used = math.ceil(estimate)
  return { 1, used, math.max(limit - used, 0), toWindowEnd }
end
if estimate + cost > limit then
  local wait
  if cost > limit then
    wait = toWindowEnd
  elseif c + cost <= limit then
    -- later in this window the previous window's share shrinks enough
    wait = math.ceil(window * (1 - (limit - c - cost) / p)) - elapsed
  else
    -- in the next window this window's count becomes the shrinking share
    wait = toWindowEnd + math.max(0, math.ceil(window * (1 - (limit - cost) / c)))
  end
  local used = math.ceil(estimate)
  return { 0, used, math.max(limit - used, 0), math.max(wait, 1) }
end
c = c + cost
redis.call('HSET', KEYS[1], 's', start, 'c', c, 'p', p)
-- the expiry (the end of the next window) only moves when a new window starts
if s ~= start then redis.call('PEXPIRE', KEYS[1], window + toWindowEnd) end
local used = math.ceil(p * weight + c - 1e-9)
return { 1, used, math.max(limit - used, 0), toWindowEnd, tostring(start) }
`

const SLIDING_LOG = `
-- KEYS[1] is a sorted set of admitted requests scored by Redis time in microseconds;
-- members are '<time>:<n>' so that requests in the same microsecond stay distinct.
local limit, window, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local windowUs = window * 1000
local time = clock
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - windowUs)
local count = redis.call('ZCARD', KEYS[1])
local function untilExpired(index)
  local entry = redis.call('ZRANGE', KEYS[1], index, index, 'WITHSCORES')
  return math.max(1, math.ceil((tonumber(entry[2]) + windowUs - now) / 1000))
end
if ARGV[4] == '0' then
  if count == 0 then return nil end
  return { 1, count, math.max(limit - count, 0), untilExpired(0) }
end
if count + cost > limit then
  local wait = window
  if cost <= limit then wait = untilExpired(count + cost - limit - 1) end
  return { 0, count, math.max(limit - count, 0), wait }
end
local members = {}
local n = count
for _ = 1, cost do
  local member
  repeat
    n = n + 1
    member = string.format('%d:%d', now, n)
  until redis.call('ZADD', KEYS[1], 'NX', now, member) == 1
  members[#members + 1] = member
end
redis.call('PEXPIRE', KEYS[1], window)
count = count + cost
-- an empty log before this request: its own entries are the oldest, a full window away
local reset = window
if count > cost then reset = untilExpired(0) end
return { 1, count, limit - count, reset, table.concat(members, ',') }
`

const TOKEN_BUCKET = `
-- GCRA. KEYS[1] holds the theoretical arrival time (TAT) in Redis microseconds:
-- the bucket is full when TAT <= now, and each token pushes TAT one interval later.
local limit, window, cost, burst = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[5])
local interval = window * 1000 / limit
local capacity = interval * burst
local time = clock
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local stored = tonumber(redis.call('GET', KEYS[1]))
if ARGV[4] == '0' and not stored then return nil end
local tat = math.max(stored or now, now)
local function remainingAt(t) return math.max(0, math.floor((capacity - (t - now)) / interval + 1e-9)) end
if ARGV[4] == '0' then
  local remaining = remainingAt(tat)
  return { 1, burst - remaining, remaining, math.ceil((tat - now) / 1000) }
end
local newTat = tat + interval * cost
local allowAt = newTat - capacity
if now < allowAt then
  local remaining = remainingAt(tat)
  return { 0, burst - remaining, remaining, math.max(1, math.ceil((allowAt - now) / 1000)) }
end
local untilFull = math.max(1, math.ceil((newTat - now) / 1000))
redis.call('SET', KEYS[1], string.format('%d', math.floor(newTat)), 'PX', untilFull)
local remaining = remainingAt(newTat)
return { 1, burst - remaining, remaining, untilFull, '' }
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
-- ARGV[2] window ms, ARGV[3] start of the window that counted the request
local cost, window, counted = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local stored = redis.call('HMGET', KEYS[1], 's', 'c', 'p')
local s = tonumber(stored[1])
if not s then return 0 end
local field
if s == counted then field = 'c' elseif s == counted + window then field = 'p' else return 0 end
local value = tonumber(redis.call('HGET', KEYS[1], field)) or 0
local back = math.min(value, cost)
if back > 0 then redis.call('HINCRBY', KEYS[1], field, -back) end
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

/** Each algorithm's decision script and refund script. */
export const SCRIPTS: Record<Algorithm, { decide: Script; refund: Script }> = {
  'fixed-window': { decide: decision(FIXED_WINDOW), refund: new Script(REFUND_FIXED_WINDOW) },
  'sliding-window': { decide: decision(SLIDING_WINDOW), refund: new Script(REFUND_SLIDING_WINDOW) },
  'sliding-log': { decide: decision(SLIDING_LOG), refund: new Script(REFUND_SLIDING_LOG) },
  'token-bucket': { decide: decision(TOKEN_BUCKET), refund: new Script(REFUND_TOKEN_BUCKET) },
}
