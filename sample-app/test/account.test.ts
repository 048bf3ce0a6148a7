import { setTimeout as sleep } from 'node:timers/promises'
import { expect } from 'chai'
import pg from 'pg'
import type { Response } from 'supertest'
import { clearsSid, expectError, logIn, signedInUser, signUp, startApp, type TestApp } from './helpers/app.js'
import { countUsers, query, testDatabaseUrl, userRow } from './helpers/db.js'

describe('own account: PATCH and DELETE /users/:id', () => {
  let app: TestApp
  before(async () => {
    app = await startApp()
  })
  after(async () => {
    await app?.close()
  })

  const me = (cookie: string) => app.http().get('/me').set('Cookie', cookie)
  const patch = (id: number, cookie: string | undefined, body: object) => {
    const req = app.http().patch(`/users/${id}`)
    if (cookie) req.set('Cookie', cookie)
    return req.send(body)
  }
  /** DELETE /users/:id, with the cookie and the JSON body when given. */
  const remove = (id: number, cookie?: string, body?: object) => {
    const req = app.http().delete(`/users/${id}`)
    if (cookie) req.set('Cookie', cookie)
    return body ? req.send(body) : req
  }

  describe('who may', () => {
    it('signed out: PATCH and DELETE answer 401 and change nothing', async () => {
      const user = await signUp(app)
      const before = await userRow(user.id)
      expectError(await patch(user.id, undefined, { name: 'Hacked' }), 401, 'unauthorized')
      expectError(await remove(user.id), 401, 'unauthorized')
      expect(await userRow(user.id)).to.deep.equal(before)
    })

    it("another user's id: PATCH and DELETE answer 403 forbidden and change nothing", async () => {
      const victim = await signUp(app, { name: 'Victim' })
      const attacker = await signedInUser(app)
      const before = await userRow(victim.id)
      expectError(await patch(victim.id, attacker.cookie, { name: 'Hacked' }), 403, 'forbidden')
      expectError(await patch(victim.id, attacker.cookie, { password: 'new password 123' }), 403, 'forbidden')
      expectError(await remove(victim.id, attacker.cookie, { currentPassword: attacker.password }), 403, 'forbidden')
      expectError(await remove(victim.id, attacker.cookie, { currentPassword: victim.password }), 403, 'forbidden')
      expect(await userRow(victim.id)).to.deep.equal(before)
      await logIn(app, victim) // the victim's password still works
    })
  })

  describe('PATCH', () => {
    it('own name: 200 with the own fields, stored; /me (a cached() read) shows it at once', async () => {
      const user = await signedInUser(app, { name: 'Old Name' })
      expect((await me(user.cookie)).body.name).to.equal('Old Name')
      const res = await patch(user.id, user.cookie, { name: '  New Name ' })
      expect(res.status, res.text).to.equal(200)
      expect(res.body).to.have.all.keys('id', 'email', 'name', 'createdAt', 'updatedAt')
      expect(res.body).to.include({ id: user.id, email: user.email, name: 'New Name' })
      expect((await userRow(user.id))?.name).to.equal('New Name')
      expect((await me(user.cookie)).body.name).to.equal('New Name')
    })

    it('no fields: 400 validation_failed', async () => {
      const user = await signedInUser(app)
      expectError(await patch(user.id, user.cookie, {}), 400, 'validation_failed')
    })

    it('own email to a new one: stored normalized; login works with the new email only', async () => {
      const user = await signedInUser(app)
      const email = `Changed-${user.email}`
      const res = await patch(user.id, user.cookie, {
        email: ` ${email.toUpperCase()} `,
        currentPassword: user.password,
      })
      expect(res.status, res.text).to.equal(200)
      expect(res.body.email).to.equal(email.toLowerCase())
      await logIn(app, { email, password: user.password })
      expectError(
        await app.http().post('/login').send({ email: user.email, password: user.password }),
        401,
        'invalid_credentials',
      )
    })

    it('an email already taken (in any case): 409 email_taken and nothing changed, name included', async () => {
      const other = await signUp(app)
      const user = await signedInUser(app, { name: 'Keeps Name' })
      const before = await userRow(user.id)
      const count = await countUsers()
      expectError(
        await patch(user.id, user.cookie, { email: other.email, currentPassword: user.password }),
        409,
        'email_taken',
      )
      expectError(
        await patch(user.id, user.cookie, {
          email: other.email.toUpperCase(),
          name: 'Changed',
          password: 'other pass 1',
          currentPassword: user.password,
        }),
        409,
        'email_taken',
      )
      expect(await userRow(user.id)).to.deep.equal(before)
      expect(await countUsers()).to.equal(count)
      expect((await app.http().get(`/users/${user.id}`)).body.name).to.equal('Keeps Name')
      await logIn(app, user) // the old password still works
    })

    it('the own email unchanged: 200', async () => {
      const user = await signedInUser(app)
      const res = await patch(user.id, user.cookie, { email: user.email })
      expect(res.status, res.text).to.equal(200)
    })

    it('password: ends the other sessions, keeps the current one; only the new password logs in', async () => {
      const user = await signedInUser(app)
      const otherDevice = await logIn(app, user)
      const newPassword = 'a brand new password'
      const res = await patch(user.id, user.cookie, { password: newPassword, currentPassword: user.password })
      expect(res.status, res.text).to.equal(200)
      expect(res.text).not.to.include(newPassword)
      expect((await userRow(user.id))?.passwordHash).to.match(/^\$argon2id\$/)
      expect((await me(user.cookie)).status, 'the current session stays').to.equal(200)
      expectError(await me(otherDevice), 401, 'unauthorized')
      expectError(
        await app.http().post('/login').send({ email: user.email, password: user.password }),
        401,
        'invalid_credentials',
      )
      await logIn(app, { email: user.email, password: newPassword })
    })
  })

  describe('DELETE', () => {
    it('own account: 204, the row is gone, every session of the user ends, /users/:id is 404', async () => {
      const user = await signedInUser(app)
      const otherDevice = await logIn(app, user)
      expect((await app.http().get(`/users/${user.id}`)).status).to.equal(200) // cached
      const count = await countUsers()
      const res = await remove(user.id, user.cookie, { currentPassword: user.password })
      expect(res.status, res.text).to.equal(204)
      expect(clearsSid(res), 'the cookie is cleared').to.equal(true)
      expect(await userRow(user.id)).to.equal(undefined)
      expect(await countUsers()).to.equal(count - 1)
      expectError(await me(user.cookie), 401, 'unauthorized')
      expectError(await me(otherDevice), 401, 'unauthorized')
      expectError(await app.http().get(`/users/${user.id}`), 404, 'user_not_found')
      expectError(
        await app.http().post('/login').send({ email: user.email, password: user.password }),
        401,
        'invalid_credentials',
      )
    })

    it('without the current password (no body, or none in it): 400 current_password_required, nothing deleted', async () => {
      const user = await signedInUser(app)
      const before = await userRow(user.id)
      for (const res of [await remove(user.id, user.cookie), await remove(user.id, user.cookie, {})]) {
        expect(expectError(res, 400, 'current_password_required').message).to.include('currentPassword')
      }
      expect(await userRow(user.id)).to.deep.equal(before)
      expect((await me(user.cookie)).status, 'still signed in').to.equal(200)
    })

    it('with a wrong current password: 403 wrong_password, nothing deleted', async () => {
      const user = await signedInUser(app)
      const before = await userRow(user.id)
      expectError(await remove(user.id, user.cookie, { currentPassword: 'not my password' }), 403, 'wrong_password')
      expect(await userRow(user.id)).to.deep.equal(before)
      expect((await me(user.cookie)).status, 'still signed in').to.equal(200)
    })

    it('the email of a deleted account can sign up again', async () => {
      const user = await signedInUser(app)
      expect((await remove(user.id, user.cookie, { currentPassword: user.password })).status).to.equal(204)
      const again = await signUp(app, { email: user.email })
      expect(again.id).not.to.equal(user.id)
    })
  })

  /*
   * A change that races a deletion of the same account: the request passed its checks (signed
   * in, the current password), then the account was deleted before its write. The write finds no
   * row: the truth is that the account is gone (404), not that it changed (409).
   */
  describe('racing a deletion of the account', () => {
    const DELETE_ROW = 'DELETE FROM "User" WHERE id = $1'
    /**
     * Holds a share lock on the user's row, sends the request, and once the request waits for
     * that row, runs `sql` on it (`$1` the id) and commits. The lock lets the request's reads
     * through (the session check reads the row FOR SHARE, the current password is read plainly)
     * and holds its write back: the request passed its checks before `sql`, and writes after it.
     */
    async function writtenWhileWaiting(id: number, send: () => PromiseLike<Response>, sql: string): Promise<Response> {
      const other = new pg.Client({ connectionString: testDatabaseUrl })
      await other.connect()
      try {
        await other.query('BEGIN')
        await other.query('SELECT id FROM "User" WHERE id = $1 FOR SHARE', [id])
        const [{ pid }] = (await other.query('SELECT pg_backend_pid() AS pid')).rows
        const answer = Promise.resolve(send())
        const deadline = Date.now() + 10_000
        for (;;) {
          const [waiting] = await query<{ count: number }>(
            'SELECT count(*)::int AS count FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))',
            [pid],
          )
          if (waiting!.count > 0) break
          if (Date.now() > deadline) throw new Error('the request never waited for the locked row')
          await sleep(10)
        }
        await other.query(sql, [id])
        await other.query('COMMIT')
        return await answer
      } finally {
        await other.end()
      }
    }

    it('PATCH of the email (current password checked) whose write comes after the deletion: 404 user_not_found', async () => {
      const user = await signedInUser(app)
      const change = { email: `new-${user.email}`, currentPassword: user.password }
      const res = await writtenWhileWaiting(user.id, () => patch(user.id, user.cookie, change), DELETE_ROW)
      expectError(res, 404, 'user_not_found')
    })

    it('PATCH of the name whose write comes after the deletion: 404 user_not_found', async () => {
      const user = await signedInUser(app)
      const res = await writtenWhileWaiting(user.id, () => patch(user.id, user.cookie, { name: 'Late' }), DELETE_ROW)
      expectError(res, 404, 'user_not_found')
    })

    it('DELETE whose write comes after another deletion: 404 user_not_found', async () => {
      const user = await signedInUser(app)
      const body = { currentPassword: user.password }
      const res = await writtenWhileWaiting(user.id, () => remove(user.id, user.cookie, body), DELETE_ROW)
      expectError(res, 404, 'user_not_found')
    })

    it('PATCH of the email whose write comes after a password change (the account still there): 409 conflict', async () => {
      const user = await signedInUser(app)
      const change = { email: `new-${user.email}`, currentPassword: user.password }
      const passwordChanged = `UPDATE "User" SET "passwordHash" = 'changed' WHERE id = $1`
      const res = await writtenWhileWaiting(user.id, () => patch(user.id, user.cookie, change), passwordChanged)
      expectError(res, 409, 'conflict')
    })
  })
})
