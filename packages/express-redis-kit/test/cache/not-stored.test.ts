import { setTimeout as sleep } from 'node:timers/promises'
import { expect } from 'chai'
import type { Express, RequestHandler } from 'express'
import request from 'supertest'
import { type CacheResponseOptions, cacheResponse, session } from '../../src/index.js'
import { countingApp, type Runs, xCache } from '../helpers/cache-app.js'
import { connectRedis, mode, type RedisClient, uniquePrefix } from '../helpers/redis.js'
import { dataOf, SessionClient, sessionApp } from '../helpers/session-app.js'

/*
 * Issue 4: "Never store what a shared cache must not (RFC 9111): responses with
 * `Set-Cookie`, with `Cache-Control` `private`, `no-store` or `no-cache`; requests with
 * `Authorization`. A response built for one signed-in user is never served to another: by
 * default a request that carries a session bound to a user (the session middleware's
 * `userKey`) bypasses the cache; an explicit option opts a route into per-user keys instead."
 */
describe(`cacheResponse: what is never stored (${mode} Redis)`, () => {
  let client: RedisClient
  before(async () => {
    client = await connectRedis()
  })
  after(async () => {
    await client.close()
  })

  const cacheFor = (options: Partial<CacheResponseOptions> = {}) =>
    cacheResponse({ client, prefix: uniquePrefix('never'), ttl: '1m', ...options })

  describe('Set-Cookie', () => {
    it('a response with Set-Cookie is never replayed: every request runs the handler and gets its own cookie', async () => {
      const { app, runs } = countingApp(cacheFor(), (_req, res, run) => {
        res.cookie('visitor', `v${run}`)
        res.send(`run ${run}`)
      })
      for (let i = 1; i <= 4; i++) {
        const res = await request(app).get('/cookie')
        expect(xCache(res)).to.equal('MISS')
        expect(res.text).to.equal(`run ${i}`)
        expect(res.headers['set-cookie']).to.deep.equal([`visitor=v${i}; Path=/`])
      }
      expect(runs.count).to.equal(4)
    })

    it('no Set-Cookie ever appears on a HIT (the route stops setting one: only then is it stored)', async () => {
      // lockTimeout bounds how long the route is known as "not cacheable" after a response with a cookie.
      const { app, runs } = countingApp(cacheFor({ lockTimeout: '300ms' }), (_req, res, run) => {
        if (run <= 2) res.cookie('visitor', `v${run}`)
        res.send(`run ${run}`)
      })
      const responses = [await request(app).get('/sometimes'), await request(app).get('/sometimes')]
      await sleep(400)
      for (let i = 0; i < 3; i++) responses.push(await request(app).get('/sometimes'))
      expect(responses.map(xCache)).to.deep.equal(['MISS', 'MISS', 'MISS', 'HIT', 'HIT'])
      for (const res of responses.filter((each) => xCache(each) === 'HIT')) {
        expect(res.headers).not.to.have.property('set-cookie')
        expect(res.text).to.equal('run 3')
      }
      expect(runs.count).to.equal(3)
    })
  })

  describe('Cache-Control', () => {
    const cases = ['private', 'no-store', 'no-cache', 'public, no-cache', 'private="x-user", max-age=60', 'NO-STORE']
    for (const value of cases) {
      it(`Cache-Control: ${value} is never stored`, async () => {
        const { app, runs } = countingApp(cacheFor(), (_req, res, run) => {
          res.setHeader('Cache-Control', value)
          // No validator (res.end sets no ETag): a no-cache response that cannot be
          // revalidated is not stored; one that can is (see http-caching.test.ts).
          res.end(`run ${run}`)
        })
        for (let i = 1; i <= 3; i++) {
          const res = await request(app).get('/cc')
          expect(xCache(res)).to.equal('MISS')
          expect(res.text).to.equal(`run ${i}`)
        }
        expect(runs.count).to.equal(3)
      })
    }

    it('Cache-Control: public, max-age=60 is stored', async () => {
      const { app, runs } = countingApp(cacheFor(), (_req, res) => {
        res.setHeader('Cache-Control', 'public, max-age=60')
        res.send('shared')
      })
      await request(app).get('/public')
      const hit = await request(app).get('/public')
      expect(xCache(hit)).to.equal('HIT')
      expect(hit.headers['cache-control']).to.equal('public, max-age=60')
      expect(runs.count).to.equal(1)
    })
  })

  describe('Authorization', () => {
    it('a request with Authorization bypasses the cache: X-Cache BYPASS, the handler runs every time', async () => {
      const { app, runs } = countingApp(cacheFor(), (req, res, run) => {
        res.send(`${req.headers.authorization ?? 'anonymous'} #${run}`)
      })
      for (let i = 1; i <= 3; i++) {
        const res = await request(app).get('/private').set('Authorization', 'Bearer alice')
        expect(xCache(res)).to.equal('BYPASS')
        expect(res.text).to.equal(`Bearer alice #${i}`)
      }
      // Nothing was stored for the URL: an anonymous request is a MISS.
      const anonymous = await request(app).get('/private')
      expect(xCache(anonymous)).to.equal('MISS')
      expect(anonymous.text).to.equal('anonymous #4')
      expect(runs.count).to.equal(4)
    })

    it('a stored entry is never served to a request with Authorization', async () => {
      const { app, runs } = countingApp(cacheFor(), (req, res, run) => {
        res.send(`${req.headers.authorization ?? 'anonymous'} #${run}`)
      })
      await request(app).get('/mixed')
      expect(xCache(await request(app).get('/mixed'))).to.equal('HIT')
      const authorized = await request(app).get('/mixed').set('Authorization', 'Basic Ym9iOnNlY3JldA==')
      expect(xCache(authorized)).to.equal('BYPASS')
      expect(authorized.text).to.equal('Basic Ym9iOnNlY3JldA== #2')
      expect(runs.count).to.equal(2)
    })
  })

  describe('sessions bound to a user (session({ userKey: "userId" }) mounted before the cache)', () => {
    /** cookie-parser, session, then GET /page through `cache`, answering who asked. */
    const pageApp = (cache: RequestHandler): { app: Express; runs: Runs } => {
      const runs: Runs = { count: 0 }
      const sessions = session({ client, prefix: uniquePrefix('never-sess'), userKey: 'userId' })
      const app = sessionApp(sessions, {
        routes: (routes) => {
          routes.get('/page', cache, (req, res) => {
            runs.count++
            res.send(`page for ${dataOf(req).userId ?? 'anonymous'} #${runs.count}`)
          })
        },
      })
      return { app, runs }
    }
    const signIn = async (app: Express, user: number): Promise<SessionClient> => {
      const browser = new SessionClient(app)
      expect((await browser.post(`/login?user=${user}`)).status).to.equal(200)
      return browser
    }

    it("a signed-in user's request bypasses the cache: never another user's body, never stored", async () => {
      const { app, runs } = pageApp(cacheFor())
      const alice = await signIn(app, 1)
      const bob = await signIn(app, 2)

      const aliceFirst = await alice.get('/page')
      expect(xCache(aliceFirst)).to.equal('BYPASS')
      expect(aliceFirst.text).to.equal('page for 1 #1')
      const bobFirst = await bob.get('/page')
      expect(xCache(bobFirst)).to.equal('BYPASS')
      expect(bobFirst.text).to.equal('page for 2 #2')
      const aliceAgain = await alice.get('/page')
      expect(aliceAgain.text).to.equal('page for 1 #3')

      // Neither user's body was stored: an anonymous visitor gets a page of its own.
      const anonymous = new SessionClient(app)
      const anonymousFirst = await anonymous.get('/page')
      expect(xCache(anonymousFirst)).to.equal('MISS')
      expect(anonymousFirst.text).to.equal('page for anonymous #4')
      expect(runs.count).to.equal(4)
    })

    it('an anonymous request is cached, and the cached anonymous page is never served to a signed-in user', async () => {
      const { app, runs } = pageApp(cacheFor())
      const anonymous = new SessionClient(app)
      expect(xCache(await anonymous.get('/page'))).to.equal('MISS')
      const hit = await new SessionClient(app).get('/page')
      expect(xCache(hit)).to.equal('HIT')
      expect(hit.text).to.equal('page for anonymous #1')
      expect(hit.headers).not.to.have.property('set-cookie')

      const carol = await signIn(app, 3)
      const carolPage = await carol.get('/page')
      expect(xCache(carolPage)).to.equal('BYPASS')
      expect(carolPage.text).to.equal('page for 3 #2')
      // And after her visit, anonymous visitors still get the anonymous page.
      const anonymousAgain = await anonymous.get('/page')
      expect(xCache(anonymousAgain)).to.equal('HIT')
      expect(anonymousAgain.text).to.equal('page for anonymous #1')
      expect(runs.count).to.equal(2)
    })

    it('perUser: true: each user gets a cached body of their own, never the other one', async () => {
      const { app, runs } = pageApp(cacheFor({ perUser: true }))
      const alice = await signIn(app, 1)
      const bob = await signIn(app, 2)
      const anonymous = new SessionClient(app)

      const firsts = [await alice.get('/page'), await bob.get('/page'), await anonymous.get('/page')]
      expect(firsts.map(xCache)).to.deep.equal(['MISS', 'MISS', 'MISS'])
      expect(firsts.map((res) => res.text)).to.deep.equal(['page for 1 #1', 'page for 2 #2', 'page for anonymous #3'])
      for (let i = 0; i < 2; i++) {
        const again = [await bob.get('/page'), await alice.get('/page'), await anonymous.get('/page')]
        expect(again.map(xCache)).to.deep.equal(['HIT', 'HIT', 'HIT'])
        expect(again.map((res) => res.text)).to.deep.equal(['page for 2 #2', 'page for 1 #1', 'page for anonymous #3'])
      }
      expect(runs.count).to.equal(3)
    })

    it('perUser: true: a user who signs out gets the anonymous page, not their own', async () => {
      const { app } = pageApp(cacheFor({ perUser: true }))
      const dave = await signIn(app, 4)
      expect((await dave.get('/page')).text).to.equal('page for 4 #1')
      expect((await dave.post('/logout')).status).to.equal(200)
      const afterLogout = await dave.get('/page')
      expect(afterLogout.text).to.equal('page for anonymous #2')
    })
  })
})
