import { setTimeout as sleep } from 'node:timers/promises'
import { expect } from 'chai'
import { createNotifier, type Notifier } from '../../src/index.js'
import { clusterSlot } from '../../src/shared/redis.js'
import { channelsOnEveryMaster, failureOf, inbox, redisCli, unhandledRejections } from '../helpers/notifier.js'
import { recordingLogger, waitUntil } from '../helpers/outage.js'
import {
  connectRedis,
  type DisposableCluster,
  mode,
  type RedisClient,
  startDisposableCluster,
  uniquePrefix,
} from '../helpers/redis.js'

/*
 * On a Redis Cluster, pub/sub is sharded (SSUBSCRIBE/SPUBLISH on the master of the
 * channel's slot) and each durable stream lives on the master of its key's slot: channels
 * spread over every master must all work, and a master going down must not take the
 * process or close() with it. Only meaningful against a Cluster: skipped in single mode.
 */
describe(`notifier on a Redis Cluster (${mode} Redis)`, () => {
  const unhandled = unhandledRejections()
  const notifiers: Notifier[] = []
  before(() => unhandled.start())
  after(() => unhandled.stop())
  afterEach(async () => {
    await Promise.all(notifiers.splice(0).map((each) => each.close()))
    expect(unhandled.reasons, 'unhandled rejections').to.deep.equal([])
  })

  describe('the suite Cluster', () => {
    let client: RedisClient | undefined
    beforeEach(async () => {
      if (mode !== 'cluster') return
      client = await connectRedis()
    })
    afterEach(async () => {
      await client?.close()
      client = undefined
    })

    it('cluster only: pub/sub channels whose slots are on every master are each delivered, subscribed on their own master (sharded)', async function () {
      if (mode !== 'cluster' || client === undefined) this.skip()
      const prefix = uniquePrefix('cluster-sharded')
      const events = createNotifier({ client, prefix })
      notifiers.push(events)
      const channels = channelsOnEveryMaster(client, prefix)
      expect(new Set(channels.values()).size, 'masters covered').to.be.at.least(3)
      const inboxes = new Map([...channels.keys()].map((channel) => [channel, inbox()]))
      for (const [channel, received] of inboxes) await events.subscribe(channel, received.handler)

      // Each master carries exactly the subscriptions of the channels in its slots.
      for (const port of new Set(channels.values())) {
        const listed = (await redisCli(port, ['PUBSUB', 'SHARDCHANNELS', `${prefix}*`])).trim().split('\n')
        const expected = [...channels].filter(([, owner]) => owner === port).map(([channel]) => prefix + channel)
        expect(listed.sort(), `shard channels on ${port}`).to.deep.equal(expected.sort())
      }

      for (const channel of channels.keys()) await events.publish(channel, `to ${channel}`)
      await waitUntil(() => [...inboxes.values()].every((each) => each.deliveries.length === 1), 5_000, 'every channel')
      await sleep(100)
      for (const [channel, received] of inboxes) expect(received.events(), channel).to.deep.equal([`to ${channel}`])
    })

    it('cluster only: durable channels whose streams are on every master are each delivered', async function () {
      if (mode !== 'cluster' || client === undefined) this.skip()
      const prefix = uniquePrefix('cluster-durable')
      const events = createNotifier({ client, prefix, mode: 'durable', claimIdle: 400 })
      notifiers.push(events)
      const channels = channelsOnEveryMaster(client, prefix)
      const inboxes = new Map([...channels.keys()].map((channel) => [channel, inbox()]))
      for (const [channel, received] of inboxes) await events.subscribe(channel, received.handler)
      for (const channel of channels.keys()) {
        await events.publish(channel, `${channel} 1`)
        await events.publish(channel, `${channel} 2`)
      }
      await waitUntil(() => [...inboxes.values()].every((each) => each.deliveries.length === 2), 5_000, 'every channel')
      for (const [channel, received] of inboxes) {
        expect(received.events(), channel).to.deep.equal([`${channel} 1`, `${channel} 2`])
      }
      for (const [channel, port] of channels) {
        expect(Number(await redisCli(port, ['XLEN', prefix + channel])), `${channel} on ${port}`).to.equal(2)
      }
    })
  })

  describe('a cluster still being created (a disposable Cluster of our own)', function () {
    this.timeout(60_000)
    it('cluster only: pubsub: a subscription made before the slots are assigned works once they are', async function () {
      if (mode !== 'cluster') this.skip()
      const cluster = await startDisposableCluster({ created: false })
      const clients: RedisClient[] = []
      try {
        // Connected while no node serves any slot: the client's slot map is empty.
        const early = await cluster.connect()
        clients.push(early)
        const prefix = uniquePrefix('cluster-created-late')
        const events = createNotifier({ client: early, prefix, logger: recordingLogger(), timeoutMs: 300 })
        notifiers.push(events)
        const received = inbox()
        const subscribed = events.subscribe('news', received.handler)
        await sleep(600)
        await cluster.create()
        await subscribed
        const late = await cluster.connect()
        clients.push(late)
        const publisher = createNotifier({ client: late, prefix, timeoutMs: 2_000 })
        notifiers.push(publisher)
        await publisher.publish('news', 'hello')
        await waitUntil(() => received.deliveries.length === 1, 10_000, 'the message')
        expect(received.events()).to.deep.equal(['hello'])
      } finally {
        for (const client of clients) client.destroy()
        await cluster.stop()
      }
    })
  })

  describe('a master down (a disposable Cluster of our own)', function () {
    this.timeout(60_000)
    let cluster: DisposableCluster | undefined
    let client: RedisClient | undefined
    beforeEach(async function () {
      if (mode !== 'cluster') return
      this.timeout(60_000)
      cluster = await startDisposableCluster()
      client = await cluster.connect()
    })
    afterEach(async () => {
      client?.destroy()
      await cluster?.stop()
      cluster = undefined
      client = undefined
    })

    for (const notifierMode of ['pubsub', 'durable'] as const) {
      it(`cluster only: ${notifierMode}: the master of a channel killed: the other masters' channels still work, publish on it rejects ERK_REDIS_UNAVAILABLE, close() resolves`, async function () {
        if (mode !== 'cluster' || cluster === undefined || client === undefined) this.skip()
        const prefix = uniquePrefix('cluster-master-down')
        const logger = recordingLogger()
        const events = createNotifier({ client, prefix, mode: notifierMode, logger, claimIdle: 400, timeoutMs: 300 })
        notifiers.push(events)
        const channels = channelsOnEveryMaster(client, prefix, 1)
        const [doomed, survivor] = [...channels.keys()]
        if (doomed === undefined || survivor === undefined) throw new Error('expected channels on several masters')
        const received = { doomed: inbox(), survivor: inbox() }
        await events.subscribe(doomed, received.doomed.handler)
        await events.subscribe(survivor, received.survivor.handler)
        await events.publish(doomed, 'before')
        await events.publish(survivor, 'before')
        await waitUntil(
          () => received.doomed.deliveries.length === 1 && received.survivor.deliveries.length === 1,
          5_000,
          'the first messages',
        )

        await cluster.killMasterOf(prefix + doomed)
        await waitUntil(
          () =>
            (client as unknown as { slots: { master: { client?: { isReady: boolean } } }[] }).slots[
              clusterSlot(prefix + doomed)
            ]?.master.client?.isReady === false,
          5_000,
          'the client to see the master down',
        )
        const error = await failureOf(() => events.publish(doomed, 'lost'))
        expect(error).to.have.property('code', 'ERK_REDIS_UNAVAILABLE')
        await events.publish(survivor, 'after')
        await waitUntil(() => received.survivor.deliveries.length === 2, 5_000, "the other master's message")
        expect(received.survivor.events()).to.deep.equal(['before', 'after'])

        // Long enough for a durable consumer of the dead master to fail a read and go through a retry and a claim round.
        await sleep(1_500)
        let closed = false
        const closing = events.close().then(() => {
          closed = true
        })
        await waitUntil(() => closed, 15_000, 'close()')
        await closing
      })
    }
  })
})
