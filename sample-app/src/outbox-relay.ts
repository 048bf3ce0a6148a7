/**
 * An outbox relay in a process of its own (`pnpm --filter sample-app outbox:relay`), for deployments that relay outside
 * the web instances (set OUTBOX_RELAY=false on those) or next to them: relays claim different rows. Same environment
 * variables as the server. SIGINT/SIGTERM finish the batch in hand, then exit.
 */
import { ConfigError, loadConfig } from './config.js'
import { redisLocation } from './redis.js'
import { createServices } from './services.js'

let config: ReturnType<typeof loadConfig>
try {
  config = loadConfig()
} catch (error) {
  if (!(error instanceof ConfigError)) throw error
  console.error(error.message)
  process.exit(1)
}

// the same notifier (prefix, Redis or Cluster) as the server's, so that what it relays reaches the server's subscribers
const services = createServices({ ...config, outbox: { ...config.outbox, relay: true } })
if (!(await services.redisReady(3_000)))
  console.warn(`${redisLocation(config)} is not answering: relaying once it does`)
console.log(`outbox relay running (pid ${process.pid})`)

let stopping = false
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, async () => {
    if (stopping) return
    stopping = true
    await services.close()
  })
}
