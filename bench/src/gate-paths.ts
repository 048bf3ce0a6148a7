/**
 * The hot paths the regression gate (src/gate.ts) compares between two builds of the package,
 * each built on a build's exports with options both the release and this tree accept (the
 * defaults, apart from what a benchmark needs: a prefix, a constant client key, a limit),
 * prepared (signed in, cache filled) and checked on every call: a call that does not take
 * the path it stands for (a miss, a 401, a 200 where a 429 is due) throws. Every middleware
 * waits up to TIMEOUT_MS for Redis rather than its default 500 ms, so that the machine's load
 * does not turn a call into a timeout (a rate limit would then let it through without Redis):
 * the timer is set either way, only its length differs.
 */
import express from 'express'
import type * as kit from 'express-redis-kit'
import type { createClient } from 'redis'
import { type Handler, sendInMemory } from './callgrind.js'

/** What the gate uses of a build of the package (the release's dist is imported by path and typed as this). */
export type Kit = Pick<typeof kit, 'rateLimit' | 'session' | 'cacheResponse' | 'cached' | 'createNotifier'>

export const PATHS = [
  'rate-limit-allowed',
  'rate-limit-blocked',
  'session-read',
  'session-write',
  'cache-hit',
  'cached-hit',
  'publish',
] as const
export type PathName = (typeof PATHS)[number]

export const PATH_LABELS: Record<PathName, string> = {
  'rate-limit-allowed': 'rateLimit, allowed',
  'rate-limit-blocked': 'rateLimit, blocked',
  'session-read': 'session read',
  'session-write': 'session write',
  'cache-hit': 'cacheResponse hit',
  'cached-hit': 'cached() hit',
  publish: 'notifier publish',
}

/** What each path does, for the report. */
export const PATH_NOTES: Record<PathName, string> = {
  'rate-limit-allowed': "`GET /` behind `rateLimit` (default sliding window, limit 10^9 in '1h', one client key)",
  'rate-limit-blocked':
    '`GET /` by a client over its limit (1 in 1h): 429 (this tree answers it from `localBlockCache`, on by default, without Redis)',
  'session-read': '`GET /read` of a signed-in session (`secrets`), reading `userId`',
  'session-write': '`POST /write` of a signed-in session, changing one field',
  'cache-hit': '`GET /page` answered from `cacheResponse` (a 17-byte JSON body)',
  'cached-hit': "`cached(client, key, { ttl: '1h' }, loader)` of a stored object, the loader not called",
  publish: "`notifier.publish(channel, ~200 bytes)`, mode 'pubsub', nobody subscribed",
}

export type Client = ReturnType<typeof createClient>

/** A prepared hot path: `run` is one checked call. */
export interface HotPath {
  run(): Promise<void>
  close(): Promise<void>
}

const noClose = async (): Promise<void> => {}
const TIMEOUT_MS = 5000

/** One request to an app in memory, its status checked. */
function request(app: Handler, method: string, path: string, status: number, headers?: Record<string, string>) {
  return async (): Promise<void> => {
    const res = await sendInMemory(app, method, path, headers)
    if (res.statusCode !== status) throw new Error(`${method} ${path} answered ${res.statusCode}, not ${status}`)
  }
}

/** Sends until `accept` says the answer is the one to measure (a cache being filled asynchronously). */
async function until(send: () => Promise<boolean>, what: string): Promise<void> {
  for (let attempt = 0; attempt < 200; attempt++) {
    if (await send()) return
    await new Promise((resolve) => setTimeout(resolve, 10))
  }
  throw new Error(`${what}: never happened`)
}

interface BenchSession {
  userId?: number
  counter?: number
}

