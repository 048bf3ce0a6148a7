import { AsyncLocalStorage } from 'node:async_hooks'
import diagnostics from 'node:diagnostics_channel'
import type { Server } from 'node:http'
import { setTimeout as sleep } from 'node:timers/promises'
import { expect } from 'chai'
import express from 'express'
import { createCluster } from 'redis'
import {
  type CacheEvent,
  CHANNELS,
  cached,
  cacheResponse,
  createNotifier,
  invalidateTags,
  type Notifier,
  rateLimit,
} from '../../src/index.js'
import {
  cachedEntryKey,
  PUBLIC_HOST,
  rawRequest,
  responseEntryKey,
  tagCopiesOf,
  tagKeyOf,
  untilTagged,
} from '../helpers/cache-app.js'
import { type FailoverCluster, NODE_TIMEOUT_MS, startFailoverCluster } from '../helpers/failover-cluster.js'
import { closeServer, listen, recordingLogger, waitUntil } from '../helpers/outage.js'
import { mode, type RedisClient, uniquePrefix } from '../helpers/redis.js'

/*
 * A Redis Cluster with replicas (3 + 3, its own ports, 1 s node timeout) under a steady load
 * through rateLimit, cacheResponse and a pub/sub notifier, while one master fails three ways:
 * killed (SIGKILL), switched with its replica (CLUSTER FAILOVER), frozen (SIGSTOP for 5 s,
 * then SIGCONT). What must hold each time: every request is answered within its bound; the
 * app uses the promoted replica within 5 s of the promotion; no rate-limit decision counts
 * late; every message whose publish Redis confirmed is delivered or followed by onReconnect,
 * and messages flow again; caching goes on, fills included, on the healthy shards; no crash,
 * no unhandled rejection. And the local cache (`localCache`) of a value on the victim's shard,
 * read all along by a client of its own: once the value is deleted on the promoted master
 * (right after the promotion, and again after the recovery), no read sent `fenceMs` later
 * returns a value read before (its tracking must follow the promotion), and local hits resume.
 * And a master that steps down while its value is only read locally (no command of that client
 * meets a MOVED): no local hit is served through it, and tracking moves to the promoted master.
 *
 * It starts its own cluster, so it runs once, in the suite's single-Redis pass.
 */
const TIMEOUT_MS = 300
/** Three kit calls at most per request, each bounded by TIMEOUT_MS, plus the test's own slack. */
const REQUEST_BOUND_MS = 3 * TIMEOUT_MS + 600
const RECOVERY_BOUND_MS = 5_000
/** The local cache's fence; MARGIN_MS covers Date.now()'s whole milliseconds (see test/cache/local.test.ts). */
const FENCE_MS = 20
const MARGIN_MS = 2
/** How long each master is stalled (CLIENT PAUSE) in the stalls test. */
const PAUSE_MS = 6_000
/** How many times the pub/sub test switches its channel's master and replica (a gap missed now and then shows). */
const FAILOVERS = 6
/** How long the frozen-master test stops its master: past its replica's promotion and the subscriptions' moves. */
const FREEZE_MS = 8_000
/** How long the frozen-master test goes on publishing once the old master answers again. */
const AFTER_THAW_MS = 4_000
/** Durable and fan-out: the longest a message the promoted master confirmed may take to be delivered. */
const STREAM_LAG_BOUND_MS = NODE_TIMEOUT_MS + 2_000

/** A read of the locally cached value. */
interface LocalRead {
  sentAt: number
  doneAt: number
  value: string
  local: boolean
}
interface Answer {
  at: number
  ms: number
  status: number
  /** The rate limiter decided with Redis (it sends headers only then). */
  decided: boolean
  xCache: string | undefined
}

const describeFailover = mode === 'single' ? describe : describe.skip

/**
 * A client of the failover cluster with the options the README recommends for a Cluster: a
 * topology refresh 1 s after a node's connection starts reconnecting, quick reconnect attempts.
 * Not connected yet.
 */
