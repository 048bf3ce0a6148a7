import { setTimeout as sleep } from 'node:timers/promises'
import { expect } from 'chai'
import { createNotifier, type Notifier, type NotifierOptions } from '../../src/index.js'
import { failureOf, inbox, unhandledRejections } from '../helpers/notifier.js'
import { recordingLogger, startRedisOnPort, waitUntil } from '../helpers/outage.js'
import {
  connectTo,
  type DisposableRedis,
  type RedisClient,
  mode as redisMode,
  startDisposableRedis,
  uniquePrefix,
} from '../helpers/redis.js'

/*
 * Redis stopped or stalled under a notifier: a disposable redis-server of our own is killed
 * or paused, in both suite modes (the suite's Redis and Cluster are shared and stay up).
 * publish rejects with ERK_REDIS_UNAVAILABLE (never hangs, never crashes), subscribe waits
 * for Redis, close() always resolves, and delivery resumes once Redis is back.
 */
const TIMEOUT_MS = 300
/** Not a timing requirement: a close() or unsubscribe() still pending after this long is taken as hanging. */
const HANG_MS = 10_000

/** `promise`, or a failure naming `what` if it has not settled within `ms`. */
async function settlesWithin<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not settle within ${ms} ms`)), ms)
  })
  try {
    return await Promise.race([promise, late])
  } finally {
    clearTimeout(timer)
  }
}

describe(`notifier when Redis fails (${redisMode} suite, disposable Redis)`, () => {
  const unhandled = unhandledRejections()
  const servers: DisposableRedis[] = []
  const notifiers: Notifier[] = []
  let redis: DisposableRedis
  let client: RedisClient

  const notifier = (options: Omit<NotifierOptions, 'client'>): Notifier => {
    const created = createNotifier({ client, prefix: uniquePrefix('notifier-down'), timeoutMs: TIMEOUT_MS, ...options })
    notifiers.push(created)
    return created
  }

  before(() => unhandled.start())
  after(() => unhandled.stop())

  beforeEach(async () => {
    redis = await startDisposableRedis()
    servers.push(redis)
    client = await connectTo(redis)
  })

  afterEach(async () => {
    // A notifier whose close() hangs must not hang the suite: the test already failed.
    await Promise.all(notifiers.splice(0).map((each) => settlesWithin(each.close(), 1_000, 'close()').catch(() => {})))
    if ((client as unknown as { isOpen: boolean }).isOpen) client.destroy()
    await Promise.all(servers.splice(0).map((each) => each.stop()))
    await sleep(50)
    expect(unhandled.reasons, 'unhandled rejections').to.deep.equal([])
  })

  for (const mode of ['pubsub', 'durable'] as const) {
    describe(`mode ${mode}`, () => {
      it('Redis stopped: publish rejects with ERK_REDIS_UNAVAILABLE, every time, without crashing', async () => {
        const logger = recordingLogger()
        const events = notifier({ mode, logger, claimIdle: 400 })
        await events.subscribe('orders', () => {})
        await events.publish('orders', 'while up')
        await redis.stop()
        for (let i = 0; i < 5; i++) {
          const error = await settlesWithin(
            failureOf(() => events.publish('orders', i)),
            HANG_MS,
            'publish',
          )
          expect(error).to.have.property('name', 'RedisKitError')
          expect(error).to.have.property('code', 'ERK_REDIS_UNAVAILABLE')
          expect(error).to.have.property('status', 503)
        }
      })

      it('Redis stalled (CLIENT PAUSE): publish rejects with ERK_REDIS_UNAVAILABLE after about timeoutMs', async () => {
        const events = notifier({ mode, logger: recordingLogger(), claimIdle: 400 })
        await events.publish('orders', 'while up')
        const single = client as unknown as { sendCommand(args: string[]): Promise<unknown> }
        // Paused for longer than the test: a publish that waited for Redis would resolve, not reject.
        await single.sendCommand(['CLIENT', 'PAUSE', '30000', 'ALL'])
        const error = await settlesWithin(
          failureOf(() => events.publish('orders', 'stalled')),
          HANG_MS,
          'publish',
        )
        expect(error).to.have.property('code', 'ERK_REDIS_UNAVAILABLE')
        expect(error.message).to.include(`${TIMEOUT_MS} ms`)
      })

      it('a subscribe issued while Redis is down waits for it, and resolves once Redis is back: messages arrive', async function () {
        this.timeout(30_000)
        const events = notifier({ mode, logger: recordingLogger(), claimIdle: 400 })
        await redis.stop()
        const received = inbox()
        let subscribed = false
        const subscribing = events.subscribe('orders', received.handler).then((unsubscribe) => {
          subscribed = true
          return unsubscribe
        })
        await sleep(300)
        expect(subscribed, 'subscribed while Redis is down').to.equal(false)
        servers.push(await startRedisOnPort(redis.port))
        await settlesWithin(subscribing, 10_000, 'subscribe')
        await waitUntil(() => client.isReady, 10_000, 'the client to reconnect')
        await events.publish('orders', 'back')
        await waitUntil(() => received.deliveries.length === 1, 10_000, 'the message')
        expect(received.events()).to.deep.equal(['back'])
      })

      it('close() while a subscribe waits for a dead Redis: close() resolves, the subscribe rejects with ERK_CLOSED', async () => {
        const events = notifier({ mode, logger: recordingLogger(), claimIdle: 400 })
        await redis.stop()
        const subscribing = failureOf(() => events.subscribe('orders', () => {}))
        await sleep(300)
        await settlesWithin(events.close(), HANG_MS, 'close()')
        const error = await settlesWithin(subscribing, HANG_MS, 'the pending subscribe')
        expect(error).to.have.property('code', 'ERK_CLOSED')
      })

      it('close() while the subscriber connection waits for a dead Redis (subscribed before it died) resolves', async () => {
        const events = notifier({ mode, logger: recordingLogger(), claimIdle: 400 })
        const received = inbox()
        await events.subscribe('orders', received.handler)
        await events.subscribe('invoices', received.handler)
        await redis.stop()
        // Long enough for durable consumers to fail their reads and go through a retry and a claim round.
        await sleep(1_500)
        await settlesWithin(events.close(), HANG_MS, 'close()')
        expect(await failureOf(() => events.publish('orders', 1))).to.have.property('code', 'ERK_CLOSED')
      })

      it('unsubscribe() while Redis is down resolves; the other subscription is closed by close()', async () => {
        const events = notifier({ mode, logger: recordingLogger(), claimIdle: 400 })
        const unsubscribe = await events.subscribe('orders', () => {})
        await events.subscribe('invoices', () => {})
        await redis.stop()
        await sleep(1_500)
        await settlesWithin(unsubscribe(), HANG_MS, 'unsubscribe()')
        await settlesWithin(events.close(), HANG_MS, 'close()')
      })

      it('a client without a command timeout (commandOptions.timeout 0): close() while Redis is down resolves', async () => {
        const patient = await connectTo(redis, { commandOptions: { timeout: 0 } })
        try {
          const events = createNotifier({
            client: patient,
            prefix: uniquePrefix('notifier-patient'),
            mode,
            logger: recordingLogger(),
            claimIdle: 400,
          })
          notifiers.push(events)
          await events.subscribe('orders', () => {})
          await events.subscribe('invoices', () => {})
          await redis.stop()
          // Long enough for durable consumers to fail their reads and go through a retry and a claim round.
          await sleep(1_500)
          await settlesWithin(events.close(), HANG_MS, 'close()')
        } finally {
          patient.destroy()
        }
      })
    })
  }

  describe('Redis restarted (empty) on the same port', () => {
    it('pubsub: the subscriptions are renewed, onReconnect is called, and new messages arrive', async function () {
      this.timeout(30_000)
      let reconnects = 0
      const events = notifier({ logger: recordingLogger(), onReconnect: () => void reconnects++ })
      const received = inbox()
      await events.subscribe('orders', received.handler)
      await events.publish('orders', 'before')
      await waitUntil(() => received.deliveries.length === 1, 5_000, 'the first message')
      await redis.stop()
      await sleep(300)
      servers.push(await startRedisOnPort(redis.port))
      await waitUntil(() => reconnects >= 1, 10_000, 'onReconnect')
      await waitUntil(() => client.isReady, 10_000, 'the client to reconnect')
      await events.publish('orders', 'after')
      await waitUntil(() => received.deliveries.length === 2, 10_000, 'the message after the restart')
      expect(received.events()).to.deep.equal(['before', 'after'])
    })

    it('durable: the consumer group is created again (the stream was lost) and new messages arrive; onReconnect is not called', async function () {
      this.timeout(30_000)
      let reconnects = 0
      const events = notifier({
        mode: 'durable',
        logger: recordingLogger(),
        claimIdle: 400,
        onReconnect: () => void reconnects++,
      })
      const received = inbox()
      await events.subscribe('orders', received.handler)
      await events.publish('orders', 'before')
      await waitUntil(() => received.deliveries.length === 1, 5_000, 'the first message')
      await redis.stop()
      await sleep(300)
      servers.push(await startRedisOnPort(redis.port))
      await waitUntil(() => client.isReady, 10_000, 'the client to reconnect')
      // The group is created again with '$' when the consumer next reads: publish until one is read.
      await waitUntil(
        () => {
          void events.publish('orders', 'after').catch(() => {})
          return received.deliveries.length >= 2
        },
        15_000,
        'a message after the restart',
      )
      expect(received.events()[1]).to.equal('after')
      expect(reconnects).to.equal(0)
    })
  })
})
