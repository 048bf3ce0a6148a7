import { createHash, randomBytes } from 'node:crypto'
import { setTimeout as sleep } from 'node:timers/promises'
import { RESP_TYPES } from 'redis'
import { slotNode } from '../shared/cluster-health.js'
import { type CacheEvent, cacheChannel, publishCache } from '../shared/diagnostics.js'
import { RedisKitError } from '../shared/errors.js'
import type { Warn } from '../shared/logger.js'
import { clusterSlot, encodeKeyPart, isCluster, type RedisClient, runCommand } from '../shared/redis.js'
import { type EntryTimes, parseTimes } from './entry.js'
import { dropLocalCopies, type LocalCache } from './local.js'
import { COMMIT, DROP, INVALIDATE_URL, LOOKUP, PUT_BACK, RELEASE, REVALIDATE, STAGE, TAG, TAKE_TAG } from './scripts.js'

/**
 * Lock tokens only need to be unique: a random prefix drawn once per process and a counter
 * (a CSPRNG draw on every lookup cost about 5% of a hit's CPU).
 */
const TOKEN_PREFIX = randomBytes(12).toString('base64url')
let tokenCount = 0
const nextToken = (): string => `${TOKEN_PREFIX}.${(++tokenCount).toString(36)}`

/** Where LOOKUP's reply says whether the lookup took the fill lock ('owned'). */
const LOOKUP_STATE = 5

/**
 * On a Cluster, how far apart the clocks of two nodes may be (a fill's start is read on its
 * entry's node, an invalidation's time on its tag's node): a fill whose tags come from the
 * response and that began less than this after an invalidation of one of them is not stored.
 * NTP-synchronised nodes are milliseconds apart. Tags known before the handler runs use
 * counts instead, and a single Redis has one clock: neither needs a margin.
 */
export const CLOCK_MARGIN_MS = 250

/** How long a tag's invalidation count is kept after its last invalidation. */
const INVALIDATIONS_KEPT_MS = 24 * 60 * 60 * 1000

/**
 * How long a URL's invalidation count (by unsafe requests, or the '0' a fill marks itself with)
 * is kept: far longer than any fill, which must find it unchanged to commit.
 */
const URL_INVALIDATIONS_KEPT_MS = 60 * 60 * 1000

/**
 * On a Cluster, how many copies each tag's fence and set has (see scripts.ts): a fill fences
 * itself on one of them, an invalidation counts and empties all of them. On a single Redis, one.
 */
export const TAG_COPIES_ON_CLUSTER = 3

/** A copy of a tag's fence whose node failed goes last in a fill's choice for this long (ms). */
const FAILED_COPY_MS = 1_000

const CLUSTER_SLOTS = 16384

/** How often a caller waiting for another's fill looks again (ms). */
export const POLL_MS = 20

/** Traced names of the store's plain commands (see shared/diagnostics.ts). */
const COUNT_CALL = { operation: 'cache.count', command: 'HMGET' }
const UNLINK_CALL = { operation: 'cache.unlink', command: 'UNLINK' }

/**
 * Whether a lookup takes the fill lock when the entry is not fresh, and for what: a URL's
 * response (its fill then marks itself for unsafe requests to the URL, see scripts.ts) or a
 * cached() value; `false`: no lock (a HEAD).
 */
export type LockFor = false | 'response' | 'value'

/** What a lookup found. */
export interface Lookup {
  /** Redis's clock at the lookup (ms). */
  now: number
  /** The vary spec stored for the entry, if any. */
  vary: string | undefined
  /** The variant's metadata (see entry.ts; '' for a cached() value) and body, when stored. */
  meta: Buffer | undefined
  body: Buffer | undefined
  times: EntryTimes | undefined
  lock: 'fresh' | 'owned' | 'held' | 'none' | 'uncacheable'
  /** The token of the lock, when `lock` is 'owned'. */
  token: string
  /** When `lock` is 'owned': the tags the entry was last stored with. */
  lastTags: string[] | undefined
  /** When `lock` is 'owned': how many times the URL was invalidated ('' for never); the commit checks it. */
  invalidations: string
  /** Served from the local cache (no Redis command). */
  local?: boolean
}

