import type { Server } from 'node:http'
import querystring from 'node:querystring'
import { expect } from 'chai'
import request from 'supertest'
import { type CacheResponseOptions, cacheResponse } from '../../src/index.js'
import { countingApp, eventually, rawRequest, xCache } from '../helpers/cache-app.js'
import { closeServer, listen } from '../helpers/outage.js'
import { connectRedis, mode, type RedisClient, uniquePrefix } from '../helpers/redis.js'

/*
 * What a response is keyed on: protocol, host, the path and the query exactly as sent (two
 * queries share an entry only if they are the same string, whatever the app's query parser),
 * plus the request headers named by the response's `Vary`; `Vary: *` is never cached. A
 * `key(req)` option replaces the default.
 */
describe(`cacheResponse: keys (${mode} Redis)`, () => {
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

  const cacheFor = (options: Partial<CacheResponseOptions> = {}) =>
    cacheResponse({ client, prefix: uniquePrefix('keys'), ttl: '1m', ...options })

  describe('default key: path and query', () => {
    it('the query is keyed as sent: ?a=1&b=2 and ?b=2&a=1 are two entries, each answered by the handler', async () => {
      const { app, runs } = countingApp(cacheFor())
      const first = await request(app).get('/list?a=1&b=2')
      const second = await request(app).get('/list?b=2&a=1')
      expect([xCache(first), xCache(second)]).to.deep.equal(['MISS', 'MISS'])
      expect(second.text).to.equal('GET /list?b=2&a=1 #2')
      const again = await request(app).get('/list?b=2&a=1')
      expect([xCache(again), again.text]).to.deep.equal(['HIT', 'GET /list?b=2&a=1 #2'])
      expect(runs.count).to.equal(2)
    })

    it('a different query, a different path or no query: a different entry each', async () => {
      const { app, runs } = countingApp(cacheFor())
      const urls = [
        '/list?a=1',
        '/list?a=2',
        '/list?a=1&b=',
        '/list?a=1&',
        '/list?&a=1',
        '/list?a=%31',
        '/list?A=1',
        '/list',
        '/other?a=1',
        '/list/?a=1',
      ]
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

    it('an empty query (/list?) is not the absence of one (/list)', async () => {
      const { app } = countingApp(cacheFor())
      server = await listen(app)
      const bare = await rawRequest(server, '/list')
      const empty = await rawRequest(server, '/list?')
      expect([bare.headers['x-cache'], empty.headers['x-cache']]).to.deep.equal(['MISS', 'MISS'])
      expect(empty.body.toString()).to.equal('GET /list? #2')
    })
  })

  describe("default key: two queries the app's query parser reads differently never share an entry", () => {
    /** A custom query parser: node:querystring keeping the first 100 pairs (empty ones count). */
    const firstHundredPairs = (query: string) => querystring.parse(query, '&', '=', { maxKeys: 100 })
    const parsers = { simple: 'simple', extended: 'extended', 'a custom function': firstHundredPairs }
    type Parser = keyof typeof parsers
    const all: Parser[] = ['simple', 'extended', 'a custom function']
    const pairs = Array.from({ length: 150 }, (_, i) => `p${i}=${i}`)
    const cases: { what: string; stored: string; asked: string; parsers: Parser[] }[] = [
      {
        what: "1,000 empty pairs push the filter past the parser's limit; the filtered page is asked next",
        stored: `/products?page=1${'&'.repeat(1000)}category=books`,
        asked: '/products?category=books&page=1',
        parsers: all,
      },
      {
        what: 'the filtered page is stored; the query whose filter is past the limit is asked next',
        stored: '/products?category=books&page=1',
        asked: `/products?page=1${'&'.repeat(1000)}category=books`,
        parsers: all,
      },
      {
        what: 'the values of a repeated name in another order',
        stored: '/products?sort=price&sort=name',
        asked: '/products?sort=name&sort=price',
        parsers: all,
      },
      {
        what: 'a[] and a in another order (qs makes one array of them)',
        stored: '/products?a[]=1&a=2',
        asked: '/products?a=2&a[]=1',
        parsers: ['extended'],
      },
      {
        what: '[a] and a in another order (qs reads [a] as a)',
        stored: '/products?[a]=1&a=2',
        asked: '/products?a=2&[a]=1',
        parsers: ['extended'],
      },
      {
        what: 'two names node:querystring decodes alike (%FF and %FE) in another order',
        stored: '/products?%FF=1&%FE=2',
        asked: '/products?%FE=2&%FF=1',
        parsers: ['simple', 'a custom function'],
      },
      {
        what: "150 parameters in another order, past the custom parser's limit of 100",
        stored: `/products?${pairs.join('&')}`,
        asked: `/products?${pairs.toReversed().join('&')}`,
        parsers: ['a custom function'],
      },
    ]

    for (const [name, setting] of Object.entries(parsers) as [Parser, unknown][]) {
      for (const { what, stored, asked } of cases.filter((c) => c.parsers.includes(name))) {
        it(`query parser ${name}: ${what}`, async () => {
          const { app } = countingApp(cacheFor(), (req, res, run) => {
            res.json({ query: req.query, run })
          })
          app.set('query parser', setting)
          const parse = app.get('query parser fn') as (query: string) => unknown
          /** What the handler answers for `url`, as JSON: the app's own parse of its query. */
          const parsed = (url: string) => JSON.parse(JSON.stringify(parse(url.slice(url.indexOf('?') + 1))))
          expect(parsed(stored), 'the parser reads the two queries differently').not.to.deep.equal(parsed(asked))

          const first = await request(app).get(stored)
          expect([xCache(first), first.body]).to.deep.equal(['MISS', { query: parsed(stored), run: 1 }])
          const second = await request(app).get(asked)
          expect([xCache(second), second.body]).to.deep.equal(['MISS', { query: parsed(asked), run: 2 }])
          const again = await request(app).get(asked)
          expect([xCache(again), again.body]).to.deep.equal(['HIT', { query: parsed(asked), run: 2 }])
        })
      }
    }
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
