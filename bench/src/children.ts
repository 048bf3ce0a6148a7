import { type ChildProcess, fork } from 'node:child_process'
import { mkdirSync } from 'node:fs'
import { join } from 'node:path'
import type { CpuMessage, ReadyMessage } from './serve.js'

/** The rate-limit benchmark's server; the session benchmark passes its own as `module`. */
const SERVER = new URL('./server.ts', import.meta.url)
const running = new Set<ChildProcess>()

export interface Server {
  scenario: string
  url: string
  redisAddr: string | undefined
  /** The server process's CPU time so far (user + system, microseconds). */
  cpuTime(): Promise<number>
  stop(): Promise<void>
}

export interface ServerOptions {
  prefix: string
  limit?: number
  /** The server program (default src/server.ts); it reports over IPC through src/serve.ts. */
  module?: URL
  /** Directory for a V8 CPU profile of the server (`--cpu-prof`). */
  profileDir?: string
}

/**
 * Starts a scenario's server in its own process (the parent's tsx loader is inherited), with
 * BENCH_SCENARIO, BENCH_PREFIX and BENCH_LIMIT (if given) in its environment.
 */
export function startServer(scenario: string, options: ServerOptions): Promise<Server> {
  const execArgv = [...process.execArgv]
  if (options.profileDir) {
    // One directory per server: Node writes a profile per thread (tsx's loader has its own).
    const dir = join(options.profileDir, `${scenario}-${Date.now()}`)
    mkdirSync(dir, { recursive: true })
    execArgv.push('--cpu-prof', `--cpu-prof-dir=${dir}`)
  }
  const env: NodeJS.ProcessEnv = { ...process.env, BENCH_SCENARIO: scenario, BENCH_PREFIX: options.prefix }
  if (options.limit !== undefined) env.BENCH_LIMIT = String(options.limit)
  const child = fork(options.module ?? SERVER, [], { env, execArgv, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
  running.add(child)
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))
  void exited.then(() => running.delete(child))

  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL')
      reject(new Error(`${scenario} server did not start within 20 s`))
    }, 20_000)
    child.once('exit', (code, signal) => {
      clearTimeout(timer)
      reject(new Error(`${scenario} server exited before it was ready (code ${code}, signal ${signal})`))
    })
    child.on('message', (message: ReadyMessage | CpuMessage) => {
      if (message?.type !== 'ready') return
      clearTimeout(timer)
      resolve({
        scenario,
        url: `http://127.0.0.1:${message.port}/`,
        redisAddr: message.redisAddr,
        cpuTime() {
          return new Promise<number>((resolveCpu, rejectCpu) => {
            const onMessage = (reply: CpuMessage) => {
              if (reply?.type !== 'cpu') return
              child.off('message', onMessage)
              resolveCpu(reply.usage.user + reply.usage.system)
            }
            child.on('message', onMessage)
            child.send('cpu', (error) => {
              if (error) rejectCpu(error)
            })
          })
        },
        async stop() {
          if (child.exitCode === null && child.signalCode === null) {
            child.send('stop')
            const killer = setTimeout(() => child.kill('SIGKILL'), 5000)
            await exited
            clearTimeout(killer)
          }
        },
      })
    })
  })
}

/** Kills every server still running (on exit, on a signal or after an error). */
export function killAll(): void {
  for (const child of running) child.kill('SIGKILL')
}
