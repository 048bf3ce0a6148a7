import { AsyncLocalStorage } from 'node:async_hooks'
import { type ChildProcess, spawn } from 'node:child_process'
import diagnostics from 'node:diagnostics_channel'
import { once } from 'node:events'
import { Agent, request as httpRequest } from 'node:http'
import type { AddressInfo } from 'node:net'
import { setTimeout as sleep } from 'node:timers/promises'
import { fileURLToPath } from 'node:url'
import { expect } from 'chai'
import express from 'express'
import { createClient, createCluster } from 'redis'
import {
  type CacheEvent,
  CHANNELS,
  cached,
  cacheResponse,
  invalidateTags,
  type LocalCacheOptions,
} from '../../src/index.js'
import { clusterSlot } from '../../src/shared/redis.js'
import { cachedEntryKey, PUBLIC_HOST, responseEntryKey, storedTimes, untilStored } from '../helpers/cache-app.js'
import type { LocalCacheWorkerConfig } from '../helpers/local-cache-worker.js'
import { listen, recordingLogger, startRedisOnPort } from '../helpers/outage.js'
import {
  type DisposableCluster,
  type DisposableRedis,
  mode,
  type RedisClient,
  startDisposableCluster,
  startDisposableRedis,
  uniquePrefix,
} from '../helpers/redis.js'
import { type StallingProxy, startStallingProxy } from '../helpers/stalling-proxy.js'
import { forkWorkers, stopWorkers, type Worker } from '../helpers/workers.js'

/*
 * The local cache (`localCache`): fresh entries served from the process's memory with no
 * Redis command, kept coherent by CLIENT TRACKING. Everything here runs on a Redis of the
 * suite's own (a disposable redis-server, or a disposable 3-master Cluster in the Cluster
 * pass), because it FLUSHALLs, kills connections and restarts nodes, and because MONITOR must
 * see nobody else's commands.
 *
 * The bound every coherence test checks: once a change (an invalidation, a replacement, a
 * FLUSHALL) has resolved at time t, no request sent at t + fenceMs + MARGIN_MS or later gets
 * the old body. Why no scheduling margin is needed: a local hit needs an answered PING sent at
 * most fenceMs before it, and Redis queues a write's invalidation before the write's reply,
 * so a PING sent after t is answered after the invalidation reached the process. MARGIN_MS
 * only covers Date.now()'s whole milliseconds, on the fence's side and on the test's.
 */
const FENCE_MS = 20
const MARGIN_MS = 2
const SHORT_TTL_MS = 400
const WORKERS = 3

interface Seen {
  /** Date.now() when the request (or read) was sent. */
  sentAt: number
  body: string
  /** Served from the local cache (the diagnostics event said `local: true`). */
  local: boolean
  xCache?: string | undefined
  /** Which worker and path, or which in-process reader. */
  source: string
}

