import { createServer, type Socket } from 'node:net'

/** A mail the sink accepted. */
export interface SunkMail {
  to: string[]
  /** The X-Job-Id header (which job sent it). */
  jobId: string | undefined
  data: string
}

/** What the sink does with the nth connection (1-based); anything else: a working SMTP server. */
export type ConnectionPlan = 'refuse' | 'hang' | 'slow'

/** How long a `slow` connection waits before it answers. */
export const SLOW_MS = 2_000

export interface SmtpSink {
  url: string
  /** Connections made so far (refused and hung ones included). */
  connections(): number
  mails: SunkMail[]
  close(): Promise<void>
}

/**
 * A minimal SMTP server on loopback for tests (never a real mail server): it accepts mail and keeps
 * it in `mails`, except for the connections `plan` names: `refuse` closes the connection at once
 * (a mail server that is down, as the client sees it), `hang` accepts it and never answers (a mail
 * server stuck mid-delivery), `slow` answers only after {@link SLOW_MS} and then works.
 */
export async function startSmtpSink(plan: Record<number, ConnectionPlan> = {}): Promise<SmtpSink> {
  const mails: SunkMail[] = []
  const sockets = new Set<Socket>()
  let connections = 0
  const server = createServer((socket) => {
    connections += 1
    sockets.add(socket)
    socket.on('close', () => sockets.delete(socket))
    socket.on('error', () => {})
    const what = plan[connections]
    if (what === 'refuse') return void socket.destroy()
    if (what === 'hang') return
    if (what === 'slow') return void setTimeout(() => converse(socket, (mail) => mails.push(mail)), SLOW_MS)
    converse(socket, (mail) => mails.push(mail))
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as { port: number }
  return {
    url: `smtp://127.0.0.1:${port}`,
    connections: () => connections,
    mails,
    async close() {
      for (const socket of sockets) socket.destroy()
      await new Promise((resolve) => server.close(resolve))
    },
  }
}

/** Speaks the server side of SMTP (RFC 5321) just enough for nodemailer. */
function converse(socket: Socket, received: (mail: SunkMail) => void): void {
  let buffer = ''
  let inData = false
  let to: string[] = []
  let data = ''
  const reply = (line: string) => socket.write(`${line}\r\n`)
  reply('220 sink ESMTP')
  socket.setEncoding('utf8').on('data', (chunk: string) => {
    buffer += chunk
    for (let end = buffer.indexOf('\r\n'); end >= 0; end = buffer.indexOf('\r\n')) {
      const line = buffer.slice(0, end)
      buffer = buffer.slice(end + 2)
      if (inData) {
        if (line !== '.') {
          data += `${line.startsWith('..') ? line.slice(1) : line}\r\n`
          continue
        }
        inData = false
        const jobId = /^X-Job-Id: *(.*)$/im.exec(data)?.[1]?.trim()
        received({ to, jobId, data })
        to = []
        data = ''
        reply('250 OK queued')
        continue
      }
      const verb = line.slice(0, 4).toUpperCase()
      if (verb === 'EHLO' || verb === 'HELO') reply('250 sink')
      else if (verb === 'MAIL') reply('250 OK')
      else if (verb === 'RCPT') {
        to.push(/<([^>]*)>/.exec(line)?.[1] ?? '')
        reply('250 OK')
      } else if (verb === 'DATA') {
        inData = true
        reply('354 end with .')
      } else if (verb === 'QUIT') {
        reply('221 bye')
        socket.end()
      } else reply('250 OK')
    }
  })
}
