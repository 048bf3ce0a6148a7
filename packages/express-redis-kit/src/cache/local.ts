import { type NodeClient, refreshTopology } from '../shared/cluster-health.js'
import type { Warn } from '../shared/logger.js'
import { check, rejectUnknownOptions } from '../shared/options.js'
import { isCluster, type RedisClient } from '../shared/redis.js'
import type { Lookup } from './store.js'

/*
 * The local cache: fresh entries kept in the process's memory and served with no Redis
 * command, kept coherent by Redis itself (server-assisted client-side caching, CLIENT
 * TRACKING in broadcasting mode).
 *
 * One LocalCache per user client, shared by every cacheResponse() and cached() that asks for
 * it. It owns one connection per Redis node (per master on a Cluster), duplicated from the
 * user's (RESP3, node-redis's `emitInvalidate`), registered with
 * `CLIENT TRACKING ON BCAST PREFIX <prefix>{` for each cache prefix: Redis pushes the name of
 * every key under those prefixes that any client changes (writes, deletes, expiries, evictions,
 * FLUSHALL as a null), to every process.
 *
 * What keeps it coherent:
 *   - Fills. A lookup registers its key as pending (with the key's invalidation generation)
 *     before its command is sent; its reply is kept only if no invalidation of the key, and no
 *     flush, came in between, and tracking was up when it was sent. A reply and its key's
 *     invalidation can arrive in one chunk, the push handled first: the generation catches it.
 *   - The fence. A hit is served only if a PING sent on every tracking connection no more than
 *     `fenceMs` ago has been answered. In broadcasting mode Redis queues a write's invalidation
 *     before the write's reply, so a PONG cannot overtake an invalidation of a write that
 *     completed before the PING: a stalled or half-dead tracking connection stops local hits
 *     within `fenceMs`, it never makes them stale. PINGs run every `fenceMs / 4` while local
 *     hits are asked for (and stop after 2 s without any). On a Cluster the probe is ROLE, and
 *     only a master's answer counts (one that stepped down flushes and refreshes the slot map).
 *   - Flushes. Everything local is dropped when a tracking connection errs, closes or
 *     reconnects (invalidations may have been lost), on a flush-all invalidation, and on a
 *     Cluster whenever its slot map is rebuilt (a failover, a slot migration, a node added).
 *   - Lifetimes. A local entry expires when it stops being fresh, counted from when its lookup
 *     was sent: never later than in Redis.
 * Every local time is `performance.now()`, which never jumps: a wall clock set back must not
 * stretch the fence or a local entry's life.
 */

/** Settings of the local cache (the `localCache` option). */
export interface LocalCacheOptions {
  /**
   * The most memory the local copies take, in bytes of body, metadata and keys (plus about
   * 200 bytes per entry); the least recently used are dropped first. One budget per Redis
   * client, shared by every cache using it.
   * @default 67_108_864 (64 MiB)
   */
  maxBytes?: number
  /**
   * The longest an instance may serve a local copy after another instance changed or
   * invalidated it (plus the clock skew between hosts): a local hit is served only if
   * the tracking connections answered a PING sent within this many ms.
   * @default 20
   */
  fenceMs?: number
}

/** The `localCache` option, checked. */
export interface LocalCacheSettings {
  maxBytes: number
  fenceMs: number
}

const LOCAL_CACHE_OPTIONS = new Set(['maxBytes', 'fenceMs'])

const DEFAULT_SETTINGS: LocalCacheSettings = { maxBytes: 64 * 1024 * 1024, fenceMs: 20 }

/** Bytes counted per entry on top of its data (its objects and map slots). */
const ENTRY_OVERHEAD = 200

/** At most this many PINGs unanswered on one tracking connection. */
const MAX_PINGS_IN_FLIGHT = 4

/** Local hits not asked for this long: the fence's PINGs stop until the next one is. */
const IDLE_MS = 2_000

