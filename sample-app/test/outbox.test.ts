import { randomInt } from 'node:crypto'
import { expect } from 'chai'
import { loadConfig } from '../src/config.js'
import { USER_CHANNEL, UserEventMessage, type UserEventName } from '../src/events.js'
import { OutboxRelay, userEventHandler, writeOutbox } from '../src/outbox.js'
import { createServices, type Services } from '../src/services.js'
import {
  deleteKeys,
  logIn,
  PASSWORD,
  recordingLogger,
  redisUrl,
  signUp,
  startApp,
  type TestApp,
  testEnv,
  uniqueEmail,
  uniquePrefix,
  waitUntil,
} from './helpers/app.js'
import { nextUserId, prepareDatabase, query, testDatabaseUrl } from './helpers/db.js'
import { startRelay, type WorkerProcess } from './helpers/processes.js'
import { type DisposableRedis, startDisposableRedis } from './helpers/redis.js'
import { startTcpProxy, type TcpProxy } from './helpers/tcp-proxy.js'

interface Received {
  name: UserEventName
  /** The message id (meta.id). */
  id: string
  /** The user id in the payload. */
  userId: number
}

/**
 * What a consumer of the app's events sees: services built as the app builds them (the same notifier, prefix and
 * Redis), without a relay of their own, subscribed to every user event. Every message is kept, repeats included.
 * Tests write outbox rows through its Prisma client, as the routes do.
 */
async function listen(env: Record<string, string>): Promise<{ received: Received[]; services: Services }> {
  const services = createServices(loadConfig(testEnv({ ...env, OUTBOX_RELAY: 'false' })), recordingLogger())
  const received: Received[] = []
  await waitUntil(() => services.redis.isReady, 10_000, 'the listener to connect to Redis')
  // every user event travels on one channel, its name in the message (src/events.ts)
  await services.notifier.subscribe(
    USER_CHANNEL,
    (message, meta) => void received.push({ name: message.type, id: meta.id, userId: message.id }),
    { parse: UserEventMessage.parse },
  )
  return { received, services }
}

async function outboxRows(where = 'TRUE', values: unknown[] = []) {
  return query<{ id: string; kind: string; name: string; payload: unknown; attempts: number }>(
    `SELECT id::text AS id, kind, name, payload, attempts FROM "Outbox" WHERE ${where} ORDER BY id`,
    values,
  )
}

