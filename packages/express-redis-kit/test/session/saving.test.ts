import { expect } from 'chai'
import request from 'supertest'
import { session } from '../../src/index.js'
import { connectRedis, type RedisClient, uniquePrefix } from '../helpers/redis.js'
import { SessionClient, sessionApp, sessionIdOf, sessionKey, setCookieOf } from '../helpers/session-app.js'
import { sleep } from '../helpers/session-redis.js'

describe('session saving before the response goes out', () => {
  let client: RedisClient
  before(async () => {
    client = await connectRedis()
  })
  after(async () => {
    await client.close()
  })

  it('a login that redirects: the 302 carries the cookie and no-store, and the next request sees the user', async () => {
    const app = sessionApp(session({ client, prefix: uniquePrefix('sess-redirect') }))
    const agent = request.agent(app)
    const login = await agent.post('/login?user=7&redirect=1')
    expect(login.status).to.equal(302)
    expect(login.headers.location).to.equal('/me')
    expect(sessionIdOf(login)).to.be.a('string')
    expect(login.headers['cache-control']).to.equal('no-store')
    const me = await agent.get(login.headers.location as string)
    expect(me.body.data).to.deep.equal({ userId: 7 })
  })

  it('the data is in Redis by the time the client has the response', async () => {
    const prefix = uniquePrefix('sess-saved-first')
    const app = sessionApp(session({ client, prefix }))
    const user = new SessionClient(app)
    const login = await user.post('/login?user=7')
    const id = sessionIdOf(login)
    expect(await client.hGet(sessionKey(prefix, id), 'd:userId')).to.equal('7')
    await user.post('/set/color?value=red')
    expect(await client.hGet(sessionKey(prefix, id), 'd:color')).to.equal('"red"')
  })

  it('a streamed response (several res.write() then res.end()): body intact and in order, cookie present', async () => {
    const chunks = Array.from({ length: 20 }, (_, i) => `chunk ${i};`)
    const app = sessionApp(session({ client, prefix: uniquePrefix('sess-stream') }), {
      routes: (app) =>
        app.get('/stream', async (req, res) => {
          req.session.color = 'streamed'
          res.type('text/plain')
          // Some chunks synchronously (queued behind the save), some after it (written directly).
          for (const chunk of chunks.slice(0, 10)) res.write(chunk)
          await sleep(50)
          for (const chunk of chunks.slice(10, 19)) {
            res.write(chunk)
            await sleep(1)
          }
          res.end(chunks[19])
        }),
    })
    const agent = request.agent(app)
    const res = await agent.get('/stream')
    expect(res.status).to.equal(200)
    expect(res.text).to.equal(chunks.join(''))
    expect(sessionIdOf(res)).to.be.a('string')
    expect(res.headers['cache-control']).to.equal('no-store')
    expect((await agent.get('/me')).body.data).to.deep.equal({ color: 'streamed' })
  })

  it('a streamed response that changes nothing goes out unchanged, without a cookie', async () => {
    const app = sessionApp(session({ client, prefix: uniquePrefix('sess-stream') }), {
      routes: (app) =>
        app.get('/stream', (_req, res) => {
          res.type('text/plain')
          res.write('a')
          res.write(Buffer.from('b'))
          res.end('c')
        }),
    })
    const res = await request(app).get('/stream')
    expect(res.text).to.equal('abc')
    expect(setCookieOf(res)).to.equal(undefined)
  })

  it('an explicit res.writeHead() before the body still carries the cookie', async () => {
    const app = sessionApp(session({ client, prefix: uniquePrefix('sess-writehead') }), {
      routes: (app) =>
        app.get('/head', (req, res) => {
          req.session.color = 'head'
          res.writeHead(200, { 'Content-Type': 'text/plain' })
          res.end('ok')
        }),
    })
    const agent = request.agent(app)
    const res = await agent.get('/head')
    expect(res.text).to.equal('ok')
    expect(sessionIdOf(res)).to.be.a('string')
    expect((await agent.get('/me')).body.data).to.deep.equal({ color: 'head' })
  })
})
