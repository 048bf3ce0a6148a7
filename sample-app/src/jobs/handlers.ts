import { invalidateTags, type SessionMiddleware } from 'express-redis-kit'
import type { z } from 'zod'
import { userTag } from '../credentials.js'
import type { Redis } from '../redis.js'
import type { JOBS, JobName } from './definitions.js'
import type { Mailer } from './mail.js'

/** What a job's handler gets: its validated data and its id. */
export type JobHandler<N extends JobName> = (data: z.output<(typeof JOBS)[N]>, jobId: string) => Promise<unknown>
export type JobHandlers = { [N in JobName]: JobHandler<N> }

export interface HandlerDependencies {
  mailer: Mailer
  /** The app's session middleware, or one made with the same `prefix` and `userKey` (only its per-user index is used). */
  sessions: Pick<SessionMiddleware, 'destroyUserSessions'>
  /** The app's Redis (sessions and response cache live there). */
  redis: Redis
  /** The response cache's prefix (as app.ts gives it). */
  cachePrefix: string
}

/**
 * The handlers of the jobs. Each either completes or throws (the job is retried with backoff): a
 * mail is sent at least once, and exactly once unless the worker dies between the mail server's
 * acceptance and the job's completion (it then runs again after the stalled check).
 */
export function jobHandlers({ mailer, sessions, redis, cachePrefix }: HandlerDependencies): JobHandlers {
  return {
    async 'welcome-email'({ email, name }, jobId) {
      await mailer.send({
        to: email,
        subject: 'Welcome to the sample app',
        text: `Hello ${name},\n\nyour account is ready. Sign in with ${email}.\n`,
        jobId,
      })
    },
    async 'email-change-notice'({ to, oldEmail, newEmail }, jobId) {
      const text =
        to === oldEmail
          ? `The email address of your account was changed from ${oldEmail} to ${newEmail}.\n` +
            'If you did not make this change, contact us at once.\n'
          : `This is now the email address of your account (it was ${oldEmail}).\n`
      await mailer.send({ to, subject: 'Your email address was changed', text, jobId })
    },
    async 'account-cleanup'({ userId }) {
      // The deletion ended the sessions and dropped the cached copies already, unless Redis failed
      // there: this makes sure of it (both are idempotent), retried until Redis answers.
      await sessions.destroyUserSessions(userId)
      await invalidateTags(redis, ['users', userTag(userId)], { prefix: cachePrefix })
    },
  }
}
