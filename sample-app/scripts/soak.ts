/**
 * A soak of the sample app: two server instances (each with its job worker and outbox relay) on
 * one Redis (or REDIS_CLUSTER_NODES) and a database of their own, driven for SOAK_MINUTES by
 * users who sign up, sign in, read pages, change their name, open event streams and sometimes
 * delete their account, plus anonymous readers; then SOAK_IDLE_MINUTES without load. Every
 * HEAP_PROBE_MS each server prints its heap after a full GC (scripts/heap-probe.mjs); a heap
 * snapshot is written after the warm-up and at the end of the load, and what grew between
 * them is printed by what holds it (scripts/heap-growth.ts), so that what grows can be named. At the end it checks what a soak
 * must leave behind: no 5xx, no error in the app's logs, one welcome mail per sign-up, the
 * outbox and the queue empty, no app key without a TTL.
 *
 *   pnpm --filter sample-app soak                     # 30 minutes of load, 5 idle
 *   SOAK_MINUTES=3 SOAK_IDLE_MINUTES=1 pnpm --filter sample-app soak
 *
 * SOAK_DATABASE_URL (its name must contain "soak": it is emptied first), SOAK_ACTORS (6 signed-in
 * users at a time), SOAK_READERS (4 anonymous readers), SOAK_WARMUP_MINUTES (2), HEAP_PROBE_MS
 * (30000), SOAK_DIR (where logs, snapshots and summary.json go; a new temporary directory).
 */
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { fileURLToPath } from 'node:url'
import pg from 'pg'
import { createClient } from 'redis'
import { type ServerProcess, startServer } from '../test/helpers/processes.js'
import { migrateDatabase } from './db.js'
import { heapGrowth } from './heap-growth.js'

const minutes = (name: string, fallback: number) => Number(process.env[name] ?? fallback) * 60_000
const loadMs = minutes('SOAK_MINUTES', 30)
const idleMs = minutes('SOAK_IDLE_MINUTES', 5)
const warmupMs = Math.min(minutes('SOAK_WARMUP_MINUTES', 2), loadMs)
const actors = Number(process.env.SOAK_ACTORS ?? 6)
const readers = Number(process.env.SOAK_READERS ?? 4)
const probeMs = Number(process.env.HEAP_PROBE_MS ?? 30_000)
const databaseUrl = process.env.SOAK_DATABASE_URL ?? 'postgresql://postgres@127.0.0.1:5432/erk_soak'
const redisUrl = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379'
const dir = process.env.SOAK_DIR ?? mkdtempSync(path.join(os.tmpdir(), 'soak-'))
const prefix = `soak${Date.now()}:`
const mailLog = path.join(dir, 'mail.log')
const probe = fileURLToPath(new URL('heap-probe.mjs', import.meta.url))

const stats = {
  requests: 0,
  byStatus: {} as Record<string, number>,
  serverErrors: [] as string[],
  networkErrors: [] as string[],
  signUps: 0,
  deletions: 0,
  streams: 0,
  eventsReceived: 0,
}
let stopLoad = false
let maxUserId = 0

interface Answer {
  status: number
  body: unknown
  setCookie: string[]
}

async function request(
  base: string,
  method: string,
  url: string,
  options: { cookie?: string; json?: unknown } = {},
): Promise<Answer | undefined> {
  const headers: Record<string, string> = { 'sec-fetch-site': 'same-origin' }
  if (options.cookie) headers.cookie = options.cookie
  if (options.json !== undefined) headers['content-type'] = 'application/json'
  try {
    const res = await fetch(base + url, {
      method,
      headers,
      body: options.json === undefined ? undefined : JSON.stringify(options.json),
      signal: AbortSignal.timeout(30_000),
    })
    const text = await res.text()
    stats.requests++
    stats.byStatus[res.status] = (stats.byStatus[res.status] ?? 0) + 1
    if (res.status >= 500 && stats.serverErrors.length < 20)
      stats.serverErrors.push(`${method} ${url} ${res.status} ${text}`)
    let body: unknown = text
    try {
      body = JSON.parse(text)
    } catch {}
    return { status: res.status, body, setCookie: res.headers.getSetCookie() }
  } catch (error) {
    stats.networkErrors.push(`${method} ${url}: ${(error as Error).message}`)
    return undefined
  }
}

/** Reads `GET /events` for `forMs`, counting the events it receives. */
async function stream(base: string, cookie: string | undefined, forMs: number): Promise<void> {
  const controller = new AbortController()
  const timer = setTimeout(() => controller.abort(), forMs)
  try {
    const res = await fetch(`${base}/events`, { headers: cookie ? { cookie } : {}, signal: controller.signal })
    stats.requests++
    stats.byStatus[res.status] = (stats.byStatus[res.status] ?? 0) + 1
    if (res.status !== 200) return void (await res.text())
    stats.streams++
    const decoder = new TextDecoder()
    for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
      stats.eventsReceived += decoder.decode(chunk, { stream: true }).split('\nevent: user.').length - 1
    }
  } catch {
    // the abort that ends it
  } finally {
    clearTimeout(timer)
  }
}