/**
 * What a caller does with an entry, as {@link CacheStore.acquire} decides:
 *   'hit'    the entry is fresh: answer from it (`collapsed` when it came from a fill this caller waited for)
 *   'stale'  stale but within stale-while-revalidate: answer from it; `refresh` when this
 *            caller took the lock and must refresh it (in the background)
 *   'fill'   this caller holds the lock: ask the origin and store its answer (`lookup.body`
 *            may be a stale entry to revalidate or fall back on: stale-if-error)
 *   'origin' ask the origin and store nothing: the last fill found the response not storable
 *            ('uncacheable'), the fill waited for took too long ('wait-timeout'), or no lock
 *            was wanted (a HEAD with no fill in progress: 'no-lock')
 */
export type Acquired =
  | { state: 'hit'; lookup: Lookup; collapsed: boolean }
  | { state: 'stale'; lookup: Lookup; refresh: boolean }
  | { state: 'fill'; lookup: Lookup }
  | { state: 'origin'; lookup: Lookup; reason: 'uncacheable' | 'wait-timeout' | 'no-lock' }

/** One copy of a tag's fence: its set of entries and its invalidations (same slot). */
interface TagCopy {
  set: string
  invalidations: string
}

/** A tag's invalidation count as a fill read it: from which of the tag's copies, and what it was ('' for none). */
export interface TagCount {
  copy: number
  count: string
}

/**
 * What keeps a fill that overlapped an invalidation from being stored: the invalidation counts
 * of its tags read before the handler ran, or when it began (Redis ms) for tags known only then.
 */
export interface Fence {
  /** The invalidation counts, read before the handler ran, of the tags known then. */
  counts: Map<string, TagCount>
  /** When the fill began (Redis ms): the fence of a tag not known before. */
  startedAt: number
  /** How many times the URL had been invalidated by unsafe requests when the fill began ('' for never). */
  invalidations: string
  /**
   * Whether unsafe requests to a URL invalidate the entry (a response's, not a cached()
   * value's): a fill that no longer holds its lock then commits only against the URL's
   * invalidation count (see scripts.ts).
   */
  byUrl: boolean
}

/** Durations (ms) of a stored entry, from when it is stored. */
export interface Lifetimes {
  /** Fresh for this long (0 or less: stale already). */
  ttl: number
  staleWhileRevalidate: number
  staleIfError: number
  /** How long after its freshness the entry is kept to be revalidated (0: not kept for that). */
  revalidateFor?: number
}

/**
 * The Redis side of the cache, shared by cacheResponse() and cached(): lookups with a
 * single-flight lock, fenced stores, tags and their invalidation. See scripts.ts for the
 * data model.
 */
export class CacheStore {
  private readonly binary: RedisClient
  /** The vary spec last seen per entry, so that a hit costs one round trip. */
  private readonly varyByEntry = new Map<string, string>()
  /** Each tag's copies (their key names), computed once. */
  private readonly copiesByTag = new Map<string, TagCopy[]>()
  /** When a command to a tag copy's node last failed (a fill then tries the other copies first). */
  private readonly failedCopies = new Map<string, number>()

  constructor(
    readonly client: RedisClient,
    readonly prefix: string,
    readonly timeoutMs: number,
    readonly lockMs: number,
    /** The client's local cache, when this store serves fresh entries from memory (`localCache`). */
    readonly local?: LocalCache,
  ) {
    // Replies as Buffers, so that bodies come back byte for byte.
    this.binary = (client as unknown as { withTypeMapping(mapping: object): RedisClient }).withTypeMapping({
      [RESP_TYPES.BLOB_STRING]: Buffer,
    })
  }

