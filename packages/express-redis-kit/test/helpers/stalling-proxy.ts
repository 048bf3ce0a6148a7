import { once } from 'node:events'
import { createConnection, createServer, type Server, type Socket } from 'node:net'

/**
 * A TCP proxy in front of one Redis node that can stall what Redis sends to the connections
 * that turned CLIENT TRACKING on (recognised by the command they sent), while every other
 * connection through it keeps working: a half-dead tracking connection, as a lost packet
 * stream or a stuck network path would leave it.
 */
export interface StallingProxy {
  port: number
  /** How many connections through it sent CLIENT TRACKING. */
  trackingConnections(): number
  /** Holds back every byte Redis sends to a tracking connection (kept in order, not dropped). */
  stall(): void
  /** Delivers what was held back, and stops holding. */
  resume(): void
  close(): Promise<void>
}

export async function startStallingProxy(target: { host: string; port: number }): Promise<StallingProxy> {
  let stalled = false
  const links: { tracking: boolean; held: Buffer[]; client: Socket; upstream: Socket }[] = []
  const server: Server = createServer((client) => {
    const upstream = createConnection(target)
    const link = { tracking: false, held: [] as Buffer[], client, upstream }
    links.push(link)
    client.on('data', (chunk: Buffer) => {
      // node-redis writes each command's arguments as RESP bulk strings: `$8\r\nTRACKING\r\n`.
      if (!link.tracking && chunk.includes('\r\nTRACKING\r\n')) link.tracking = true
      upstream.write(chunk)
    })
    upstream.on('data', (chunk: Buffer) => {
      if (stalled && link.tracking) link.held.push(chunk)
      else client.write(chunk)
    })
    const close = () => {
      client.destroy()
      upstream.destroy()
      const index = links.indexOf(link)
      if (index !== -1) links.splice(index, 1)
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
    trackingConnections: () => links.filter((link) => link.tracking).length,
    stall() {
      stalled = true
    },
    resume() {
      stalled = false
      for (const link of links) {
        for (const chunk of link.held.splice(0)) link.client.write(chunk)
      }
    },
    async close() {
      for (const link of [...links]) {
        link.client.destroy()
        link.upstream.destroy()
      }
      await new Promise((resolve) => server.close(resolve))
    },
  }
}
