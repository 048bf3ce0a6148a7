import { expect } from 'chai'
import { startApp, type TestApp } from './helpers/app.js'

describe('GET /healthz', () => {
  let app: TestApp
  before(async () => {
    app = await startApp()
  })
  after(async () => {
    await app?.close()
  })

  it("answers 200 { status: 'ok', redis: 'up', database: 'up' }, not cached", async () => {
    const res = await app.http().get('/healthz')
    expect(res.status).to.equal(200)
    expect(res.body).to.deep.equal({ status: 'ok', redis: 'up', database: 'up' })
    expect(res.headers['cache-control']).to.equal('no-store')
  })
})