  /**
   * The entry hash of an id given as its parts (e.g. 'response', protocol, host, path, query;
   * or 'cached', key): a fixed-size key whatever the parts hold. Each part is length-prefixed,
   * so no part can pass for another (a `\n` or `:` inside a part changes nothing).
   */
  entryKey(parts: readonly string[]): string {
    const hash = createHash('sha256')
    for (const part of parts) hash.update(`${part.length}:${part}`)
    return `${this.prefix}{${hash.digest('base64url').slice(0, 32)}}`
  }

  private lockKey(entryKey: string): string {
    return `${entryKey}:lock`
  }

  /** The tags an entry was last stored with (same slot). */
  private tagsKey(entryKey: string): string {
    return `${entryKey}:tags`
  }

  /** The copies of `tag`'s fence and set: one on a single Redis, {@link TAG_COPIES_ON_CLUSTER} on a Cluster. */
  private tagCopies(tag: string): TagCopy[] {
    let copies = this.copiesByTag.get(tag)
    if (!copies) {
      const count = isCluster(this.client) ? TAG_COPIES_ON_CLUSTER : 1
      copies = tagCopyKeys(this.prefix, tag, count).map((set) => ({ set, invalidations: `${set}:inv` }))
      if (this.copiesByTag.size >= 10_000) this.copiesByTag.clear()
      this.copiesByTag.set(tag, copies)
    }
    return copies
  }

  /**
   * The order in which a fill of `entryKey` tries a tag's copies: the ones on the entry's own
   * node first (the fill then needs no other shard), then the others; a copy whose node failed
   * a moment ago goes last.
   */
  private copyOrder(copies: TagCopy[], entryKey: string): number[] {
    if (copies.length === 1) return [0]
    const home = slotNode(this.client, entryKey)
    const now = Date.now()
    const rank = (copy: TagCopy) =>
      (now - (this.failedCopies.get(copy.set) ?? Number.NEGATIVE_INFINITY) < FAILED_COPY_MS ? 2 : 0) +
      (home !== undefined && slotNode(this.client, copy.set) === home ? 0 : 1)
    return copies.map((_, index) => index).sort((a, b) => rank(copies[a]!) - rank(copies[b]!) || a - b)
  }

  /**
   * Runs `command` on the first copy (in `order`) whose node answers; a copy whose node fails
   * is noted and the next one tried. Rejects with the last failure when none answers.
   */
  private async onFirstCopy<T>(
    copies: TagCopy[],
    order: number[],
    command: (copy: TagCopy, index: number) => Promise<T>,
  ): Promise<T> {
    let failure: unknown
    for (const index of order) {
      const copy = copies[index]!
      try {
        const reply = await command(copy, index)
        this.failedCopies.delete(copy.set)
        return reply
      } catch (error) {
        failure = error
        if (this.failedCopies.size >= 10_000) this.failedCopies.clear()
        this.failedCopies.set(copy.set, Date.now())
      }
    }
    throw failure
  }

  /**
   * How many times each of `tags` was invalidated so far, read before a fill of `entryKey` asks
   * the handler (one command per tag, in parallel), each from the first of the tag's copies
   * that answers: the fill is stored only if the counts of those copies are unchanged.
   */
  async invalidationCounts(tags: string[], entryKey: string): Promise<Map<string, TagCount>> {
    const counts = await Promise.all(
      tags.map(async (tag) => {
        const copies = this.tagCopies(tag)
        const counted = await this.onFirstCopy(copies, this.copyOrder(copies, entryKey), async (copy, index) => {
          const key = copy.invalidations
          const reply = await runCommand(
            this.client,
            key,
            (redis) => redis.hmGet(key, ['n']),
            this.timeoutMs,
            undefined,
            COUNT_CALL,
          )
          return { copy: index, count: String((reply as (string | null)[])[0] ?? '') }
        })
        return [tag, counted] as const
      }),
    )
    return new Map(counts)
  }

