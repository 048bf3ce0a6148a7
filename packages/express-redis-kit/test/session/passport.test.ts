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
