import { loadConfigOrExit } from './config.js'
import { runJobWorker } from './jobs/index.js'
import { connectRedis } from './redis.js'

// The job worker as a process of its own (`pnpm --filter sample-app worker`): as many as wanted,
// on any machine that reaches the queue's Redis and the app's Redis.
const config = loadConfigOrExit()

// the app's Redis, for the cleanup job (sessions, cached copies); it reconnects by itself
const redis = connectRedis(config, console)
const worker = runJobWorker(config, redis.redis, console)

let stopping = false
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, async () => {
    if (stopping) return
    stopping = true
    // finishes the jobs in hand (10 s at most; past it they are returned to the queue by the stalled check)
    await worker.close()
    redis.destroy()
    console.log('job worker stopped')
    // whatever a library left open must not keep a stopped worker alive
    setTimeout(() => process.exit(0), 2_000).unref()
  })
}