function recommendedClient(cluster: FailoverCluster) {
  const connecting = createCluster({
    rootNodes: cluster.ports.slice(0, 3).map((port) => ({ url: `redis://127.0.0.1:${port}` })),
    defaults: { socket: { reconnectStrategy: () => 100, connectTimeout: 500 } },
    topologyRefreshOnReconnectionAttemptStrategy: 1_000,
  })
  connecting.on('error', () => {})
  return connecting
}
describeFailover(
  'Redis Cluster failover under load (3 masters + 3 replicas, own ports; runs in the single-Redis pass)',
  function () {
    this.timeout(120_000)
    let cluster: FailoverCluster
    let client: RedisClient
    /** The local cache's own client (one local cache per client, with its tracking connections). */
    let localClient: RedisClient
    let localKey: string
    const localReads = new AsyncLocalStorage<{ local: boolean }>()
    const onCacheEvent = (message: unknown) => {
      const read = localReads.getStore()
      if (read && (message as CacheEvent).local) read.local = true
    }
    let server: Server
    let notifier: Notifier
    const unhandled: unknown[] = []
    /** One line of figures per scenario, printed after the suite (what the README's table reports). */
    const report: string[] = []
    after(() => {
      for (const line of report) console.log(`      failover figures: ${line}`)
    })
    const onUnhandled = (reason: unknown) => unhandled.push(reason)

    /** The world of one scenario: keys placed on the victim's shard and on healthy ones. */
    let prefix: string
    let victim: number
    let victimClient: string
    let healthyClient: string
    let healthyTag: string
    let victimChannel: string
    let limiter: ReturnType<typeof rateLimit>
    let reconnects: number
    let received: number[]

    beforeEach(async () => {
      process.on('unhandledRejection', onUnhandled)
      cluster = await startFailoverCluster()
      const connecting = recommendedClient(cluster)
      client = await connecting.connect()
      localClient = await connecting.duplicate().connect()
      prefix = uniquePrefix('failover')
      victimClient = 'victim'
      victim = await cluster.masterOf(`${prefix}rl:{${victimClient}}`)
      healthyClient = await onOtherShard('healthy', (candidate) => `${prefix}rl:{${candidate}}`)
      healthyTag = await onOtherShard('tag', (candidate) => `${prefix}cache:tag:{${candidate}}`)
      victimChannel = await onShard('events', (candidate) => `${prefix}ev:${candidate}`)
      localKey = await onShard('local', (candidate) => cachedEntryKey(`${prefix}local:`, candidate))
      diagnostics.subscribe(CHANNELS.cache, onCacheEvent)
      reconnects = 0
      received = []

      limiter = rateLimit({
        client,
        prefix: `${prefix}rl:`,
        limit: 1_000_000,
        windowMs: '10m',
        algorithm: 'fixed-window',
        keyGenerator: (req) => String(req.get('x-client')),
        onRedisError: 'allow',
        timeoutMs: TIMEOUT_MS,
        logger: recordingLogger(),
      })
      const cache = cacheResponse({
        client,
        prefix: `${prefix}cache:`,
        ttl: '10m',
        tags: [healthyTag],
        timeoutMs: TIMEOUT_MS,
        logger: recordingLogger(),
      })
      const app = express()
      app.use(limiter)
      app.get('/page/:n', cache, (req, res) => {
        res.send(`page ${req.params.n}`)
      })
      app.get('/', (_req, res) => {
        res.send('ok')
      })
      server = await listen(app)
      notifier = createNotifier({
        client,
        prefix: `${prefix}ev:`,
        timeoutMs: TIMEOUT_MS,
        logger: recordingLogger(),
        onReconnect: () => {
          reconnects++
        },
      })
      await notifier.subscribe(victimChannel, (payload) => {
        received.push((payload as { n: number }).n)
      })
    })

    afterEach(async () => {
      process.off('unhandledRejection', onUnhandled)
      diagnostics.unsubscribe(CHANNELS.cache, onCacheEvent)
      await notifier?.close()
      await closeServer(server)
      client?.destroy()
      localClient?.destroy()
      await cluster?.stop()
    })

    /** A key name built from `base` and a counter whose slot is served by the victim (or not). */
    async function onShard(base: string, key: (candidate: string) => string, wanted = true): Promise<string> {
      for (let i = 0; i < 1000; i++) {
        const candidate = `${base}-${i}`
        if (((await cluster.masterOf(key(candidate))) === victim) === wanted) return candidate
      }
      throw new Error(`no ${base} key found ${wanted ? 'on' : 'off'} the victim's shard`)
    }
    const onOtherShard = (base: string, key: (candidate: string) => string) => onShard(base, key, false)

    /** A page whose cache entry is on a healthy shard. */
    async function healthyPage(from: number): Promise<number> {
      for (let n = from; n < from + 1000; n++) {
        const entry = responseEntryKey(`${prefix}cache:`, `/page/${n}`, PUBLIC_HOST)
        if ((await cluster.masterOf(entry)) !== victim) return n
      }
      throw new Error('no page found on a healthy shard')
    }

    /** One read of the local cache's value (every fill's value is new: when it was made). */
    async function readLocal(): Promise<LocalRead> {
      const sentAt = Date.now()
      const state = { local: false }
      const value = await localReads.run(state, () =>
        cached(
          localClient,
          localKey,
          {
            prefix: `${prefix}local:`,
            ttl: '10m',
            localCache: { fenceMs: FENCE_MS },
            timeoutMs: TIMEOUT_MS,
            logger: recordingLogger(),
          },
          () => `made ${Date.now()} ${Math.random()}`,
        ),
      )
      return { sentAt, doneAt: Date.now(), value, local: state.local }
    }

    /**
     * Deletes the local cache's value in Redis (UNLINK, retried until Redis confirms it: a
     * promoted master may not be known yet). Resolves with when it was sent and when it resolved.
     */
    async function deleteLocalValue(): Promise<{ sentAt: number; resolvedAt: number }> {
      const entryKey = cachedEntryKey(`${prefix}local:`, localKey)
      const deadline = Date.now() + RECOVERY_BOUND_MS
      for (;;) {
        const sentAt = Date.now()
        try {
          await client.unlink(entryKey)
          return { sentAt, resolvedAt: Date.now() }
        } catch (error) {
          if (Date.now() > deadline) throw error
          await sleep(50)
        }
      }
    }

    /**
     * No read sent `fenceMs` after a deletion resolved returned a value read before it was sent
     * (each such value had been stored before it was read, so the deletion removed it from Redis).
     */
    function staleLocalReads(reads: LocalRead[], deletion: { sentAt: number; resolvedAt: number }) {
      const old = new Set(reads.filter((read) => read.doneAt < deletion.sentAt).map((read) => read.value))
      return reads.filter((read) => read.sentAt >= deletion.resolvedAt + FENCE_MS + MARGIN_MS && old.has(read.value))
    }

    /** Sends requests in a loop (the victim's client, a healthy client, a cached page) until stopped. */
    function load(pages: { hot: number }) {
      const answers = { victim: [] as Answer[], healthy: [] as Answer[], page: [] as Answer[] }
      const local: LocalRead[] = []
      /** Messages whose publish Redis confirmed, with the onReconnect count at that time. */
      const confirmed: { n: number; reconnectsBefore: number }[] = []
      let running = true
      const get = async (path: string, client: string, into: Answer[]) => {
        const started = Date.now()
        const res = await rawRequest(server, path, { headers: { host: PUBLIC_HOST, 'x-client': client } })
        into.push({
          at: started,
          ms: Date.now() - started,
          status: res.status,
          decided: res.headers.ratelimit !== undefined,
          xCache: res.headers['x-cache'] as string | undefined,
        })
      }
      const loop = (async () => {
        while (running) {
          await Promise.all([
            get('/', victimClient, answers.victim),
            get('/', healthyClient, answers.healthy),
            get(`/page/${pages.hot}`, healthyClient, answers.page),
          ])
          await sleep(20)
        }
      })()
      const reading = (async () => {
        while (running) {
          local.push(await readLocal())
          await sleep(2)
        }
      })()
      const publishing = (async () => {
        for (let n = 1; running; n++) {
          const reconnectsBefore = reconnects
          const ok = await notifier.publish(victimChannel, { n }).then(
            () => true,
            () => false,
          )
          if (ok) confirmed.push({ n, reconnectsBefore })
          await sleep(50)
        }
      })()
      return {
        answers,
        confirmed,
        local,
        stop: async () => {
          running = false
          await Promise.all([loop, publishing, reading])
        },
      }
    }

    /** Publishes on the victim's channel until one message gets through (bounded). */
    async function messagesFlow(): Promise<boolean> {
      for (let n = 1000; n < 1100; n++) {
        await notifier.publish(victimChannel, { n }).catch(() => {})
        await sleep(50)
        if (received.includes(n)) return true
      }
      return false
    }

    async function scenario(fault: () => Promise<void>, promoted: () => Promise<number>, after?: () => Promise<void>) {
      const hot = await healthyPage(1)
      expect(
        (await rawRequest(server, `/page/${hot}`, { headers: { host: PUBLIC_HOST } })).headers['x-cache'],
      ).to.equal('MISS')
      expect(await messagesFlow(), 'messages flow before the fault').to.equal(true)
      for (let attempt = 0; !(await readLocal()).local; attempt++) {
        if (attempt > 200) throw new Error('the value was never served locally before the fault')
        await sleep(5)
      }
      const running = load({ hot })
      await sleep(500)
      const faultAt = Date.now()
      await fault()
      const promotedAt = await promoted()
      // A page never filled yet, on a healthy shard, filled while the victim's shard is down or just failed over.
      const fresh = await healthyPage(hot + 1)
      const fill = await rawRequest(server, `/page/${fresh}`, { headers: { host: PUBLIC_HOST } })
      const deletedAfterPromotion = await deleteLocalValue()
      await sleep(RECOVERY_BOUND_MS)
      await after?.()
      const deletedAfterRecovery = await deleteLocalValue()
      await sleep(1_000)
      // and on until a local hit came back (at most 10 s more: a busy machine's fence may hold them back)
      const resumedBy = Date.now() + 10_000
      while (!running.local.some((read) => read.sentAt > deletedAfterRecovery.resolvedAt && read.local)) {
        if (Date.now() > resumedBy) break
        await sleep(20)
      }
      await running.stop()
      const refill = await rawRequest(server, `/page/${fresh}`, { headers: { host: PUBLIC_HOST } })

      const { victim: victimAnswers, healthy, page } = running.answers
      if (process.env.FAILOVER_DEBUG) {
        const show = (list: Answer[]) =>
          list
            .map(
              (a) =>
                `${a.at - promotedAt}${a.decided ? '' : '!'}${a.xCache === 'HIT' || !a.xCache ? '' : a.xCache}(${a.ms})`,
            )
            .join(' ')
        console.log(
          `fault at ${faultAt - promotedAt}\nvictim: ${show(victimAnswers)}\nhealthy: ${show(healthy)}\npage: ${show(page)}`,
        )
      }
      const all = [...victimAnswers, ...healthy, ...page]
      // Bounded: every request answered (200) within its bound.
      expect(all.filter((answer) => answer.status !== 200)).to.deep.equal([])
      expect(Math.max(...all.map((answer) => answer.ms)), 'slowest request (ms)').to.be.below(REQUEST_BOUND_MS)
      // The promoted replica is used within 5 s of the promotion, and from then on.
      const decidedAgain = victimAnswers.find(
        (answer) =>
          answer.at > faultAt &&
          answer.decided &&
          victimAnswers.every((later) => later.at <= answer.at || later.decided),
      )
      expect(decidedAgain, 'the victim shard decides again, for good').to.not.equal(undefined)
      expect(decidedAgain!.at - promotedAt, 'ms from the promotion to the first decision that lasts').to.be.below(
        RECOVERY_BOUND_MS,
      )
      // The healthy shards never stopped: limited and cached throughout, and a fill stored.
      expect(
        healthy.every((answer) => answer.decided),
        'every healthy-shard decision made with Redis',
      ).to.equal(true)
      expect(
        page.every((answer) => answer.xCache === 'HIT'),
        'the healthy page answered from the cache',
      ).to.equal(true)
      expect([fill.headers['x-cache'], refill.headers['x-cache']]).to.deep.equal(['MISS', 'HIT'])
      // No decision counted late: the count holds at most what was decided with Redis.
      const decided = victimAnswers.filter((answer) => answer.decided).length
      const used = (await limiter.getKey(victimClient))?.used ?? 0
      expect(used, `counted ${used}, decided ${decided}`).to.be.at.most(decided)
      expect(used, 'counting went on after the failover').to.be.at.least(
        victimAnswers.filter((a) => a.decided && a.at > promotedAt).length,
      )
      // A confirmed message is delivered, or a gap is reported (onReconnect) after it was sent.
      await sleep(500)
      const lost = running.confirmed.filter(({ n }) => !received.includes(n))
      const silent = lost.filter(({ reconnectsBefore }) => reconnects <= reconnectsBefore).map(({ n }) => n)
      expect(silent, `lost without onReconnect (${lost.length} lost, ${reconnects} onReconnect calls)`).to.deep.equal(
        [],
      )
      expect(await messagesFlow(), 'messages flow after the failover').to.equal(true)
      // The local cache: no value deleted on the promoted master is read fenceMs later; local hits resume.
      const localRead = running.local
      expect(
        staleLocalReads(localRead, deletedAfterPromotion),
        'local cache: reads of a value deleted after the promotion',
      ).to.deep.equal([])
      expect(
        staleLocalReads(localRead, deletedAfterRecovery),
        'local cache: reads of a value deleted after the recovery',
      ).to.deep.equal([])
      const resumed = localRead.find((read) => read.sentAt > deletedAfterRecovery.resolvedAt && read.local)
      expect(resumed, 'local hits resume after the recovery').to.not.equal(undefined)
      expect(unhandled).to.deep.equal([])
      report.push(
        `promoted ${promotedAt - faultAt} ms after the fault; the app decided with the new master ` +
          `${Math.max(0, decidedAgain!.at - promotedAt)} ms after the promotion; victim-shard requests answered by the ` +
          `policy (onRedisError) ${victimAnswers.filter((answer) => !answer.decided).length} of ${victimAnswers.length}, ` +
          `healthy-shard ones ${healthy.filter((answer) => !answer.decided).length} of ${healthy.length}; slowest request ` +
          `${Math.max(...all.map((answer) => answer.ms))} ms; counted ${used} of ${decided} decided (no late count); ` +
          `messages confirmed ${running.confirmed.length}, lost ${lost.length}, onReconnect ${reconnects}; ` +
          `local cache: ${localRead.filter((read) => read.local).length} of ${localRead.length} reads local, ` +
          `local hits again ${resumed!.sentAt - deletedAfterRecovery.resolvedAt} ms after the deletion that followed the recovery`,
      )
    }

    it('kill -9 of a master', async () => {
      report.push('kill -9:')
      const replica = await cluster.replicaOf(victim)
      await scenario(
        () => cluster.kill(victim),
        () => cluster.untilMaster(replica),
      )
    })

    it('CLUSTER FAILOVER on its replica (graceful)', async () => {
      report.push('CLUSTER FAILOVER:')
      const replica = await cluster.replicaOf(victim)
      await scenario(
        () => cluster.failover(replica),
        () => cluster.untilMaster(replica),
      )
    })

    it('a master that steps down between local reads: no local hit through it, tracking moves to the promoted master', async () => {
      // The local cache's client sends nothing but these reads, and none while the master steps
      // down (CLUSTER FAILOVER pauses it, which would send a read to Redis and its MOVED): only
      // the fence's probe can show the step-down. The old master, a replica now, stays up and
      // keeps answering, but it sees the writes of its successor late, by replication.
      for (let attempt = 0; !(await readLocal()).local; attempt++) {
        if (attempt > 200) throw new Error('the value was never served locally')
        await sleep(5)
      }
      const replica = await cluster.replicaOf(victim)
      /** The promoted master has a tracking connection (only the local cache's client tracks). */
      const tracked = async () => (await cluster.trackingClients(replica)) > 0
      expect(await tracked(), 'tracking on the replica before').to.equal(false)
      await cluster.failover(replica)
      const promotedAt = await cluster.untilMaster(replica)
      await sleep(200)
      // Each read, and whether the promoted master had the tracking connection once it was answered.
      const reads: (LocalRead & { moved: boolean })[] = []
      const deadline = Date.now() + RECOVERY_BOUND_MS
      while (!reads.some((read) => read.local && read.moved) && Date.now() < deadline) {
        const read = await readLocal()
        reads.push({ ...read, moved: await tracked() })
        await sleep(2)
      }
      expect(
        reads.filter((read) => read.local && !read.moved).map((read) => read.sentAt - promotedAt),
        'local hits (ms after the promotion) while only the old master, a replica now, tracked',
      ).to.deep.equal([])
      const movedAt = reads.find((read) => read.moved)?.doneAt
      expect(movedAt, "the promoted master got the local cache's tracking connection").to.not.equal(undefined)
      expect(
        reads.some((read) => read.local && read.moved),
        'local hits resume',
      ).to.equal(true)
      // The old master's tracking connection is closed (Redis may take a moment to see it go).
      const closedBy = Date.now() + 2_000
      while ((await cluster.trackingClients(victim)) > 0 && Date.now() < closedBy) await sleep(20)
      expect(await cluster.trackingClients(victim), 'tracking connections left on the old master').to.equal(0)
      report.push(
        `step-down (CLUSTER FAILOVER) between local reads: tracking on the promoted master by ` +
          `${movedAt! - promotedAt} ms after the promotion; ${reads.filter((read) => read.local).length} of ` +
          `${reads.length} reads local, none through the old master`,
      )
    })

    it('a frozen master (SIGSTOP for 5 s, then SIGCONT)', async () => {
      report.push('frozen master:')
      const replica = await cluster.replicaOf(victim)
      await scenario(
        async () => cluster.freeze(victim),
        () => cluster.untilMaster(replica),
        async () => cluster.thaw(victim),
      )
    })
  },
)

