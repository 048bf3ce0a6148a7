import { createHash } from 'node:crypto'
import { expect } from 'chai'
import { COOKIE_VALUE, deadlineOf, handleOf, SessionStore } from '../../../src/session/store.js'
import { userTag } from '../../../src/shared/user-key.js'

const DAY = 86_400_000

describe('session tokens, tags and deadlines', () => {
  it('a token is 32 random bytes (43 base64url characters); Redis knows only its SHA-256', () => {
    const token = SessionStore.newToken()
    expect(token).to.match(/^[A-Za-z0-9_-]{43}$/)
    expect(SessionStore.newToken()).not.to.equal(token)
    expect(SessionStore.hashOf(token)).to.equal(createHash('sha256').update(token).digest('base64url'))
  })

  it('the cookie value is <tag>.<token>: refOf splits it and hashes the token', () => {
    const tag = SessionStore.randomTag()
    expect(tag).to.match(/^[A-Za-z0-9_-]{11}$/)
    const token = SessionStore.newToken()
    const value = `${tag}.${token}`
    expect(COOKIE_VALUE.test(value)).to.equal(true)
    expect(SessionStore.refOf(value)).to.deep.equal({ tag, token, hash: SessionStore.hashOf(token) })
    for (const forged of [`${tag}.${token}x`, `${tag}${token}`, `${tag}.${token.slice(1)}`, `${tag}.${token}\n`, ''])
      expect(COOKIE_VALUE.test(forged), forged).to.equal(false)
  })

  it('a user’s sessions share the user’s tag: the same slot as the user’s index', () => {
    expect(SessionStore.userTag('7')).to.equal(userTag('7'))
    expect(SessionStore.userTag('7')).not.to.equal(SessionStore.userTag('8'))
  })

  it('the public handle: the first 22 characters of the hash', () => {
    const hash = SessionStore.hashOf('token')
    expect(handleOf(hash)).to.equal(hash.slice(0, 22)).and.have.length(22)
  })

  it('deadlineOf: created + absolute timeout, or the session’s own deadline if sooner', () => {
    const created = 1_700_000_000_000
    expect(deadlineOf(created, '', 30 * DAY)).to.equal(created + 30 * DAY)
    expect(deadlineOf(created, 'session', 30 * DAY), 'a browser-session cookie has no deadline of its own').to.equal(
      created + 30 * DAY,
    )
    expect(deadlineOf(created, String(created + DAY), 30 * DAY)).to.equal(created + DAY)
    expect(deadlineOf(created, String(created + 60 * DAY), 30 * DAY), 'never past the absolute timeout').to.equal(
      created + 30 * DAY,
    )
    expect(deadlineOf(created, 'garbage', 30 * DAY)).to.equal(created + 30 * DAY)
    expect(deadlineOf(created, '0', 30 * DAY), 'a deadline of 0 is a deadline (already past)').to.equal(0)
  })
})
