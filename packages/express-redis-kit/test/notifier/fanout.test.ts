import { randomBytes } from 'node:crypto'
import { setTimeout as sleep } from 'node:timers/promises'
import { expect } from 'chai'
import { createClient, createCluster } from 'redis'
import { createNotifier, type GapInfo, type Notifier, type NotifierOptions } from '../../src/index.js'
import {
  channelsOnEveryMaster,
  clientList,
  failureOf,
  inbox,
  redisCli,
  unhandledRejections,
} from '../helpers/notifier.js'
import { recordingLogger, startRedisOnPort, waitUntil } from '../helpers/outage.js'
import {
  clusterNodes,
  connectRedis,
  connectTo,
  type DisposableRedis,
  mode,
  type RedisClient,
  redisUrl,
  startDisposableRedis,
  uniquePrefix,
} from '../helpers/redis.js'

/*
 * mode 'fanout': Redis Streams without consumer groups. Every subscription (of every notifier)
 * reads every message from its own position, in stream order, once; after its connection
 * drops it resumes from the last message it delivered; messages trimmed before it read them
 * are reported through onGap; history() reads the messages after an id.
 */
describe(`notifier fanout (${mode} Redis)`, () => {
  /** The suite's client, named so that the subscriber connections duplicated from it can be found and killed. */
  let client: RedisClient
  const clientName = `fanout-test-${randomBytes(4).toString('hex')}`
  const notifiers: Notifier[] = []
  const unhandled = unhandledRejections()

  const notifier = (prefix: string, options: Omit<NotifierOptions, 'client' | 'prefix'> = {}): Notifier => {
    const created = createNotifier({ client, prefix, mode: 'fanout', ...options })
    notifiers.push(created)
    return created
  }

  /**
   * Kills (CLIENT KILL) every fan-out reader connection of this suite; resolves with how many.
   * With `expected`, first waits (up to 5 s) until that many readers are back in an XREAD: a
   * reader still reconnecting from the last kill is not in one yet.
   */
  async function killReaders(expected = 0): Promise<number> {
    const list = async () => (await clientList()).filter((info) => info.name === clientName && info.cmd === 'xread')
    let readers = await list()
    for (
      const deadline = Date.now() + 5_000;
      readers.length < expected && Date.now() < deadline;
      readers = await list()
    )
      await sleep(20)
    await Promise.all(readers.map((info) => redisCli(Number(info.node), ['CLIENT', 'KILL', 'ID', String(info.id)])))
    return readers.length
  }

  before(async () => {
    if (mode === 'cluster') {
      const cluster = createCluster({ rootNodes: clusterNodes, defaults: { name: clientName } })
      cluster.on('error', () => {})
      await cluster.connect()
      client = cluster
    } else {
      const single = createClient({ url: redisUrl, name: clientName })
      single.on('error', () => {})
      await single.connect()
      client = single
    }
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
    it('every subscriber of several (several notifiers, as instances) gets every message, in order, once', async () => {
      const prefix = uniquePrefix('fanout-all')
      const instances = [notifier(prefix), notifier(prefix), notifier(prefix)]
      const inboxes = [inbox<number>(), inbox<number>(), inbox<number>(), inbox<number>()]
      // two subscriptions in the first instance, one in each other
      await Promise.all(inboxes.map((each, i) => instances[Math.max(0, i - 1)]!.subscribe('orders', each.handler)))
      const ids: string[] = []
      for (let i = 0; i < 50; i++) ids.push(await instances[i % 3]!.publish('orders', i))
      for (const each of inboxes) await waitUntil(() => each.deliveries.length >= 50, 10_000, '50 messages')
      await sleep(100)
      for (const each of inboxes) {
        expect(each.events()).to.deep.equal([...Array(50).keys()])
        expect(each.deliveries.map(({ meta }) => meta.id)).to.deep.equal(ids)
        const streamIds = each.deliveries.map(({ meta }) => meta.streamId ?? '')
        expect(streamIds.every((id) => /^\d+-\d+$/.test(id))).to.equal(true)
        expect(new Set(streamIds).size).to.equal(50)
        expect(each.deliveries.every(({ meta }) => meta.deliveries === 1 && meta.channel === 'orders')).to.equal(true)
      }
      expect(inboxes[1]!.deliveries.map(({ meta }) => meta.streamId)).to.deep.equal(
        inboxes[3]!.deliveries.map(({ meta }) => meta.streamId),
      )
    })

    it('the stream holds the messages (XADD, the envelope in field m), trimmed to about maxLength', async () => {
      const prefix = uniquePrefix('fanout-stream')
      const events = notifier(prefix, { maxLength: 100 })
      for (let i = 0; i < 500; i++) await events.publish('orders', i)
      const length = await client.xLen(`${prefix}orders`)
      expect(length).to.be.at.least(100).and.below(500)
    })

    it("from '$' (the default): only what is published once subscribe resolved", async () => {
      const prefix = uniquePrefix('fanout-now')
      const events = notifier(prefix)
      await events.publish('orders', 'old')
      const received = inbox()
      await events.subscribe('orders', received.handler)
      await events.publish('orders', 'new')
      await waitUntil(() => received.deliveries.length >= 1, 5_000, 'the new message')
      await sleep(100)
      expect(received.events()).to.deep.equal(['new'])
    })

    it("from '0': every message the stream holds, then the new ones", async () => {
      const prefix = uniquePrefix('fanout-zero')
      const events = notifier(prefix)
      await events.publish('orders', 'a')
      await events.publish('orders', 'b')
      const received = inbox()
      await events.subscribe('orders', received.handler, { from: '0' })
      await events.publish('orders', 'c')
      await waitUntil(() => received.deliveries.length >= 3, 5_000, 'three messages')
      expect(received.events()).to.deep.equal(['a', 'b', 'c'])
    })

    it('from an entry id: the messages after it, then the new ones, and no onGap', async () => {
      const prefix = uniquePrefix('fanout-from-id')
      const events = notifier(prefix)
      const first = inbox()
      await events.subscribe('orders', first.handler)
      for (const name of ['a', 'b', 'c']) await events.publish('orders', name)
      await waitUntil(() => first.deliveries.length === 3, 5_000, 'three messages')
      const gaps: GapInfo[] = []
      const received = inbox()
      await events.subscribe('orders', received.handler, {
        from: first.deliveries[0]!.meta.streamId!,
        onGap: (gap) => void gaps.push(gap),
      })
      await events.publish('orders', 'd')
      await waitUntil(() => received.deliveries.length >= 3, 5_000, 'b, c and d')
      expect(received.events()).to.deep.equal(['b', 'c', 'd'])
      expect(gaps).to.deep.equal([])
    })

    it('a failing handler or a payload parse rejects is logged and the next message is delivered', async () => {
      const prefix = uniquePrefix('fanout-failing')
      const logger = recordingLogger()
      const events = notifier(prefix, { logger })
      const delivered: number[] = []
      await events.subscribe<number>(
        'orders',
        (event) => {
          if (event === 1) throw new Error('handler failed')
          delivered.push(event)
        },
        {
          parse: (payload) => {
            if (payload === 2) throw new Error('not an order')
            return payload as number
          },
        },
      )
      for (let i = 0; i < 4; i++) await events.publish('orders', i)
      await waitUntil(() => delivered.includes(3), 5_000, 'the last message')
      expect(delivered).to.deep.equal([0, 3])
      expect(logger.errors.join('\n')).to.include('handler')
      expect(logger.warnings.join('\n')).to.include('parse')
    })

    it('unsubscribe stops the deliveries; close() ends every subscription', async () => {
      const prefix = uniquePrefix('fanout-stop')
      const events = notifier(prefix)
      const received = inbox()
      const stop = await events.subscribe('orders', received.handler)
      await events.publish('orders', 1)
      await waitUntil(() => received.deliveries.length === 1, 5_000, 'one message')
      await stop()
      await events.publish('orders', 2)
      await sleep(300)
      expect(received.events()).to.deep.equal([1])
      await events.close()
      expect((await failureOf(() => events.publish('orders', 3))).code).to.equal('ERK_CLOSED')
    })
  })

  describe('resume', () => {
    it('subscriber connections killed while 300 messages are published: every message once, in order', async function () {
      this.timeout(60_000)
      const prefix = uniquePrefix('fanout-kill')
      const publisher = notifier(prefix)
      const listeners = [
        notifier(prefix, { logger: recordingLogger() }),
        notifier(prefix, { logger: recordingLogger() }),
      ]
      const inboxes = [inbox<number>(), inbox<number>()]
      await Promise.all(inboxes.map((each, i) => listeners[i]!.subscribe('orders', each.handler)))
      let killed = 0
      for (let i = 0; i < 300; i++) {
        await publisher.publish('orders', i)
        if (i % 60 === 30) killed += await killReaders(listeners.length)
      }
      expect(killed, 'reader connections killed').to.be.at.least(4)
      for (const each of inboxes) await waitUntil(() => each.deliveries.length >= 300, 20_000, '300 messages')
      await sleep(200)
      for (const each of inboxes) expect(each.events()).to.deep.equal([...Array(300).keys()])
    })
  })

  describe('gaps', () => {
    it('from an id whose successors were trimmed: onGap first, then the messages still there', async () => {
      const prefix = uniquePrefix('fanout-gap-from')
      const events = notifier(prefix, { maxLength: 10 })
      const first = await events.history('orders')
      expect(first).to.deep.equal({ messages: [], trimmed: false })
      await events.publish('orders', 0)
      const [start] = (await events.history('orders')).messages
      for (let i = 1; i < 300; i++) await events.publish('orders', i)
      const calls: string[] = []
      const gaps: GapInfo[] = []
      const received = inbox<number>()
      await events.subscribe<number>(
        'orders',
        (event, meta) => {
          calls.push('message')
          received.handler(event, meta)
        },
        {
          from: start!.meta.streamId!,
          onGap: (gap) => {
            calls.push('gap')
            gaps.push(gap)
          },
        },
      )
      const retained = (await client.xLen(`${prefix}orders`)) as number
      await waitUntil(() => received.deliveries.length >= retained, 5_000, 'the retained messages')
      expect(calls[0]).to.equal('gap')
      expect(calls.filter((call) => call === 'gap')).to.have.length(1)
      expect(gaps[0]).to.deep.include({ channel: 'orders', after: start!.meta.streamId })
      expect(gaps[0]!.oldest).to.equal(received.deliveries[0]!.meta.streamId)
      expect(received.events()).to.deep.equal([...Array(retained).keys()].map((i) => 300 - retained + i))
    })

    it('a subscriber more than maxLength behind (a slow handler) gets onGap, then goes on in order', async function () {
      this.timeout(30_000)
      const prefix = uniquePrefix('fanout-gap-slow')
      const events = notifier(prefix, { maxLength: 20, batchSize: 5 })
      let release: () => void = () => {}
      const held = new Promise<void>((resolve) => {
        release = resolve
      })
      const received: number[] = []
      const gaps: GapInfo[] = []
      await events.subscribe<number>(
        'orders',
        async (event) => {
          if (event === 0) await held
          received.push(event)
        },
        { onGap: (gap) => void gaps.push(gap) },
      )
      await events.publish('orders', 0)
      for (let i = 1; i < 400; i++) await events.publish('orders', i)
      release()
      await waitUntil(() => received.includes(399), 10_000, 'the last message')
      expect(gaps).to.have.length(1)
      expect(received[0]).to.equal(0)
      // MAXLEN ~ trims whole macro nodes (100 entries by default): up to about 120 are left
      expect(received.length).to.be.below(200)
      expect(new Set(received).size, 'no duplicates').to.equal(received.length)
      expect(received).to.deep.equal([...received].sort((x, y) => x - y))
    })
  })

  describe('history()', () => {
    it('returns the messages after an id (exclusive), oldest first, with their meta, up to limit', async () => {
      const prefix = uniquePrefix('fanout-history')
      const events = notifier(prefix)
      const ids: string[] = []
      for (let i = 0; i < 5; i++) ids.push(await events.publish('orders', { n: i }, { id: `order-${i}` }))
      const all = await events.history<{ n: number }>('orders')
      expect(all.trimmed).to.equal(false)
      expect(all.messages.map(({ event }) => event.n)).to.deep.equal([0, 1, 2, 3, 4])
      expect(all.messages.map(({ meta }) => meta.id)).to.deep.equal(ids)
      const after = await events.history<{ n: number }>('orders', { after: all.messages[1]!.meta.streamId!, limit: 2 })
      expect(after.messages.map(({ event }) => event.n)).to.deep.equal([2, 3])
      expect(after.trimmed).to.equal(false)
      const end = await events.history('orders', { after: all.messages[4]!.meta.streamId! })
      expect(end).to.deep.equal({ messages: [], trimmed: false })
    })

    it('reports trimmed when messages after the id were trimmed, or the stream does not know the id', async () => {
      const prefix = uniquePrefix('fanout-history-trim')
      const events = notifier(prefix, { maxLength: 10 })
      await events.publish('orders', 0)
      const [first] = (await events.history('orders')).messages
      for (let i = 1; i < 300; i++) await events.publish('orders', i)
      const history = await events.history<number>('orders', { after: first!.meta.streamId! })
      expect(history.trimmed).to.equal(true)
      expect(history.messages.at(-1)?.event).to.equal(299)
      const unknown = await events.history('other', { after: first!.meta.streamId! })
      expect(unknown).to.deep.equal({ messages: [], trimmed: true })
    })
  })

  describe('bad input', () => {
    it('from: anything but $, 0 or an entry id is an ArgumentError naming it (ERK_INVALID_ARGUMENT, 400)', async () => {
      const events = notifier(uniquePrefix('fanout-bad'))
      for (const from of ['1', 'abc', '1-2-3', '-', '>', 42, '$ ']) {
        const error = await failureOf(() => events.subscribe('orders', () => {}, { from: from as string }))
        expect(error.name, String(from)).to.equal('ArgumentError')
        expect(error).to.include({ code: 'ERK_INVALID_ARGUMENT', status: 400 })
        expect(error.message).to.include('`from`')
      }
      const onGap = await failureOf(() => events.subscribe('orders', () => {}, { onGap: 'x' as never }))
      expect(onGap.message).to.include('`onGap`')
    })

    /** Ids a client could send as its Last-Event-ID that Redis refuses (XREAD and XRANGE answer an error). */
    const refusedByRedis = [
      '18446744073709551616-0', // a part above 2^64-1
      '0-18446744073709551616',
      '99999999999999999999-0',
      `${'0'.repeat(125)}1-0`, // 128 characters: Redis reads at most 127
      '1-',
      '-1',
      '-1-0',
      '1--1',
      '1.5-0',
      '1e3-0',
      '0x1-0',
      '1-*',
      '',
    ]
    /** Ids Redis 7.0 lets through strtoull but never writes: refused too (a sign, spaces, a bare <ms>). */
    const neverWritten = ['+1-0', '1-+1', ' 1-0', '1- 1', '1-0 ', '5', '18446744073709551615']

    it('history() and subscribe({ from }): an id Redis refuses is an ArgumentError naming it, sent before any Redis command', async () => {
      // on a client that is closed: anything that reached for Redis would fail ERK_REDIS_UNAVAILABLE
      const closed = await connectRedis()
      await closed.close()
      const events = createNotifier({ client: closed, prefix: uniquePrefix('fanout-bad-id'), mode: 'fanout' })
      notifiers.push(events)
      for (const id of [...refusedByRedis, ...neverWritten]) {
        for (const [name, call] of [
          ['after', () => events.history('orders', { after: id })],
          ['from', () => events.subscribe('orders', () => {}, { from: id })],
        ] as const) {
          const error = await failureOf(call)
          expect(error.name, `${name} ${JSON.stringify(id)}: ${error.message}`).to.equal('ArgumentError')
          expect(error).to.include({ code: 'ERK_INVALID_ARGUMENT', status: 400 })
          expect(error.message).to.include(`\`${name}\``)
        }
      }
      // a valid id would have gone to Redis
      const valid = await failureOf(() => events.history('orders', { after: '1-0' }))
      expect(valid.code).to.equal('ERK_REDIS_UNAVAILABLE')
    })

    it('the ids those were checked against are the ones Redis refuses (XRANGE answers an error to each)', async () => {
      const key = `${uniquePrefix('fanout-redis-ids')}orders`
      await client.xAdd(key, '5-3', { m: 'x' })
      for (const id of refusedByRedis) {
        const error = await failureOf(() => client.xRange(key, id, '+'))
        expect(error.message, JSON.stringify(id)).to.match(/Invalid stream ID/)
      }
    })

    it('ids at the limits Redis accepts work: 2^64-1, leading zeros (read as Redis reads them), 127 characters', async () => {
      const prefix = uniquePrefix('fanout-edge-ids')
      const events = notifier(prefix)
      const ids: string[] = []
      for (let i = 0; i < 3; i++) ids.push(await events.publish('orders', i))
      const [first] = (await events.history('orders')).messages.map(({ meta }) => meta.streamId as string)
      const padded = `000${first}`
      const longest = `${'0'.repeat(127 - (first as string).length)}${first}`
      expect(longest).to.have.length(127)
      for (const after of [first as string, padded, longest]) {
        const history = await events.history('orders', { after })
        expect(
          history.messages.map(({ event }) => event),
          after,
        ).to.deep.equal([1, 2])
        expect(history.trimmed, after).to.equal(false)
      }
      const highest = await events.history('orders', { after: '18446744073709551615-18446744073709551615' })
      expect(highest.messages).to.deep.equal([])
      const received = inbox<number>()
      const gaps: GapInfo[] = []
      await events.subscribe('orders', received.handler, { from: padded, onGap: (gap) => void gaps.push(gap) })
      await events.publish('orders', 3)
      await waitUntil(() => received.deliveries.length >= 3, 10_000, '3 messages')
      expect(received.events()).to.deep.equal([1, 2, 3])
      expect(gaps, 'the padded id is the first message: no gap').to.deep.equal([])
    })

    it('from and onGap outside mode fanout, history() in pub/sub mode: errors naming them', async () => {
      const pubsub = createNotifier({ client, prefix: uniquePrefix('fanout-bad-mode') })
      notifiers.push(pubsub)
      expect((await failureOf(() => pubsub.subscribe('orders', () => {}, { from: '0' }))).message).to.include('`from`')
      const history = await failureOf(() => pubsub.history('orders'))
      expect(history.code).to.equal('ERK_INVALID_ARGUMENT')
      expect(history.message).to.include("'fanout'")
    })

    it('history(): a bad after or limit is an ArgumentError naming it', async () => {
      const events = notifier(uniquePrefix('fanout-bad-history'))
      for (const [options, name] of [
        [{ after: 'nope' }, 'after'],
        [{ after: '(1-0' }, 'after'],
        [{ limit: 0 }, 'limit'],
        [{ limit: 1.5 }, 'limit'],
        [{ limit: 10_001 }, 'limit'],
      ] as const) {
        const error = await failureOf(() => events.history('orders', options as never))
        expect(error.code, JSON.stringify(options)).to.equal('ERK_INVALID_ARGUMENT')
        expect(error.message).to.include(`\`${name}\``)
      }
    })

    it('mode: an unknown mode names the three', () => {
      const error = (() => {
        try {
          createNotifier({ client, mode: 'broadcast' as never })
        } catch (caught) {
          return caught as Error
        }
        return undefined
      })()
      expect(error?.message).to.include("'pubsub', 'durable' or 'fanout'")
    })
  })

  if (mode === 'cluster') {
    it('channels on every master: each subscription reads its own shard, every message in order', async () => {
      const prefix = uniquePrefix('fanout-shards')
      const channels = [...channelsOnEveryMaster(client, prefix).keys()]
      const publisher = notifier(prefix)
      const listener = notifier(prefix, { logger: recordingLogger() })
      const inboxes = new Map(channels.map((channel) => [channel, inbox<number>()]))
      for (const [channel, each] of inboxes) await listener.subscribe(channel, each.handler)
      for (let i = 0; i < 20; i++) for (const channel of channels) await publisher.publish(channel, i)
      for (const each of inboxes.values()) await waitUntil(() => each.deliveries.length >= 20, 10_000, '20 messages')
      for (const each of inboxes.values()) expect(each.events()).to.deep.equal([...Array(20).keys()])
      const killed = await killReaders()
      expect(killed).to.equal(channels.length)
      for (let i = 20; i < 40; i++) for (const channel of channels) await publisher.publish(channel, i)
      for (const each of inboxes.values()) await waitUntil(() => each.deliveries.length >= 40, 15_000, '40 messages')
      for (const each of inboxes.values()) expect(each.events()).to.deep.equal([...Array(40).keys()])
    })
  }

  describe('Redis restarted (empty) on the same port', () => {
    let redis: DisposableRedis
    const servers: DisposableRedis[] = []
    afterEach(async () => {
      await Promise.all(servers.splice(0).map((each) => each.stop()))
    })

    it('the subscription comes back, reports the lost stream through onGap at once, and new messages arrive', async function () {
      this.timeout(30_000)
      redis = await startDisposableRedis()
      servers.push(redis)
      const own = await connectTo(redis)
      const events = createNotifier({ client: own, mode: 'fanout', logger: recordingLogger() })
      const calls: string[] = []
      const gaps: GapInfo[] = []
      const received = inbox()
      try {
        await events.subscribe(
          'orders',
          (event, meta) => {
            calls.push('message')
            received.handler(event, meta)
          },
          {
            onGap: (gap) => {
              calls.push('gap')
              gaps.push(gap)
            },
          },
        )
        await events.publish('orders', 'before')
        await waitUntil(() => received.deliveries.length === 1, 5_000, 'the first message')
        await redis.stop()
        await sleep(300)
        servers.push(await startRedisOnPort(redis.port))
        await waitUntil(() => gaps.length === 1, 10_000, 'onGap, before anything new is published')
        expect(gaps[0]).to.deep.equal({
          channel: 'orders',
          after: received.deliveries[0]!.meta.streamId,
          oldest: undefined,
        })
        await waitUntil(() => own.isReady, 10_000, 'the client to reconnect')
        await events.publish('orders', 'after')
        await waitUntil(() => received.deliveries.length === 2, 10_000, 'the message after the restart')
        expect(received.events()).to.deep.equal(['before', 'after'])
        expect(calls).to.deep.equal(['message', 'gap', 'message'])
      } finally {
        await events.close()
        own.destroy()
      }
    })
  })
})
