/** A redis-server of a benchmark's own, on a free loopback port: nobody else's traffic in its figures. */
import { spawn } from 'node:child_process'
import { createServer } from 'node:net'
import { setTimeout as sleep } from 'node:timers/promises'
import { createClient } from 'redis'

/** A free loopback port (the OS's pick, released just before use). */
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

/** A redis-server of this benchmark's own (no persistence), stopped on exit. */
export async function privateRedis(): Promise<{ url: string; stop(): void }> {
  const port = await freePort()
  const server = spawn(
    'redis-server',
    ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'],
    {
      stdio: 'ignore',
    },
  )
  process.on('exit', () => server.kill('SIGKILL'))
  const url = `redis://127.0.0.1:${port}`
  await untilAnswering(url, 5_000)
  return { url, stop: () => server.kill('SIGTERM') }
}

/** Waits until the redis-server at `url` accepts a connection, for at most about `withinMs`. */
export async function untilAnswering(url: string, withinMs: number): Promise<void> {
  for (let attempt = 0; ; attempt++) {
    const probe = createClient({ url, socket: { reconnectStrategy: false } })
    probe.on('error', () => {})
    try {
      await probe.connect()
      await probe.close()
      return
    } catch (error) {
      if (attempt * 100 >= withinMs) throw new Error(`the redis-server at ${url} did not start: ${error}`)
      await sleep(100)
    }
  }
}