  /**
   * Until when a caller may wait for another's fill. A lock lives at most `lockMs`, so a
   * waiter that started when the lock was taken sees it expire (and takes it over) only
   * if it waits a little longer than that: a few polls past `lockMs`.
   */
  waitDeadline(): number {
    return Date.now() + this.lockMs + 3 * POLL_MS
  }

  /**
   * Decides what a caller does with the entry (see {@link Acquired}): one lookup for a hit;
   * an entry stored while this caller waited counts as a hit too;
   * when the entry turns out to vary on request headers other than the ones looked up with,
   * another lookup for this request's variant; while another caller fills the entry, looks
   * again every {@link POLL_MS} until it is stored, the filler gives up, or the wait has
   * lasted about `lockMs`. `variantOf(vary)` gives this request's variant for a vary spec;
   * `lock` whether to take the fill lock, and for what (see {@link LockFor}).
   * `accept(entry)` may refuse an entry (one that cannot be read): it is then treated as absent.
   * Rejects (ERK_REDIS_UNAVAILABLE) when Redis fails or is too slow.
   */
  async acquire(
    entryKey: string,
    variantOf: (vary: string) => string,
    lock: LockFor,
    warn: Warn,
    accept: (entry: Buffer) => boolean = () => true,
  ): Promise<Acquired> {
    let vary = this.varyByEntry.get(entryKey) ?? ''
    let waited = false
    /** When this caller first looked (Redis ms): an entry stored since answers it, even if already stale. */
    let since: number | undefined
    const deadline = this.waitDeadline()
    for (;;) {
      const lookup = await this.lookup(entryKey, variantOf(vary), lock, warn)
      since ??= lookup.now
      if (lookup.vary !== undefined && lookup.vary !== vary) {
        // Learned what this entry varies on: look again for this request's variant.
        this.rememberVary(entryKey, lookup.vary)
        if (lookup.lock === 'owned') this.giveBack(entryKey, lookup.token, warn)
        vary = lookup.vary
        continue
      }
      if (lookup.body && !accept(lookup.body)) lookup.body = undefined
      const { body: entry, times } = lookup
      if (entry && times && lookup.lock === 'fresh') return { state: 'hit', lookup, collapsed: waited }
      // A fill or revalidation this caller waited for answers it, even when what it stored
      // must be revalidated on every use (no-cache, max-age=0): it is as new as the request.
      if (entry && times && waited && times.storedAt >= since) {
        if (lookup.lock === 'owned') this.giveBack(entryKey, lookup.token, warn)
        return { state: 'hit', lookup, collapsed: true }
      }
      if (entry && times && lookup.now < times.staleWhileRevalidateUntil) {
        return { state: 'stale', lookup, refresh: lookup.lock === 'owned' }
      }
      if (lookup.lock === 'owned') return { state: 'fill', lookup }
      if (lookup.lock === 'uncacheable') return { state: 'origin', lookup, reason: 'uncacheable' }
      if (lookup.lock === 'none') return { state: 'origin', lookup, reason: 'no-lock' }
      if (Date.now() >= deadline) return { state: 'origin', lookup, reason: 'wait-timeout' }
      waited = true
      await sleep(POLL_MS)
    }
  }

  /** Remembers the vary spec of an entry (learned from Redis, or from a response being stored). */
  rememberVary(entryKey: string, vary: string): void {
    if (this.varyByEntry.size >= 10_000) this.varyByEntry.clear()
    this.varyByEntry.set(entryKey, vary)
  }

  /**
   * Looks the variant up; with `lock`, takes the fill lock if the entry is not fresh. With a
   * local cache, a fresh local copy answers without Redis, and a fresh reply is kept locally.
   */
  async lookup(entryKey: string, variant: string, lock: LockFor, warn: Warn): Promise<Lookup> {
    const { local } = this
    if (!local) return this.lookupRedis(entryKey, variant, lock, warn)
    const hit = local.get(entryKey, variant)
    if (hit) return hit
    const ticket = local.begin(entryKey)
    if (!ticket) return this.lookupRedis(entryKey, variant, lock, warn)
    let lookup: Lookup
    try {
      lookup = await this.lookupRedis(entryKey, variant, lock, warn)
    } catch (error) {
      local.end(ticket)
      throw error
    }
    local.keep(ticket, variant, lookup)
    return lookup
  }

