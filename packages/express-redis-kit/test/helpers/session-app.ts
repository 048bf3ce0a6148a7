import { createHash, createHmac, randomBytes } from 'node:crypto'
import cookieParser from 'cookie-parser'
import express, { type ErrorRequestHandler, type Express, type Request } from 'express'
import request, { type Response as TestResponse } from 'supertest'
import type { SessionMiddleware } from '../../src/index.js'
import { stableHost } from './cache-app.js'

declare module '../../src/index.js' {
  interface SessionData {
    userId: number
    cart: string[]
    color: string
  }
}

export interface SessionAppOptions {
  /** The cookie-parser secrets; `null` mounts cookie-parser without a secret, `false` not at all. */
  secrets?: string[] | null | false
  /** Express's `trust proxy` setting. */
  trustProxy?: boolean
  /**
   * Awaited by `GET /slow` after the session was loaded and before it changes a field
   * (default: `?ms=` milliseconds, 500 if not given).
   */
  slow?: (req: Request) => Promise<void>
  /** More routes, mounted after the standard ones and before the error handler. */
  routes?: (app: Express) => void
}

/** The data of `req.session` as a plain record (what the routes read and write). */
export const dataOf = (req: Request): Record<string, unknown> => req.session as unknown as Record<string, unknown>

/**
 * An Express 5 app: cookie-parser, `sessions`, then
 *   POST /login?user=7[&redirect=1][&keep=1]  regenerate({ keepData }), set userId, then json or redirect to /me
 *   GET  /me                                  200 { data: req.session } (JSON shows the data only)
 *   POST /set/:field?value=v                  sets a string field;  POST /unset/:field deletes it
 *   POST /logout                              destroy()
 *   POST /touch                               touch()
 *   GET  /slow?field=f&value=v[&ms=500]       loads, waits (see `slow`), sets the field
 * Errors passed to `next(err)` are recorded in `app.locals.errors` and answered with
 * `{ error: message, code, status }` and the error's status (or 500).
 */
export function sessionApp(sessions: SessionMiddleware, options: SessionAppOptions = {}): Express {
  const app = express()
  app.set('trust proxy', options.trustProxy ?? false)
  app.locals.errors = [] as Error[]
  app.use(stableHost)
  const { secrets = ['current secret'] } = options
  if (secrets !== false) app.use(secrets === null ? cookieParser() : cookieParser(secrets))
  app.use(sessions)
  app.post('/login', async (req, res) => {
    await req.session.regenerate({ keepData: req.query.keep === '1' })
    req.session.userId = Number(req.query.user ?? 1)
    if (req.query.redirect === '1') res.redirect('/me')
    else res.json({ ok: true })
  })
  app.get('/me', (req, res) => {
    res.json({ data: req.session })
  })
  app.post('/set/:field', (req, res) => {
    dataOf(req)[req.params.field] = String(req.query.value ?? 'x')
    res.json({ ok: true })
  })
  app.post('/unset/:field', (req, res) => {
    delete dataOf(req)[req.params.field]
    res.json({ ok: true })
  })
  app.post('/logout', async (req, res) => {
    await req.session.destroy()
    res.json({ ok: true })
  })
  app.post('/touch', async (req, res) => {
    await req.session.touch()
    res.json({ ok: true })
  })
  app.get('/slow', async (req, res) => {
    await (options.slow ?? waitMs)(req)
    dataOf(req)[String(req.query.field ?? 'slow')] = String(req.query.value ?? 'x')
    res.json({ ok: true })
  })
  options.routes?.(app)
  const onError: ErrorRequestHandler = (error, _req, res, _next) => {
    app.locals.errors.push(error)
    res.status(error.status ?? 500).json({ error: error.message, code: error.code, status: error.status })
  }
  app.use(onError)
  return app
}

function waitMs(req: Request): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, Number(req.query.ms ?? 500)))
}

/**
 * A point a route stops at until the test lets it go: `reached` resolves when the route
 * gets there, `release()` lets it continue. Makes races deterministic.
 */
export function checkpoint() {
  let arrive!: () => void
  let go!: () => void
  const reached = new Promise<void>((resolve) => {
    arrive = resolve
  })
  const released = new Promise<void>((resolve) => {
    go = resolve
  })
  return {
    reached,
    release: () => go(),
    /** What the route awaits. */
    wait: async (): Promise<void> => {
      arrive()
      await released
    },
  }
}

/** A parsed `Set-Cookie` header. */
export interface SetCookie {
  name: string
  /** The value as sent (URL-encoded). */
  raw: string
  /** The value, URL-decoded. */
  value: string
  /** Attribute names lower-cased; flags map to `true`. */
  attributes: Record<string, string | true>
}

export function parseSetCookie(header: string): SetCookie {
  const [pair = '', ...attributeParts] = header.split(';').map((part) => part.trim())
  const equals = pair.indexOf('=')
  const raw = pair.slice(equals + 1)
  const attributes: Record<string, string | true> = {}
  for (const part of attributeParts) {
    const at = part.indexOf('=')
    if (at === -1) attributes[part.toLowerCase()] = true
    else attributes[part.slice(0, at).toLowerCase()] = part.slice(at + 1)
  }
  return { name: pair.slice(0, equals), raw, value: decodeURIComponent(raw), attributes }
}

