import { setTimeout as sleep } from 'node:timers/promises'
import { expect } from 'chai'
import { compareStreamIds, createNotifier, type Notifier, type NotifierOptions } from 'express-redis-kit'
import { createClient, createCluster } from 'redis'
import { USER_CHANNEL, type UserEventMessage } from '../src/events.js'
import { clusterNodes, deleteKeys, expectClusterUp, redisUrl, testEnv, uniquePrefix, waitUntil } from './helpers/app.js'
import { prepareDatabase } from './helpers/db.js'
import { type ServerProcess, startServer } from './helpers/processes.js'
import { openSse, type SseClient, type SseEvent } from './helpers/sse.js'
import { resumingClient } from './helpers/sse-resume.js'

/*
 * /events resumes: the SSE id of each event is its stream entry id; a client that reconnects
 * with Last-Event-ID, to the same instance or the other, gets exactly the events it missed, in
 * order, once; a trimmed id gets `resync`. Two server processes, on a single Redis and on the
 * Cluster (like e2e.test.ts). Events are published from the test through a fan-out notifier on
 * the app's prefix and channel (sign-ups would spend their time in Argon2).
 */
const modes = [
  { name: 'a single Redis', env: {} as Record<string, string> },
  { name: 'a Redis Cluster', env: { REDIS_CLUSTER_NODES: clusterNodes } as Record<string, string> },
]
for (const mode of modes) {
  describe(`/events resume on ${mode.name}: two server processes`, function () {
    resume.call(this, mode.env)
  })
}

/** Long enough for the 10,000 events of the end-to-end test: nothing is trimmed there. */
const MAX_LENGTH = 20_000

