import { Router } from 'express'
import { HttpError } from '../errors.js'
import type { EventStream } from '../events.js'
import type { PrismaClient } from '../generated/prisma/client.js'
import type { Redis } from '../services.js'
import { limitStreams, type StreamLimitOptions } from '../stream-limits.js'

/** Settles with whether `promise` resolved within `ms`. */
async function within(promise: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<boolean>((resolve) => {
    timer = setTimeout(resolve, ms, false)
  })
  try {
    return await Promise.race([
      promise.then(
        () => true,
        () => false,
      ),
      timeout,
    ])
  } finally {
    clearTimeout(timer)
  }
}

/**
 * GET /healthz (Redis and database status) and GET /events (Server-Sent Events of user events;
 * open streams capped per client IP and in all, see stream-limits.ts).
 */
export function systemRoutes(deps: {
  prisma: PrismaClient
  redis: Redis
  events: EventStream
  streamLimits: StreamLimitOptions
}): Router {
  const { prisma, redis, events, streamLimits } = deps
  const router = Router()

  router.get('/healthz', async (_req, res) => {
    const [redisUp, databaseUp] = await Promise.all([
      redis.isReady ? within(redis.ping(), 500) : false,
      within(prisma.$queryRaw`SELECT 1`, 2_000),
    ])
    const status = !databaseUp ? 'down' : redisUp ? 'ok' : 'degraded'
    res
      .status(databaseUp ? 200 : 503)
      .set('Cache-Control', 'no-store')
      .json({ status, redis: redisUp ? 'up' : 'down', database: databaseUp ? 'up' : 'down' })
  })

  router.get('/events', limitStreams(streamLimits), async (req, res) => {
    // the subscriptions wait while Redis is unreachable; a client is not left hanging meanwhile
    if (!(await within(events.ready(), 2_000))) {
      throw new HttpError(503, 'service_unavailable', 'Live events are unavailable; try again shortly.')
    }
    await events.connect(req, res)
  })

  return router
}
