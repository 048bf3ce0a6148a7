import { createClient, createCluster } from 'redis'
import { mode, type RedisClient, redisAddresses } from './redis.js'
import { startTcpProxy, type TcpProxy } from './tcp-proxy.js'

/**
 * A TCP proxy in front of one Redis node whose link towards Redis is slow: what a client sends
 * goes through at `bytesPerSecond` at most (by wall-clock time, so a late timer does not slow
 * it further), what Redis answers comes back at once. A command carrying a large body takes
 * long to arrive; small ones still answer quickly.
 */
export async function startSlowLink(target: { host: string; port: number }, bytesPerSecond: number): Promise<TcpProxy> {
  return startTcpProxy(target, (client, upstream) => {
    const queue: Buffer[] = []
    let sent = 0
    let since = 0
    const pace = setInterval(() => {
      let allowed = Math.floor(((Date.now() - since) / 1000) * bytesPerSecond) - sent
      while (allowed > 0 && queue.length > 0) {
        const chunk = queue[0]!
        const piece = chunk.subarray(0, allowed)
        upstream.write(piece)
        sent += piece.length
        allowed -= piece.length
        if (piece.length === chunk.length) queue.shift()
        else queue[0] = chunk.subarray(piece.length)
      }
    }, 5)
    client.on('data', (chunk: Buffer) => {
      // An idle link starts again at full allowance: only a backlog is paced.
      if (queue.length === 0) {
        since = Date.now()
        sent = 0
      }
      queue.push(chunk)
    })
    upstream.on('data', (chunk: Buffer) => client.write(chunk))
    return () => clearInterval(pace)
  })
}

/**
 * A client of the suite's Redis (single, or every node of the Cluster) whose every connection
 * goes through a slow link of its own (see {@link startSlowLink}). `close` closes both.
 */
export async function connectThroughSlowLinks(
  bytesPerSecond: number,
): Promise<{ client: RedisClient; close(): Promise<void> }> {
  const targets = redisAddresses()
  const links = await Promise.all(targets.map((target) => startSlowLink(target, bytesPerSecond)))
  const via = (index: number) => ({ host: '127.0.0.1', port: links[index]!.port })
  const client =
    mode === 'cluster'
      ? createCluster({
          rootNodes: targets.map((_target, index) => ({ socket: via(index) })),
          nodeAddressMap: Object.fromEntries(
            targets.map((target, index) => [`${target.host}:${target.port}`, via(index)]),
          ),
        })
      : createClient({ socket: via(0) })
  client.on('error', () => {})
  await client.connect()
  return {
    client: client as RedisClient,
    async close() {
      await client.close()
      for (const link of links) await link.close()
    },
  }
}
