import http from 'node:http'
import type { AddressInfo } from 'node:net'
import { expect } from 'chai'
import { startApp, type TestApp } from './helpers/app.js'

interface Stream {
  status: number
  headers: http.IncomingHttpHeaders
  /** The JSON body of a refusal. */
  body?: { error?: { code?: string; message?: string } }
  close(): void
}

/** Opens GET /events: resolves on the response's head (a 200 stays open until `close()`). */
function openStream(app: TestApp, headers: Record<string, string> = {}): Promise<Stream> {
  const { port } = app.server.address() as AddressInfo
  return new Promise((resolve, reject) => {
    const req = http.get(`http://127.0.0.1:${port}/events`, {
      agent: false, // a connection of its own: never one the server is closing
      headers: { Accept: 'text/event-stream', ...headers },
    })
    req.once('error', reject)
    req.once('response', (res) => {
      const stream: Stream = { status: res.statusCode ?? 0, headers: res.headers, close: () => req.destroy() }
      if (res.statusCode === 200) {
        res.on('error', () => {})
        resolve(stream)
        return
      }
      let text = ''
      res.setEncoding('utf8')
      res.on('data', (chunk: string) => {
        text += chunk
      })
      res.on('end', () => resolve({ ...stream, body: JSON.parse(text) }))
    })
  })
}

/** Opens streams until one is accepted (a closed stream's slot is freed once the server sees it close). */
async function openOnceFreed(app: TestApp, headers: Record<string, string> = {}): Promise<Stream> {
  let stream: Stream | undefined
  const deadline = Date.now() + 5_000
  while (Date.now() < deadline) {
    stream = await openStream(app, headers)
    if (stream.status === 200) return stream
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
  throw new Error(`no slot was freed within 5 s (last answer ${stream?.status})`)
}

function expectRefused(stream: Stream, status: number, code: string): void {
  expect(stream.status).to.equal(status)
  expect(stream.headers['content-type']).to.match(/^application\/json/)
  expect(stream.body?.error?.code).to.equal(code)
  expect(stream.body?.error?.message).to.be.a('string').and.not.empty
  expect(Number(stream.headers['retry-after']), 'Retry-After').to.be.at.least(1)
}

describe('GET /events: open streams capped per client IP (SSE_MAX_PER_IP) and in all (SSE_MAX_TOTAL)', () => {
  const open: Stream[] = []
  let app: TestApp | undefined
  afterEach(async () => {
    for (const stream of open.splice(0)) stream.close()
    await app?.close()
    app = undefined
  })
  /** Opens a stream and keeps it for afterEach to close. */
  const keep = async (stream: Promise<Stream>) => {
    const opened = await stream
    open.push(opened)
    return opened
  }

  it('the per-IP cap + 1st stream is 429 too_many_streams; closing one lets exactly one new one in', async () => {
    app = await startApp({ SSE_MAX_PER_IP: '3' })
    const streams = [await keep(openStream(app)), await keep(openStream(app)), await keep(openStream(app))]
    expect(streams.map((stream) => stream.status)).to.deep.equal([200, 200, 200])
    const refused = await openStream(app)
    expectRefused(refused, 429, 'too_many_streams')
    expectRefused(await openStream(app), 429, 'too_many_streams') // refusals take no slot
    streams[0]!.close()
    const again = await keep(openOnceFreed(app))
    expect(again.status).to.equal(200)
    expectRefused(await openStream(app), 429, 'too_many_streams')
  })

  it('per IP means per client IP (TRUST_PROXY=1): another client still gets a stream', async () => {
    app = await startApp({ SSE_MAX_PER_IP: '2', TRUST_PROXY: '1' })
    const from = (ip: string) => ({ 'X-Forwarded-For': ip })
    await keep(openStream(app, from('203.0.113.1')))
    await keep(openStream(app, from('203.0.113.1')))
    expectRefused(await openStream(app, from('203.0.113.1')), 429, 'too_many_streams')
    // what the client writes before the proxy's entry changes nothing
    expectRefused(await openStream(app, from('10.9.9.9, 203.0.113.1')), 429, 'too_many_streams')
    expect((await keep(openStream(app, from('203.0.113.2')))).status).to.equal(200)
  })

  it('over SSE_MAX_TOTAL, every new stream is 503 streams_unavailable; a closed one frees its slot', async () => {
    app = await startApp({ SSE_MAX_PER_IP: '10', SSE_MAX_TOTAL: '3', TRUST_PROXY: '1' })
    const from = (ip: string) => ({ 'X-Forwarded-For': ip })
    const streams: Stream[] = []
    for (const ip of ['203.0.113.1', '203.0.113.2', '203.0.113.3']) {
      const stream = await keep(openStream(app, from(ip)))
      expect(stream.status).to.equal(200)
      streams.push(stream)
    }
    expectRefused(await openStream(app, from('203.0.113.4')), 503, 'streams_unavailable')
    expectRefused(await openStream(app, from('203.0.113.1')), 503, 'streams_unavailable')
    streams[1]!.close()
    expect((await keep(openOnceFreed(app, from('203.0.113.4')))).status).to.equal(200)
    expectRefused(await openStream(app, from('203.0.113.5')), 503, 'streams_unavailable')
  })

  it('a stream the server ends frees its slot too (the client is gone)', async () => {
    app = await startApp({ SSE_MAX_PER_IP: '1' })
    const first = await keep(openStream(app))
    expect(first.status).to.equal(200)
    expectRefused(await openStream(app), 429, 'too_many_streams')
    // the server drops the connection (as it does for a client that stopped reading)
    app.server.closeAllConnections()
    expect((await keep(openOnceFreed(app))).status).to.equal(200)
  })
})
