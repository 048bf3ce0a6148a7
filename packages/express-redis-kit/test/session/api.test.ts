import { expect } from 'chai'
import type { Express } from 'express'
import request from 'supertest'
import { session } from '../../src/index.js'
import { connectRedis, dumpKeys, type RedisClient, uniquePrefix } from '../helpers/redis.js'
import {
  checkpoint,
  dataOf,
  handleOfCookie,
  SessionClient,
  sessionApp,
  sessionIdOf,
  sessionKey,
  setCookieOf,
  signedCookieHeader,
} from '../helpers/session-app.js'
import { sleep } from '../helpers/session-redis.js'

describe('session ids and the req.session API', () => {
  let client: RedisClient
  before(async () => {
    client = await connectRedis()
  })
  after(async () => {
    await client.close()
  })

  describe('tokens and handles', () => {
    it('the cookie holds <tag>.<token>: a 256-bit token (43 base64url characters), different for every session', async () => {
      const app = sessionApp(session({ client, prefix: uniquePrefix('sess-ids') }))
      const tokens = new Set<string>()
      for (let i = 0; i < 20; i++) {
        const value = sessionIdOf(await request(app).post('/login?user=7'))
        expect(value).to.match(/^[A-Za-z0-9_-]{11}\.[A-Za-z0-9_-]{43}$/)
        const token = value.slice(12)
        expect(Buffer.from(token, 'base64url')).to.have.length(32)
        tokens.add(token)
      }
      expect(tokens.size).to.equal(20)
    })

    it('req.session.handle names the session in the cookie without being its token; req.session.id and req.sessionID are the handle', async () => {
      const app = sessionApp(session({ client, prefix: uniquePrefix('sess-ids') }), {
        routes: (app) =>
          app.get('/handle', (req, res) => {
            res.json({
              handle: req.session.handle,
              again: req.session.handle,
              id: req.session.id,
              sessionID: req.sessionID,
            })
          }),
      })
      const value = sessionIdOf(await request(app).post('/login?user=7'))
      const res = await request(app).get('/handle').set('Cookie', signedCookieHeader(value))
      expect(res.body.handle).to.equal(handleOfCookie(value))
      expect(res.body.again).to.equal(res.body.handle)
      expect(res.body.id).to.equal(res.body.handle)
      expect(res.body.sessionID).to.equal(res.body.handle)
      expect(value).not.to.include(res.body.handle)
    })
  })

  describe('fixation: regenerate()', () => {
    it('gives a new id on login; the old id is dead (replaying its cookie gives no session)', async () => {
      const prefix = uniquePrefix('sess-fixation')
      const app = sessionApp(session({ client, prefix }))
      const visitor = new SessionClient(app)
      const oldId = sessionIdOf(await visitor.post('/set/color?value=red'))
      const before = visitor.header
      const login = await visitor.post('/login?user=7')
      const newId = sessionIdOf(login)
      expect(newId).to.not.equal(oldId)
      expect(await visitor.data()).to.deep.equal({ userId: 7 })
      expect(await client.exists(sessionKey(prefix, oldId))).to.equal(0)
      const replay = await request(app)
        .get('/me')
        .set('Cookie', before ?? '')
      expect(replay.body.data).to.deep.equal({})
      // Nor can the old id be brought back by writing to it.
      const write = await request(app)
        .post('/set/color?value=blue')
        .set('Cookie', before ?? '')
      expect(sessionIdOf(write)).to.not.be.oneOf([oldId, newId])
      expect(await client.exists(sessionKey(prefix, oldId))).to.equal(0)
    })

    it('an attacker who planted a session id does not share the victim’s login', async () => {
      const app = sessionApp(session({ client, prefix: uniquePrefix('sess-fixation') }))
      const attacker = new SessionClient(app)
      await attacker.post('/set/color?value=planted')
      const victim = new SessionClient(app)
      victim.raw = attacker.raw
      await victim.post('/login?user=7')
      expect(await victim.data()).to.deep.equal({ userId: 7 })
      expect(await attacker.data()).to.deep.equal({})
    })

    it('regenerate() drops the data by default', async () => {
      const app = sessionApp(session({ client, prefix: uniquePrefix('sess-regen') }))
      const agent = request.agent(app)
      await agent.post('/set/color?value=red')
      await agent.post('/login?user=7')
      expect((await agent.get('/me')).body.data).to.deep.equal({ userId: 7 })
    })

    it('regenerate({ keepData: true }) keeps the data under the new id', async () => {
      const prefix = uniquePrefix('sess-regen-keep')
      const app = sessionApp(session({ client, prefix }))
      const visitor = new SessionClient(app)
      const first = await visitor.post('/set/color?value=red')
      const oldId = sessionIdOf(first)
      const login = await visitor.post('/login?user=7&keep=1')
      const newId = sessionIdOf(login)
      expect(newId).to.not.equal(oldId)
      expect(await visitor.data()).to.deep.equal({ color: 'red', userId: 7 })
      expect(await client.exists(sessionKey(prefix, oldId))).to.equal(0)
      expect(await client.hGet(sessionKey(prefix, newId), 'd:color')).to.equal('"red"')
    })
  })

  describe('req.session', () => {
    const inspect = (app: Express) =>
      app.get('/inspect', (req, res) => {
        const session = req.session
        // Reflect.set reports what a plain assignment does silently in sloppy mode (and
        // with a TypeError in strict mode): whether the property took the value.
        const handleAssigned = Reflect.set(session, 'handle', 'chosen by the app')
        res.json({
          json: JSON.stringify(session),
          keys: Object.keys(session),
          methods: ['regenerate', 'destroy', 'save', 'reload', 'touch'].map((name) => [
            typeof (session as unknown as Record<string, unknown>)[name],
            Object.prototype.propertyIsEnumerable.call(session, name),
          ]),
          handleEnumerable: Object.prototype.propertyIsEnumerable.call(session, 'handle'),
          handleAssigned,
          handleAfter: session.handle,
        })
      })

    it('holds the data as plain properties; the methods and handle are non-enumerable; handle is read-only', async () => {
      const app = sessionApp(session({ client, prefix: uniquePrefix('sess-api') }), { routes: inspect })
      const agent = request.agent(app)
      const id = sessionIdOf(await agent.post('/login?user=7'))
      await agent.post('/set/color?value=red')
      const res = await agent.get('/inspect')
      expect(JSON.parse(res.body.json)).to.deep.equal({ userId: 7, color: 'red' })
      expect(res.body.keys).to.deep.equal(['userId', 'color'])
      expect(res.body.methods).to.deep.equal(Array(5).fill(['function', false]))
      expect(res.body.handleEnumerable).to.equal(false)
      expect(res.body.handleAssigned).to.equal(false)
      expect(res.body.handleAfter).to.equal(handleOfCookie(id))
      expect(setCookieOf(res), 'trying to assign the handle is no change').to.equal(undefined)
      expect((await agent.get('/me')).body.data).to.deep.equal({ userId: 7, color: 'red' })
    })

    it('stores any JSON value; deleting a property or setting it to undefined removes it', async () => {
      const prefix = uniquePrefix('sess-values')
      const value = {
        cart: ['a', 'b'],
        nested: { deep: { list: [1, 2.5, null, true] } },
        flag: false,
        zero: 0,
        empty: '',
      }
      const app = sessionApp(session({ client, prefix }), {
        routes: (app) => {
          app.post('/values', (req, res) => {
            Object.assign(req.session, value, { when: new Date(0), gone: undefined })
            res.json({ ok: true })
          })
          app.post('/remove', (req, res) => {
            delete dataOf(req).cart
            dataOf(req).nested = undefined
            res.json({ ok: true })
          })
        },
      })
      const agent = request.agent(app)
      const id = sessionIdOf(await agent.post('/values'))
      expect((await agent.get('/me')).body.data).to.deep.equal({ ...value, when: '1970-01-01T00:00:00.000Z' })
      await agent.post('/remove')
      const { cart, nested, ...rest } = value
      expect((await agent.get('/me')).body.data).to.deep.equal({ ...rest, when: '1970-01-01T00:00:00.000Z' })
      const fields = Object.keys(await client.hGetAll(sessionKey(prefix, id))).sort()
      expect(fields).to.deep.equal(['c', 'd:empty', 'd:flag', 'd:when', 'd:zero', 's'])
    })

    it('changes made in place (an array pushed to, a nested field set, through a variable) are saved', async () => {
      const app = sessionApp(session({ client, prefix: uniquePrefix('sess-in-place') }), {
        routes: (app) => {
          app.post('/start', (req, res) => {
            Object.assign(dataOf(req), { cart: ['a'], prefs: { theme: 'light', sizes: [1] } })
            res.json({ ok: true })
          })
          app.post('/in-place', (req, res) => {
            const { cart, prefs } = req.session as unknown as {
              cart: string[]
              prefs: { theme: string; sizes: number[] }
            }
            cart.push('b')
            prefs.theme = 'dark'
            prefs.sizes.push(2)
            res.json({ ok: true })
          })
          app.post('/stream-then-change', (req, res) => {
            res.write('started ')
            ;(req.session as unknown as { cart: string[] }).cart.push('after the first byte')
            res.end('and ended')
          })
        },
      })
      const agent = request.agent(app)
      await agent.post('/start')
      await agent.post('/in-place')
      expect((await agent.get('/me')).body.data).to.deep.equal({
        cart: ['a', 'b'],
        prefs: { theme: 'dark', sizes: [1, 2] },
      })
      // The head went out before the change: an existing session still saves it (no new cookie is needed).
      const streamed = await agent.post('/stream-then-change')
      expect(streamed.text).to.equal('started and ended')
      expect((await agent.get('/me')).body.data.cart).to.deep.equal(['a', 'b', 'after the first byte'])
    })

    it('save() writes the session to Redis before the response, and sends the cookie with it', async () => {
      const prefix = uniquePrefix('sess-save')
      const app = sessionApp(session({ client, prefix }), {
        routes: (app) =>
          app.post('/save', async (req, res) => {
            req.session.color = 'red'
            await req.session.save()
            const stored = [...(await dumpKeys(prefix)).values()].map(
              (content) => content[content.indexOf('d:color') + 1],
            )
            req.session.cart = ['after save']
            res.json({ stored })
          }),
      })
      const agent = request.agent(app)
      const res = await agent.post('/save')
      expect(res.body.stored).to.deep.equal(['"red"'])
      expect(sessionIdOf(res)).to.be.a('string')
      expect((await agent.get('/me')).body.data).to.deep.equal({ color: 'red', cart: ['after save'] })
    })

    it('reload() sees a change another request made meanwhile', async () => {
      const gate = checkpoint()
      const app = sessionApp(session({ client, prefix: uniquePrefix('sess-reload') }), {
        routes: (app) =>
          app.get('/reload', async (req, res) => {
            const before = { ...req.session }
            await gate.wait()
            await req.session.reload()
            res.json({ before, after: { ...req.session } })
          }),
      })
      const agent = request.agent(app)
      await agent.post('/login?user=7')
      const reloading = agent.get('/reload').then((res) => res)
      await gate.reached
      await agent.post('/set/color?value=red')
      gate.release()
      const res = await reloading
      expect(res.body.before).to.deep.equal({ userId: 7 })
      expect(res.body.after).to.deep.equal({ userId: 7, color: 'red' })
      expect(setCookieOf(res), 'reloading is no change').to.equal(undefined)
    })

    it('reload() of a session destroyed meanwhile leaves it empty and does not bring it back', async () => {
      const prefix = uniquePrefix('sess-reload-dead')
      const gate = checkpoint()
      const app = sessionApp(session({ client, prefix }), {
        routes: (app) =>
          app.get('/reload', async (req, res) => {
            await gate.wait()
            await req.session.reload()
            const after = { ...req.session }
            req.session.color = 'after reload'
            res.json({ after })
          }),
      })
      const agent = request.agent(app)
      const id = sessionIdOf(await agent.post('/login?user=7'))
      const cookie = signedCookieHeader(id)
      const reloading = request(app)
        .get('/reload')
        .set('Cookie', cookie)
        .then((res) => res)
      await gate.reached
      await request(app).post('/logout').set('Cookie', cookie)
      gate.release()
      const res = await reloading
      expect(res.body.after).to.deep.equal({})
      expect(await client.exists(sessionKey(prefix, id))).to.equal(0)
      expect((await request(app).get('/me').set('Cookie', cookie)).body.data).to.deep.equal({})
    })

    // The cookie already lives until the absolute deadline, so touch() only moves the
    // server-side idle timeout: re-sending a cookie could overwrite a newer login's.
    it('touch() restarts the idle timeout with no data change, and sends no Set-Cookie', async () => {
      const prefix = uniquePrefix('sess-touch')
      // A 1-hour idle timeout: no rolling refresh for 6 minutes, so only touch() writes here.
      const app = sessionApp(session({ client, prefix, idleTimeout: '1h' }))
      const login = await request(app).post('/login?user=7')
      const id = sessionIdOf(login)
      const key = sessionKey(prefix, id)
      const seen = Number(await client.hGet(key, 's'))
      await client.pExpire(key, 60_000)
      await sleep(20)
      const read = await request(app).get('/me').set('Cookie', signedCookieHeader(id))
      expect(setCookieOf(read)).to.equal(undefined)
      expect(Number(await client.hGet(key, 's'))).to.equal(seen)

      const touched = await request(app).post('/touch').set('Cookie', signedCookieHeader(id))
      expect(setCookieOf(touched)).to.equal(undefined)
      expect(Number(await client.hGet(key, 's'))).to.be.greaterThan(seen)
      expect(await client.pTTL(key)).to.be.greaterThan(3_500_000)
      expect((await request(app).get('/me').set('Cookie', signedCookieHeader(id))).body.data).to.deep.equal({
        userId: 7,
      })
    })

    it('touch() keeps a session alive past its idle timeout (idle 800 ms, touched every 400 ms)', async () => {
      const app = sessionApp(session({ client, prefix: uniquePrefix('sess-touch-idle'), idleTimeout: '800ms' }))
      const user = new SessionClient(app)
      await user.post('/login?user=7')
      for (let i = 0; i < 4; i++) {
        await sleep(400)
        expect((await user.post('/touch')).status).to.equal(200)
      }
      expect(await user.data()).to.deep.equal({ userId: 7 })
    })

    it('destroy() deletes the session now, clears the cookie, and later changes in the request are not saved', async () => {
      const prefix = uniquePrefix('sess-destroy')
      const app = sessionApp(session({ client, prefix }), {
        routes: (app) =>
          app.post('/destroy-then-set', async (req, res) => {
            await req.session.destroy()
            const deleted = (await client.exists(sessionKey(prefix, String(req.signedCookies.sid)))) === 0
            req.session.color = 'after destroy'
            res.json({ deleted, data: { ...req.session } })
          }),
      })
      const user = new SessionClient(app)
      const id = sessionIdOf(await user.post('/login?user=7'))
      const cookie = user.header ?? ''
      const res = await user.post('/destroy-then-set')
      expect(res.body.deleted).to.equal(true)
      expect(res.body.data).to.deep.equal({ color: 'after destroy' })
      const cleared = setCookieOf(res)
      expect(cleared?.value).to.equal('')
      expect(new Date(String(cleared?.attributes.expires)).getTime()).to.equal(0)
      expect(user.raw).to.equal(undefined)
      expect(await client.exists(sessionKey(prefix, id))).to.equal(0)
      expect((await request(app).get('/me').set('Cookie', cookie)).body.data).to.deep.equal({})
    })

    it('destroy() of a session that was never stored is harmless and sends no cookie', async () => {
      const app = sessionApp(session({ client, prefix: uniquePrefix('sess-destroy-new') }))
      const res = await request(app).post('/logout')
      expect(res.status).to.equal(200)
      expect(setCookieOf(res)).to.equal(undefined)
    })
  })
})
