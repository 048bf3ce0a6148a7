import { expect } from 'chai'
import { type CreatedUser, expectError, signedInUser, signUp, startApp, type TestApp } from './helpers/app.js'
import { nextUserId, query } from './helpers/db.js'

interface ListedUser {
  id: number
  name: string
  createdAt: string
}

describe('cached reads', () => {
  let app: TestApp
  before(async () => {
    app = await startApp()
  })
  after(async () => {
    await app?.close()
  })

  describe('GET /users', () => {
    let first: CreatedUser & { cookie: string }
    /** A page that starts at the users of this suite (other suites' users come before). */
    let url: string
    before(async () => {
      first = await signedInUser(app, { name: 'List First' })
      url = `/users?after=${first.id - 1}&limit=100`
    })
    const list = async (path = url) => {
      const res = await app.http().get(path)
      expect(res.status, res.text).to.equal(200)
      return { cache: res.headers['x-cache'], users: res.body.users as ListedUser[], next: res.body.next, res }
    }
    const names = (users: ListedUser[]) => users.map((user) => user.name)

    it('answers MISS, then HIT with the same body', async () => {
      const a = await list()
      const b = await list()
      expect([a.cache, b.cache]).to.deep.equal(['MISS', 'HIT'])
      expect(b.res.text).to.equal(a.res.text)
      expect(names(a.users)).to.include('List First')
    })

    it('shows public fields only: never email or passwordHash', async () => {
      const { users, res } = await list()
      expect(users.length).to.be.at.least(1)
      for (const user of users) expect(user).to.have.all.keys('id', 'name', 'createdAt')
      expect(res.text).not.to.include('@')
      expect(res.text).not.to.include('scrypt')
      expect(res.text).not.to.include('argon2')
    })

    it('a sign-up through the API shows at once (MISS)', async () => {
      await list()
      expect((await list()).cache).to.equal('HIT')
      const created = await signUp(app, { name: 'List Newcomer' })
      const after = await list()
      expect(after.cache).to.equal('MISS')
      expect(after.users.map((user) => user.id)).to.include(created.id)
    })

    it('a PATCH through the API shows at once (MISS)', async () => {
      await list()
      expect((await list()).cache).to.equal('HIT')
      const res = await app
        .http()
        .patch(`/users/${first.id}`)
        .set('Cookie', first.cookie)
        .send({ name: 'List Renamed' })
      expect(res.status, res.text).to.equal(200)
      const after = await list()
      expect(after.cache).to.equal('MISS')
      expect(names(after.users)).to.include('List Renamed').and.not.include('List First')
    })

    it('a DELETE through the API shows at once (MISS)', async () => {
      const doomed = await signedInUser(app, { name: 'List Doomed' })
      await list()
      expect((await list()).cache).to.equal('HIT')
      expect(
        (
          await app
            .http()
            .delete(`/users/${doomed.id}`)
            .set('Cookie', doomed.cookie)
            .send({ currentPassword: doomed.password })
        ).status,
      ).to.equal(204)
      const after = await list()
      expect(after.cache).to.equal('MISS')
      expect(after.users.map((user) => user.id)).not.to.include(doomed.id)
    })

    it('every cached page of the list is invalidated, not only the one read last', async () => {
      const urls = [url, `/users?after=${first.id - 1}&limit=50`, `/users?limit=99&after=${first.id - 1}`]
      for (const path of urls) await list(path)
      for (const path of urls) expect((await list(path)).cache, path).to.equal('HIT')
      const created = await signUp(app, { name: 'List Every Page' })
      for (const path of urls) {
        const after = await list(path)
        expect(after.cache, path).to.equal('MISS')
        expect(after.users.map((user) => user.id)).to.include(created.id)
      }
    })

    it('a signed-in client bypasses the cache (BYPASS)', async () => {
      await list()
      const res = await app.http().get(url).set('Cookie', first.cookie)
      expect(res.status).to.equal(200)
      expect(res.headers['x-cache']).to.equal('BYPASS')
    })

    it('paginates with limit, after and next', async () => {
      const a = await signUp(app, { name: 'Page A' })
      const b = await signUp(app, { name: 'Page B' })
      const c = await signUp(app, { name: 'Page C' })
      const page1 = await list(`/users?after=${a.id - 1}&limit=2`)
      expect(page1.users.map((user) => user.id)).to.deep.equal([a.id, b.id])
      expect(page1.next).to.equal(`/users?after=${b.id}&limit=2`)
      const page2 = await list(page1.next)
      expect(page2.users.map((user) => user.id)).to.deep.equal([c.id])
      expect(page2.next).to.equal(null)
      const defaults = await list(`/users?after=${a.id - 1}`)
      expect(defaults.users.map((user) => user.id)).to.deep.equal([a.id, b.id, c.id])
      expect(defaults.next).to.equal(null)
    })
  })

  describe('GET /users/:id', () => {
    it('answers the public fields of the user', async () => {
      const user = await signUp(app, { name: 'Public Person' })
      const res = await app.http().get(`/users/${user.id}`)
      expect(res.status, res.text).to.equal(200)
      expect(res.body).to.have.all.keys('id', 'name', 'createdAt')
      expect(res.body).to.include({ id: user.id, name: 'Public Person' })
      expect(res.text).not.to.include(user.email)
    })

    it('answers 404 user_not_found for an unknown id', async () => {
      const error = expectError(await app.http().get('/users/2147483000'), 404, 'user_not_found')
      expect(error.message).to.include('2147483000')
    })

    it('is cached (a change made behind the app is not seen) and a PATCH shows at once', async () => {
      const user = await signedInUser(app, { name: 'Before Patch' })
      expect((await app.http().get(`/users/${user.id}`)).body.name).to.equal('Before Patch')
      await query('UPDATE "User" SET name = $1 WHERE id = $2', ['Behind The Back', user.id])
      expect((await app.http().get(`/users/${user.id}`)).body.name, 'served from the cache').to.equal('Before Patch')
      const res = await app.http().patch(`/users/${user.id}`).set('Cookie', user.cookie).send({ name: 'After Patch' })
      expect(res.status, res.text).to.equal(200)
      expect((await app.http().get(`/users/${user.id}`)).body.name).to.equal('After Patch')
    })

    it('a user created after its id was probed (404 cached) is visible at once', async () => {
      const nextId = await nextUserId()
      expectError(await app.http().get(`/users/${nextId}`), 404, 'user_not_found')
      expectError(await app.http().get(`/users/${nextId}`), 404, 'user_not_found')
      const user = await signUp(app, { name: 'Was Probed' })
      expect(user.id, 'the id probed is the one the database gave').to.equal(nextId)
      const res = await app.http().get(`/users/${nextId}`)
      expect(res.status, res.text).to.equal(200)
      expect(res.body.name).to.equal('Was Probed')
    })

    it('a deleted user is 404 at once', async () => {
      const user = await signedInUser(app)
      expect((await app.http().get(`/users/${user.id}`)).status).to.equal(200)
      expect(
        (
          await app
            .http()
            .delete(`/users/${user.id}`)
            .set('Cookie', user.cookie)
            .send({ currentPassword: user.password })
        ).status,
      ).to.equal(204)
      expectError(await app.http().get(`/users/${user.id}`), 404, 'user_not_found')
    })

    it('a signed-in reader gets the same public fields', async () => {
      const reader = await signedInUser(app)
      const other = await signUp(app, { name: 'Someone Else' })
      const res = await app.http().get(`/users/${other.id}`).set('Cookie', reader.cookie)
      expect(res.status).to.equal(200)
      expect(res.body).to.have.all.keys('id', 'name', 'createdAt')
    })
  })
})
