import express, { type ErrorRequestHandler, type RequestHandler } from 'express'

/**
 * An Express app with `middleware` in front of a few routes:
 *   GET /          200 'ok' (with `req.rateLimit` as JSON under /info)
 *   GET /status/:code answers that status
 *   GET /slow/:ms  answers after a delay
 * Errors passed to `next(err)` come back as `{ error: message, code }` with the error's status (or 500).
 */
export function appWith(...middleware: RequestHandler[]): express.Express {
  const app = express()
  app.set('trust proxy', false)
  app.use(...middleware)
  app.get('/', (_req, res) => {
    res.send('ok')
  })
  app.get('/info', (req, res) => {
    res.json((req as unknown as { rateLimit: unknown }).rateLimit ?? null)
  })
  app.get('/status/:code', (req, res) => {
    res.status(Number(req.params.code)).send('status')
  })
  app.get('/slow/:ms', (req, res) => {
    setTimeout(() => res.send('slow'), Number(req.params.ms))
  })
  const onError: ErrorRequestHandler = (error, _req, res, _next) => {
    res.status(error.status ?? 500).json({ error: error.message, code: error.code })
  }
  app.use(onError)
  return app
}
