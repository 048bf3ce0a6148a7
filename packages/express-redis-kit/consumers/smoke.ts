/*
 * The consumer matrix's smoke app (see run.mjs): every export of the package, used as the README
 * shows, against the real Redis, and a passport-local sign-in and sign-out on the session. Type-checked as it is in the TypeScript projects, run with its
 * types stripped in the JavaScript ones. Ends with one line: "smoke ok ...".
 * Environment: SMOKE_MODE ('single' | 'cluster'), REDIS_URL, CLUSTER_NODES.
 */
import diagnostics from 'node:diagnostics_channel'
import type { AddressInfo } from 'node:net'
import express from 'express'
import {
  CHANNELS,
  cached,
  cacheResponse,
  createNotifier,
  type ErrorCode,
  invalidateTags,
  ipKeyGenerator,
  OptionError,
  type RedisClient,
  RedisKitError,
  rateLimit,
  type SessionMiddleware,
  session,
  typedJson,
} from 'express-redis-kit'
import { enableMetrics, METRIC_NAMES } from 'express-redis-kit/metrics'
import passport from 'passport'
import { Strategy as LocalStrategy } from 'passport-local'
import { createClient, createCluster } from 'redis'

declare module 'express-redis-kit' {
  interface SessionData {
    userId: number
  }
}

function check(condition: unknown, what: string): void {
  if (!condition) throw new Error(`smoke: ${what}`)
}

/** The README's way: a connected client or cluster, passed as it is (no cast). */
async function connect() {
  if (process.env.SMOKE_MODE === 'cluster') {
    const rootNodes = (process.env.CLUSTER_NODES ?? '').split(',').map((node) => ({ url: `redis://${node}` }))
    return createCluster({ rootNodes }).connect()
  }
  return createClient({ url: process.env.REDIS_URL }).connect()
}

/**
 * cached() with `localCache`: node-redis 5.9 and later report CLIENT TRACKING invalidations, so
 * hits come from memory (a `local: true` event); an older client gets one warning saying so and
 * every hit from Redis. The value is right either way.
 */
async function checkLocalCache(client: RedisClient, prefix: string): Promise<void> {
  const [major = 0, minor = 0] = (process.env.SMOKE_REDIS_VERSION ?? '').split('.').map(Number)
  const supported = major > 5 || (major === 5 && minor >= 9)
  const warnings: string[] = []
  const logger = { warn: (message: string) => void warnings.push(message), error: () => {} }
  let localHits = 0
  const onCache = (message: unknown) => {
    if ((message as { local?: boolean }).local) localHits++
  }
  diagnostics.subscribe(CHANNELS.cache, onCache)
  try {
    // A hit is served from memory once the tracking connections are up and answered a PING
    // within fenceMs: seconds on a loaded machine (the matrix runs its cells side by side).
    const deadline = Date.now() + 10_000
    while (Date.now() < deadline && localHits === 0 && warnings.length === 0) {
      const value = await cached(client, 'local', { prefix, ttl: '1m', localCache: true, logger }, () => 'local value')
      check(value === 'local value', `localCache value: ${String(value)}`)
      await new Promise((resolve) => setTimeout(resolve, 20))
    }
  } finally {
    diagnostics.unsubscribe(CHANNELS.cache, onCache)
  }
  if (supported)
    check(localHits > 0, `no local hit with redis ${process.env.SMOKE_REDIS_VERSION}: ${warnings.join('; ')}`)
  else
    check(
      localHits === 0 && warnings.some((w) => w.includes('5.9')),
      `localCache with redis ${process.env.SMOKE_REDIS_VERSION}: no warning`,
    )
}

/**
 * passport-local on the kit's session, in an app of its own (express 4 or 5, as the project
 * installs): sign in through `passport.authenticate('local')` (regenerate and save with
 * callbacks), `req.user` restored by the next request, the session in the user's index
 * (`userKey: 'passport.user'`), and sign out with `req.logout(cb)`.
 */
async function checkPassport(client: RedisClient, prefix: string): Promise<void> {
  const authenticator = new passport.Passport()
  authenticator.use(
    new LocalStrategy((username, password, done) =>
      done(null, username === 'ada' && password === 'secret' ? { id: 7 } : false),
    ),
  )
  authenticator.serializeUser((user, done) => done(null, (user as { id: number }).id))
  authenticator.deserializeUser((id: number, done) => done(null, { id }))
  const sessions = session({ client, secrets: ['smoke secret'], prefix, userKey: 'passport.user' })
  const app = express()
  app.use(express.urlencoded({ extended: false }))
  app.use(sessions)
  app.use(authenticator.initialize())
  app.use(authenticator.session())
  app.post('/login', authenticator.authenticate('local', { failureRedirect: '/login' }), (req, res) => {
    res.json({ user: req.user, sessionID: req.sessionID })
  })
  app.post('/logout', (req, res, next) => req.logout((error) => (error ? next(error) : res.json({ ok: true }))))
  app.get('/me', (req, res) => res.json({ user: req.user ?? null }))
  const server = app.listen(0)
  await new Promise((resolve) => server.once('listening', resolve))
  const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  const within = () => AbortSignal.timeout(10_000) // a sign-in that never answers fails here
  try {
    const login = await fetch(`${base}/login`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: 'username=ada&password=secret',
      signal: within(),
    })
    const signedIn = (await login.json()) as { user?: { id: number }; sessionID?: string }
    check(login.status === 200 && signedIn.user?.id === 7, `passport sign-in answered ${login.status}`)
    const cookie = (login.headers.get('set-cookie') ?? '').split(';')[0] ?? ''
    const me = (await (await fetch(`${base}/me`, { headers: { cookie } })).json()) as { user: { id: number } | null }
    check(me.user?.id === 7, 'passport: req.user not restored')
    const listed = await sessions.listUserSessions(7)
    check(listed.length === 1 && listed[0]?.handle === signedIn.sessionID, 'passport: the user index')
    const logout = await fetch(`${base}/logout`, { method: 'POST', headers: { cookie }, signal: within() })
    check(logout.status === 200, `passport sign-out answered ${logout.status}`)
    const after = (await (await fetch(`${base}/me`, { headers: { cookie } })).json()) as { user: unknown }
    check(after.user === null && (await sessions.listUserSessions(7)).length === 0, 'passport: still signed in')
  } finally {
    server.close()
  }
}

