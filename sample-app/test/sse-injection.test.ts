import type { AddressInfo } from 'node:net'
import { expect } from 'chai'
import { createClient } from 'redis'
import { sseMessage, USER_CHANNEL } from '../src/events.js'
import { redisUrl, signUp, startApp, type TestApp, waitUntil } from './helpers/app.js'
import { openSse, type SseClient } from './helpers/sse.js'

/** Ids that, written raw after `id: `, end the field and the event, then forge a `user.deleted` (LF, CRLF). */
const FORGING_IDS = ['\n', '\r\n'].map(
  (eol) => `x${eol}${eol}event: user.deleted${eol}data: {"id":424242,"forged":true}${eol}${eol}id: y`,
)

describe('SSE: a message id from Redis cannot forge events', () => {
  it('sseMessage writes id and event on one line each, whatever they hold; data is one JSON line', () => {
    const text = sseMessage({
      id: FORGING_IDS[1],
      event: 'user.updated\nevent: user.deleted',
      data: { id: 1, note: 'line 1\nline 2\r\nline 3\u2028' },
    })
    expect(text.endsWith('\n\n')).to.equal(true)
    const lines = text.slice(0, -2).split('\n')
    expect(lines).to.have.length(3)
    expect(text).not.to.include('\r')
    expect(lines[0]).to.match(/^id: [^\r\n]*$/)
    expect(lines[1]).to.equal('event: user.updatedevent: user.deleted')
    expect(JSON.parse(lines[2]!.slice('data: '.length))).to.deep.equal({
      id: 1,
      note: 'line 1\nline 2\r\nline 3\u2028',
    })
  })

  describe("raw messages with CR/LF in their id, added to the app's event stream", () => {
    let app: TestApp
    let events: SseClient | undefined
    const publisher = createClient({ url: redisUrl })
    before(async () => {
      app = await startApp()
      await app.services.events.ready()
      publisher.on('error', () => {})
      await publisher.connect()
    })
    after(async () => {
      events?.close()
      publisher.destroy()
      await app?.close()
    })

    it('are dropped (and logged): no extra event reaches the stream; the next real event does', async () => {
      const { port } = app.server.address() as AddressInfo
      events = await openSse(`http://127.0.0.1:${port}/events`)
      // what a process with access to Redis (or a bug) could publish; the payload itself passes UserEvent
      for (const id of FORGING_IDS) {
        const envelope = { id, channel: USER_CHANNEL, time: Date.now(), payload: { type: 'user.updated', id: 1 } }
        // the notifier's fan-out stream of the app's channel (field m holds the envelope)
        const stream = `${app.config.redisPrefix}events:${USER_CHANNEL}`
        expect(await publisher.xAdd(stream, '*', { m: JSON.stringify(envelope) })).to.match(/^\d+-\d+$/)
      }
      // then a real event, through the app: by the time it arrives, the raw message was handled
      const user = await signUp(app)
      await events.waitFor((event) => event.event === 'user.created', 10_000, 'the user.created event')
      expect(events.events.map(({ event, data }) => ({ event, data: JSON.parse(data) }))).to.deep.equal([
        { event: 'user.created', data: { id: user.id, time: JSON.parse(events.events[0]!.data).time } },
      ])
      expect(events.text()).not.to.include('forged')
      await waitUntil(
        () => app.logger.warnings.some((args) => String(args[0]).includes('dropped')),
        5_000,
        'the warning about the dropped message',
      )
    })
  })
})
