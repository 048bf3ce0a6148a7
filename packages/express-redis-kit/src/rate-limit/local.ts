import type { Algorithm } from './scripts.js'

/** One window of a decision, as the decision scripts reply it (see scripts.ts). */
export interface WindowResult {
  used: number
  remaining: number
  /** Counted: ms until the window's quota resets; refused by this window: ms until the request would fit. */
  resetMs: number
  /** What the refund script needs to give the request back to this window ('' for nothing). */
  token: string
  /** Whether the request fits in this window. */
  fits: boolean
}

/** A decision: admitted (counted in every window) or not, and each window's state. */
export interface Decision {
  allowed: boolean
  /** How long the client stays blocked by `blockDuration` (0: not blocked). */
  blockMs: number
  windows: WindowResult[]
}

/** How long a refused request has to wait: its block, or until every window lets it in. */
export function waitOf(decision: Decision): number {
  let wait = Math.max(decision.blockMs, 0)
  for (const window of decision.windows) if (!window.fits && window.resetMs > wait) wait = window.resetMs
  return wait
}

/** A window's limit and length (ms). */
export interface Window {
  limit: number
  windowMs: number
}

interface Evaluation {
  used: number
  remaining: number
  resetMs: number
  fits: boolean
  apply(): Omit<WindowResult, 'fits'>
}

/** Gives back `cost` counted in the window `token` names (see each algorithm's `apply`); false when the window is left empty. */
type Refund = (stored: Stored, window: Window, cost: number, token: string, now: number) => boolean

type Evaluate = (
  state: Map<string, Stored>,
  key: string,
  window: Window,
  cost: number,
  burst: number | undefined,
  now: number,
) => Evaluation

interface Stored {
  expiresAt: number
  value: unknown
}

/**
 * The same algorithms as the decision scripts, in this process's memory, for
 * `onRedisError: 'local'`: each instance limits on its own while Redis cannot answer. Keeps at
 * most `maxKeys` windows (the least recently used go first). Its clock is this host's.
 */
export class LocalLimiter {
  private readonly state = new Map<string, Stored>()
  private readonly evaluate: Evaluate
  private readonly giveBack: Refund

  constructor(
    algorithm: Algorithm,
    private readonly maxKeys: number,
  ) {
    this.evaluate = EVALUATORS[algorithm]
    this.giveBack = REFUNDS[algorithm]
  }

  decide(
    keys: string[],
    blockKey: string,
    windows: Window[],
    cost: number,
    burst: number | undefined,
    blockMs: number,
  ): Decision {
    const now = Date.now()
    const evaluations = windows.map((window, i) => this.evaluate(this.state, keys[i]!, window, cost, burst, now))
    const block = read(this.state, blockKey, now)
    let blocked = block === undefined ? 0 : block.expiresAt - now
    const allowed = blocked === 0 && evaluations.every((evaluation) => evaluation.fits)
    if (!allowed && blocked === 0 && blockMs > 0) {
      this.write(blockKey, { expiresAt: now + blockMs, value: true })
      blocked = blockMs
    }
    const results = evaluations.map((evaluation) => {
      const { used, remaining, resetMs, token } = allowed ? evaluation.apply() : { ...evaluation, token: '' }
      return { used, remaining, resetMs, token, fits: evaluation.fits }
    })
    for (const key of keys) this.touch(key)
    return { allowed, blockMs: blocked, windows: results }
  }

  /** Gives back a request it admitted (skipSuccessfulRequests / skipFailedRequests), only into the windows that counted it. */
  refund(keys: string[], windows: Window[], cost: number, decision: Decision): void {
    const now = Date.now()
    for (const [i, key] of keys.entries()) {
      const stored = read(this.state, key, now)
      const { token } = decision.windows[i]!
      if (stored !== undefined && !this.giveBack(stored, windows[i]!, cost, token, now)) this.state.delete(key)
    }
  }

  /** Forgets a client's windows and block. */
  delete(keys: string[]): void {
    for (const key of keys) this.state.delete(key)
  }

  /** Forgets everything (Redis decides again). */
  clear(): void {
    this.state.clear()
  }

  private write(key: string, stored: Stored): void {
    this.state.delete(key)
    this.state.set(key, stored)
    this.evict()
  }

  private touch(key: string): void {
    const stored = this.state.get(key)
    if (stored !== undefined) this.write(key, stored)
  }

  private evict(): void {
    for (const key of this.state.keys()) {
      if (this.state.size <= this.maxKeys) return
      this.state.delete(key)
    }
  }
}

function read(state: Map<string, Stored>, key: string, now: number): Stored | undefined {
  const stored = state.get(key)
  if (stored === undefined || stored.expiresAt > now) return stored
  state.delete(key)
  return undefined
}

const fixedWindow: Evaluate = (state, key, { limit, windowMs }, cost, _burst, now) => {
  const stored = read(state, key, now)
  const used = stored === undefined ? 0 : (stored.value as number)
  const resetMs = stored === undefined ? windowMs : stored.expiresAt - now
  return {
    used,
    remaining: Math.max(limit - used, 0),
    resetMs,
    fits: used + cost <= limit,
    apply() {
      state.set(key, { expiresAt: now + resetMs, value: used + cost })
      // The window's end identifies it.
      return { used: used + cost, remaining: limit - used - cost, resetMs, token: String(now + resetMs) }
    },
  }
}

