import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { createServer } from 'node:net'
import { createClient } from 'redis'

/** A throwaway redis-server of our own (no persistence) that a test may stop and start again. */
export interface DisposableRedis {
  port: number
  url: string
  stop(): Promise<void>
  /** Starts it again on the same port (empty). */
  restart(): Promise<void>
  /** Freezes the process (SIGSTOP): connections stay open, nothing answers. */
  pause(): void
  /** Lets a paused server go on (SIGCONT). */
  resume(): void
}

export async function startDisposableRedis(): Promise<DisposableRedis> {
  const port = await freePort()
  const url = `redis://127.0.0.1:${port}`
  const start = async () => {
    const server = spawn(
      'redis-server',
      ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'],
      { stdio: 'ignore' },
    )
    await answering(url, 10_000)
    return server
  }
  let server = await start()
  const stop = async () => {
    if (server.exitCode !== null || server.signalCode !== null) return
    const exited = once(server, 'exit')
    server.kill('SIGCONT')
    server.kill('SIGKILL')
    await exited
  }
  return {
    port,
    url,
    stop,
    async restart() {
      await stop()
      server = await start()
    },
    pause: () => void server.kill('SIGSTOP'),
    resume: () => void server.kill('SIGCONT'),
  }
}

/** Resolves once a fresh connection to `url` gets an answer to PING. */
async function answering(url: string, withinMs: number): Promise<void> {
  const deadline = Date.now() + withinMs
  for (;;) {
    const probe = createClient({ url, socket: { reconnectStrategy: false, connectTimeout: 1_000 } })
    probe.on('error', () => {})
    try {
      await probe.connect()
      await probe.ping()
      probe.destroy()
      return
    } catch (error) {
      if (probe.isOpen) probe.destroy()
      if (Date.now() > deadline) throw new Error(`no Redis answered at ${url} within ${withinMs} ms`, { cause: error })
      await new Promise((resolve) => setTimeout(resolve, 50))
    }
  }
}

/** A loopback port nothing listens on (at the time of the call). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer()
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number }
      server.close(() => resolve(port))
    })
  })
}
