import { expect } from 'chai'
import type { Response } from 'supertest'
import {
  type CreatedUser,
  expectError,
  PASSWORD,
  signedInUser,
  startApp,
  type TestApp,
  uniqueEmail,
} from './helpers/app.js'
import { allUsers, userRow } from './helpers/db.js'
import { withPasswordWork } from './helpers/password-work.js'

/** The `details` of a validation error name `field`. */
function expectDetailFor(error: { message: string; details?: unknown }, field: string): void {
  expect(error.details).to.be.an('array')
  const paths = (error.details as { path: string; message: string }[]).map((detail) => detail.path)
  expect(paths, JSON.stringify(error.details)).to.include(field)
  expect(error.message).to.include(field)
}

describe('bad input', () => {
  let app: TestApp
  let user: CreatedUser & { cookie: string }
  let rowsBefore: Awaited<ReturnType<typeof allUsers>>

  before(async () => {
    app = await startApp()
    user = await signedInUser(app, { name: 'Unchanged Name' })
  })
  after(async () => {
    await app?.close()
  })
  beforeEach(async () => {
    rowsBefore = await allUsers()
  })
  afterEach(async function () {
    if (this.currentTest?.state === 'passed') expect(await allUsers(), 'no row changed').to.deep.equal(rowsBefore)
  })

  const valid = () => ({ email: uniqueEmail(), name: 'Someone', password: PASSWORD })

  describe('POST /users', () => {
    it('malformed JSON: 400 invalid_json', async () => {
      const res = await app.http().post('/users').set('Content-Type', 'application/json').send('{"email": "a@b.c",')
      expectError(res, 400, 'invalid_json')
    })

    it('a JSON null body: 400', async () => {
      const res = await app.http().post('/users').set('Content-Type', 'application/json').send('null')
      expect(res.status).to.equal(400)
      expect(res.body.error.code).to.be.oneOf(['invalid_json', 'validation_failed'])
    })

    it('a JSON array body: 400 validation_failed', async () => {
      const res = await app.http().post('/users').send([valid()])
      expectError(res, 400, 'validation_failed')
    })

    it('wrong types: 400 validation_failed naming each field', async () => {
      const res = await app
        .http()
        .post('/users')
        .send({ email: 42, name: ['x'], password: true })
      const error = expectError(res, 400, 'validation_failed')
      for (const field of ['email', 'name', 'password']) expectDetailFor(error, field)
    })

    it('missing fields: 400 validation_failed naming them', async () => {
      const res = await app.http().post('/users').send({ email: uniqueEmail() })
      const error = expectError(res, 400, 'validation_failed')
      expectDetailFor(error, 'name')
      expectDetailFor(error, 'password')
    })

    it('an invalid email, an empty name, a short password: 400 validation_failed naming the field', async () => {
      for (const [field, value] of [
        ['email', 'not-an-email'],
        ['name', '   '],
        ['password', 'short'],
      ] as const) {
        const res = await app
          .http()
          .post('/users')
          .send({ ...valid(), [field]: value })
        expectDetailFor(expectError(res, 400, 'validation_failed'), field)
      }
    })

    it('too long: a 101-character name, a 201-character password, a 255-character email: 400', async () => {
      for (const [field, value] of [
        ['name', 'n'.repeat(101)],
        ['password', 'p'.repeat(201)],
        ['email', `${'e'.repeat(243)}@example.com`],
      ] as const) {
        const res = await app
          .http()
          .post('/users')
          .send({ ...valid(), [field]: value })
        expectDetailFor(expectError(res, 400, 'validation_failed'), field)
      }
    })

    it('unknown fields: 400 validation_failed naming them', async () => {
      const res = await app
        .http()
        .post('/users')
        .send({ ...valid(), isAdmin: true, passwordHash: 'scrypt$x' })
      const error = expectError(res, 400, 'validation_failed')
      expect(error.message).to.include('isAdmin')
    })

    it('a 1 MB body: 413 payload_too_large', async () => {
      const res = await app
        .http()
        .post('/users')
        .send({ ...valid(), name: 'x'.repeat(1024 * 1024) })
      expectError(res, 413, 'payload_too_large')
    })

    it('no JSON content type: 415', async () => {
      const text = await app.http().post('/users').set('Content-Type', 'text/plain').send(JSON.stringify(valid()))
      expectError(text, 415, 'unsupported_media_type')
      const form = await app.http().post('/users').type('form').send(valid())
      expectError(form, 415, 'unsupported_media_type')
      const none = await app.http().post('/users')
      expectError(none, 415, 'unsupported_media_type')
    })

    it('JSON in a charset other than UTF-8: 415', async () => {
      const res = await app
        .http()
        .post('/users')
        .set('Content-Type', 'application/json; charset=latin1')
        .send(JSON.stringify(valid()))
      expect(res.status).to.equal(415)
      expect(res.body.error.code).to.be.a('string')
    })
  })

  describe('POST /login', () => {
    it('malformed JSON: 400 invalid_json', async () => {
      const res = await app.http().post('/login').set('Content-Type', 'application/json').send('{"email":')
      expectError(res, 400, 'invalid_json')
    })

    it('wrong types and unknown fields: 400 validation_failed', async () => {
      const types = await app.http().post('/login').send({ email: user.email, password: 12345678 })
      expectDetailFor(expectError(types, 400, 'validation_failed'), 'password')
      const unknown = await app.http().post('/login').send({ email: user.email, password: PASSWORD, remember: true })
      expect(expectError(unknown, 400, 'validation_failed').message).to.include('remember')
      expect(unknown.headers['set-cookie']).to.equal(undefined)
    })

    it('no JSON content type: 415', async () => {
      const res = await app.http().post('/login').type('form').send({ email: user.email, password: PASSWORD })
      expectError(res, 415, 'unsupported_media_type')
    })
  })

  describe('PATCH /users/:id (signed in as the owner)', () => {
    const patch = () => app.http().patch(`/users/${user.id}`).set('Cookie', user.cookie)

    it('malformed JSON: 400 invalid_json', async () => {
      expectError(await patch().set('Content-Type', 'application/json').send('{"name"'), 400, 'invalid_json')
    })

    it('wrong types: 400 validation_failed naming the field', async () => {
      expectDetailFor(expectError(await patch().send({ name: 5 }), 400, 'validation_failed'), 'name')
      expectDetailFor(expectError(await patch().send({ email: 'nope' }), 400, 'validation_failed'), 'email')
      expectDetailFor(expectError(await patch().send({ password: 'short' }), 400, 'validation_failed'), 'password')
    })

    it('unknown fields (id, passwordHash, createdAt): 400 validation_failed', async () => {
      for (const field of ['id', 'passwordHash', 'createdAt']) {
        const res = await patch().send({ name: 'Changed', [field]: field === 'id' ? 1 : 'x' })
        expect(expectError(res, 400, 'validation_failed').message).to.include(field)
      }
    })

    it('no fields: 400 validation_failed', async () => {
      const error = expectError(await patch().send({}), 400, 'validation_failed')
      expect(error.message).to.match(/email, name, password/)
    })

    it('a 1 MB body: 413, no JSON content type: 415', async () => {
      expectError(await patch().send({ name: 'x'.repeat(1024 * 1024) }), 413, 'payload_too_large')
      expectError(await patch().type('form').send({ name: 'Changed' }), 415, 'unsupported_media_type')
    })

    it('leaves the row as it was', async () => {
      expect((await userRow(user.id))?.name).to.equal('Unchanged Name')
    })
  })

  describe('text fields: NUL, control characters, bidi overrides, invisible names', () => {
    /** Names that must be refused, each with why. */
    const badNames: [string, string][] = [
      ['a\u0000b', 'NUL'],
      ['a\u0007b', 'a C0 control (BEL)'],
      ['Ada\nLovelace', 'a line break'],
      ['a\u0085b', 'a C1 control (NEL)'],
      ['a\u009bb', 'a C1 control (CSI)'],
      ['\u202Egnp.exe', 'a right-to-left override'],
      ['Ada \u2066Lovelace\u2069', 'a bidi isolate'],
      ['\u200b\u200b', 'zero-width spaces only'],
      ['\u200d\u200c\u2060\ufeff', 'joiners and word joiners only'],
      ['\u3164', 'the Hangul filler only'],
      ['\u00ad \u2800', 'a soft hyphen and the braille blank only'],
      ['a\ud800b', 'a lone surrogate'],
    ]

    /** Expects a 400 validation_failed naming `field` and no password hashed or checked. */
    async function expectRefusedBeforeHashing(request: () => Promise<Response>, field: string, why: string) {
      const { result: res, work } = await withPasswordWork(request)
      expectDetailFor(expectError(res, 400, 'validation_failed'), field)
      expect(work, `${why}: passwords hashed or checked`).to.equal(0)
    }

    it('the counter sees the hashing a request does (a wrong password at sign-in)', async () => {
      const { result: res, work } = await withPasswordWork(() =>
        app.http().post('/login').send({ email: user.email, password: 'not the password' }),
      )
      expectError(res, 401, 'invalid_credentials')
      expect(work).to.be.at.least(1)
    })

    it('POST /users: a bad name, or a NUL or control character in the email or password, is 400 before hashing', async () => {
      for (const [value, why] of badNames) {
        await expectRefusedBeforeHashing(
          () =>
            app
              .http()
              .post('/users')
              .send({ ...valid(), name: value }),
          'name',
          why,
        )
      }
      for (const [field, value, why] of [
        ['email', `a\u0000${uniqueEmail()}`, 'NUL'],
        ['email', `${uniqueEmail()}\u0085`, 'a C1 control'],
        ['password', 'pass\u0000word123', 'NUL'],
        ['password', 'pass\tword123', 'a tab'],
        ['password', 'pass\u009bword123', 'a C1 control'],
        ['password', 'password\udc00123', 'a lone surrogate'],
      ] as const) {
        await expectRefusedBeforeHashing(
          () =>
            app
              .http()
              .post('/users')
              .send({ ...valid(), [field]: value }),
          field,
          why,
        )
      }
    })

    it('PATCH /users/:id: the same for name, email, password and currentPassword (NUL), before any check', async () => {
      const patch = (body: object) => app.http().patch(`/users/${user.id}`).set('Cookie', user.cookie).send(body)
      for (const [value, why] of badNames) await expectRefusedBeforeHashing(() => patch({ name: value }), 'name', why)
      await expectRefusedBeforeHashing(
        () => patch({ email: `x\u0000${uniqueEmail()}`, currentPassword: PASSWORD }),
        'email',
        'NUL',
      )
      await expectRefusedBeforeHashing(
        () => patch({ password: 'new\u0000password', currentPassword: PASSWORD }),
        'password',
        'NUL',
      )
      await expectRefusedBeforeHashing(
        () => patch({ email: uniqueEmail(), currentPassword: `${PASSWORD}\u0000` }),
        'currentPassword',
        'NUL',
      )
    })

    it('POST /login: a NUL in the email or the password is 400 before any check', async () => {
      await expectRefusedBeforeHashing(
        () =>
          app
            .http()
            .post('/login')
            .send({ email: `${user.email}\u0000`, password: PASSWORD }),
        'email',
        'NUL',
      )
      await expectRefusedBeforeHashing(
        () =>
          app
            .http()
            .post('/login')
            .send({ email: user.email, password: `${PASSWORD}\u0000` }),
        'password',
        'NUL',
      )
    })
  })

  describe('ids in /users/:id', () => {
    const bad = ['abc', '0', '-1', '1.5', '01', '1e3', '0x10', '2147483648', '99999999999', '12345678901234567890']

    it('GET with a non-numeric, zero, negative, padded or too large id: 400 invalid_id', async () => {
      for (const id of bad) {
        const error = expectError(await app.http().get(`/users/${id}`), 400, 'invalid_id')
        expect(error.message).to.match(/positive integer/)
      }
    })

    it('PATCH and DELETE with a bad id: 400 invalid_id', async () => {
      for (const id of ['abc', '0', '2147483648']) {
        expectError(
          await app.http().patch(`/users/${id}`).set('Cookie', user.cookie).send({ name: 'X' }),
          400,
          'invalid_id',
        )
        expectError(await app.http().delete(`/users/${id}`).set('Cookie', user.cookie), 400, 'invalid_id')
      }
    })

    it('the largest valid id that does not exist: 404 user_not_found', async () => {
      expectError(await app.http().get('/users/2147483647'), 404, 'user_not_found')
    })
  })

  describe('GET /users query', () => {
    for (const [query, field] of [
      ['limit=0', 'limit'],
      ['limit=abc', 'limit'],
      ['limit=101', 'limit'],
      ['limit=1.5', 'limit'],
      ['limit=', 'limit'],
      ['after=-1', 'after'],
      ['after=abc', 'after'],
      ['foo=1', 'foo'],
    ] as const) {
      it(`?${query}: 400 validation_failed naming ${field}`, async () => {
        const res = await app.http().get(`/users?${query}`)
        expect(expectError(res, 400, 'validation_failed').message).to.include(field)
      })
    }

    it('a bad query answered 400 is not cached (asking again still validates)', async () => {
      for (let i = 0; i < 2; i++) expectError(await app.http().get('/users?limit=0'), 400, 'validation_failed')
    })
  })

  describe('unknown routes', () => {
    it('GET /nope, POST /healthz, DELETE /users: 404 not_found JSON', async () => {
      expectError(await app.http().get('/nope'), 404, 'not_found')
      expectError(await app.http().post('/healthz').send({}), 404, 'not_found')
      expectError(await app.http().delete('/users'), 404, 'not_found')
      expectError(await app.http().get('/users/1/extra'), 404, 'not_found')
    })
  })
})
