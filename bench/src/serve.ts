/**
 * The child side of src/children.ts, shared by the benchmark servers (src/server.ts,
 * src/session-server.ts, src/cache-server.ts): one Redis connection, the app on a random
 * loopback port, and the IPC protocol with the load generator. Tells the parent
 * `{ type: 'ready', port, redisAddr }`, answers 'cpu' with its CPU time, exits on 'stop' or
 * when the parent goes away.
 */
import type { AddressInfo } from 'node:net'
import type { Express } from 'express'
import { createClient } from 'redis'
import { REDIS_URL } from './redis-stats.js'

/** The server's CPU time so far (`process.cpuUsage()`, microseconds), on request 'cpu'. */
export interface CpuMessage {
  type: 'cpu'
  usage: NodeJS.CpuUsage
}

export interface ReadyMessage {
  type: 'ready'
  port: number
  /** This server's Redis connection as Redis sees it (`CLIENT INFO` addr), for MONITOR. */
  redisAddr: string | undefined
}

export type ServerRedis = ReturnType<typeof createClient>

/** The server's Redis connection as `serve` closes it on 'stop' (node-redis's `close()`, or a wrapper of another client's). */
export interface Closable {
  close(): Promise<unknown>
}

// The parent is gone (crashed or killed): never outlive it.
process.on('disconnect', () => process.exit(0))

/** The server's one Redis connection (named `clientName` in CLIENT LIST if given), and its address as Redis sees it. */
export async function connectRedis(
  name: string,
  clientName?: string,
): Promise<{ client: ServerRedis; redisAddr: string }> {
  const client: ServerRedis = createClient({ url: REDIS_URL, ...(clientName ? { name: clientName } : {}) })
  client.on('error', (error: unknown) => console.error(`[${name}] redis:`, error))
  await client.connect()
  return { client, redisAddr: (await client.clientInfo()).addr }
}

/** Listens on 127.0.0.1 (random port) and speaks the parent's IPC protocol. */
export function serve(app: Express, client: Closable | undefined, redisAddr: string | undefined): void {
  const server = app.listen(0, '127.0.0.1', () => {
    const { port } = server.address() as AddressInfo
    process.send?.({ type: 'ready', port, redisAddr } satisfies ReadyMessage)
  })

  process.on('message', (message) => {
    if (message === 'cpu') process.send?.({ type: 'cpu', usage: process.cpuUsage() } satisfies CpuMessage)
    if (message !== 'stop') return
    server.closeAllConnections()
    server.close()
    // A normal exit, so that --cpu-prof (BENCH_PROFILE) can write its profile.
    void (client?.close() ?? Promise.resolve()).finally(() => process.exit(0))
  })
}