/** How often an idle local cache checks that the user's client is still open (ms). */
const IDLE_CHECK_MS = 1_000

/** Validates the `localCache` option: undefined when it is off. */
export function parseLocalCache(value: unknown): LocalCacheSettings | undefined {
  if (value === undefined || value === false) return undefined
  if (value === true) return DEFAULT_SETTINGS
  check(
    typeof value === 'object' && value !== null && !Array.isArray(value),
    'localCache',
    'true, false or { maxBytes, fenceMs }',
    value,
  )
  rejectUnknownOptions(value as object, LOCAL_CACHE_OPTIONS, {}, 'localCache')
  const { maxBytes, fenceMs } = value as LocalCacheOptions
  const settings = {
    maxBytes: maxBytes ?? DEFAULT_SETTINGS.maxBytes,
    fenceMs: fenceMs ?? DEFAULT_SETTINGS.fenceMs,
  }
  check(
    Number.isSafeInteger(settings.maxBytes) && settings.maxBytes > 0,
    'localCache.maxBytes',
    'a positive integer (bytes)',
    maxBytes,
  )
  check(
    Number.isFinite(settings.fenceMs) && settings.fenceMs >= 4 && settings.fenceMs <= 60_000,
    'localCache.fenceMs',
    'a number of milliseconds from 4 to 60000',
    fenceMs,
  )
  return settings
}

/** A fresh entry kept locally: what its lookup returned. */
interface LocalEntry {
  entryKey: string
  variant: string
  vary: string | undefined
  meta: Buffer
  body: Buffer
  times: NonNullable<Lookup['times']>
  /** Redis's clock (ms) minus the monotonic clock (`performance.now()`) when the lookup was sent. */
  offset: number
  /** When it stops being fresh, on the monotonic clock. */
  expiresAt: number
  bytes: number
}

/** A lookup in flight whose reply may be kept (see {@link LocalCache.begin}). */
export interface Ticket {
  entryKey: string
  pending: Pending
  generation: number
  epoch: number
  sentAt: number
}

/** The lookups in flight of one key, and how many times the key was invalidated since the first. */
interface Pending {
  count: number
  generation: number
}

/** A node-redis connection, as the tracker uses it. */
interface TrackingConnection {
  readonly isReady: boolean
  on(event: string, listener: (...args: unknown[]) => void): unknown
  connect(): Promise<unknown>
  sendCommand(args: string[]): Promise<unknown>
  unref(): void
  destroy?(): void
  disconnect?(): Promise<void>
}

/** A cluster's view of its masters, as node-redis keeps it. */
interface ClusterView {
  slots?: unknown[]
  masters?: { address?: string; client?: { duplicate(options: object): unknown } }[]
}

/** A ROLE reply names a master. */
const saysMaster = (role: unknown): boolean => String((role as unknown[] | undefined)?.[0]) === 'master'

/** One tracking connection (one Redis node). */
class Tracker {
  /** Counts the connection's losses: a registration finishing after one is void. */
  private generation = 0
  /** Tracking is registered (BCAST with every prefix) and the connection is up. */
  up = false
  /** When the last answered PING (ROLE on a Cluster, from a master) was sent (`performance.now()`): the fence. */
  fencedAt = 0
  /** When the last PING was sent, and how many are unanswered. */
  private sentAt = 0
  private inFlight = 0
  closed = false

  constructor(
    private readonly cache: LocalCache,
    readonly connection: TrackingConnection,
    /** On a Cluster, the user's connection to the master this one tracks. */
    private readonly master?: NodeClient,
  ) {
    connection.on('invalidate', (key) => cache.invalidate(key as Buffer | string | null))
    connection.on('error', (error) => {
      this.lost()
      cache.warn('express-redis-kit localCache: a tracking connection failed; local hits resume once it is back', error)
    })
    for (const event of ['end', 'reconnecting']) connection.on(event, () => this.lost())
    connection.on('ready', () => this.register())
    connection.unref()
    connection.connect().catch(() => {
      // Reported on 'error'; node-redis keeps reconnecting.
    })
  }