  private async lookupRedis(entryKey: string, variant: string, lock: LockFor, warn: Warn): Promise<Lookup> {
    const token = lock ? nextToken() : ''
    // A lookup that timed out here may still run on Redis later (a stalled server) and take
    // the lock for nobody: give such a lock back at once rather than after lockTimeout.
    const giveBackLateLock = (late: unknown) => {
      if (String((late as unknown[])[LOOKUP_STATE]) === 'owned') this.giveBack(entryKey, token, warn)
    }
    const reply = (await LOOKUP.run(
      this.binary,
      [entryKey, this.lockKey(entryKey), this.tagsKey(entryKey)],
      [variant, token, String(this.lockMs), lock === 'response' ? String(URL_INVALIDATIONS_KEPT_MS) : ''],
      this.timeoutMs,
      giveBackLateLock,
    )) as [
      number,
      Buffer | null,
      Buffer | null,
      Buffer | null,
      Buffer | null,
      Buffer | string,
      (Buffer | null)?,
      (Buffer | null)?,
    ]
    const [now, vary, meta, body, times, state, lastTags, invalidations] = reply
    return {
      now: Number(now),
      vary: vary ? vary.toString() : undefined,
      meta: meta && body ? meta : undefined,
      body: meta && body ? body : undefined,
      times: times ? parseTimes(times.toString()) : undefined,
      lastTags: lastTags ? parseTags(lastTags.toString()) : undefined,
      invalidations: invalidations ? invalidations.toString() : '',
      lock: state.toString() as Lookup['lock'],
      token,
    }
  }

  /**
   * Stores a variant in two steps so that no invalidation that overlapped the fill can
   * leave its body behind: stage it (invisible to lookups), add the entry to its tags' sets
   * (each refuses if its tag was invalidated since the fill began: `fence` has the counts read
   * before the handler ran, and the copy of the tag they were read from, or else the fill's
   * start on Redis's clock, checked on any copy that answers), and commit only if every tag
   * took it. An invalidation counts itself and notes its time, then deletes what its
   * tag's set holds: either it finds this entry there (and deletes the staged or committed
   * value), or this fill sees it and drops its value. The lock is held until the commit, so
   * waiters never see the staged value. `madeAt` (this host's ms) is when the response was
   * made: its lifetimes count from then. `timeoutMs` bounds each command (a caller that does
   * not wait for the store may allow more than a lookup gets: see {@link afterResponseTimeoutMs}).
   * Resolves to whether the value was stored (false: an invalidation overlapped the fill).
   */
  async store(
    entryKey: string,
    variant: string,
    meta: string,
    body: Buffer,
    vary: string,
    lifetimes: Lifetimes,
    madeAt: number,
    token: string,
    tags: string[],
    fence: Fence,
    timeoutMs = this.timeoutMs,
  ): Promise<boolean> {
    await STAGE.run(this.client, [entryKey], [variant, meta, body, String(this.lockMs * 2)], timeoutMs)
    const keepMs = String(keptFor(lifetimes))
    const since = String(fence.startedAt - (isCluster(this.client) ? CLOCK_MARGIN_MS : 0))
    const tagged = await Promise.all(
      tags.map((tag) => {
        const copies = this.tagCopies(tag)
        const counted = fence.counts.get(tag)
        // a count is checked on the copy it was read from; a start time on any copy (every
        // invalidation notes its time on all of them)
        const order = counted === undefined ? this.copyOrder(copies, entryKey) : [counted.copy]
        return this.onFirstCopy(copies, order, (copy) =>
          TAG.run(
            this.client,
            [copy.set, copy.invalidations],
            counted === undefined ? [entryKey, keepMs, 't', since] : [entryKey, keepMs, 'n', counted.count],
            timeoutMs,
          ),
        )
      }),
    )
    if (tagged.some((reply) => Number(reply) !== 1)) {
      await runCommand(this.client, entryKey, (redis) => redis.unlink(entryKey), timeoutMs, undefined, UNLINK_CALL)
      await this.release(entryKey, token, false)
      return false
    }
    // A commit may replace what this process keeps locally (a new vary spec drops every variant).
    const committed = await COMMIT.run(
      this.client,
      [entryKey, this.lockKey(entryKey), this.tagsKey(entryKey)],
      [
        token,
        variant,
        vary,
        ...lifetimeArguments(lifetimes, madeAt),
        tags.length > 0 ? JSON.stringify(tags) : '',
        fence.invalidations,
        fence.byUrl ? '1' : '',
      ],
      timeoutMs,
    )
    dropLocalCopies(this.client, [entryKey])
    return Number(committed) === 1
  }

