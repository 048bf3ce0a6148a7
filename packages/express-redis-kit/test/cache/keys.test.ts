import { expect } from 'chai'
import request from 'supertest'
import { type CacheResponseOptions, cacheResponse } from '../../src/index.js'
import { countingApp, eventually, xCache } from '../helpers/cache-app.js'
import { connectRedis, mode, type RedisClient, uniquePrefix } from '../helpers/redis.js'

/*
 * Issue 4: "Key on method, path and query (query parameters in a canonical order), plus the
 * request headers named by the response's `Vary`; `Vary: *` is never cached. A `key(req)`
 * option replaces the default."
 */
describe(`cacheResponse: keys (${mode} Redis)`, () => {
  let client: RedisClient
  before(async () => {
    client = await connectRedis()
  })
  after(async () => {
    await client.close()
  })

  const cacheFor = (options: Partial<CacheResponseOptions> = {}) =>
    cacheResponse({ client, prefix: uniquePrefix('keys'), ttl: '1m', ...options })

  describe('default key: path and query', () => {
    it('the same query in another order is the same entry (?a=1&b=2 == ?b=2&a=1)', async () => {
      const { app, runs } = countingApp(cacheFor())
      const first = await request(app).get('/list?a=1&b=2')
      const second = await request(app).get('/list?b=2&a=1')
      expect([xCache(first), xCache(second)]).to.deep.equal(['MISS', 'HIT'])
      expect(second.text).to.equal('GET /list?a=1&b=2 #1')
      expect(runs.count).to.equal(1)
    })

    it('a different query, a different path or no query: a different entry each', async () => {
      const { app, runs } = countingApp(cacheFor())
      const urls = ['/list?a=1', '/list?a=2', '/list?a=1&b=', '/list', '/other?a=1', '/list/?a=1']
      for (const url of urls) {
        const res = await request(app).get(url)
        expect(xCache(res), url).to.equal('MISS')
      }
      expect(runs.count).to.equal(urls.length)
      for (const [index, url] of urls.entries()) {
        const res = await request(app).get(url)
        expect(xCache(res), url).to.equal('HIT')
        expect(res.text).to.equal(`GET ${url} #${index + 1}`)
      }
      expect(runs.count).to.equal(urls.length)
    })
  })

  describe('default key: what the handler sees of the URL', () => {
    it('the Host is part of the key (port included): two hosts never share an entry', async () => {
      const { app, runs } = countingApp(cacheFor(), (req, res, run) => {
        res.send(`${req.host} #${run}`)
      })
      const answers = []
      for (const host of ['a.example', 'b.example', 'a.example:8080', 'a.example']) {
        const res = await request(app).get('/links').set('Host', host)
        answers.push([xCache(res), res.text])
      }
      expect(answers).to.deep.equal([
        ['MISS', 'a.example #1'],
        ['MISS', 'b.example #2'],
        ['MISS', 'a.example:8080 #3'],
        ['HIT', 'a.example #1'],
      ])
      expect(runs.count).to.equal(3)
    })

    it('query names are sorted as decoded and up to their first [: qs-style a[x]=1&a[]=2 keep their order', async () => {
      const { app } = countingApp(cacheFor())
      for (const [first, second, shared] of [
        ['/q?a[]=1&a[]=2', '/q?a[]=2&a[]=1', false],
        ['/q?a[x]=1&a=2', '/q?a=2&a[x]=1', false],
        ['/q?b=1&a%5B%5D=2', '/q?a%5B%5D=2&b=1', true],
        ['/q?x+y=1&z=2', '/q?z=2&x+y=1', true],
        ['/q?bad=%E0%A4%A&c=1', '/q?c=1&bad=%E0%A4%A', true],
      ] as const) {
        await request(app).get(first)
        const res = await request(app).get(second)
        expect(xCache(res), `${first} then ${second}`).to.equal(shared ? 'HIT' : 'MISS')
      }
    })

    it('beyond 1000 parameters (which parsers cut) the query is kept in the order it came', async () => {
      const { app } = countingApp(cacheFor())
      const many = Array.from({ length: 1001 }, (_, i) => `p${i}=${i}`)
      await request(app).get(`/many?${many.join('&')}`)
      const reordered = await request(app).get(`/many?${[...many].reverse().join('&')}`)
      expect(xCache(reordered)).to.equal('MISS')
      const same = await request(app).get(`/many?${many.join('&')}`)
      expect(xCache(same)).to.equal('HIT')
    })

    it('a key(req) that returns something other than a string: the error goes to next(err)', async () => {
      const { app, runs } = countingApp(cacheFor({ key: () => 42 as unknown as string }))
      const res = await request(app).get('/number')
      expect(res.status).to.equal(500)
      expect(runs.count).to.equal(0)
    })
  })

  describe('key option', () => {
    it('key(req) replaces the default: requests it maps to the same string share an entry', async () => {
      const { app, runs } = countingApp(cacheFor({ key: (req) => `page:${req.path}` }))
      const first = await request(app).get('/page?utm_source=a')
      const second = await request(app).get('/page?utm_source=b')
      const other = await request(app).get('/another?utm_source=a')
      expect([xCache(first), xCache(second), xCache(other)]).to.deep.equal(['MISS', 'HIT', 'MISS'])
      expect(second.text).to.equal('GET /page?utm_source=a #1')
      expect(runs.count).to.equal(2)
    })

    it('key(req) can split what the default key shares (e.g. by a request header)', async () => {
      const { app, runs } = countingApp(cacheFor({ key: (req) => `${req.path}:${req.headers['x-tenant']}` }))
      const a = await request(app).get('/t').set('X-Tenant', 'a')
      const b = await request(app).get('/t').set('X-Tenant', 'b')
      const a2 = await request(app).get('/t').set('X-Tenant', 'a')
      expect([xCache(a), xCache(b), xCache(a2)]).to.deep.equal(['MISS', 'MISS', 'HIT'])
      expect(a2.text).to.equal(a.text)
      expect(runs.count).to.equal(2)
    })

    it('a key(req) that throws: the error goes to next(err), nothing is stored', async () => {
      const { app, runs } = countingApp(
        cacheFor({
          key: () => {
            throw new Error('no key for this request')
          },
        }),
      )
      const res = await request(app).get('/throws')
      expect(res.status).to.equal(500)
      expect(runs.count).to.equal(0)
    })
  })

  describe('Vary', () => {
    const languageApp = () =>
      countingApp(cacheFor(), (req, res, run) => {
        res.vary('Accept-Language')
        res.send(`${req.headers['accept-language'] ?? 'none'} #${run}`)
      })

    it('Vary: Accept-Language: en and fr get their own bodies, each a HIT on repeat', async () => {
      const { app, runs } = languageApp()
      const en = await request(app).get('/greeting').set('Accept-Language', 'en')
      const fr = await request(app).get('/greeting').set('Accept-Language', 'fr')
      expect([xCache(en), xCache(fr)]).to.deep.equal(['MISS', 'MISS'])
      expect([en.text, fr.text]).to.deep.equal(['en #1', 'fr #2'])
      for (let i = 0; i < 2; i++) {
        const enAgain = await request(app).get('/greeting').set('Accept-Language', 'en')
        const frAgain = await request(app).get('/greeting').set('Accept-Language', 'fr')
        expect([xCache(enAgain), xCache(frAgain)]).to.deep.equal(['HIT', 'HIT'])
        expect([enAgain.text, frAgain.text]).to.deep.equal(['en #1', 'fr #2'])
      }
      const none = await request(app).get('/greeting')
      expect(xCache(none)).to.equal('MISS')
      expect(none.text).to.equal('none #3')
      expect(runs.count).to.equal(3)
    })

    it('another instance (another app, another connection) learns the Vary from Redis and serves the right variant', async () => {
      const prefix = uniquePrefix('keys-vary')
      const other = await connectRedis()
      try {
        const respond: Parameters<typeof countingApp>[1] = (req, res, run) => {
          res.vary('Accept-Language')
          res.send(`${req.headers['accept-language']} #${run}`)
        }
        const one = countingApp(cacheResponse({ client, prefix, ttl: '1m' }), respond)
        const two = countingApp(cacheResponse({ client: other, prefix, ttl: '1m' }), respond)
        await request(one.app).get('/shared').set('Accept-Language', 'en')
        await request(one.app).get('/shared').set('Accept-Language', 'fr')
        const fr = await request(two.app).get('/shared').set('Accept-Language', 'fr')
        const en = await request(two.app).get('/shared').set('Accept-Language', 'en')
        expect([xCache(fr), xCache(en)]).to.deep.equal(['HIT', 'HIT'])
        expect([fr.text, en.text]).to.deep.equal(['fr #2', 'en #1'])
        const de = await request(two.app).get('/shared').set('Accept-Language', 'de')
        expect(xCache(de)).to.equal('MISS')
        expect(two.runs.count).to.equal(1)
        // Before the connection closes: the new variant is stored too.
        await eventually(
          async () => xCache(await request(two.app).get('/shared').set('Accept-Language', 'de')) === 'HIT',
        )
      } finally {
        await other.close()
      }
    })

    it('Vary naming several headers: a variant per combination of their values', async () => {
      const { app, runs } = countingApp(cacheFor(), (req, res, run) => {
        res.setHeader('Vary', 'Accept-Language, X-Theme')
        res.send(`${req.headers['accept-language']}/${req.headers['x-theme']} #${run}`)
      })
      const combos = [
        ['en', 'dark'],
        ['en', 'light'],
        ['fr', 'dark'],
      ] as const
      for (const [language, theme] of combos) {
        await request(app).get('/v').set('Accept-Language', language).set('X-Theme', theme)
      }
      for (const [index, [language, theme]] of combos.entries()) {
        const res = await request(app).get('/v').set('Accept-Language', language).set('X-Theme', theme)
        expect(xCache(res)).to.equal('HIT')
        expect(res.text).to.equal(`${language}/${theme} #${index + 1}`)
      }
      expect(runs.count).to.equal(3)
    })

    it('Vary: * is never cached', async () => {
      const { app, runs } = countingApp(cacheFor(), (_req, res, run) => {
        res.setHeader('Vary', '*')
        res.send(`run ${run}`)
      })
      for (let i = 1; i <= 3; i++) {
        const res = await request(app).get('/star')
        expect(xCache(res)).to.equal('MISS')
        expect(res.text).to.equal(`run ${i}`)
      }
      expect(runs.count).to.equal(3)
    })

    it('Vary listing * among other headers is never cached either', async () => {
      const { app, runs } = countingApp(cacheFor(), (_req, res) => {
        res.setHeader('Vary', 'Accept-Language, *')
        res.send('x')
      })
      await request(app).get('/star-list')
      expect(xCache(await request(app).get('/star-list'))).to.equal('MISS')
      expect(runs.count).to.equal(2)
    })
  })
})
