import { expect } from 'chai'
import { createNotifier, type Notifier } from '../../src/index.js'
import { monitorCommands } from '../helpers/monitor.js'
import { recordingLogger, waitUntil } from '../helpers/outage.js'
import { mode, type RedisClient, uniquePrefix } from '../helpers/redis.js'
import { type DisposableStore, startDisposableStore } from '../helpers/session-redis.js'

/** The stream commands a subscription loop sends (a durable one claims as well as reads). */
const STREAM_READS = new Set(['xread', 'xreadgroup', 'xautoclaim', 'xinfo', 'xrange', 'xrevrange', 'xack', 'xpending'])

/*
 * A durable or fan-out subscription whose reads keep failing (here: the channel's key holds a
 * string, so Redis answers WRONGTYPE to every read) pauses longer after each failure in a row:
 * 100 ms at first, doubled each time, up to 5 s, half of each pause random. Before, it retried
 * at least once a second forever (fan-out: 100 ms to 1 s apart; durable: every second).
 */
describe(`notifier: a read loop that keeps failing backs off (${mode} Redis, a disposable one)`, function () {
  this.timeout(60_000)
  let store: DisposableStore
  let client: RedisClient
  const notifiers: Notifier[] = []
  before(async () => {
    store = await startDisposableStore()
    client = await store.connect()
  })
  afterEach(async () => {
    await Promise.all(notifiers.splice(0).map((notifier) => notifier.close()))
  })
  after(async () => {
    await client?.close()
    await store?.stop()
  })

  for (const notifierMode of ['fanout', 'durable'] as const) {
    it(`${notifierMode}: WRONGTYPE on every read: the reads come further and further apart, past a second, then seconds; close() cuts the pause short`, async () => {
      const prefix = uniquePrefix(`retry-${notifierMode}`)
      const key = `${prefix}orders`
      const logger = recordingLogger()
      const events = createNotifier({ client, prefix, mode: notifierMode, logger, claimIdle: '1s' })
      notifiers.push(events)
      const monitor = await monitorCommands(store.addresses)
      try {
        if (notifierMode === 'fanout') {
          await client.set(key, 'not a stream')
          await events.subscribe('orders', () => {}, { from: '0' })
        } else {
          await events.subscribe('orders', () => {}) // creates the stream and the group
          await client.del(key)
          await client.set(key, 'not a stream')
        }
        const replaced = () => monitor.commands.find((command) => command.args[0]?.toLowerCase() === 'set')?.at ?? 0
        // Each attempt of the loop: the stream commands on the key, those within 20 ms of the one
        // before counted with it (a claim round's XINFO STREAM and XINFO GROUPS go out together).
        const attempts = () => {
          const times: number[] = []
          let last = 0
          for (const { args, at } of monitor.commands) {
            if (at <= replaced() || !STREAM_READS.has(args[0]?.toLowerCase() ?? '') || !args.includes(key)) continue
            if (at - last > 20) times.push(at)
            last = at
          }
          return times
        }
        await waitUntil(() => attempts().length >= 8, 30_000, '8 attempts to read the replaced key')
        const times = attempts().slice(0, 8)
        const gaps = times.slice(1).map((at, i) => Math.round(at - (times[i] as number)))
        // Lower bounds only: a loaded machine makes every gap longer, never shorter. The 6th and
        // 7th pauses are at least 1.6 s and 2.5 s (half of 3.2 s and of 5 s); before, at most 1 s.
        expect(gaps[5], `gaps between reads (ms): ${gaps.join(', ')}`).to.be.at.least(1_500)
        expect(gaps[6], `gaps between reads (ms): ${gaps.join(', ')}`).to.be.at.least(2_400)
        for (let i = 2; i < gaps.length; i++) {
          const pause = Math.min(5_000, 100 * 2 ** i) / 2
          expect(gaps[i], `gap ${i + 1} of ${gaps.join(', ')} ms`).to.be.at.least(pause - 20)
        }
        expect(logger.text(), 'the failure is logged').to.include('WRONGTYPE')
        // the loop now waits seconds before its next read: close() does not wait for it
        const closing = Date.now()
        await events.close()
        expect(Date.now() - closing, 'close() during a pause of 2.5 s or more (ms)').to.be.below(2_000)
      } finally {
        monitor.stop()
      }
    })
  }
})
