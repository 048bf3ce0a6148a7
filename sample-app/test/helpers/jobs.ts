import { randomBytes } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import type { JobQueue } from '../../src/jobs/index.js'

/** A mail log file of its own (not created yet). */
export function uniqueMailLog(): string {
  return path.join(tmpdir(), `express-redis-kit-test-mail-${process.pid}-${randomBytes(4).toString('hex')}.log`)
}

/** One line of the mail log. */
export interface LoggedMail {
  time: string
  jobId: string
  from: string
  to: string
  subject: string
  text: string
  messageId: string
}

/** The mails in a mail log (none when it does not exist yet). */
export async function readMailLog(file: string): Promise<LoggedMail[]> {
  const text = await readFile(file, 'utf8').catch((error: NodeJS.ErrnoException) => {
    if (error.code === 'ENOENT') return ''
    throw error
  })
  return text
    .split('\n')
    .filter((line) => line.length > 0)
    .map((line) => JSON.parse(line) as LoggedMail)
}

/** Polls `condition` until it holds; throws naming `what` after `withinMs`. */
export async function eventually(
  condition: () => Promise<boolean> | boolean,
  withinMs = 15_000,
  what = 'the condition',
) {
  const deadline = Date.now() + withinMs
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${withinMs} ms waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
}

/** The state of job `id` ('completed', 'failed', 'waiting', ...; 'missing' when there is no such job). */
export async function jobState(jobs: JobQueue, id: string): Promise<string> {
  const job = await jobs.queue().getJob(id)
  return job ? await job.getState() : 'missing'
}

/** Waits until job `id` has completed; resolves to how many attempts it took. */
export async function completed(jobs: JobQueue, id: string, withinMs = 20_000): Promise<number> {
  await eventually(async () => (await jobState(jobs, id)) === 'completed', withinMs, `job ${id} to complete`)
  const job = await jobs.queue().getJob(id)
  return job!.attemptsMade
}
