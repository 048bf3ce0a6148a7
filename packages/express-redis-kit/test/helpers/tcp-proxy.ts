import { once } from 'node:events'
import { createConnection, createServer, type Socket } from 'node:net'

/** A TCP proxy on an ephemeral loopback port (see {@link startTcpProxy}). */
export interface TcpProxy {
  port: number
  /** Closes every connection through it, then the proxy. */
  close(): Promise<void>
}

/**
 * A TCP proxy in front of `target`: each client gets a connection of its own to the target,
 * and `link` connects the two (what goes which way, and when); closing either closes both,
 * after `link`'s cleanup, if it returned one.
 */
export async function startTcpProxy(
  target: { host: string; port: number },
  link: (client: Socket, upstream: Socket) => (() => void) | undefined,
): Promise<TcpProxy> {
  const sockets = new Set<Socket>()
  const server = createServer((client) => {
    const upstream = createConnection(target)
    sockets.add(client).add(upstream)
    const cleanup = link(client, upstream)
    const close = () => {
      cleanup?.()
      client.destroy()
      upstream.destroy()
      sockets.delete(client)
      sockets.delete(upstream)
    }
    client.on('close', close)
    upstream.on('close', close)
    client.on('error', () => {})
    upstream.on('error', () => {})
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  return {
    port: (server.address() as { port: number }).port,
    async close() {
      for (const socket of sockets) socket.destroy()
      await new Promise((resolve) => server.close(resolve))
    },
  }
}
