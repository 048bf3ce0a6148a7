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

describe('sign-up limit: how long a refused client waits (SIGNUP_RATE_LIMIT=1)', () => {
  let app: TestApp
  before(async () => {
    app = await startApp({ SIGNUP_RATE_LIMIT: '1' })
  })
  after(async () => {
    await app?.close()
  })

  it('Retry-After and the message never say more than the one-hour window', async () => {
    await signUp(app)
    const res = await app.http().post('/users').send({ email: uniqueEmail(), name: 'Too Soon', password: PASSWORD })
    const error = expectError(res, 429, 'rate_limited')
    const retryAfter = Number(res.headers['retry-after'])
    expect(retryAfter, 'Retry-After').to.be.within(1, 3600)
    const said = Number(/try again in (\d+) s/.exec(error.message)?.[1])
    expect(said, error.message).to.be.within(1, 3600)
  })
})
