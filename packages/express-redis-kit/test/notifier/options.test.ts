import { expect } from 'chai'
import { createNotifier, type Notifier, type NotifierOptions } from '../../src/index.js'
import { failureOf, inbox } from '../helpers/notifier.js'
import { waitUntil } from '../helpers/outage.js'
import { connectRedis, type RedisClient, mode as redisMode, uniquePrefix } from '../helpers/redis.js'

/*
 * createNotifier's input checks: a bad option or channel name is a TypeError (code
 * ERK_INVALID_OPTION) naming it; a payload that is not JSON or too large is
 * ERK_INVALID_MESSAGE and nothing is sent; a closed notifier answers ERK_CLOSED.
 */
describe(`notifier options and input (${redisMode} Redis)`, () => {
  let client: RedisClient
  const notifiers: Notifier[] = []
  const notifier = (options: Omit<NotifierOptions, 'client'> = {}): Notifier => {
    const created = createNotifier({ client, prefix: uniquePrefix('notifier-options'), ...options })
    notifiers.push(created)
    return created
  }
  before(async () => {
    client = await connectRedis()
  })
  afterEach(async () => {
    await Promise.all(notifiers.splice(0).map((each) => each.close()))
  })
  after(async () => {
    await client.close()
  })

  function expectOptionError(error: unknown, option: string): void {
    expect(error).to.be.instanceOf(TypeError)
    expect(error).to.have.property('code', 'ERK_INVALID_OPTION')
    expect((error as Error).message).to.include(`\`${option}\``)
    expect((error as Error).message).to.match(/must be .+; received /)
  }

  describe('createNotifier validation', () => {
    const invalid: [string, Record<string, unknown>, string][] = [
      // description, options (over a valid client), option named
      ['an unknown option', { channel: 'x' }, 'channel'],
      ['a misspelt option (claimIdleMs)', { claimIdleMs: 500 }, 'claimIdleMs'],
      ["mode 'stream'", { mode: 'stream' }, 'mode'],
      ['mode 1', { mode: 1 }, 'mode'],
      ['client {}', { client: {} }, 'client'],
      ['client null', { client: null }, 'client'],
      ['client undefined', { client: undefined }, 'client'],
      ["client 'redis://127.0.0.1'", { client: 'redis://127.0.0.1' }, 'client'],
      ["prefix 'a{b'", { prefix: 'a{b' }, 'prefix'],
      ['prefix 1', { prefix: 1 }, 'prefix'],
      ['logger {}', { logger: {} }, 'logger'],
      ["onReconnect 'x'", { onReconnect: 'x' }, 'onReconnect'],
      ['timeoutMs 0', { timeoutMs: 0 }, 'timeoutMs'],
      ['timeoutMs -1', { timeoutMs: -1 }, 'timeoutMs'],
      ['timeoutMs 1.5', { timeoutMs: 1.5 }, 'timeoutMs'],
      ["timeoutMs '500'", { timeoutMs: '500' }, 'timeoutMs'],
      ['maxMessageBytes 0', { maxMessageBytes: 0 }, 'maxMessageBytes'],
      ['maxMessageBytes -1', { maxMessageBytes: -1 }, 'maxMessageBytes'],
      ['maxMessageBytes 1.5', { maxMessageBytes: 1.5 }, 'maxMessageBytes'],
      ['maxLength -1', { maxLength: -1 }, 'maxLength'],
      ['maxLength 0', { maxLength: 0 }, 'maxLength'],
      ['maxLength 2.5', { maxLength: 2.5 }, 'maxLength'],
      ["maxLength '100'", { maxLength: '100' }, 'maxLength'],
      ['maxLength Infinity', { maxLength: Number.POSITIVE_INFINITY }, 'maxLength'],
      ["group ''", { group: '' }, 'group'],
      ["group 'a b'", { group: 'a b' }, 'group'],
      ['group of 201 characters', { group: 'g'.repeat(201) }, 'group'],
      ['group 1', { group: 1 }, 'group'],
      ["group 'é'", { group: 'é' }, 'group'],
      ["consumer ''", { consumer: '' }, 'consumer'],
      ["consumer 'a\\nb'", { consumer: 'a\nb' }, 'consumer'],
      ['consumer of 201 characters', { consumer: 'c'.repeat(201) }, 'consumer'],
      ['consumer {}', { consumer: {} }, 'consumer'],
      ['claimIdle 0', { claimIdle: 0 }, 'claimIdle'],
      ['claimIdle -500', { claimIdle: -500 }, 'claimIdle'],
      ['claimIdle NaN', { claimIdle: Number.NaN }, 'claimIdle'],
      ['claimIdle Infinity', { claimIdle: Number.POSITIVE_INFINITY }, 'claimIdle'],
      ["claimIdle '5 months'", { claimIdle: '5 months' }, 'claimIdle'],
      ["claimIdle 'soon'", { claimIdle: 'soon' }, 'claimIdle'],
      ['maxDeliveries 0', { maxDeliveries: 0 }, 'maxDeliveries'],
      ['maxDeliveries -1', { maxDeliveries: -1 }, 'maxDeliveries'],
      ['maxDeliveries 1.5', { maxDeliveries: 1.5 }, 'maxDeliveries'],
      ['batchSize 0', { batchSize: 0 }, 'batchSize'],
      ['batchSize -10', { batchSize: -10 }, 'batchSize'],
      ["batchSize '10'", { batchSize: '10' }, 'batchSize'],
    ]
    for (const [description, options, option] of invalid) {
      it(`${description}: TypeError ERK_INVALID_OPTION naming \`${option}\``, async () => {
        const error = await failureOf(() => createNotifier({ client, ...options } as unknown as NotifierOptions))
        expectOptionError(error, option)
      })
    }

    for (const [description, options] of [
      ['undefined', undefined],
      ['null', null],
      ["'redis://127.0.0.1'", 'redis://127.0.0.1'],
    ] as const) {
      it(`options ${description}: TypeError ERK_INVALID_OPTION`, async () => {
        const error = await failureOf(() => createNotifier(options as unknown as NotifierOptions))
        expect(error).to.be.instanceOf(TypeError)
        expect(error).to.have.property('code', 'ERK_INVALID_OPTION')
      })
    }

    it('accepts every option with a valid value, durations as numbers or strings', () => {
      for (const claimIdle of [1_500, '500ms', '2s', '1m', '1h', '1d', '30 seconds', '5 minutes', '1 hour'] as const) {
        const created = notifier({
          mode: 'durable',
          logger: console,
          onReconnect: () => {},
          timeoutMs: 1_000,
          maxMessageBytes: 4_096,
          maxLength: 1,
          group: 'g'.repeat(200),
          consumer: 'worker-1',
          claimIdle,
          maxDeliveries: 1,
          batchSize: 1,
        })
        expect(created.mode).to.equal('durable')
      }
      expect(notifier().mode).to.equal('pubsub')
      expect(notifier({ mode: 'pubsub' }).mode).to.equal('pubsub')
    })
  })

  for (const mode of ['pubsub', 'durable'] as const) {
    describe(`channel names and subscribe arguments (${mode})`, () => {
      const badChannels: [string, unknown][] = [
        ['empty', ''],
        ['with a space', 'a b'],
        ['with a newline', 'a\nb'],
        ['of 201 characters', 'c'.repeat(201)],
        ['not ASCII', 'café'],
        ['a number', 42],
        ['undefined', undefined],
        ['null', null],
        ['an object', { name: 'orders' }],
      ]
      for (const [description, channel] of badChannels) {
        it(`publish on a channel ${description}: TypeError ERK_INVALID_OPTION naming \`channel\``, async () => {
          const error = await failureOf(() => notifier({ mode }).publish(channel as string, { ok: true }))
          expectOptionError(error, 'channel')
        })

        it(`subscribe to a channel ${description}: TypeError ERK_INVALID_OPTION naming \`channel\``, async () => {
          const error = await failureOf(() => notifier({ mode }).subscribe(channel as string, () => {}))
          expectOptionError(error, 'channel')
        })
      }

      it('a channel of 200 printable characters is valid: its message arrives', async () => {
        const channel = `${'c'.repeat(190)}!~:{}[]#/@`
        expect(channel).to.have.length(200)
        const created = notifier({ mode })
        const received = inbox()
        await created.subscribe(channel, received.handler)
        await created.publish(channel, 'long name')
        await waitUntil(() => received.deliveries.length === 1, 5_000, 'the message')
        expect(received.deliveries[0]?.meta.channel).to.equal(channel)
      })

      for (const [description, handler] of [
        ['undefined', undefined],
        ["'x'", 'x'],
        ['an object', { handle() {} }],
      ] as const) {
        it(`subscribe with a handler ${description}: TypeError ERK_INVALID_OPTION naming \`handler\``, async () => {
          const error = await failureOf(() => notifier({ mode }).subscribe('orders', handler as unknown as () => void))
          expectOptionError(error, 'handler')
        })
      }

      for (const [description, parse] of [
        ["'x'", 'x'],
        ['a schema object instead of its parse', { parse: () => 1 }],
        ['null', null],
      ] as const) {
        it(`subscribe with parse ${description}: TypeError ERK_INVALID_OPTION naming \`parse\``, async () => {
          const error = await failureOf(() =>
            notifier({ mode }).subscribe('orders', () => {}, { parse: parse as unknown as () => unknown }),
          )
          expectOptionError(error, 'parse')
        })
      }

      for (const group of ['', 'a b', 'g'.repeat(201), 7]) {
        it(`subscribe with group ${JSON.stringify(group).slice(0, 20)}: TypeError ERK_INVALID_OPTION naming \`group\``, async () => {
          const error = await failureOf(() =>
            notifier({ mode }).subscribe('orders', () => {}, { group: group as string }),
          )
          expectOptionError(error, 'group')
        })
      }
    })

    describe(`publishing what cannot be sent (${mode})`, () => {
      const circular: Record<string, unknown> = { name: 'loop' }
      circular.self = circular
      const invalidPayloads: [string, unknown][] = [
        ['undefined', undefined],
        ['a function', () => 'x'],
        ['a symbol', Symbol('s')],
        ['a BigInt', 10n],
        ['an object holding a BigInt', { amount: 10n }],
        ['a circular object', circular],
        ['an object whose toJSON() gives undefined', { toJSON: () => undefined }],
      ]
      for (const [description, payload] of invalidPayloads) {
        it(`${description}: rejects with ERK_INVALID_MESSAGE and sends nothing`, async () => {
          const created = notifier({ mode })
          const received = inbox()
          await created.subscribe('orders', received.handler)
          const error = await failureOf(() => created.publish('orders', payload))
          expect(error).to.have.property('name', 'RedisKitError')
          expect(error).to.have.property('code', 'ERK_INVALID_MESSAGE')
          expect(error).to.have.property('status', 400)
          await created.publish('orders', 'after')
          await waitUntil(() => received.deliveries.length >= 1, 5_000, 'the valid message')
          expect(received.events()).to.deep.equal(['after'])
        })
      }

      it('a message over maxMessageBytes: rejects with ERK_INVALID_MESSAGE and sends nothing; one under it is sent', async () => {
        const created = notifier({ mode, maxMessageBytes: 300 })
        const received = inbox()
        await created.subscribe('orders', received.handler)
        const error = await failureOf(() => created.publish('orders', 'x'.repeat(300)))
        expect(error).to.have.property('code', 'ERK_INVALID_MESSAGE')
        expect(error.message).to.include('maxMessageBytes')
        // Bytes, not characters: 140 × 'é' is 140 characters but 280 bytes, over 300 with the envelope.
        expect(await failureOf(() => created.publish('orders', 'é'.repeat(140)))).to.have.property(
          'code',
          'ERK_INVALID_MESSAGE',
        )
        await created.publish('orders', 'x'.repeat(100))
        await waitUntil(() => received.deliveries.length >= 1, 5_000, 'the small message')
        expect(received.events()).to.deep.equal(['x'.repeat(100)])
      })

      for (const id of ['', 'a b', 'line\nbreak', 'x'.repeat(201), 7]) {
        it(`publish with id ${JSON.stringify(id).slice(0, 20)}: rejects with ERK_INVALID_MESSAGE naming the id, sends nothing`, async () => {
          const created = notifier({ mode })
          const received = inbox()
          await created.subscribe('orders', received.handler)
          const error = await failureOf(() => created.publish('orders', 'bad', { id: id as string }))
          expect(error).to.have.property('code', 'ERK_INVALID_MESSAGE')
          expect(error.message).to.include('the id must be')
          await created.publish('orders', 'after')
          await waitUntil(() => received.deliveries.length >= 1, 5_000, 'the valid message')
          expect(received.events()).to.deep.equal(['after'])
        })
      }

      it('publish with an id: resolves to it and every subscriber gets it as meta.id, the same on each publication', async () => {
        const created = notifier({ mode })
        const received = inbox()
        await created.subscribe('orders', received.handler)
        expect(await created.publish('orders', 'first', { id: 'outbox:42' })).to.equal('outbox:42')
        await created.publish('orders', 'again', { id: 'outbox:42' })
        await waitUntil(() => received.deliveries.length >= 2, 5_000, 'both publications')
        expect(received.deliveries.map((delivery) => delivery.meta.id)).to.deep.equal(['outbox:42', 'outbox:42'])
      })

      it('JSON values of every kind are sent as JSON gives them back', async () => {
        const created = notifier({ mode })
        const received = inbox()
        await created.subscribe('orders', received.handler)
        const payloads = [null, 0, -1.5, '', 'text', true, false, [], [1, 'a', null], { a: { b: [1] } }]
        for (const payload of payloads) await created.publish('orders', payload)
        await created.publish('orders', { at: new Date(0), skipped: undefined })
        await waitUntil(() => received.deliveries.length === payloads.length + 1, 5_000, 'every message')
        expect(received.events()).to.deep.equal([...payloads, { at: '1970-01-01T00:00:00.000Z' }])
      })
    })

    describe(`a closed notifier (${mode})`, () => {
      it('publish and subscribe reject with ERK_CLOSED; close() again and an old unsubscribe resolve', async () => {
        const created = notifier({ mode })
        const unsubscribe = await created.subscribe('orders', () => {})
        await created.publish('orders', 1)
        await created.close()
        const published = await failureOf(() => created.publish('orders', 2))
        expect(published).to.have.property('name', 'RedisKitError')
        expect(published).to.have.property('code', 'ERK_CLOSED')
        const subscribed = await failureOf(() => created.subscribe('orders', () => {}))
        expect(subscribed).to.have.property('code', 'ERK_CLOSED')
        await created.close()
        await unsubscribe()
      })

      it('a notifier closed before any use rejects publish and subscribe with ERK_CLOSED', async () => {
        const created = notifier({ mode })
        await created.close()
        expect(await failureOf(() => created.publish('orders', 1))).to.have.property('code', 'ERK_CLOSED')
        expect(await failureOf(() => created.subscribe('orders', () => {}))).to.have.property('code', 'ERK_CLOSED')
      })
    })
  }

  describe('durable: one consumer per group and channel in a notifier', () => {
    it('a second subscribe to the same channel and group is a TypeError naming `group`; another group is fine', async () => {
      const created = notifier({ mode: 'durable', claimIdle: 500 })
      await created.subscribe('orders', () => {})
      expectOptionError(await failureOf(() => created.subscribe('orders', () => {})), 'group')
      expectOptionError(await failureOf(() => created.subscribe('orders', () => {}, { group: 'default' })), 'group')
      await created.subscribe('orders', () => {}, { group: 'audit' })
      await created.subscribe('invoices', () => {})
    })

    it('after unsubscribe, the same channel and group can be subscribed again', async () => {
      const created = notifier({ mode: 'durable', claimIdle: 500 })
      const unsubscribe = await created.subscribe('orders', () => {})
      await unsubscribe()
      const received = inbox()
      await created.subscribe('orders', received.handler)
      await created.publish('orders', 'again')
      await waitUntil(() => received.deliveries.length === 1, 5_000, 'the message')
    })
  })

  describe('defaults', () => {
    it("prefix 'events:' and group 'default' (durable): the stream and its group are named so", async () => {
      const channel = uniquePrefix('notifier-default').replace(/:/g, '-')
      const created = createNotifier({ client, mode: 'durable', claimIdle: 500 })
      notifiers.push(created)
      try {
        await created.subscribe(channel, () => {})
        await created.publish(channel, 1)
        expect(await client.exists(`events:${channel}`)).to.equal(1)
        const groups = (await client.xInfoGroups(`events:${channel}`)) as unknown as { name: string }[]
        expect(groups.map((group) => group.name)).to.deep.equal(['default'])
      } finally {
        await created.close()
        await client.del(`events:${channel}`)
      }
    })

    it('consumer: the given name is the consumer that reads in the group', async () => {
      const prefix = uniquePrefix('notifier-consumer')
      const created = createNotifier({ client, prefix, mode: 'durable', claimIdle: 500, consumer: 'api-7' })
      notifiers.push(created)
      const received = inbox()
      await created.subscribe('orders', received.handler, { group: 'mailer' })
      await created.publish('orders', 1)
      await waitUntil(() => received.deliveries.length === 1, 5_000, 'the message')
      const consumers = (await client.xInfoConsumers(`${prefix}orders`, 'mailer')) as unknown as { name: string }[]
      expect(consumers.map((consumer) => consumer.name)).to.deep.equal(['api-7'])
    })
  })
})
