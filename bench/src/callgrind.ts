/**
 * Requests answered in this process, built in memory (no HTTP parsing, no socket I/O), shared by
 * the instruction benchmark (src/session-instructions.ts, which counts them under valgrind's
 * callgrind with callgrindInstructions) and the side-by-side CPU comparisons (src/in-process.ts).
 */
import { execFile } from 'node:child_process'
import { IncomingMessage, ServerResponse } from 'node:http'
import type { Socket } from 'node:net'
import { Duplex } from 'node:stream'
import { promisify } from 'node:util'

const run = promisify(execFile)

/** Instructions executed by one run of the TypeScript module `child` with `env` added. */
export async function callgrindInstructions(child: string, env: Record<string, string>): Promise<number> {
  const { stderr } = await run(
    'valgrind',
    ['--tool=callgrind', '--callgrind-out-file=/dev/null', process.execPath, '--import', 'tsx', child],
    { env: { ...process.env, ...env }, maxBuffer: 64 * 1024 * 1024 },
  )
  const collected = /Collected : (\d+)/.exec(stderr)
  if (!collected) throw new Error(`callgrind reported no count for ${JSON.stringify(env)}:\n${stderr.slice(-2000)}`)
  return Number(collected[1])
}

/** What a child needs of an Express app: its request handler. */
export interface Handler {
  handle(req: IncomingMessage, res: ServerResponse, done: () => void): void
}

/**
 * One request through `app` in this process: built in memory, answered into a socket that
 * writes nowhere, so that what is counted is the app's work (no HTTP parsing, no socket I/O).
 */
export function sendInMemory(
  app: Handler,
  method: string,
  path: string,
  headers: Record<string, string> = {},
): Promise<ServerResponse> {
  return new Promise((resolve) => {
    const socket = new Duplex({
      read() {},
      write(_chunk, _encoding, done) {
        done()
      },
    }) as unknown as Socket
    const req = new IncomingMessage(socket)
    req.method = method
    req.url = path
    req.headers = { host: 'bench', ...headers }
    req.push(null)
    const res = new ServerResponse(req)
    res.assignSocket(socket)
    res.once('finish', () => resolve(res))
    app.handle(req, res, () => resolve(res))
  })
}

/** Calls `send` `count` times, `inFlight` at a time. */
export async function sendMany(count: number, inFlight: number, send: () => Promise<void>): Promise<void> {
  let sent = 0
  await Promise.all(
    Array.from({ length: inFlight }, async () => {
      while (sent < count) {
        sent++
        await send()
      }
    }),
  )
}
