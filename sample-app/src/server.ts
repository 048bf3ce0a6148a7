import type { AddressInfo } from 'node:net'
import { createApp } from './app.js'
import { ConfigError, loadConfig, usesDevelopmentSecret } from './config.js'
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
if (usesDevelopmentSecret(config)) {
  console.warn('SESSION_SECRETS is not set: using a development secret (never do this in production).')
}

const services = createServices(config)
// a fresh instance serves with Redis from its first request when Redis is there; without it, it starts anyway
if (!(await services.redisReady(3_000))) console.warn(`${redisLocation(config)} is not answering: starting without it`)
const server = createApp({ config, ...services }).listen(config.port, config.host, () => {
  const { port } = server.address() as AddressInfo
  console.log(`sample app listening on http://${config.host}:${port}`)
})
server.on('error', (error) => {
  console.error(`cannot listen on ${config.host}:${config.port}: ${error.message}`)
  process.exit(1)
})

let stopping = false
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, async () => {
    if (stopping) return
    stopping = true
    server.close()
    server.closeAllConnections() // SSE streams never end by themselves
    await services.close()
  })
}
