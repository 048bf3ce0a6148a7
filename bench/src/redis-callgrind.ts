/**
 * A private redis-server under valgrind's callgrind, counting only the instructions it executes
 * for its clients' commands: reading and parsing them, running them (a script with every command
 * it calls) and writing the replies (`--toggle-collect` on readQueryFromClient and
 * handleClientsWithPendingWritesUsingThreads, which the event loop calls one after the other,
 * never nested). serverCron, active expiry and the idle event loop are left out, so the count of
 * a batch of commands does not depend on how long the batch took: on this shared, loaded
 * machine, 2,000 GETs counted 4,211 to 4,223 instructions each in three runs, where the same
 * server's `usec` per call moves by tens of percent. Redis runs slower under callgrind: nothing
 * is timed against it.
 */
import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import { privateRedis } from './private-redis.js'

const run = promisify(execFile)

/** Whether valgrind and callgrind_control are installed. */
export async function callgrindAvailable(): Promise<boolean> {
  try {
    await run('valgrind', ['--version'])
    await run('callgrind_control', ['--version'])
    return true
  } catch {
    return false
  }
}

export interface CountedRedis {
  url: string
  /** Instructions counted so far (every thread). */
  instructions(): Promise<number>
  stop(): void
}

/** Starts the server (a few seconds under valgrind). */
export async function countedRedis(): Promise<CountedRedis> {
  const server = await privateRedis({
    under: [
      'valgrind',
      '--tool=callgrind',
      '--toggle-collect=readQueryFromClient',
      '--toggle-collect=handleClientsWithPendingWritesUsingThreads',
      '--callgrind-out-file=/dev/null',
    ],
    startTimeoutMs: 60_000,
  })
  return {
    url: server.url,
    async instructions() {
      // "  Totals:    Ir \n   Th 1  14,273 \n   Th 2       0 ..."
      const { stdout } = await run('callgrind_control', ['-e', String(server.pid)])
      const threads = [...stdout.matchAll(/^\s*Th \d+\s+([\d,]+)/gm)]
      if (threads.length === 0) throw new Error(`callgrind_control reported no counts:\n${stdout}`)
      return threads.reduce((sum, [, count]) => sum + Number(count!.replaceAll(',', '')), 0)
    },
    stop: server.stop,
  }
}
