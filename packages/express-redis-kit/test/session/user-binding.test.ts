import { createHash } from 'node:crypto'
import { expect } from 'chai'
import type { Request } from 'express'
import request from 'supertest'
import { type SessionMiddleware, type SessionOptions, session } from '../../src/index.js'
import { connectRedis, mode, type RedisClient, uniquePrefix } from '../helpers/redis.js'
import {
  checkpoint,
  handleOfCookie,
  SessionClient,
  sessionApp,
  sessionKey,
  userIndexKey,
  userTagOf,
} from '../helpers/session-app.js'
import { sleep } from '../helpers/session-redis.js'

/** What Redis knows of a session: base64url(SHA-256(token)), its entry in a user's index. */
const hashOf = (cookieValue: string): string => createHash('sha256').update(cookieValue.slice(12)).digest('base64url')

/**
 * A session bound to a user (its `userKey` field names one) is in that user's index, whatever
 * happened to it: bound, unbound, bound again with or without `regenerate()`, saved midway,
 * changed by two requests at once, or written by an instance with other timeouts. Otherwise
 * `listUserSessions`, `maxSessionsPerUser` and `destroyUserSessions` miss it, and a stolen
 * cookie survives "sign out everywhere".
 */
describe(`session: a session bound to a user is in their index (${mode} Redis)`, () => {
  let client: RedisClient
  before(async () => {
    client = await connectRedis()
  })
  after(async () => {
    await client.close()
  })

  function setup(name: string, options: Partial<SessionOptions> = {}, prefix = uniquePrefix(name)) {
    let gate = checkpoint()
    // Redis timeouts are not under test here: a loaded machine must not turn a save into a 503
    const sessions = session({ client, prefix, userKey: 'userId', timeoutMs: 5_000, ...options })
    const app = sessionApp(sessions, {
      slow: () => gate.wait(),
      routes: (app) => {
        app.post('/bind', (req, res) => {
          req.session.userId = Number(req.query.user)
          res.json({ ok: true })
        })
        // unbound and bound again within one request: no change at all
        app.post('/rebind', (req, res) => {
          delete req.session.userId
          req.session.userId = Number(req.query.user)
          res.json({ ok: true })
        })
        app.post('/unbind-save-rebind', async (req, res) => {
          delete req.session.userId
          await req.session.save()
          req.session.userId = Number(req.query.user)
          res.json({ ok: true })
        })
        app.post('/regenerate', async (req, res) => {
          await req.session.regenerate({ keepData: req.query.keep === '1' })
          res.json({ ok: true })
        })
        // stops at the gate after loading, then reloads and binds
        app.post('/slow-reload-bind', async (req: Request, res) => {
          await gate.wait()
          await req.session.reload()
          req.session.userId = Number(req.query.user)
          res.json({ ok: true })
        })
      },
    })
    return {
      prefix,
      sessions,
      app,
      /** A new gate for the next slow request. */
      gate: () => {
        gate = checkpoint()
        return gate
      },
    }
  }

  /**
   * Checks Redis against the invariant: the session `cookieValue` names, if its user field names
   * a user, is in that user's index, and the index lives at least as long as the session; and
   * every live session listed in the index of one of `users` is bound to that user.
   */
  async function checkIndex(prefix: string, cookieValue: string | undefined, users: number[], label: string) {
    if (cookieValue !== undefined) {
      const key = sessionKey(prefix, cookieValue)
      const field = await client.hGet(key, 'd:userId')
      if (field !== null && field !== 'null') {
        const user = String(JSON.parse(field))
        const index = userIndexKey(prefix, user)
        const entry = await client.zScore(index, hashOf(cookieValue))
        expect(entry, `${label}: bound to ${user}, the session is in their index`).to.not.equal(null)
        const sessionTtl = Number(await client.pTTL(key))
        const indexTtl = Number(await client.pTTL(index))
        expect(indexTtl, `${label}: the index outlives the session`).to.be.at.least(sessionTtl)
      }
    }
    for (const user of users) {
      for (const hash of await client.zRange(userIndexKey(prefix, user), 0, -1)) {
        const field = await client.hGet(`${prefix}{${userTagOf(user)}}:${hash}`, 'd:userId')
        if (field === null) continue // the session is gone: a dead entry, pruned on the index's next use
        expect(String(JSON.parse(field)), `${label}: an entry of ${user}'s index is bound to ${user}`).to.equal(
          String(user),
        )
      }
    }
  }

  /** The user the session a client holds is bound to (as GET /me shows it), if any. */
  async function boundUser(user: SessionClient): Promise<number | undefined> {
    return (await user.data()).userId as number | undefined
  }

  /**
   * "Sign out everywhere" ends the session the client holds if it is bound: listed by
   * `listUserSessions`, ended by `destroyUserSessions`, a copy of its cookie (stolen) opens nothing.
   */
  async function expectSignOutEverywhereEnds(
    sessions: SessionMiddleware,
    app: ReturnType<typeof sessionApp>,
    user: SessionClient,
    label: string,
  ) {
    const bound = await boundUser(user)
    if (bound === undefined) return
    const id = user.id() ?? ''
    const listed = (await sessions.listUserSessions(bound)).map((entry) => entry.handle)
    expect(listed, `${label}: listed for user ${bound}`).to.include(handleOfCookie(id))
    const stolen = user.header ?? ''
    expect(await sessions.destroyUserSessions(bound), `${label}: ended`).to.be.at.least(1)
    expect(
      (await request(app).get('/me').set('Cookie', stolen)).body.data,
      `${label}: the stolen cookie`,
    ).to.deep.equal({})
  }

  it('unbind, then bind the same user again without regenerate(): "sign out everywhere" ends it, a stolen cookie too', async () => {
    const { prefix, sessions, app } = setup('sess-bind-rebind')
    const user = new SessionClient(app)
    await user.post('/login?user=7')
    await user.post('/unset/userId') // "log out" without regenerate()
    await user.post('/bind?user=7') // and in again: the same token
    const stolen = user.header ?? ''
    expect(await user.data()).to.deep.equal({ userId: 7 })
    expect((await sessions.listUserSessions(7)).map((entry) => entry.handle)).to.deep.equal([
      handleOfCookie(user.id() ?? ''),
    ])
    expect(await client.zScore(userIndexKey(prefix, 7), hashOf(user.id() ?? ''))).to.not.equal(null)
    expect(await sessions.destroyUserSessions(7)).to.equal(1)
    expect((await request(app).get('/me').set('Cookie', stolen)).body.data).to.deep.equal({})
    expect(await user.data()).to.deep.equal({})
  })

  it('unbind, save(), bind the same user again, all in one request: still in the index', async () => {
    const { sessions, app } = setup('sess-bind-one-request')
    const user = new SessionClient(app)
    await user.post('/login?user=7')
    await user.post('/unbind-save-rebind?user=7')
    expect(await user.data()).to.deep.equal({ userId: 7 })
    expect((await sessions.listUserSessions(7)).map((entry) => entry.handle)).to.deep.equal([
      handleOfCookie(user.id() ?? ''),
    ])
  })

  it('every sequence of three of bind, bind another user, unbind, rebind, unbind-save-rebind, regenerate, a write, logout', async function () {
    this.timeout(120_000)
    const { prefix, sessions, app } = setup('sess-bind-sequences')
    const steps: Record<string, (first: number, second: number, step: number) => string> = {
      bind: (first) => `/bind?user=${first}`,
      'bind another': (_first, second) => `/bind?user=${second}`,
      unbind: () => '/unset/userId',
      rebind: (first) => `/rebind?user=${first}`,
      'unbind-save-rebind': (first) => `/unbind-save-rebind?user=${first}`,
      regenerate: () => '/regenerate?keep=1',
      write: (_first, _second, step) => `/set/color?value=${step}`,
      logout: () => '/logout',
    }
    const names = Object.keys(steps)
    const sequences: string[][] = []
    for (const a of names) for (const b of names) for (const c of names) sequences.push([a, b, c])
    // each sequence its own two users, so that one's "sign out everywhere" ends nothing of another's
    const run = async (sequence: string[], i: number) => {
      const [first, second] = [10_000 + 2 * i, 10_001 + 2 * i]
      const user = new SessionClient(app)
      for (const [step, name] of sequence.entries()) {
        const label = `${sequence.slice(0, step + 1).join(' → ')}`
        const res = await user.post((steps[name] as (typeof steps)[string])(first, second, step))
        expect(res.status, label).to.equal(200)
        await checkIndex(prefix, user.id(), [first, second], label)
      }
      await expectSignOutEverywhereEnds(sessions, app, user, sequence.join(' → '))
    }
    let next = 0
    const worker = async () => {
      while (next < sequences.length) {
        const i = next++
        await run(sequences[i] as string[], i)
      }
    }
    await Promise.all(Array.from({ length: 8 }, worker))
  })

  describe('two requests at once on one session', () => {
    /**
     * User 7 logs in; `slow` (a request that stops after loading the bound session) is started,
     * a second request unbinds the session meanwhile, then `slow` goes on and answers.
     * Resolves to what the session holds afterwards.
     */
    async function unbindDuring(name: string, slow: (user: SessionClient) => Promise<request.Response>) {
      const { prefix, sessions, app, gate } = setup(name)
      const user = new SessionClient(app)
      await user.post('/login?user=7')
      const slowGate = gate()
      const answer = slow(user)
      await slowGate.reached
      await user.post('/unset/userId')
      slowGate.release()
      expect((await answer).status).to.equal(200)
      const data = await user.data()
      await checkIndex(prefix, user.id(), [7], 'after the race')
      return { data, sessions, app, user }
    }

    it('one unbinds while another, loaded bound, writes the user field again (7 as "7"): in the index', async () => {
      const { data, sessions, app, user } = await unbindDuring('sess-bind-race-rewrite', (user) =>
        user.get('/slow?field=userId&value=7'),
      )
      expect(data).to.deep.equal({ userId: '7' })
      await expectSignOutEverywhereEnds(sessions, app, user, 'after the race')
    })

    it('one unbinds while another, loaded bound, writes another field: unbound, and out of the index', async () => {
      const { data, sessions } = await unbindDuring('sess-bind-race-stale', (user) =>
        user.get('/slow?field=color&value=red'),
      )
      expect(data).to.deep.equal({ color: 'red' })
      expect(await sessions.listUserSessions(7)).to.deep.equal([])
    })

    it('one unbinds while another, loaded bound, reloads and binds the same user: in the index', async () => {
      const { data, sessions, app, user } = await unbindDuring('sess-bind-race-reload', (user) =>
        user.post('/slow-reload-bind?user=7'),
      )
      expect(data).to.deep.equal({ userId: 7 })
      await expectSignOutEverywhereEnds(sessions, app, user, 'after the race')
    })
  })

  it('maxSessionsPerUser counts a session bound again in place: the least recently used other ends', async () => {
    const { sessions, app } = setup('sess-bind-cap', { maxSessionsPerUser: 2 })
    const [a, b, c] = [new SessionClient(app), new SessionClient(app), new SessionClient(app)]
    await a.post('/login?user=7')
    await sleep(5)
    await b.post('/login?user=7')
    await b.post('/unset/userId')
    await sleep(5)
    await c.post('/login?user=7')
    await sleep(5)
    await b.post('/bind?user=7')
    expect(await a.data(), 'the least recently used ended').to.deep.equal({})
    const listed = (await sessions.listUserSessions(7)).map((entry) => entry.handle).sort()
    expect(listed).to.deep.equal([handleOfCookie(b.id() ?? ''), handleOfCookie(c.id() ?? '')].sort())
  })

  it('an instance with a longer absoluteTimeout writes or refreshes the session: its index lives as long', async () => {
    const prefix = uniquePrefix('sess-bind-deadline')
    // the first instance: sessions end 3 s after creation; the index with them
    const old = setup('sess-bind-deadline', { idleTimeout: '3s', absoluteTimeout: '3s' }, prefix)
    // the next deploy: 1 h; reads refresh a session after a tenth of the 10 s idle timeout
    const next = setup('sess-bind-deadline', { idleTimeout: '10s', absoluteTimeout: '1h' }, prefix)
    // one user's session is written by the next deploy, another user's only read
    const written = new SessionClient(old.app)
    const read = new SessionClient(old.app)
    await written.post('/login?user=7')
    await read.post('/login?user=8')
    const writer = new SessionClient(next.app)
    writer.raw = written.raw
    await writer.post('/set/color?value=red')
    await checkIndex(prefix, writer.id(), [7], 'written by the next deploy')
    const reader = new SessionClient(next.app)
    reader.raw = read.raw
    await sleep(1_100) // past refreshEvery (1 s): the read refreshes the session
    expect(await reader.data()).to.deep.equal({ userId: 8 })
    await checkIndex(prefix, reader.id(), [8], 'refreshed by the next deploy')
    // past the first deploy's deadline: both still live, listed, and ended by "sign out everywhere"
    await sleep(2_200)
    expect(await writer.data()).to.deep.equal({ userId: 7, color: 'red' })
    expect(await reader.data()).to.deep.equal({ userId: 8 })
    for (const user of [7, 8]) {
      expect(await next.sessions.listUserSessions(user), `user ${user}`).to.have.length(1)
      expect(await next.sessions.destroyUserSessions(user), `user ${user}`).to.equal(1)
    }
    expect(await writer.data()).to.deep.equal({})
    expect(await reader.data()).to.deep.equal({})
  })
})
