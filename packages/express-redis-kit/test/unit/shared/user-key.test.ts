import { expect } from 'chai'
import { OptionError } from '../../../src/shared/errors.js'
import {
  isMisplacedUser,
  misplacedUserWarning,
  parseUserKey,
  userIdOf,
  userTag,
  valueAt,
} from '../../../src/shared/user-key.js'

describe('userKey: where a session names its user', () => {
  it('parseUserKey: a name or a dotted path, split at its dots; undefined for none', () => {
    expect(parseUserKey(undefined)).to.equal(undefined)
    expect(parseUserKey('userId')).to.deep.equal(['userId'])
    expect(parseUserKey('passport.user.id')).to.deep.equal(['passport', 'user', 'id'])
  })

  it('parseUserKey: an empty step, or not a string, is refused', () => {
    for (const value of ['', '.', 'passport.', '.user', 'a..b', 5, ['passport', 'user'], null]) {
      expect(() => parseUserKey(value), JSON.stringify(value))
        .to.throw(OptionError)
        .with.property('message')
        .that.includes("option `userKey` must be a property name or a dotted path to it ('userId', 'passport.user')")
    }
  })

  describe('valueAt: own properties of plain objects only', () => {
    const session = { passport: { user: { id: 7 } }, list: [{ id: 1 }], userId: 'u1' }
    it('follows the path', () => {
      expect(valueAt(session, ['userId'])).to.equal('u1')
      expect(valueAt(session, ['passport', 'user', 'id'])).to.equal(7)
      expect(valueAt(session, ['passport', 'user'])).to.deep.equal({ id: 7 })
    })

    it('nothing through an array, a primitive, null, or a missing step', () => {
      expect(valueAt(session, ['list', '0', 'id'])).to.equal(undefined)
      expect(valueAt(session, ['userId', 'length'])).to.equal(undefined)
      expect(valueAt({ a: null }, ['a', 'b'])).to.equal(undefined)
      expect(valueAt(session, ['nobody'])).to.equal(undefined)
      expect(valueAt(undefined, ['a'])).to.equal(undefined)
    })

    it('never through the prototype: __proto__, constructor, toString find nothing', () => {
      for (const step of ['__proto__', 'constructor', 'toString', 'hasOwnProperty'])
        expect(valueAt({}, [step]), step).to.equal(undefined)
      expect(valueAt(Object.create({ inherited: 'x' }), ['inherited'])).to.equal(undefined)
      // an own property named __proto__ (as JSON.parse makes it) is data, and found
      expect(valueAt(JSON.parse('{"__proto__": {"user": "u2"}}'), ['__proto__', 'user'])).to.equal('u2')
    })
  })

  it('userIdOf: a string, or a finite number as a string; nothing else', () => {
    expect(userIdOf('u1')).to.equal('u1')
    expect(userIdOf('')).to.equal('')
    expect(userIdOf(42)).to.equal('42')
    expect(userIdOf(-0)).to.equal('0')
    expect(userIdOf(1.5)).to.equal('1.5')
    for (const value of [Number.NaN, Number.POSITIVE_INFINITY, true, null, undefined, { id: 1 }, [1], 1n])
      expect(userIdOf(value), String(value)).to.equal(undefined)
  })

  it('isMisplacedUser: a value there that is not an id (an object, a boolean), but not absence', () => {
    expect(isMisplacedUser({ id: 1 })).to.equal(true)
    expect(isMisplacedUser(true)).to.equal(true)
    expect(isMisplacedUser(Number.NaN)).to.equal(true)
    expect(isMisplacedUser(undefined)).to.equal(false)
    expect(isMisplacedUser(null)).to.equal(false)
    expect(isMisplacedUser('u1')).to.equal(false)
    expect(isMisplacedUser(3)).to.equal(false)
    expect(misplacedUserWarning('session', 'passport.user')).to.include(
      "point userKey at its id (e.g. 'passport.user.id')",
    )
  })

  it('userTag: 11 base64url characters, stable per user, distinct between users', () => {
    const tag = userTag('u1')
    expect(tag).to.match(/^[A-Za-z0-9_-]{11}$/)
    expect(userTag('u1')).to.equal(tag)
    const tags = new Set(['u1', 'u2', 'U1', '1', '', '{u1}', 'josé'].map(userTag))
    expect(tags.size).to.equal(7)
    // remembered for the most recent users only: past 10,000 it starts over, and still gives the same tag
    for (let i = 0; i < 10_001; i++) userTag(`user-${i}`)
    expect(userTag('u1')).to.equal(tag)
  })
})
