import { expect } from 'chai'
import type { Request } from 'express'
import request from 'supertest'
import { session } from '../../src/index.js'
import { connectRedis, type RedisClient, uniquePrefix } from '../helpers/redis.js'
import { checkpoint, SessionClient, sessionApp, sessionIdOf, sessionKey, userIndexKey } from '../helpers/session-app.js'
import { sleep } from '../helpers/session-redis.js'

describe('session races: no resurrection, field-level merge', () => {
  let client: RedisClient
  before(async () => {
    client = await connectRedis()
  })
  after(async () => {
    await client.close()
  })

  /**
   * An app whose GET /slow stops, after loading the session, at a checkpoint the test
   * controls; `user` is logged in as user 7.
   */
  async function setup(name: string) {
    const prefix = uniquePrefix(name)
    let gate = checkpoint()
    const sessions = session({ client, prefix, userKey: 'userId' })
    const app = sessionApp(sessions, { slow: (_req: Request) => gate.wait() })
    const user = new SessionClient(app)
    const id = sessionIdOf(await user.post('/login?user=7'))
    return {
      prefix,
      sessions,
      app,
      user,
      id,
      /** Starts GET /slow with the user's cookie and resolves once it has loaded the session. */
      async startSlow(query: string) {
        gate = checkpoint()
        const current = gate
        // Through the client: its response's Set-Cookie is applied when it ends, as a browser would.
        const response = user.get(`/slow?${query}`)
        await current.reached
        return {
          /** Lets the slow request change its field and answer. */
          finish: async () => {
            current.release()
            return response
          },
        }
      },
    }
  }

  it('logout racing a slow request that loaded the session: the session stays dead', async () => {
    const { prefix, app, user, id, startSlow } = await setup('sess-race-logout')
    const cookie = user.header ?? ''
    const slow = await startSlow('field=color&value=slow')
    expect((await user.post('/logout')).status).to.equal(200)
    const res = await slow.finish()
    expect(res.status).to.equal(200)
    expect(await client.exists(sessionKey(prefix, id))).to.equal(0)
    expect((await request(app).get('/me').set('Cookie', cookie)).body.data).to.deep.equal({})
    expect(await client.zRange(userIndexKey(prefix, 7), 0, -1)).to.deep.equal([])
  })

  it('logout racing a slow request, with real timers (the slow request saves 500 ms after loading)', async () => {
    const prefix = uniquePrefix('sess-race-timers')
    const app = sessionApp(session({ client, prefix }))
    const user = new SessionClient(app)
    const id = sessionIdOf(await user.post('/login?user=7'))
    const cookie = user.header ?? ''
    const slow = request(app)
      .get('/slow?ms=500&field=userId&value=7')
      .set('Cookie', cookie)
      .then((res) => res)
    await sleep(150)
    await user.post('/logout')
    expect((await slow).status).to.equal(200)
    await sleep(100)
    expect(await client.exists(sessionKey(prefix, id))).to.equal(0)
    expect((await request(app).get('/me').set('Cookie', cookie)).body.data).to.deep.equal({})
  })

  it('regenerate racing a slow request that loaded the session: the old id stays dead', async () => {
    const { prefix, app, user, id, startSlow } = await setup('sess-race-regenerate')
    const oldCookie = user.header ?? ''
    const started = await startSlow('field=color&value=slow')
    const login = await user.post('/login?user=8')
    const newId = sessionIdOf(login)
    await started.finish()
    expect(await client.exists(sessionKey(prefix, id))).to.equal(0)
    expect((await request(app).get('/me').set('Cookie', oldCookie)).body.data).to.deep.equal({})
    expect(await client.hGetAll(sessionKey(prefix, newId))).to.include({ 'd:userId': '8' })
    expect(await client.hGet(sessionKey(prefix, newId), 'd:color')).to.equal(null)
    expect(await client.zRange(userIndexKey(prefix, 7), 0, -1)).to.deep.equal([])
  })

  it('regenerate racing a slow request: the fresh login survives the slow response (a login is not lost)', async () => {
    const { user, startSlow } = await setup('sess-race-login-kept')
    const started = await startSlow('field=color&value=slow')
    await user.post('/login?user=8')
    // The slow request ends after the login; whatever it answers must not log the user out.
    expect((await started.finish()).status).to.equal(200)
    expect(await user.data()).to.deep.equal({ userId: 8 })
  })

  it('destroyUserSessions racing a slow request that loaded the session: the session stays dead', async () => {
    const { prefix, sessions, app, user, id, startSlow } = await setup('sess-race-destroy-user')
    const cookie = user.header ?? ''
    const slow = await startSlow('field=color&value=slow')
    expect(await sessions.destroyUserSessions(7)).to.equal(1)
    expect((await slow.finish()).status).to.equal(200)
    expect(await client.exists(sessionKey(prefix, id))).to.equal(0)
    expect((await request(app).get('/me').set('Cookie', cookie)).body.data).to.deep.equal({})
    expect(await sessions.listUserSessions(7)).to.deep.equal([])
  })

  it('concurrent requests changing different fields: both changes survive (field-level merge)', async () => {
    const { user, startSlow } = await setup('sess-race-merge')
    const slow = await startSlow('field=color&value=from-slow')
    await user.post('/set/theme?value=from-fast')
    await slow.finish()
    expect(await user.data()).to.deep.equal({ userId: 7, theme: 'from-fast', color: 'from-slow' })
  })

  it('concurrent requests, one deleting a field and one setting another: both apply', async () => {
    const { user, startSlow } = await setup('sess-race-merge-delete')
    await user.post('/set/theme?value=dark')
    const slow = await startSlow('field=color&value=from-slow')
    await user.post('/unset/theme')
    await slow.finish()
    expect(await user.data()).to.deep.equal({ userId: 7, color: 'from-slow' })
  })

  it('concurrent requests changing the same field: last writer wins (the request that saves last decides)', async () => {
    const { user, startSlow } = await setup('sess-race-same-field')
    const slow = await startSlow('field=color&value=saved-last')
    await user.post('/set/color?value=saved-first')
    expect(await user.data()).to.include({ color: 'saved-first' })
    await slow.finish()
    expect(await user.data()).to.deep.equal({ userId: 7, color: 'saved-last' })
  })

  it('a request that loaded the session before a login on another tab does not undo the login’s user change', async () => {
    // The same session (no regenerate): a slow request that does not touch userId must
    // not write back the userId it loaded.
    const prefix = uniquePrefix('sess-race-user-field')
    let gate = checkpoint()
    const app = sessionApp(session({ client, prefix }), {
      slow: () => gate.wait(),
      routes: (app) =>
        app.post('/switch', (req, res) => {
          req.session.userId = Number(req.query.user)
          res.json({ ok: true })
        }),
    })
    const user = new SessionClient(app)
    await user.post('/login?user=7')
    gate = checkpoint()
    const slow = request(app)
      .get('/slow?field=color&value=x')
      .set('Cookie', user.header ?? '')
      .then((res) => res)
    await gate.reached
    await user.post('/switch?user=9')
    gate.release()
    await slow
    expect(await user.data()).to.deep.equal({ userId: 9, color: 'x' })
  })
})
