import { randomBytes } from 'node:crypto'
import { expect } from 'chai'
import request from 'supertest'
import { type CacheResponseOptions, cacheResponse } from '../../src/index.js'
import { binary, bodyBytes, countingApp, eventually, responseEntryKey, xCache } from '../helpers/cache-app.js'
import { connectRedis, mode, type RedisClient, uniquePrefix } from '../helpers/redis.js'
import { connectThroughSlowLinks } from '../helpers/slow-link.js'

/*
 * Issue 4: "Cache only GET (and answer HEAD from the GET entry), only the statuses in
 * `statuses` (default [200]), and only bodies up to `maxBodyBytes` (default 1 MiB)."
 */
describe(`cacheResponse: what is stored (${mode} Redis)`, () => {
  let client: RedisClient
  before(async () => {
    client = await connectRedis()
  })
  after(async () => {
    await client.close()
  })

  const cacheFor = (options: Partial<CacheResponseOptions> = {}) =>
    cacheResponse({ client, prefix: uniquePrefix('storing'), ttl: '1m', ...options })

  describe('methods', () => {
    it('GET is stored: MISS, then HIT with the same body and the handler not run again', async () => {
      const { app, runs } = countingApp(cacheFor())
      const first = await request(app).get('/items')
      const second = await request(app).get('/items')
      expect([xCache(first), xCache(second)]).to.deep.equal(['MISS', 'HIT'])
      expect(second.text).to.equal(first.text).and.equal('GET /items #1')
      expect(runs.count).to.equal(1)
    })

    it('HEAD is answered from the GET entry: no body, the same headers (Content-Length included)', async () => {
      const { app, runs } = countingApp(cacheFor(), (_req, res) => {
        res.set('X-Custom', 'kept').type('text/plain').send('a body of 22 bytes....')
      })
      const get = await request(app).get('/head')
      const head = await request(app).head('/head')
      expect(xCache(head)).to.equal('HIT')
      expect(runs.count).to.equal(1)
      expect(head.status).to.equal(200)
      expect(head.text ?? '').to.equal('')
      expect(head.headers['content-length']).to.equal('22').and.equal(get.headers['content-length'])
      expect(head.headers['content-type']).to.equal(get.headers['content-type'])
      expect(head.headers['x-custom']).to.equal('kept')
      expect(head.headers.etag).to.equal(get.headers.etag)
    })

    it('HEAD from an entry the handler wrote with res.end: the Content-Length of a GET hit', async () => {
      // Express sets no Content-Length here; Node computes it for the GET, the HEAD must say the same.
      const { app, runs } = countingApp(cacheFor(), (_req, res) => {
        res.setHeader('Content-Type', 'text/plain')
        res.end('twelve bytes')
      })
      await request(app).get('/head-end')
      const getHit = await request(app).get('/head-end')
      const headHit = await request(app).head('/head-end')
      expect([xCache(getHit), xCache(headHit)]).to.deep.equal(['HIT', 'HIT'])
      expect(runs.count).to.equal(1)
      expect(getHit.headers['content-length']).to.equal('12')
      expect(headHit.headers['content-length'], 'HEAD Content-Length').to.equal('12')
    })

    it('a HEAD miss runs the handler and is not stored: the next GET is a MISS', async () => {
      const { app, runs } = countingApp(cacheFor())
      const head = await request(app).head('/head-first')
      expect(head.status).to.equal(200)
      expect(xCache(head)).to.equal('MISS')
      const get = await request(app).get('/head-first')
      expect(xCache(get)).to.equal('MISS')
      expect(runs.count).to.equal(2)
      expect((await request(app).get('/head-first')).text).to.equal('GET /head-first #2')
    })

    for (const method of ['post', 'put', 'delete', 'patch'] as const) {
      it(`${method.toUpperCase()} passes through: the handler runs every time, no X-Cache; with invalidateOnUnsafe off the GET entry is untouched`, async () => {
        const { app, runs } = countingApp(cacheFor({ invalidateOnUnsafe: false }))
        const get = await request(app).get('/resource')
        expect(xCache(get)).to.equal('MISS')
        for (let i = 0; i < 3; i++) {
          const res = await request(app)[method]('/resource')
          expect(res.status).to.equal(200)
          expect(res.headers).not.to.have.property('x-cache')
          expect(res.text).to.equal(`${method.toUpperCase()} /resource #${i + 2}`)
        }
        const after = await request(app).get('/resource')
        expect(xCache(after)).to.equal('HIT')
        expect(after.text).to.equal('GET /resource #1')
        expect(runs.count).to.equal(4)
      })

      it(`${method.toUpperCase()} that succeeds invalidates the GET entry of its URL (RFC 9111 4.4)`, async () => {
        const { app, runs } = countingApp(cacheFor())
        expect(xCache(await request(app).get('/resource'))).to.equal('MISS')
        expect(xCache(await request(app).get('/resource'))).to.equal('HIT')
        const res = await request(app)[method]('/resource')
        expect([res.status, res.headers['x-cache']]).to.deep.equal([200, undefined])
        const after = await request(app).get('/resource')
        expect([xCache(after), after.text]).to.deep.equal(['MISS', 'GET /resource #3'])
        expect(runs.count).to.equal(3)
      })
    }
  })

  describe('statuses', () => {
    it('by default only 200 is stored: a 404, a 201 and a 500 run the handler every time', async () => {
      for (const status of [404, 201, 500]) {
        const { app, runs } = countingApp(cacheFor(), (_req, res, run) => {
          res.status(status).send(`run ${run}`)
        })
        for (let i = 1; i <= 3; i++) {
          const res = await request(app).get(`/status-${status}`)
          expect(res.status).to.equal(status)
          expect(res.text).to.equal(`run ${i}`)
          expect(xCache(res), `X-Cache of ${status}`).to.equal('MISS')
        }
        expect(runs.count).to.equal(3)
      }
    })

    it('statuses [200, 404]: a 404 is stored and replayed as a 404', async () => {
      const { app, runs } = countingApp(cacheFor({ statuses: [200, 404] }), (req, res, run) => {
        res.status(req.path === '/missing' ? 404 : 200).send(`run ${run}`)
      })
      const first = await request(app).get('/missing')
      const second = await request(app).get('/missing')
      expect([first.status, second.status]).to.deep.equal([404, 404])
      expect([xCache(first), xCache(second)]).to.deep.equal(['MISS', 'HIT'])
      expect(second.text).to.equal('run 1')
      expect((await request(app).get('/found')).status).to.equal(200)
      expect(xCache(await request(app).get('/found'))).to.equal('HIT')
      expect(runs.count).to.equal(2)
    })

    it('statuses [404]: a 200 is no longer stored', async () => {
      const { app, runs } = countingApp(cacheFor({ statuses: [404] }))
      await request(app).get('/ok')
      const second = await request(app).get('/ok')
      expect(xCache(second)).to.equal('MISS')
      expect(runs.count).to.equal(2)
    })
  })

  describe('maxBodyBytes', () => {
    it('a body of exactly maxBodyBytes is stored, one byte more is not', async () => {
      const { app, runs } = countingApp(cacheFor({ maxBodyBytes: 10 }), (req, res, run) => {
        res.send(Buffer.alloc(Number(req.query.size), run))
      })
      await request(app).get('/body?size=10')
      const atLimit = await request(app).get('/body?size=10')
      expect(xCache(atLimit)).to.equal('HIT')
      expect(runs.count).to.equal(1)

      for (let i = 0; i < 2; i++) {
        const over = await request(app).get('/body?size=11').buffer(true).parse(binary)
        expect(over.status).to.equal(200)
        expect(xCache(over)).to.equal('MISS')
        expect(bodyBytes(over).length).to.equal(11)
      }
      expect(runs.count).to.equal(3)
    })

    it('the default (1 MiB): a 1 MiB body is stored, a body over 1 MiB is not', async () => {
      const mib = 1_048_576
      const { app, runs } = countingApp(cacheFor(), (req, res) => {
        res.type('application/octet-stream').send(Buffer.alloc(Number(req.query.size), 7))
      })
      await request(app).get(`/big?size=${mib}`)
      const stored = await request(app).get(`/big?size=${mib}`).buffer(true).parse(binary)
      expect(xCache(stored)).to.equal('HIT')
      expect(bodyBytes(stored).length).to.equal(mib)
      await request(app).get(`/big?size=${mib + 1}`)
      expect(xCache(await request(app).get(`/big?size=${mib + 1}`))).to.equal('MISS')
      expect(runs.count).to.equal(3)
    })

    it('a too large body written in chunks is sent whole and not stored', async () => {
      const { app, runs } = countingApp(cacheFor({ maxBodyBytes: 8 }), (_req, res) => {
        res.setHeader('Content-Type', 'text/plain')
        res.write('12345')
        res.write('67890')
        res.end('abc')
      })
      const first = await request(app).get('/chunks')
      expect(first.text).to.equal('1234567890abc')
      const second = await request(app).get('/chunks')
      expect(second.text).to.equal('1234567890abc')
      expect(xCache(second)).to.equal('MISS')
      expect(runs.count).to.equal(2)
    })

    it('a body that takes longer than timeoutMs to reach Redis is stored: no request waits for the store', async () => {
      // 1.5 MiB through a link that carries 1 MiB/s towards Redis: about 1.5 s to store,
      // three times timeoutMs (500 ms); a lookup is a few hundred bytes and answers at once.
      const body = randomBytes(1.5 * 1_048_576)
      const slow = await connectThroughSlowLinks(1_048_576)
      try {
        const prefix = uniquePrefix('storing')
        const cache = cacheResponse({ client: slow.client, prefix, ttl: '1m', maxBodyBytes: 2 * 1_048_576 })
        const { app, runs } = countingApp(cache, (_req, res) => {
          res.type('application/octet-stream').send(body)
        })
        const miss = await request(app).get('/large').buffer(true).parse(binary)
        expect(xCache(miss)).to.equal('MISS')
        const entryKey = responseEntryKey(prefix, '/large')
        await eventually(
          async () => (await client.hKeys(entryKey)).some((field) => String(field).startsWith('t:')),
          10_000,
          'the large body stored',
        )
        const hit = await request(app).get('/large').buffer(true).parse(binary)
        expect(xCache(hit)).to.equal('HIT')
        expect(bodyBytes(hit).equals(body)).to.equal(true)
        expect(runs.count).to.equal(1)
      } finally {
        await slow.close()
      }
    })
  })
})
