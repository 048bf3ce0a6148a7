import { expect } from 'chai'
import express, { type Express } from 'express'
import request from 'supertest'
import { type SessionMiddleware, session } from '../../src/index.js'
import { stableHost } from '../helpers/cache-app.js'
import { connectRedis, dumpKeys, type RedisClient, uniquePrefix } from '../helpers/redis.js'
import {
  dataOf,
  SessionClient,
  sessionApp,
  sessionIdOf,
  sessionKey,
  setCookieOf,
  sign,
  signedCookieHeader,
} from '../helpers/session-app.js'
import { commandCounter, type DisposableStore, startDisposableStore } from '../helpers/session-redis.js'

/*
 * The token is never at rest: Redis holds a SHA-256 of it, so whoever reads Redis (a replica,
 * a backup, MONITOR, a leaked dump) can open no session with what they read. And the session
 * can check its own cookie (`secrets`), without cookie-parser, in the same format.
 */
describe('session tokens at rest, and the secrets option', () => {
  let client: RedisClient
  before(async () => {
    client = await connectRedis()
  })
  after(async () => {
    await client.close()
  })

  /** An app on `sessions` with a /sessions route that lists the user's sessions. */
  const appOf = (sessions: SessionMiddleware, secrets?: string[] | null) =>
    sessionApp(sessions, {
      secrets: secrets === undefined ? undefined : secrets,
      routes: (app) =>
        app.get(
          '/sessions',
          async (req, res) => void res.json(await sessions.listUserSessions(req.session.userId ?? 0)),
        ),
    })

  describe('nothing read from Redis opens a session', () => {
    it('after sign-in, save and list, no Redis key or value holds a token', async () => {
      const prefix = uniquePrefix('sess-at-rest')
      const sessions = session({ client, prefix, userKey: 'userId', meta: (req) => ({ agent: req.get('user-agent') }) })
      const app = appOf(sessions)
      const tokens: string[] = []
      for (const user of [7, 7, 8]) {
        const browser = new SessionClient(app)
        tokens.push(sessionIdOf(await browser.post(`/login?user=${user}`)).slice(12))
        await browser.post('/set/color?value=red')
        await browser.get('/sessions')
      }
      const anonymous = new SessionClient(app)
      tokens.push(sessionIdOf(await anonymous.post('/set/cart?value=book')).slice(12))
      const dump = await dumpKeys(prefix)
      expect(dump.size, 'three sessions of users, one anonymous, two indexes').to.equal(6)
      const everything = [...dump].flatMap(([key, content]) => [key, ...content]).join('\n')
      for (const token of tokens) {
        expect(everything).not.to.include(token)
        expect(everything).not.to.include(token.slice(0, 22))
      }
    })

    it('every string Redis holds, put in a cookie signed with the right secret, opens nothing', async () => {
      const prefix = uniquePrefix('sess-replay')
      const sessions = session({ client, prefix, userKey: 'userId' })
      const app = appOf(sessions)
      const user = new SessionClient(app)
      const cookieValue = sessionIdOf(await user.post('/login?user=7'))
      expect(await user.data()).to.deep.equal({ userId: 7 })
      const tag = cookieValue.slice(0, 11)

      const candidates = new Set<string>()
      for (const [key, content] of await dumpKeys(prefix)) {
        for (const text of [key, ...content]) {
          candidates.add(text)
          // The parts of a key: <prefix>{<tag>}:<hash> and <prefix>{<tag>}:user:<id>.
          for (const part of text.split(/[{}:]/)) if (part.length > 0) candidates.add(part)
        }
      }
      expect(candidates.size).to.be.at.least(5)
      let tried = 0
      for (const candidate of candidates) {
        for (const value of [candidate, `${tag}.${candidate}`]) {
          const res = await request(app).get('/me').set('Cookie', signedCookieHeader(value))
          expect(res.body.data, `a cookie holding ${value}`).to.deep.equal({})
          tried++
        }
      }
      expect(tried).to.be.at.least(10)
      expect(await user.data(), 'the real cookie still works').to.deep.equal({ userId: 7 })
    })

    it('the session key is the SHA-256 of the token under its tag', async () => {
      const prefix = uniquePrefix('sess-key')
      const app = appOf(session({ client, prefix }))
      const value = sessionIdOf(await request(app).post('/login?user=7'))
      expect(await client.exists(sessionKey(prefix, value))).to.equal(1)
      expect([...(await dumpKeys(prefix)).keys()]).to.deep.equal([sessionKey(prefix, value)])
    })
  })

  describe('secrets: the session signs and verifies its own cookie', () => {
    /** An Express app without cookie-parser. */
    const bareApp = (sessions: SessionMiddleware): Express => {
      const app = express()
      app.use(stableHost)
      app.use(sessions)
      app.post('/login', async (req, res) => {
        await req.session.regenerate()
        dataOf(req).userId = Number(req.query.user)
        res.json({ ok: true })
      })
      app.get('/me', (req, res) => void res.json({ data: { ...req.session } }))
      app.post('/set/:field', (req, res) => {
        dataOf(req)[String(req.params.field)] = String(req.query.value)
        res.json({ ok: true })
      })
      return app
    }

    it('works without cookie-parser; the cookie is signed as cookie-parser signs it', async () => {
      const sessions = session({ client, prefix: uniquePrefix('sess-secrets'), secrets: ['first secret'] })
      const user = new SessionClient(bareApp(sessions))
      const login = await user.post('/login?user=7')
      const value = sessionIdOf(login, 'first secret')
      expect(setCookieOf(login)?.value).to.equal(`s:${sign(value, 'first secret')}`)
      expect(await user.data()).to.deep.equal({ userId: 7 })
    })

    it('a cookie set behind cookie-parser is read with `secrets`, and the other way round', async () => {
      const prefix = uniquePrefix('sess-interop')
      const viaParser = appOf(session({ client, prefix }), ['current secret'])
      const viaSecrets = bareApp(session({ client, prefix, secrets: 'current secret' }))
      const one = new SessionClient(viaParser)
      await one.post('/login?user=7')
      const cookie = one.header ?? ''
      expect((await request(viaSecrets).get('/me').set('Cookie', cookie)).body.data).to.deep.equal({ userId: 7 })
      const two = new SessionClient(viaSecrets)
      await two.post('/login?user=8')
      expect(
        (
          await request(viaParser)
            .get('/me')
            .set('Cookie', two.header ?? '')
        ).body.data,
      ).to.deep.equal({
        userId: 8,
      })
    })

    it('rotation: a cookie signed with a retired secret still listed works, and is re-signed with the first on its next save', async () => {
      const prefix = uniquePrefix('sess-rotate')
      const before = bareApp(session({ client, prefix, secrets: ['old secret'] }))
      const after = bareApp(session({ client, prefix, secrets: ['new secret', 'old secret'] }))
      const user = new SessionClient(before)
      const value = sessionIdOf(await user.post('/login?user=7'), 'old secret')
      const oldCookie = user.header ?? ''
      const read = await request(after).get('/me').set('Cookie', oldCookie)
      expect(read.body.data).to.deep.equal({ userId: 7 })
      expect(setCookieOf(read), 'a read saves nothing, so it re-signs nothing').to.equal(undefined)
      const write = await request(after).post('/set/color?value=red').set('Cookie', oldCookie)
      expect(sessionIdOf(write, 'new secret')).to.equal(value)
      const dropped = bareApp(session({ client, prefix, secrets: ['new secret'] }))
      expect((await request(dropped).get('/me').set('Cookie', oldCookie)).body.data).to.deep.equal({})
    })

    describe('forged and malformed cookies never reach Redis', () => {
      let store: DisposableStore
      let counted: RedisClient
      before(async () => {
        store = await startDisposableStore()
        counted = await store.connect()
      })
      after(async () => {
        counted?.destroy()
        await store?.stop()
      })

      it('wrong signature, unsigned, another secret, garbage, a second cookie of the same name: no Redis command', async () => {
        const prefix = uniquePrefix('sess-forged')
        const app = bareApp(session({ client: counted, prefix, secrets: ['right secret'] }))
        const user = new SessionClient(app)
        const value = sessionIdOf(await user.post('/login?user=7'), 'right secret')
        const counter = commandCounter(store.addresses)
        const forged = [
          `sid=${encodeURIComponent(`s:${sign(value, 'wrong secret')}`)}`,
          `sid=${value}`,
          `sid=s:${value}`,
          `sid=${encodeURIComponent(`s:${value}.`)}`,
          'sid=%E0%A4%A',
          'sid=',
          `other=1; sid=${encodeURIComponent(`s:${sign(value, 'wrong secret')}`)}; sid=${encodeURIComponent(`s:${sign(value, 'right secret')}`)}`,
        ]
        const delta = await counter.during(async () => {
          for (const cookie of forged) {
            const res = await request(app).get('/me').set('Cookie', cookie)
            expect(res.body.data, cookie).to.deep.equal({})
          }
        })
        expect(delta.total, JSON.stringify(delta.calls)).to.equal(0)
        // The right cookie, after a pair without '=', still counts.
        const res = await request(app)
          .get('/me')
          .set('Cookie', `flag; sid=${encodeURIComponent(`s:${sign(value, 'right secret')}`)}`)
        expect(res.body.data).to.deep.equal({ userId: 7 })
      })
    })

    it('an empty secret or an empty list is a TypeError naming `secrets`', () => {
      for (const secrets of ['', [], [''], [1]]) {
        let thrown: unknown
        try {
          session({ client, secrets: secrets as string[] })
        } catch (error) {
          thrown = error
        }
        expect(thrown).to.be.instanceOf(TypeError)
        expect((thrown as Error).message).to.include('`secrets`')
      }
    })

    it('without `secrets` and without cookie-parser: ERK_MISCONFIGURED says what to do', async () => {
      const app = bareApp(session({ client, prefix: uniquePrefix('sess-none') }))
      app.use(((error, _req, res, _next) => {
        res.status(500).json({ code: error.code, message: error.message })
      }) as express.ErrorRequestHandler)
      const res = await request(app).get('/me')
      expect(res.body.code).to.equal('ERK_MISCONFIGURED')
      expect(res.body.message).to.match(/secrets.*cookie-parser/)
    })
  })
})
