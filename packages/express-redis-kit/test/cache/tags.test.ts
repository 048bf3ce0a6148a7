import type { Server } from 'node:http'
import { expect } from 'chai'
import request from 'supertest'
import { type CacheResponseOptions, cached, cacheResponse, invalidateTags } from '../../src/index.js'
import {
  countingApp,
  gate,
  rawRequest,
  responseEntryKey,
  tagCopiesOf,
  untilTagged,
  xCache,
} from '../helpers/cache-app.js'
import { closeServer, listen } from '../helpers/outage.js'
import { connectRedis, mode, type RedisClient, uniquePrefix } from '../helpers/redis.js'

/*
 * Issue 4: "Tags: `tags` as an array or `(req, res) => string[]`; `invalidateTags(tags)`
 * removes every entry carrying any of the tags, for every instance, atomically enough that a
 * request in flight during the invalidation cannot store a pre-invalidation body afterwards.
 * Works on Redis Cluster."
 */
describe(`cache tags and invalidation (${mode} Redis)`, () => {
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

  const cacheWith = (prefix: string, options: Partial<CacheResponseOptions> = {}) =>
    cacheResponse({ client, prefix, ttl: '1m', ...options })

  describe('tags as an array', () => {
    it('invalidateTags removes every entry carrying the tag (and no other); resolves to the number removed', async () => {
      const prefix = uniquePrefix('tags-array')
      const users = cacheWith(prefix, { tags: ['users', 'lists'] })
      const posts = countingApp(cacheWith(prefix, { tags: ['posts'] }))
      const usersApp = countingApp(users)
      for (const url of ['/users', '/users?page=2']) await request(usersApp.app).get(url)
      await request(posts.app).get('/posts')
      await untilTagged(client, prefix, { users: 2, posts: 1 })

      expect(await users.invalidateTags(['users'])).to.equal(2)
      for (const url of ['/users', '/users?page=2']) {
        expect(xCache(await request(usersApp.app).get(url)), url).to.equal('MISS')
      }
      expect(xCache(await request(posts.app).get('/posts'))).to.equal('HIT')
      expect(usersApp.runs.count).to.equal(4)
    })

    it('any of several tags: an entry carrying one of them is removed', async () => {
      const prefix = uniquePrefix('tags-any')
      const { app } = countingApp(cacheWith(prefix, { tags: ['a', 'b'] }))
      await request(app).get('/x')
      await untilTagged(client, prefix, { a: 1, b: 1 })
      expect(await invalidateTags(client, ['z', 'b'], { prefix })).to.equal(1)
      expect(xCache(await request(app).get('/x'))).to.equal('MISS')
    })

    it('a tag nothing carries removes nothing', async () => {
      const prefix = uniquePrefix('tags-none')
      const { app } = countingApp(cacheWith(prefix, { tags: ['a'] }))
      await request(app).get('/x')
      await untilTagged(client, prefix, { a: 1 })
      expect(await invalidateTags(client, ['unused'], { prefix })).to.equal(0)
      expect(xCache(await request(app).get('/x'))).to.equal('HIT')
    })

    it('the same tag under another prefix is another cache: untouched', async () => {
      const mine = uniquePrefix('tags-mine')
      const theirs = uniquePrefix('tags-theirs')
      const { app } = countingApp(cacheWith(theirs, { tags: ['users'] }))
      await request(app).get('/x')
      await untilTagged(client, theirs, { users: 1 })
      expect(await invalidateTags(client, ['users'], { prefix: mine })).to.equal(0)
      expect(xCache(await request(app).get('/x'))).to.equal('HIT')
    })

    it("a tag's set expires with the entries it lists (no key lives forever)", async () => {
      const prefix = uniquePrefix('tags-ttl')
      const { app } = countingApp(cacheWith(prefix, { tags: ['users'] }))
      await request(app).get('/x')
      await untilTagged(client, prefix, { users: 1 })
      // the copy of the tag's set that the fill fenced itself on (on a Cluster, one of three)
      let set = ''
      for (const key of tagCopiesOf(prefix, 'users')) if (Number(await client.sCard(key)) > 0) set = key
      const ttl = await client.pTTL(set)
      // The entry lives ttl, and as long again to be revalidated (it has an ETag).
      const entryTtl = await client.pTTL(responseEntryKey(prefix, '/x'))
      expect(entryTtl).to.be.within(119_000, 120_000)
      expect(ttl).to.be.within(entryTtl - 1_000, entryTtl + 100)
    })
  })

  describe('tags as (req, res) => string[]', () => {
    it('the tags of each response come from its request and response; invalidation removes just those', async () => {
      const prefix = uniquePrefix('tags-fn')
      const cache = cacheWith(prefix, {
        tags: (req, res) => [`section:${req.path.split('/')[1]}`, `user:${res.getHeader('x-user-id')}`],
      })
      const { app, runs } = countingApp(cache, (req, res, run) => {
        res.setHeader('X-User-Id', req.path.split('/')[2] ?? 'none')
        res.send(`${req.path} #${run}`)
      })
      const urls = ['/users/1', '/users/2', '/admins/1']
      for (const url of urls) await request(app).get(url)
      await untilTagged(client, prefix, { 'user:1': 2, 'user:2': 1, 'section:users': 2, 'section:admins': 1 })

      expect(await cache.invalidateTags(['user:1'])).to.equal(2)
      const after = await Promise.all(urls.map(async (url) => xCache(await request(app).get(url))))
      expect(after).to.deep.equal(['MISS', 'HIT', 'MISS'])
      await untilTagged(client, prefix, { 'user:1': 2, 'section:users': 2 })
      expect(await cache.invalidateTags(['section:users'])).to.equal(2)
      expect(xCache(await request(app).get('/users/2'))).to.equal('MISS')
      expect(xCache(await request(app).get('/admins/1'))).to.equal('HIT')
      expect(runs.count).to.equal(6)
    })
  })

  describe('every variant, every instance, cached() values', () => {
    it('removes every Vary variant of an entry', async () => {
      const prefix = uniquePrefix('tags-vary')
      const cache = cacheWith(prefix, { tags: ['greetings'] })
      const { app, runs } = countingApp(cache, (req, res, run) => {
        res.vary('Accept-Language').send(`${req.headers['accept-language']} #${run}`)
      })
      for (const language of ['en', 'fr', 'de']) await request(app).get('/hello').set('Accept-Language', language)
      await untilTagged(client, prefix, { greetings: 1 })
      await cache.invalidateTags(['greetings'])
      for (const language of ['en', 'fr', 'de']) {
        expect(xCache(await request(app).get('/hello').set('Accept-Language', language)), language).to.equal('MISS')
      }
      expect(runs.count).to.equal(6)
    })

    it('two instances (two apps, two Redis connections) sharing the prefix: an invalidation through one is seen by the other', async () => {
      const prefix = uniquePrefix('tags-instances')
      const otherClient = await connectRedis()
      try {
        const cacheOne = cacheResponse({ client, prefix, ttl: '1m', tags: ['users'] })
        const cacheTwo = cacheResponse({ client: otherClient, prefix, ttl: '1m', tags: ['users'] })
        const one = countingApp(cacheOne, (_req, res, run) => void res.send(`one #${run}`))
        const two = countingApp(cacheTwo, (_req, res, run) => void res.send(`two #${run}`))

        await request(one.app).get('/users')
        await untilTagged(client, prefix, { users: 1 })
        const shared = await request(two.app).get('/users')
        expect([xCache(shared), shared.text]).to.deep.equal(['HIT', 'one #1'])

        expect(await cacheTwo.invalidateTags(['users'])).to.equal(1)
        const afterOne = await request(one.app).get('/users')
        expect([xCache(afterOne), afterOne.text]).to.deep.equal(['MISS', 'one #2'])
        await untilTagged(client, prefix, { users: 1 })

        // And the other way round, with the standalone function on the first connection.
        await invalidateTags(client, ['users'], { prefix })
        const afterTwo = await request(two.app).get('/users')
        expect([xCache(afterTwo), afterTwo.text]).to.deep.equal(['MISS', 'two #1'])
        await untilTagged(otherClient, prefix, { users: 1 })
      } finally {
        await otherClient.close()
      }
    })

    it('cached() values with the same tags (same prefix) are removed too, by either API', async () => {
      const prefix = uniquePrefix('tags-cached')
      const cache = cacheWith(prefix, { tags: ['users'] })
      const { app } = countingApp(cache)
      let loads = 0
      const load = () => cached(client, 'user-count', { prefix, ttl: '1m', tags: ['users'] }, () => ++loads)

      await request(app).get('/users')
      expect(await load()).to.equal(1)
      expect(await load()).to.equal(1)
      await untilTagged(client, prefix, { users: 2 })
      expect(await cache.invalidateTags(['users'])).to.equal(2)
      expect(await load()).to.equal(2)
      expect(xCache(await request(app).get('/users'))).to.equal('MISS')
      await untilTagged(client, prefix, { users: 2 })

      expect(await invalidateTags(client, ['users'], { prefix })).to.equal(2)
      expect(await load()).to.equal(3)
      expect(xCache(await request(app).get('/users'))).to.equal('MISS')
    })
  })

  describe('an invalidation while a miss is in flight', () => {
    /**
     * The first run of the handler waits until the test has invalidated the tag; the
     * response then goes out with the pre-invalidation body.
     */
    const inFlight = async (tags: string[]) => {
      const prefix = uniquePrefix('tags-inflight')
      const cache = cacheWith(prefix, { tags })
      const started = gate()
      const invalidated = gate()
      const { app, runs } = countingApp(cache, async (_req, res, run) => {
        if (run === 1) {
          started.open()
          await invalidated.promise
        }
        res.send(`version ${run}`)
      })
      server = await listen(app)
      const first = rawRequest(server, '/list')
      await started.promise
      await cache.invalidateTags([tags[0]!])
      invalidated.open()
      const before = await first
      expect([before.headers['x-cache'], before.body.toString()]).to.deep.equal(['MISS', 'version 1'])
      return { server, runs }
    }

    it('the handler started before invalidateTags and finished after it: the next request is a MISS (the pre-invalidation body was not kept)', async () => {
      const { server, runs } = await inFlight(['list'])
      const next = await rawRequest(server, '/list')
      expect([next.headers['x-cache'], next.body.toString()]).to.deep.equal(['MISS', 'version 2'])
      const hit = await rawRequest(server, '/list')
      expect([hit.headers['x-cache'], hit.body.toString()]).to.deep.equal(['HIT', 'version 2'])
      expect(runs.count).to.equal(2)
    })

    it('the same for a list page tagged with each of its 500 items: the next request is a MISS', async () => {
      const tags = ['items', ...Array.from({ length: 500 }, (_, i) => `item:${i}`)]
      const { server } = await inFlight(tags)
      const next = await rawRequest(server, '/list')
      expect([next.headers['x-cache'], next.body.toString()]).to.deep.equal(['MISS', 'version 2'])
    })

    it('cached(): a loader that started before invalidateTags and finished after it: the next call loads again', async () => {
      const prefix = uniquePrefix('tags-inflight-cached')
      const started = gate()
      const invalidated = gate()
      let loads = 0
      const load = () =>
        cached(client, 'value', { prefix, ttl: '1m', tags: ['values'] }, async () => {
          loads++
          if (loads === 1) {
            started.open()
            await invalidated.promise
          }
          return `version ${loads}`
        })
      const first = load()
      await started.promise
      await invalidateTags(client, ['values'], { prefix })
      invalidated.open()
      expect(await first).to.equal('version 1')
      expect(await load()).to.equal('version 2')
      expect(await load()).to.equal('version 2')
      expect(loads).to.equal(2)
    })
  })
})
