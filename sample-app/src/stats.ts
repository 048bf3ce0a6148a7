import diagnostics from 'node:diagnostics_channel'
import { Router } from 'express'
import { type CacheEvent, CHANNELS, type RateLimitEvent } from 'express-redis-kit'

/** GET /stats: what this instance's cache and rate limiters decided since it started; numbers only. */
export interface StatsBody {
  /** When this instance started counting (ISO 8601). */
  since: string
  cache: {
    /** Lookups answered from the cache (fresh, or stale while revalidating). */
    hits: number
    /** Lookups that went to the route (nothing cached, or not usable). */
    misses: number
    /** hits / (hits + misses), from 0 to 1; null before the first lookup. */
    hitRatio: number | null
  }
  rateLimit: {
    /** Requests a rate limiter let through. */
    allowed: number
    /** Requests a rate limiter refused (429), whether Redis or the local block cache decided. */
    limited: number
  }
}

/**
 * Counts this app's cache hits and misses and its rate limiters' decisions from the kit's
 * diagnostics channels (`CHANNELS.cache`, `CHANNELS.rateLimit`). Only the events of keys under
 * `prefix` count: another app in the same process (a test's) has its own numbers.
 */
export class RequestStats {
  readonly #since = new Date()
  #hits = 0
  #misses = 0
  #allowed = 0
  #limited = 0
  readonly #prefix: string

  readonly #onCache = (message: unknown): void => {
    const event = message as CacheEvent
    if (!event.key?.startsWith(this.#prefix)) return
    if (event.result === 'hit' || event.result === 'stale') this.#hits++
    else if (event.result === 'miss') this.#misses++
  }

  readonly #onRateLimit = (message: unknown): void => {
    const event = message as RateLimitEvent
    // shadow mode only says what would have been limited: the request went through
    if (!event.prefix.startsWith(this.#prefix)) return
    if (event.result === 'limited' && event.mode === 'enforce') this.#limited++
    else if (event.result !== 'error') this.#allowed++
  }

  /** @param prefix the app's REDIS_PREFIX: every key of its caches and limiters starts with it. */
  constructor(prefix: string) {
    this.#prefix = prefix
    diagnostics.subscribe(CHANNELS.cache, this.#onCache)
    diagnostics.subscribe(CHANNELS.rateLimit, this.#onRateLimit)
  }

  snapshot(): StatsBody {
    const lookups = this.#hits + this.#misses
    return {
      since: this.#since.toISOString(),
      cache: {
        hits: this.#hits,
        misses: this.#misses,
        hitRatio: lookups === 0 ? null : this.#hits / lookups,
      },
      rateLimit: { allowed: this.#allowed, limited: this.#limited },
    }
  }

  /** Stops counting (the channels keep no reference to this instance). */
  close(): void {
    diagnostics.unsubscribe(CHANNELS.cache, this.#onCache)
    diagnostics.unsubscribe(CHANNELS.rateLimit, this.#onRateLimit)
  }
}

/** GET /stats: {@link StatsBody} of this instance, never cached (the UI polls it). */
export function statsRoutes(stats: RequestStats): Router {
  const router = Router()
  router.get('/stats', (_req, res) => {
    res.set('Cache-Control', 'no-store').json(stats.snapshot())
  })
  return router
}
