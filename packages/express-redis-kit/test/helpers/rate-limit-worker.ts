/*
 * A child process for the concurrency tests (started by `startWorkers` in workers.ts):
 * its own Express app and its own Redis connection (single or Cluster, per REDIS_MODE),
 * one limiter per entry of the JSON list in argv[2], all keyed 'shared'. It listens on an
 * ephemeral loopback port, reports `{ type: 'ready', port }` over IPC, and exits on
 * SIGTERM or when its parent goes away.
 */
import express from 'express'
import { rateLimit } from '../../src/index.js'
import { connectRedis } from './redis.js'
import { serveWorker, type WorkerLimiter } from './workers.js'

const limiters = JSON.parse(process.argv[2] ?? '[]') as WorkerLimiter[]
const client = await connectRedis()
const app = express()
for (const limiter of limiters) {
  app.get(
    limiter.path,
    rateLimit({
      client,
      limit: limiter.limit,
      windowMs: limiter.windowMs,
      limits: limiter.limits,
      blockDuration: limiter.blockDuration,
      localBlockCache: limiter.localBlockCache,
      mode: limiter.mode,
      algorithm: limiter.algorithm,
      cost: limiter.cost ?? 1,
      prefix: limiter.prefix,
      keyGenerator: () => 'shared',
      // The concurrency tests are about exactness, not about failures: a Redis error is
      // answered 503 (never counted as admitted), and a slow answer under this load is not one.
      onRedisError: 'block',
      timeoutMs: 10_000,
    }),
    (_req, res) => {
      res.send('ok')
    },
  )
}

serveWorker(app, client)