/** Resolves once the outbox holds `count` rows (relayed rows are deleted); fails after `withinMs`. */
async function waitForOutboxRows(count: number, withinMs = 15_000): Promise<void> {
  const deadline = Date.now() + withinMs
  for (;;) {
    const rows = await outboxRows()
    if (rows.length === count) return
    if (Date.now() > deadline) expect.fail(`${rows.length} rows in the outbox after ${withinMs} ms, not ${count}`)
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
}

/** Writes `count` user.updated events of `userId` as the routes do: the change and its outbox row in one transaction. */
async function writeUpdates(prisma: Services['prisma'], userId: number, count: number): Promise<string[]> {
  const ids: string[] = []
  for (let i = 0; i < count; i++) {
    ids.push(
      ...(await prisma.$transaction(async (tx) => {
        await tx.user.update({ where: { id: userId }, data: { name: `Update ${i}` } })
        return writeOutbox(tx, [{ kind: 'event', name: 'user.updated', payload: { id: userId } }])
      })),
    )
  }
  return ids
}

/** Stops the relays and the listener, and deletes what the test left in Redis. */
async function stopAll(
  relays: { stop(): Promise<unknown> }[],
  listener: { services: Services } | undefined,
  prefix: string,
): Promise<void> {
  await Promise.all(relays.map((relay) => relay.stop()))
  await listener?.services.close()
  await deleteKeys(prefix)
}

async function createUserRow(prisma: Services['prisma']): Promise<number> {
  const user = await prisma.user.create({ data: { email: uniqueEmail('outbox'), name: 'Outbox', passwordHash: 'x' } })
  return user.id
}

describe('transactional outbox', function () {
  this.timeout(60_000)
  before(() => prepareDatabase())

  describe('the write routes', () => {
    let app: TestApp
    let listener: Awaited<ReturnType<typeof listen>>
    before(async () => {
      app = await startApp()
      listener = await listen({ REDIS_PREFIX: app.config.redisPrefix })
    })
    after(async () => {
      await listener?.services.close()
      await app?.close()
    })

    it('sign-up, PATCH and DELETE each publish their event through the outbox, as message outbox-<row id>', async () => {
      const user = await signUp(app)
      const cookie = await logIn(app, user)
      const patched = await app.http().patch(`/users/${user.id}`).set('Cookie', cookie).send({ name: 'Renamed' })
      expect(patched.status, patched.text).to.equal(200)
      expect(
        (await app.http().delete(`/users/${user.id}`).set('Cookie', cookie).send({ currentPassword: PASSWORD })).status,
      ).to.equal(204)
      await waitUntil(
        () => listener.received.filter((event) => event.userId === user.id).length >= 3,
        10_000,
        '3 events',
      )
      const events = listener.received.filter((event) => event.userId === user.id)
      expect(events.map((event) => event.name)).to.deep.equal(['user.created', 'user.updated', 'user.deleted'])
      const rowIds = events.map((event) => BigInt(/^outbox-(\d+)$/.exec(event.id)?.[1] ?? Number.NaN))
      expect(rowIds[0]! < rowIds[1]! && rowIds[1]! < rowIds[2]!, `ids in order: ${events.map((e) => e.id)}`).to.equal(
        true,
      )
      await waitForOutboxRows(0)
    })

    it('a change that fails (409) writes no event', async () => {
      const taken = await signUp(app)
      const res = await app.http().post('/users').send({ email: taken.email, name: 'Again', password: PASSWORD })
      expect(res.status).to.equal(409)
      const next = await signUp(app)
      await waitUntil(() => listener.received.some((event) => event.userId === next.id), 10_000, 'the next event')
      const created = listener.received.filter((event) => event.name === 'user.created').map((event) => event.userId)
      expect(created.slice(-2)).to.deep.equal([taken.id, next.id])
    })
  })

  describe('Redis unreachable during a change', () => {
    let redis: DisposableRedis
    let proxy: TcpProxy
    let app: TestApp
    let listener: Awaited<ReturnType<typeof listen>>
    before(async () => {
      redis = await startDisposableRedis()
      // the app reaches this Redis through a proxy the test cuts; the listener reaches it directly
      proxy = await startTcpProxy(redis.port)
      app = await startApp({ REDIS_URL: proxy.url, OUTBOX_RETRY_MAX_MS: '500' })
      listener = await listen({ REDIS_URL: redis.url, REDIS_PREFIX: app.config.redisPrefix })
    })
    after(async () => {
      await listener?.services.close()
      await app?.close()
      await proxy?.close()
      await redis?.stop()
    })

    it('the change succeeds, its event is published once Redis is back, and the cached list is invalidated', async () => {
      const before = await signUp(app)
      const list = `/users?after=${before.id - 1}`
      expect((await app.http().get(list)).headers['x-cache']).to.equal('MISS')
      expect((await app.http().get(list)).headers['x-cache']).to.equal('HIT')

      proxy.cut()
      await waitUntil(() => !app.services.redis.isReady, 10_000, 'the app to lose Redis')
      const email = uniqueEmail('offline')
      const res = await app.http().post('/users').send({ email, name: 'Offline', password: PASSWORD })
      expect(res.status, res.text).to.equal(201)
      const userId = res.body.id as number
      const [event] = await outboxRows(`kind = 'event' AND payload->>'id' = $1`, [String(userId)])
      expect(event, 'the event waits in the outbox').to.include({ kind: 'event', name: 'user.created' })
      const [invalidation] = await outboxRows(`kind = 'cache'`)
      expect(invalidation?.payload, 'the failed invalidation waits too').to.deep.equal({
        tags: ['users', `user:${userId}`],
      })
      // the relay tries, fails and keeps the row
      await waitUntil(() => app.logger.warnings.some((args) => /^outbox: relaying failed/.test(String(args[0]))))
      expect(listener.received.some((received) => received.userId === userId)).to.equal(false)

      proxy.restore()
      await waitUntil(
        () => listener.received.some((received) => received.userId === userId),
        20_000,
        'the event once Redis is back',
      )
      expect(listener.received.filter((received) => received.userId === userId)).to.deep.equal([
        { name: 'user.created', id: `outbox-${event!.id}`, userId },
      ])
      await waitUntil(() => app.logger.warnings.some((args) => /^outbox: relaying again/.test(String(args[0]))))
      await waitForOutboxRows(0)
      // the list cached before the change (Redis kept it) was invalidated by the relay: it shows the new user
      const after = await app.http().get(list)
      expect(after.headers['x-cache']).to.equal('MISS')
      expect(after.body.users.map((user: { id: number }) => user.id)).to.include(userId)
    })

    it("a sign-up's invalidation relayed once Redis is back drops a 404 cached for its id, in any spelling", async () => {
      const nextId = await nextUserId()
      const spellings = [`/users/${nextId}`, `/Users/${nextId}/`, `/users/${nextId}?ref=mail`]
      for (const path of spellings) {
        expect((await app.http().get(path)).status).to.equal(404)
        const again = await app.http().get(path)
        expect([again.status, again.headers['x-cache']], `${path}: a cached 404`).to.deep.equal([404, 'HIT'])
      }

      proxy.cut()
      await waitUntil(() => !app.services.redis.isReady, 10_000, 'the app to lose Redis')
      const res = await app
        .http()
        .post('/users')
        .send({ email: uniqueEmail('probed'), name: 'Probed', password: PASSWORD })
      expect(res.status, res.text).to.equal(201)
      expect(res.body.id, 'the id probed is the one the database gave').to.equal(nextId)
      const [invalidation] = await outboxRows(`kind = 'cache'`)
      expect(invalidation?.payload).to.deep.equal({ tags: ['users', `user:${nextId}`] })

      proxy.restore()
      await waitForOutboxRows(0, 20_000)
      await waitUntil(() => app.services.redis.isReady, 10_000, 'the app to have Redis again')
      for (const path of spellings) {
        const page = await app.http().get(path)
        expect(page.status, `${path}: ${page.text}`).to.equal(200)
        expect(page.body.name).to.equal('Probed')
      }
    })
  })

  describe('relays SIGKILLed at random points while 1,000 changes are written', () => {
    const prefix = uniquePrefix('outbox-kill')
    const relays: WorkerProcess[] = []
    let listener: Awaited<ReturnType<typeof listen>>
    before(async () => {
      listener = await listen({ REDIS_PREFIX: prefix })
    })
    after(() => stopAll(relays, listener, prefix))

    it('loses no event; a repeat carries the same id; the outbox ends empty', async function () {
      this.timeout(180_000)
      const userId = await createUserRow(listener.services.prisma)
      const env = Object.fromEntries(
        Object.entries(
          testEnv({ DATABASE_URL: testDatabaseUrl, REDIS_URL: redisUrl, REDIS_PREFIX: prefix, OUTBOX_POLL_MS: '200' }),
        ).filter((entry): entry is [string, string] => entry[1] !== undefined),
      )
      // 1,000 changes, 10 at a time, while relays are started and SIGKILLed
      let writing = true
      const written = Promise.all(
        Array.from({ length: 10 }, () => writeUpdates(listener.services.prisma, userId, 100)),
      ).finally(() => {
        writing = false
      })
      let kills = 0
      while (writing) {
        const relay = await startRelay(env)
        relays.push(relay)
        await new Promise((resolve) => setTimeout(resolve, randomInt(0, 800)))
        relay.child.kill('SIGKILL')
        await relay.stop()
        kills++
      }
      const rowIds = (await written).flat()
      relays.push(await startRelay(env))
      const expected = new Set(rowIds.map((id) => `outbox-${id}`))
      const distinct = () => new Set(listener.received.map((event) => event.id))
      await waitUntil(() => distinct().size >= expected.size, 60_000, 'every event')
      await waitForOutboxRows(0)

      const received = listener.received
      expect(rowIds.length).to.equal(1_000)
      expect([...distinct()].sort(), 'every row once or more, nothing else').to.deep.equal([...expected].sort())
      for (const event of received) expect(event).to.deep.include({ name: 'user.updated', userId })
      const duplicates = received.length - expected.size
      console.log(`      ${kills} relays killed; ${received.length} messages for 1,000 rows: ${duplicates} repeats`)
    })
  })

  describe('two relays at once', () => {
    const prefix = uniquePrefix('outbox-two')
    const relays: OutboxRelay[] = []
    let listener: Awaited<ReturnType<typeof listen>>
    before(async () => {
      listener = await listen({ REDIS_PREFIX: prefix })
    })
    after(() => stopAll(relays, listener, prefix))

    it('never relay a row twice unless a try failed (SKIP LOCKED), and leave rows of a kind without a handler waiting, logged', async () => {
      const userId = await createUserRow(listener.services.prisma)
      const waiting = await listener.services.prisma.$transaction((tx) =>
        writeOutbox(tx, [{ kind: 'job', name: 'not-registered', payload: {} }]),
      )
      const writeThousand = async () =>
        (
          await Promise.all(Array.from({ length: 10 }, () => writeUpdates(listener.services.prisma, userId, 100)))
        ).flat()
      const first = writeThousand()
      const loggers = [recordingLogger(), recordingLogger()]
      for (const logger of loggers) {
        const relay = new OutboxRelay({ databaseUrl: testDatabaseUrl, batchSize: 10, pollMs: 100, logger })
        relays.push(relay.register('event', userEventHandler(listener.services.notifier)).start())
      }
      const rowIds = [...(await first), ...(await writeThousand())]
      await waitUntil(() => listener.received.length >= rowIds.length, 60_000, 'every event')
      await waitUntil(() => relays[0]!.relayed + relays[1]!.relayed >= rowIds.length, 10_000, 'the relays to commit')

      const ids = listener.received.map((event) => event.id)
      // A repeat is what a failed try leaves (a publish that timed out yet arrived, a batch whose
      // DELETE or COMMIT failed after its publishes): then, and only then, the relay logged it.
      const failedTries = loggers.flatMap((logger) =>
        logger.warnings.map((args) => String(args[0])).filter((line) => line.startsWith('outbox: relaying failed')),
      )
      const repeats = ids.length - new Set(ids).size
      if (failedTries.length === 0) expect(repeats, 'a repeat without a failed try').to.equal(0)
      else console.log(`      ${repeats} repeats after ${failedTries.length} failed tries: ${failedTries.join('; ')}`)
      expect([...ids].sort()).to.deep.equal(rowIds.map((id) => `outbox-${id}`).sort())
      expect(
        relays.map((relay) => relay.relayed),
        'both relays relayed rows',
      ).to.satisfy((counts: number[]) => counts.every((count) => count > 0))
      console.log(`      rows relayed by each relay: ${relays.map((relay) => relay.relayed).join(' and ')}`)

      expect(
        (await outboxRows()).map((row) => row.id),
        'only the row without a handler is left',
      ).to.deep.equal(waiting)
      for (const logger of loggers) {
        expect(logger.warnings.map((args) => String(args[0]))).to.include(
          "outbox: 1 row of kind 'job' waits: no handler is registered for it",
        )
      }
      await query('DELETE FROM "Outbox" WHERE id = $1', [waiting[0]])
    })
  })
})
