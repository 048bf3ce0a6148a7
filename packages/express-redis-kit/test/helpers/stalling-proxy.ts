import type { Socket } from 'node:net'
import { startTcpProxy } from './tcp-proxy.js'

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
  const links: { tracking: boolean; held: Buffer[]; client: Socket }[] = []
  const proxy = await startTcpProxy(target, (client, upstream) => {
    const link = { tracking: false, held: [] as Buffer[], client }
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
    return () => {
      const index = links.indexOf(link)
      if (index !== -1) links.splice(index, 1)
    }
  })
  return {
    port: proxy.port,
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
    close: () => proxy.close(),
  }
}
