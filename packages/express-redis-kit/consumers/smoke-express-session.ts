/*
 * The consumer matrix's express-session smoke (see run.mjs): express-session with the
 * package's store, `express-redis-kit/express-session`, imported as a project of this kind
 * imports it (ESM, CommonJS), against the real Redis: a session stored and read back over
 * HTTP, listed by user, revoked. A program of its own in TypeScript projects: it loads
 * express-session's types, which declare `req.session` otherwise than the kit's `session()`.
 * Ends with one line: "express-session smoke ok ...".
 * Environment: SMOKE_MODE ('single' | 'cluster'), REDIS_URL, CLUSTER_NODES.
 */
import type { AddressInfo } from 'node:net'
import express from 'express'
import { RedisStore } from 'express-redis-kit/express-session'
import session from 'express-session'
import { createClient, createCluster } from 'redis'

function check(condition: unknown, what: string): void {
  if (!condition) throw new Error(`express-session smoke: ${what}`)
}

async function connect() {
  if (process.env.SMOKE_MODE === 'cluster') {
    const rootNodes = (process.env.CLUSTER_NODES ?? '').split(',').map((node) => ({ url: `redis://${node}` }))
    return createCluster({ rootNodes }).connect()
  }
  return createClient({ url: process.env.REDIS_URL }).connect()
}

async function main(): Promise<void> {
  const client = await connect()
  const store = new RedisStore({ client, prefix: `smoke-es:${process.pid}:${Date.now()}:`, userKey: 'user' })
  const app = express()
  app.use(session({ store, secret: 'smoke secret', resave: false, saveUninitialized: false }))
  app.post('/sign-in', (req, res) => {
    ;(req.session as unknown as Record<string, unknown>).user = 7
    res.json({ sessionID: req.sessionID })
  })
  app.get('/me', (req, res) => res.json({ user: (req.session as unknown as Record<string, unknown>).user ?? null }))
  const server = app.listen(0)
  await new Promise((resolve) => server.once('listening', resolve))
  const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  try {
    const signIn = await fetch(`${base}/sign-in`, { method: 'POST' })
    const { sessionID } = (await signIn.json()) as { sessionID: string }
    const cookie = (signIn.headers.get('set-cookie') ?? '').split(';')[0] ?? ''
    check(cookie.startsWith('connect.sid='), 'no session cookie')
    const me = (await (await fetch(`${base}/me`, { headers: { cookie } })).json()) as { user: unknown }
    check(me.user === 7, 'the session was not read back')
    const listed = await store.listUserSessions(7)
    check(listed.length === 1 && listed[0]?.handle === store.handleOf(sessionID), 'listUserSessions')
    check((await store.destroyUserSessions(7)) === 1, 'destroyUserSessions')
    const after = (await (await fetch(`${base}/me`, { headers: { cookie } })).json()) as { user: unknown }
    check(after.user === null, 'a revoked session still answers')
  } finally {
    server.close()
    client.destroy()
  }
  console.log(`express-session smoke ok (${process.env.SMOKE_MODE})`)
}

main().catch((error: unknown) => {
  console.error(error)
  process.exit(1)
})
