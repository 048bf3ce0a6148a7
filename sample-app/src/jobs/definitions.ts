import { z } from 'zod'
import { email, name } from '../http.js'

const userId = z.number().int().positive()

/**
 * The jobs and the data each one takes, validated when it is enqueued and again when it runs (a
 * job written by an older version, or by hand, that does not fit fails with the reason and is
 * kept in the failed set).
 */
export const JOBS = {
  /** A welcome mail to a new user. */
  'welcome-email': z.object({ userId, email, name }).strict(),
  /**
   * A notice that the account's email changed, to one address: `to` is `oldEmail` (a warning, in
   * case the owner did not make the change) or `newEmail` (a confirmation). One job per address,
   * so a retry never sends one of them twice.
   */
  'email-change-notice': z
    .object({ userId, to: email, oldEmail: email, newEmail: email })
    .strict()
    .refine((data) => data.to === data.oldEmail || data.to === data.newEmail, {
      message: 'to must be oldEmail or newEmail',
      path: ['to'],
    }),
  /** After an account's deletion: ends its sessions and drops its cached copies, whatever failed at deletion. */
  'account-cleanup': z.object({ userId }).strict(),
} as const

export type JobName = keyof typeof JOBS
export const JOB_NAMES = Object.keys(JOBS) as JobName[]
/** The data of the job `N` (what `enqueue` takes). */
export type JobData<N extends JobName> = z.input<(typeof JOBS)[N]>

/**
 * A job id: 1-200 characters of A-Z a-z 0-9 . _ - and not an integer (BullMQ refuses integer ids
 * and ids with one `:`, which it keeps for repeatable jobs).
 */
export const JobId = z
  .string()
  .regex(/^[A-Za-z0-9._-]{1,200}$/, 'a job id is 1-200 characters of A-Z a-z 0-9 . _ -')
  .refine((id) => !/^\d+$/.test(id), 'a job id must not be an integer')

/**
 * The job id of the job written as outbox row `rowId`: unique per real event (a new sign-up after a
 * deletion is a new row, so a new id), the same on every relay of that row (a repeat is a no-op).
 */
export function outboxJobId(name: JobName, rowId: number | bigint | string): string {
  return `${name}.outbox-${rowId}`
}

/** Thrown by `enqueue` for an unknown job, data that does not fit, or a malformed job id; names the problem. */
export class JobInputError extends TypeError {
  override name = 'JobInputError'
}

/** Validates a job's name and data; returns the parsed data or throws a {@link JobInputError}. */
export function parseJob(name: string, data: unknown): unknown {
  if (!Object.hasOwn(JOBS, name)) {
    throw new JobInputError(`unknown job "${name}" (known: ${JOB_NAMES.join(', ')})`)
  }
  const parsed = JOBS[name as JobName].safeParse(data)
  if (!parsed.success) {
    const problems = parsed.error.issues.map((issue) => `${issue.path.join('.') || 'data'}: ${issue.message}`)
    throw new JobInputError(`invalid data for job "${name}": ${problems.join('; ')}`)
  }
  return parsed.data
}
