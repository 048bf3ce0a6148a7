import { expect } from 'chai'
import request from 'supertest'
import { session } from '../../src/index.js'
import { connectRedis, type RedisClient, uniquePrefix } from '../helpers/redis.js'
import { SessionClient, sessionApp, sessionIdOf, sessionKey, signedCookieHeader } from '../helpers/session-app.js'
import { recordingLogger } from '../helpers/session-redis.js'

describe('session corrupt data in Redis', () => {
  let client: RedisClient
  before(async () => {
    client = await connectRedis()
  })
  after(async () => {
    await client.close()
  })

  it('invalid JSON in a data field: no session, no crash, one (throttled) warning without the id', async () => {
    const prefix = uniquePrefix('sess-corrupt')
    const logger = recordingLogger()
    const app = sessionApp(session({ client, prefix, logger }))
    const first = sessionIdOf(await request(app).post('/login?user=7'))
    const second = sessionIdOf(await request(app).post('/login?user=8'))
    await client.hSet(sessionKey(prefix, first), 'd:cart', '{"not json')
    await client.hSet(sessionKey(prefix, second), 'd:color', 'undefined')
    for (const id of [first, second, first]) {
      const res = await request(app).get('/me').set('Cookie', signedCookieHeader(id))
      expect(res.status).to.equal(200)
      expect(res.body.data).to.deep.equal({})
    }
    expect(logger.warnings).to.have.length(1)
    expect(logger.errors).to.have.length(0)
    expect(String(logger.warnings[0]?.[0])).to.match(/JSON/)
    expect(logger.text()).to.not.include(first)
    expect(logger.text()).to.not.include(second)
    // The corrupt session is not adopted: a write starts a new one.
    const write = await request(app).post('/set/color?value=red').set('Cookie', signedCookieHeader(first))
    expect(write.status).to.equal(200)
    expect(sessionIdOf(write)).to.not.equal(first)
  })

  it('a session hash without valid timestamps is no session', async () => {
    const prefix = uniquePrefix('sess-corrupt-ts')
    const app = sessionApp(session({ client, prefix }))
    const noCreated = sessionIdOf(await request(app).post('/login?user=7'))
    const badSeen = sessionIdOf(await request(app).post('/login?user=7'))
    await client.hDel(sessionKey(prefix, noCreated), 'c')
    await client.hSet(sessionKey(prefix, badSeen), 's', 'yesterday')
    for (const id of [noCreated, badSeen]) {
      const res = await request(app).get('/me').set('Cookie', signedCookieHeader(id))
      expect(res.status).to.equal(200)
      expect(res.body.data).to.deep.equal({})
    }
  })

  it('a field named __proto__ (or constructor) stored in Redis stays a plain field and pollutes no prototype', async () => {
    const prefix = uniquePrefix('sess-proto')
    const app = sessionApp(session({ client, prefix }), {
      routes: (app) =>
        app.get('/inspect', (req, res) => {
          const own = (name: string) => Object.getOwnPropertyDescriptor(req.session, name)?.value
          res.json({
            // The session's prototype (where its methods live) is still its own, not the stored object.
            prototypeIntact:
              typeof Object.getPrototypeOf(req.session)?.save === 'function' &&
              !('polluted' in Object.getPrototypeOf(req.session)),
            sessionPolluted: (req.session as unknown as { polluted?: unknown }).polluted ?? null,
            objectPolluted: ({} as { polluted?: unknown }).polluted ?? null,
            ownProto: own('__proto__') ?? null,
            ownConstructor: own('constructor') ?? null,
            hasSave: typeof req.session.save,
          })
        }),
    })
    const user = new SessionClient(app)
    const id = sessionIdOf(await user.post('/login?user=7'))
    const key = sessionKey(prefix, id)
    await client.hSet(key, {
      'd:__proto__': '{"polluted":"yes","save":"overridden"}',
      'd:constructor': '{"prototype":{"polluted":"yes"}}',
    })
    const res = await user.get('/inspect')
    expect(res.status).to.equal(200)
    expect(res.body).to.deep.equal({
      prototypeIntact: true,
      sessionPolluted: null,
      objectPolluted: null,
      ownProto: { polluted: 'yes', save: 'overridden' },
      ownConstructor: { prototype: { polluted: 'yes' } },
      hasSave: 'function',
    })
    expect(({} as { polluted?: unknown }).polluted).to.equal(undefined)
    // A later change leaves those fields as they were.
    await user.post('/set/color?value=red')
    expect(await client.hGet(key, 'd:__proto__')).to.equal('{"polluted":"yes","save":"overridden"}')
    expect(await client.hGet(key, 'd:color')).to.equal('"red"')
  })
})