  /** The connection went (or may have missed invalidations): nothing local can be trusted. */
  lost(): void {
    this.generation++
    this.up = false
    this.fencedAt = 0
    this.cache.flush()
  }

  /** The registrations in progress, one after the other (two at once could interleave their commands). */
  private registering: Promise<void> = Promise.resolve()

  /**
   * Registers broadcasting tracking for every prefix (on each 'ready', and when a prefix is
   * added). Nothing local is trusted until it is done.
   */
  register(): Promise<void> {
    const generation = ++this.generation
    this.up = false
    this.cache.flush()
    this.registering = this.registering.then(() => this.registerNow(generation))
    return this.registering
  }

  /**
   * node-redis's `emitInvalidate` turns plain tracking on in its handshake (checked: a client
   * without it would never report an invalidation), which must be turned off before
   * broadcasting mode can be. On a Cluster the node must still be a master.
   */
  private async registerNow(generation: number): Promise<void> {
    if (generation !== this.generation || this.closed) return
    try {
      const info = (await this.connection.sendCommand(['CLIENT', 'TRACKINGINFO'])) as { flags?: unknown }
      const flags = Array.isArray(info?.flags) ? info.flags.map(String) : []
      if (!flags.includes('on')) {
        this.cache.unsupported()
        return
      }
      if (this.master && !(await this.isMaster())) {
        // A master restarted as a replica of its successor: writes go elsewhere now.
        this.cache.topologyChanged(this.master)
        return
      }
      await this.connection.sendCommand(['CLIENT', 'TRACKING', 'OFF'])
      const prefixes = [...this.cache.prefixes].flatMap((prefix) => ['PREFIX', prefix])
      await this.connection.sendCommand(['CLIENT', 'TRACKING', 'ON', 'BCAST', ...prefixes])
    } catch (error) {
      if (generation === this.generation && !this.closed) {
        this.cache.warn(
          'express-redis-kit localCache: could not turn CLIENT TRACKING on; serving hits from Redis',
          error,
        )
      }
      return
    }
    if (generation !== this.generation || this.closed) return
    this.up = true
    this.ping(performance.now(), 0)
  }

  private async isMaster(): Promise<boolean> {
    return saysMaster(await this.connection.sendCommand(['ROLE']))
  }

  /**
   * PINGs the connection, unless one was sent less than `every` ms ago: the answer moves the
   * fence. Several may be in flight (a slow answer does not hold the next PING back). On a
   * Cluster the probe is ROLE: a master that stepped down (CLUSTER FAILOVER) stays up as a
   * replica and keeps answering, but writes now go to its successor, whose invalidations it
   * only sees by replication, late. Its answer stops the local hits and asks for the slot map.
   */
  ping(now: number, every: number): void {
    if (!this.up || now - this.sentAt < every || this.inFlight >= MAX_PINGS_IN_FLIGHT) return
    this.sentAt = now
    this.inFlight++
    const generation = this.generation
    this.connection.sendCommand(this.master ? ['ROLE'] : ['PING']).then(
      (reply) => {
        this.inFlight--
        if (generation !== this.generation) return
        if (this.master && !saysMaster(reply)) {
          this.fencedAt = 0
          this.cache.flush()
          this.cache.topologyChanged(this.master)
        } else if (now > this.fencedAt) {
          this.fencedAt = now
        }
      },
      () => {
        this.inFlight--
      },
    )
  }

  close(): void {
    this.closed = true
    this.lost()
    try {
      if (this.connection.destroy) this.connection.destroy()
      else this.connection.disconnect?.().catch(() => {})
    } catch {
      // Closed already.
    }
  }
}

/** Every user client's local cache. */
const caches = new WeakMap<RedisClient, LocalCache>()

