import diagnostics from 'node:diagnostics_channel'
import { expect } from 'chai'
import { decodeEnvelope, ENVELOPE_ID, encodeEnvelope, Subscriber } from '../../../src/notifier/envelope.js'
import { CHANNELS, type NotifierEvent } from '../../../src/shared/diagnostics.js'
import { at } from '../../helpers/frozen-clock.js'
import { recordingLogger } from '../../helpers/outage.js'

const MAX = 1_024

/** The ERK_INVALID_MESSAGE encodeEnvelope throws, or a failure. */
function invalid(run: () => unknown): string {
  try {
    run()
  } catch (error) {
    expect(error).to.include({ code: 'ERK_INVALID_MESSAGE', status: 400 })
    return (error as Error).message
  }
  throw new Error('it was encoded')
}

describe('notifier envelopes', () => {
  describe('encodeEnvelope', () => {
    it('JSON of id, channel, publication time (this host’s clock) and payload', () => {
      const { id, json } = at(1_700_000_000_123, () =>
        encodeEnvelope('orders', { total: 5, items: ['a'] }, MAX, 'id-1'),
      )
      expect(id).to.equal('id-1')
      expect(JSON.parse(json)).to.deep.equal({
        id: 'id-1',
        channel: 'orders',
        time: 1_700_000_000_123,
        payload: { total: 5, items: ['a'] },
      })
    })

    it('a random UUID when no id is given; a channel with quotes or unicode is escaped', () => {
      const { id, json } = encodeEnvelope('a"b\n\u2028é', null, MAX)
      expect(id).to.match(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/)
      expect(JSON.parse(json)).to.include({ channel: 'a"b\n\u2028é', payload: null })
    })

    it('an id that could break a header, a log line or an SSE field: refused', () => {
      for (const id of ['', 'a b', 'a\r\nb', 'a"b', 'é', 'x'.repeat(201), 5 as unknown as string]) {
        expect(
          invalid(() => encodeEnvelope('c', 1, MAX, id)),
          JSON.stringify(id),
        ).to.include('the id must be 1 to 200 characters of A-Z, a-z, 0-9, ".", "_", ":" and "-"')
      }
      expect(encodeEnvelope('c', 1, MAX, 'x'.repeat(200)).id).to.have.length(200)
      expect(encodeEnvelope('c', 1, MAX, 'order:42_v1.0-a').id).to.equal('order:42_v1.0-a')
    })

    it('a payload that is not a JSON value: refused, saying why', () => {
      expect(invalid(() => encodeEnvelope('c', 1n, MAX))).to.include(
        'the payload cannot be serialized to JSON (Do not know how to serialize a BigInt)',
      )
      const cycle: Record<string, unknown> = {}
      cycle.self = cycle
      expect(invalid(() => encodeEnvelope('c', cycle, MAX))).to.include('the payload cannot be serialized to JSON')
      for (const payload of [undefined, () => 1, Symbol('s'), { toJSON: () => undefined }])
        expect(invalid(() => encodeEnvelope('c', payload, MAX))).to.include(
          'the payload must be a JSON value (undefined, a function, a symbol or a toJSON() giving undefined is not)',
        )
    })

    it('maxBytes bounds the whole envelope, in bytes (not characters)', () => {
      const size = (payload: string) => Buffer.byteLength(encodeEnvelope('c', payload, 1e9, 'i').json)
      const fits = 'x'.repeat(MAX - size(''))
      expect(Buffer.byteLength(encodeEnvelope('c', fits, MAX, 'i').json)).to.equal(MAX)
      expect(invalid(() => encodeEnvelope('c', `${fits}x`, MAX, 'i'))).to.include(
        `the message is ${MAX + 1} bytes, more than maxMessageBytes (${MAX})`,
      )
      // 'é' is two bytes
      expect(invalid(() => encodeEnvelope('c', `${fits.slice(1)}é`, MAX, 'i'))).to.include(`${MAX + 1} bytes`)
    })
  })

  describe('decodeEnvelope: a received message, or why it is unusable (never a throw)', () => {
    const good = (overrides: Record<string, unknown> = {}) =>
      JSON.stringify({ id: 'm1', channel: 'orders', time: 1, payload: { a: 1 }, ...overrides })

    it('what encodeEnvelope wrote comes back', () => {
      const { json } = at(42, () => encodeEnvelope('orders', [1, 'two'], MAX, 'm1'))
      expect(decodeEnvelope(json, 'orders', MAX)).to.deep.equal({
        id: 'm1',
        channel: 'orders',
        time: 42,
        payload: [1, 'two'],
      })
      expect(decodeEnvelope(good({ payload: null }), 'orders', MAX)).to.include({ payload: null })
    })

    const unusable: [string, string, string][] = [
      ['not JSON', '{"id":', 'it is not valid JSON'],
      ['JSON null', 'null', 'it is not an express-redis-kit envelope'],
      ['a string', '"hello"', 'it is not an express-redis-kit envelope'],
      ['another channel’s', good({ channel: 'payments' }), 'for this channel'],
      ['no payload', JSON.stringify({ id: 'm1', channel: 'orders', time: 1 }), 'not an express-redis-kit envelope'],
      ['a time that is text', good({ time: '1' }), 'not an express-redis-kit envelope'],
      ['an id that is a number', good({ id: 5 }), 'not an express-redis-kit envelope'],
      ['an id with CRLF', good({ id: 'a\r\nSet-Cookie: x' }), 'its id is not 1 to 200 characters of'],
      ['an id with a space', good({ id: 'a b' }), 'its id is not'],
      ['an empty id', good({ id: '' }), 'its id is not'],
      ['too large', good({ payload: 'x'.repeat(MAX) }), `it is larger than maxMessageBytes (${MAX})`],
    ]
    for (const [what, text, reason] of unusable) {
      it(what, () => {
        const result = decodeEnvelope(text, 'orders', MAX)
        expect(result).to.be.a('string').that.includes(reason)
      })
    }

    it('ENVELOPE_ID: the ids every received message must have', () => {
      expect(ENVELOPE_ID.test('1700000000000-0')).to.equal(true)
      expect(ENVELOPE_ID.test('a/b')).to.equal(false)
    })
  })

  describe('Subscriber: one subscribe() call’s handler, in order', () => {
    const envelope = (id: string, payload: unknown) => ({ id, channel: 'orders', time: 1, payload })
    const meta = (id: string, deliveries = 1) => ({ id, channel: 'orders', time: 1, deliveries })

    /** The notifier events published while `run` runs. */
    async function events(run: () => Promise<void>): Promise<NotifierEvent[]> {
      const seen: NotifierEvent[] = []
      const listener = (message: unknown) => void seen.push(message as NotifierEvent)
      diagnostics.subscribe(CHANNELS.notifier, listener)
      try {
        await run()
      } finally {
        diagnostics.unsubscribe(CHANNELS.notifier, listener)
      }
      return seen
    }

    it('messages run one after another, each after the one before finished', async () => {
      const order: string[] = []
      let releaseFirst!: () => void
      const first = new Promise<void>((resolve) => {
        releaseFirst = resolve
      })
      const subscriber = new Subscriber<string>(
        'orders',
        async (event) => {
          order.push(`start ${event}`)
          if (event === 'a') await first
          order.push(`end ${event}`)
        },
        undefined,
        recordingLogger(),
      )
      const a = subscriber.deliver(envelope('1', 'a'), meta('1'))
      const b = subscriber.deliver(envelope('2', 'b'), meta('2'))
      await new Promise((resolve) => setImmediate(resolve))
      expect(order).to.deep.equal(['start a'])
      releaseFirst()
      expect(await Promise.all([a, b])).to.deep.equal([true, true])
      await subscriber.idle()
      expect(order).to.deep.equal(['start a', 'end a', 'start b', 'end b'])
    })

    it('parse() gives the handler its event; one that throws drops the message (done with), logged', async () => {
      const logger = recordingLogger()
      const handled: number[] = []
      const subscriber = new Subscriber<number>(
        'orders',
        (event) => void handled.push(event),
        (payload) => {
          if (typeof payload !== 'number') throw new TypeError('not a number')
          return payload * 10
        },
        logger,
      )
      const seen = await events(async () => {
        expect(await subscriber.deliver(envelope('1', 4), meta('1'))).to.equal(true)
        expect(await subscriber.deliver(envelope('2', 'x'), meta('2'))).to.equal(true)
      })
      expect(handled).to.deep.equal([40])
      expect(String(logger.warnings[0]?.[0])).to.equal(
        'express-redis-kit notifier: dropped message 2 on "orders": its payload failed parse()',
      )
      expect(seen).to.deep.equal([
        { result: 'delivered', channel: 'orders', id: '1', mode: 'pubsub' },
        { result: 'dropped', channel: 'orders', id: '2', mode: 'pubsub', reason: 'parse' },
      ])
    })

    it('a handler that throws: false (may come again), logged; dropped in pub/sub, not in durable mode', async () => {
      for (const mode of ['pubsub', 'durable'] as const) {
        const logger = recordingLogger()
        const failure = new Error('handler failed')
        const subscriber = new Subscriber(
          'orders',
          () => {
            throw failure
          },
          undefined,
          logger,
          mode,
        )
        const seen = await events(async () => {
          expect(await subscriber.deliver(envelope('1', {}), meta('1'))).to.equal(false)
        })
        expect(logger.errors).to.deep.equal([
          ['express-redis-kit notifier: the handler of "orders" failed on message 1', failure],
        ])
        expect(seen, mode).to.deep.equal(
          mode === 'durable' ? [] : [{ result: 'dropped', channel: 'orders', id: '1', mode, reason: 'handler' }],
        )
      }
    })

    it('a message delivered before is `redelivered`', async () => {
      const subscriber = new Subscriber('orders', () => {}, undefined, recordingLogger(), 'durable')
      const seen = await events(async () => {
        await subscriber.deliver(envelope('1', {}), meta('1', 3))
      })
      expect(seen).to.deep.equal([{ result: 'redelivered', channel: 'orders', id: '1', mode: 'durable' }])
    })
  })
})