/*
 * Faults one after another on a cluster of its own (3 + 3, as above): each master stalled in
 * turn (CLIENT PAUSE), a shard switched back and forth between its master and replica
 * (CLUSTER FAILOVER), a master frozen past its replica's promotion under pub/sub, durable and
 * fan-out traffic. What must hold: a stall costs only its own shard, and leaves nothing
 * behind; every gap in a sharded subscription is reported by onReconnect before the first
 * message after it, and no message delivered out of order is left without an onReconnect after
 * it; stream subscriptions follow the promotion.
 */
describeFailover(
  'Redis Cluster stalls and graceful failovers, one after another (3 masters + 3 replicas, own ports; runs in the single-Redis pass)',
  function () {
    this.timeout(120_000)
    let cluster: FailoverCluster
    let client: RedisClient
    let server: Server | undefined
    let notifier: Notifier | undefined
    /** What a test opened besides (notifiers, clients), closed after it. */
    let opened: { close?(): Promise<void>; destroy?(): void }[] = []
    const unhandled: unknown[] = []
    const onUnhandled = (reason: unknown) => unhandled.push(reason)
    const report: string[] = []
    after(() => {
      for (const line of report) console.log(`      failover figures: ${line}`)
    })

    beforeEach(async () => {
      unhandled.length = 0
      opened = []
      process.on('unhandledRejection', onUnhandled)
      cluster = await startFailoverCluster()
      client = await recommendedClient(cluster).connect()
    })

    afterEach(async () => {
      process.off('unhandledRejection', onUnhandled)
      await notifier?.close()
      notifier = undefined
      for (const thing of opened.reverse()) {
        await thing.close?.()
        thing.destroy?.()
      }
      await closeServer(server)
      server = undefined
      client?.destroy()
      await cluster?.stop()
    })

    it('masters stalled one after another (CLIENT PAUSE 6 s each, the next once the last is over): the healthy shards cache throughout, and all of them after', async () => {
      const prefix = uniquePrefix('stalls')
      const app = express()
      app.get(
        '/page/:n',
        cacheResponse({
          client,
          prefix: `${prefix}cache:`,
          ttl: '10m',
          timeoutMs: TIMEOUT_MS,
          logger: recordingLogger(),
        }),
        (req, res) => {
          res.send(`page ${req.params.n}`)
        },
      )
      server = await listen(app)
      const listening = server
      // No failover here (a paused master goes on answering the cluster bus): the slots stay put.
      const masterOf = await cluster.mastersNow()
      let next = 0
      /** 45 pages never requested yet, each with the port of the master that serves its entry. */
      const freshPages = () =>
        Array.from({ length: 45 }, () => {
          const n = ++next
          return { n, master: masterOf(responseEntryKey(`${prefix}cache:`, `/page/${n}`)) }
        })
      /** Requests each page twice: whether the second answer came from the cache. */
      const requestTwice = (pages: { n: number }[]) =>
        Promise.all(
          pages.map(async ({ n }) => {
            const get = () => rawRequest(listening, `/page/${n}`, { headers: { host: PUBLIC_HOST } })
            const first = await get()
            const second = await get()
            expect([first.status, second.status], `page ${n}`).to.deep.equal([200, 200])
            return second.headers['x-cache'] === 'HIT'
          }),
        )
      const masters = cluster.ports.slice(0, 3)
      const rounds: string[] = []
      for (const paused of masters) {
        const pages = await freshPages()
        const pausedAt = Date.now()
        await cluster.pause(paused, PAUSE_MS)
        const hits = await requestTwice(pages)
        expect(Date.now() - pausedAt, 'ms to request the pages twice (within the pause)').to.be.below(PAUSE_MS)
        const healthy = pages.filter((page) => page.master !== paused)
        const cachedHealthy = healthy.filter((page) => hits[pages.indexOf(page)]).length
        rounds.push(`master ${masters.indexOf(paused) + 1} paused: ${cachedHealthy} of ${healthy.length} cached`)
        await cluster.untilAnswers(paused)
        expect(cachedHealthy, rounds.join('; ')).to.equal(healthy.length)
      }
      const pages = await freshPages()
      const hits = await requestTwice(pages)
      expect(hits.filter(Boolean).length, `after the stalls (${rounds.join('; ')})`).to.equal(pages.length)
      expect(unhandled).to.deep.equal([])
    })

    it('a sharded channel through CLUSTER FAILOVER of its shard, again and again: onReconnect between the messages around every gap', async () => {
      const prefix = uniquePrefix('moves')
      const channel = 'moves'
      /** Deliveries (the message's number) and onReconnect calls ('reconnect'), in the order they happened. */
      const log: (number | 'reconnect')[] = []
      const onReconnect = () => void log.push('reconnect')
      const logger = recordingLogger()
      notifier = createNotifier({ client, prefix: `${prefix}ev:`, timeoutMs: TIMEOUT_MS, logger, onReconnect })
      await notifier.subscribe(channel, (payload) => {
        log.push((payload as { n: number }).n)
      })
      const delivered = () => log.filter((entry): entry is number => entry !== 'reconnect')
      /** Messages whose SPUBLISH Redis confirmed. */
      const confirmed: number[] = []
      let published = 0
      let publishing = true
      const publisher = (async () => {
        while (publishing) {
          const n = ++published
          await notifier!.publish(channel, { n }).then(
            () => confirmed.push(n),
            () => {},
          )
          await sleep(20)
        }
      })()
      /** Resolves once a message published from now on was delivered. */
      const flowing = (what: string) => {
        const from = published
        return waitUntil(() => delivered().some((n) => n > from), 10_000, `a message delivered ${what}`)
      }
      await flowing('before the failovers')
      let master = await cluster.masterOf(`${prefix}ev:${channel}`)
      let replica = await cluster.replicaOf(master)
      for (let i = 0; i < FAILOVERS; i++) {
        await cluster.promote(replica)
        ;[master, replica] = [replica, master]
        await flowing(`after failover ${i + 1}`)
      }
      publishing = false
      await publisher
      const last = confirmed.at(-1)!
      await waitUntil(() => delivered().includes(last), 5_000, `the last confirmed message (${last})`)

      // Each confirmed message that never came: an onReconnect after the delivery before it and
      // before the first delivery of a later message.
      const received = new Set(delivered())
      const silent = confirmed
        .filter((n) => !received.has(n))
        .filter((n) => {
          const next = log.findIndex((entry) => entry !== 'reconnect' && entry > n)
          const before = log.slice(0, next === -1 ? log.length : next)
          const previous = before.findLastIndex((entry) => entry !== 'reconnect' && entry < n)
          return !before.slice(previous + 1).includes('reconnect')
        })
      const lost = confirmed.filter((n) => !received.has(n))
      const reconnects = log.filter((entry) => entry === 'reconnect').length
      /** What happened around a message: the deliveries and onReconnect calls near where it belonged. */
      const around = (n: number) => {
        const next = log.findIndex((entry) => entry !== 'reconnect' && entry > n)
        const at = next === -1 ? log.length : next
        return `${n}: ${log.slice(Math.max(0, at - 4), at + 2).join(' ')}`
      }
      expect(
        silent.map(around),
        `confirmed messages lost with no onReconnect between their neighbours (${lost.length} of ${confirmed.length} lost: ${lost.join(', ')}; ${reconnects} onReconnect calls; ${FAILOVERS} failovers)`,
      ).to.deep.equal([])
      expect(unhandled).to.deep.equal([])
    })

    /**
     * A master frozen (SIGSTOP) past its replica's promotion, then woken (SIGCONT), while a publisher
     * sends every 20 ms on a pub/sub channel and on a stream of its shard, read by a pub/sub, a
     * durable and a fan-out subscription. When it wakes, the frozen master runs the publishes that
     * timed out for their publisher and hands them to the promoted master's subscribers, after
     * messages published later. `sameProcess`: the publisher uses the subscribers' client (it
     * keeps that client's topology current); otherwise a client of its own (another process), and
     * the subscribers' client sends nothing but what the notifier sends.
     */
    async function frozenMaster(sameProcess: boolean) {
      const prefix = uniquePrefix('frozen')
      const channel = 'frozen'
      const eventsPrefix = `${prefix}ev:`
      const victim = await cluster.masterOf(`${eventsPrefix}${channel}`)
      const replica = await cluster.replicaOf(victim)
      const masterOf = await cluster.mastersNow()
      // a stream of the same shard
      let streamsPrefix = ''
      for (let i = 0; masterOf(`${streamsPrefix}${channel}`) !== victim; i++) streamsPrefix = `${prefix}st${i}:`
      const publisherClient = sameProcess ? client : await recommendedClient(cluster).connect()
      if (!sameProcess) opened.push(publisherClient)

      /** Pub/sub deliveries (the message's number) and onReconnect calls, in the order they happened. */
      const log: (number | 'reconnect')[] = []
      const subscriber = createNotifier({
        client,
        prefix: eventsPrefix,
        timeoutMs: TIMEOUT_MS,
        logger: recordingLogger(),
        onReconnect: () => void log.push('reconnect'),
      })
      const streamLogger = recordingLogger()
      const durable = createNotifier({
        client,
        prefix: streamsPrefix,
        mode: 'durable',
        timeoutMs: TIMEOUT_MS,
        logger: streamLogger,
      })
      const fanout = createNotifier({
        client,
        prefix: streamsPrefix,
        mode: 'fanout',
        timeoutMs: TIMEOUT_MS,
        logger: streamLogger,
      })
      const publisher = createNotifier({
        client: publisherClient,
        prefix: eventsPrefix,
        timeoutMs: TIMEOUT_MS,
        logger: recordingLogger(),
      })
      const streamPublisher = createNotifier({
        client: publisherClient,
        prefix: streamsPrefix,
        mode: 'durable',
        timeoutMs: TIMEOUT_MS,
        logger: recordingLogger(),
      })
      opened.push(subscriber, durable, fanout, publisher, streamPublisher)
      /** Stream deliveries: the times each message was delivered. */
      const durableAt = new Map<number, number[]>()
      const fanoutAt = new Map<number, number[]>()
      const fanoutOrder: number[] = []
      const deliveredTo = (into: Map<number, number[]>) => (payload: unknown) => {
        const { n } = payload as { n: number }
        into.set(n, [...(into.get(n) ?? []), Date.now()])
      }
      await subscriber.subscribe(channel, (payload) => void log.push((payload as { n: number }).n))
      await durable.subscribe(channel, deliveredTo(durableAt))
      await fanout.subscribe(channel, (payload) => {
        deliveredTo(fanoutAt)(payload)
        fanoutOrder.push((payload as { n: number }).n)
      })

      /** Messages whose publish Redis confirmed: pub/sub numbers; stream numbers with when. */
      const confirmed: number[] = []
      const streamConfirmedAt = new Map<number, number>()
      let published = 0
      let streamPublished = 0
      let publishing = true
      const publishers = Promise.all([
        (async () => {
          while (publishing) {
            const n = ++published
            await publisher.publish(channel, { n }).then(
              () => confirmed.push(n),
              () => {},
            )
            await sleep(20)
          }
        })(),
        (async () => {
          while (publishing) {
            const n = ++streamPublished
            await streamPublisher.publish(channel, { n }).then(
              () => streamConfirmedAt.set(n, Date.now()),
              () => {},
            )
            await sleep(20)
          }
        })(),
      ])
      const delivered = () => log.filter((entry): entry is number => entry !== 'reconnect')
      const from = { pubsub: published, stream: streamPublished }
      await waitUntil(
        () =>
          delivered().some((n) => n > from.pubsub) &&
          [...durableAt.keys()].some((n) => n > from.stream) &&
          [...fanoutAt.keys()].some((n) => n > from.stream),
        10_000,
        'messages flowing before the freeze',
      )

      const frozenAt = Date.now()
      cluster.freeze(victim)
      const promotedAt = await cluster.untilMaster(replica, 30_000)
      await sleep(frozenAt + FREEZE_MS - Date.now())
      cluster.thaw(victim)
      await cluster.untilAnswers(victim)
      const answeredAt = Date.now()
      await sleep(AFTER_THAW_MS)
      publishing = false
      await publishers
      const lastPubSub = confirmed.at(-1)!
      const lastStream = Math.max(...streamConfirmedAt.keys())
      await waitUntil(
        () => delivered().includes(lastPubSub) && durableAt.has(lastStream) && fanoutAt.has(lastStream),
        10_000,
        'the last confirmed messages',
      )

      if (process.env.FAILOVER_DEBUG) console.log(`pub/sub deliveries and onReconnect calls: ${log.join(' ')}`)
      // Pub/sub: a message delivered after one published later (out of order) is followed by an onReconnect.
      const late: string[] = []
      let highest = 0
      log.forEach((entry, i) => {
        if (entry === 'reconnect') return
        if (entry < highest && !log.slice(i + 1).includes('reconnect')) late.push(`${entry} after ${highest}`)
        highest = Math.max(highest, entry)
      })
      const outOfOrder = delivered().filter((n, i, all) => all.slice(0, i).some((before) => before > n)).length
      const reconnects = log.filter((entry) => entry === 'reconnect').length
      expect(
        late,
        `messages delivered out of order with no onReconnect after them (${outOfOrder} out of order, ${reconnects} onReconnect calls)`,
      ).to.deep.equal([])
      // Pub/sub: every confirmed message lost is reported between its neighbours.
      const received = new Set(delivered())
      const lost = confirmed.filter((n) => !received.has(n))
      const silent = lost.filter((n) => {
        const next = log.findIndex((entry) => entry !== 'reconnect' && entry > n)
        const before = log.slice(0, next === -1 ? log.length : next)
        const previous = before.findLastIndex((entry) => entry !== 'reconnect' && entry < n)
        return !before.slice(previous + 1).includes('reconnect')
      })
      expect(silent, `confirmed pub/sub messages lost without onReconnect (${lost.length} lost)`).to.deep.equal([])

      // Durable and fan-out: every confirmed message that the promoted master holds is delivered;
      // those it confirmed, within the bound and once; fan-out once each and in order. (Redis
      // replicates asynchronously: a message the old master confirmed just before it froze, not yet
      // replicated, is lost with the failover, whatever the notifier does.)
      const entries = (await client.xRange(`${streamsPrefix}${channel}`, '-', '+')) ?? []
      const numberOf = (entry: { message: Record<string, string> | null }) =>
        (JSON.parse(entry.message?.m ?? '{}') as { payload?: { n?: number } }).payload?.n
      const held = new Set(entries.map(numberOf))
      const notReplicated = [...streamConfirmedAt].filter(([n]) => !held.has(n))
      expect(
        notReplicated.filter(([, at]) => at > promotedAt).map(([n]) => n),
        'messages the promoted master confirmed, missing from its stream',
      ).to.deep.equal([])
      const stream = [...streamConfirmedAt].filter(([n]) => held.has(n))
      const lagOf = (deliveries: Map<number, number[]>) =>
        stream
          .filter(([, at]) => at > promotedAt)
          .map(([n, at]) => ({ n, lag: (deliveries.get(n)?.[0] ?? Number.POSITIVE_INFINITY) - at }))
      for (const [name, deliveries] of [
        ['durable', durableAt],
        ['fan-out', fanoutAt],
      ] as const) {
        expect(
          stream.filter(([n]) => !deliveries.has(n)).map(([n]) => n),
          `${name}: confirmed messages never delivered`,
        ).to.deep.equal([])
        const slow = lagOf(deliveries).filter(({ lag }) => lag > STREAM_LAG_BOUND_MS)
        expect(
          slow.map(({ n, lag }) => `${n}: ${lag} ms`),
          `${name}: messages the promoted master confirmed, delivered more than ${STREAM_LAG_BOUND_MS} ms later`,
        ).to.deep.equal([])
        expect(
          stream.filter(([n, at]) => at > promotedAt && (deliveries.get(n)?.length ?? 0) > 1).map(([n]) => n),
          `${name}: messages the promoted master confirmed, delivered twice`,
        ).to.deep.equal([])
      }
      expect(
        [...fanoutAt].filter(([, times]) => times.length > 1).map(([n]) => n),
        'fan-out: delivered twice',
      ).to.deep.equal([])
      expect(fanoutOrder, 'fan-out: in stream order').to.deep.equal([...fanoutOrder].sort((a, b) => a - b))
      expect(streamLogger.text(), 'a warning names the stalled read').to.match(/stopped serving the slot/)
      expect(unhandled).to.deep.equal([])
      const maxLag = (deliveries: Map<number, number[]>) => Math.max(...lagOf(deliveries).map(({ lag }) => lag))
      report.push(
        `frozen master (${FREEZE_MS / 1000} s, publisher ${sameProcess ? 'in the subscribers’ process' : 'in another process'}): ` +
          `promoted ${promotedAt - frozenAt} ms after the freeze, answered again ${answeredAt - frozenAt} ms after it; ` +
          `pub/sub ${confirmed.length} confirmed, ${lost.length} lost, ${outOfOrder} delivered out of order, ` +
          `${reconnects} onReconnect calls (none missing after them); ` +
          `durable: slowest delivery of a message the promoted master confirmed ${maxLag(durableAt)} ms, ` +
          `${[...durableAt.values()].filter((times) => times.length > 1).length} delivered twice; ` +
          `fan-out: slowest ${maxLag(fanoutAt)} ms; confirmed by the old master but not replicated ${notReplicated.length}`,
      )
    }

    it('a master frozen past its promotion, then woken: pub/sub signals every gap and every out-of-order delivery, stream reads follow the promotion (publisher in the same process)', async () => {
      await frozenMaster(true)
    })

    it('the same with the publisher in another process: the subscribers’ client notices the frozen master by itself', async () => {
      await frozenMaster(false)
    })
  },
)

