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

/**
 * A redis-server of this benchmark's own (no persistence), stopped on exit. `under` runs it
 * under another program that execs it in the same process (e.g. valgrind), whose pid is then
 * the server's; such a server may take `startTimeoutMs` to answer.
 */
export async function privateRedis(
  options: { under?: string[]; startTimeoutMs?: number } = {},
): Promise<{ url: string; pid: number; stop(): void }> {
  const port = await freePort()
  const args = ['redis-server', '--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no']
  const command = [...(options.under ?? []), ...args]
  const server = spawn(command[0]!, command.slice(1), { stdio: 'ignore' })
  let failed: Error | undefined
  server.once('error', (error) => {
    failed = error
  })
  process.on('exit', () => server.kill('SIGKILL'))
  const url = `redis://127.0.0.1:${port}`
  const deadline = options.startTimeoutMs ?? 10_000
  try {
    await untilAnswering(url, deadline, () => failed ?? (server.exitCode !== null ? new Error('it exited') : undefined))
  } catch (error) {
    throw new Error(`the private redis-server on port ${port} did not start: ${(error as Error).message}`)
  }
  return { url, pid: server.pid!, stop: () => server.kill('SIGTERM') }
}

/** Waits until the redis-server at `url` accepts a connection, for at most about `withinMs`. */
export async function untilAnswering(url: string, withinMs: number, gone?: () => Error | undefined): Promise<void> {
  const deadline = Date.now() + withinMs
  for (;;) {
    const probe = createClient({ url, socket: { reconnectStrategy: false } })
    probe.on('error', () => {})
    try {
      await probe.connect()
      await probe.close()
      return
    } catch (error) {
      const reason = gone?.()
      if (reason || Date.now() > deadline)
        throw new Error(`the redis-server at ${url} did not start: ${reason ?? error}`)
      await sleep(100)
    }
  }
}
