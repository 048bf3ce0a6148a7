import { expect } from 'chai'
import request from 'supertest'
import { type RedisClient, session } from '../../src/index.js'
import { connectRedis, uniquePrefix } from '../helpers/redis.js'
import { dataOf, SessionClient, sessionApp, sessionIdOf, sessionKey, userIndexKey } from '../helpers/session-app.js'
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

  function setup(name: string, options: { idleTimeout?: `${number}ms` } = {}) {
    const prefix = uniquePrefix(name)
    const sessions = session({ client, prefix, userKey: 'userId', ...options })
    const app = sessionApp(sessions, {
      routes: (app) => {
        app.post('/logout-others', async (req, res) => {
          const destroyed = await sessions.destroyUserSessions(req.session.userId ?? 0, { except: req.session.id })
          res.json({ destroyed })
        })
        app.post('/switch', (req, res) => {
          dataOf(req).userId = String(req.query.user)
          res.json({ ok: true })
        })
      },
    })
    return { prefix, sessions, app }
  }

  it('listUserSessions: [{ id, createdAt, lastSeenAt }] of two clients logged in as the same user', async () => {
    const { sessions, app } = setup('sess-index-list')
    const before = Date.now()
    const phone = new SessionClient(app)
    const laptop = new SessionClient(app)
    const phoneId = sessionIdOf(await phone.post('/login?user=7'))
    const laptopId = sessionIdOf(await laptop.post('/login?user=7'))
    await new SessionClient(app).post('/login?user=8')
    const list = await sessions.listUserSessions(7)
    expect(list.map((entry) => entry.id).sort()).to.deep.equal([phoneId, laptopId].sort())
    for (const entry of list) {
      expect(Object.keys(entry).sort()).to.deep.equal(['createdAt', 'id', 'lastSeenAt'])
      expect(entry.createdAt).to.be.instanceOf(Date)
      expect(entry.lastSeenAt).to.be.instanceOf(Date)
      expect(entry.createdAt.getTime()).to.be.closeTo(before, 60_000)
      expect(entry.lastSeenAt.getTime()).to.be.at.least(entry.createdAt.getTime())
    }
    expect(await sessions.listUserSessions('7'), 'a number and its string name the same user').to.have.length(2)
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

  it('destroyUserSessions(userId, { except }) keeps that session ("log out my other devices")', async () => {
    const { sessions, app } = setup('sess-index-except')
    const phone = new SessionClient(app)
    const laptop = new SessionClient(app)
    const tablet = new SessionClient(app)
    await phone.post('/login?user=7')
    const laptopId = sessionIdOf(await laptop.post('/login?user=7'))
    await tablet.post('/login?user=7')
    const res = await laptop.post('/logout-others')
    expect(res.body.destroyed).to.equal(2)
    expect(await laptop.data()).to.deep.equal({ userId: 7 })
    expect(await phone.data()).to.deep.equal({})
    expect(await tablet.data()).to.deep.equal({})
    expect((await sessions.listUserSessions(7)).map((entry) => entry.id)).to.deep.equal([laptopId])
  })

  it('a session that expired (idle 500 ms) is no longer listed, and its index entry is pruned', async () => {
    const { prefix, sessions, app } = setup('sess-index-expiry', { idleTimeout: '500ms' })
    const gone = new SessionClient(app)
    const active = new SessionClient(app)
    const goneId = sessionIdOf(await gone.post('/login?user=7'))
    const activeId = sessionIdOf(await active.post('/login?user=7'))
    expect(await sessions.listUserSessions(7)).to.have.length(2)
    for (let i = 0; i < 4; i++) {
      await sleep(200)
      await active.post('/touch')
    }
    expect((await sessions.listUserSessions(7)).map((entry) => entry.id)).to.deep.equal([activeId])
    expect(await client.zRange(userIndexKey(prefix, 7), 0, -1)).to.not.include(goneId)
    expect(await sessions.destroyUserSessions(7)).to.equal(1)
  })

  it('logout, a login as someone else and a change of the user field keep the index right', async () => {
    const { sessions, app } = setup('sess-index-moves')
    const user = new SessionClient(app)
    const first = sessionIdOf(await user.post('/login?user=7'))
    const second = sessionIdOf(await user.post('/login?user=8'))
    expect(await sessions.listUserSessions(7)).to.deep.equal([])
    expect((await sessions.listUserSessions(8)).map((entry) => entry.id)).to.deep.equal([second])
    expect(second).to.not.equal(first)
    await user.post('/switch?user=9')
    expect(await sessions.listUserSessions(8)).to.deep.equal([])
    expect((await sessions.listUserSessions(9)).map((entry) => entry.id)).to.deep.equal([second])
    await user.post('/logout')
    expect(await sessions.listUserSessions(9)).to.deep.equal([])
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

  it('the index and the sessions live in different hash slots (no cross-slot command is needed)', async () => {
    const { prefix, sessions, app } = setup('sess-index-slots')
    const ids: string[] = []
    for (let i = 0; i < 3; i++) ids.push(sessionIdOf(await new SessionClient(app).post('/login?user=7')))
    expect(hashSlot('foo'), 'CLUSTER KEYSLOT foo').to.equal(12182)
    const indexSlot = hashSlot(userIndexKey(prefix, 7))
    expect(ids.some((id) => hashSlot(sessionKey(prefix, id)) !== indexSlot)).to.equal(true)
    expect(await sessions.listUserSessions(7)).to.have.length(3)
    expect(await sessions.destroyUserSessions(7)).to.equal(3)
  })

  it('listUserSessions and destroyUserSessions need the userKey option', async () => {
    const sessions = session({ client, prefix: uniquePrefix('sess-index-none') })
    for (const call of [() => sessions.listUserSessions(7), () => sessions.destroyUserSessions(7)]) {
      let thrown: unknown
      try {
        await call()
      } catch (error) {
        thrown = error
      }
      expect(thrown).to.be.instanceOf(TypeError)
      expect((thrown as Error).message).to.match(/userKey/)
    }
  })
})
