import type { AddressInfo } from 'node:net'
import { expect } from 'chai'
import {
  clearsSid,
  expectError,
  logIn,
  PASSWORD,
  signedInUser,
  startApp,
  type TestApp,
  uniqueEmail,
} from './helpers/app.js'
import { countUsers, userRow } from './helpers/db.js'

const EVIL = 'https://evil.example'

/**
 * What a page on another site makes a browser send: an auto-submitted form (urlencoded) or a
 * fetch with `credentials: 'include'` (JSON; SameSite=Lax keeps the cookie out of those, but not
 * of a same-site page's). Modern browsers send Sec-Fetch-Site and Origin; older ones Origin only.
 */
const CROSS_SITE: Record<string, Record<string, string>> = {
  'Sec-Fetch-Site: cross-site and Origin': { 'Sec-Fetch-Site': 'cross-site', Origin: EVIL },
  'Origin only (no Sec-Fetch-Site)': { Origin: EVIL },
}

describe('CSRF: unsafe methods from another site are refused (403 csrf_rejected)', () => {
  let app: TestApp
  /** This app's own origin, as a browser on its page sends it. */
  let own: string
  before(async () => {
    app = await startApp()
    own = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`
  })
  after(async () => {
    await app?.close()
  })

  /** The handles of `cookie`'s user's sessions. */
  async function handles(cookie: string): Promise<{ handle: string; current: boolean }[]> {
    const res = await app.http().get('/sessions').set('Cookie', cookie)
    expect(res.status, res.text).to.equal(200)
    return res.body.sessions
  }

  for (const [how, headers] of Object.entries(CROSS_SITE)) {
    describe(how, () => {
      it('a cross-site form post to POST /logout-everywhere: 403, every session lives on', async () => {
        const user = await signedInUser(app)
        const other = await logIn(app, user)
        const res = await app
          .http()
          .post('/logout-everywhere')
          .set('Cookie', user.cookie)
          .set(headers)
          .type('form')
          .send('confirm=yes')
        expectError(res, 403, 'csrf_rejected')
        expect(clearsSid(res)).to.equal(false)
        for (const cookie of [user.cookie, other]) {
          expect((await app.http().get('/me').set('Cookie', cookie)).status).to.equal(200)
        }
      })

      it('PATCH /users/:id, as a form or as JSON: 403, the account unchanged', async () => {
        const user = await signedInUser(app)
        const before = await userRow(user.id)
        const form = await app
          .http()
          .patch(`/users/${user.id}`)
          .set('Cookie', user.cookie)
          .set(headers)
          .type('form')
          .send('name=Mallory&password=attacker-password')
        expectError(form, 403, 'csrf_rejected')
        const json = await app
          .http()
          .patch(`/users/${user.id}`)
          .set('Cookie', user.cookie)
          .set(headers)
          .send({ name: 'Mallory', email: uniqueEmail('mallory') })
        expectError(json, 403, 'csrf_rejected')
        expect(await userRow(user.id)).to.deep.equal(before)
      })

      it('DELETE /sessions/:handle: 403, the session still there', async () => {
        const user = await signedInUser(app)
        await logIn(app, user)
        const target = (await handles(user.cookie)).find((session) => !session.current)
        expect(target).to.not.equal(undefined)
        const res = await app.http().delete(`/sessions/${target!.handle}`).set('Cookie', user.cookie).set(headers)
        expectError(res, 403, 'csrf_rejected')
        expect((await handles(user.cookie)).map((session) => session.handle)).to.include(target!.handle)
      })

      it('DELETE /users/:id, POST /logout, and sign-up / sign-in (login CSRF): 403, nothing changed', async () => {
        const user = await signedInUser(app)
        expectError(
          await app
            .http()
            .delete(`/users/${user.id}`)
            .set('Cookie', user.cookie)
            .set(headers)
            .send({ currentPassword: user.password }),
          403,
          'csrf_rejected',
        )
        expect(await userRow(user.id)).to.not.equal(undefined)
        const logout = await app.http().post('/logout').set('Cookie', user.cookie).set(headers)
        expectError(logout, 403, 'csrf_rejected')
        expect((await app.http().get('/me').set('Cookie', user.cookie)).status).to.equal(200)
        const users = await countUsers()
        const signUp = await app
          .http()
          .post('/users')
          .set(headers)
          .send({ email: uniqueEmail(), name: 'X', password: PASSWORD })
        expectError(signUp, 403, 'csrf_rejected')
        expect(await countUsers()).to.equal(users)
        const login = await app.http().post('/login').set(headers).send({ email: user.email, password: PASSWORD })
        expectError(login, 403, 'csrf_rejected')
        expect(login.headers['set-cookie']).to.equal(undefined)
      })
    })
  }

  it('Sec-Fetch-Site: same-site (a sibling subdomain, which SameSite=Lax lets the cookie through from) is refused', async () => {
    const user = await signedInUser(app)
    const res = await app
      .http()
      .patch(`/users/${user.id}`)
      .set('Cookie', user.cookie)
      .set({ 'Sec-Fetch-Site': 'same-site', Origin: 'https://other.example.com' })
      .send({ name: 'Mallory' })
    expectError(res, 403, 'csrf_rejected')
    expect((await userRow(user.id))?.name).to.equal(user.name)
  })

  it('Origin: null (a sandboxed frame, a data: URL) is refused', async () => {
    const user = await signedInUser(app)
    const res = await app.http().post('/logout-everywhere').set('Cookie', user.cookie).set('Origin', 'null')
    expectError(res, 403, 'csrf_rejected')
    expect((await app.http().get('/me').set('Cookie', user.cookie)).status).to.equal(200)
  })

  it('same origin passes: Sec-Fetch-Site same-origin (the UI), or without it an Origin naming this host', async () => {
    const user = await signedInUser(app)
    const renamed = await app
      .http()
      .patch(`/users/${user.id}`)
      .set('Cookie', user.cookie)
      .set({ 'Sec-Fetch-Site': 'same-origin', Origin: own })
      .send({ name: 'Renamed' })
    expect(renamed.status, renamed.text).to.equal(200)
    expect((await userRow(user.id))?.name).to.equal('Renamed')
    const other = await logIn(app, user)
    const target = (await handles(other)).find((session) => !session.current)
    const ended = await app.http().delete(`/sessions/${target!.handle}`).set('Cookie', other).set('Origin', own)
    expect(ended.status, ended.text).to.equal(204)
    const everywhere = await app
      .http()
      .post('/logout-everywhere')
      .set('Cookie', other)
      .set({ 'Sec-Fetch-Site': 'same-origin', Origin: own })
    expect(everywhere.status, everywhere.text).to.equal(200)
  })

  it('with neither header (curl, a server) passes: the README walk-through works', async () => {
    const user = await signedInUser(app)
    const res = await app.http().patch(`/users/${user.id}`).set('Cookie', user.cookie).send({ name: 'From curl' })
    expect(res.status, res.text).to.equal(200)
    expect((await app.http().post('/logout-everywhere').set('Cookie', user.cookie)).status).to.equal(200)
  })

  it('safe methods are never refused: a cross-site GET is answered (it changes nothing)', async () => {
    const user = await signedInUser(app)
    const res = await app
      .http()
      .get('/me')
      .set('Cookie', user.cookie)
      .set(CROSS_SITE['Sec-Fetch-Site: cross-site and Origin']!)
    expect(res.status, res.text).to.equal(200)
  })

  it('behind a trusted proxy (TRUST_PROXY=1), an Origin naming the public host (X-Forwarded-Host) passes', async () => {
    const proxied = await startApp({ TRUST_PROXY: '1' })
    try {
      const user = await signedInUser(proxied)
      const via = (origin: string) =>
        proxied
          .http()
          .patch(`/users/${user.id}`)
          .set('Cookie', user.cookie)
          .set({ 'X-Forwarded-For': '203.0.113.9', 'X-Forwarded-Host': 'app.example', Origin: origin })
          .send({ name: 'Via the proxy' })
      expectError(await via(EVIL), 403, 'csrf_rejected')
      const res = await via('https://app.example')
      expect(res.status, res.text).to.equal(200)
    } finally {
      await proxied.close()
    }
  })
})