const slidingWindow: Evaluate = (state, key, { limit, windowMs }, cost, _burst, now) => {
  const stored = read(state, key, now)?.value as { s: number; c: number; p: number } | undefined
  const start = now - (now % windowMs)
  let { c, p } = stored ?? { c: 0, p: 0 }
  if (stored?.s !== start) {
    p = stored?.s === start - windowMs ? c : 0
    c = 0
  }
  const toWindowEnd = windowMs - (now - start)
  const { used, fits, wait } = slidingWindowEstimate(limit, windowMs, cost, c, p, toWindowEnd)
  return {
    used,
    remaining: Math.max(limit - used, 0),
    resetMs: fits ? toWindowEnd : wait,
    fits,
    apply() {
      const counted = c + cost
      state.set(key, { expiresAt: start + 2 * windowMs, value: { s: start, c: counted, p } })
      const usedNow = Math.ceil((p * toWindowEnd) / windowMs + counted - 1e-9)
      return { used: usedNow, remaining: Math.max(limit - usedNow, 0), resetMs: toWindowEnd, token: String(start) }
    },
  }
}

/**
 * The sliding-window estimate of a window that counted `c` and whose previous window counted `p`,
 * `toWindowEnd` ms before its end (as the decision scripts compute it): the quota used, whether
 * a request of `cost` fits, and if it does not, the ms until it would (as SLIDING_WINDOW_WAIT in
 * scripts.ts).
 */
export function slidingWindowEstimate(
  limit: number,
  windowMs: number,
  cost: number,
  c: number,
  p: number,
  toWindowEnd: number,
): { used: number; fits: boolean; wait: number } {
  const estimate = (p * toWindowEnd) / windowMs + c
  const fits = estimate + cost <= limit
  let wait = 0
  if (!fits) {
    if (cost > limit) wait = toWindowEnd
    // later in this window the previous window's share shrinks enough
    else if (c + cost <= limit) wait = Math.ceil(windowMs * (1 - (limit - c - cost) / p)) - (windowMs - toWindowEnd)
    // in the next window this window's count becomes the shrinking share
    else wait = toWindowEnd + Math.max(0, Math.ceil(windowMs * (1 - (limit - cost) / c)))
    wait = Math.max(wait, 1)
  }
  return { used: Math.ceil(estimate), fits, wait }
}

const slidingLog: Evaluate = (state, key, { limit, windowMs }, cost, _burst, now) => {
  const log = ((read(state, key, now)?.value as number[] | undefined) ?? []).filter((time) => time > now - windowMs)
  const untilExpired = (index: number) => Math.max(1, Math.ceil(log[index]! + windowMs - now))
  const count = log.length
  const fits = count + cost <= limit
  return {
    used: count,
    remaining: Math.max(limit - count, 0),
    resetMs: !fits && cost <= limit ? untilExpired(count + cost - limit - 1) : windowMs,
    fits,
    apply() {
      for (let i = 0; i < cost; i++) log.push(now)
      state.set(key, { expiresAt: now + windowMs, value: log })
      return {
        used: log.length,
        remaining: limit - log.length,
        resetMs: log.length > cost ? untilExpired(0) : windowMs,
        token: String(now),
      }
    },
  }
}

const tokenBucket: Evaluate = (state, key, { limit, windowMs }, cost, burst = limit, now) => {
  const interval = windowMs / limit
  const capacity = interval * burst
  const tat = Math.max((read(state, key, now)?.value as number | undefined) ?? now, now)
  const remainingAt = (t: number) => Math.max(0, Math.floor((capacity - (t - now)) / interval + 1e-9))
  const remaining = remainingAt(tat)
  const newTat = tat + interval * cost
  const allowAt = newTat - capacity
  const fits = now >= allowAt
  return {
    used: burst - remaining,
    remaining,
    resetMs: fits ? Math.ceil(tat - now) : Math.max(1, Math.ceil(allowAt - now)),
    fits,
    apply() {
      const untilFull = Math.max(1, Math.ceil(newTat - now))
      state.set(key, { expiresAt: now + untilFull, value: newTat })
      const left = remainingAt(newTat)
      return { used: burst - left, remaining: left, resetMs: untilFull, token: '' }
    },
  }
}

const REFUNDS: Record<Algorithm, Refund> = {
  'fixed-window': (stored, _window, cost, token) => {
    if (stored.expiresAt === Number(token)) stored.value = Math.max(0, (stored.value as number) - cost)
    return true
  },
  'sliding-window': (stored, { windowMs }, cost, token) => {
    const counts = stored.value as { s: number; c: number; p: number }
    if (counts.s === Number(token)) counts.c = Math.max(0, counts.c - cost)
    else if (counts.s === Number(token) + windowMs) counts.p = Math.max(0, counts.p - cost)
    return true
  },
  'sliding-log': (stored, _window, cost, token) => {
    const log = stored.value as number[]
    for (let given = 0; given < cost; given++) {
      const at = log.lastIndexOf(Number(token))
      if (at === -1) break
      log.splice(at, 1)
    }
    return log.length > 0
  },
  'token-bucket': (stored, { limit, windowMs }, cost, _token, now) => {
    stored.value = (stored.value as number) - (windowMs / limit) * cost
    return (stored.value as number) > now
  },
}

const EVALUATORS: Record<Algorithm, Evaluate> = {
  'fixed-window': fixedWindow,
  'sliding-window': slidingWindow,
  'sliding-log': slidingLog,
  'token-bucket': tokenBucket,
}