  /**
   * How long each command storing a response may take once the response went out: no request
   * waits for it any more (only the fill's waiters, who wait as long as its lock lives), and a
   * body of up to `maxBodyBytes` takes far longer to reach Redis than a lookup, more so on a
   * busy host. `lockMs`, or `timeoutMs` if that is longer.
   */
  get afterResponseTimeoutMs(): number {
    return Math.max(this.timeoutMs, this.lockMs)
  }

  /**
   * A stale variant was revalidated (the origin answered 304): it keeps its body and gets new
   * metadata and lifetimes, unless the URL was invalidated since the revalidation began.
   * Releases the lock.
   */
  async revalidate(
    entryKey: string,
    variant: string,
    meta: string,
    lifetimes: Lifetimes,
    madeAt: number,
    token: string,
    invalidations: string,
  ): Promise<void> {
    await REVALIDATE.run(
      this.client,
      [entryKey, this.lockKey(entryKey)],
      [token, variant, meta, ...lifetimeArguments(lifetimes, madeAt), invalidations],
      this.timeoutMs,
    )
  }

  /**
   * Drops a variant that may no longer be stored (its revalidation's 304 made it private), on
   * every instance, and gives the lock up telling the waiters to ask the origin themselves.
   */
  async drop(entryKey: string, variant: string, token: string): Promise<void> {
    try {
      await DROP.run(
        this.client,
        [entryKey, this.lockKey(entryKey)],
        [variant, token, String(this.lockMs)],
        this.timeoutMs,
      )
    } finally {
      dropLocalCopies(this.client, [entryKey])
    }
  }

  /**
   * Removes every variant stored for each of the entries (a successful unsafe request to
   * their URLs), on every instance; a fill of one of them in progress is not stored. Writes
   * nothing for an entry with nothing stored and no fill in progress.
   */
  async invalidateEntries(entryKeys: string[]): Promise<void> {
    const keepMs = String(URL_INVALIDATIONS_KEPT_MS)
    const keys = [...new Set(entryKeys)]
    try {
      await Promise.all(
        keys.map((key) => INVALIDATE_URL.run(this.client, [key, this.lockKey(key)], [keepMs], this.timeoutMs)),
      )
    } finally {
      dropLocalCopies(this.client, keys)
    }
  }

  /**
   * Gives the fill lock up without waiting for Redis: waiters then take it over at once
   * (`uncacheable`: they go to the origin themselves). A failure is logged: the lock then
   * expires after `lockMs`.
   */
  giveBack(entryKey: string, token: string, warn: Warn, uncacheable = false): void {
    this.release(entryKey, token, uncacheable).catch((error) =>
      warn('express-redis-kit cache: could not give a fill lock back; it expires by itself', error),
    )
  }

  /** Gives the fill lock up; `uncacheable` tells the waiters to go to the origin themselves. */
  async release(entryKey: string, token: string, uncacheable: boolean): Promise<void> {
    await RELEASE.run(
      this.client,
      [entryKey, this.lockKey(entryKey)],
      [token, uncacheable ? '1' : '0', String(this.lockMs)],
      this.timeoutMs,
    )
  }