const pick = <T>(items: T[]): T => items[Math.floor(Math.random() * items.length)] as T
const randomUser = () => 1 + Math.floor(Math.random() * Math.max(1, maxUserId + 5))

async function actor(bases: string[], index: number): Promise<void> {
  for (let round = 0; !stopLoad; round++) {
    const email = `soak-${index}-${round}-${prefix.slice(4, -1)}@example.com`
    const password = 'correct horse battery'
    const created = await request(pick(bases), 'POST', '/users', { json: { email, name: `Soak ${index}`, password } })
    if (created?.status !== 201) continue
    stats.signUps++
    const { id } = created.body as { id: number }
    maxUserId = Math.max(maxUserId, id)
    const login = await request(pick(bases), 'POST', '/login', { json: { email, password } })
    const cookie = login?.setCookie.map((line) => line.split(';')[0]).join('; ')
    if (login?.status !== 200 || !cookie) continue
    for (let i = 0; i < 8 && !stopLoad; i++) {
      await request(pick(bases), 'GET', '/me', { cookie })
      await request(pick(bases), 'GET', `/users/${randomUser()}`, { cookie })
      await request(pick(bases), 'GET', `/users?limit=20&after=${Math.max(0, randomUser() - 20)}`, { cookie })
      if (i % 3 === 0) {
        await request(pick(bases), 'PATCH', `/users/${id}`, { cookie, json: { name: `Soak ${index}.${i}` } })
      }
    }
    await request(pick(bases), 'GET', '/sessions', { cookie })
    await stream(pick(bases), cookie, 1_000 + Math.random() * 2_000)
    if (round % 4 === 3) {
      const deleted = await request(pick(bases), 'DELETE', `/users/${id}`, {
        cookie,
        json: { currentPassword: password },
      })
      if (deleted?.status === 204) stats.deletions++
    } else {
      await request(pick(bases), 'POST', '/logout', { cookie })
    }
  }
}

async function reader(bases: string[]): Promise<void> {
  for (let round = 0; !stopLoad; round++) {
    await request(pick(bases), 'GET', `/users/${randomUser()}`)
    await request(pick(bases), 'GET', `/users?after=${Math.max(0, randomUser() - 20)}`)
    if (round % 10 === 0) await request(pick(bases), 'GET', '/healthz')
    if (round % 6 === 0) await stream(pick(bases), undefined, 500 + Math.random() * 1_500)
  }
}

interface HeapSample {
  label: string
  time: number
  heapUsed: number
  rss: number
}

const heapSamples = (server: ServerProcess): HeapSample[] =>
  [...server.stdout().matchAll(/^heap-probe (\{.*\})$/gm)].map((match) => JSON.parse(match[1] as string))

/** Least-squares slope of heapUsed in MB per minute over the samples from `from` to `to`. */
function slope(samples: HeapSample[], from: number, to: number): number | undefined {
  const points = samples.filter((s) => s.time >= from && s.time <= to)
  if (points.length < 3) return undefined
  const xs = points.map((s) => (s.time - from) / 60_000)
  const ys = points.map((s) => s.heapUsed / 1024 / 1024)
  const mx = xs.reduce((a, b) => a + b, 0) / xs.length
  const my = ys.reduce((a, b) => a + b, 0) / ys.length
  let num = 0
  let den = 0
  for (let i = 0; i < xs.length; i++) {
    num += ((xs[i] as number) - mx) * ((ys[i] as number) - my)
    den += ((xs[i] as number) - mx) ** 2
  }
  return num / den
}

async function snapshots(servers: ServerProcess[]): Promise<string[]> {
  const seen = servers.map((server) => server.stdout().match(/^heap-probe-snapshot .*$/gm)?.length ?? 0)
  for (const server of servers) server.child.kill('SIGUSR2')
  const files: string[] = []
  for (const [i, server] of servers.entries()) {
    for (;;) {
      const lines = server.stdout().match(/^heap-probe-snapshot (.*)$/gm) ?? []
      if (lines.length > (seen[i] as number)) {
        files.push((lines.at(-1) as string).slice('heap-probe-snapshot '.length))
        break
      }
      await sleep(200)
    }
  }
  return files
}

