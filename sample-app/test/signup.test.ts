import { expect } from 'chai'
import { expectError, PASSWORD, signUp, startApp, type TestApp, uniqueEmail } from './helpers/app.js'
import { allUsers, countUsers, userByEmail, userRow } from './helpers/db.js'

/** No response body mentions the password or its hash. */
function expectNoSecrets(text: string, password = PASSWORD): void {
  expect(text).not.to.include(password)
  expect(text).not.to.include('scrypt$')
  expect(text).not.to.include('$argon2')
  expect(text.toLowerCase()).not.to.include('passwordhash')
}

describe('sign up (POST /users)', () => {
  let app: TestApp
  before(async () => {
    app = await startApp()
  })
  after(async () => {
    await app?.close()
  })

  it('creates the user: 201, Location, own fields only, email trimmed and lowercased, Argon2id hash stored', async () => {
    const raw = uniqueEmail('MixedCase').toUpperCase()
    const before = await countUsers()
    const res = await app
      .http()
      .post('/users')
      .send({ email: `  ${raw}  `, name: '  Ada Lovelace ', password: PASSWORD })
    expect(res.status, res.text).to.equal(201)
    expect(res.headers.location).to.equal(`/users/${res.body.id}`)
    expect(res.body).to.have.all.keys('id', 'email', 'name', 'createdAt', 'updatedAt')
    expect(res.body.email).to.equal(raw.toLowerCase())
    expect(res.body.name).to.equal('Ada Lovelace')
    expectNoSecrets(res.text)
    expect(await countUsers()).to.equal(before + 1)
    const row = await userRow(res.body.id)
    expect(row?.email).to.equal(raw.toLowerCase())
    expect(row?.passwordHash).to.match(/^\$argon2id\$v=19\$m=19456,t=2,p=1\$/)
    expect(row?.passwordHash).not.to.include(PASSWORD)
  })

  it('accepts names in any script, with emoji sequences, marks and no-break spaces, and passwords of any printable text', async () => {
    for (const name of ['Zoë Ćirić', 'مريم الأحمد', '李小龍', '👩\u200d💻 Dev', 'Ada\u00a0Lovelace', 'e\u0301cole']) {
      const password = `pässwörd ${name} 🔑`
      const user = await signUp(app, { name, password })
      expect((await userRow(user.id))?.name, name).to.equal(name)
      const login = await app.http().post('/login').send({ email: user.email, password })
      expect(login.status, login.text).to.equal(200)
    }
  })

  it('never shows the password in any response (sign up, login, /me, /users, /users/:id, PATCH)', async () => {
    const password = 'a-very-distinctive-password-42'
    const user = await signUp(app, { password })
    const login = await app.http().post('/login').send({ email: user.email, password })
    expect(login.status).to.equal(200)
    expectNoSecrets(login.text, password)
    const cookie = String(login.headers['set-cookie']?.[0]).split(';')[0]!
    const responses = [
      await app.http().get('/me').set('Cookie', cookie),
      await app.http().get(`/users?after=${user.id - 1}`),
      await app.http().get(`/users/${user.id}`),
      await app.http().patch(`/users/${user.id}`).set('Cookie', cookie).send({ name: 'Renamed' }),
    ]
    for (const res of responses) {
      expect(res.status, res.text).to.equal(200)
      expectNoSecrets(res.text, password)
    }
  })

  it('answers 409 email_taken for an email already used, and stores nothing', async () => {
    const user = await signUp(app)
    const before = await allUsers()
    const res = await app.http().post('/users').send({ email: user.email, name: 'Other', password: PASSWORD })
    expectError(res, 409, 'email_taken')
    expectNoSecrets(res.text)
    expect(await allUsers()).to.deep.equal(before)
  })

  it('answers 409 email_taken for the same email in other case and with spaces', async () => {
    const user = await signUp(app)
    const before = await countUsers()
    const res = await app
      .http()
      .post('/users')
      .send({ email: ` ${user.email.toUpperCase()} `, name: 'Other', password: PASSWORD })
    expectError(res, 409, 'email_taken')
    expect(await countUsers()).to.equal(before)
    const row = await userByEmail(user.email)
    expect(row?.name).to.equal(user.name)
  })
})