  /**
   * Removes every entry carrying any of `tags`, on every instance. Resolves to the number
   * of entries removed. `source` names the caller in the diagnostics event. Every copy of
   * each tag's fence is counted and emptied (one script each, in parallel). When a copy or an
   * entry cannot be reached (its shard is down), what could be reached is still invalidated,
   * the entries that could not be deleted are put back in their tags' sets so that the next
   * call finds them, and it rejects (`ERK_REDIS_UNAVAILABLE`): never a success while an entry
   * carrying one of the tags may survive.
   */
  async invalidateTags(tags: string[], source: CacheEvent['source']): Promise<number> {
    // Far longer than any fill can last (a slow handler may outlive its lock): a count that
    // expired and started again could match what a fill read before.
    const keepMs = String(INVALIDATIONS_KEPT_MS)
    const copies = tags.flatMap((tag) => this.tagCopies(tag))
    const taken = await Promise.allSettled(
      copies.map(
        (copy) =>
          TAKE_TAG.run(this.client, [copy.set, copy.invalidations], [keepMs], this.timeoutMs) as Promise<unknown[]>,
      ),
    )
    /** Each entry taken, with the copies whose sets held it. */
    const heldBy = new Map<string, TagCopy[]>()
    taken.forEach((outcome, index) => {
      if (outcome.status === 'rejected') return
      for (const member of outcome.value) {
        const key = String(member)
        heldBy.set(key, [...(heldBy.get(key) ?? []), copies[index]!])
      }
    })
    const entries = [...heldBy.keys()]
    let unlinked: PromiseSettledResult<unknown>[]
    try {
      unlinked = await Promise.allSettled(
        entries.map((key) =>
          runCommand(this.client, key, (redis) => redis.unlink(key), this.timeoutMs, undefined, UNLINK_CALL),
        ),
      )
    } finally {
      dropLocalCopies(this.client, entries)
    }
    const kept = entries.filter((_, index) => unlinked[index]!.status === 'rejected')
    const failures = [...taken, ...unlinked].filter((outcome) => outcome.status === 'rejected')
    if (failures.length > 0) {
      const lost = await this.putBack(kept, heldBy)
      const unreachable = taken.filter((outcome) => outcome.status === 'rejected').length
      throw new RedisKitError(
        'ERK_REDIS_UNAVAILABLE',
        `express-redis-kit invalidateTags: incomplete, Redis failed for ${unreachable} of ${copies.length} tag ` +
          `fences and ${kept.length} of ${entries.length} entries (what could be reached was invalidated; ` +
          `${lost > 0 ? `${lost} entries could not be put back in their tags' sets` : 'call it again'})`,
        { cause: (failures[0] as PromiseRejectedResult).reason, status: 503 },
      )
    }
    publishCache(() => ({ source, result: 'invalidated', tags, count: entries.length }))
    return entries.length
  }

  /**
   * Puts entries an invalidation took from their tags' sets but could not delete back in those
   * sets, so that the next invalidation of the tags finds them. Resolves to how many could not be.
   */
  private async putBack(entries: string[], heldBy: Map<string, TagCopy[]>): Promise<number> {
    const byCopy = new Map<TagCopy, string[]>()
    for (const entry of entries) {
      for (const copy of heldBy.get(entry) ?? []) byCopy.set(copy, [...(byCopy.get(copy) ?? []), entry])
    }
    const keepMs = String(INVALIDATIONS_KEPT_MS)
    // in batches: Lua's unpack() takes a few thousand values at most
    const batches = [...byCopy].flatMap(([copy, members]) =>
      Array.from({ length: Math.ceil(members.length / 500) }, (_, i) => ({
        copy,
        members: members.slice(i * 500, (i + 1) * 500),
      })),
    )
    const outcomes = await Promise.allSettled(
      batches.map(({ copy, members }) => PUT_BACK.run(this.client, [copy.set], [keepMs, ...members], this.timeoutMs)),
    )
    const lost = new Set<string>()
    batches.forEach(({ members }, index) => {
      if (outcomes[index]!.status === 'rejected') for (const member of members) lost.add(member)
    })
    return lost.size
  }
}