/**
 * The local cache of `client`, created on first use with `settings`; every cache of the client
 * shares it (and its tracking connections). `prefix` (a cache's key prefix) is tracked from now.
 * @throws {TypeError} (ERK_INVALID_OPTION) when `settings` differ from the ones it was created with.
 */
export function localCacheOf(
  client: RedisClient,
  settings: LocalCacheSettings,
  prefix: string,
  warn: Warn,
): LocalCache {
  let cache = caches.get(client)
  if (!cache) {
    cache = new LocalCache(client, settings, warn)
    caches.set(client, cache)
  }
  check(
    cache.settings.maxBytes === settings.maxBytes && cache.settings.fenceMs === settings.fenceMs,
    'localCache',
    `the same settings as this client's local cache already has (${JSON.stringify(cache.settings)}): one local cache per client`,
    settings,
  )
  cache.track(`${prefix}{`)
  return cache
}

/**
 * This process changed or deleted `keys` in Redis: its own local copies go at once (and no
 * lookup already in flight keeps its reply), without waiting for Redis's invalidation on
 * the tracking connection, which may come after the change's reply. So a request that
 * follows an invalidation on the same instance never gets the old entry.
 */
export function dropLocalCopies(client: RedisClient, keys: readonly string[]): void {
  const cache = caches.get(client)
  if (cache) for (const key of keys) cache.invalidate(key)
}

/** See the comment at the top of this file. */
export class LocalCache {
  /** The tracked key prefixes (`<cache prefix>{`). */
  readonly prefixes = new Set<string>()
  /** Entry key -> variant -> entry. */
  private readonly entries = new Map<string, Map<string, LocalEntry>>()
  /** Every entry, least recently used first. */
  private readonly recency = new Set<LocalEntry>()
  private readonly pending = new Map<string, Pending>()
  private readonly trackers = new Map<string, Tracker>()
  /** Counts flushes: a lookup sent before one is not kept. */
  private epoch = 0
  private bytes = 0
  /** The cluster slot map the trackers were made for (a Cluster only). */
  private slots: unknown
  private timer: NodeJS.Timeout | undefined
  /** How often the fence PINGs (ms), and when it last did. */
  private readonly pingEvery: number
  private pingedAt = 0
  private lastUse = 0
  /** The user's client was seen open: once it is closed, so is this. */
  private seenOpen = false
  closed = false

  constructor(
    private readonly client: RedisClient,
    readonly settings: LocalCacheSettings,
    readonly warn: Warn,
  ) {
    this.pingEvery = Math.max(1, Math.floor(settings.fenceMs / 4))
    this.schedule(IDLE_CHECK_MS)
  }

  /** Starts tracking `prefix` on every node (a new prefix re-registers every tracker). */
  track(prefix: string): void {
    if (this.prefixes.has(prefix)) return
    this.prefixes.add(prefix)
    for (const tracker of this.trackers.values()) void tracker.register()
    this.reconcile()
  }

  /** The local copy of a fresh variant, as a lookup, or undefined (go to Redis). */
  get(entryKey: string, variant: string): Lookup | undefined {
    const now = performance.now()
    if (now - this.lastUse > IDLE_MS / 2) this.wake(now)
    this.lastUse = now
    const entry = this.entries.get(entryKey)?.get(variant)
    if (!entry) return undefined
    // Under load the timer runs late: the requests send the fence's PINGs when they are due.
    if (now - this.pingedAt >= this.pingEvery) this.pingAll(now)
    if (!this.fenced(now)) return undefined
    if (now >= entry.expiresAt) {
      this.remove(entry)
      return undefined
    }
    this.recency.delete(entry)
    this.recency.add(entry)
    return {
      now: now + entry.offset,
      vary: entry.vary,
      meta: entry.meta,
      body: entry.body,
      times: entry.times,
      lock: 'fresh',
      token: '',
      lastTags: undefined,
      invalidations: '',
      local: true,
    }
  }

