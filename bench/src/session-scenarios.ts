import { RedisStore } from 'connect-redis'
import cookieParser from 'cookie-parser'
import express, { type Express, type Request } from 'express'
import { type Session, session } from 'express-redis-kit'
import { RedisStore as KitStore } from 'express-redis-kit/express-session'
import expressSession from 'express-session'
import type { ServerRedis } from './serve.js'

export const SESSION_SCENARIOS = [
  'express',
  'one-evalsha',
  'erk-session',
  'erk-session-cookie-parser',
  'express-session',
  'express-session-erk-store',
] as const
export type SessionScenario = (typeof SESSION_SCENARIOS)[number]

export const SESSION_LABELS: Record<SessionScenario, string> = {
  express: 'plain Express (no session)',
  'one-evalsha': 'one EVALSHA and nothing else (the floor)',
  'erk-session': 'express-redis-kit session (secrets)',
  'erk-session-cookie-parser': 'express-redis-kit session behind cookie-parser',
  'express-session': 'express-session 1.19 + connect-redis 10',
  'express-session-erk-store': 'express-session 1.19 + express-redis-kit/express-session',
}

export const ROUTES = ['read', 'write'] as const
export type Route = (typeof ROUTES)[number]

/** A read-only request with a session, and a request that changes it. */
export const ROUTE_REQUESTS: Record<Route, { method: 'GET' | 'POST'; path: string }> = {
  read: { method: 'GET', path: '/read' },
  write: { method: 'POST', path: '/write' },
}

/** The user the one session of a run is logged in as; GET /read answers it. */
export const USER_ID = 1
const SECRET = 'bench-session-secret'

/** The session data the routes use, whichever middleware holds it. */
interface BenchSession {
  userId?: number
  counter?: number
}

/** How a scenario logs in (a new session id, against fixation) and where its session data is. */
interface SessionAccess {
  regenerate(req: Request): Promise<void>
  data(req: Request): BenchSession
}

/**
 * The app of a scenario: the middleware with its package's defaults apart from what the
 * benchmark needs (prefix, secret; express-redis-kit with its own `secrets`, and behind
 * cookie-parser as before; express-session with `resave: false`,
 * `saveUninitialized: false` as its README recommends, on connect-redis and on the kit's
 * store), and the same three routes for all:
 *   POST /login  new session id, `userId` set
 *   GET /read    answers the session's `userId` (read-only)
 *   POST /write  increments the session's `counter`
 * /read and /write answer 401 without a logged-in session, so a lost session shows up as
 * non-2xx responses. Plain Express has no session: the same routes on one in-memory object.
 */
export function buildApp(scenario: SessionScenario, client: ServerRedis | undefined, prefix: string): Express {
  const app = express()
  let access: SessionAccess
  if (scenario === 'express') {
    const plain: BenchSession = {}
    access = { regenerate: async () => {}, data: () => plain }
  } else {
    if (!client) throw new Error(`${scenario} needs a Redis client`)
    if (scenario === 'one-evalsha') {
      // What any Redis-backed session costs at least: one round trip, here a script that reads
      // nothing and returns 1; no cookie is parsed, the data is one in-memory object.
      const plain: BenchSession = {}
      const key = `${prefix}floor`
      const loaded = client.scriptLoad('return 1')
      app.use(async (_req, _res, next) => {
        await client.evalSha(await loaded, { keys: [key] })
        next()
      })
      access = { regenerate: async () => {}, data: () => plain }
    } else if (scenario === 'erk-session') {
      app.use(session({ client: client, prefix, secrets: SECRET }))
      access = {
        regenerate: (req) => sessionOf<Session>(req).regenerate(),
        data: (req) => sessionOf<BenchSession>(req),
      }
    } else if (scenario === 'erk-session-cookie-parser') {
      app.use(cookieParser(SECRET))
      app.use(session({ client: client, prefix }))
      access = {
        regenerate: (req) => sessionOf<Session>(req).regenerate(),
        data: (req) => sessionOf<BenchSession>(req),
      }
    } else {
      const store =
        scenario === 'express-session' ? new RedisStore({ client, prefix }) : new KitStore({ client, prefix })
      app.use(expressSession({ secret: SECRET, resave: false, saveUninitialized: false, store }))
      access = {
        regenerate: (req) =>
          new Promise<void>((resolve, reject) =>
            sessionOf<expressSession.Session>(req).regenerate((error: unknown) => (error ? reject(error) : resolve())),
          ),
        data: (req) => sessionOf<BenchSession>(req),
      }
    }
  }

  app.post('/login', async (req, res) => {
    await access.regenerate(req)
    access.data(req).userId = USER_ID
    res.json({ ok: true })
  })
  app.get('/read', (req, res) => {
    const { userId } = access.data(req)
    if (userId === undefined) res.status(401).json({ error: 'no session' })
    else res.json({ userId })
  })
  app.post('/write', (req, res) => {
    const data = access.data(req)
    if (data.userId === undefined) {
      res.status(401).json({ error: 'no session' })
      return
    }
    data.counter = (data.counter ?? 0) + 1
    res.json({ counter: data.counter })
  })
  return app
}

/** `req.session`, typed as one package sees it (both packages declare `req.session`, differently). */
const sessionOf = <T>(req: Request): T => (req as unknown as { session: T }).session
