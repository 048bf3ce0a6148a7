/*
 * A child process for the notifier's multi-process tests (started by `startNotifierWorkers`
 * in notifier-workers.ts): its own Redis connection (single or Cluster, per REDIS_MODE) and
 * its own notifier, subscribed to the channel of the JSON config in argv[2]. Its handler
 * reports every call `{ type: 'received', pid, payload, id, deliveries }` over IPC, then
 * finishes after delayMs, never ('hang'), or exits the process ('exit'). It reports
 * `{ type: 'ready', port: 0 }` once subscribed, forwards its log lines, and exits on SIGTERM
 * or when its parent goes away. Its handler waits for `{ type: 'go' }` from the parent (sent
 * once the parent listens to its reports), so that no report is sent before anyone listens.
 */
import { setTimeout as sleep } from 'node:timers/promises'
import { createNotifier } from '../../src/index.js'
import type { NotifierWorkerConfig, NotifierWorkerMessage } from './notifier-workers.js'
import { connectRedis } from './redis.js'

const config = JSON.parse(process.argv[2] ?? '{}') as NotifierWorkerConfig

/** Sends a message to the parent and resolves once it has been handed over. */
function send(message: NotifierWorkerMessage): Promise<void> {
  return new Promise((resolve) => {
    if (!process.connected) return resolve()
    process.send?.(message, () => resolve())
  })
}

const log =
  (level: 'warn' | 'error') =>
  (message: string, ...details: unknown[]): void => {
    const detail = details.map((each) => (each instanceof Error ? each.message : String(each))).join(' ')
    void send({ type: 'log', level, message: `${message} ${detail}`.trim() })
  }

const go = new Promise<void>((resolve) => {
  process.on('message', (message: { type?: string }) => {
    if (message?.type === 'go') resolve()
  })
})

const client = await connectRedis()
const notifier = createNotifier({
  client,
  prefix: config.prefix,
  mode: config.mode,
  logger: { warn: log('warn'), error: log('error') },
  ...(config.group === undefined ? {} : { group: config.group }),
  ...(config.claimIdle === undefined ? {} : { claimIdle: config.claimIdle }),
  ...(config.batchSize === undefined ? {} : { batchSize: config.batchSize }),
})

await notifier.subscribe(config.channel, async (payload, meta) => {
  await go
  await send({ type: 'received', pid: process.pid, payload, id: meta.id, deliveries: meta.deliveries })
  if (config.behaviour === 'exit') process.exit(1)
  if (config.behaviour === 'hang') await new Promise(() => {})
  if (config.delayMs) await sleep(config.delayMs)
})
await send({ type: 'ready', port: 0 })

let stopping = false
async function shutdown(): Promise<void> {
  if (stopping) return
  stopping = true
  try {
    await notifier.close()
    await client.close()
  } finally {
    process.exit(0)
  }
}
process.on('SIGTERM', () => void shutdown())
process.on('disconnect', () => void shutdown())
