import { once } from 'node:events'
import { type AddressInfo, createServer, type Server, type Socket } from 'node:net'
import { expect } from 'chai'
import {
  expectError,
  madeUpSessionValue,
  PASSWORD,
  signedSid,
  startApp,
  type TestApp,
  uniqueEmail,
} from './helpers/app.js'
import { freePort } from './helpers/redis.js'

const targets = [
  ['nothing listens at DATABASE_URL', async () => `postgresql://postgres@127.0.0.1:${await freePort()}/nothing_here`],
  ['the database does not exist', async () => 'postgresql://postgres@127.0.0.1:5432/express_redis_kit_test_missing'],
] as const

for (const [situation, databaseUrl] of targets)
  describe(`database down (${situation})`, () => {
    let app: TestApp
    before(async () => {
      app = await startApp({ DATABASE_URL: await databaseUrl() })
    })
    after(async () => {
      await app?.close()
    })

    it("GET /healthz answers 503 { status: 'down', redis: 'up', database: 'down' }", async () => {
      const res = await app.http().get('/healthz')
      expect(res.status).to.equal(503)
      expect(res.body).to.deep.equal({ status: 'down', redis: 'up', database: 'down' })
    })

    it('GET /users answers 503 database_unavailable with Retry-After (and caches nothing)', async () => {
      for (let i = 0; i < 2; i++) {
        const res = await app.http().get('/users')
        expectError(res, 503, 'database_unavailable')
        expect(res.headers['retry-after']).to.equal('5')
        expect(res.headers['x-cache']).to.equal('MISS')
      }
    })

    it('GET /users/:id answers 503 database_unavailable (not 404)', async () => {
      for (let i = 0; i < 2; i++) expectError(await app.http().get('/users/1'), 503, 'database_unavailable')
    })

    it('POST /users answers 503 database_unavailable', async () => {
      const res = await app
        .http()
        .post('/users')
        .send({ email: uniqueEmail(), name: 'No Database', password: PASSWORD })
      expectError(res, 503, 'database_unavailable')
    })

    it('POST /login answers 503 database_unavailable (not 401)', async () => {
      const res = await app.http().post('/login').send({ email: uniqueEmail(), password: PASSWORD })
      expectError(res, 503, 'database_unavailable')
    })

    it('input errors are still answered as such (400)', async () => {
      expectError(await app.http().get('/users/abc'), 400, 'invalid_id')
      expectError(await app.http().post('/users').send({ email: 'x' }), 400, 'validation_failed')
      expectError(await app.http().get('/me').set('Cookie', signedSid(madeUpSessionValue())), 401, 'unauthorized')
    })

    it('logs no internal error (500)', () => {
      expect(app.logger.errors, JSON.stringify(app.logger.errors)).to.deep.equal([])
    })
  })

describe('database stalled (accepts connections, never answers)', () => {
  let app: TestApp
  let blackHole: Server
  const sockets = new Set<Socket>()
  before(async () => {
    blackHole = createServer((socket) => {
      sockets.add(socket)
      socket.on('error', () => {})
    })
    blackHole.listen(0, '127.0.0.1')
    await once(blackHole, 'listening')
    const { port } = blackHole.address() as AddressInfo
    app = await startApp({ DATABASE_URL: `postgresql://postgres@127.0.0.1:${port}/stalled` })
  })
  after(async () => {
    await app?.close()
    for (const socket of sockets) socket.destroy()
    blackHole?.close()
  })

  it("GET /healthz answers 503 { database: 'down' } within the health check's deadline", async () => {
    const res = await app.http().get('/healthz')
    expect(res.status).to.equal(503)
    expect(res.body).to.deep.equal({ status: 'down', redis: 'up', database: 'down' })
  })

  it('GET /users/:id and POST /users answer 503 database_unavailable', async () => {
    expectError(await app.http().get('/users/1'), 503, 'database_unavailable')
    const res = await app.http().post('/users').send({ email: uniqueEmail(), name: 'Stalled', password: PASSWORD })
    expectError(res, 503, 'database_unavailable')
  })
})
