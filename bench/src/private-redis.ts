/** A redis-server of a benchmark's own, on a free loopback port: nobody else's traffic in its figures. */
import { spawn } from 'node:child_process'
import { createServer } from 'node:net'
import { setTimeout as sleep } from 'node:timers/promises'
import { createClient } from 'redis'

/** A free loopback port (the OS's pick, released just before use). */
function freePort(): Promise<number> {
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
  const deadline = Date.now() + (options.startTimeoutMs ?? 10_000)
  for (;;) {
    const probe = createClient({ url, socket: { reconnectStrategy: false } })
    probe.on('error', () => {})
    try {
      await probe.connect()
      await probe.close()
      break
    } catch (error) {
      if (failed || server.exitCode !== null || Date.now() > deadline)
        throw new Error(`the private redis-server on port ${port} did not start: ${failed ?? error}`)
      await sleep(100)
    }
  }
  return { url, pid: server.pid!, stop: () => server.kill('SIGTERM') }
}
