import { setTimeout as sleep } from 'node:timers/promises'
import { expect } from 'chai'
import { createNotifier, type Notifier, type NotifierOptions } from '../../src/index.js'
import { type Delivery, inbox, parseUser, unhandledRejections } from '../helpers/notifier.js'
import { recordingLogger, waitUntil } from '../helpers/outage.js'
import { connectRedis, mode, type RedisClient, uniquePrefix } from '../helpers/redis.js'

/*
 * mode 'durable': Redis Streams and consumer groups, at-least-once. Each group gets every
 * message; the consumers of a group share them; a message is acknowledged once its handler
 * resolved, redelivered (meta.deliveries + 1) after claimIdle otherwise, dropped after
 * maxDeliveries; what can never be handled (malformed, rejected by parse) is acknowledged
 * and logged. claimIdle is kept small; no test asserts a timing.
 */
const CLAIM_IDLE = 400

describe(`notifier durable (${mode} Redis)`, () => {
  let client: RedisClient
  const notifiers: Notifier[] = []
  const unhandled = unhandledRejections()

  /** A durable notifier on the suite's client; tests give a shared prefix to reach the same streams. */
  const notifier = (prefix: string, options: Omit<NotifierOptions, 'client' | 'prefix'> = {}): Notifier => {
    const created = createNotifier({ client, prefix, mode: 'durable', claimIdle: `${CLAIM_IDLE}ms`, ...options })
    notifiers.push(created)
    return created
  }

  /** How many messages of `group` on the stream `key` are delivered and not acknowledged. */
  const pending = async (key: string, group: string): Promise<number> =>
    Number((await client.xPending(key, group)).pending)

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
    it('publish → handler: the payload and meta (id as returned, channel, time, deliveries 1, streamId), acknowledged', async () => {
      const prefix = uniquePrefix('durable-roundtrip')
      const events = notifier(prefix)
      const received = inbox<{ orderId: number }>()
      await events.subscribe('orders', received.handler)
      const before = Date.now()
      const id = await events.publish('orders', { orderId: 7 })
      const after = Date.now()
      await waitUntil(() => received.deliveries.length === 1, 5_000, 'the message')
      const [{ event, meta } = {} as Delivery<{ orderId: number }>] = received.deliveries
      expect(event).to.deep.equal({ orderId: 7 })
      expect(meta.id).to.equal(id)
      expect(meta.channel).to.equal('orders')
      expect(meta.time).to.be.within(before, after)
      expect(meta.deliveries).to.equal(1)
      expect(meta.streamId).to.match(/^\d+-\d+$/)
      type Entry = { id: string; message: Record<string, string> }
      const entries = (await client.xRange(`${prefix}orders`, '-', '+')) as unknown as Entry[]
      expect(entries.map((entry) => entry.id)).to.deep.equal([meta.streamId])
      const envelope = JSON.parse(String(entries[0]?.message.m))
      expect(envelope).to.deep.include({ id, channel: 'orders', payload: { orderId: 7 } })
      await waitFor(async () => (await pending(`${prefix}orders`, 'default')) === 0, 'the acknowledgement')
    })

    it('keeps the order, one handler call at a time, even when handlers are slow', async () => {
      const prefix = uniquePrefix('durable-order')
      const events = notifier(prefix, { batchSize: 4 })
      const order: number[] = []
      let running = 0
      let mostAtOnce = 0
      await events.subscribe<number>('orders', async (event) => {
        running++
        mostAtOnce = Math.max(mostAtOnce, running)
        await sleep(event % 4 === 0 ? 10 : 1)
        order.push(event)
        running--
      })
      const count = 30
      await Promise.all(Array.from({ length: count }, (_, i) => events.publish('orders', i)))
      await waitUntil(() => order.length === count, 10_000, 'every message')
      expect(order).to.deep.equal(Array.from({ length: count }, (_, i) => i))
      expect(mostAtOnce).to.equal(1)
    })

    it('a new group starts with the messages published after its first subscribe', async () => {
      const prefix = uniquePrefix('durable-new-group')
      const events = notifier(prefix)
      await events.publish('orders', 'before any group')
      const received = inbox()
      await events.subscribe('orders', received.handler)
      await events.publish('orders', 'after')
      await waitUntil(() => received.deliveries.length >= 1, 5_000, 'the message')
      await sleep(100)
      expect(received.events()).to.deep.equal(['after'])
    })

    it('two groups each get every message', async () => {
      const prefix = uniquePrefix('durable-groups')
      const mailer = inbox()
      const audit = inbox()
      await notifier(prefix, { group: 'mailer' }).subscribe('orders', mailer.handler)
      await notifier(prefix).subscribe('orders', audit.handler, { group: 'audit' })
      const publisher = notifier(prefix)
      for (let i = 0; i < 10; i++) await publisher.publish('orders', i)
      const all = Array.from({ length: 10 }, (_, i) => i)
      await waitUntil(() => mailer.deliveries.length === 10 && audit.deliveries.length === 10, 5_000, 'both groups')
      await sleep(CLAIM_IDLE * 2)
      expect(mailer.events()).to.deep.equal(all)
      expect(audit.events()).to.deep.equal(all)
      const groups = (await client.xInfoGroups(`${prefix}orders`)) as unknown as { name: string }[]
      expect(groups.map((group) => group.name).sort()).to.deep.equal(['audit', 'mailer'])
    })

    it('two consumers of one group share the messages: each is handled once overall', async () => {
      const prefix = uniquePrefix('durable-share')
      const handledBy = new Map<unknown, string[]>()
      const consumer = (name: string) => async (event: unknown) => {
        handledBy.set(event, [...(handledBy.get(event) ?? []), name])
        await sleep(10)
      }
      await notifier(prefix, { consumer: 'one', batchSize: 1 }).subscribe('orders', consumer('one'))
      await notifier(prefix, { consumer: 'two', batchSize: 1 }).subscribe('orders', consumer('two'))
      const publisher = notifier(prefix)
      const count = 40
      for (let i = 0; i < count; i++) await publisher.publish('orders', i)
      await waitUntil(() => handledBy.size === count, 10_000, 'every message')
      await sleep(CLAIM_IDLE * 2)
      expect([...handledBy.keys()].sort((a, b) => Number(a) - Number(b))).to.deep.equal(
        Array.from({ length: count }, (_, i) => i),
      )
      for (const [event, names] of handledBy) expect(names, `consumers of message ${event}`).to.have.length(1)
      const counts = { one: 0, two: 0 }
      for (const [name] of handledBy.values()) counts[name as 'one' | 'two']++
      expect(counts.one, 'messages handled by consumer one').to.be.above(0)
      expect(counts.two, 'messages handled by consumer two').to.be.above(0)
      expect(await pending(`${prefix}orders`, 'default')).to.equal(0)
    })

    it('the stream is trimmed to about maxLength', async () => {
      const prefix = uniquePrefix('durable-trim')
      const events = notifier(prefix, { maxLength: 10 })
      const published = 600
      for (let batch = 0; batch < published; batch += 50) {
        await Promise.all(Array.from({ length: 50 }, (_, i) => events.publish('orders', batch + i)))
      }
      const length = await client.xLen(`${prefix}orders`)
      expect(length).to.be.at.least(10)
      expect(length, 'entries left of the 600 published').to.be.below(published / 3)
    })
    for (const [when, readBefore] of [
      ['a group that had read messages before', true],
      ['a group that has not read any message yet', false],
    ] as const) {
      it(`messages trimmed (maxLength) before ${when} read them are logged as an error naming the group`, async () => {
        const prefix = uniquePrefix('durable-trimmed-unread')
        const publisher = notifier(prefix, { maxLength: 10 })
        const away = notifier(prefix, { group: 'slow' })
        const before = inbox()
        const unsubscribe = await away.subscribe('orders', before.handler)
        if (readBefore) {
          await publisher.publish('orders', -1)
          await waitUntil(() => before.deliveries.length === 1, 5_000, 'the first message')
        }
        await unsubscribe()
        for (let batch = 0; batch < 600; batch += 50) {
          await Promise.all(Array.from({ length: 50 }, (_, i) => publisher.publish('orders', batch + i)))
        }
        const logger = recordingLogger()
        const received = inbox<number>()
        await notifier(prefix, { group: 'slow', logger }).subscribe('orders', received.handler)
        // What is still in the stream is delivered: the newest messages, in order.
        await waitUntil(() => received.events().at(-1) === 599, 5_000, 'the newest message')
        const events = received.events()
        expect(events).to.deep.equal(events.slice().sort((a, b) => a - b))
        expect(events.length).to.be.below(600)
        await waitUntil(() => logger.errors.length >= 1, 5_000, 'the error logged')
        expect(logger.text()).to.include('trimmed').and.to.include('"slow"')
      })
    }
  })

  describe('restarts and crashed consumers', () => {
    it('a subscriber that stops and comes back (a new notifier, same group) gets every message published meanwhile', async () => {
      const prefix = uniquePrefix('durable-restart')
      const publisher = notifier(prefix)
      const first = inbox()
      const before = notifier(prefix, { group: 'mailer' })
      await before.subscribe('orders', first.handler)
      await publisher.publish('orders', 'first')
      await waitUntil(() => first.deliveries.length === 1, 5_000, 'the first message')
      await before.close()

      for (const payload of ['while away 1', 'while away 2', 'while away 3']) await publisher.publish('orders', payload)
      const second = inbox()
      await notifier(prefix, { group: 'mailer' }).subscribe('orders', second.handler)
      await waitUntil(() => second.deliveries.length === 3, 5_000, 'the messages published while away')
      await publisher.publish('orders', 'after')
      await waitUntil(() => second.deliveries.length === 4, 5_000, 'the message after the restart')
      expect(second.events()).to.deep.equal(['while away 1', 'while away 2', 'while away 3', 'after'])
      expect(first.events()).to.deep.equal(['first'])
    })

    it('a message a consumer received and never acknowledged (it crashed) goes to another consumer after claimIdle', async () => {
      const prefix = uniquePrefix('durable-crashed')
      const key = `${prefix}orders`
      const publisher = notifier(prefix)
      await client.xGroupCreate(key, 'mailer', '$', { MKSTREAM: true })
      const id = await publisher.publish('orders', 'held by the dead')
      // The crashed consumer: it read the message (XREADGROUP) and died before XACK.
      const read = await client.xReadGroup('mailer', 'crashed', { key, id: '>' }, { COUNT: 10 })
      expect(read?.[0]?.messages).to.have.length(1)

      const received = inbox()
      await notifier(prefix, { group: 'mailer', consumer: 'alive' }).subscribe('orders', received.handler)
      await waitUntil(() => received.deliveries.length === 1, 10_000, 'the claimed message')
      expect(received.events()).to.deep.equal(['held by the dead'])
      expect(received.deliveries[0]?.meta.id).to.equal(id)
      expect(received.deliveries[0]?.meta.deliveries).to.equal(2)
      await waitFor(async () => (await pending(key, 'mailer')) === 0, 'the acknowledgement')
    })

    it('a restarted process with a stable consumer name takes back its unacknowledged messages at once (before claimIdle), counting the earlier delivery', async () => {
      const prefix = uniquePrefix('durable-stable-consumer')
      const key = `${prefix}orders`
      const publisher = notifier(prefix)
      await client.xGroupCreate(key, 'mailer', '$', { MKSTREAM: true })
      await publisher.publish('orders', 'held before the restart')
      await client.xReadGroup('mailer', 'api-1', { key, id: '>' }, { COUNT: 10 })

      const received = inbox()
      // claimIdle 1h: the message can only come back through the consumer's own history.
      await notifier(prefix, { group: 'mailer', consumer: 'api-1', claimIdle: '1h' }).subscribe(
        'orders',
        received.handler,
      )
      await waitUntil(() => received.deliveries.length === 1, 5_000, 'the message taken back')
      expect(received.events()).to.deep.equal(['held before the restart'])
      // its second delivery to the group (Redis's XPENDING counter says 2)
      expect(received.deliveries[0]?.meta.deliveries).to.equal(2)
      await waitFor(async () => (await pending(key, 'mailer')) === 0, 'the acknowledgement')
    })

    it('maxDeliveries holds for a stable consumer that keeps crashing on a message: it is dropped, not handled again', async () => {
      const prefix = uniquePrefix('durable-poison')
      const key = `${prefix}orders`
      const logger = recordingLogger()
      const publisher = notifier(prefix)
      await client.xGroupCreate(key, 'mailer', '$', { MKSTREAM: true })
      await publisher.publish('orders', 'poison')
      // Three lives of consumer api-1, each crashed while handling the message: delivered 3 times.
      await client.xReadGroup('mailer', 'api-1', { key, id: '>' }, { COUNT: 10 })
      await client.xReadGroup('mailer', 'api-1', { key, id: '0' }, { COUNT: 10 })
      await client.xReadGroup('mailer', 'api-1', { key, id: '0' }, { COUNT: 10 })
      const [entry] = await client.xPendingRange(key, 'mailer', '-', '+', 10)
      expect(entry?.deliveriesCounter).to.equal(3)

      const received = inbox()
      // claimIdle 1h: the message can only come back through the consumer's own history.
      await notifier(prefix, {
        group: 'mailer',
        consumer: 'api-1',
        claimIdle: '1h',
        maxDeliveries: 3,
        logger,
      }).subscribe('orders', received.handler)
      await publisher.publish('orders', 'next')
      await waitUntil(() => received.events().includes('next'), 5_000, 'the next message')
      expect(received.events()).to.deep.equal(['next'])
      expect(logger.errors.length, 'the drop logged').to.equal(1)
      await waitFor(async () => (await pending(key, 'mailer')) === 0, 'the acknowledgements')
    })
  })

  describe('failures', () => {
    it('a message whose handler failed is delivered again (deliveries 2) and acknowledged after it succeeds', async () => {
      const prefix = uniquePrefix('durable-retry')
      const logger = recordingLogger()
      const events = notifier(prefix, { logger })
      const received = inbox()
      let failures = 0
      await events.subscribe('orders', async (event, meta) => {
        if (failures === 0) {
          failures++
          throw new Error('try again')
        }
        await received.handler(event, meta)
      })
      const id = await events.publish('orders', 'flaky')
      await waitUntil(() => received.deliveries.length === 1, 10_000, 'the second delivery')
      const [{ meta } = {} as Delivery] = received.deliveries
      expect(meta.id).to.equal(id)
      expect(meta.deliveries).to.equal(2)
      expect(logger.errors).to.have.length(1)
      expect(logger.errors[0]?.[1]).to.have.property('message', 'try again')
      await waitFor(async () => (await pending(`${prefix}orders`, 'default')) === 0, 'the acknowledgement')
      await sleep(CLAIM_IDLE * 2)
      expect(received.deliveries).to.have.length(1)
    })

    it('after maxDeliveries failed deliveries the message is dropped, logged and never delivered again', async () => {
      const prefix = uniquePrefix('durable-max')
      const logger = recordingLogger()
      const events = notifier(prefix, { logger, maxDeliveries: 3 })
      const attempts: number[] = []
      const handled = inbox()
      await events.subscribe('orders', async (event, meta) => {
        if (event === 'poison') {
          attempts.push(meta.deliveries)
          throw new Error('always fails')
        }
        await handled.handler(event, meta)
      })
      const id = await events.publish('orders', 'poison')
      await waitUntil(
        () => logger.errors.some((entry) => String(entry[0]).includes(`dropped message ${id}`)),
        15_000,
        'the message dropped',
      )
      await waitFor(async () => (await pending(`${prefix}orders`, 'default')) === 0, 'the acknowledgement')
      await events.publish('orders', 'next')
      await waitUntil(() => handled.deliveries.length === 1, 5_000, 'the next message')
      await sleep(CLAIM_IDLE * 3)
      expect(attempts).to.deep.equal([1, 2, 3])
      expect(handled.events()).to.deep.equal(['next'])
    })

    it('a payload parse() rejects is acknowledged and logged, never delivered again; the next messages are', async () => {
      const prefix = uniquePrefix('durable-parse')
      const logger = recordingLogger()
      const events = notifier(prefix, { logger })
      const received = inbox<{ name: string }>()
      await events.subscribe('users', received.handler, { parse: parseUser })
      const badId = await events.publish('users', { name: null })
      await events.publish('users', { name: 'Grace' })
      await waitUntil(() => received.deliveries.length === 1, 5_000, 'the valid message')
      await waitFor(async () => (await pending(`${prefix}users`, 'default')) === 0, 'the acknowledgements')
      await sleep(CLAIM_IDLE * 2)
      expect(received.events()).to.deep.equal([{ name: 'Grace' }])
      expect(logger.warnings).to.have.length(1)
      expect(logger.text()).to.include(badId).and.to.include('ZodError')
    })

    const malformed: [string, (channel: string) => Record<string, string>][] = [
      ['field m not JSON', () => ({ m: 'not json {' })],
      ['field m JSON without an envelope', () => ({ m: JSON.stringify({ hello: 'world' }) })],
      [
        'an envelope for another channel',
        () => ({ m: JSON.stringify({ id: 'a', channel: 'x', time: 1, payload: 1 }) }),
      ],
      ['no field m', (channel) => ({ other: JSON.stringify({ id: 'a', channel, time: 1, payload: 1 }) })],
      [
        'an envelope whose id has CR/LF in it',
        (channel) => ({ m: JSON.stringify({ id: 'a\r\nevent: forged\r\n', channel, time: 1, payload: 1 }) }),
      ],
      [
        'an envelope with an id over 200 characters',
        (channel) => ({ m: JSON.stringify({ id: 'a'.repeat(201), channel, time: 1, payload: 1 }) }),
      ],
      [
        'an envelope over maxMessageBytes',
        (channel) => ({ m: JSON.stringify({ id: 'a', channel, time: 1, payload: 'x'.repeat(2_000) }) }),
      ],
    ]
    for (const [description, fields] of malformed) {
      it(`a malformed entry (${description}) is acknowledged and logged, never delivered; the next message is`, async () => {
        const prefix = uniquePrefix('durable-malformed')
        const logger = recordingLogger()
        const events = notifier(prefix, { logger, maxMessageBytes: 1_000 })
        const received = inbox()
        await events.subscribe('orders', received.handler)
        const streamId = await client.xAdd(`${prefix}orders`, '*', fields('orders'))
        await events.publish('orders', 'valid')
        await waitUntil(() => received.deliveries.length === 1, 5_000, 'the valid message')
        await waitFor(async () => (await pending(`${prefix}orders`, 'default')) === 0, 'the acknowledgements')
        await sleep(CLAIM_IDLE * 2)
        expect(received.events()).to.deep.equal(['valid'])
        expect(logger.warnings).to.have.length(1)
        expect(logger.text()).to.include(streamId)
      })
    }

    it('a handler that always throws does not affect another group on the same channel; no unhandled rejection', async () => {
      const prefix = uniquePrefix('durable-isolated')
      const logger = recordingLogger()
      const healthy = inbox()
      await notifier(prefix, { logger }).subscribe('orders', () => {
        throw new Error('broken')
      })
      await notifier(prefix, { logger, group: 'other' }).subscribe('orders', healthy.handler)
      const publisher = notifier(prefix)
      for (let i = 0; i < 5; i++) await publisher.publish('orders', i)
      await waitUntil(() => healthy.deliveries.length === 5, 5_000, 'the healthy group')
      expect(healthy.events()).to.deep.equal([0, 1, 2, 3, 4])
      expect(logger.errors.length).to.be.at.least(1)
      expect(unhandled.reasons).to.deep.equal([])
    })
  })

  describe('unsubscribe and close', () => {
    it('unsubscribe while the handler runs: the handler finishes and its message is acknowledged', async () => {
      const prefix = uniquePrefix('durable-stop')
      const events = notifier(prefix)
      let started = 0
      let finished = 0
      const unsubscribe = await events.subscribe('orders', async () => {
        started++
        await sleep(300)
        finished++
      })
      await events.publish('orders', 'slow')
      await waitUntil(() => started === 1, 5_000, 'the handler to start')
      await unsubscribe()
      expect(finished).to.equal(1)
      expect(await pending(`${prefix}orders`, 'default')).to.equal(0)
    })

    it('close() while the handler runs: the handler finishes and its message is acknowledged', async () => {
      const prefix = uniquePrefix('durable-close')
      const events = notifier(prefix)
      let finished = 0
      let started = 0
      await events.subscribe('orders', async () => {
        started++
        await sleep(300)
        finished++
      })
      await events.publish('orders', 'slow')
      await waitUntil(() => started === 1, 5_000, 'the handler to start')
      await events.close()
      expect(finished).to.equal(1)
      expect(await pending(`${prefix}orders`, 'default')).to.equal(0)
    })

    it('after unsubscribe nothing is delivered to it; the group keeps the messages for its next subscriber', async () => {
      const prefix = uniquePrefix('durable-unsubscribe')
      const events = notifier(prefix)
      const first = inbox()
      const unsubscribe = await events.subscribe('orders', first.handler)
      await events.publish('orders', 1)
      await waitUntil(() => first.deliveries.length === 1, 5_000, 'message 1')
      await unsubscribe()
      await events.publish('orders', 2)
      await events.publish('orders', 3)
      await sleep(200)
      expect(first.events()).to.deep.equal([1])
      const second = inbox()
      await events.subscribe('orders', second.handler)
      await waitUntil(() => second.deliveries.length === 2, 5_000, 'the messages kept')
      expect(second.events()).to.deep.equal([2, 3])
    })
  })

  /** Polls an async condition (errors count as "not yet") for up to 10 s. */
  async function waitFor(condition: () => Promise<boolean>, what: string): Promise<void> {
    const deadline = Date.now() + 10_000
    while (!(await condition().catch(() => false))) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
      await sleep(50)
    }
  }
})
