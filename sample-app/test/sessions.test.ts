import { expect } from 'chai'
import {
  type CreatedUser,
  clearsSid,
  expectError,
  logIn,
  madeUpSessionValue,
  sessionIdOf,
  sidCookie,
  signedSid,
  signUp,
  startApp,
  type TestApp,
  uniqueEmail,
} from './helpers/app.js'

describe('sessions: login, /me, logout', () => {
  let app: TestApp
  let user: CreatedUser

  before(async () => {
    app = await startApp()
    user = await signUp(app, { name: 'Session User' })
  })
  after(async () => {
    await app?.close()
  })

  const me = (cookie?: string) => {
    const req = app.http().get('/me')
    return cookie ? req.set('Cookie', cookie) : req
  }

  it('a wrong password and an unknown email both answer 401 invalid_credentials with the same message', async () => {
    const wrong = await app.http().post('/login').send({ email: user.email, password: 'not the password' })
    const unknown = await app
      .http()
      .post('/login')
      .send({ email: uniqueEmail('nobody'), password: user.password })
    const a = expectError(wrong, 401, 'invalid_credentials')
    const b = expectError(unknown, 401, 'invalid_credentials')
    expect(a.message).to.equal(b.message)
    expect(wrong.headers['set-cookie']).to.equal(undefined)
    expect(unknown.headers['set-cookie']).to.equal(undefined)
  })

  it('login sets an httpOnly signed sid cookie and answers the user without secrets', async () => {
    const res = await app
      .http()
      .post('/login')
      .send({ email: ` ${user.email.toUpperCase()} `, password: user.password })
    expect(res.status, res.text).to.equal(200)
    expect(res.body).to.deep.equal({ id: user.id, email: user.email, name: user.name })
    const header = ([] as string[]).concat(res.headers['set-cookie'] ?? []).find((c) => c.startsWith('sid='))
    expect(header).to.match(/^sid=s%3A[A-Za-z0-9_-]{11}\.[A-Za-z0-9_-]{43}\.[^;]+;/)
    expect(header).to.match(/HttpOnly/i)
    expect(header).to.match(/SameSite=Lax/i)
  })

  it('/me with the cookie answers the user (email included); without it 401 unauthorized', async () => {
    const cookie = await logIn(app, user)
    const res = await me(cookie)
    expect(res.status, res.text).to.equal(200)
    expect(res.body).to.include({ id: user.id, email: user.email, name: user.name })
    expect(res.body).to.have.all.keys('id', 'email', 'name', 'createdAt', 'updatedAt')
    expect(res.headers['cache-control']).to.match(/no-store/)
    expectError(await me(), 401, 'unauthorized')
  })

  it('a cookie with a bad signature or a made-up id is signed out (401)', async () => {
    const cookie = await logIn(app, user)
    const id = sessionIdOf(cookie)
    expectError(await me(signedSid(id, 'some-other-secret-that-is-long-enough-0000')), 401, 'unauthorized')
    expectError(await me(`sid=${id}`), 401, 'unauthorized')
    expectError(await me(signedSid(madeUpSessionValue())), 401, 'unauthorized')
  })

  it('session fixation: a session id planted before login is never the one logged in', async () => {
    const planted = madeUpSessionValue()
    const cookie = await logIn(app, user, signedSid(planted))
    expect(sessionIdOf(cookie)).not.to.equal(planted)
    expectError(await me(signedSid(planted)), 401, 'unauthorized')
    expect((await me(cookie)).status).to.equal(200)
  })

  it('session fixation: logging in again with a live session gives a new id and kills the old one', async () => {
    const first = await logIn(app, user)
    const second = await logIn(app, user, first)
    expect(sessionIdOf(second)).not.to.equal(sessionIdOf(first))
    expectError(await me(first), 401, 'unauthorized')
    expect((await me(second)).status).to.equal(200)
  })

  it('two logins get different session ids, both valid', async () => {
    const a = await logIn(app, user)
    const b = await logIn(app, user)
    expect(sessionIdOf(a)).not.to.equal(sessionIdOf(b))
    expect((await me(a)).status).to.equal(200)
    expect((await me(b)).status).to.equal(200)
  })

  it('logout: 204, clears the cookie, and the old cookie no longer works; other sessions stay', async () => {
    const other = await logIn(app, user)
    const cookie = await logIn(app, user)
    const res = await app.http().post('/logout').set('Cookie', cookie)
    expect(res.status).to.equal(204)
    expect(clearsSid(res), String(res.headers['set-cookie'])).to.equal(true)
    expectError(await me(cookie), 401, 'unauthorized')
    expect((await me(other)).status).to.equal(200)
  })

  it('logout when signed out: 204', async () => {
    const res = await app.http().post('/logout')
    expect(res.status).to.equal(204)
    expect(sidCookie(res)).to.equal(undefined)
  })

  it('logout-everywhere from one agent ends the sessions of every agent of the user, not of others', async () => {
    const someoneElse = await signUp(app)
    const theirs = await logIn(app, someoneElse)
    const laptop = await logIn(app, user)
    const phone = await logIn(app, user)
    const res = await app.http().post('/logout-everywhere').set('Cookie', laptop)
    expect(res.status, res.text).to.equal(200)
    expect(res.body.sessionsEnded).to.be.a('number').at.least(2)
    expectError(await me(phone), 401, 'unauthorized')
    expectError(await me(laptop), 401, 'unauthorized')
    expect((await me(theirs)).status).to.equal(200)
  })

  it('logout-everywhere signed out: 401', async () => {
    expectError(await app.http().post('/logout-everywhere'), 401, 'unauthorized')
  })

  describe('the Secure attribute of the session cookie', () => {
    const apps: TestApp[] = []
    after(async () => {
      await Promise.all(apps.map((one) => one.close()))
    })
    /** The sid Set-Cookie of a login to an app started with `env` (sharing this suite's Redis keys and user). */
    const loginCookie = async (env: Record<string, string>, forwardedProto?: string) => {
      const one = await startApp({ ...env, REDIS_PREFIX: app.config.redisPrefix })
      apps.push(one)
      const req = one.http().post('/login')
      if (forwardedProto) req.set('X-Forwarded-Proto', forwardedProto)
      const res = await req.send({ email: user.email, password: user.password })
      expect(res.status, res.text).to.equal(200)
      return ([] as string[]).concat(res.headers['set-cookie'] ?? []).find((c) => c.startsWith('sid=')) ?? ''
    }

    it('NODE_ENV=production: always Secure, even over plain HTTP from a TLS proxy it does not trust (no TRUST_PROXY)', async () => {
      expect(await loginCookie({ NODE_ENV: 'production' })).to.match(/;\s*Secure/i)
      expect(await loginCookie({ NODE_ENV: 'production' }, 'https')).to.match(/;\s*Secure/i)
    })

    it('otherwise Secure when the request came over HTTPS, as far as TRUST_PROXY lets it tell', async () => {
      expect(await loginCookie({})).not.to.match(/Secure/i)
      expect(await loginCookie({}, 'https'), 'X-Forwarded-Proto of an untrusted client').not.to.match(/Secure/i)
      expect(await loginCookie({ TRUST_PROXY: 'loopback' }, 'https')).to.match(/;\s*Secure/i)
    })
  })

  describe('SESSION_SECRETS rotation', () => {
    const oldSecret = 'old-secret-old-secret-old-secret-0001'
    const newSecret = 'new-secret-new-secret-new-secret-0002'
    const apps: TestApp[] = []
    after(async () => {
      await Promise.all(apps.map((one) => one.close()))
    })
    const withSecrets = async (secrets: string) => {
      const one = await startApp({ SESSION_SECRETS: secrets, REDIS_PREFIX: app.config.redisPrefix })
      apps.push(one)
      return one
    }

    it('a cookie signed with a retired secret still listed keeps working; dropped from the list, it is signed out', async () => {
      const before = await withSecrets(oldSecret)
      const cookie = await logIn(before, user)
      expect(sessionIdOf(cookie)).to.be.a('string')
      const rotated = await withSecrets(`${newSecret},${oldSecret}`)
      const res = await rotated.http().get('/me').set('Cookie', cookie)
      expect(res.status, res.text).to.equal(200)
      expect(res.body.id).to.equal(user.id)
      const fresh = await logIn(rotated, user)
      const dropped = await withSecrets(newSecret)
      expectError(await dropped.http().get('/me').set('Cookie', cookie), 401, 'unauthorized')
      expect((await dropped.http().get('/me').set('Cookie', fresh)).status, 'signed with the new secret').to.equal(200)
    })
  })
})