/*
 * A tag carried by every page (`pages`, as an app-wide tag is) while the master that holds its
 * fence's first copy is killed, and kept down (its replica frozen until the test lets the
 * cluster promote it). What must hold: pages whose entries live on the other shards are filled,
 * and refilled once stale, and served from the cache all along; an invalidation of the tag
 * meanwhile rejects (it cannot reach every copy), after removing what it reached, and so does
 * one of a tag whose fence is on the healthy shards but whose entries are on the dead one; once
 * the replica is promoted, an invalidation succeeds and no page is served from before it, those
 * stored on the killed master's shard included.
 */
describeFailover(
  "Redis Cluster: the master of an app-wide tag's fence killed (3 masters + 3 replicas, own ports; runs in the single-Redis pass)",
  function () {
    this.timeout(120_000)
    let cluster: FailoverCluster
    let client: RedisClient
    let server: Server | undefined

    beforeEach(async () => {
      cluster = await startFailoverCluster()
      client = await recommendedClient(cluster).connect()
    })

    afterEach(async () => {
      await closeServer(server)
      server = undefined
      client?.destroy()
      await cluster?.stop()
    })

    it('pages on the other shards are filled, refilled and cached while it is down; after the failover an invalidation drops every page', async () => {
      const prefix = uniquePrefix('tag-fence')
      const cachePrefix = `${prefix}cache:`
      const victim = await cluster.masterOf(tagKeyOf(cachePrefix, 'pages'))
      const replica = await cluster.replicaOf(victim)
      const masterOf = await cluster.mastersNow()
      // a tag none of whose fence's copies is on the victim: its entries there are taken from
      // their sets by an invalidation that then cannot delete them
      let other = ''
      for (let i = 0; !other; i++) {
        const tag = `other-${i}`
        if (tagCopiesOf(cachePrefix, tag, true).every((key) => masterOf(key) !== victim)) other = tag
      }
      const app = express()
      // /page: fresh for 10 minutes; /stale: for 1 s, then refilled; /other: tagged `other` (tags as an
      // array: fenced before the handler)
      for (const [route, ttl, tags] of [
        ['/page/:n', '10m', ['pages']],
        ['/stale/:n', '1s', ['pages']],
        ['/other/:n', '10m', [other]],
      ] as const) {
        const cache = cacheResponse({
          client,
          prefix: cachePrefix,
          ttl,
          tags: [...tags],
          timeoutMs: TIMEOUT_MS,
          logger: recordingLogger(),
        })
        app.get(route, cache, (req, res) => {
          res.send(`${req.path} ${Math.random()}`)
        })
      }
      server = await listen(app)
      const listening = server
      const get = async (path: string) =>
        (await rawRequest(listening, path, { headers: { host: PUBLIC_HOST } })).headers['x-cache'] as string
      const getAll = (paths: string[]) => Promise.all(paths.map(get))
      /** `count` paths under `base` whose entries are on the victim's shard (or not). */
      let next = 0
      const paths = (base: string, count: number, onVictim: boolean) => {
        const found: string[] = []
        while (found.length < count) {
          const path = `${base}/${++next}`
          if ((masterOf(responseEntryKey(cachePrefix, path)) === victim) === onVictim) found.push(path)
        }
        return found
      }
      const missed = paths('/page', 20, false) // first requested while the victim is down
      const stale = paths('/stale', 20, false) // stored before, refilled while it is down
      const onVictim = paths('/page', 10, true) // stored before, on the shard that goes down
      const otherOnVictim = paths('/other', 10, true)
      const stored = [...stale, ...onVictim, ...otherOnVictim]
      expect(await getAll(stored), 'before the fault').to.deep.equal(stored.map(() => 'MISS'))
      await untilTagged(client, cachePrefix, { pages: stale.length + onVictim.length, [other]: otherOnVictim.length })
      expect(await getAll(stored), 'stored before the fault').to.deep.equal(stored.map(() => 'HIT'))
      // what the victim holds reached its replica before the replica is frozen
      const commands = client as unknown as {
        sendCommand(key: string, readonly: boolean, args: string[]): Promise<unknown>
      }
      await commands.sendCommand(tagKeyOf(cachePrefix, 'pages'), false, ['WAIT', '1', '2000'])
      cluster.freeze(replica)
      await cluster.kill(victim)
      const downAt = Date.now()

      /** Each path requested twice, one after the other: both answers. */
      const twice = (list: string[]) => Promise.all(list.map(async (path) => `${await get(path)} ${await get(path)}`))
      expect(await twice(missed), 'pages first requested while the fence master is down').to.deep.equal(
        missed.map(() => 'MISS HIT'),
      )
      // the /stale pages were stored more than 1 s ago by now (time is what makes them stale)
      const staleFor = 1_100 - (Date.now() - downAt)
      if (staleFor > 0) await sleep(staleFor)
      const staleTwice = await twice(stale)
      expect(
        staleTwice.map((answers) => answers.split(' ')[1]),
        `stale pages refilled while the fence master is down (${staleTwice.join(', ')})`,
      ).to.deep.equal(stale.map(() => 'HIT'))

      // Invalidations now reach only part of what they must: each rejects, having removed what it reached.
      const invalidate = (tags: string[]) =>
        invalidateTags(client, tags, { prefix: cachePrefix, timeoutMs: TIMEOUT_MS }).then(
          () => 'resolved',
          (error: { code?: string }) => error.code,
        )
      expect(await invalidate(['pages']), 'invalidating pages while a copy of its fence is down').to.equal(
        'ERK_REDIS_UNAVAILABLE',
      )
      expect(await invalidate([other]), 'invalidating a tag whose entries are on the dead shard').to.equal(
        'ERK_REDIS_UNAVAILABLE',
      )
      expect(await getAll(missed), 'pages after the partial invalidation').to.deep.equal(missed.map(() => 'MISS'))
      expect(await getAll(missed), 'and stored again while it is down').to.deep.equal(missed.map(() => 'HIT'))
      expect(Date.now() - downAt, 'ms the fence master was down for all of the above').to.be.below(15_000)

      cluster.thaw(replica)
      await cluster.untilMaster(replica, 30_000)
      // the app retries an invalidation that failed (as the sample app's outbox does) until it succeeds
      const deadline = Date.now() + 15_000
      while ((await invalidate(['pages', other])) !== 'resolved') {
        if (Date.now() > deadline) throw new Error('the invalidation never succeeded after the failover')
        await sleep(100)
      }
      const all = [...missed, ...stale, ...onVictim, ...otherOnVictim]
      expect(await getAll(all), 'every page after the invalidation that succeeded').to.deep.equal(all.map(() => 'MISS'))
    })
  },
)
