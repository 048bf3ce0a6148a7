import { expect } from 'chai'
import request from 'supertest'
import { type SessionOptions, session } from '../../src/index.js'
import { recordingLogger } from '../helpers/outage.js'
import { connectRedis, type RedisClient, uniquePrefix } from '../helpers/redis.js'
import {
  dataOf,
  handleOfCookie,
  SessionClient,
  sessionApp,
  sessionIdOf,
  sessionKey,
  signedCookieHeader,
  userIndexKey,
} from '../helpers/session-app.js'
import { sleep } from '../helpers/session-redis.js'

/** The Redis Cluster hash slot of a key (CRC16/XMODEM of its hash tag, mod 16384). */
function hashSlot(key: string): number {
  const open = key.indexOf('{')
  const close = open === -1 ? -1 : key.indexOf('}', open + 1)
  const tagged = close > open + 1 ? key.slice(open + 1, close) : key
  let crc = 0
  for (const byte of Buffer.from(tagged)) {
    crc ^= byte << 8
    for (let bit = 0; bit < 8; bit++) crc = crc & 0x8000 ? ((crc << 1) ^ 0x1021) & 0xffff : (crc << 1) & 0xffff
  }
  return crc % 16384
}

describe('session per-user index (userKey)', () => {
  let client: RedisClient
  before(async () => {
    client = await connectRedis()
  })
  after(async () => {
    await client.close()
  })

  function setup(name: string, options: Partial<SessionOptions> = {}) {
    const prefix = uniquePrefix(name)
    const sessions = session({ client, prefix, userKey: 'userId', ...options })
    const app = sessionApp(sessions, {
      routes: (app) => {
        app.post('/logout-others', async (req, res) => {
          const destroyed = await sessions.destroyUserSessions(req.session.userId ?? 0, {
            except: req.session.handle,
          })
          res.json({ destroyed })
        })
        app.post('/switch', (req, res) => {
          dataOf(req).userId = String(req.query.user)
          res.json({ ok: true })
        })
        app.get('/handle', (req, res) => void res.json({ handle: req.session.handle }))
        app.get('/sessions', async (req, res) => {
          const list = await sessions.listUserSessions(req.session.userId ?? 0)
          res.json(list.map((entry) => ({ ...entry, current: entry.handle === req.session.handle })))
        })
        app.post('/revoke/:handle', async (req, res) => {
          res.json({ ended: await sessions.destroyUserSession(req.session.userId ?? 0, req.params.handle) })
        })
      },
    })
    return { prefix, sessions, app }
  }

  const handles = (list: { handle: string }[]): string[] => list.map((entry) => entry.handle).sort()

  it('listUserSessions: [{ handle, createdAt, lastSeenAt }] of two clients logged in as the same user, never a token', async () => {
    const { sessions, app } = setup('sess-index-list')
    const before = Date.now()
    const phone = new SessionClient(app)
    const laptop = new SessionClient(app)
    const phoneCookie = sessionIdOf(await phone.post('/login?user=7'))
    const laptopCookie = sessionIdOf(await laptop.post('/login?user=7'))
    await new SessionClient(app).post('/login?user=8')
    const list = await sessions.listUserSessions(7)
    expect(handles(list)).to.deep.equal([handleOfCookie(phoneCookie), handleOfCookie(laptopCookie)].sort())
    for (const entry of list) {
      expect(Object.keys(entry).sort()).to.deep.equal(['createdAt', 'handle', 'lastSeenAt'])
      expect(entry.createdAt).to.be.instanceOf(Date)
      expect(entry.lastSeenAt).to.be.instanceOf(Date)
      expect(entry.createdAt.getTime()).to.be.closeTo(before, 60_000)
      expect(entry.lastSeenAt.getTime()).to.be.at.least(entry.createdAt.getTime())
      for (const cookie of [phoneCookie, laptopCookie]) expect(JSON.stringify(entry)).not.to.include(cookie.slice(12))
    }
    expect(await sessions.listUserSessions('7'), 'a number and its string name the same user').to.have.length(2)
    // The app can tell "this device" apart by comparing handles.
    const mine = (await phone.get('/sessions')).body as { handle: string; current: boolean }[]
    expect(mine.filter((entry) => entry.current).map((entry) => entry.handle)).to.deep.equal([
      handleOfCookie(phoneCookie),
    ])
  })

  it('lastSeenAt follows activity', async () => {
    const { sessions, app } = setup('sess-index-seen')
    const user = new SessionClient(app)
    await user.post('/login?user=7')
    const [first] = await sessions.listUserSessions(7)
    await sleep(30)
    await user.post('/set/color?value=red')
    const [second] = await sessions.listUserSessions(7)
    expect(second?.createdAt.getTime()).to.equal(first?.createdAt.getTime())
    expect(second?.lastSeenAt.getTime()).to.be.at.least((first?.lastSeenAt.getTime() ?? 0) + 30)
  })

  it("destroyUserSession(userId, handle) ends that one session; another user's handle ends nothing (false)", async () => {
    const { prefix, sessions, app } = setup('sess-index-one')
    const phone = new SessionClient(app)
    const laptop = new SessionClient(app)
    const mallory = new SessionClient(app)
    const phoneCookie = sessionIdOf(await phone.post('/login?user=7'))
    await laptop.post('/login?user=7')
    const malloryCookie = sessionIdOf(await mallory.post('/login?user=666'))
    // Mallory tries to end Alice's phone through her own account: not hers, nothing happens.
    const stolen = await mallory.post(`/revoke/${handleOfCookie(phoneCookie)}`)
    expect(stolen.body.ended).to.equal(false)
    expect(await phone.data()).to.deep.equal({ userId: 7 })
    expect(await sessions.destroyUserSession(7, handleOfCookie(malloryCookie))).to.equal(false)
    expect(await mallory.data()).to.deep.equal({ userId: 666 })
    // From the laptop, Alice signs her phone out.
    const revoked = await laptop.post(`/revoke/${handleOfCookie(phoneCookie)}`)
    expect(revoked.body.ended).to.equal(true)
    expect(await phone.data()).to.deep.equal({})
    expect(await client.exists(sessionKey(prefix, phoneCookie))).to.equal(0)
    expect(await laptop.data()).to.deep.equal({ userId: 7 })
    expect(await sessions.listUserSessions(7)).to.have.length(1)
    expect(await sessions.destroyUserSession(7, handleOfCookie(phoneCookie)), 'already ended').to.equal(false)
  })

  it('a handle that is not one (e.g. a token) is a TypeError naming it', async () => {
    const { sessions, app } = setup('sess-index-bad-handle')
    const cookie = sessionIdOf(await new SessionClient(app).post('/login?user=7'))
    for (const call of [
      () => sessions.destroyUserSession(7, cookie),
      () => sessions.destroyUserSessions(7, { except: cookie.slice(12) }),
    ]) {
      const error = await call().then(
        () => undefined,
        (reason: unknown) => reason,
      )
      expect(error).to.be.instanceOf(TypeError)
      expect(error).to.include({ code: 'ERK_INVALID_ARGUMENT' })
      expect((error as Error).message).to.match(/session handle/)
    }
    expect(await sessions.listUserSessions(7), 'nothing was ended').to.have.length(1)
  })

  it('destroyUserSessions logs out both clients at once and resolves to 2; other users keep theirs', async () => {
    const { prefix, sessions, app } = setup('sess-index-destroy')
    const phone = request.agent(app)
    const laptop = request.agent(app)
    const other = request.agent(app)
    const ids = [sessionIdOf(await phone.post('/login?user=7')), sessionIdOf(await laptop.post('/login?user=7'))]
    await other.post('/login?user=8')
    expect(await sessions.destroyUserSessions(7)).to.equal(2)
    const [a, b] = await Promise.all([phone.get('/me'), laptop.get('/me')])
    expect(a.body.data).to.deep.equal({})
    expect(b.body.data).to.deep.equal({})
    for (const id of ids) expect(await client.exists(sessionKey(prefix, id))).to.equal(0)
    expect(await sessions.listUserSessions(7)).to.deep.equal([])
    expect((await other.get('/me')).body.data).to.deep.equal({ userId: 8 })
    expect(await sessions.listUserSessions(8)).to.have.length(1)
    expect(await sessions.destroyUserSessions(7), 'nothing left to destroy').to.equal(0)
  })

  it('destroyUserSessions(userId, { except: req.session.handle }) keeps that session ("log out my other devices")', async () => {
    const { sessions, app } = setup('sess-index-except')
    const phone = new SessionClient(app)
    const laptop = new SessionClient(app)
    const tablet = new SessionClient(app)
    await phone.post('/login?user=7')
    const laptopCookie = sessionIdOf(await laptop.post('/login?user=7'))
    await tablet.post('/login?user=7')
    const res = await laptop.post('/logout-others')
    expect(res.body.destroyed).to.equal(2)
    expect(await laptop.data()).to.deep.equal({ userId: 7 })
    expect(await phone.data()).to.deep.equal({})
    expect(await tablet.data()).to.deep.equal({})
    expect(handles(await sessions.listUserSessions(7))).to.deep.equal([handleOfCookie(laptopCookie)])
  })

  it('a session that expired (idle 500 ms) is no longer listed, and its index entry is pruned', async () => {
    const { prefix, sessions, app } = setup('sess-index-expiry', { idleTimeout: '500ms' })
    const gone = new SessionClient(app)
    const active = new SessionClient(app)
    const goneCookie = sessionIdOf(await gone.post('/login?user=7'))
    const activeCookie = sessionIdOf(await active.post('/login?user=7'))
    expect(await sessions.listUserSessions(7)).to.have.length(2)
    for (let i = 0; i < 4; i++) {
      await sleep(200)
      await active.post('/touch')
    }
    expect(handles(await sessions.listUserSessions(7))).to.deep.equal([handleOfCookie(activeCookie)])
    const indexed = (await client.zRange(userIndexKey(prefix, 7), 0, -1)).map(String)
    expect(indexed.map((hash) => hash.slice(0, 22))).to.not.include(handleOfCookie(goneCookie))
    expect(await sessions.destroyUserSessions(7)).to.equal(1)
  })

  it('logout, a login as someone else and a change of the user field keep the index right', async () => {
    const { sessions, app } = setup('sess-index-moves')
    const user = new SessionClient(app)
    const first = sessionIdOf(await user.post('/login?user=7'))
    const second = sessionIdOf(await user.post('/login?user=8'))
    expect(await sessions.listUserSessions(7)).to.deep.equal([])
    expect(handles(await sessions.listUserSessions(8))).to.deep.equal([handleOfCookie(second)])
    expect(second).to.not.equal(first)
    // Bound to another user without regenerate(): the session moves to a new token (a new cookie).
    const switched = await user.post('/switch?user=9')
    const third = sessionIdOf(switched)
    expect(third).to.not.equal(second)
    expect(await sessions.listUserSessions(8)).to.deep.equal([])
    expect(handles(await sessions.listUserSessions(9))).to.deep.equal([handleOfCookie(third)])
    expect(await user.data()).to.deep.equal({ userId: '9' })
    const oldCookie = await request(app).get('/me').set('Cookie', signedCookieHeader(second))
    expect(oldCookie.body.data, 'the token before the move opens nothing').to.deep.equal({})
    await user.post('/logout')
    expect(await sessions.listUserSessions(9)).to.deep.equal([])
  })

  it('signing in on an anonymous session that holds data (no regenerate) moves it to a new token, data kept', async () => {
    const { sessions, app } = setup('sess-index-bind')
    const user = new SessionClient(app)
    const anonymous = sessionIdOf(await user.post('/set/color?value=red'))
    const bound = sessionIdOf(await user.post('/switch?user=7'))
    expect(bound).to.not.equal(anonymous)
    expect(await user.data()).to.deep.equal({ color: 'red', userId: '7' })
    expect(handles(await sessions.listUserSessions(7))).to.deep.equal([handleOfCookie(bound)])
    const old = await request(app).get('/me').set('Cookie', signedCookieHeader(anonymous))
    expect(old.body.data).to.deep.equal({})
  })

  it('user ids with braces, spaces and non-ASCII characters work', async () => {
    const { sessions, app } = setup('sess-index-odd')
    const userId = 'ünïcode {tag} #1'
    const user = new SessionClient(app)
    await user.post(`/switch?user=${encodeURIComponent(userId)}`)
    expect(await sessions.listUserSessions(userId)).to.have.length(1)
    expect(await sessions.listUserSessions('ünïcode {tag} #2')).to.deep.equal([])
    expect(await sessions.destroyUserSessions(userId)).to.equal(1)
    expect(await user.data()).to.deep.equal({})
  })

  it("a user's sessions share the slot of their index: every per-user operation is one atomic script", async () => {
    const { prefix, sessions, app } = setup('sess-index-slots')
    const cookies: string[] = []
    for (let i = 0; i < 3; i++) cookies.push(sessionIdOf(await new SessionClient(app).post('/login?user=7')))
    const other = sessionIdOf(await new SessionClient(app).post('/set/color?value=red'))
    expect(hashSlot('foo'), 'CLUSTER KEYSLOT foo').to.equal(12182)
    const indexSlot = hashSlot(userIndexKey(prefix, 7))
    for (const cookie of cookies) expect(hashSlot(sessionKey(prefix, cookie))).to.equal(indexSlot)
    expect(await client.exists(sessionKey(prefix, other)), 'an anonymous session lives elsewhere').to.equal(1)
    expect(await sessions.listUserSessions(7)).to.have.length(3)
    expect(await sessions.destroyUserSessions(7)).to.equal(3)
  })

  describe('meta', () => {
    it('meta(req) is stored when the session is created and listed with it', async () => {
      const { sessions, app } = setup('sess-index-meta', {
        meta: (req) => ({ userAgent: req.get('user-agent') ?? null, ip: req.ip, mobile: true }),
      })
      const phone = new SessionClient(app)
      await phone.post('/login?user=7', { 'User-Agent': 'Phone/1.0' })
      await phone.post('/set/color?value=red', { 'User-Agent': 'Changed/2.0' })
      const [entry] = await sessions.listUserSessions(7)
      expect(entry).to.include({ userAgent: 'Phone/1.0', mobile: true })
      expect(entry?.ip).to.be.a('string')
      expect(Object.keys(entry ?? {}).sort()).to.deep.equal([
        'createdAt',
        'handle',
        'ip',
        'lastSeenAt',
        'mobile',
        'userAgent',
      ])
    })

    it('meta fields cannot replace handle, createdAt or lastSeenAt; strings are cut at 256 characters', async () => {
      const { sessions, app } = setup('sess-index-meta-names', {
        meta: () => ({ handle: 'forged', createdAt: 'forged', userAgent: 'x'.repeat(1000) }),
      })
      const cookie = sessionIdOf(await new SessionClient(app).post('/login?user=7'))
      const [entry] = await sessions.listUserSessions(7)
      expect(entry?.handle).to.equal(handleOfCookie(cookie))
      expect(entry?.createdAt).to.be.instanceOf(Date)
      expect(entry?.userAgent).to.equal('x'.repeat(256))
    })

    it('meta over 1 KiB of JSON, or a meta(req) that throws: stored without it, a warning, the login works', async () => {
      const logger = recordingLogger()
      for (const meta of [
        () => Object.fromEntries(Array.from({ length: 20 }, (_, i) => [`field${i}`, 'y'.repeat(200)])),
        () => {
          throw new Error('no meta today')
        },
      ]) {
        const { sessions, app } = setup('sess-index-meta-big', { meta, logger })
        const user = new SessionClient(app)
        expect((await user.post('/login?user=7')).status).to.equal(200)
        expect(await user.data()).to.deep.equal({ userId: 7 })
        const [entry] = await sessions.listUserSessions(7)
        expect(Object.keys(entry ?? {}).sort()).to.deep.equal(['createdAt', 'handle', 'lastSeenAt'])
      }
      expect(logger.warnings.join('\n'))
        .to.match(/1024 bytes/)
        .and.to.match(/meta\(req\) failed/)
    })
  })

  describe('maxSessionsPerUser', () => {
    it('a login beyond the limit ends the least recently used session; the others and other users stay', async () => {
      const { sessions, app } = setup('sess-index-cap', { maxSessionsPerUser: 2 })
      const oldest = new SessionClient(app)
      const used = new SessionClient(app)
      await oldest.post('/login?user=7')
      await sleep(5)
      await used.post('/login?user=7')
      await new SessionClient(app).post('/login?user=8')
      // `oldest` was created first but used last: `used` is now the least recently used.
      await sleep(5)
      await oldest.post('/set/color?value=red')
      await sleep(5)
      const newest = new SessionClient(app)
      const newestCookie = sessionIdOf(await newest.post('/login?user=7'))
      expect(await used.data(), 'the least recently used session ended').to.deep.equal({})
      expect(await oldest.data()).to.deep.equal({ userId: 7, color: 'red' })
      expect(await newest.data()).to.deep.equal({ userId: 7 })
      const list = await sessions.listUserSessions(7)
      expect(list).to.have.length(2)
      expect(handles(list)).to.include(handleOfCookie(newestCookie))
      expect(await sessions.listUserSessions(8)).to.have.length(1)
    })

    it('20 logins of one user at once (on 4 connections) leave exactly the limit, every one of them working', async () => {
      const prefix = uniquePrefix('sess-index-cap-race')
      const clients = [client, ...(await Promise.all([connectRedis(), connectRedis(), connectRedis()]))]
      try {
        const apps = clients.map((redis) =>
          sessionApp(session({ client: redis, prefix, userKey: 'userId', maxSessionsPerUser: 3 })),
        )
        const browsers = Array.from({ length: 20 }, (_, i) => new SessionClient(apps[i % apps.length]!))
        await Promise.all(browsers.map((browser) => browser.post('/login?user=7')))
        const listed = await session({ client, prefix, userKey: 'userId' }).listUserSessions(7)
        expect(listed).to.have.length(3)
        const alive = (await Promise.all(browsers.map((browser) => browser.data()))).filter((data) => data.userId === 7)
        expect(alive).to.have.length(3)
      } finally {
        await Promise.all(clients.slice(1).map((redis) => redis.close()))
      }
    })

    it('must be a positive integer, and needs userKey', () => {
      for (const options of [{ maxSessionsPerUser: 0, userKey: 'userId' }, { maxSessionsPerUser: 2 }]) {
        let thrown: unknown
        try {
          session({ client, ...options })
        } catch (error) {
          thrown = error
        }
        expect(thrown).to.be.instanceOf(TypeError)
        expect((thrown as Error).message).to.include('`maxSessionsPerUser`')
      }
    })
  })

  it('a user id that is not a string or a finite number (undefined: no one signed in) is an ArgumentError, not a user "undefined"', async () => {
    const { sessions, app } = setup('sess-index-bad-user')
    const named = new SessionClient(app) // a user whose id is the string "undefined"
    await named.post('/login?user=1')
    await named.post('/switch?user=undefined')
    const handle = 'a'.repeat(22)
    for (const [name, call] of [
      ['listUserSessions', (user: unknown) => sessions.listUserSessions(user as number)],
      ['destroyUserSession', (user: unknown) => sessions.destroyUserSession(user as number, handle)],
      ['destroyUserSessions', (user: unknown) => sessions.destroyUserSessions(user as number)],
    ] as const) {
      for (const user of [undefined, null, Number.NaN, { id: 7 }]) {
        const error = await call(user).then(
          () => undefined,
          (reason: unknown) => reason,
        )
        expect(error, `${name}(${String(user)})`).to.include({ code: 'ERK_INVALID_ARGUMENT', status: 400 })
        expect((error as Error).message)
          .to.include('`userId`')
          .and.include(`${name}()`)
      }
    }
    expect(await sessions.listUserSessions('undefined'), 'the user "undefined" kept its session').to.have.length(1)
  })

  it('listUserSessions, destroyUserSession and destroyUserSessions need the userKey option (ERK_MISCONFIGURED)', async () => {
    const sessions = session({ client, prefix: uniquePrefix('sess-index-none') })
    for (const call of [
      () => sessions.listUserSessions(7),
      () => sessions.destroyUserSessions(7),
      () => sessions.destroyUserSession(7, 'a'.repeat(22)),
    ]) {
      let thrown: unknown
      try {
        await call()
      } catch (error) {
        thrown = error
      }
      expect(thrown).to.include({ code: 'ERK_MISCONFIGURED' })
      expect((thrown as Error).message).to.match(/userKey/)
    }
  })
})
