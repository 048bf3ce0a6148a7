import { expect } from 'chai'
import request from 'supertest'
import { session } from '../../src/index.js'
import { EXPRESS_MAJORS, passportApp } from '../helpers/passport-app.js'
import { connectRedis, type RedisClient, uniquePrefix } from '../helpers/redis.js'
import { handleOfCookie, sessionIdOf, sessionKey, setCookieOf } from '../helpers/session-app.js'

/** Long enough for a loaded machine, short enough that a request that never answers fails with a clear message. */
const ANSWER_WITHIN = 10_000
const ADA = { username: 'ada', password: 'secret' }

describe('passport (passport-local) on the session', () => {
  let client: RedisClient
  before(async () => {
    client = await connectRedis()
  })
  after(async () => {
    await client.close()
  })

  describe("userKey: 'passport.user' (a dotted path)", () => {
    const create = EXPRESS_MAJORS[0].create

    it('indexes passport sessions by user: listUserSessions, destroyUserSessions and maxSessionsPerUser work', async () => {
      const prefix = uniquePrefix('passport-index')
      const sessions = session({ client, prefix, userKey: 'passport.user', maxSessionsPerUser: 2 })
      const app = passportApp(create, sessions)
      const devices = [request.agent(app), request.agent(app), request.agent(app)]
      const handles: string[] = []
      for (const device of devices) {
        const login = await device.post('/login').type('form').send(ADA).timeout(ANSWER_WITHIN)
        expect(login.status, JSON.stringify(login.body)).to.equal(200)
        handles.push(handleOfCookie(sessionIdOf(login)))
      }
      // The limit of 2 ended the least recently used session, the first device's.
      expect((await sessions.listUserSessions(7)).map((entry) => entry.handle).sort()).to.deep.equal(
        handles.slice(1).sort(),
      )
      expect((await devices[0]!.get('/me')).body.user).to.equal(null)
      const grace = request.agent(app)
      await grace.post('/login').type('form').send({ username: 'grace', password: 'secret' })
      expect(await sessions.listUserSessions(8)).to.have.length(1)

      expect(await sessions.destroyUserSessions(7, { except: handles[2] })).to.equal(1)
      expect((await devices[1]!.get('/me')).body.user).to.equal(null)
      expect((await devices[2]!.get('/me')).body.user).to.deep.equal({ id: 7, name: 'ada' })
      expect((await grace.get('/me')).body.user).to.deep.equal({ id: 8, name: 'grace' })

      // Signing out takes the session out of the index.
      await devices[2]!.post('/logout').timeout(ANSWER_WITHIN)
      expect(await sessions.listUserSessions(7)).to.deep.equal([])
    })

    it("a user stored as an object names no user (with a warning); 'passport.user.id' reaches its id", async () => {
      const warnings: string[] = []
      const logger = { warn: (message: string) => void warnings.push(message), error: () => {} }
      const serialize = (user: { id: number; name: string }) => ({ id: user.id, name: user.name })
      const whole = session({ client, prefix: uniquePrefix('passport-object'), userKey: 'passport.user', logger })
      const agent = request.agent(passportApp(create, whole, { serialize }))
      const login = await agent.post('/login').type('form').send(ADA).timeout(ANSWER_WITHIN)
      expect(login.status).to.equal(200)
      expect((await agent.get('/me')).body.user).to.deep.equal({ id: 7, name: 'ada' })
      expect(await whole.listUserSessions('[object Object]')).to.deep.equal([])
      expect(warnings.join('\n')).to.match(
        /`userKey` 'passport\.user' holds a value that is not a user id.*'passport\.user\.id'/,
      )

      const byId = session({ client, prefix: uniquePrefix('passport-object-id'), userKey: 'passport.user.id' })
      const signedIn = request.agent(passportApp(create, byId, { serialize }))
      const res = await signedIn.post('/login').type('form').send(ADA).timeout(ANSWER_WITHIN)
      expect((await byId.listUserSessions(7)).map((entry) => entry.handle)).to.deep.equal([
        handleOfCookie(sessionIdOf(res)),
      ])
    })
  })

  for (const { name, create } of EXPRESS_MAJORS) {
    describe(name, () => {
      it('signs in: POST /login answers with the user, a new cookie, and later requests restore req.user', async () => {
        const prefix = uniquePrefix('passport-login')
        const app = passportApp(create, session({ client, prefix }))
        const agent = request.agent(app)
        const guest = sessionIdOf(await agent.post('/set/cart?value=book'))
        const login = await agent.post('/login').type('form').send(ADA).timeout(ANSWER_WITHIN)
        expect(login.status, JSON.stringify(login.body)).to.equal(200)
        expect(login.body.user).to.deep.equal({ id: 7, name: 'ada' })
        const id = sessionIdOf(login)
        expect(id, 'a new token on sign-in').to.not.equal(guest)
        expect(login.body.sessionID).to.equal(handleOfCookie(id))
        const me = await agent.get('/me')
        expect(me.body).to.deep.equal({ user: { id: 7, name: 'ada' }, data: { passport: { user: 7 } } })
        expect(await client.hGet(sessionKey(prefix, id), 'd:passport')).to.equal('{"user":7}')
        expect(await client.exists(sessionKey(prefix, guest)), 'the guest session ended').to.equal(0)
      })

      it('a wrong password redirects to the sign-in page and signs nobody in', async () => {
        const app = passportApp(create, session({ client, prefix: uniquePrefix('passport-wrong') }))
        const agent = request.agent(app)
        const res = await agent
          .post('/login')
          .type('form')
          .send({ username: 'ada', password: 'guess' })
          .timeout(ANSWER_WITHIN)
        expect(res.status).to.equal(302)
        expect(res.headers.location).to.equal('/sign-in')
        expect((await agent.get('/me')).body.user).to.equal(null)
      })

      it('signs out: req.logout(cb) answers, ends the session in Redis and clears the cookie', async () => {
        const prefix = uniquePrefix('passport-logout')
        const app = passportApp(create, session({ client, prefix }))
        const agent = request.agent(app)
        const id = sessionIdOf(await agent.post('/login').type('form').send(ADA).timeout(ANSWER_WITHIN))
        const logout = await agent.post('/logout').timeout(ANSWER_WITHIN)
        expect(logout.status, JSON.stringify(logout.body)).to.equal(200)
        expect(setCookieOf(logout)?.value, 'the cookie is cleared').to.equal('')
        expect(await client.exists(sessionKey(prefix, id))).to.equal(0)
        expect((await agent.get('/me')).body).to.deep.equal({ user: null, data: {} })
        // The old cookie names no session any more.
        const replay = await request(app)
          .get('/me')
          .set('Cookie', `sid=${encodeURIComponent(`s:${id}`)}`)
        expect(replay.body.user).to.equal(null)
      })

      it('keepSessionInfo keeps the guest data through sign-in and sign-out, each under a new token', async () => {
        const prefix = uniquePrefix('passport-keep')
        const app = passportApp(create, session({ client, prefix }), { keepSessionInfo: true })
        const agent = request.agent(app)
        const guest = sessionIdOf(await agent.post('/set/cart?value=book'))
        const login = await agent.post('/login').type('form').send(ADA).timeout(ANSWER_WITHIN)
        expect(login.status, JSON.stringify(login.body)).to.equal(200)
        const signedIn = sessionIdOf(login)
        expect((await agent.get('/me')).body).to.deep.equal({
          user: { id: 7, name: 'ada' },
          data: { cart: 'book', passport: { user: 7 } },
        })
        const logout = await agent.post('/logout').timeout(ANSWER_WITHIN)
        expect(logout.status, JSON.stringify(logout.body)).to.equal(200)
        const signedOut = sessionIdOf(logout)
        expect(new Set([guest, signedIn, signedOut]).size).to.equal(3)
        expect((await agent.get('/me')).body).to.deep.equal({ user: null, data: { cart: 'book', passport: {} } })
        expect(await client.exists([sessionKey(prefix, guest), sessionKey(prefix, signedIn)])).to.equal(0)
      })
    })
  }
})