  /**
   * A lookup of `entryKey` is about to be sent: its reply may be kept (see {@link keep}) unless
   * the key is invalidated or the cache flushed meanwhile. Undefined when tracking is not up
   * (nothing is kept). Every ticket must be given to {@link keep} or {@link end}.
   */
  begin(entryKey: string): Ticket | undefined {
    if (!this.tracking()) return undefined
    let pending = this.pending.get(entryKey)
    if (!pending) {
      pending = { count: 0, generation: 0 }
      this.pending.set(entryKey, pending)
    }
    pending.count++
    return { entryKey, pending, generation: pending.generation, epoch: this.epoch, sentAt: performance.now() }
  }

  /** Keeps a fresh lookup's reply for `variant` if nothing invalidated it since its ticket. */
  keep(ticket: Ticket, variant: string, lookup: Lookup): void {
    this.end(ticket)
    if (ticket.pending.generation !== ticket.generation || ticket.epoch !== this.epoch || !this.tracking()) return
    const { meta, body, times } = lookup
    if (lookup.lock !== 'fresh' || !meta || !body || !times) return
    const expiresAt = ticket.sentAt + (times.freshUntil - lookup.now)
    const bytes = ENTRY_OVERHEAD + meta.length + body.length + 2 * (ticket.entryKey.length + variant.length)
    if (expiresAt <= performance.now() || bytes > this.settings.maxBytes) return
    const entry: LocalEntry = {
      entryKey: ticket.entryKey,
      variant,
      vary: lookup.vary,
      meta,
      body,
      times,
      offset: lookup.now - ticket.sentAt,
      expiresAt,
      bytes,
    }
    const previous = this.entries.get(entry.entryKey)?.get(variant)
    if (previous) this.remove(previous)
    let variants = this.entries.get(entry.entryKey)
    if (!variants) {
      variants = new Map()
      this.entries.set(entry.entryKey, variants)
    }
    variants.set(variant, entry)
    this.recency.add(entry)
    this.bytes += bytes
    for (const oldest of this.recency) {
      if (this.bytes <= this.settings.maxBytes) break
      this.remove(oldest)
    }
  }

  /** The lookup of a ticket is over (failed, or its reply handled). */
  end(ticket: Ticket): void {
    if (--ticket.pending.count === 0 && this.pending.get(ticket.entryKey) === ticket.pending) {
      this.pending.delete(ticket.entryKey)
    }
  }

  /** A key changed in Redis (null: every key, FLUSHALL / FLUSHDB). */
  invalidate(key: Buffer | string | null): void {
    if (key === null) {
      this.flush()
      return
    }
    const name = key.toString()
    const pending = this.pending.get(name)
    if (pending) pending.generation++
    const variants = this.entries.get(name)
    if (!variants) return
    for (const entry of variants.values()) this.remove(entry)
  }

  /** Drops every local entry, and the replies of every lookup in flight. */
  flush(): void {
    this.epoch++
    this.entries.clear()
    this.recency.clear()
    this.bytes = 0
  }

  /** How many entries and bytes are kept (for tests and diagnostics). */
  size(): { entries: number; bytes: number } {
    return { entries: this.recency.size, bytes: this.bytes }
  }

  /** A tracked node is no longer a master: ask the cluster for its slot map again (then reconcile). */
  topologyChanged(node: NodeClient): void {
    refreshTopology(this.client, node)
  }

  /** The client cannot report invalidations: warn once, and never serve a local hit. */
  unsupported(): void {
    if (this.closed) return
    this.warn(
      'express-redis-kit localCache: this node-redis client does not report CLIENT TRACKING invalidations (emitInvalidate needs node-redis 5.9 or later); every hit is served from Redis',
    )
    this.close()
  }