async function main(): Promise<void> {
  const name = decodeURIComponent(new URL(databaseUrl).pathname.slice(1))
  if (!/soak/i.test(name)) throw new Error(`refusing to empty database "${name}": its name must contain "soak"`)
  await migrateDatabase(databaseUrl)
  const db = new pg.Client({ connectionString: databaseUrl })
  await db.connect()
  await db.query('TRUNCATE TABLE "User" RESTART IDENTITY CASCADE')
  await db.query('TRUNCATE TABLE "Outbox"')

  const env: Record<string, string> = {
    NODE_OPTIONS: `--import ${probe}`,
    HEAP_PROBE_MS: String(probeMs),
    HEAP_PROBE_DIR: dir,
    PORT: '0',
    DATABASE_URL: databaseUrl,
    REDIS_URL: redisUrl,
    REDIS_CLUSTER_NODES: process.env.REDIS_CLUSTER_NODES ?? '',
    REDIS_PREFIX: prefix,
    SESSION_SECRETS: 'soak-secret-soak-secret-soak-secret',
    API_RATE_LIMIT: '1000000',
    SIGNUP_RATE_LIMIT: '1000000',
    SSE_MAX_PER_IP: '1000',
    LOG_LEVEL: 'warn',
    MAIL_LOG: mailLog,
    OUTBOX_POLL_MS: '1000',
  }
  const servers = await Promise.all([startServer(env), startServer(env)])
  const bases = servers.map((server) => server.url)
  console.log(`soak: ${servers.length} instances ${bases.join(' ')}, prefix ${prefix}, output in ${dir}`)
  const started = Date.now()
  const load = [
    ...Array.from({ length: actors }, (_, i) => actor(bases, i)),
    ...Array.from({ length: readers }, () => reader(bases)),
  ]
  const progress = setInterval(() => {
    const heap = servers.map((s) => ((heapSamples(s).at(-1)?.heapUsed ?? 0) / 1024 / 1024).toFixed(1)).join(' / ')
    console.log(
      `soak: ${((Date.now() - started) / 60_000).toFixed(1)} min, ${stats.requests} requests, heap ${heap} MB`,
    )
  }, 60_000)
  await sleep(warmupMs)
  const warmedUp = Date.now()
  const first = await snapshots(servers)
  await sleep(Math.max(0, loadMs - (Date.now() - started)))
  stopLoad = true
  await Promise.all(load)
  const loadEnded = Date.now()
  const last = await snapshots(servers)
  await sleep(idleMs)
  const ended = Date.now()
  clearInterval(progress)

  // what the soak must leave behind (the idle minutes gave the outbox and the queue time to drain)
  const mails = readFileSync(mailLog, 'utf8')
    .split('\n')
    .filter((line) => line.includes('"subject":"Welcome to the sample app"')).length
  const [{ count: outbox }] = (await db.query('SELECT count(*)::int AS count FROM "Outbox"')).rows
  const redis = createClient({ url: redisUrl })
  await redis.connect()
  const queue = `${prefix}{jobs}:jobs:`
  const queued =
    (await redis.lLen(`${queue}wait`)) + (await redis.lLen(`${queue}active`)) + (await redis.zCard(`${queue}delayed`))
  const withoutTtl = new Map<string, number>()
  for await (const keys of redis.scanIterator({ MATCH: `${prefix}*`, COUNT: 1000 })) {
    for (const key of keys) {
      if (key.startsWith(`${prefix}{jobs}`)) continue // BullMQ's own keys: the queue keeps its structure
      if ((await redis.pTTL(key)) !== -1) continue
      const shape = key.slice(prefix.length).replace(/[0-9a-f]{16,}|\d+/g, '#')
      withoutTtl.set(shape, (withoutTtl.get(shape) ?? 0) + 1)
    }
  }
  await redis.close()
  await db.end()
  const exits = await Promise.all(servers.map((server) => server.stop()))
  const errorLines = servers.flatMap((server) =>
    server
      .stdout()
      .split('\n')
      .filter((line) => /"level":(50|60)/.test(line)),
  )

  const series = servers.map((server) => heapSamples(server))
  const mb = (bytes: number) => (bytes / 1024 / 1024).toFixed(2)
  const summary = {
    loadMinutes: (loadEnded - started) / 60_000,
    idleMinutes: (ended - loadEnded) / 60_000,
    ...stats,
    welcomeMails: mails,
    outboxRows: outbox,
    queuedJobs: queued,
    keysWithoutTtl: Object.fromEntries(withoutTtl),
    errorLines: errorLines.slice(0, 20),
    stderr: servers.map((server) => server.stderr().slice(-2000)),
    exits,
    heap: series.map((samples) => ({
      afterWarmupMB: mb(samples.find((s) => s.time >= warmedUp)?.heapUsed ?? 0),
      endOfLoadMB: mb(samples.filter((s) => s.time <= loadEnded).at(-1)?.heapUsed ?? 0),
      endMB: mb(samples.at(-1)?.heapUsed ?? 0),
      loadSlopeMBPerMin: slope(samples, warmedUp, loadEnded)?.toFixed(3),
      secondHalfSlopeMBPerMin: slope(samples, (warmedUp + loadEnded) / 2, loadEnded)?.toFixed(3),
      idleSlopeMBPerMin: slope(samples, loadEnded, ended)?.toFixed(3),
      samples: samples.map((s) => [Math.round((s.time - started) / 1000), mb(s.heapUsed), mb(s.rss)]),
    })),
  }
  writeFileSync(path.join(dir, 'summary.json'), JSON.stringify(summary, null, 2))
  for (const [i, server] of servers.entries()) writeFileSync(path.join(dir, `server-${i}.log`), server.stdout())
  const { heap, ...rest } = summary
  console.log(JSON.stringify({ ...rest, heap: heap.map(({ samples: _, ...h }) => h) }, null, 2))
  for (const [i] of servers.entries()) {
    console.log(`\nserver ${i}: what grew between the heap snapshots after the warm-up and at the end of the load`)
    console.log(heapGrowth(first[i] as string, last[i] as string).join('\n'))
  }
}

await main()