/**
 * The set keys of `tag`'s `count` copies (each copy's invalidations are the set's key +
 * `:inv`). The first is `<prefix>tag:{<tag>}`; copy j (1, 2, ...) is
 * `<prefix>tag:{<tag>#<j>.<i>}`, with the smallest i that puts it in a slot about j / count of
 * the way round the slot space from the first: with the usual contiguous slot ranges, on
 * another master than the others. (`#` never appears in an encoded tag's raw form, and an
 * encoded one has no `.`: no copy's key is another tag's.)
 */
export function tagCopyKeys(prefix: string, tag: string, count: number): string[] {
  const name = encodeKeyPart(tag)
  const first = `${prefix}tag:{${name}}`
  const keys = [first]
  const homeSlot = clusterSlot(first)
  const window = Math.floor(CLUSTER_SLOTS / count / 4)
  for (let copy = 1; copy < count; copy++) {
    const target = (homeSlot + Math.floor((copy * CLUSTER_SLOTS) / count)) % CLUSTER_SLOTS
    for (let i = 0; ; i++) {
      const key = `${prefix}tag:{${name}#${copy}.${i}}`
      if ((clusterSlot(key) - target + CLUSTER_SLOTS) % CLUSTER_SLOTS < window) {
        keys.push(key)
        break
      }
    }
  }
  return keys
}

/**
 * Publishes what `acquire` found on the cache channel: `waited` (how long, when this caller
 * waited for another's fill), then `hit`, `stale` or `miss` (with the reason when nothing is
 * filled). `started` is `performance.now()` before `acquire`. Call only when the channel has subscribers.
 */
export function publishAcquired(source: CacheEvent['source'], key: string, acquired: Acquired, started: number): void {
  if (
    (acquired.state === 'hit' && acquired.collapsed) ||
    (acquired.state === 'origin' && acquired.reason === 'wait-timeout')
  )
    cacheChannel.publish({ source, result: 'waited', key, waitedMs: performance.now() - started } satisfies CacheEvent)
  const result = acquired.state === 'hit' || acquired.state === 'stale' ? acquired.state : 'miss'
  cacheChannel.publish({
    source,
    result,
    key,
    ...(acquired.state === 'origin' ? { reason: acquired.reason } : {}),
    ...(acquired.lookup.local ? { local: true } : {}),
  } satisfies CacheEvent)
}

/** How long a stored entry is of use: fresh, stale, or kept to be revalidated. */
const keptFor = (lifetimes: Lifetimes): number =>
  Math.max(
    1,
    lifetimes.ttl + Math.max(lifetimes.staleWhileRevalidate, lifetimes.staleIfError, lifetimes.revalidateFor ?? 0),
  )

/**
 * The lifetimes as COMMIT and REVALIDATE take them: ttl, swr, sie, revalidation window, and
 * how long ago the response was made (ms).
 */
const lifetimeArguments = (lifetimes: Lifetimes, madeAt: number): string[] => [
  String(Math.round(lifetimes.ttl)),
  String(Math.round(lifetimes.staleWhileRevalidate)),
  String(Math.round(lifetimes.staleIfError)),
  String(Math.round(lifetimes.revalidateFor ?? 0)),
  String(Math.max(0, Date.now() - madeAt)),
]

/** The tags stored beside an entry (JSON of strings), or undefined if unreadable. */
function parseTags(text: string): string[] | undefined {
  try {
    const tags = JSON.parse(text) as unknown
    return Array.isArray(tags) && tags.every((tag) => typeof tag === 'string') ? tags : undefined
  } catch {
    return undefined
  }
}
