import { type ChildProcess, spawn } from 'node:child_process'
import path from 'node:path'

export const appDir = path.resolve(import.meta.dirname, '..', '..')

/** A server process of the sample app (`node --import tsx src/server.ts`). */
export interface ServerProcess {
  child: ChildProcess
  /** e.g. http://127.0.0.1:41234, from its "sample app listening on ..." line. */
  url: string
  stdout(): string
  stderr(): string
  /** SIGTERM, then SIGKILL if it has not exited within `graceMs`; resolves with how it ended. */
  stop(graceMs?: number): Promise<Exit>
}

export interface Exit {
  code: number | null
  signal: NodeJS.Signals | null
  /** It did not exit on SIGTERM within the grace period and was killed. */
  killed: boolean
}

function spawnServer(
  env: Record<string, string>,
  script = 'src/server.ts',
): { child: ChildProcess; out: () => string; err: () => string } {
  const child = spawn(process.execPath, ['--import', 'tsx', script], {
    cwd: appDir,
    env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  let out = ''
  let err = ''
  child.stdout!.setEncoding('utf8').on('data', (chunk: string) => {
    out += chunk
  })
  child.stderr!.setEncoding('utf8').on('data', (chunk: string) => {
    err += chunk
  })
  return { child, out: () => out, err: () => err }
}

const exited = (child: ChildProcess) => child.exitCode !== null || child.signalCode !== null

function waitForExit(child: ChildProcess, withinMs: number): Promise<boolean> {
  if (exited(child)) return Promise.resolve(true)
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      child.off('exit', onExit)
      resolve(false)
    }, withinMs)
    const onExit = () => {
      clearTimeout(timer)
      resolve(true)
    }
    child.once('exit', onExit)
  })
}

/** Starts a server and resolves once it prints the address it listens on. */
export function startServer(env: Record<string, string>, withinMs = 30_000): Promise<ServerProcess> {
  return startProcess('src/server.ts', /sample app listening on (http:\/\/\S+)/, env, withinMs)
}

/** A job worker process (`node --import tsx src/worker.ts`). */
export type WorkerProcess = Omit<ServerProcess, 'url'>

/** Starts a job worker process and resolves once it prints that it is ready. */
export function startWorker(env: Record<string, string>, withinMs = 30_000): Promise<WorkerProcess> {
  return startProcess('src/worker.ts', /job worker ready()/, env, withinMs)
}

/** An outbox relay process (`node --import tsx src/outbox-relay.ts`). */
export function startRelay(env: Record<string, string>, withinMs = 30_000): Promise<WorkerProcess> {
  return startProcess('src/outbox-relay.ts', /outbox relay running()/, env, withinMs)
}

/** Starts `script` and resolves once its output matches `readyLine` (its first group is the url). */
async function startProcess(
  script: string,
  readyLine: RegExp,
  env: Record<string, string>,
  withinMs: number,
): Promise<ServerProcess> {
  const { child, out, err } = spawnServer(env, script)
  const stop = async (graceMs = 10_000): Promise<Exit> => {
    let killed = false
    if (!exited(child)) {
      child.kill('SIGTERM')
      if (!(await waitForExit(child, graceMs))) {
        killed = true
        child.kill('SIGKILL')
        await waitForExit(child, 10_000)
      }
    }
    return { code: child.exitCode, signal: child.signalCode, killed }
  }
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => fail(new Error(`no ${readyLine} line within ${withinMs} ms`)), withinMs)
    const onData = () => {
      const match = readyLine.exec(out())
      if (!match) return
      cleanup()
      resolve(match[1] ?? '')
    }
    const onExit = (code: number | null) => fail(new Error(`${script} exited (${code}) before it was ready`))
    const fail = (error: Error) => {
      cleanup()
      void stop(1_000).then(() => reject(new Error(`${error.message}\nstdout:\n${out()}\nstderr:\n${err()}`)))
    }
    const cleanup = () => {
      clearTimeout(timer)
      child.stdout!.off('data', onData)
      child.off('exit', onExit)
    }
    child.stdout!.on('data', onData)
    child.once('exit', onExit)
  })
  return { child, url, stdout: out, stderr: err, stop }
}

/** Runs a server that is expected to exit by itself; kills it after `withinMs`. */
export async function runUntilExit(
  env: Record<string, string>,
  withinMs = 20_000,
): Promise<{ code: number | null; stdout: string; stderr: string; timedOut: boolean }> {
  const { child, out, err } = spawnServer(env)
  const ended = await waitForExit(child, withinMs)
  if (!ended) {
    child.kill('SIGKILL')
    await waitForExit(child, 10_000)
  }
  return { code: child.exitCode, stdout: out(), stderr: err(), timedOut: !ended }
}
