import type { AddressInfo } from 'node:net'
import { createApp } from './app.js'
import { loadConfigOrExit, usesDevelopmentSecret } from './config.js'
import { runJobWorker } from './jobs/index.js'
import { consoleStyle, createLogger } from './logging.js'
import { listenForMetrics } from './metrics.js'
import { redisLocation } from './redis.js'
import { createServices } from './services.js'

const config = loadConfigOrExit()
if (usesDevelopmentSecret(config)) {
  console.warn('SESSION_SECRETS is not set: using a development secret (never do this in production).')
}

// one pino logger for the request logs, the app's warnings and the kit's (LOG_LEVEL)
const log = createLogger(config.observability.logLevel)
const services = createServices(config, consoleStyle(log))
// a fresh instance serves with Redis from its first request when Redis is there; without it, it starts anyway
if (!(await services.redisReady(3_000))) console.warn(`${redisLocation(config)} is not answering: starting without it`)
const server = createApp({ config, ...services, log }).listen(config.port, config.host, () => {
  const { port } = server.address() as AddressInfo
  console.log(`sample app listening on http://${config.host}:${port}`)
})
// METRICS_PORT: GET /metrics on a port of its own, bound to HOST as the app is
const { metricsPort } = config.observability
const metricsServer =
  metricsPort === undefined
    ? undefined
    : await listenForMetrics(services.metrics, { ...config.observability, metricsPort }, config.host).catch(
        (error: Error) => {
          console.error(error.message)
          process.exit(1)
        },
      )
if (metricsServer) {
  const { port } = metricsServer.address() as AddressInfo
  console.log(`metrics on http://${config.host}:${port}/metrics`)
}
// the quickstart runs the job worker in this process too; RUN_WORKER=false leaves it to `pnpm --filter sample-app worker`
const jobWorker = config.jobs.runWorker ? runJobWorker(config, services.redis, console) : undefined
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
    metricsServer?.close()
    await jobWorker?.close() // the jobs in hand finish (10 s at most) or go back to the queue
    await services.close()
  })
}
