import { randomBytes } from 'node:crypto'
import diagnostics from 'node:diagnostics_channel'
import { setTimeout as sleep } from 'node:timers/promises'
import { expect } from 'chai'
import { type CacheEvent, CHANNELS } from 'express-redis-kit'
import { createClient } from 'redis'
import {
  clusterNodes,
  expectClusterUp,
  redisUrl,
  signedInUser,
  signUp,
  startApp,
  type TestApp,
  uniquePrefix,
  waitUntil,
} from './helpers/app.js'

/**
 * The local cache on GET /users/:id (LOCAL_CACHE, on by default), with two instances of the app
 * sharing Redis and the database (each its own Redis client, so its own local cache and tracking
 * connections): a page warmed on A is served from A's memory, with no cache command reaching
 * Redis (MONITOR on every node says so), and a PATCH made through B is seen by A's next GET
 * once fenceMs has passed, never the old body after that. Runs on the single Redis and on the
 * Redis Cluster that `npm test` starts (scripts/cluster.sh).
 */
const modes = [
  { name: 'a single Redis', env: {} as Record<string, string>, nodes: [redisUrl] },
  {
    name: 'a Redis Cluster',
    env: { REDIS_CLUSTER_NODES: clusterNodes } as Record<string, string>,
    nodes: clusterNodes.split(',').map((node) => `redis://${node}`),
  },
]

/** What MONITOR shows on one Redis node, and a connection to mark a point in it. */
interface NodeMonitor {
  lines: string[]
  /** Resolves once every command executed before it is in `lines`; returns the index after them. */
  mark(): Promise<number>
  close(): void
}

async function monitorNode(url: string): Promise<NodeMonitor> {
  const lines: string[] = []
  const watcher = createClient({ url })
  const probe = createClient({ url })
  for (const client of [watcher, probe]) client.on('error', () => {})
  await Promise.all([watcher.connect(), probe.connect()])
  await watcher.monitor((line) => void lines.push(String(line)))
  return {
    lines,
    async mark() {
      // MONITOR lists commands in the order the node runs them: once this one shows, every
      // command answered before it was sent shows too
      const sentinel = `local-cache-test-mark-${randomBytes(6).toString('hex')}`
      await probe.echo(sentinel)
      await waitUntil(() => lines.some((line) => line.includes(sentinel)), 5_000, 'MONITOR to show the mark')
      return lines.findIndex((line) => line.includes(sentinel)) + 1
    },
    close() {
      watcher.destroy()
      probe.destroy()
    },
  }
}