/** The `Set-Cookie` of cookie `name` in a response, if any. */
export function setCookieOf(res: TestResponse, name = 'sid'): SetCookie | undefined {
  const headers = (res.headers['set-cookie'] as unknown as string[] | undefined) ?? []
  const found = headers.map(parseSetCookie).filter((cookie) => cookie.name === name)
  if (found.length > 1) throw new Error(`${found.length} Set-Cookie headers for ${name}`)
  return found[0]
}

/** A cookie-parser signature (what cookie-signature's `sign` computes). */
export function sign(value: string, secret: string): string {
  return `${value}.${createHmac('sha256', secret).update(value).digest('base64').replace(/=+$/, '')}`
}

/** A `Cookie` header carrying `value` signed with `secret` the way `res.cookie(..., { signed: true })` does. */
export function signedCookieHeader(value: string, secret = 'current secret', name = 'sid'): string {
  return `${name}=${encodeURIComponent(`s:${sign(value, secret)}`)}`
}

/**
 * The value of the session cookie in a `Set-Cookie`, `<tag>.<token>` (checked against
 * `secret` by cookie-parser's own `signedCookie`).
 */
export function sessionIdOf(res: TestResponse, secret = 'current secret', name = 'sid'): string {
  const cookie = setCookieOf(res, name)
  if (!cookie) throw new Error(`no Set-Cookie for ${name}`)
  const id = cookieParser.signedCookie(cookie.value, secret)
  if (typeof id !== 'string') throw new Error(`the ${name} cookie is not signed with the given secret`)
  return id
}

/** A cookie value of the shape the middleware issues (`<11 characters>.<43 base64url characters>`), never issued by it. */
export function neverIssuedId(): string {
  return `${randomBytes(8).toString('base64url').slice(0, 11)}.${randomBytes(32).toString('base64url')}`
}

/** base64url(SHA-256(text)). */
const sha256 = (text: string): string => createHash('sha256').update(text).digest('base64url')

/**
 * The Redis key of the session a cookie value (`<tag>.<token>`) names, from the data model
 * of src/session/scripts.ts: `<prefix>{<tag>}:<SHA-256 of the token>`.
 */
export const sessionKey = (prefix: string, cookieValue: string): string =>
  `${prefix}{${cookieValue.slice(0, 11)}}:${sha256(cookieValue.slice(12))}`

/** The public handle of the session a cookie value names: the first 22 characters of its hash. */
export const handleOfCookie = (cookieValue: string): string => sha256(cookieValue.slice(12)).slice(0, 22)

/** The tag of a user's sessions: the first 11 characters of a SHA-256 of `user\n<id>`. */
export const userTagOf = (userId: string | number): string => sha256(`user\n${userId}`).slice(0, 11)

/** The Redis key of a user's index of sessions (user ids of printable ASCII without braces are kept as is). */
export const userIndexKey = (prefix: string, userId: string | number): string =>
  `${prefix}{${userTagOf(userId)}}:user:${userId}`

/**
 * A client that keeps the session cookie the way a browser would, except that it ignores
 * `Expires`/`Max-Age` (supertest's jar drops a cookie at its second-granular `Expires`,
 * which makes sub-second timeouts flaky; and the tests here check the server, not the jar).
 */
export class SessionClient {
  /** The cookie value as last set (URL-encoded), or undefined once cleared. */
  raw: string | undefined

  constructor(
    readonly app: Express,
    readonly name = 'sid',
  ) {}

  /** The `Cookie` header this client sends. */
  get header(): string | undefined {
    return this.raw === undefined ? undefined : `${this.name}=${this.raw}`
  }

  /** The session cookie's value, `<tag>.<token>` (its signature checked with `secret`), or undefined without one. */
  id(secret = 'current secret'): string | undefined {
    if (this.raw === undefined) return undefined
    const id = cookieParser.signedCookie(decodeURIComponent(this.raw), secret)
    return typeof id === 'string' ? id : undefined
  }

  async send(method: 'get' | 'post', path: string, headers: Record<string, string> = {}): Promise<TestResponse> {
    let test = request(this.app)[method](path)
    if (this.header !== undefined) test = test.set('Cookie', this.header)
    for (const [header, value] of Object.entries(headers)) test = test.set(header, value)
    const res = await test
    const cookie = setCookieOf(res, this.name)
    if (cookie) this.raw = cookie.value === '' ? undefined : cookie.raw
    return res
  }

  get(path: string, headers?: Record<string, string>): Promise<TestResponse> {
    return this.send('get', path, headers)
  }

  post(path: string, headers?: Record<string, string>): Promise<TestResponse> {
    return this.send('post', path, headers)
  }

  /** The data `GET /me` shows. */
  async data(): Promise<Record<string, unknown>> {
    const res = await this.get('/me')
    if (res.status !== 200) throw new Error(`GET /me answered ${res.status}: ${JSON.stringify(res.body)}`)
    return res.body.data
  }
}
