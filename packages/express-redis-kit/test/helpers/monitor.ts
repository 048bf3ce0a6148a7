import { createClient } from 'redis'

/** One command a Redis ran, as MONITOR reports it. */
export interface MonitoredCommand {
  /** When the server ran it: ms since the epoch, on the server's clock. */
  at: number
  /** The command's name and arguments. */
  args: string[]
}

/**
 * Records every command the servers at `addresses` run (MONITOR, on a connection of its own to
 * each) until `stop()`. For a disposable Redis only: MONITOR sees every client's commands and
 * slows the server down.
 */
export async function monitorCommands(addresses: { host: string; port: number }[]) {
  const commands: MonitoredCommand[] = []
  const clients = await Promise.all(
    addresses.map(async (socket) => {
      const client = createClient({ socket })
      client.on('error', () => {})
      await client.connect()
      await client.monitor((line) => {
        const command = parseMonitorLine(String(line))
        if (command) commands.push(command)
      })
      return client
    }),
  )
  return {
    commands,
    stop(): void {
      for (const client of clients) client.destroy()
    },
  }
}

/** `1700000000.123456 [0 127.0.0.1:50000] "XREAD" "COUNT" "10" ...`: the time and the arguments (escapes left as sent). */
function parseMonitorLine(line: string): MonitoredCommand | undefined {
  const match = /^(\d+\.\d+) \[[^\]]*\] (.*)$/.exec(line)
  if (!match) return undefined
  const args = [...(match[2] as string).matchAll(/"((?:[^"\\]|\\.)*)"/g)].map((part) => part[1] as string)
  return { at: Number(match[1]) * 1000, args }
}
