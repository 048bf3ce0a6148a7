/*
 * A child process of local.test.ts: connects to the Redis (or Cluster) named in its argument,
 * reads a cached() value with `localCache` until one read is served locally, closes its client
 * and returns, printing `{ "localHits": n }`. It never calls process.exit(): the test checks
 * that the process ends by itself (the tracking connections and timers do not keep it alive).
 */
import { AsyncLocalStorage } from 'node:async_hooks'
import diagnostics from 'node:diagnostics_channel'
import { setTimeout as sleep } from 'node:timers/promises'
import { createClient, createCluster } from 'redis'
import { type CacheEvent, CHANNELS, cached } from '../../src/index.js'

const { redis, prefix } = JSON.parse(process.argv[2] ?? '{}') as {
  redis: { url: string } | { cluster: string[] }
  prefix: string
}
const client =
  'cluster' in redis
    ? createCluster({ rootNodes: redis.cluster.map((url) => ({ url })) })
    : createClient({ url: redis.url })
client.on('error', () => {})
await client.connect()

const reads = new AsyncLocalStorage<{ local: boolean }>()
const onEvent = (message: unknown) => {
  const read = reads.getStore()
  if (read && (message as CacheEvent).local) read.local = true
}
diagnostics.subscribe(CHANNELS.cache, onEvent)
let localHits = 0
for (let attempt = 0; attempt < 200 && localHits === 0; attempt++) {
  const read = { local: false }
  await reads.run(read, () => cached(client, 'exit', { prefix, ttl: '1m', localCache: true }, () => 'value'))
  if (read.local) localHits++
  await sleep(5)
}
diagnostics.unsubscribe(CHANNELS.cache, onEvent)
await client.close()
console.log(JSON.stringify({ localHits }))
