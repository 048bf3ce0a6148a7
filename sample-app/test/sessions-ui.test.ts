import { expect } from 'chai'
import {
  type CreatedUser,
  clearsSid,
  expectError,
  sessionIdOf,
  sidCookie,
  signUp,
  startApp,
  type TestApp,
} from './helpers/app.js'

const PHONE = 'Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 Version/17.5 Mobile Safari'
const LAPTOP = 'Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36'

describe('sessions: GET /sessions and DELETE /sessions/:handle', () => {
  let app: TestApp
  let user: CreatedUser

  before(async () => {
    app = await startApp()
    user = await signUp(app, { name: 'Many Devices' })
  })
  after(async () => {
    await app?.close()
  })

  /** Logs `user` in with a User-Agent; resolves to the sid cookie pair. */
  async function logInAs(agent: string, who: { email: string; password: string } = user): Promise<string> {
    const res = await app
      .http()
      .post('/login')
      .set('User-Agent', agent)
      .send({ email: who.email, password: who.password })
    expect(res.status, res.text).to.equal(200)
    return sidCookie(res)!
  }

  const list = (cookie: string) => app.http().get('/sessions').set('Cookie', cookie)
  const revoke = (cookie: string, handle: string) => app.http().delete(`/sessions/${handle}`).set('Cookie', cookie)
  const me = (cookie: string) => app.http().get('/me').set('Cookie', cookie)

  it('401 signed out, for both routes', async () => {
    expectError(await app.http().get('/sessions'), 401, 'unauthorized')
    expectError(await app.http().delete(`/sessions/${'a'.repeat(22)}`), 401, 'unauthorized')
  })

  it("lists the user's sessions: handle, times, the agent stored at sign-in, which one is this one; never a token", async () => {
    const phone = await logInAs(PHONE)
    const laptop = await logInAs(LAPTOP)
    const res = await list(laptop)
    expect(res.status, res.text).to.equal(200)
    expect(res.headers['cache-control']).to.equal('private, no-store')
    const sessions = res.body.sessions as Record<string, unknown>[]
    const mine = sessions.filter((s) => s.agent === PHONE || s.agent === LAPTOP)
    expect(mine).to.have.length(2)
    for (const session of sessions) {
      expect(Object.keys(session).sort()).to.deep.equal(['agent', 'createdAt', 'current', 'handle', 'lastSeenAt'])
      expect(session.handle).to.match(/^[A-Za-z0-9_-]{22}$/)
      expect(new Date(session.createdAt as string).getTime()).to.be.closeTo(Date.now(), 60_000)
      expect(new Date(session.lastSeenAt as string).getTime()).to.be.closeTo(Date.now(), 60_000)
    }
    expect(sessions.filter((s) => s.current).map((s) => s.agent)).to.deep.equal([LAPTOP])
    for (const cookie of [phone, laptop]) {
      const token = sessionIdOf(cookie)
      expect(res.text).not.to.include(token.slice(token.indexOf('.') + 1))
    }
    // the same list from the other device marks the other one
    const fromPhone = await list(phone)
    expect(
      fromPhone.body.sessions.filter((s: { current: boolean }) => s.current).map((s: { agent: string }) => s.agent),
    ).to.deep.equal([PHONE])
  })

  it("revokes another of one's own sessions: 204, that device is signed out, this one is not", async () => {
    const phone = await logInAs(PHONE)
    const laptop = await logInAs(LAPTOP)
    const phoneHandle = (await list(phone)).body.sessions.find((s: { current: boolean }) => s.current).handle
    const res = await revoke(laptop, phoneHandle)
    expect(res.status, res.text).to.equal(204)
    expect(clearsSid(res)).to.equal(false)
    expectError(await me(phone), 401, 'unauthorized')
    expect((await me(laptop)).status).to.equal(200)
    const handles = (await list(laptop)).body.sessions.map((s: { handle: string }) => s.handle)
    expect(handles).not.to.include(phoneHandle)
    // twice: it is gone
    expectError(await revoke(laptop, phoneHandle), 404, 'session_not_found')
  })

  it('revoking the current session signs out: 204, the cookie is cleared, the session is gone', async () => {
    const laptop = await logInAs(LAPTOP)
    const handle = (await list(laptop)).body.sessions.find((s: { current: boolean }) => s.current).handle
    const res = await revoke(laptop, handle)
    expect(res.status, res.text).to.equal(204)
    expect(clearsSid(res)).to.equal(true)
    expectError(await me(laptop), 401, 'unauthorized')
  })

  it("someone else's session: 404, and it lives on; an unknown handle: 404; a malformed one: 400", async () => {
    const other = await signUp(app, { name: 'Someone Else' })
    const theirs = await logInAs(PHONE, other)
    const mine = await logInAs(LAPTOP)
    const theirHandle = (await list(theirs)).body.sessions[0].handle
    expectError(await revoke(mine, theirHandle), 404, 'session_not_found')
    expect((await me(theirs)).body.id).to.equal(other.id)
    expectError(await revoke(mine, 'A'.repeat(22)), 404, 'session_not_found')
    expectError(await revoke(mine, 'not-a-handle'), 400, 'invalid_handle')
    expectError(await revoke(mine, `${'a'.repeat(21)}%2F`), 400, 'invalid_handle')
  })

  it('a session without a User-Agent lists an empty agent', async () => {
    const other = await signUp(app, { name: 'No Agent' })
    const res = await app
      .http()
      .post('/login')
      .unset('User-Agent')
      .send({ email: other.email, password: other.password })
    const cookie = sidCookie(res)!
    const listed = await list(cookie)
    expect(listed.body.sessions).to.have.length(1)
    expect(listed.body.sessions[0]).to.include({ agent: '', current: true })
  })
})

