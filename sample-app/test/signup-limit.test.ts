import { expect } from 'chai'
import { expectError, PASSWORD, signUp, startApp, type TestApp, uniqueEmail } from './helpers/app.js'
import { countUsers, userByEmail } from './helpers/db.js'

describe('sign-up limit per client IP (SIGNUP_RATE_LIMIT=3)', () => {
  let app: TestApp
  before(async () => {
    app = await startApp({ SIGNUP_RATE_LIMIT: '3' })
  })
  after(async () => {
    await app?.close()
  })

  it('the 4th sign-up from one IP within the hour is 429 and creates nothing', async () => {
    for (let i = 0; i < 3; i++) await signUp(app)
    const count = await countUsers()
    const email = uniqueEmail('over-limit')
    const res = await app.http().post('/users').send({ email, name: 'One Too Many', password: PASSWORD })
    expectError(res, 429, 'rate_limited')
    expect(Number(res.headers['retry-after'])).to.be.at.least(1)
    expect(res.headers.ratelimit, 'RateLimit header').to.be.a('string')
    expect(await userByEmail(email)).to.equal(undefined)
    expect(await countUsers()).to.equal(count)
  })
})
