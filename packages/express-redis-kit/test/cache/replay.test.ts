import { randomBytes } from 'node:crypto'
import type { Server } from 'node:http'
import { gunzipSync, gzipSync } from 'node:zlib'
import { expect } from 'chai'
import request from 'supertest'
import { cacheResponse } from '../../src/index.js'
import {
  binary,
  bodyBytes,
  countingApp,
  rawRequest,
  replayedHeaders,
  responseEntryKey,
  untilStored,
  xCache,
} from '../helpers/cache-app.js'
import { closeServer, listen } from '../helpers/outage.js'
import { connectRedis, mode, type RedisClient, uniquePrefix } from '../helpers/redis.js'

/*
 * Issue 4: "Bodies are stored binary-safe (Buffers, any content type, compressed or not);
 * status, headers and body come back byte-identical on a hit." Bodies are compared as the
 * bytes on the wire: supertest with a binary parser, and a raw HTTP client for gzip (which
 * supertest would inflate).
 */
describe(`cacheResponse: byte-identical replays (${mode} Redis)`, () => {
  let client: RedisClient
  let server: Server | undefined
  before(async () => {
    client = await connectRedis()
  })
  afterEach(async () => {
    await closeServer(server)
    server = undefined
  })
  after(async () => {
    await client.close()
  })

  const cacheFor = (statuses?: number[]) =>
    cacheResponse({ client, prefix: uniquePrefix('replay'), ttl: '1m', ...(statuses ? { statuses } : {}) })

  it('random bytes (every byte value, 64 KiB): the HIT body is byte-identical', async () => {
    const bytes = Buffer.concat([Buffer.from(Array.from({ length: 256 }, (_, i) => i)), randomBytes(65_536)])
    const { app, runs } = countingApp(cacheFor(), (_req, res) => {
      res.type('application/octet-stream').send(bytes)
    })
    const miss = await request(app).get('/random').buffer(true).parse(binary)
    const hit = await request(app).get('/random').buffer(true).parse(binary)
    expect([xCache(miss), xCache(hit)]).to.deep.equal(['MISS', 'HIT'])
    expect(runs.count).to.equal(1)
    expect(bodyBytes(miss).equals(bytes), 'MISS body').to.equal(true)
    expect(bodyBytes(hit).equals(bytes), 'HIT body').to.equal(true)
    expect(hit.headers['content-type']).to.equal('application/octet-stream')
    expect(hit.headers['content-length']).to.equal(String(bytes.length))
  })

  it('gzip-compressed JSON with Content-Encoding: gzip: the compressed bytes are replayed as sent', async () => {
    const json = JSON.stringify({ items: Array.from({ length: 200 }, (_, i) => ({ id: i, name: `item ${i}` })) })
    const gzipped = gzipSync(json)
    const { app, runs } = countingApp(cacheFor(), (_req, res) => {
      res.setHeader('Content-Type', 'application/json; charset=utf-8')
      res.setHeader('Content-Encoding', 'gzip')
      res.setHeader('Vary', 'Accept-Encoding')
      res.end(gzipped)
    })
    server = await listen(app)
    const headers = { 'accept-encoding': 'gzip' }
    const miss = await rawRequest(server, '/compressed', { headers })
    const hit = await rawRequest(server, '/compressed', { headers })
    expect([miss.headers['x-cache'], hit.headers['x-cache']]).to.deep.equal(['MISS', 'HIT'])
    expect(runs.count).to.equal(1)
    expect(hit.headers['content-encoding']).to.equal('gzip')
    expect(hit.body.equals(gzipped), 'HIT body is the gzip stream as sent').to.equal(true)
    expect(gunzipSync(hit.body).toString()).to.equal(json)
    // What a client that inflates sees.
    const inflated = await request(server).get('/compressed').set('Accept-Encoding', 'gzip')
    expect(xCache(inflated)).to.equal('HIT')
    expect(inflated.body).to.deep.equal(JSON.parse(json))
  })

  it('a body written with several res.write() calls (strings in utf8, latin1, hex, and Buffers) is replayed whole', async () => {
    const { app, runs } = countingApp(cacheFor(), (_req, res) => {
      res.setHeader('Content-Type', 'application/octet-stream')
      res.write('héllo ')
      res.write('caf\u00e9 ', 'latin1')
      res.write(Buffer.from([0, 255, 128]))
      res.write('deadbeef', 'hex')
      res.write(new Uint8Array([1, 2, 3]))
      res.end(' the end')
    })
    const expected = Buffer.concat([
      Buffer.from('héllo '),
      Buffer.from('caf\u00e9 ', 'latin1'),
      Buffer.from([0, 255, 128]),
      Buffer.from('deadbeef', 'hex'),
      Buffer.from([1, 2, 3]),
      Buffer.from(' the end'),
    ])
    const miss = await request(app).get('/chunks').buffer(true).parse(binary)
    const hit = await request(app).get('/chunks').buffer(true).parse(binary)
    expect([xCache(miss), xCache(hit)]).to.deep.equal(['MISS', 'HIT'])
    expect(runs.count).to.equal(1)
    expect(bodyBytes(miss).equals(expected), 'MISS body').to.equal(true)
    expect(bodyBytes(hit).equals(expected), 'HIT body').to.equal(true)
  })

  it('an empty body is stored and replayed empty', async () => {
    const { app, runs } = countingApp(cacheFor(), (_req, res) => {
      res.setHeader('X-Empty', 'yes')
      res.end()
    })
    await request(app).get('/empty')
    const hit = await request(app).get('/empty').buffer(true).parse(binary)
    expect(xCache(hit)).to.equal('HIT')
    expect(runs.count).to.equal(1)
    expect(bodyBytes(hit).length).to.equal(0)
    expect(hit.headers['x-empty']).to.equal('yes')
  })

  it('status and headers: custom and multi-value headers come back as sent, line for line', async () => {
    const { app, runs } = countingApp(cacheFor([203]), (_req, res) => {
      res.status(203)
      res.setHeader('X-Custom', 'custom value; with=params')
      res.setHeader('X-Multi', ['first', 'second', 'third'])
      res.append('Link', '</a>; rel="preload"')
      res.append('Link', '</b>; rel="preload"')
      res.setHeader('Cache-Control', 'public, max-age=60')
      res.setHeader('Content-Language', 'en')
      res.type('text/html').send('<p>hello</p>')
    })
    server = await listen(app)
    const miss = await rawRequest(server, '/headers')
    const hit = await rawRequest(server, '/headers')
    expect([miss.headers['x-cache'], hit.headers['x-cache']]).to.deep.equal(['MISS', 'HIT'])
    expect(runs.count).to.equal(1)
    expect(hit.status).to.equal(203)
    expect(hit.body.equals(miss.body)).to.equal(true)
    expect(replayedHeaders(hit)).to.deep.equal(replayedHeaders(miss))
    expect(hit.rawHeaders.filter(([name]) => name === 'x-multi').map(([, value]) => value)).to.deep.equal([
      'first',
      'second',
      'third',
    ])
    expect(hit.rawHeaders.filter(([name]) => name === 'link')).to.have.length(2)
  })

  it('headers of a chunked response: the same lines, Content-Length instead of Transfer-Encoding', async () => {
    const { app } = countingApp(cacheFor(), (_req, res) => {
      res.setHeader('Content-Type', 'text/plain; charset=utf-8')
      res.setHeader('X-Custom', 'one')
      res.write('part one, ')
      res.end('part two')
    })
    server = await listen(app)
    const miss = await rawRequest(server, '/chunked')
    const hit = await rawRequest(server, '/chunked')
    expect(miss.headers['transfer-encoding']).to.equal('chunked')
    expect(hit.headers['x-cache']).to.equal('HIT')
    expect(hit.body.toString()).to.equal('part one, part two')
    expect(hit.headers['content-length']).to.equal(String(hit.body.length))
    // The cache adds a strong ETag to an entry stored without one.
    expect(replayedHeaders(hit, ['content-length', 'etag'])).to.deep.equal(replayedHeaders(miss))
  })

  it('the entry is one Redis hash per URL holding the body as raw bytes (no base64)', async () => {
    const prefix = uniquePrefix('replay-model')
    const bytes = randomBytes(1000)
    const { app } = countingApp(cacheResponse({ client, prefix, ttl: '1m' }), (_req, res) => {
      res.type('application/octet-stream').send(bytes)
    })
    await request(app).get('/model?b=2&a=1')
    const entryKey = responseEntryKey(prefix, '/model?b=2&a=1')
    await untilStored(client, entryKey)
    expect(await client.exists(entryKey)).to.equal(1)
    expect(await client.hGet(entryKey, 'vary')).to.equal('')
    // The body is a field of its own, byte for byte; the metadata (status, headers) another.
    expect(await client.hStrLen(entryKey, 'b:')).to.equal(bytes.length)
    expect(JSON.parse(String(await client.hGet(entryKey, 'm:'))).s).to.equal(200)
    // Fresh for ttl, then kept as long again to be revalidated (Express gave it an ETag).
    const ttl = await client.pTTL(entryKey)
    expect(ttl).to.be.within(115_000, 120_000)
  })
})