describe(`local cache, localCache (${mode} Redis, a disposable one of the suite's own)`, function () {
  this.timeout(60_000)
  const figures: string[] = []
  let single: DisposableRedis | undefined
  let cluster: DisposableCluster | undefined
  /** Servers this suite started again (a node restart); stopped after. */
  const restarted: { stop(): Promise<void> }[] = []
  /** The masters' ports. */
  let ports: number[]
  const admins = new Map<number, Admin>()
  /** A plain client (no local cache): the test's own writes. */
  let writer: RedisClient
  const opened: RedisClient[] = []
  /** What the in-process caches log (a failed tracking connection, Redis down during a restart). */
  const logs = recordingLogger()
  let workers: Worker[] = []
  const workerPrefix = uniquePrefix('local-workers')
  const workerNames = Array.from({ length: WORKERS }, (_, i) => `erk-local-${process.pid}-w${i}`)

  /** Which in-process read is running, so that the diagnostics listener can mark it local. */
  const reads = new AsyncLocalStorage<{ local: boolean }>()
  const onCacheEvent = (message: unknown) => {
    const read = reads.getStore()
    if (read && (message as CacheEvent).result === 'hit' && (message as CacheEvent).local) read.local = true
  }

  const redisConfig = (): LocalCacheWorkerConfig['redis'] =>
    cluster ? { cluster: ports.map((port) => `redis://127.0.0.1:${port}`) } : { url: `redis://127.0.0.1:${ports[0]}` }

  /** A client of the suite's Redis named `name`; through the proxies (node port -> proxy port) when given. */
  async function connect(name: string, proxies?: Map<number, number>): Promise<RedisClient> {
    const socket = { reconnectStrategy: () => 50 }
    const via = (port: number) => proxies?.get(port) ?? port
    const client = cluster
      ? createCluster({
          rootNodes: ports.map((port) => ({ url: `redis://127.0.0.1:${via(port)}` })),
          defaults: { name, socket },
          ...(proxies
            ? {
                nodeAddressMap: Object.fromEntries(
                  ports.map((port) => [`127.0.0.1:${port}`, { host: '127.0.0.1', port: via(port) }]),
                ),
              }
            : {}),
        })
      : createClient({ url: `redis://127.0.0.1:${via(ports[0]!)}`, name, socket })
    client.on('error', () => {})
    await client.connect()
    opened.push(client as RedisClient)
    return client as RedisClient
  }

  async function admin(port: number): Promise<Admin> {
    let client = admins.get(port)
    if (!client) {
      client = newAdmin(port)
      client.on('error', () => {})
      admins.set(port, client)
      await client.connect()
    }
    return client
  }
  const command = async (port: number, args: string[]) => (await admin(port)).sendCommand(args)

  /** The connections named `name` on every master: their address, id, and whether they track keys. */
  async function connectionsNamed(name: string) {
    const found: { port: number; id: string; addr: string; tracking: boolean }[] = []
    for (const port of ports) {
      for (const line of String(await command(port, ['CLIENT', 'LIST']))
        .trim()
        .split('\n')) {
        const fields = new Map(line.split(' ').map((field) => field.split('=', 2) as [string, string]))
        if (fields.get('name') !== name) continue
        found.push({
          port,
          id: fields.get('id')!,
          addr: fields.get('addr')!,
          tracking: (fields.get('flags') ?? '').includes('t'),
        })
      }
    }
    return found
  }

  /** The master serving `key`'s slot (the only node on a single Redis). */
  async function masterOf(key: string): Promise<number> {
    if (!cluster) return ports[0]!
    const slot = clusterSlot(key)
    for (const line of String(await command(ports[0]!, ['CLUSTER', 'NODES']))
      .trim()
      .split('\n')) {
      const [, address, flags, , , , , , ...ranges] = line.split(' ')
      if (!flags?.includes('master')) continue
      const owns = ranges.some((range) => {
        const [from = -1, to = from] = range.split('-').map(Number)
        return slot >= from && slot <= to
      })
      if (owns) return Number(address?.split(':')[1]?.split('@')[0])
    }
    throw new Error(`no master serves slot ${slot}`)
  }

  before(async () => {
    diagnostics.subscribe(CHANNELS.cache, onCacheEvent)
    if (mode === 'cluster') {
      cluster = await startDisposableCluster()
      ports = cluster.ports
    } else {
      single = await startDisposableRedis()
      ports = [single.port]
    }
    writer = await connect(`erk-local-${process.pid}-writer`)
    const started = await Promise.allSettled(
      workerNames.map((name) =>
        forkWorkers(
          new URL('../helpers/local-cache-worker.ts', import.meta.url),
          {
            name,
            prefix: workerPrefix,
            redis: redisConfig(),
            shortTtlMs: SHORT_TTL_MS,
          } satisfies LocalCacheWorkerConfig,
          1,
        ),
      ),
    )
    workers = started.flatMap((result) => (result.status === 'fulfilled' ? result.value : []))
    const failed = started.find((result) => result.status === 'rejected')
    if (failed) throw failed.reason
  })

  after(async () => {
    diagnostics.unsubscribe(CHANNELS.cache, onCacheEvent)
    await stopWorkers(workers)
    for (const client of [...opened, ...admins.values()]) if (client.isOpen) client.destroy()
    for (const server of restarted) await server.stop()
    await single?.stop()
    await cluster?.stop()
    for (const line of figures) console.log(`      local cache figures: ${line}`)
  })

  /** Requests sent again and again (one at a time per source) until stopped. */
  function keepReading(sources: { name: string; read: () => Promise<Omit<Seen, 'source'>> }[]) {
    const seen: Seen[] = []
    let running = true
    const loops = sources.map(async ({ name, read }) => {
      while (running) {
        seen.push({ ...(await read()), source: name })
        await new Promise((resolve) => setImmediate(resolve))
      }
    })
    return {
      seen,
      async stop(): Promise<Seen[]> {
        running = false
        await Promise.all(loops)
        return seen
      },
    }
  }

  /**
   * Lets `reading` run for 100 ms, and on until it has seen a local hit (at most 5 s more: on a
   * busy machine the fence may send every read to Redis for a while).
   */
  async function untilLocalSeen(reading: { seen: Seen[] }): Promise<void> {
    await sleep(100)
    const deadline = Date.now() + 5_000
    while (!reading.seen.some((item) => item.local) && Date.now() < deadline) await sleep(10)
  }

  /**
   * What was seen of the old body at `resolvedAt` + fenceMs + margin or later (must be none),
   * and the latest the old body was seen after `resolvedAt` (ms, for the figures).
   */
  function staleness(seen: Seen[], isOld: (item: Seen) => boolean, resolvedAt: number) {
    const old = seen.filter(isOld)
    const late = old.filter((item) => item.sentAt >= resolvedAt + FENCE_MS + MARGIN_MS)
    const latest = Math.max(-1, ...old.map((item) => item.sentAt - resolvedAt))
    return { late, latest }
  }

  /** The sources that served no local hit of a new body after `since`. */
  function localHitsResumed(seen: Seen[], isOld: (item: Seen) => boolean, since: number, sources: Set<string>) {
    return [...sources].filter((source) =>
      seen.every((item) => item.source !== source || item.sentAt < since || !item.local || isOld(item)),
    )
  }

  describe('several app instances (processes)', () => {
    /** One keep-alive socket per worker, as a load balancer keeps them. */
    let agents: Agent[]
    before(() => {
      agents = workers.map(() => new Agent({ keepAlive: true, maxSockets: 1 }))
    })
    after(() => {
      for (const agent of agents) agent.destroy()
    })

    function send(index: number, path: string, method = 'GET'): Promise<Seen> {
      const sentAt = Date.now()
      return new Promise((resolve, reject) => {
        const req = httpRequest(
          {
            host: '127.0.0.1',
            port: workers[index]!.port,
            path,
            method,
            headers: { host: PUBLIC_HOST },
            agent: agents[index],
          },
          (res) => {
            const chunks: Buffer[] = []
            res.on('data', (chunk: Buffer) => chunks.push(chunk))
            res.once('error', reject)
            res.once('end', () => {
              if (res.statusCode !== 200) reject(new Error(`${method} ${path}: ${res.statusCode}`))
              resolve({
                sentAt,
                body: Buffer.concat(chunks).toString(),
                local: res.headers['x-local'] === '1',
                xCache: res.headers['x-cache'] as string | undefined,
                source: `worker ${index} ${path}`,
              })
            })
          },
        )
        req.once('error', reject)
        req.end()
      })
    }

    /** Reads `path` from every worker until each serves it locally; resolves with the body they serve. */
    async function warm(path: string): Promise<string> {
      const bodies = new Set<string>()
      for (let index = 0; index < workers.length; index++) {
        for (let attempt = 0; ; attempt++) {
          const answer = await send(index, path)
          if (answer.local) {
            bodies.add(answer.body)
            break
          }
          if (attempt > 200) throw new Error(`worker ${index} never served ${path} locally`)
          await sleep(5)
        }
      }
      expect([...bodies], `${path}: one body on every worker`).to.have.length(1)
      return [...bodies][0]!
    }

    const everyWorker = (paths: string[]) =>
      workers.flatMap((_, index) =>
        paths.map((path) => ({ name: `worker ${index} ${path}`, read: () => send(index, path) })),
      )

    /**
     * Warms `paths` on every worker, reads them from every worker while `change` runs (once
     * they served a local hit; it resolves with when the change resolved), and for `afterMs` more. Checks the
     * bound, and that every worker serves the new body locally again.
     */
    async function coherence(what: string, paths: string[], change: () => Promise<number>, afterMs = 400) {
      const old = new Set<string>()
      for (const path of paths) old.add(await warm(path))
      const reading = keepReading(everyWorker(paths))
      await untilLocalSeen(reading)
      const resolvedAt = await change()
      await sleep(afterMs)
      // Then until every worker served the new body locally (the fence may hold hits back on a busy machine).
      const sources = new Set(everyWorker(paths).map((source) => source.name))
      const deadline = Date.now() + 5_000
      while (localHitsResumed(reading.seen, (item) => old.has(item.body), resolvedAt, sources).length > 0) {
        if (Date.now() > deadline) break
        await sleep(20)
      }
      const seen = await reading.stop()
      const isOld = (item: Seen) => old.has(item.body)
      const { late, latest } = staleness(seen, isOld, resolvedAt)
      expect(late, `${what}: old bodies served ${FENCE_MS} ms after the change resolved`).to.deep.equal([])
      expect(localHitsResumed(seen, isOld, resolvedAt, sources), `${what}: no local hit of the new body`).to.deep.equal(
        [],
      )
      const before = seen.filter((item) => item.sentAt < resolvedAt)
      expect(before.filter((item) => item.local).length, `${what}: local hits before the change`).to.be.above(0)
      figures.push(
        `${what}: ${seen.length} requests to ${workers.length} processes; the old body last seen ` +
          `${latest < 0 ? 'never' : `${latest} ms`} after the change resolved (bound ${FENCE_MS} ms)`,
      )
    }

    it('a warm local hit sends no Redis command (MONITOR on every node), on cacheResponse and cached()', async () => {
      const paths = ['/page/monitored', '/value/monitored']
      const bodies = new Map<string, string>()
      for (const path of paths) bodies.set(path, await warm(path))
      const monitors = await Promise.all(ports.map((port) => startMonitor(port)))
      // Until 30 hits were served locally (a hit the fence holds back goes to Redis, and counts as such).
      const answers: Seen[] = []
      while (answers.filter((answer) => answer.local).length < 30 && answers.length < 600) {
        for (let index = 0; index < workers.length; index++) {
          for (const path of paths) answers.push(await send(index, path))
        }
      }
      const lines = (await Promise.all(monitors.map((monitor) => monitor.stop()))).flat()
      const connections = (await Promise.all(workerNames.map(connectionsNamed))).flat()
      const main = new Set(connections.filter((c) => !c.tracking).map((c) => c.addr))
      const tracking = new Set(connections.filter((c) => c.tracking).map((c) => c.addr))
      // Every worker has its connections, one tracking connection per node among them.
      expect(tracking.size).to.equal(workers.length * ports.length)
      expect(main.size).to.be.at.least(workers.length)

      for (const answer of answers) {
        expect(answer.body).to.equal(bodies.get(answer.source.split(' ')[2]!))
        if (answer.source.includes('/page/')) expect(answer.xCache).to.equal('HIT')
      }
      const fromMain = lines.filter((line) => main.has(line.addr))
      const fromTracking = lines.filter((line) => tracking.has(line.addr))
      const local = answers.filter((answer) => answer.local).length
      // A hit the fence sent to Redis costs its one lookup (EVALSHA); a local hit costs nothing.
      expect(
        fromMain.map((line) => line.command),
        'commands of the workers',
      ).to.deep.equal(Array(answers.length - local).fill('EVALSHA'))
      expect(local, 'local hits').to.be.at.least(30)
      // The tracking connections only probe the fence (PING; ROLE on a Cluster), and were seen doing it.
      expect(new Set(fromTracking.map((line) => line.command))).to.deep.equal(new Set([cluster ? 'ROLE' : 'PING']))
      figures.push(
        `MONITOR: ${local} of ${answers.length} hits served locally; ${fromMain.length} commands from the ` +
          `workers' main connections; ${fromTracking.length} fence probes (${cluster ? 'ROLE' : 'PING'}) from their tracking connections`,
      )
    })

    it('coherent after invalidateTags() resolves in another process (cacheResponse and cached())', async () => {
      await coherence('invalidateTags', ['/page/tagged', '/value/tagged'], async () => {
        await writer.incr(`${workerPrefix}v:tagged`)
        const answer = await send(0, '/invalidate/tagged', 'POST')
        const { count, resolvedAt } = JSON.parse(answer.body) as { count: number; resolvedAt: number }
        expect(count, 'entries invalidated').to.equal(2)
        return resolvedAt
      })
    })

    it("coherent after an unsafe request in another process replaced the entry (the next fill's body)", async () => {
      await coherence('unsafe request', ['/page/replaced'], async () => {
        await send(1, '/page/replaced', 'POST')
        return Date.now()
      })
    })

    it('never served locally past its freshness (ttl 400 ms): not by any process', async () => {
      for (const [path, entryKey] of [
        ['/short/expiring', responseEntryKey(workerPrefix, '/short/expiring', PUBLIC_HOST)],
        ['/short-value/expiring', cachedEntryKey(workerPrefix, 'short:expiring')],
      ] as const) {
        const first = await send(0, path)
        await untilStored(writer, entryKey)
        const { freshUntil } = await storedTimes(writer, entryKey)
        const reading = keepReading(everyWorker([path]))
        await sleep(Math.max(0, freshUntil - Date.now()) + 200)
        const seen = await reading.stop()
        const firstBody = seen.filter((item) => item.body === first.body)
        expect(firstBody.filter((item) => item.local).length, `${path}: served locally while fresh`).to.be.above(0)
        expect(
          firstBody.filter((item) => item.sentAt >= freshUntil),
          `${path}: served after ${freshUntil} (its freshness in Redis)`,
        ).to.deep.equal([])
        expect(
          seen.filter((item) => item.body !== first.body && item.local).length,
          'new fills served locally',
        ).to.be.above(0)
      }
    })

    it('coherent after a FLUSHALL (every node)', async () => {
      await coherence('FLUSHALL', ['/page/flushed', '/value/flushed'], async () => {
        await Promise.all(ports.map((port) => command(port, ['FLUSHALL'])))
        return Date.now()
      })
    })
  })

  /** A cached() read of `key` by an in-process client, noting whether it was served locally. */
  async function read(
    client: RedisClient,
    prefix: string,
    key: string,
    localCache: LocalCacheOptions,
    load: () => string,
  ): Promise<Omit<Seen, 'source'>> {
    const sentAt = Date.now()
    const state = { local: false }
    const body = await reads.run(state, () =>
      cached(client, key, { prefix, ttl: '1m', tags: [key], localCache, timeoutMs: 2_000, logger: logs }, load),
    )
    return { sentAt, body, local: state.local }
  }

  describe('the miss/fill race', () => {
    it('a write landing between a lookup and its reply never leaves a stale local entry (100 keys, 3 rounds)', async () => {
      const client = await connect(`erk-local-${process.pid}-race`)
      const prefix = uniquePrefix('local-race')
      const keys = Array.from({ length: 100 }, (_, i) => `k${i}`)
      const localCache = { fenceMs: FENCE_MS }
      let version = 1
      const load = (key: string) => () => `${key} v${version}`
      for (const key of keys)
        expect((await read(client, prefix, key, localCache, load(key))).body).to.equal(`${key} v1`)
      let oldReplies = 0
      for (let round = 2; round <= 4; round++) {
        version = round
        // Each read's lookup and the write of its key leave together: Redis runs them in either
        // order, and the lookup's reply and the key's invalidation reach the process in either order.
        const raced = await Promise.all(
          keys.map(async (key, i) => {
            const reading = read(client, prefix, key, localCache, load(key))
            const write =
              i % 2 === 0
                ? writer.unlink(cachedEntryKey(prefix, key))
                : invalidateTags(writer, [key], { prefix }).then(() => undefined)
            const [seen] = await Promise.all([reading, write])
            return seen
          }),
        )
        oldReplies += raced.filter((seen, i) => seen.body === `${keys[i]} v${round - 1}`).length
        await sleep(FENCE_MS + MARGIN_MS)
        for (const key of keys) {
          const seen = await read(client, prefix, key, localCache, load(key))
          expect(seen.body, `${key} after round ${round} (local: ${seen.local})`).to.equal(`${key} v${round}`)
        }
      }
      // The new values are kept and served locally again (a fill is not kept: the next hit from Redis is).
      for (const key of keys) {
        for (let attempt = 0; ; attempt++) {
          const seen = await read(client, prefix, key, localCache, load(key))
          expect(seen.body).to.equal(`${key} v4`)
          if (seen.local) break
          if (attempt > 200) throw new Error(`${key} never served locally after the races`)
          await sleep(5)
        }
      }
      // The race happened: lookups in flight answered the old value while their key was being written.
      expect(oldReplies, 'old-value replies that met their key’s write').to.be.above(0)
      figures.push(`miss/fill race: ${oldReplies} of 300 reads in flight answered the old value; none kept`)
    })
  })

  describe('the tracking connection killed or stalled', () => {
    /**
     * Reads `key` locally, then keeps reading while `fault` runs; the value changes (and is
     * invalidated by the writer) right after the fault. Checks the bound, and that local hits
     * of the new value resume once `recover` (if any) has run.
     */
    async function underFault(
      what: string,
      client: RedisClient,
      fault: () => Promise<void>,
      recover?: () => Promise<void>,
    ): Promise<Seen[]> {
      const prefix = uniquePrefix('local-fault')
      const localCache = { fenceMs: FENCE_MS }
      let version = 1
      const load = () => `value v${version}`
      for (let attempt = 0; !(await read(client, prefix, 'key', localCache, load)).local; attempt++) {
        if (attempt > 200) throw new Error('never served locally')
        await sleep(5)
      }
      const reading = keepReading([{ name: what, read: () => read(client, prefix, 'key', localCache, load) }])
      await untilLocalSeen(reading)
      await fault()
      version = 2
      await invalidateTags(writer, ['key'], { prefix })
      const resolvedAt = Date.now()
      await sleep(300)
      const recoveredAt = Date.now()
      await recover?.()
      const isOld = (item: Seen) => item.body === 'value v1'
      const deadline = Date.now() + 10_000
      while (!reading.seen.some((item) => item.sentAt >= recoveredAt && item.local && !isOld(item))) {
        if (Date.now() > deadline) break
        await sleep(20)
      }
      const seen = await reading.stop()
      const { late, latest } = staleness(seen, isOld, resolvedAt)
      expect(late, `${what}: old value read ${FENCE_MS} ms after the write resolved`).to.deep.equal([])
      const resumed = seen.find((item) => item.sentAt >= recoveredAt && item.local && !isOld(item))
      expect(resumed, `${what}: local hits of the new value resume`).to.not.equal(undefined)
      expect(seen.filter((item) => item.sentAt < resolvedAt && item.local).length).to.be.above(0)
      figures.push(
        `${what}: the old value last read ${latest < 0 ? 'never' : `${latest} ms`} after the write resolved; ` +
          `local hits again ${resumed!.sentAt - recoveredAt} ms after ${recover ? 'the recovery' : 'the end of the fault window'}`,
      )
      return seen
    }

    it('CLIENT KILL of the tracking connections: no stale hit, local hits resume once they reconnect', async () => {
      const name = `erk-local-${process.pid}-killed`
      const client = await connect(name)
      const warned = logs.warnings.length
      let killed = 0
      await underFault('CLIENT KILL', client, async () => {
        for (const connection of await connectionsNamed(name)) {
          if (!connection.tracking) continue
          await command(connection.port, ['CLIENT', 'KILL', 'ID', connection.id])
          killed++
        }
      })
      expect(killed).to.equal(ports.length)
      expect(
        logs.warnings.slice(warned).map(([message]) => String(message)),
        'the lost tracking connection is logged',
      ).to.include('express-redis-kit localCache: a tracking connection failed; local hits resume once it is back')
    })

    /** Runs `test` with a client whose connection to each node goes through a stalling proxy of its own. */
    async function throughStallingProxies(
      name: string,
      test: (client: RedisClient, proxies: StallingProxy[]) => Promise<void>,
    ): Promise<void> {
      const proxies: StallingProxy[] = []
      try {
        for (const port of ports) proxies.push(await startStallingProxy({ host: '127.0.0.1', port }))
        await test(await connect(name, new Map(ports.map((port, i) => [port, proxies[i]!.port]))), proxies)
      } finally {
        for (const proxy of proxies) await proxy.close()
      }
    }

    it('a stalled tracking connection (a proxy holds what Redis sends it): no stale hit, the app keeps working', async () => {
      await throughStallingProxies(`erk-local-${process.pid}-stalled`, async (client, proxies) => {
        let stalledAt = 0
        const seen = await underFault(
          'stalled tracking connection',
          client,
          async () => {
            expect(proxies.map((proxy) => proxy.trackingConnections())).to.deep.equal(ports.map(() => 1))
            stalledAt = Date.now()
            for (const proxy of proxies) proxy.stall()
          },
          async () => {
            for (const proxy of proxies) proxy.resume()
          },
        )
        // Through the stall, the main connection answered (from Redis: the new value).
        const duringStall = seen.filter(
          (item) => item.sentAt > stalledAt + FENCE_MS + MARGIN_MS && item.sentAt < stalledAt + 300,
        )
        expect(duringStall.length, 'reads during the stall').to.be.above(0)
        expect(duringStall.filter((item) => item.local)).to.deep.equal([])
      })
    })

    it("this instance's own invalidation is seen at once, without waiting for Redis's (its tracking connection stalled, fenceMs 2 s)", async () => {
      await throughStallingProxies(`erk-local-${process.pid}-own`, async (client, proxies) => {
        const prefix = uniquePrefix('local-own')
        // A long fence: with the invalidations held back by the proxy, only the process's own
        // knowledge of what it invalidated can keep it from serving the old value.
        const localCache = { fenceMs: 2_000 }
        let version = 1
        const load = () => `value v${version}`
        for (let round = 0; round < 5; round++) {
          for (let attempt = 0; !(await read(client, prefix, 'key', localCache, load)).local; attempt++) {
            if (attempt > 200) throw new Error('never served locally')
            await sleep(5)
          }
          for (const proxy of proxies) proxy.stall()
          version++
          await invalidateTags(client, ['key'], { prefix })
          const next = await read(client, prefix, 'key', localCache, load)
          expect(next.body, `round ${round}: the read right after this process's invalidateTags()`).to.equal(
            `value v${version}`,
          )
          for (const proxy of proxies) proxy.resume()
        }
      })
    })
  })

  describe('everything but a fresh hit works as without it', () => {
    it('stale-while-revalidate, the fill lock, tags and HEAD: served from Redis as before, never a local copy past its freshness', async () => {
      const client = await connect(`erk-local-${process.pid}-same`)
      const prefix = uniquePrefix('local-same')
      let runs = 0
      const cache = cacheResponse({
        client,
        prefix,
        ttl: '300ms',
        staleWhileRevalidate: '10s',
        tags: ['same'],
        // A long fence: what is checked here is what goes to Redis, not the fence's timing.
        localCache: { fenceMs: 1_000 },
        logger: logs,
      })
      const app = express()
      app.get('/page', cache, async (_req, res) => {
        const run = ++runs
        await sleep(50)
        res.send(`run ${run}`)
      })
      const server = await listen(app)
      let localHits = 0
      const onEvent = (message: unknown) => {
        const event = message as CacheEvent
        if (event.result === 'hit' && event.local) localHits++
      }
      diagnostics.subscribe(CHANNELS.cache, onEvent)
      const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/page`
      const get = async (method = 'GET') => {
        const res = await fetch(url, { method })
        return { xCache: res.headers.get('x-cache'), body: await res.text(), at: Date.now() }
      }
      try {
        // Ten at once on a cold entry: one fill, the others wait for it (the lock, as without it).
        const first = await Promise.all(Array.from({ length: 10 }, () => get()))
        expect(runs, 'handler runs for 10 concurrent misses').to.equal(1)
        expect(new Set(first.map((answer) => answer.body))).to.deep.equal(new Set(['run 1']))
        await untilStoredLocally(get, () => localHits)
        // HEAD: a hit, until one is served from the local copy (each within the entry's freshness).
        let headLocal = false
        for (let attempt = 0; !headLocal && attempt < 20; attempt++) {
          const headBefore = localHits
          expect((await get('HEAD')).xCache).to.equal('HIT')
          headLocal = localHits === headBefore + 1
        }
        expect(headLocal, 'HEAD served from the local copy').to.equal(true)
        // Past its freshness: STALE from Redis (a local copy is only ever fresh), refreshed once.
        await sleep(350)
        const before = localHits
        const stale = await get()
        expect(stale).to.include({ xCache: 'STALE', body: 'run 1' })
        expect(localHits, 'no local hit once stale').to.equal(before)
        for (let attempt = 0; (await get()).body !== 'run 2'; attempt++) {
          if (attempt > 100) throw new Error('never refreshed')
          await sleep(10)
        }
        expect(runs, 'one background refresh').to.equal(2)
        // Tags: invalidated on every instance, the next request fills again.
        await untilStoredLocally(get, () => localHits)
        expect(await cache.invalidateTags(['same'])).to.equal(1)
        const after = await get()
        expect(after).to.include({ xCache: 'MISS', body: 'run 3' })
      } finally {
        diagnostics.unsubscribe(CHANNELS.cache, onEvent)
        await new Promise((resolve) => server.close(resolve))
      }
    })
  })

  /** Reads until a read is served from the local cache (a fill's own writes invalidate the read after it). */
  async function untilStoredLocally(get: () => Promise<unknown>, count: () => number): Promise<void> {
    const start = count()
    for (let attempt = 0; count() === start; attempt++) {
      if (attempt > 200) throw new Error('never served locally')
      await get()
      await sleep(5)
    }
  }

  describe('memory bound (maxBytes)', () => {
    it('the least recently used entries are dropped first; a value larger than maxBytes is never kept', async () => {
      const client = await connect(`erk-local-${process.pid}-bounded`)
      const prefix = uniquePrefix('local-lru')
      // A long fence: whether an entry is kept must not depend on a PING's timing here.
      const localCache = { maxBytes: 16_000, fenceMs: 1_000 }
      const keys = Array.from({ length: 30 }, (_, i) => `k${i}`)
      for (let attempt = 0; !(await read(client, prefix, 'warm', localCache, () => 'w')).local; attempt++) {
        if (attempt > 200) throw new Error('never served locally')
        await sleep(5)
      }
      // About 1.1 kB per entry with its keys and overhead: some 14 fit.
      const load = (key: string) => () => `${key} ${'x'.repeat(900)}`
      // Each key read until it is served locally: a miss fills it, a hit from Redis keeps it (a
      // hit whose lookup met the invalidation of the fill's own write is not kept: read again).
      for (const key of keys) {
        for (let attempt = 0; !(await read(client, prefix, key, localCache, load(key))).local; attempt++) {
          if (attempt > 20) throw new Error(`${key} never served locally`)
        }
      }
      const recent = keys.slice(-5).reverse()
      for (const key of recent) {
        const seen = await read(client, prefix, key, localCache, load(key))
        expect(seen.local, `${key} (recently used) local`).to.equal(true)
        expect(seen.body).to.equal(load(key)())
      }
      for (const key of keys.slice(0, 5)) {
        const seen = await read(client, prefix, key, localCache, load(key))
        expect(seen.local, `${key} (least recently used) local`).to.equal(false)
        expect(seen.body).to.equal(load(key)())
      }
      const big = () => 'y'.repeat(20_000)
      for (let i = 0; i < 4; i++) {
        const seen = await read(client, prefix, 'big', localCache, big)
        expect(seen.local, 'a value larger than maxBytes, read locally').to.equal(false)
        expect(seen.body).to.equal(big())
      }
      // The most recent small entries were not pushed out by it.
      expect((await read(client, prefix, recent[0]!, localCache, load(recent[0]!))).local).to.equal(true)
    })
  })

  describe('options', () => {
    it('invalid localCache values: ERK_INVALID_OPTION naming the option (cacheResponse and cached())', async () => {
      const client = await connect(`erk-local-${process.pid}-options`)
      const invalid: [unknown, string][] = [
        ['yes', 'localCache'],
        [1, 'localCache'],
        [null, 'localCache'],
        [[], 'localCache'],
        [{ maxbytes: 1000 }, 'localCache.maxbytes'],
        [{ maxBytes: 0 }, 'localCache.maxBytes'],
        [{ maxBytes: -1 }, 'localCache.maxBytes'],
        [{ maxBytes: 1.5 }, 'localCache.maxBytes'],
        [{ maxBytes: '1mb' }, 'localCache.maxBytes'],
        [{ fenceMs: 2 }, 'localCache.fenceMs'],
        [{ fenceMs: 120_000 }, 'localCache.fenceMs'],
        [{ fenceMs: Number.NaN }, 'localCache.fenceMs'],
      ]
      for (const [value, option] of invalid) {
        const options = { client, localCache: value, logger: logs } as unknown as Parameters<typeof cacheResponse>[0]
        let thrown: unknown
        try {
          cacheResponse(options)
        } catch (error) {
          thrown = error
        }
        expect(thrown, JSON.stringify(value)).to.be.instanceOf(TypeError)
        expect((thrown as { code?: string }).code).to.equal('ERK_INVALID_OPTION')
        expect((thrown as Error).message).to.include(`\`${option}\``)
        const rejected = await cached(client, 'k', { localCache: value, logger: logs } as never, () => 'v').then(
          () => undefined,
          (error: unknown) => error,
        )
        expect((rejected as { code?: string })?.code, `cached() with ${JSON.stringify(value)}`).to.equal(
          'ERK_INVALID_OPTION',
        )
        expect((rejected as Error).message).to.include(`\`${option}\``)
      }
    })

    it('one local cache per client: other settings for the same client are refused, the same ones shared', async () => {
      const client = await connect(`erk-local-${process.pid}-settings`)
      const prefix = uniquePrefix('local-settings')
      cacheResponse({ client, prefix, localCache: true, logger: logs })
      // The defaults spelled out are the same settings; `false` is no local cache at all.
      cacheResponse({
        client,
        prefix: `${prefix}b:`,
        localCache: { maxBytes: 64 * 1024 * 1024, fenceMs: 20 },
        logger: logs,
      })
      cacheResponse({ client, prefix: `${prefix}c:`, localCache: false, logger: logs })
      let thrown: unknown
      try {
        cacheResponse({ client, prefix: `${prefix}d:`, localCache: { fenceMs: 50 }, logger: logs })
      } catch (error) {
        thrown = error
      }
      expect((thrown as { code?: string })?.code).to.equal('ERK_INVALID_OPTION')
      expect((thrown as Error).message).to.match(/`localCache`.*one local cache per client/)
      const rejected = await cached(client, 'k', { prefix, localCache: { maxBytes: 1_000 } }, () => 'v').then(
        () => undefined,
        (error: unknown) => error,
      )
      expect((rejected as Error)?.message).to.match(/one local cache per client/)
    })

    it('the process exits by itself once the client is closed (tracking connections do not keep it alive)', async () => {
      const entry = fileURLToPath(new URL('../helpers/local-cache-close.ts', import.meta.url))
      const child: ChildProcess = spawn(
        process.execPath,
        ['--import', 'tsx', entry, JSON.stringify({ redis: redisConfig(), prefix: uniquePrefix('local-exit') })],
        { cwd: fileURLToPath(new URL('../..', import.meta.url)), stdio: ['ignore', 'pipe', 'inherit'] },
      )
      let output = ''
      let closedAt = 0
      child.stdout!.on('data', (chunk: Buffer) => {
        output += chunk.toString()
        if (output.includes('localHits')) closedAt ||= Date.now()
      })
      const exited = once(child, 'exit')
      const hung = sleep(20_000).then(() => 'hung' as const)
      const result = await Promise.race([exited, hung])
      if (result === 'hung') child.kill('SIGKILL')
      expect(result, 'the process still ran 20 s after it started').to.not.equal('hung')
      const exitedAt = Date.now()
      expect((result as [number | null])[0], 'exit code').to.equal(0)
      expect(JSON.parse(output.trim().split('\n').pop()!), 'it read locally, then closed').to.deep.equal({
        localHits: 1,
      })
      // Nothing but the end of the event loop after close(): no timer or socket holds it.
      expect(exitedAt - closedAt, 'ms from close() to the exit').to.be.below(1_000)
      figures.push(`exit: the process ended ${exitedAt - closedAt} ms after the client was closed`)
    })
  })

  describe('node restarts and (on the Cluster) slot migration', () => {
    /** Reads `key` locally until stopped; the writer's change comes from `change`. */
    async function during(
      what: string,
      key: string,
      change: (setVersion: (version: number) => void, prefix: string) => Promise<number>,
    ) {
      const client = await connect(`erk-local-${process.pid}-${key}`)
      const prefix = uniquePrefix(`local-${key}`)
      const localCache = { fenceMs: FENCE_MS }
      let version = 1
      const load = () => `value v${version}`
      for (let attempt = 0; !(await read(client, prefix, key, localCache, load)).local; attempt++) {
        if (attempt > 200) throw new Error('never served locally')
        await sleep(5)
      }
      const reading = keepReading([{ name: what, read: () => read(client, prefix, key, localCache, load) }])
      await sleep(100)
      const resolvedAt = await change((next) => {
        version = next
      }, prefix)
      const isOld = (item: Seen) => item.body === 'value v1'
      const deadline = Date.now() + 15_000
      while (!reading.seen.some((item) => item.sentAt > resolvedAt && item.local && !isOld(item))) {
        if (Date.now() > deadline) break
        await sleep(20)
      }
      await sleep(100)
      const seen = await reading.stop()
      const { late, latest } = staleness(seen, isOld, resolvedAt)
      expect(late, `${what}: old value read ${FENCE_MS} ms after the change`).to.deep.equal([])
      const resumed = seen.find((item) => item.sentAt > resolvedAt && item.local && !isOld(item))
      expect(resumed, `${what}: local hits of the new value resume`).to.not.equal(undefined)
      figures.push(
        `${what}: the old value last read ${latest < 0 ? 'never' : `${latest} ms`} after the change; ` +
          `local hits again ${resumed!.sentAt - resolvedAt} ms after it`,
      )
    }

    if (mode === 'cluster') {
      it('a slot migration (MIGRATING/IMPORTING, MIGRATE, SETSLOT NODE) during local hits, then a write', async () => {
        await during('slot migration', 'migrated', async (setVersion, prefix) => {
          const entryKey = cachedEntryKey(prefix, 'migrated')
          const slot = String(clusterSlot(entryKey))
          const source = await masterOf(entryKey)
          const target = ports.find((port) => port !== source)!
          const idOf = async (port: number) => String(await command(port, ['CLUSTER', 'MYID']))
          const [sourceId, targetId] = [await idOf(source), await idOf(target)]
          await command(target, ['CLUSTER', 'SETSLOT', slot, 'IMPORTING', sourceId])
          await command(source, ['CLUSTER', 'SETSLOT', slot, 'MIGRATING', targetId])
          const keys = (await command(source, ['CLUSTER', 'GETKEYSINSLOT', slot, '100'])) as unknown as string[]
          expect(keys).to.include(entryKey)
          await command(source, ['MIGRATE', '127.0.0.1', String(target), '', '0', '5000', 'KEYS', ...keys.map(String)])
          for (const port of ports) await command(port, ['CLUSTER', 'SETSLOT', slot, 'NODE', targetId])
          expect(await masterOf(entryKey)).to.equal(target)
          // A write after the migration: its invalidation comes from the new master.
          setVersion(2)
          await invalidateTags(writer, ['migrated'], { prefix })
          return Date.now()
        })
      })
    }

    it('a restart of the node holding the entry (its data lost): the old value is never served again', async () => {
      await during('node restart', 'restarted', async (setVersion, prefix) => {
        const entryKey = cachedEntryKey(prefix, 'restarted')
        const port = await masterOf(entryKey)
        if (cluster) {
          const { dir, 'cluster-config-file': file } = await (await admin(port)).configGet('*')
          expect(dir && file, "the node's dir and cluster config file").to.be.a('string')
          expect(await cluster.killMasterOf(entryKey)).to.equal(port)
          const resolvedAt = Date.now()
          setVersion(2)
          await sleep(300)
          restarted.push(
            await startClusterNode(port, [
              ...['--cluster-enabled', 'yes', '--cluster-config-file', file!, '--dir', dir!],
            ]),
          )
          return resolvedAt
        }
        await single!.stop()
        const resolvedAt = Date.now()
        setVersion(2)
        await sleep(300)
        restarted.push(await startRedisOnPort(port))
        return resolvedAt
      })
    })
  })
})

