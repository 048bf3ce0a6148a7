import { expect } from 'chai'
import request from 'supertest'
import {
  clusterNodes,
  deleteKeys,
  expectClusterUp,
  expectError,
  keysUnder,
  PASSWORD,
  sidCookie,
  testEnv,
  uniqueEmail,
  uniquePrefix,
} from './helpers/app.js'
import { prepareDatabase } from './helpers/db.js'
import { runUntilExit, type ServerProcess, startServer } from './helpers/processes.js'
import { openSse, type SseClient } from './helpers/sse.js'

/** The environment of both servers: the test database, the same Redis, prefix and secrets, a free port each. */
function serverEnv(prefix: string, overrides: Record<string, string> = {}): Record<string, string> {
  const env = testEnv({ PORT: '0', HOST: '127.0.0.1', REDIS_PREFIX: prefix, ...overrides })
  return Object.fromEntries(Object.entries(env).filter((entry): entry is [string, string] => entry[1] !== undefined))
}

interface Account {
  id: number
  email: string
  cookie: string
}

/** The suite runs twice: on the single Redis, and on the Redis Cluster that `npm test` starts (scripts/cluster.sh). */
interface Mode {
  name: string
  /** The servers' environment for this mode. */
  env: { REDIS_CLUSTER_NODES?: string }
}
const modes: Mode[] = [
  { name: 'a single Redis', env: {} },
  { name: 'a Redis Cluster', env: { REDIS_CLUSTER_NODES: clusterNodes } },
]
for (const mode of modes) {
  describe(`end to end on ${mode.name}: two server processes sharing Redis and the database`, function () {
    endToEnd.call(this, mode)
  })
}