  /** Stops tracking and drops everything, for good (the user's client was closed, or cannot report invalidations). */
  close(): void {
    this.closed = true
    clearTimeout(this.timer)
    for (const tracker of this.trackers.values()) tracker.close()
    this.trackers.clear()
    this.flush()
  }

  private remove(entry: LocalEntry): void {
    const variants = this.entries.get(entry.entryKey)
    if (variants?.get(entry.variant) !== entry) return
    variants.delete(entry.variant)
    if (variants.size === 0) this.entries.delete(entry.entryKey)
    this.recency.delete(entry)
    this.bytes -= entry.bytes
  }

  /** Every tracker is registered, and on a Cluster they are the current masters'. */
  private tracking(): boolean {
    if (this.closed || this.trackers.size === 0) return false
    if (isCluster(this.client) && (this.client as unknown as ClusterView).slots !== this.slots) {
      this.reconcile()
      return false
    }
    for (const tracker of this.trackers.values()) if (!tracker.up) return false
    return true
  }

  /** Local hits may be served: tracking is up and every tracker answered a PING sent within `fenceMs`. */
  private fenced(now: number): boolean {
    if (!this.tracking()) return false
    for (const tracker of this.trackers.values()) if (now - tracker.fencedAt > this.settings.fenceMs) return false
    return true
  }

  /**
   * Makes the trackers match the nodes: one for a single Redis; one per master on a Cluster,
   * made again (and everything local dropped) whenever the cluster rebuilt its slot map.
   */
  private reconcile(): void {
    if (this.closed || this.prefixes.size === 0 || !this.client.isOpen) return
    if (!isCluster(this.client)) {
      if (this.trackers.size === 0) this.trackers.set('', this.newTracker(this.client))
      return
    }
    const cluster = this.client as unknown as ClusterView
    if (cluster.slots === this.slots) return
    this.slots = cluster.slots
    this.flush()
    const masters = new Map((cluster.masters ?? []).map((master) => [master.address ?? '', master]))
    for (const [address, tracker] of this.trackers) {
      if (masters.has(address)) continue
      tracker.close()
      this.trackers.delete(address)
    }
    for (const [address, master] of masters) {
      if (this.trackers.has(address) || !master.client) continue
      this.trackers.set(address, this.newTracker(master.client, master.client as unknown as NodeClient))
    }
    // A master without a connection yet has no tracker: no local hits until it has one.
    if (masters.size === 0 || [...masters.values()].some((master) => !master.client)) this.slots = undefined
  }

  private newTracker(node: unknown, master?: NodeClient): Tracker {
    const connection = (node as { duplicate(options: object): TrackingConnection }).duplicate({
      RESP: 3,
      emitInvalidate: true,
      clientSideCache: undefined,
    })
    return new Tracker(this, connection, master)
  }

  /** Local hits are asked for again after a pause: PING at once, then every `fenceMs / 4`. */
  private wake(now: number): void {
    this.lastUse = now
    this.reconcile()
    this.schedule(0)
  }

  private pingAll(now: number): void {
    this.pingedAt = now
    for (const tracker of this.trackers.values()) tracker.ping(now, this.pingEvery)
  }

  private schedule(delay: number): void {
    clearTimeout(this.timer)
    this.timer = setTimeout(() => this.tick(), delay)
    this.timer.unref()
  }

  /** PINGs every tracker while local hits are asked for; closes everything once the user's client is closed. */
  private tick(): void {
    if (this.closed) return
    if (!this.client.isOpen) {
      // Closed after having been open: stop. Not connected yet: wait for it.
      if (this.seenOpen) {
        this.close()
        caches.delete(this.client)
      } else {
        this.schedule(IDLE_CHECK_MS)
      }
      return
    }
    this.seenOpen = true
    if (performance.now() - this.lastUse > IDLE_MS) {
      this.schedule(IDLE_CHECK_MS)
      return
    }
    this.reconcile()
    this.pingAll(performance.now())
    this.schedule(this.pingEvery)
  }
}