/** A plain connection to one node (CLIENT LIST, CLUSTER, FLUSHALL). */
const newAdmin = (port: number) => createClient({ socket: { host: '127.0.0.1', port, reconnectStrategy: () => 50 } })
type Admin = ReturnType<typeof newAdmin>

/** A redis-server on `port` with `args` (a cluster node started again); resolves once it answers PING. */
async function startClusterNode(port: number, args: string[]): Promise<{ stop(): Promise<void> }> {
  const server = spawn(
    'redis-server',
    ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', ...args],
    { stdio: 'ignore' },
  )
  for (let attempt = 0; ; attempt++) {
    const probe = createClient({ socket: { host: '127.0.0.1', port, reconnectStrategy: false } })
    probe.on('error', () => {})
    try {
      await probe.connect()
      const state = String(await probe.sendCommand(['CLUSTER', 'INFO']))
      probe.destroy()
      if (state.includes('cluster_state:ok')) break
    } catch {
      if (probe.isOpen) probe.destroy()
    }
    if (attempt > 200) throw new Error(`the cluster node on ${port} did not come back`)
    await sleep(50)
  }
  return {
    async stop() {
      if (server.exitCode !== null || server.signalCode !== null) return
      const exited = once(server, 'exit')
      server.kill('SIGKILL')
      await exited
    },
  }
}