function resume(this: Mocha.Suite, modeEnv: Record<string, string>) {
  this.timeout(90_000)
  const nodes = modeEnv.REDIS_CLUSTER_NODES?.split(',') ?? []
  let prefix = ''
  let env: Record<string, string> = {}
  const servers: ServerProcess[] = []
  const streams: SseClient[] = []
  let redis:
    | (NotifierOptions['client'] & {
        close(): Promise<unknown>
        xRevRange(key: string, end: string, start: string, options: { COUNT: number }): Promise<unknown>
      })
    | undefined
  let publisher: Notifier
  let next = 1

  /** Publishes user events as the app does (on its channel); resolves once Redis has them. */
  const publish = (count: number, messageId?: string): Promise<string[]> =>
    Promise.all(
      Array.from({ length: count }, () => {
        const message: UserEventMessage = { type: 'user.updated', id: next++ }
        return publisher.publish(USER_CHANNEL, message, messageId === undefined ? {} : { id: messageId })
      }),
    )

  const open = async (server: ServerProcess, lastEventId?: string): Promise<SseClient> => {
    const stream = await openSse(
      `${server.url}/events`,
      lastEventId === undefined ? {} : { 'Last-Event-ID': lastEventId },
    )
    streams.push(stream)
    return stream
  }
  const userIds = (events: SseEvent[]) =>
    events.filter((event) => event.event.startsWith('user.')).map((event) => JSON.parse(event.data).id as number)
  const waitForUser = (stream: SseClient, id: number) =>
    stream.waitFor((event) => event.event.startsWith('user.') && JSON.parse(event.data).id === id, 15_000, `user ${id}`)

  before(async () => {
    if (modeEnv.REDIS_CLUSTER_NODES) await expectClusterUp(modeEnv.REDIS_CLUSTER_NODES)
    await prepareDatabase()
    prefix = uniquePrefix('events')
    env = Object.fromEntries(
      Object.entries(
        testEnv({
          PORT: '0',
          HOST: '127.0.0.1',
          REDIS_PREFIX: prefix,
          EVENTS_MAX_LENGTH: String(MAX_LENGTH),
          // what these servers do not need here: less load on a shared machine
          RUN_WORKER: 'false',
          OUTBOX_RELAY: 'false',
          ...modeEnv,
        }),
      ).filter((entry): entry is [string, string] => entry[1] !== undefined),
    )
    const started = await Promise.allSettled([startServer(env), startServer(env)])
    for (const result of started) if (result.status === 'fulfilled') servers.push(result.value)
    const failed = started.find((result) => result.status === 'rejected')
    if (failed) throw failed.reason
    const client =
      nodes.length > 0
        ? createCluster({ rootNodes: nodes.map((node) => ({ url: `redis://${node}` })) })
        : createClient({ url: redisUrl })
    client.on('error', () => {})
    await client.connect()
    redis = client
    // a generous timeout: the machine running the tests is shared and may be busy
    publisher = createNotifier({
      client,
      prefix: `${prefix}events:`,
      mode: 'fanout',
      maxLength: MAX_LENGTH,
      timeoutMs: 10_000,
    })
  })
  after(async () => {
    for (const stream of streams) stream.close()
    await publisher?.close()
    await redis?.close()
    await Promise.all(servers.map((server) => server.stop()))
    await deleteKeys(prefix, nodes)
  })

  for (const [name, other] of [
    ['the same instance', false],
    ['the other instance', true],
  ] as const) {
    it(`Last-Event-ID on ${name}: exactly the events after it, in order, then the live ones`, async () => {
      const [a, b] = servers as [ServerProcess, ServerProcess]
      const first = await open(a)
      const ids = await publish(3)
      const start = next - 3
      await waitForUser(first, start + 2)
      const seen = first.events.filter((event) => event.event === 'user.updated')
      expect(seen.map((event) => event.id)).to.satisfy((list: string[]) => list.every((id) => /^\d+-\d+$/.test(id)))
      expect(ids).to.have.length(3)
      first.close()
      // missed while disconnected
      await publish(4)
      const again = await open(other ? b : a, seen[0]!.id)
      await waitForUser(again, start + 6)
      await publish(1)
      await waitForUser(again, start + 7)
      expect(userIds(again.events)).to.deep.equal([1, 2, 3, 4, 5, 6, 7].map((i) => start + i))
      const streamIds = again.events.map((event) => event.id!)
      expect(streamIds).to.deep.equal([...streamIds].sort(compareStreamIds))
      expect(again.events.some((event) => event.event === 'resync')).to.equal(false)
    })
  }

  it('a message published twice (the same message id: the outbox relaying a row again) reaches a client once, live and replayed', async () => {
    const [a, b] = servers as [ServerProcess, ServerProcess]
    const live = await open(a)
    const before = await publish(1)
    const mark = next - 1
    await waitForUser(live, mark)
    const marker = live.events.find((event) => JSON.parse(event.data).id === mark)!
    // the same event (same message id and payload) published twice, as a relay that crashed before marking its row would
    const repeated = `outbox-test-${Date.now()}`
    const message: UserEventMessage = { type: 'user.updated', id: next++ }
    await publisher.publish(USER_CHANNEL, message, { id: repeated })
    await publisher.publish(USER_CHANNEL, message, { id: repeated })
    await publish(1)
    await waitForUser(live, next - 1)
    expect(before).to.have.length(1)
    expect(userIds(live.events.filter((event) => JSON.parse(event.data).id > mark))).to.deep.equal([mark + 1, next - 1])
    const replayed = await open(b, marker.id)
    await waitForUser(replayed, next - 1)
    expect(userIds(replayed.events)).to.deep.equal([mark + 1, next - 1])
  })

  it('a malformed Last-Event-ID gets resync, then the live events', async () => {
    const [a] = servers as [ServerProcess, ServerProcess]
    // the last two look like ids but Redis refuses them (a part above 2^64-1)
    for (const bad of ['abc', '1-2-3', '12345', `${'9'.repeat(30)}-0`, `${'9'.repeat(20)}-0`, `1-${'9'.repeat(20)}`]) {
      const stream = await open(a, bad)
      await stream.waitFor((event) => event.event === 'resync', 5_000, `resync for ${bad}`)
      await publish(1)
      await waitForUser(stream, next - 1)
      expect(stream.events[0]?.event).to.equal('resync')
      stream.close()
    }
  })

  it('10,000 events while one instance restarts and clients drop and reconnect at random: each client gets every event once, in id order', async function () {
    // about 10 s on an idle machine; generous for one shared with other test runs and benchmarks
    this.timeout(180_000)
    const total = 10_000
    const urls = () => servers.map((server) => server.url)
    // every client starts from the stream's last entry, as a browser that saw it would (every connection resumes)
    await publish(1)
    const [latest] = (await redis!.xRevRange(`${prefix}events:${USER_CHANNEL}`, '+', '-', { COUNT: 1 })) as {
      id: string
    }[]
    const clients = Array.from({ length: 6 }, () =>
      resumingClient(urls, { minMs: 100, maxMs: 1_200, from: latest!.id }),
    )
    try {
      for (let batch = 0; batch < total / 100; batch++) {
        await publish(100)
        if (batch === 20) {
          // restart the second instance: its clients are cut off, then come back to either
          const restarted = servers[1]!
          servers.splice(1, 1)
          await restarted.stop()
          servers.push(await startServer(env))
        }
        await sleep(30)
      }
      const last = next - 1
      for (const client of clients) {
        await waitUntil(
          () => client.received().some((event) => event.data.includes(`"id":${last},`)),
          30_000,
          `event ${last}`,
        )
      }
    } finally {
      await Promise.all(clients.map((client) => client.stop()))
    }
    const first = next - total
    const expected = Array.from({ length: total }, (_, i) => first + i)
    for (const client of clients) {
      const events = client
        .received()
        .filter((event) => event.event.startsWith('user.') && JSON.parse(event.data).id >= first)
      expect(events.map((event) => JSON.parse(event.data).id)).to.deep.equal(expected)
      const ids = events.map((event) => event.id!)
      expect(new Set(ids).size).to.equal(ids.length)
      expect(ids).to.deep.equal([...ids].sort(compareStreamIds))
      expect(client.received().filter((event) => event.event === 'resync')).to.deep.equal([])
      expect(client.connections()).to.be.at.least(5)
    }
  })

  // trims the stream: last
  it('a Last-Event-ID whose successors were trimmed gets resync, then the live events', async () => {
    const [a, b] = servers as [ServerProcess, ServerProcess]
    const live = await open(a)
    await publish(1)
    await waitForUser(live, next - 1)
    const old = live.events.at(-1)!.id!
    // a publisher that trims to about 100 (MAXLEN ~) after the events it adds
    const trimming = createNotifier({
      client: redis!,
      prefix: `${prefix}events:`,
      mode: 'fanout',
      maxLength: 100,
      timeoutMs: 10_000,
    })
    try {
      for (let i = 0; i < 500; i++) await trimming.publish(USER_CHANNEL, { type: 'user.updated', id: next++ })
    } finally {
      await trimming.close()
    }
    const stream = await open(b, old)
    await stream.waitFor((event) => event.event === 'resync', 10_000, 'resync')
    await publish(1)
    await waitForUser(stream, next - 1)
    expect(stream.events[0]?.event).to.equal('resync')
    // then what comes live (the instance may still have been reading the last of the 500): in order, once, to the end
    const after = userIds(stream.events)
    expect(after.at(-1)).to.equal(next - 1)
    expect(after).to.deep.equal(Array.from({ length: after.length }, (_, i) => next - after.length + i))
  })
}