/** `path` on the package build `build`, talking to Redis through `client`, its keys under `prefix`. */
export async function hotPath(path: PathName, build: Kit, client: Client, prefix: string): Promise<HotPath> {
  const redis = client as unknown as kit.RedisClient
  const app = express()
  const handler = app as unknown as Handler
  switch (path) {
    case 'rate-limit-allowed':
    case 'rate-limit-blocked': {
      const blocked = path === 'rate-limit-blocked'
      app.use(
        build.rateLimit({
          client: redis,
          prefix,
          limit: blocked ? 1 : 1e9,
          windowMs: '1h',
          keyGenerator: () => 'b',
          timeoutMs: TIMEOUT_MS,
        }),
      )
      app.get('/', (_req, res) => {
        res.send('ok')
      })
      if (blocked) await request(handler, 'GET', '/', 200)()
      const run = request(handler, 'GET', '/', blocked ? 429 : 200)
      await run()
      return { run, close: noClose }
    }
    case 'session-read':
    case 'session-write': {
      app.use(build.session({ client: redis, prefix, secrets: 'bench gate secret', timeoutMs: TIMEOUT_MS }))
      const data = (req: express.Request) => req.session as unknown as BenchSession
      app.post('/login', async (req, res) => {
        await req.session.regenerate()
        data(req).userId = 1
        res.send('ok')
      })
      app.get('/read', (req, res) => {
        res.status(data(req).userId === 1 ? 200 : 401).send(String(data(req).userId))
      })
      app.post('/write', (req, res) => {
        if (data(req).userId !== 1) return void res.status(401).end()
        data(req).counter = (data(req).counter ?? 0) + 1
        res.send('ok')
      })
      const login = await sendInMemory(handler, 'POST', '/login')
      const cookie = String(login.getHeader('set-cookie') ?? '').split(';')[0]
      if (!cookie) throw new Error('session: the login set no cookie')
      const headers = { cookie }
      if (path === 'session-write') {
        await request(handler, 'POST', '/write', 200, headers)()
        await request(handler, 'POST', '/write', 200, headers)()
        // The writes are stored: the next request sees them.
        let counter: number | undefined
        app.get('/counter', (req, res) => {
          counter = data(req).counter
          res.send('ok')
        })
        await request(handler, 'GET', '/counter', 200, headers)()
        if (counter !== 2) throw new Error(`session write: the counter read back is ${counter}, not 2`)
        return { run: request(handler, 'POST', '/write', 200, headers), close: noClose }
      }
      return { run: request(handler, 'GET', '/read', 200, headers), close: noClose }
    }
    case 'cache-hit': {
      app.get(
        '/page',
        build.cacheResponse({ client: redis, prefix, ttl: '1h', timeoutMs: TIMEOUT_MS }),
        (_req, res) => {
          res.json({ users: [1, 2, 3] })
        },
      )
      const hit = async (): Promise<boolean> =>
        (await sendInMemory(handler, 'GET', '/page')).getHeader('x-cache') === 'HIT'
      await until(hit, 'cacheResponse: a hit')
      return {
        async run() {
          if (!(await hit())) throw new Error('cacheResponse: not a hit')
        },
        close: noClose,
      }
    }
    case 'cached-hit': {
      let loads = 0
      const value = { id: 1, name: 'Ada Lovelace', email: 'ada@example.com', roles: ['admin', 'user'] }
      const loader = () => {
        loads++
        return value
      }
      const read = () => build.cached(redis, 'user:1', { prefix, ttl: '1h', timeoutMs: TIMEOUT_MS }, loader)
      await until(async () => {
        const before = loads
        await read()
        return loads === before
      }, 'cached(): a hit')
      const loaded = loads
      return {
        async run() {
          const got = await read()
          if (loads !== loaded || got.id !== 1) throw new Error('cached(): not a hit (the loader ran)')
        },
        close: noClose,
      }
    }
    case 'publish': {
      const notifier = build.createNotifier({ client: redis, prefix, timeoutMs: TIMEOUT_MS })
      const payload = {
        id: 1,
        name: 'Ada Lovelace',
        email: 'ada.lovelace@example.com',
        changedFields: ['name', 'email', 'avatarUrl', 'bio', 'updatedAt'],
        updatedAt: new Date(1_780_000_000_000).toISOString(),
      }
      const run = async (): Promise<void> => {
        if (typeof (await notifier.publish('user.updated', payload)) !== 'string') throw new Error('publish: no id')
      }
      await run()
      return { run, close: () => notifier.close() }
    }
  }
}