/** MONITOR of one node (redis-cli): every command it runs, with the address of the connection that sent it. */
async function startMonitor(port: number) {
  const monitor = spawn('redis-cli', ['-h', '127.0.0.1', '-p', String(port), 'monitor'], {
    stdio: ['ignore', 'pipe', 'ignore'],
  })
  let output = ''
  monitor.stdout.on('data', (chunk: Buffer) => {
    output += chunk.toString()
  })
  for (let attempt = 0; !output.startsWith('OK'); attempt++) {
    if (attempt > 200) throw new Error(`MONITOR on ${port} did not start`)
    await sleep(10)
  }
  return {
    /** Waits until a marker command sent after everything else shows, then stops. */
    async stop(): Promise<{ addr: string; command: string }[]> {
      const marker = `erk-monitor-end-${Math.random()}`
      const probe = createClient({ socket: { host: '127.0.0.1', port } })
      probe.on('error', () => {})
      await probe.connect()
      await probe.sendCommand(['ECHO', marker])
      probe.destroy()
      for (let attempt = 0; !output.includes(marker); attempt++) {
        if (attempt > 500) throw new Error(`MONITOR on ${port} never showed its end marker`)
        await sleep(10)
      }
      const exited = once(monitor, 'exit')
      monitor.kill('SIGKILL')
      await exited
      const lines = output.slice(0, output.indexOf(marker)).split('\n')
      return lines.flatMap((line) => {
        // 1764636000.123456 [0 127.0.0.1:50000] "EVALSHA" "..." ...
        const match = /^\d+\.\d+ \[\d+ ([^\]]+)\] "([^"]*)"/.exec(line)
        return match ? [{ addr: match[1]!, command: match[2]!.toUpperCase() }] : []
      })
    },
  }
}
