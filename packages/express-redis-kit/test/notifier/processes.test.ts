import { once } from 'node:events'
import { setTimeout as sleep } from 'node:timers/promises'
import { expect } from 'chai'
import { createNotifier, type Notifier } from '../../src/index.js'
import {
  type NotifierWorker,
  type NotifierWorkerConfig,
  startNotifierWorkers,
  stopWorkers,
  type WorkerReceipt,
} from '../helpers/notifier-workers.js'
import { waitUntil } from '../helpers/outage.js'
import { connectRedis, mode, type RedisClient, uniquePrefix } from '../helpers/redis.js'

/*
 * Several processes, each with its own Redis connection and notifier (notifier-worker.ts),
 * and the test process publishing: pub/sub reaches every process; a durable group shares
 * the messages between its processes and loses none, even when one of them is killed
 * while it holds messages it has not acknowledged.
 */
const CLAIM_IDLE = 500

describe(`notifier across processes (${mode} Redis)`, function () {
  this.timeout(60_000)
  let client: RedisClient
  let publisher: Notifier | undefined
  const workers: NotifierWorker[] = []

  const start = async (count: number, config: NotifierWorkerConfig): Promise<NotifierWorker[]> => {
    const started = await startNotifierWorkers(count, config)
    workers.push(...started)
    return started
  }
  const publish = async (prefix: string, notifierMode: 'pubsub' | 'durable', payloads: unknown[]) => {
    publisher = createNotifier({ client, prefix, mode: notifierMode })
    const ids: string[] = []
    for (const payload of payloads) ids.push(await publisher.publish('jobs', payload))
    return ids
  }
  const range = (count: number) => Array.from({ length: count }, (_, i) => i)
  const payloadsOf = (receipts: WorkerReceipt[]) => receipts.map((receipt) => receipt.payload as number)

  before(async () => {
    client = await connectRedis()
  })
  afterEach(async () => {
    await stopWorkers(workers.splice(0))
    await publisher?.close()
    publisher = undefined
  })
  after(async () => {
    await client.close()
  })

  it('pub/sub broadcast: each of 3 worker processes receives every one of 20 messages, in order', async () => {
    const prefix = uniquePrefix('processes-broadcast')
    const subscribers = await start(3, { mode: 'pubsub', prefix, channel: 'jobs' })
    const ids = await publish(prefix, 'pubsub', range(20))
    await waitUntil(() => subscribers.every((worker) => worker.received.length >= 20), 15_000, 'every message')
    await sleep(100)
    for (const worker of subscribers) {
      expect(payloadsOf(worker.received), `worker ${worker.child.pid}`).to.deep.equal(range(20))
      expect(worker.received.map((receipt) => receipt.id)).to.deep.equal(ids)
    }
  })

  it('durable: 3 workers in one group share 60 messages, none lost, none handled twice', async () => {
    const prefix = uniquePrefix('processes-share')
    const group = await start(3, {
      mode: 'durable',
      prefix,
      channel: 'jobs',
      group: 'workers',
      claimIdle: CLAIM_IDLE,
      delayMs: 5,
    })
    await publish(prefix, 'durable', range(60))
    const all = () => group.flatMap((worker) => payloadsOf(worker.received))
    await waitUntil(() => new Set(all()).size === 60, 20_000, 'every message handled')
    await sleep(CLAIM_IDLE * 2)
    expect(all().sort((a, b) => a - b)).to.deep.equal(range(60))
    const busy = group.filter((worker) => worker.received.length > 0)
    expect(busy.length, 'workers that handled messages').to.be.at.least(2)
    await waitFor(async () => Number((await client.xPending(`${prefix}jobs`, 'workers')).pending) === 0)
  })

  it('durable: a worker killed (SIGKILL) while it holds unacknowledged messages: the others get them after claimIdle', async () => {
    const prefix = uniquePrefix('processes-killed')
    const config: NotifierWorkerConfig = {
      mode: 'durable',
      prefix,
      channel: 'jobs',
      group: 'workers',
      claimIdle: CLAIM_IDLE,
      batchSize: 5,
    }
    // Alone in the group, it reads the first batch and hangs in its handler on the first message.
    const [stuck] = await start(1, { ...config, behaviour: 'hang' })
    await publish(prefix, 'durable', range(20))
    await waitUntil(() => (stuck?.received.length ?? 0) >= 1, 10_000, 'the stuck worker to take a message')
    const held = await client.xPendingRange(`${prefix}jobs`, 'workers', '-', '+', 100)
    expect(held.length, 'messages the stuck worker holds').to.be.at.least(1)

    const survivors = await start(2, config)
    const exited = once(stuck!.child, 'exit')
    stuck!.child.kill('SIGKILL')
    await exited

    const all = () => survivors.flatMap((worker) => worker.received)
    await waitUntil(() => new Set(payloadsOf(all())).size === 20, 20_000, 'every message handled by the survivors')
    expect([...new Set(payloadsOf(all()))].sort((a, b) => a - b)).to.deep.equal(range(20))
    const taken = all().find((receipt) => receipt.payload === stuck!.received[0]?.payload)
    expect(taken?.deliveries, 'deliveries of the message the killed worker was handling').to.be.at.least(2)
    await waitFor(async () => Number((await client.xPending(`${prefix}jobs`, 'workers')).pending) === 0)
  })

  it('durable: a worker that exits inside its handler (process.exit): another worker of the group gets the message', async () => {
    const prefix = uniquePrefix('processes-exit')
    const config: NotifierWorkerConfig = {
      mode: 'durable',
      prefix,
      channel: 'jobs',
      group: 'workers',
      claimIdle: CLAIM_IDLE,
    }
    const [crashing] = await start(1, { ...config, behaviour: 'exit' })
    const exited = once(crashing!.child, 'exit')
    const [id] = await publish(prefix, 'durable', ['crash here'])
    await exited
    expect(crashing!.received.map((receipt) => receipt.payload)).to.deep.equal(['crash here'])

    const [healthy] = await start(1, config)
    await waitUntil(() => (healthy?.received.length ?? 0) >= 1, 10_000, 'the message to be taken over')
    expect(healthy!.received[0]).to.deep.include({ payload: 'crash here', id, deliveries: 2 })
    await waitFor(async () => Number((await client.xPending(`${prefix}jobs`, 'workers')).pending) === 0)
  })

  /** Polls an async condition (errors count as "not yet") for up to 10 s. */
  async function waitFor(condition: () => Promise<boolean>): Promise<void> {
    const deadline = Date.now() + 10_000
    while (!(await condition().catch(() => false))) {
      if (Date.now() > deadline) throw new Error('timed out waiting for the acknowledgements')
      await sleep(50)
    }
  }
})
