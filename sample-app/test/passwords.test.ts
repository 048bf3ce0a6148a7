import { expect } from 'chai'
import { hashPassword, hashPasswordScrypt, needsRehash, verifyPassword } from '../src/passwords.js'
import { expectError, logIn, PASSWORD, signUp, startApp, type TestApp, uniqueEmail } from './helpers/app.js'
import { query, userRow } from './helpers/db.js'

/** OWASP's minimum for Argon2id (m=19 MiB, t=2, p=1) in the standard PHC string. */
const ARGON2ID = /^\$argon2id\$v=19\$m=19456,t=2,p=1\$[A-Za-z0-9+/]{22}\$[A-Za-z0-9+/]{43}$/

describe('password hashing', () => {
  describe('hashPassword / verifyPassword', () => {
    it('hashes with Argon2id (OWASP parameters, PHC string, a new salt each time) and verifies', async () => {
      const [a, b] = [await hashPassword(PASSWORD), await hashPassword(PASSWORD)]
      expect(a).to.match(ARGON2ID)
      expect(a).not.to.equal(b)
      expect(await verifyPassword(PASSWORD, a)).to.equal(true)
      expect(await verifyPassword(`${PASSWORD}!`, a)).to.equal(false)
      expect(needsRehash(a)).to.equal(false)
    })

    it('still verifies the older scrypt hashes, which need a rehash', async () => {
      const old = await hashPasswordScrypt(PASSWORD)
      expect(old).to.match(/^scrypt\$32768\$8\$1\$/)
      expect(await verifyPassword(PASSWORD, old)).to.equal(true)
      expect(await verifyPassword(`${PASSWORD}!`, old)).to.equal(false)
      expect(needsRehash(old)).to.equal(true)
    })

    it('Argon2id with weaker parameters needs a rehash; other schemes and malformed hashes never match', async () => {
      const weak = '$argon2id$v=19$m=4096,t=3,p=1$c29tZXNhbHRzb21lc2FsdA$7Oeua7wFRP5LBGAf1YhCbUEO8Ma4q9cCRqJPGthpCz8'
      expect(needsRehash(weak)).to.equal(true)
      const good = await hashPassword(PASSWORD)
      for (const stored of [
        '',
        'plain',
        good.replace('$argon2id$', '$argon2i$'),
        good.replace('$argon2id$', '$argon2d$'),
        good.slice(0, -5),
        `${good}$extra`,
        'scrypt$32768$8$1$',
      ]) {
        expect(await verifyPassword(PASSWORD, stored), stored).to.equal(false)
      }
    })
  })

  describe('through the API', () => {
    let app: TestApp
    before(async () => {
      app = await startApp()
    })
    after(async () => {
      await app?.close()
    })

    /** A user as stored before Argon2id: its hash made by the old scrypt function. */
    async function oldUser(): Promise<{ id: number; email: string; hash: string }> {
      const email = uniqueEmail('scrypt')
      const hash = await hashPasswordScrypt(PASSWORD)
      const [row] = await query<{ id: number }>(
        `INSERT INTO "User" ("email", "name", "passwordHash", "updatedAt") VALUES ($1, 'Old Hash', $2, now()) RETURNING "id"`,
        [email, hash],
      )
      return { id: row!.id, email, hash }
    }

    it('a sign-up stores an Argon2id hash', async () => {
      const user = await signUp(app)
      expect((await userRow(user.id))?.passwordHash).to.match(ARGON2ID)
    })

    it('an old scrypt hash signs in, and is then an Argon2id hash of the same password (updatedAt kept)', async () => {
      const user = await oldUser()
      const before = await userRow(user.id)
      const first = await logIn(app, { email: user.email, password: PASSWORD })
      const after = await userRow(user.id)
      expect(after?.passwordHash).to.match(ARGON2ID)
      expect(after?.updatedAt).to.deep.equal(before?.updatedAt)
      expect(await verifyPassword(PASSWORD, after!.passwordHash)).to.equal(true)
      // the same password: signing in again works, and the session from before the rehash stays
      await logIn(app, { email: user.email, password: PASSWORD })
      expect((await app.http().get('/me').set('Cookie', first)).status).to.equal(200)
      expect((await userRow(user.id))?.passwordHash, 'rehashed once').to.equal(after?.passwordHash)
    })

    it('wrong passwords fail for both formats; a failed sign-in does not rehash', async () => {
      const old = await oldUser()
      const wrong = (email: string) => app.http().post('/login').send({ email, password: 'not the password' })
      expectError(await wrong(old.email), 401, 'invalid_credentials')
      expect((await userRow(old.id))?.passwordHash).to.equal(old.hash)
      const current = await signUp(app)
      expectError(await wrong(current.email), 401, 'invalid_credentials')
    })
  })
})