async function main(): Promise<void> {
  // The metrics entry point (with @opentelemetry/api's default, no-op, MeterProvider) and a channel.
  const stopMetrics = enableMetrics()
  check(METRIC_NAMES.cacheRequests === 'cache.requests', 'express-redis-kit/metrics')
  const decisions: unknown[] = []
  const onDecision = (message: unknown) => decisions.push(message)
  diagnostics.subscribe(CHANNELS.rateLimit, onDecision)
  const client = await connect()
  const asKitClient: RedisClient = client
  const prefix = `smoke:${process.pid}:${Date.now()}:`
  const app = express()
  app.use(
    rateLimit({
      client,
      limit: 100,
      windowMs: '1m',
      prefix: `${prefix}rl:`,
      keyGenerator: (req) => ipKeyGenerator(req.ip ?? '127.0.0.1'),
    }),
  )
  const sessions: SessionMiddleware = session({
    client,
    secrets: ['smoke secret'],
    prefix: `${prefix}sess:`,
    userKey: 'userId',
  })
  app.use(sessions)
  app.post('/login', async (req, res) => {
    await req.session.regenerate()
    req.session.userId = 7
    res.json({ handle: req.session.handle })
  })
  let runs = 0
  app.get(
    '/cached',
    cacheResponse({ client, prefix: `${prefix}cache:`, ttl: '1m', tags: ['smoke'] }),
    async (_req, res) => {
      const value = await cached(
        asKitClient,
        'value',
        { prefix: `${prefix}cache:`, ttl: '1m', serializer: typedJson },
        () => ({ at: new Date(0), bytes: new Uint8Array([1, 2]) }),
      )
      runs++
      res.json({ at: value.at.toISOString(), bytes: [...value.bytes], runs })
    },
  )

  const server = app.listen(0)
  await new Promise((resolve) => server.once('listening', resolve))
  const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  const notifier = createNotifier({ client, prefix: `${prefix}events:` })
  try {
    const login = await fetch(`${base}/login`, { method: 'POST' })
    check(login.status === 200, `POST /login answered ${login.status}`)
    check(login.headers.get('ratelimit'), 'rateLimit sent no RateLimit header')
    const cookie = (login.headers.get('set-cookie') ?? '').split(';')[0]
    check(cookie?.startsWith('sid='), 'session set no cookie')
    const listed = await sessions.listUserSessions(7)
    check(
      listed.length === 1 && listed[0]?.handle === ((await login.json()) as { handle: string }).handle,
      'listUserSessions',
    )

    const first = await fetch(`${base}/cached`)
    const second = await fetch(`${base}/cached`)
    check(first.headers.get('x-cache') === 'MISS', `first GET /cached: X-Cache ${first.headers.get('x-cache')}`)
    check(second.headers.get('x-cache') === 'HIT', `second GET /cached: X-Cache ${second.headers.get('x-cache')}`)
    const body = (await second.json()) as { at: string; bytes: number[]; runs: number }
    check(body.at === '1970-01-01T00:00:00.000Z' && body.bytes.join() === '1,2' && body.runs === 1, 'cached body')
    check((await invalidateTags(client, ['smoke'], { prefix: `${prefix}cache:` })) >= 1, 'invalidateTags')
    await checkLocalCache(asKitClient, `${prefix}local:`)
    await checkPassport(asKitClient, `${prefix}passport:`)

    let deliver: (payload: unknown) => void = () => {}
    const received = new Promise<unknown>((resolve) => {
      deliver = resolve
    })
    await notifier.subscribe('smoke', (payload) => deliver(payload))
    await notifier.publish('smoke', { n: 1 })
    const payload = (await Promise.race([received, new Promise((resolve) => setTimeout(resolve, 5_000))])) as
      | { n: number }
      | undefined
    check(payload?.n === 1, 'notifier message not received')

    let optionError: unknown
    try {
      rateLimit({ client, limt: 1 } as unknown as Parameters<typeof rateLimit>[0])
    } catch (error) {
      optionError = error
    }
    check(optionError instanceof OptionError && optionError.code === 'ERK_INVALID_OPTION', 'OptionError')
    const code: ErrorCode = new RedisKitError('ERK_CLOSED', 'closed').code
    check(code === 'ERK_CLOSED', 'RedisKitError')
    check(decisions.length > 0, 'no rate-limit decision on the diagnostics channel')
  } finally {
    diagnostics.unsubscribe(CHANNELS.rateLimit, onDecision)
    stopMetrics()
    await notifier.close()
    server.close()
    client.destroy()
  }
  console.log(`smoke ok (${process.env.SMOKE_MODE})`)
}

main().catch((error: unknown) => {
  console.error(error)
  process.exit(1)
})
