import { expect } from 'chai'
import cookieParser from 'cookie-parser'
import request from 'supertest'
import { session } from '../../src/index.js'
import { type RedisClient, uniquePrefix } from '../helpers/redis.js'
import {
  neverIssuedId,
  type SetCookie,
  sessionApp,
  sessionIdOf,
  sessionKey,
  setCookieOf,
  sign,
  signedCookieHeader,
} from '../helpers/session-app.js'
import { commandCounter, type DisposableStore, startDisposableStore } from '../helpers/session-redis.js'

/** A cookie that is absent, or one that only clears the session cookie. */
function expectNoSessionCookie(cookie: SetCookie | undefined): void {
  if (cookie === undefined) return
  expect(cookie.value, 'a Set-Cookie that is not a clearing one').to.equal('')
  expect(new Date(String(cookie.attributes.expires)).getTime()).to.equal(0)
}

describe('session cookies', () => {
  // A Redis (or cluster) of our own: the command counts below see no other client.
  let store: DisposableStore
  let client: RedisClient
  let counter: ReturnType<typeof commandCounter>
  before(async () => {
    store = await startDisposableStore()
    client = await store.connect()
    counter = commandCounter(store.addresses)
  })
  after(async () => {
    await client?.close()
    await store?.stop()
  })

  describe('signing through cookie-parser', () => {
    it('signs the session cookie with the first secret and it names the stored session', async () => {
      const prefix = uniquePrefix('sess-sign')
      const app = sessionApp(session({ client, prefix }), { secrets: ['first', 'second'] })
      const login = await request(app).post('/login?user=7')
      const cookie = setCookieOf(login)
      expect(cookie?.value).to.match(/^s:/)
      const id = sessionIdOf(login, 'first')
      expect(cookieParser.signedCookie(cookie?.value ?? '', 'second')).to.equal(false)
      expect(await client.hGet(sessionKey(prefix, id), 'd:userId')).to.equal('7')
    })
  })

  describe('a cookie that is not a correctly signed, well-formed id: no session and no Redis call', () => {
    const prefix = uniquePrefix('sess-bad-cookie')
    let app: ReturnType<typeof sessionApp>
    let liveId: string
    before(async () => {
      app = sessionApp(session({ client, prefix }))
      liveId = sessionIdOf(await request(app).post('/login?user=7'))
      // The first load of a script on a server costs an extra EVAL: warm it up.
      const warm = await request(app).get('/me').set('Cookie', signedCookieHeader(liveId))
      expect(warm.body.data).to.deep.equal({ userId: 7 })
    })

    const cases: [string, () => string][] = [
      ['an unsigned cookie holding a live id', () => `sid=${liveId}`],
      ['a cookie signed with another secret', () => signedCookieHeader(liveId, 'not the secret')],
      [
        'a signed cookie whose id was changed',
        () =>
          `sid=${encodeURIComponent(`s:${sign(liveId, 'current secret').replace(/^./, (c) => (c === 'A' ? 'B' : 'A'))}`)}`,
      ],
      [
        'a signed cookie whose signature was changed',
        () => `sid=${encodeURIComponent(`s:${liveId}.${'A'.repeat(43)}`)}`,
      ],
      ['a signed cookie with its signature cut off', () => `sid=${encodeURIComponent(`s:${liveId}`)}`],
      ['a correctly signed id that is too short (42 characters)', () => signedCookieHeader(liveId.slice(1))],
      ['a correctly signed id that is too long (44 characters)', () => signedCookieHeader(`${liveId}A`)],
      ['a correctly signed id with characters outside base64url', () => signedCookieHeader(`${liveId.slice(0, 41)}+/`)],
      ['a correctly signed id with a Redis hash tag in it', () => signedCookieHeader(`${liveId.slice(0, 40)}}{x`)],
      ['a correctly signed empty id', () => signedCookieHeader('')],
    ]
    for (const [name, header] of cases) {
      it(name, async () => {
        let res: request.Response | undefined
        const delta = await counter.during(async () => {
          res = await request(app).get('/me').set('Cookie', header())
        })
        expect(res?.status).to.equal(200)
        expect(res?.body.data).to.deep.equal({})
        expectNoSessionCookie(res && setCookieOf(res))
        expect(delta.total, JSON.stringify(delta.calls)).to.equal(0)
        // The live session was not touched.
        const after = await request(app).get('/me').set('Cookie', signedCookieHeader(liveId))
        expect(after.body.data).to.deep.equal({ userId: 7 })
      })
    }

    it('a correctly signed id the server never issued: no session, one read (the load) and no write', async () => {
      const forged = neverIssuedId()
      let res: request.Response | undefined
      const delta = await counter.during(async () => {
        res = await request(app).get('/me').set('Cookie', signedCookieHeader(forged))
      })
      expect(res?.status).to.equal(200)
      expect(res?.body.data).to.deep.equal({})
      expectNoSessionCookie(res && setCookieOf(res))
      expect(delta.calls.hgetall, JSON.stringify(delta.calls)).to.equal(1)
      expect(delta.total, JSON.stringify(delta.calls)).to.equal(1)
      expect(delta.writes).to.equal(0)
      expect(await client.exists(sessionKey(prefix, forged))).to.equal(0)
    })

    it('a correctly signed id the server never issued is never adopted: a write gets a new id', async () => {
      const forged = neverIssuedId()
      const res = await request(app).post('/set/color?value=red').set('Cookie', signedCookieHeader(forged))
      expect(res.status).to.equal(200)
      const id = sessionIdOf(res)
      expect(id).to.not.equal(forged)
      expect(await client.exists(sessionKey(prefix, forged))).to.equal(0)
      expect(await client.hGet(sessionKey(prefix, id), 'd:color')).to.equal('"red"')
    })

    it('a write with a tampered cookie gets a new id, and the live session it pointed at is unchanged', async () => {
      const res = await request(app)
        .post('/set/color?value=red')
        .set('Cookie', signedCookieHeader(liveId, 'not the secret'))
      const id = sessionIdOf(res)
      expect(id).to.not.equal(liveId)
      expect(await client.hGet(sessionKey(prefix, liveId), 'd:color')).to.equal(null)
    })
  })

  describe('secret rotation (cookieParser([new, old]))', () => {
    it('a cookie signed with an older secret still in the array is accepted; a change re-signs it with the first', async () => {
      const prefix = uniquePrefix('sess-rotate')
      const sessions = session({ client, prefix })
      const before = sessionApp(sessions, { secrets: ['old'] })
      const login = await request(before).post('/login?user=7')
      const id = sessionIdOf(login, 'old')
      const oldCookie = `sid=${setCookieOf(login)?.raw}`

      const after = sessionApp(sessions, { secrets: ['new', 'old'] })
      const me = await request(after).get('/me').set('Cookie', oldCookie)
      expect(me.body.data).to.deep.equal({ userId: 7 })
      expect(setCookieOf(me), 'a read-only request does not re-send the cookie').to.equal(undefined)

      const change = await request(after).post('/set/color?value=red').set('Cookie', oldCookie)
      expect(change.status).to.equal(200)
      expect(sessionIdOf(change, 'new')).to.equal(id)
      expect(cookieParser.signedCookie(setCookieOf(change)?.value ?? '', 'old')).to.equal(false)
      const again = await request(after)
        .get('/me')
        .set('Cookie', `sid=${setCookieOf(change)?.raw}`)
      expect(again.body.data).to.deep.equal({ userId: 7, color: 'red' })
    })

    it('a cookie re-sent by touch() is signed with the first secret, for the same id', async () => {
      const prefix = uniquePrefix('sess-rotate-touch')
      const sessions = session({ client, prefix })
      const login = await request(sessionApp(sessions, { secrets: ['old'] })).post('/login?user=7')
      const id = sessionIdOf(login, 'old')
      const touched = await request(sessionApp(sessions, { secrets: ['new', 'old'] }))
        .post('/touch')
        .set('Cookie', `sid=${setCookieOf(login)?.raw}`)
      expect(sessionIdOf(touched, 'new')).to.equal(id)
    })

    it('a cookie signed with a secret that was removed from the array is no session', async () => {
      const prefix = uniquePrefix('sess-retired')
      const sessions = session({ client, prefix })
      const login = await request(sessionApp(sessions, { secrets: ['retired'] })).post('/login?user=7')
      const me = await request(sessionApp(sessions, { secrets: ['new'] }))
        .get('/me')
        .set('Cookie', `sid=${setCookieOf(login)?.raw}`)
      expect(me.body.data).to.deep.equal({})
    })
  })

  describe('without cookie-parser and a secret', () => {
    for (const [name, secrets] of [
      ['cookie-parser not mounted', false],
      ['cookie-parser mounted without a secret', null],
    ] as const) {
      it(`${name}: the first request fails with ERK_MISCONFIGURED saying to mount cookie-parser`, async () => {
        const app = sessionApp(session({ client, prefix: uniquePrefix('sess-nocp') }), { secrets })
        const res = await request(app).get('/me')
        expect(res.status).to.equal(500)
        expect(res.body.code).to.equal('ERK_MISCONFIGURED')
        expect(res.body.error).to.match(/cookie-parser/)
        expect(res.body.error).to.match(/secret/)
        const [error] = app.locals.errors as Error[]
        expect(error).to.be.instanceOf(Error)
        expect((error as Error & { code: string }).code).to.equal('ERK_MISCONFIGURED')
      })
    }
  })
})