function endToEnd(this: Mocha.Suite, mode: Mode) {
  this.timeout(60_000)
  const nodes = mode.env.REDIS_CLUSTER_NODES?.split(',') ?? []
  let a: ServerProcess
  let b: ServerProcess
  const streams: SseClient[] = []
  const prefixes: string[] = []
  const newPrefix = (name: string) => {
    const prefix = uniquePrefix(name)
    prefixes.push(prefix)
    return prefix
  }

  before(async () => {
    if (mode.env.REDIS_CLUSTER_NODES) await expectClusterUp(mode.env.REDIS_CLUSTER_NODES)
    await prepareDatabase()
    const prefix = newPrefix('e2e')
    const started = await Promise.allSettled([
      startServer(serverEnv(prefix, mode.env)),
      startServer(serverEnv(prefix, mode.env)),
    ])
    const [first, second] = started
    if (first?.status === 'fulfilled') a = first.value
    if (second?.status === 'fulfilled') b = second.value
    const failed = started.find((result) => result.status === 'rejected')
    if (failed) throw failed.reason
  })
  after(async () => {
    for (const stream of streams) stream.close()
    await Promise.all([a?.stop(), b?.stop()])
    for (const prefix of prefixes) await deleteKeys(prefix, nodes)
  })

  /**
   * Requests to one instance as a load balancer in front of both sends them: under the one
   * host name of the site (the response cache keys entries by host, as a shared cache must).
   */
  const on = (server: ServerProcess) => {
    const agent = request(server.url)
    const site = <T extends { set(field: string, value: string): T }>(test: T) => test.set('Host', 'users.example')
    return {
      get: (path: string) => site(agent.get(path)),
      post: (path: string) => site(agent.post(path)),
      patch: (path: string) => site(agent.patch(path)),
      delete: (path: string) => site(agent.delete(path)),
    }
  }

  /** Signs up and logs in through `server`. */
  async function account(server: ServerProcess, name: string): Promise<Account> {
    const email = uniqueEmail('e2e')
    const created = await on(server).post('/users').send({ email, name, password: PASSWORD })
    expect(created.status, created.text).to.equal(201)
    const login = await on(server).post('/login').send({ email, password: PASSWORD })
    expect(login.status, login.text).to.equal(200)
    return { id: created.body.id, email, cookie: sidCookie(login)! }
  }

  it('listens on the port it picked and says so', () => {
    expect(a.url).to.match(/^http:\/\/127\.0\.0\.1:\d+$/)
    expect(b.url).to.match(/^http:\/\/127\.0\.0\.1:\d+$/)
    expect(a.url).not.to.equal(b.url)
  })

  it('both instances are healthy', async () => {
    for (const server of [a, b]) {
      const res = await on(server).get('/healthz')
      expect(res.body).to.deep.equal({ status: 'ok', redis: 'up', database: 'up' })
    }
  })

  it("an update through A is visible at once through B's cached routes", async () => {
    const user = await account(a, 'Before Update')
    const list = `/users?after=${user.id - 1}`
    expect((await on(b).get(`/users/${user.id}`)).body.name).to.equal('Before Update')
    expect((await on(b).get(`/users/${user.id}`)).body.name).to.equal('Before Update')
    const first = await on(b).get(list)
    const second = await on(b).get(list)
    expect([first.headers['x-cache'], second.headers['x-cache']]).to.deep.equal(['MISS', 'HIT'])
    expect(second.body.users[0]).to.include({ id: user.id, name: 'Before Update' })

    const patched = await on(a).patch(`/users/${user.id}`).set('Cookie', user.cookie).send({ name: 'After Update' })
    expect(patched.status, patched.text).to.equal(200)

    const one = await on(b).get(`/users/${user.id}`)
    expect(one.body.name).to.equal('After Update')
    const after = await on(b).get(list)
    expect(after.headers['x-cache']).to.equal('MISS')
    expect(after.body.users[0]).to.include({ id: user.id, name: 'After Update' })
  })

  it(`keeps its keys in ${mode.name}`, async () => {
    const prefix = prefixes[0]!
    expect(await keysUnder(prefix, nodes), 'rate-limit, session and cache keys').not.to.be.empty
    if (nodes.length > 0) expect(await keysUnder(prefix), 'none on the single Redis').to.be.empty
  })

  it("a sign-up and a delete through A are visible at once through B's cached routes", async () => {
    const first = await account(a, 'First Of Two')
    const list = `/users?after=${first.id - 1}`
    await on(b).get(list)
    expect((await on(b).get(list)).headers['x-cache']).to.equal('HIT')
    const second = await account(a, 'Second Of Two')
    const listed = await on(b).get(list)
    expect(listed.body.users.map((user: { id: number }) => user.id)).to.include(second.id)
    expect((await on(b).get(`/users/${second.id}`)).status).to.equal(200)
    const deleted = await on(a)
      .delete(`/users/${second.id}`)
      .set('Cookie', second.cookie)
      .send({ currentPassword: PASSWORD })
    expect(deleted.status, deleted.text).to.equal(204)
    expectError(await on(b).get(`/users/${second.id}`), 404, 'user_not_found')
    expect((await on(b).get(list)).body.users.map((user: { id: number }) => user.id)).not.to.include(second.id)
  })

  it("an SSE client of B receives A's user.created, user.updated and user.deleted events", async () => {
    const stream = await openSse(`${b.url}/events`)
    streams.push(stream)
    expect(stream.status).to.equal(200)
    const user = await account(a, 'Streamed')
    const ofUser = (name: string) => (event: { event: string; data: string }) =>
      event.event === name && JSON.parse(event.data).id === user.id
    await stream.waitFor(ofUser('user.created'), 10_000, `user.created of ${user.id}`)

    expect(
      (await on(a).patch(`/users/${user.id}`).set('Cookie', user.cookie).send({ name: 'Streamed 2' })).status,
    ).to.equal(200)
    const updated = await stream.waitFor(ofUser('user.updated'), 10_000, `user.updated of ${user.id}`)
    expect(JSON.parse(updated.data)).to.have.property('time')
    expect(updated.id, 'an event id').to.be.a('string').and.not.empty

    expect(
      (await on(a).delete(`/users/${user.id}`).set('Cookie', user.cookie).send({ currentPassword: PASSWORD })).status,
    ).to.equal(204)
    await stream.waitFor(ofUser('user.deleted'), 10_000, `user.deleted of ${user.id}`)
    expect(stream.text()).not.to.include(user.email)
  })

  it('a session created on A works on B, and logging out on B ends it on A', async () => {
    const user = await account(a, 'Roaming')
    const me = await on(b).get('/me').set('Cookie', user.cookie)
    expect(me.status, me.text).to.equal(200)
    expect(me.body).to.include({ id: user.id, email: user.email, name: 'Roaming' })
    expect((await on(b).post('/logout').set('Cookie', user.cookie)).status).to.equal(204)
    expectError(await on(a).get('/me').set('Cookie', user.cookie), 401, 'unauthorized')
  })

  it('a password change on B ends the session made on A', async () => {
    const user = await account(a, 'Changes Password')
    const onB = await on(b).post('/login').send({ email: user.email, password: PASSWORD })
    const cookieB = sidCookie(onB)!
    const res = await on(b)
      .patch(`/users/${user.id}`)
      .set('Cookie', cookieB)
      .send({ password: 'another password 1', currentPassword: PASSWORD })
    expect(res.status, res.text).to.equal(200)
    expectError(await on(a).get('/me').set('Cookie', user.cookie), 401, 'unauthorized')
    expect((await on(a).get('/me').set('Cookie', cookieB)).status).to.equal(200)
  })

  it('exits with status 0 on SIGTERM, even with an SSE client connected', async () => {
    const prefix = newPrefix('e2e-stop')
    const server = await startServer(serverEnv(prefix, mode.env))
    try {
      const stream = await openSse(`${server.url}/events`)
      streams.push(stream)
      const exit = await server.stop(10_000)
      expect(exit, `stderr:\n${server.stderr()}`).to.deep.equal({ code: 0, signal: null, killed: false })
    } finally {
      await server.stop(1_000)
    }
  })

  // checked before Redis is used, whatever it is: once is enough
  if (mode === modes[0]) {
    describe('invalid configuration', () => {
      for (const [variable, value] of [
        ['PORT', 'abc'],
        ['PORT', '70000'],
        ['SESSION_SECRETS', 'too-short'],
        ['REDIS_URL', 'http://127.0.0.1:6379'],
        ['REDIS_CLUSTER_NODES', '127.0.0.1'],
      ] as const) {
        it(`${variable}=${value}: exits with status 1 and a message naming ${variable}`, async () => {
          const result = await runUntilExit(serverEnv(uniquePrefix('e2e-bad'), { [variable]: value }))
          expect(result.timedOut, `the server kept running; stdout:\n${result.stdout}`).to.equal(false)
          expect(result.code).to.equal(1)
          expect(result.stderr).to.include(variable)
          expect(result.stderr).to.match(/Invalid configuration/)
          expect(result.stderr, 'no stack trace').not.to.match(/\n\s+at /)
          expect(result.stdout).not.to.include('listening')
        })
      }

      it('NODE_ENV=production without SESSION_SECRETS: exits with status 1 naming SESSION_SECRETS', async () => {
        const env = serverEnv(uniquePrefix('e2e-bad'), { NODE_ENV: 'production' })
        delete env.SESSION_SECRETS
        const result = await runUntilExit(env)
        expect(result.code).to.equal(1)
        expect(result.stderr).to.include('SESSION_SECRETS')
      })
    })
  }
}
