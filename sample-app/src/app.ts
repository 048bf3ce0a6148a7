import express from 'express'
import { type RedisClient, rateLimit } from 'express-redis-kit'

/** What the app needs from outside; tests inject their own. */
export interface AppDependencies {
  redis: RedisClient
}

/** Builds the Express app without listening, so tests can drive it with supertest. */
export function createApp({ redis }: AppDependencies): express.Express {
  const app = express()
  app.use(rateLimit({ client: redis, limit: 100, windowMs: '1m', prefix: 'sample:rl:' }))
  app.get('/', (req, res) => {
    res.json({ hello: 'express-redis-kit', rateLimit: req.rateLimit })
  })
  return app
}
