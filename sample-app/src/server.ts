import type { AddressInfo } from 'node:net'
import { createApp } from './app.js'
import { loadConfigOrExit, usesDevelopmentSecret } from './config.js'
import { runJobWorker } from './jobs/index.js'
import { redisLocation } from './redis.js'
import { createServices } from './services.js'

const config = loadConfigOrExit()
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
    await jobWorker?.close() // the jobs in hand finish (10 s at most) or go back to the queue
    await services.close()
  })
}