describe('the UI: GET / and its files', () => {
  let app: TestApp
  // the app-wide CSP (helmet, security-headers.ts)
  const CSP =
    "default-src 'self';img-src 'self' data:;object-src 'none';base-uri 'none';frame-ancestors 'none';form-action 'self'"

  before(async () => {
    app = await startApp()
  })
  after(async () => {
    await app?.close()
  })

  it('GET / is the HTML page, under a strict CSP, with no inline script or style', async () => {
    const res = await app.http().get('/')
    expect(res.status).to.equal(200)
    expect(res.headers['content-type']).to.match(/^text\/html/)
    expect(res.headers['content-security-policy']).to.equal(CSP)
    expect(res.text).to.include('<script type="module" src="/app.js"></script>')
    expect(res.text).to.include('<link rel="stylesheet" href="/style.css">')
    expect(res.text).not.to.match(/<script(?![^>]*\bsrc=)[^>]*>/)
    expect(res.text).not.to.match(/<style|\sstyle=|\son[a-z]+=/i)
  })

  it('serves app.js and style.css with their types and the same CSP', async () => {
    for (const [path, type] of [
      ['/app.js', /^(text|application)\/javascript/],
      ['/style.css', /^text\/css/],
    ] as const) {
      const res = await app.http().get(path)
      expect(res.status, path).to.equal(200)
      expect(res.headers['content-type']).to.match(type)
      expect(res.headers['content-security-policy']).to.equal(CSP)
      expect(res.headers['x-content-type-options']).to.equal('nosniff')
    }
  })

  it('an unknown path is still the JSON 404, and the API routes carry the same (one) CSP', async () => {
    expectError(await app.http().get('/nothing-here.js'), 404, 'not_found')
    expectError(await app.http().post('/'), 404, 'not_found')
    const users = await app.http().get('/users')
    expect(users.headers['content-type']).to.match(/^application\/json/)
    expect(users.headers['content-security-policy']).to.equal(CSP)
  })
})
