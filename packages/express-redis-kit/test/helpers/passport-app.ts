import cookieParser from 'cookie-parser'
import express, { type ErrorRequestHandler, type Express, type RequestHandler } from 'express'
import express4 from 'express4'
import { Passport } from 'passport'
import { Strategy as LocalStrategy } from 'passport-local'
import { stableHost } from './cache-app.js'

/** The Express majors the package supports: passport flows run on both. */
export const EXPRESS_MAJORS = [
  { name: 'Express 5', create: express },
  { name: 'Express 4', create: express4 },
] as const

/** The users passport-local accepts (password `secret`). */
const USERS = new Map([
  [7, { id: 7, name: 'ada' }],
  [8, { id: 8, name: 'grace' }],
])

export interface PassportAppOptions {
  /** passport's `keepSessionInfo` on login and logout. */
  keepSessionInfo?: boolean
  /** What serializeUser stores as `req.session.passport.user` (default: the user's id). */
  serialize?: (user: { id: number; name: string }) => unknown
  /** More routes, mounted before the error handler. */
  routes?: (app: Express) => void
}

/**
 * A passport-local app as passport's documentation writes it, on Express 4 or 5:
 *   POST /login      username=ada|grace&password=secret: 200 { user, sessionID }; else 302 to /sign-in
 *   POST /logout     req.logout(cb); 200 { ok: true }
 *   GET  /me         200 { user: req.user ?? null, data: req.session }
 *   POST /set/:field sets a string field of the session (a guest cart...)
 * Errors are answered with `{ error: message, code }` and the error's status (or 500).
 */
export function passportApp(
  create: () => Express,
  sessions: RequestHandler,
  options: PassportAppOptions = {},
): Express {
  const app = create()
  const passport = new Passport()
  passport.use(
    new LocalStrategy((username, password, done) => {
      const user = [...USERS.values()].find((candidate) => candidate.name === username)
      done(null, user && password === 'secret' ? user : false)
    }),
  )
  passport.serializeUser((user, done) => done(null, (options.serialize ?? ((u) => u.id))(user as never)))
  passport.deserializeUser((stored: unknown, done) => {
    const id = typeof stored === 'object' && stored !== null ? (stored as { id: number }).id : Number(stored)
    done(null, USERS.get(id) ?? false)
  })
  app.use(stableHost)
  app.use(express.urlencoded({ extended: false }))
  app.use(cookieParser('current secret'))
  app.use(sessions)
  app.use(passport.initialize())
  app.use(passport.session())
  const keepSessionInfo = options.keepSessionInfo ?? false
  app.post('/login', passport.authenticate('local', { failureRedirect: '/sign-in', keepSessionInfo }), (req, res) => {
    res.json({ user: req.user, sessionID: req.sessionID })
  })
  app.post('/logout', (req, res, next) => {
    req.logout({ keepSessionInfo }, (error) => (error ? next(error) : res.json({ ok: true })))
  })
  app.get('/me', (req, res) => {
    res.json({ user: req.user ?? null, data: req.session })
  })
  app.post('/set/:field', (req, res) => {
    ;(req.session as unknown as Record<string, unknown>)[String(req.params.field)] = String(req.query.value ?? 'x')
    res.json({ ok: true })
  })
  options.routes?.(app)
  const onError: ErrorRequestHandler = (error, _req, res, _next) => {
    res.status(error.status ?? 500).json({ error: error.message, code: error.code })
  }
  app.use(onError)
  return app
}
