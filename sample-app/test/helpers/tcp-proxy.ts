import { once } from 'node:events'
import { connect, createServer, type Socket } from 'node:net'

/**
 * A TCP proxy on loopback in front of a Redis (or any server): the network between the app and
 * it, which a test can cut at an exact point of the conversation. Cut, it drops the connections
 * and refuses new ones (what the app sees of a partition); Redis itself keeps its data.
 */
export interface TcpProxy {
  port: number
  url: string
  /**
   * Cuts the network the moment a client sends bytes containing `marker` (those bytes never
   * reach the server). Resolves once it has.
   */
  cutWhenSent(marker: string): Promise<void>
  /** Cuts the network now: drops the connections and refuses new ones until restore(). */
  cut(): void
  /** Lets connections through again. */
  restore(): void
  close(): Promise<void>
}

export async function startTcpProxy(targetPort: number): Promise<TcpProxy> {
  const sockets = new Set<Socket>()
  let cut = false
  let trigger: { marker: string; fired: () => void } | undefined

  const cutNow = () => {
    cut = true
    for (const socket of sockets) socket.destroy()
    sockets.clear()
  }

  const server = createServer((client) => {
    if (cut) {
      client.destroy()
      return
    }
    const upstream = connect(targetPort, '127.0.0.1')
    sockets.add(client).add(upstream)
    const end = () => {
      client.destroy()
      upstream.destroy()
      sockets.delete(client)
      sockets.delete(upstream)
    }
    client.on('error', end).on('close', end)
    upstream.on('error', end).on('close', end)
    // the last bytes seen, so that a marker split between two chunks is still found
    let tail = ''
    client.on('data', (chunk: Buffer) => {
      const text = tail + chunk.toString('latin1')
      if (trigger && text.includes(trigger.marker)) {
        const { fired } = trigger
        trigger = undefined
        cutNow()
        fired()
        return
      }
      tail = text.slice(-256)
      upstream.write(chunk)
    })
    upstream.on('data', (chunk: Buffer) => client.write(chunk))
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const { port } = server.address() as { port: number }

  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    cutWhenSent(marker) {
      return new Promise((resolve) => {
        trigger = { marker, fired: resolve }
      })
    },
    cut: cutNow,
    restore() {
      cut = false
    },
    async close() {
      cutNow()
      await new Promise((resolve) => server.close(resolve))
    },
  }
}
