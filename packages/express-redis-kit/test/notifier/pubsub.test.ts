import { setTimeout as sleep } from 'node:timers/promises'
import { expect } from 'chai'
import { createClient, createCluster } from 'redis'
import { createNotifier, type Notifier, type NotifierOptions } from '../../src/index.js'
import {
  clientList,
  connectionIds,
  type Delivery,
  failureOf,
  inbox,
  isSubscriber,
  killPubSubConnections,
  parseUser,
  rawPublish,
  redisCli,
  unhandledRejections,
} from '../helpers/notifier.js'
import { recordingLogger, waitUntil } from '../helpers/outage.js'
import {
  clusterNodes,
  connectRedis,
  mode,
  type RedisClient,
  redisAddresses,
  redisUrl,
  uniquePrefix,
} from '../helpers/redis.js'

/*
 * mode 'pubsub': at-most-once broadcast over Redis pub/sub (sharded pub/sub on a Cluster)
 * on a connection of the notifier's own. Every subscriber connected gets every message, in
 * order; what cannot be used (malformed, rejected by parse, a failing handler) is logged and
 * affects nothing else.
 */
describe(`notifier pub/sub (${mode} Redis)`, () => {
  let client: RedisClient
  const notifiers: Notifier[] = []
  const unhandled = unhandledRejections()

  /** A pub/sub notifier on the suite's client, with a prefix of its own unless given one. */
  const notifier = (options: Omit<NotifierOptions, 'client'> = {}): Notifier => {
    const created = createNotifier({ client, prefix: uniquePrefix('notifier-pubsub'), ...options })
    notifiers.push(created)
    return created
  }

  before(async () => {
    client = await connectRedis()
    unhandled.start()
  })
  afterEach(async () => {
    await Promise.all(notifiers.splice(0).map((each) => each.close()))
    expect(unhandled.reasons, 'unhandled rejections').to.deep.equal([])
  })
  after(async () => {
    unhandled.stop()
    await client.close()
  })

  describe('delivery', () => {
    it('the handler gets the payload and meta: id (what publish returned), channel, time, deliveries 1', async () => {
      const events = notifier()
      const received = inbox<{ orderId: number }>()
      await events.subscribe('orders', received.handler)
      const before = Date.now()
      const id = await events.publish('orders', { orderId: 42 })
      const after = Date.now()
      await waitUntil(() => received.deliveries.length === 1, 5_000, 'the message')
      const [{ event, meta } = {} as Delivery<{ orderId: number }>] = received.deliveries
      expect(event).to.deep.equal({ orderId: 42 })
      expect(id).to.match(/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/)
      expect(meta.id).to.equal(id)
      expect(meta.channel).to.equal('orders')
      expect(meta.time).to.be.within(before, after)
      expect(meta.deliveries).to.equal(1)
      expect(meta.streamId).to.equal(undefined)
    })

    it('what travels on the prefixed Redis channel is the JSON envelope { id, channel, time, payload }', async () => {
      const prefix = uniquePrefix('notifier-wire')
      const events = notifier({ prefix })
      const raw = (client as unknown as { duplicate(): RawSubscriber }).duplicate()
      raw.on('error', () => {})
      await raw.connect()
      try {
        const messages: string[] = []
        if (mode === 'cluster') await raw.sSubscribe(`${prefix}orders`, (message) => messages.push(message))
        else await raw.subscribe(`${prefix}orders`, (message) => messages.push(message))
        const id = await events.publish('orders', { total: 9.5 })
        await waitUntil(() => messages.length === 1, 5_000, 'the raw message')
        const envelope = JSON.parse(messages[0] ?? '')
        expect(Object.keys(envelope).sort()).to.deep.equal(['channel', 'id', 'payload', 'time'])
        expect(envelope).to.deep.include({ id, channel: 'orders', payload: { total: 9.5 } })
        expect(envelope.time).to.be.a('number')
      } finally {
        raw.destroy()
      }
    })

    it('every subscriber of a channel gets every message: in one notifier and in another one', async () => {
      const prefix = uniquePrefix('notifier-fanout')
      const first = notifier({ prefix })
      const second = notifier({ prefix })
      const inboxes = [inbox(), inbox(), inbox()]
      await first.subscribe('orders', inboxes[0]!.handler)
      await first.subscribe('orders', inboxes[1]!.handler)
      await second.subscribe('orders', inboxes[2]!.handler)
      for (let i = 0; i < 5; i++) await second.publish('orders', i)
      await waitUntil(() => inboxes.every((each) => each.deliveries.length === 5), 5_000, 'every message everywhere')
      for (const each of inboxes) expect(each.events()).to.deep.equal([0, 1, 2, 3, 4])
      await sleep(100)
      for (const each of inboxes) expect(each.deliveries).to.have.length(5)
    })

    it('subscribers of different channels get only their own channel', async () => {
      const events = notifier()
      const orders = inbox()
      const invoices = inbox()
      const users = inbox()
      await events.subscribe('orders', orders.handler)
      await events.subscribe('invoices', invoices.handler)
      await events.subscribe('users', users.handler)
      await events.publish('orders', 'o1')
      await events.publish('invoices', 'i1')
      await events.publish('orders', 'o2')
      await events.publish('nobody-listens', 'x')
      await waitUntil(() => orders.deliveries.length === 2 && invoices.deliveries.length === 1, 5_000, 'the messages')
      await sleep(100)
      expect(orders.events()).to.deep.equal(['o1', 'o2'])
      expect(invoices.events()).to.deep.equal(['i1'])
      expect(users.events()).to.deep.equal([])
      expect(orders.deliveries.every((each) => each.meta.channel === 'orders')).to.equal(true)
      expect(invoices.deliveries[0]?.meta.channel).to.equal('invoices')
    })

    it('a prefix separates notifiers: the same channel name under another prefix is another channel', async () => {
      const mine = notifier()
      const theirs = notifier()
      const received = inbox()
      await mine.subscribe('orders', received.handler)
      await theirs.publish('orders', 'theirs')
      await mine.publish('orders', 'mine')
      await waitUntil(() => received.deliveries.length >= 1, 5_000, 'the message')
      await sleep(100)
      expect(received.events()).to.deep.equal(['mine'])
    })

    it('keeps the order per subscriber, one handler call at a time, even when handlers are slow', async () => {
      const events = notifier()
      const order: number[] = []
      let running = 0
      let mostAtOnce = 0
      await events.subscribe<number>('orders', async (event) => {
        running++
        mostAtOnce = Math.max(mostAtOnce, running)
        await sleep(event % 3 === 0 ? 15 : 1)
        order.push(event)
        running--
      })
      const fast = inbox<number>()
      await events.subscribe('orders', fast.handler)
      const count = 40
      await Promise.all(Array.from({ length: count }, (_, i) => events.publish('orders', i)))
      const expected = Array.from({ length: count }, (_, i) => i)
      await waitUntil(() => order.length === count && fast.deliveries.length === count, 10_000, 'every message')
      expect(order).to.deep.equal(expected)
      expect(fast.events()).to.deep.equal(expected)
      expect(mostAtOnce).to.equal(1)
    })
  })

  describe('unsubscribe', () => {
    it('stops the delivery to that subscriber only; the others keep theirs', async () => {
      const events = notifier()
      const leaving = inbox()
      const staying = inbox()
      const other = inbox()
      const unsubscribe = await events.subscribe('orders', leaving.handler)
      await events.subscribe('orders', staying.handler)
      await events.subscribe('invoices', other.handler)
      await events.publish('orders', 1)
      await waitUntil(() => leaving.deliveries.length === 1 && staying.deliveries.length === 1, 5_000, 'message 1')
      await unsubscribe()
      await events.publish('orders', 2)
      await events.publish('invoices', 'i')
      await waitUntil(() => staying.deliveries.length === 2 && other.deliveries.length === 1, 5_000, 'message 2')
      await sleep(100)
      expect(leaving.events()).to.deep.equal([1])
      expect(staying.events()).to.deep.equal([1, 2])
      await unsubscribe()
    })

    it('the last subscriber of a channel leaving unsubscribes the notifier from it in Redis; subscribing again works', async () => {
      const prefix = uniquePrefix('notifier-unsub')
      const events = notifier({ prefix })
      const first = inbox()
      const unsubscribe = await events.subscribe('orders', first.handler)
      expect(await subscriberCount(`${prefix}orders`)).to.equal(1)
      await unsubscribe()
      expect(await subscriberCount(`${prefix}orders`)).to.equal(0)
      await events.publish('orders', 'missed')
      const second = inbox()
      await events.subscribe('orders', second.handler)
      await events.publish('orders', 'again')
      await waitUntil(() => second.deliveries.length === 1, 5_000, 'the message')
      await sleep(100)
      expect(first.events()).to.deep.equal([])
      expect(second.events()).to.deep.equal(['again'])
    })

    it('resolves once a running handler has finished, and no handler call starts after it', async () => {
      const events = notifier()
      let finished = 0
      const started: number[] = []
      const unsubscribe = await events.subscribe<number>('orders', async (event) => {
        started.push(event)
        await sleep(200)
        finished++
      })
      await events.publish('orders', 1)
      await waitUntil(() => started.length === 1, 5_000, 'the handler to start')
      await unsubscribe()
      expect(finished).to.equal(1)
      const calls = started.length
      await events.publish('orders', 2)
      await sleep(200)
      expect(started).to.have.length(calls)
      expect(started).not.to.include(2)
    })
  })

  describe("the caller's client", () => {
    it('is never put in subscriber mode: it still runs commands, and the subscription is on a connection of its own', async () => {
      const name = `erk-notifier-${process.pid}-${Date.now()}`
      const caller = await connectNamed(name)
      try {
        const prefix = uniquePrefix('notifier-own-connection')
        const events = createNotifier({ client: caller, prefix })
        notifiers.push(events)
        const received = inbox()
        await events.subscribe('orders', received.handler)
        await events.subscribe('invoices', received.handler)

        await caller.set(`${prefix}key`, 'value')
        expect(await caller.get(`${prefix}key`)).to.equal('value')
        await caller.del(`${prefix}key`)

        const mine = new Set(await connectionIds(caller))
        const named = (await clientList()).filter((info) => info.name === name)
        const callers = named.filter((info) => mine.has(`${info.node}:${info.id}`))
        expect(callers.length, "the caller's connections").to.be.at.least(1)
        for (const info of callers) expect(isSubscriber(info), `caller connection ${info.id}`).to.equal(false)
        const subscribers = named.filter(isSubscriber)
        expect(subscribers.length, 'subscriber connections of the notifier').to.be.at.least(1)
        const channels = subscribers.reduce((sum, info) => sum + Number(info.sub) + Number(info.ssub ?? 0), 0)
        expect(channels, 'channels subscribed on them').to.equal(2)

        await events.publish('orders', 'still works')
        await waitUntil(() => received.deliveries.length === 1, 5_000, 'the message')
      } finally {
        await caller.close()
      }
    })
  })

  describe('malformed messages on the channel', () => {
    const malformed: [string, (channel: string) => string][] = [
      ['not JSON', () => 'not json {'],
      ['a JSON string, not an envelope', () => '"hello"'],
      ['JSON null', () => 'null'],
      ['JSON without an envelope', () => JSON.stringify({ hello: 'world' })],
      ['an envelope without payload', (channel) => JSON.stringify({ id: 'a', channel, time: Date.now() })],
      ['an envelope with a numeric id', (channel) => JSON.stringify({ id: 7, channel, time: 1, payload: 1 })],
      ['an envelope with a string time', (channel) => JSON.stringify({ id: 'a', channel, time: 'now', payload: 1 })],
      ['an envelope for another channel', () => JSON.stringify({ id: 'a', channel: 'other', time: 1, payload: 1 })],
      [
        'an envelope whose id has CR/LF in it (it would forge lines wherever it is written)',
        (channel) => JSON.stringify({ id: 'a\r\nevent: forged\r\ndata: {}\r\n', channel, time: 1, payload: 1 }),
      ],
      ['an envelope with an empty id', (channel) => JSON.stringify({ id: '', channel, time: 1, payload: 1 })],
      ['an envelope with a space in its id', (channel) => JSON.stringify({ id: 'a b', channel, time: 1, payload: 1 })],
      [
        'an envelope with an id over 200 characters',
        (channel) => JSON.stringify({ id: 'a'.repeat(201), channel, time: 1, payload: 1 }),
      ],
      [
        'an envelope larger than maxMessageBytes',
        (channel) => JSON.stringify({ id: 'a', channel, time: 1, payload: 'x'.repeat(2_000) }),
      ],
    ]
    for (const [description, message] of malformed) {
      it(`${description}: logged and dropped; the next valid message is delivered`, async () => {
        const prefix = uniquePrefix('notifier-malformed')
        const logger = recordingLogger()
        const events = notifier({ prefix, logger, maxMessageBytes: 1_000 })
        const received = inbox()
        await events.subscribe('orders', received.handler)
        await rawPublish(client, `${prefix}orders`, message('orders'))
        await events.publish('orders', 'valid')
        await waitUntil(() => received.deliveries.length >= 1, 5_000, 'the valid message')
        await sleep(50)
        expect(received.events()).to.deep.equal(['valid'])
        expect(logger.warnings, 'warnings').to.have.length(1)
        expect(logger.text()).to.include('dropped').and.to.include('orders')
        expect(logger.errors).to.deep.equal([])
      })
    }
  })

  describe('parse', () => {
    it('a payload parse() rejects is dropped and logged for that subscriber only; its next messages arrive parsed', async () => {
      const logger = recordingLogger()
      const events = notifier({ logger })
      const strict = inbox<{ name: string }>()
      const loose = inbox()
      await events.subscribe('users', strict.handler, { parse: parseUser })
      await events.subscribe('users', loose.handler)
      const badId = await events.publish('users', { name: 42 })
      await events.publish('users', { name: 'Ada', extra: true })
      await waitUntil(() => strict.deliveries.length === 1 && loose.deliveries.length === 2, 5_000, 'the messages')
      await sleep(50)
      expect(strict.events()).to.deep.equal([{ name: 'Ada' }])
      expect(loose.events()).to.deep.equal([{ name: 42 }, { name: 'Ada', extra: true }])
      expect(logger.warnings).to.have.length(1)
      expect(logger.text()).to.include(badId).and.to.include('parse').and.to.include('ZodError')
    })
  })

  describe('failing handlers', () => {
    for (const [how, failing] of [
      [
        'throws',
        (event: unknown) => {
          if (event === 'bad') throw new Error('handler broke')
        },
      ],
      [
        'rejects',
        async (event: unknown) => {
          await sleep(5)
          if (event === 'bad') throw new Error('handler broke')
        },
      ],
    ] as const) {
      it(`a handler that ${how}: logged; the other subscribers and the next messages are unaffected; no unhandled rejection`, async () => {
        const logger = recordingLogger()
        const events = notifier({ logger })
        const calls: unknown[] = []
        await events.subscribe('orders', async (event) => {
          calls.push(event)
          await failing(event)
        })
        const other = inbox()
        await events.subscribe('orders', other.handler)
        const badId = await events.publish('orders', 'bad')
        await events.publish('orders', 'good')
        await waitUntil(() => calls.length === 2 && other.deliveries.length === 2, 5_000, 'both messages')
        await sleep(50)
        expect(calls).to.deep.equal(['bad', 'good'])
        expect(other.events()).to.deep.equal(['bad', 'good'])
        expect(logger.errors).to.have.length(1)
        expect(logger.errors[0]?.[0]).to.include(badId)
        expect(logger.errors[0]?.[1]).to.have.property('message', 'handler broke')
        expect(unhandled.reasons).to.deep.equal([])
      })
    }
  })

  describe('reconnect', () => {
    it('after its connection is killed (CLIENT KILL TYPE pubsub), onReconnect is called and new messages arrive again', async function () {
      this.timeout(30_000)
      let reconnects = 0
      const logger = recordingLogger()
      const events = notifier({ logger, onReconnect: () => void reconnects++ })
      const received = inbox()
      await events.subscribe('orders', received.handler)
      await events.subscribe('invoices', received.handler)
      await events.publish('orders', 'before')
      await waitUntil(() => received.deliveries.length === 1, 5_000, 'the first message')
      expect(reconnects, 'onReconnect calls before any reconnect').to.equal(0)

      await killPubSubConnections()
      await waitUntil(() => reconnects >= 1, 15_000, 'onReconnect')
      // On a Cluster each node's connection comes back (and subscribes again) on its own: one
      // may still be on its way when another's return calls onReconnect, and pub/sub keeps
      // nothing for a subscriber that is away. So publish until each channel delivers again.
      const deadline = Date.now() + 10_000
      while (!(received.events().includes('after') && received.events().includes('after too'))) {
        if (Date.now() > deadline) expect.fail(`the messages after the reconnect: got ${received.events().join(', ')}`)
        await events.publish('orders', 'after')
        await events.publish('invoices', 'after too')
        await new Promise((resolve) => setTimeout(resolve, 100))
      }
      const [first, ...rest] = received.events()
      expect(first).to.equal('before')
      expect(rest.every((event) => event === 'after' || event === 'after too')).to.equal(true)
    })

    for (const [how, onReconnect] of [
      [
        'throws',
        () => {
          throw new Error('reconnect hook broke')
        },
      ],
      [
        'rejects',
        async () => {
          await sleep(1)
          throw new Error('reconnect hook broke')
        },
      ],
    ] as const) {
      it(`an onReconnect that ${how} is logged; messages keep arriving; nothing crashes`, async function () {
        this.timeout(30_000)
        const logger = recordingLogger()
        let calls = 0
        const events = notifier({
          logger,
          onReconnect: () => {
            calls++
            return onReconnect()
          },
        })
        const received = inbox()
        await events.subscribe('orders', received.handler)
        await killPubSubConnections()
        await waitUntil(() => calls >= 1, 15_000, 'onReconnect')
        await waitUntil(
          () => logger.errors.some((entry) => String(entry[0]).includes('onReconnect')),
          5_000,
          'the error logged',
        )
        const logged = logger.errors.find((entry) => String(entry[0]).includes('onReconnect'))
        expect(logged?.[1]).to.have.property('message', 'reconnect hook broke')
        await events.publish('orders', 'after')
        await waitUntil(() => received.deliveries.length === 1, 10_000, 'the message after the reconnect')
        expect(unhandled.reasons).to.deep.equal([])
      })
    }
  })

  describe('unsubscribe and close', () => {
    it('close() ends every subscription: nothing is delivered after it, publish rejects with ERK_CLOSED', async () => {
      const prefix = uniquePrefix('notifier-close')
      const events = notifier({ prefix })
      const publisher = notifier({ prefix })
      const received = inbox()
      await events.subscribe('orders', received.handler)
      await events.subscribe('invoices', received.handler)
      await events.close()
      await publisher.publish('orders', 'after close')
      await publisher.publish('invoices', 'after close')
      await sleep(150)
      expect(received.events()).to.deep.equal([])
      expect(await subscriberCount(`${prefix}orders`)).to.equal(0)
      expect(await failureOf(() => events.publish('orders', 1))).to.have.property('code', 'ERK_CLOSED')
    })
  })

  /** How many connections are subscribed to the Redis channel `name` (sharded on a Cluster: on any master). */
  async function subscriberCount(name: string): Promise<number> {
    let count = 0
    for (const { port } of redisAddresses()) {
      const reply = await redisCli(port, ['PUBSUB', mode === 'cluster' ? 'SHARDNUMSUB' : 'NUMSUB', name])
      count += Number(reply.trim().split('\n')[1])
    }
    return count
  }
})

interface RawSubscriber {
  connect(): Promise<unknown>
  destroy(): void
  on(event: string, listener: (...args: unknown[]) => void): unknown
  subscribe(channel: string, listener: (message: string) => void): Promise<void>
  sSubscribe(channel: string, listener: (message: string) => void): Promise<void>
}

/** A client of the suite's mode whose connections all carry CLIENT SETNAME `name`. */
async function connectNamed(name: string): Promise<RedisClient> {
  if (mode === 'cluster') {
    const cluster = createCluster({ rootNodes: clusterNodes, defaults: { name } })
    cluster.on('error', () => {})
    await cluster.connect()
    return cluster
  }
  const single = createClient({ url: redisUrl, name })
  single.on('error', () => {})
  await single.connect()
  return single
}
