import { expect } from 'chai'
import { session } from '../../src/index.js'
import { connectRedis, type RedisClient, uniquePrefix } from '../helpers/redis.js'
import { SessionClient, sessionApp, sessionIdOf, sessionKey, setCookieOf } from '../helpers/session-app.js'
import { sleep } from '../helpers/session-redis.js'

// SessionClient keeps sending the cookie whatever its Max-Age says: what is checked here is
// that the server itself refuses a session past its timeouts.
describe('session idle and absolute timeouts', () => {
  let client: RedisClient
  before(async () => {
    client = await connectRedis()
  })
  after(async () => {
    await client.close()
  })

  it('idle 500 ms: a session unused for 700 ms is dead', async () => {
    const prefix = uniquePrefix('sess-idle')
    const app = sessionApp(session({ client, prefix, idleTimeout: '500ms' }))
    const user = new SessionClient(app)
    const id = sessionIdOf(await user.post('/login?user=7'))
    expect(await user.data()).to.deep.equal({ userId: 7 })
    const cookie = user.raw
    await sleep(700)
    const res = await user.get('/me')
    expect(res.body.data).to.deep.equal({})
    // The dead cookie is left alone: a response clearing it could race a login on another
    // request and wipe the new session's cookie. It names nothing, so it is harmless.
    expect(setCookieOf(res), 'no Set-Cookie for a dead session').to.equal(undefined)
    expect(await client.exists(sessionKey(prefix, id))).to.equal(0)
    // Writing with the dead session's cookie does not bring it back either.
    user.raw = cookie
    const write = await user.post('/set/color?value=red')
    expect(sessionIdOf(write)).to.not.equal(id)
    expect(await client.exists(sessionKey(prefix, id))).to.equal(0)
  })

  it('absolute 1.2 s: a session active every 300 ms is dead after 1.2 s', async () => {
    const prefix = uniquePrefix('sess-absolute')
    const app = sessionApp(session({ client, prefix, idleTimeout: '1s', absoluteTimeout: '1200ms' }))
    const user = new SessionClient(app)
    const id = sessionIdOf(await user.post('/login?user=7'))
    const loggedInAt = Date.now()
    let diedAfter: number | undefined
    for (let i = 0; diedAfter === undefined && Date.now() - loggedInAt < 4_000; i++) {
      await sleep(300)
      const sentAt = Date.now() - loggedInAt
      const res = await user.post(`/set/color?value=${i}`)
      expect(res.status).to.equal(200)
      const data = await user.data()
      if (data.userId === undefined) diedAfter = sentAt
      else if (sentAt < 700) expect(data).to.deep.equal({ userId: 7, color: String(i) })
    }
    expect(diedAfter, 'the session outlived its absolute timeout').to.not.equal(undefined)
    expect(diedAfter).to.be.below(2_500)
    expect(await client.exists(sessionKey(prefix, id))).to.equal(0)
  })

  it('enforced from the stored timestamps: with its Redis TTL removed (PERSIST), an idle session still dies', async () => {
    const prefix = uniquePrefix('sess-persist')
    const app = sessionApp(session({ client, prefix, idleTimeout: '500ms' }))
    const user = new SessionClient(app)
    const id = sessionIdOf(await user.post('/login?user=7'))
    const key = sessionKey(prefix, id)
    expect(await client.persist(key)).to.equal(1)
    expect(await client.pTTL(key)).to.equal(-1)
    await sleep(700)
    expect(await client.exists(key), 'Redis kept the key').to.equal(1)
    expect(await user.data()).to.deep.equal({})
  })

  it('enforced from the stored timestamps: with its Redis TTL removed, a session dies at its absolute timeout', async () => {
    const prefix = uniquePrefix('sess-persist-abs')
    const app = sessionApp(session({ client, prefix, idleTimeout: '600ms', absoluteTimeout: '900ms' }))
    const user = new SessionClient(app)
    const id = sessionIdOf(await user.post('/login?user=7'))
    const key = sessionKey(prefix, id)
    const start = Date.now()
    let alive = true
    while (alive && Date.now() - start < 3_000) {
      await client.persist(key)
      await sleep(200)
      await client.persist(key)
      alive = (await user.data()).userId === 7
    }
    expect(alive).to.equal(false)
    expect(Date.now() - start).to.be.below(2_000)
  })

  it('a write to a session past its idle timeout is not saved (even with the TTL removed)', async () => {
    const prefix = uniquePrefix('sess-late-write')
    const app = sessionApp(session({ client, prefix, idleTimeout: '500ms' }))
    const user = new SessionClient(app)
    const id = sessionIdOf(await user.post('/login?user=7'))
    const key = sessionKey(prefix, id)
    await client.persist(key)
    await sleep(700)
    await user.post('/set/color?value=late')
    expect(await client.hGet(key, 'd:color')).to.equal(null)
    expect(await user.data()).to.deep.equal({ color: 'late' })
  })
})