for (const mode of modes) {
  describe(`local cache of GET /users/:id on ${mode.name}: two instances`, () => {
    const FENCE_MS = 20 // LOCAL_CACHE_FENCE_MS's default
    /** Both instances are reached under one host name, as behind a load balancer. */
    const SITE = 'users.example'
    const prefix = uniquePrefix('local')
    let a: TestApp
    let b: TestApp
    let monitors: NodeMonitor[] = []
    /** The cache events of this suite's keys: both instances run in this process, only A serves GETs. */
    const events: CacheEvent[] = []
    const onCache = (message: unknown) => {
      const event = message as CacheEvent
      if (event.key?.startsWith(prefix)) events.push(event)
    }

    before(async function () {
      this.timeout(60_000)
      if (mode.env.REDIS_CLUSTER_NODES) await expectClusterUp(mode.env.REDIS_CLUSTER_NODES)
      // one REDIS_PREFIX: the same keys, sessions and cache, as instances of one deployment
      a = await startApp({ ...mode.env, REDIS_PREFIX: prefix })
      b = await startApp({ ...mode.env, REDIS_PREFIX: prefix })
      expect(a.config.localCache, 'on by default, fenceMs 20').to.deep.equal({ fenceMs: FENCE_MS })
      monitors = await Promise.all(mode.nodes.map(monitorNode))
      diagnostics.subscribe(CHANNELS.cache, onCache)
    })
    after(async () => {
      diagnostics.unsubscribe(CHANNELS.cache, onCache)
      for (const monitor of monitors) monitor.close()
      await Promise.all([a?.close(), b?.close()])
    })

    /** GET `path` on `app` (200 expected): its body, and whether the cache served it from memory. */
    async function read(app: TestApp, path: string, cookie?: string): Promise<{ name: string; local: boolean }> {
      const before = events.length
      const req = app.http().get(path).set('Host', SITE)
      if (cookie) req.set('Cookie', cookie)
      const res = await req
      expect(res.status, res.text).to.equal(200)
      const local = events.slice(before).some((event) => event.result === 'hit' && event.local === true)
      return { name: res.body.name, local }
    }

    /**
     * Reads on A until A serves it from its memory: the first reads fill the cache, and a read is
     * served from memory only while A's tracking connections answered a PING within fenceMs (on a
     * loaded machine some go to Redis instead, which is the fence doing its job).
     */
    async function warm(path: string, cookie?: string): Promise<string> {
      const deadline = Date.now() + 10_000
      for (;;) {
        const { name, local } = await read(a, path, cookie)
        if (local) return name
        if (Date.now() > deadline) throw new Error(`A never served ${path} from its local cache`)
        await sleep(10)
      }
    }

    it('a page warmed on A is served from its memory: no cache command reaches Redis', async () => {
      const user = await signUp(a, { name: 'Local Reader' })
      const page = `/users/${user.id}`
      expect(await warm(page)).to.equal('Local Reader')
      const marks = await Promise.all(monitors.map((monitor) => monitor.mark()))
      let reads = 0
      let localHits = 0
      const deadline = Date.now() + 10_000
      while (localHits < 10 && Date.now() < deadline) {
        const { name, local } = await read(a, page)
        expect(name).to.equal('Local Reader')
        reads++
        if (local) localHits++
      }
      expect(localHits, `local hits in ${reads} reads`).to.equal(10)
      const ends = await Promise.all(monitors.map((monitor) => monitor.mark()))
      // the commands clients sent (not those their scripts ran, which MONITOR shows as from "lua")
      const seen = monitors
        .flatMap((monitor, i) => monitor.lines.slice(marks[i], ends[i]))
        .filter((line) => !/\[\d+ lua\]/.test(line))
      // a read the fence sent to Redis is one lookup of a fresh entry; a local hit sends nothing
      const lookups = seen.filter((line) => line.includes(`${prefix}cache:`))
      expect(lookups.length, `cache commands for ${reads} reads, ${localHits} of them local`).to.equal(
        reads - localHits,
      )
      // MONITOR did see every request: each one's general rate limit (the app's event readers and
      // relay, in the background, send commands of their own meanwhile)
      const rateLimits = seen.filter((line) => line.includes(`${prefix}rl:api:`))
      expect(rateLimits.length, 'the rate limiter ran once per request').to.equal(reads)
    })

    it('a PATCH through B is seen by A once fenceMs has passed, never the old body after; /me too', async () => {
      const user = await signedInUser(a, { name: 'Before The Change' })
      const page = `/users/${user.id}`
      expect(await warm(page)).to.equal('Before The Change')
      // the session check's account:<id> cached() read, behind GET /me, shares A's local cache
      expect(await warm('/me', user.cookie)).to.equal('Before The Change')
      const res = await b
        .http()
        .patch(page)
        .set('Host', SITE)
        .set('Cookie', user.cookie)
        .send({ name: 'After The Change' })
      expect(res.status, res.text).to.equal(200)
      const answeredAt = Date.now()
      await sleep(FENCE_MS + 5)
      expect(Date.now() - answeredAt).to.be.greaterThan(FENCE_MS)
      // from then on every read on A has the new body, from Redis, the database or memory again
      expect((await read(a, '/me', user.cookie)).name, 'GET /me on A').to.equal('After The Change')
      let servedLocally = false
      const deadline = Date.now() + 10_000
      for (let reads = 0; reads < 20 || !servedLocally; reads++) {
        if (Date.now() > deadline) throw new Error('A never served the new page from its local cache')
        const { name, local } = await read(a, page)
        expect(name, `GET ${page} on A`).to.equal('After The Change')
        servedLocally ||= local
      }
    })
  })
}
