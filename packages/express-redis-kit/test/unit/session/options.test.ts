import { expect } from 'chai'
import { createClient } from 'redis'
import { parseSessionOptions, type SessionOptions } from '../../../src/session/options.js'
import type { RedisClient } from '../../../src/shared/redis.js'
import { optionErrorOf } from '../../helpers/option-error.js'
import { recordingLogger } from '../../helpers/outage.js'

/** A node-redis client that is never connected: option parsing sends nothing. */
const client = createClient() as unknown as RedisClient
const logger = recordingLogger()
const DAY = 86_400_000

describe('session option parsing', () => {
  const parse = (options: Record<string, unknown> = {}) =>
    parseSessionOptions({ client, logger, ...options } as SessionOptions)

  it('every default resolved', () => {
    const config = parse()
    expect(config).to.include({
      name: 'sid',
      prefix: 'sess:',
      idleTimeout: 7 * DAY,
      absoluteTimeout: 30 * DAY,
      refreshEvery: (7 * DAY) / 10,
      userKey: undefined,
      userPath: undefined,
      secrets: undefined,
      meta: undefined,
      maxSessionsPerUser: 0,
      onRedisError: 'fail',
      timeoutMs: 500,
    })
    expect(config.cookie).to.deep.equal({
      httpOnly: true,
      secure: 'auto',
      sameSite: 'lax',
      path: '/',
      domain: undefined,
      partitioned: false,
    })
  })

  it('a read-only request refreshes the session at most every tenth of idleTimeout, at least every ms', () => {
    expect(parse({ idleTimeout: '10m' }).refreshEvery).to.equal(60_000)
    expect(parse({ idleTimeout: 15 }).refreshEvery).to.equal(1)
    expect(parse({ idleTimeout: 9 }).refreshEvery).to.equal(1)
  })

  it('secrets: one string or a list, copied; userKey split at its dots', () => {
    expect(parse({ secrets: 'one' }).secrets).to.deep.equal(['one'])
    const list = ['new', 'old']
    const config = parse({ secrets: list, userKey: 'passport.user' })
    expect(config.secrets).to.deep.equal(list)
    expect(config.secrets).not.to.equal(list)
    expect(config.userPath).to.deep.equal(['passport', 'user'])
  })

  it('idleTimeout at most absoluteTimeout', () => {
    expect(parse({ idleTimeout: '1d', absoluteTimeout: '1d' }).idleTimeout).to.equal(DAY)
    expect(optionErrorOf(() => parse({ idleTimeout: '2d', absoluteTimeout: '1d' }))).to.include(
      `option \`idleTimeout\` must be at most absoluteTimeout (${DAY} ms); received the number ${2 * DAY}`,
    )
  })

  it('the cookie name: an RFC 6265 token (a __Host- prefix fits)', () => {
    expect(parse({ name: '__Host-sid' }).name).to.equal('__Host-sid')
    for (const name of ['', 'a b', 'a;b', 'a=b', 'sid,x', 'sé', 5])
      expect(
        optionErrorOf(() => parse({ name })),
        String(name),
      ).to.include('option `name` must be a cookie name (RFC 6265 token)')
  })

  it('cookie attributes checked one by one; SameSite=None needs Secure', () => {
    const refused: [Record<string, unknown>, string][] = [
      [{ httpOnly: 'yes' }, 'option `cookie.httpOnly` must be a boolean'],
      [{ secure: 'always' }, "option `cookie.secure` must be true, false or 'auto'"],
      [{ sameSite: 'Lax' }, "option `cookie.sameSite` must be 'lax', 'strict' or 'none'"],
      [{ sameSite: 'none', secure: false }, "option `cookie.secure` must be true or 'auto' with sameSite 'none'"],
      [{ path: 'app' }, "option `cookie.path` must be a path starting with '/'"],
      [{ domain: 5 }, 'option `cookie.domain` must be a string'],
      [{ partitioned: 1 }, 'option `cookie.partitioned` must be a boolean'],
      [{ maxAge: 1_000 }, 'option `cookie.maxAge` must be a known option (use `idleTimeout`: an option of session()'],
      [{ expires: new Date() }, 'option `cookie.expires` must be a known option (use `absoluteTimeout`'],
      [{ signed: true }, '(not needed: the cookie is always signed)'],
    ]
    for (const [cookie, message] of refused)
      expect(
        optionErrorOf(() => parse({ cookie })),
        JSON.stringify(cookie),
      ).to.include(message)
    expect(parse({ cookie: { sameSite: 'none' } }).cookie).to.include({ sameSite: 'none', secure: 'auto' })
  })

  it('express-session and connect-redis options: named, with what to use here', () => {
    const hinted: [string, unknown, string][] = [
      ['secret', 's', '(use `secrets`: the first signs, all verify'],
      ['store', {}, '(use `client`: the node-redis client itself, no store object)'],
      ['resave', false, '(not needed: a session is saved only when it changed)'],
      ['saveUninitialized', false, '(not needed: a new session is stored, and gets a cookie, only once it holds data)'],
      ['genid', () => 'x', '(not supported: the token is 256 random bits from the CSPRNG'],
      ['ttl', 86_400, '(use `idleTimeout`: in milliseconds, where connect-redis counts seconds)'],
      ['maxAge', 1_000, '(use `idleTimeout`)'],
      ['secrtes', ['s'], '(use `secrets`)'],
    ]
    for (const [name, value, hint] of hinted)
      expect(
        optionErrorOf(() => parse({ [name]: value })),
        name,
      ).to.include(`option \`${name}\` must be a known option ${hint}`)
  })

  it('other values checked, naming the option', () => {
    const refused: [Record<string, unknown>, string][] = [
      [{ secrets: '' }, 'option `secrets` must be a non-empty string or a non-empty array of them'],
      [{ secrets: [] }, 'option `secrets` must be a non-empty string or a non-empty array'],
      [{ secrets: ['ok', ''] }, 'option `secrets` must be'],
      [{ meta: {} }, 'option `meta` must be a function'],
      [{ maxSessionsPerUser: 3 }, 'option `maxSessionsPerUser` must be used with `userKey` (the index it limits)'],
      [{ maxSessionsPerUser: 0, userKey: 'u' }, 'option `maxSessionsPerUser` must be a positive integer'],
      [{ onRedisError: 'allow' }, "option `onRedisError` must be 'fail' or 'anonymous'"],
      [{ userKey: 'passport..user' }, 'option `userKey` must be a property name or a dotted path'],
      [{ cookie: 'sid' }, 'option `cookie` must be an object'],
    ]
    for (const [options, message] of refused)
      expect(
        optionErrorOf(() => parse(options)),
        JSON.stringify(options),
      ).to.include(message)
  })
})
