import { appendFile, mkdir } from 'node:fs/promises'
import path from 'node:path'
import nodemailer from 'nodemailer'
import type { JobsConfig } from '../config.js'

const FROM = 'Sample App <no-reply@example.com>'

/** One mail a job sends. */
export interface Mail {
  to: string
  subject: string
  text: string
  /** The job that sends it: an `X-Job-Id` header (and a field of the mail log), to trace a mail to its job. */
  jobId: string
}

export interface Mailer {
  /** Sends a mail; rejects when it was not sent (the job then fails and is retried). */
  send(mail: Mail): Promise<void>
  /** Where mail goes, for messages: "SMTP at ..." or "the mail log ...". */
  readonly destination: string
  close(): void
}

/**
 * Mail through nodemailer: over SMTP when `smtpUrl` is set (e.g. Mailpit at smtp://localhost:1025),
 * otherwise appended to `mailLog` as one JSON line per mail (`{ time, jobId, from, to, subject,
 * text, messageId }`), so the app needs no mail server. An SMTP server that does not answer fails
 * the send within seconds rather than holding the job.
 */
export function createMailer(config: Pick<JobsConfig, 'smtpUrl' | 'mailLog'>): Mailer {
  const { smtpUrl, mailLog } = config
  if (smtpUrl !== undefined) {
    const transport = nodemailer.createTransport({
      url: smtpUrl,
      connectionTimeout: 5_000,
      greetingTimeout: 5_000,
      socketTimeout: 20_000,
    })
    return {
      destination: `SMTP at ${new URL(smtpUrl).host}`,
      async send(mail) {
        await transport.sendMail({
          from: FROM,
          to: mail.to,
          subject: mail.subject,
          text: mail.text,
          headers: header(mail),
        })
      },
      close: () => transport.close(),
    }
  }
  const transport = nodemailer.createTransport({ jsonTransport: true })
  let directory: Promise<unknown> | undefined
  return {
    destination: `the mail log ${mailLog}`,
    async send(mail) {
      const info = await transport.sendMail({
        from: FROM,
        to: mail.to,
        subject: mail.subject,
        text: mail.text,
        headers: header(mail),
      })
      const line = {
        time: new Date().toISOString(),
        jobId: mail.jobId,
        from: FROM,
        to: mail.to,
        subject: mail.subject,
        text: mail.text,
        messageId: info.messageId,
      }
      directory ??= mkdir(path.dirname(mailLog), { recursive: true })
      await directory
      // one write of one line in append mode: lines of several worker processes do not interleave
      await appendFile(mailLog, `${JSON.stringify(line)}\n`)
    },
    close: () => transport.close(),
  }
}

const header = (mail: Mail) => ({ 'X-Job-Id': mail.jobId })
