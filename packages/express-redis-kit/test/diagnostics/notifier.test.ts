/**
 * The notifier's events on diagnostics_channel: published, delivered, redelivered, dropped (with
 * the reason: malformed, parse, handler, max-deliveries), reclaimed, trimmed and the consumer
 * group's lag, as a subscriber sees them for real messages on each mode.
 */
import diagnostics from 'node:diagnostics_channel'
import { expect } from 'chai'
import { CHANNELS, createNotifier, type Notifier, type NotifierEvent } from '../../src/index.js'
import { inbox, parseUser, rawPublish } from '../helpers/notifier.js'
import { recordingLogger } from '../helpers/outage.js'
import { connectRedis, mode, type RedisClient, uniquePrefix } from '../helpers/redis.js'
import { sleep } from '../helpers/session-redis.js'

async function until(condition: () => boolean, what: string, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await sleep(20)
  }
}

describe(`notifier events on diagnostics_channel (${mode === 'cluster' ? 'Redis Cluster' : 'single Redis'})`, () => {
  let client: RedisClient
  const notifiers: Notifier[] = []
  let events: NotifierEvent[]
  const listener = (message: unknown) => events.push(message as NotifierEvent)
  const of = (prefix: string, options: Partial<Parameters<typeof createNotifier>[0]> = {}) => {
    const created = createNotifier({ client, prefix, logger: recordingLogger(), ...options })
    notifiers.push(created)
    return created
  }
  before(async () => {
    client = await connectRedis()
  })
  beforeEach(() => {
    events = []
    diagnostics.subscribe(CHANNELS.notifier, listener)
  })
  afterEach(async () => {
    diagnostics.unsubscribe(CHANNELS.notifier, listener)
    await Promise.all(notifiers.splice(0).map((notifier) => notifier.close()))
  })
  after(async () => {
    await client.close()
  })

  for (const notifierMode of ['pubsub', 'fanout'] as const) {
    it(`${notifierMode}: published, delivered; dropped for a malformed message, a payload parse() refuses, a failing handler`, async () => {
      const prefix = uniquePrefix(`dc-notify-${notifierMode}`)
      const notifier = of(prefix, { mode: notifierMode })
      const received = inbox()
      await notifier.subscribe('users', received.handler, { parse: parseUser })
      const failing = await notifier.subscribe('jobs', () => {
        throw new Error('handler failed')
      })
      const id = await notifier.publish('users', { name: 'Ada' })
      await notifier.publish('users', { name: 7 })
      await notifier.publish('jobs', 1)
      if (notifierMode === 'pubsub') await rawPublish(client, `${prefix}users`, 'not json')
      else await client.xAdd(`${prefix}users`, '*', { m: 'not json' })
      await until(() => events.filter((event) => event.result === 'dropped').length >= 3, 'three drops')
      await failing()
      const summary = events.map(({ result, channel, reason }) => [result, channel, reason])
      expect(summary).to.deep.include.members([
        ['published', 'users', undefined],
        ['delivered', 'users', undefined],
        ['dropped', 'users', 'parse'],
        ['dropped', 'jobs', 'handler'],
        ['dropped', 'users', 'malformed'],
      ])
      expect(events.find((event) => event.result === 'delivered')).to.include({ id, mode: notifierMode })
    })
  }

  it('durable: a failing handler is redelivered (reclaimed), then dropped after maxDeliveries; the group lag is reported', async () => {
    const prefix = uniquePrefix('dc-notify-durable')
    const notifier = of(prefix, { mode: 'durable', claimIdle: '200ms', maxDeliveries: 2 })
    let calls = 0
    await notifier.subscribe('orders', (event) => {
      calls++
      if (event === 'flaky' && calls === 1) throw new Error('first try fails')
      if (event === 'broken') throw new Error('always fails')
    })
    await notifier.publish('orders', 'flaky')
    await until(() => events.some((event) => event.result === 'redelivered'), 'the redelivery')
    await notifier.publish('orders', 'broken')
    await until(
      () => events.some((event) => event.result === 'dropped' && event.reason === 'max-deliveries'),
      'the drop after maxDeliveries',
    )
    await until(() => events.some((event) => event.result === 'lag'), 'a lag report')
    expect(events.some((event) => event.result === 'reclaimed' && (event.count ?? 0) >= 1)).to.equal(true)
    const lag = events.find((event) => event.result === 'lag')
    expect(lag).to.include({ channel: 'orders', mode: 'durable' })
    expect(lag?.lag).to.be.a('number')
    expect(events.some((event) => event.result === 'dropped' && event.reason === 'handler')).to.equal(false)
  })

  it('fanout: a subscription starting after trimmed messages reports trimmed', async () => {
    const prefix = uniquePrefix('dc-notify-gap')
    const notifier = of(prefix, { mode: 'fanout', maxLength: 10 })
    const first = await notifier.publish('feed', 0)
    const streamIds = await client.xRange(`${prefix}feed`, '-', '+')
    for (let i = 1; i < 200; i++) await notifier.publish('feed', i)
    await client.xTrim(`${prefix}feed`, 'MAXLEN', 10)
    const received = inbox()
    await notifier.subscribe('feed', received.handler, { from: streamIds?.[0]?.id ?? '0', onGap: () => {} })
    await until(() => events.some((event) => event.result === 'trimmed'), 'the gap')
    expect(events.find((event) => event.result === 'trimmed')).to.include({ channel: 'feed', mode: 'fanout' })
    expect(first).to.be.a('string')
  })
})
