import { setTimeout as sleep } from 'node:timers/promises'
import { expect } from 'chai'
import type { Response } from 'supertest'
import {
  clusterNodes,
  expectClusterUp,
  expectError,
  signedInUser,
  signUp,
  startApp,
  type TestApp,
  uniquePrefix,
} from './helpers/app.js'
import { nextUserId } from './helpers/db.js'

/**
 * Every spelling of a user's page that the router sends to GET /users/:id (a trailing slash,
 * another case, a query string, another Host), on either of two instances sharing Redis and
 * the database, follows a change and a deletion made through either instance. Runs on the
 * single Redis and on the Redis Cluster at CLUSTER_NODES.
 */
const modes = [
  { name: 'a single Redis', env: {} as Record<string, string> },
  { name: 'a Redis Cluster', env: { REDIS_CLUSTER_NODES: clusterNodes } as Record<string, string> },
]

/** A spelling of `/users/<id>`, and the Host it is asked under (undefined: supertest's own, 127.0.0.1:<port>). */
interface Variant {
  path: (id: number) => string
  host?: (app: TestApp) => string
}

const VARIANTS: Variant[] = [
  { path: (id) => `/users/${id}` },
  { path: (id) => `/users/${id}/` },
  { path: (id) => `/users/${id}?x=1` },
  { path: (id) => `/users/${id}?utm_source=mail&x=2` },
  { path: (id) => `/Users/${id}` },
  { path: (id) => `/USERS/${id}/?x=1` },
  { path: (id) => `/users/${id}`, host: (app) => `localhost:${portOf(app)}` },
  { path: (id) => `/users/${id}`, host: () => 'users.example' },
]

function portOf(app: TestApp): number {
  return (app.server.address() as { port: number }).port
}

for (const mode of modes) {
  describe(`every cached copy of a user's page on ${mode.name}: two instances`, function () {
    this.timeout(60_000)
    let a: TestApp
    let b: TestApp

    before(async function () {
      this.timeout(60_000)
      if (mode.env.REDIS_CLUSTER_NODES) await expectClusterUp(mode.env.REDIS_CLUSTER_NODES)
      // one REDIS_PREFIX: the same keys, sessions and cache, as instances of one deployment
      const prefix = uniquePrefix('user-page')
      a = await startApp({ ...mode.env, REDIS_PREFIX: prefix })
      b = await startApp({ ...mode.env, REDIS_PREFIX: prefix })
    })
    after(async () => {
      await Promise.all([a?.close(), b?.close()])
    })

    /**
     * A change is seen on every instance within the local cache's fenceMs (LOCAL_CACHE_FENCE_MS, on
     * by default): that bound is the behaviour, so the test waits it out before reading.
     */
    const waitForTheFence = () => sleep((a.config.localCache ? a.config.localCache.fenceMs : 0) + 5)

    /** GET one spelling of the page on `app`. */
    function get(app: TestApp, variant: Variant, id: number) {
      const req = app.http().get(variant.path(id))
      if (variant.host) req.set('Host', variant.host(app))
      return req
    }

    /** GETs every spelling of user `id`'s page on both instances, and checks each answer. */
    async function readEverySpelling(id: number, check: (res: Response, where: string) => void): Promise<void> {
      for (const [label, app] of [
        ['A', a],
        ['B', b],
      ] as const) {
        for (const variant of VARIANTS) check(await get(app, variant, id), `${variant.path(id)} on ${label}`)
      }
    }

    /** Reads every spelling on both instances until each is served from the cache; expects `name` each time. */
    async function cacheEverywhere(id: number, name: string): Promise<void> {
      for (const app of [a, b]) {
        for (const variant of VARIANTS) {
          // a loaded machine may answer some reads without the cache (a Redis timeout is a
          // BYPASS): read until one is a HIT, every answer checked along the way
          const deadline = Date.now() + 15_000
          for (;;) {
            const res = await get(app, variant, id)
            expect(res.status, `${variant.path(id)}: ${res.text}`).to.equal(200)
            expect(res.body.name, variant.path(id)).to.equal(name)
            if (res.headers['x-cache'] === 'HIT') break
            expect(Date.now(), `${variant.path(id)} is never served from the cache`).to.be.below(deadline)
          }
        }
      }
    }

    it('a name change through B shows in every spelling on both instances', async () => {
      const user = await signedInUser(a, { name: 'Before The Change' })
      await cacheEverywhere(user.id, 'Before The Change')
      const res = await b
        .http()
        .patch(`/users/${user.id}`)
        .set('Cookie', user.cookie)
        .send({ name: 'After The Change' })
      expect(res.status, res.text).to.equal(200)
      await waitForTheFence()
      await readEverySpelling(user.id, (page, where) => {
        expect(page.status, `${where}: ${page.text}`).to.equal(200)
        expect(page.body.name, where).to.equal('After The Change')
      })
    })

    it('a deletion through A is a 404 in every spelling on both instances', async () => {
      const user = await signedInUser(a, { name: 'About To Go' })
      await cacheEverywhere(user.id, 'About To Go')
      const res = await a
        .http()
        .delete(`/users/${user.id}`)
        .set('Cookie', user.cookie)
        .send({ currentPassword: user.password })
      expect(res.status, res.text).to.equal(204)
      await waitForTheFence()
      await readEverySpelling(user.id, (page) => expectError(page, 404, 'user_not_found'))
    })

    it('a 404 cached in any spelling, while the id was probed, is gone once a sign-up takes the id', async () => {
      const nextId = await nextUserId()
      await readEverySpelling(nextId, (page) => expectError(page, 404, 'user_not_found'))
      await readEverySpelling(nextId, (page, where) => {
        expectError(page, 404, 'user_not_found')
        expect(page.headers['x-cache'], `${where}: the 404 is cached`).to.equal('HIT')
      })
      const user = await signUp(b, { name: 'Was Probed' })
      expect(user.id, 'the id probed is the one the database gave').to.equal(nextId)
      await waitForTheFence()
      await readEverySpelling(nextId, (page, where) => {
        expect(page.status, `${where}: ${page.text}`).to.equal(200)
        expect(page.body.name, where).to.equal('Was Probed')
      })
    })
  })
}
