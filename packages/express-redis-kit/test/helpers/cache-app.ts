import { createHash } from 'node:crypto'
import { request as httpRequest, type IncomingHttpHeaders, type Server } from 'node:http'
import { performance } from 'node:perf_hooks'
import { setTimeout as sleep } from 'node:timers/promises'
import express, { type Express, type NextFunction, type Request, type RequestHandler, type Response } from 'express'
import type { Response as TestResponse } from 'supertest'
import { clusterSlot } from '../../src/shared/redis.js'
import { mode, type RedisClient } from './redis.js'

/*
 * Helpers of the cache's HTTP-level tests: a counting app, a raw HTTP client (supertest
 * always inflates gzip, the cache must replay the compressed bytes), and the cache's Redis
 * key names computed from its data model (src/cache/scripts.ts), not from its code.
 */

/** How often the origin ran, per app. */
export interface Runs {
  count: number
}

/**
 * An Express 5 app whose every path and method goes through `cache` to `respond`, which
 * is given the run number (1 for the first time the handler runs) and `next`. The default answer is
 * `<METHOD> <url> #<run>` with `res.send`. Errors reach Express's default handler (500).
 */
export function countingApp(
  cache: RequestHandler,
  respond?: (req: Request, res: Response, run: number, next: NextFunction) => void | Promise<void>,
): { app: Express; runs: Runs } {
  const app = express()
  // Express's default error handler then answers 500 without printing the stack.
  app.set('env', 'test')
  const runs: Runs = { count: 0 }
  app.use(stableHost)
  app.all('/{*path}', cache, async (req, res, next) => {
    runs.count++
    if (respond) await respond(req, res, runs.count, next)
    else res.send(`${req.method} ${req.originalUrl} #${runs.count}`)
  })
  return { app, runs }
}

/**
 * The cache keys on the Host, and supertest's `request(app)` listens on a new port for every
 * request (Host `127.0.0.1:<port>`): this middleware, mounted first, gives such requests the
 * one public host a real deployment has behind its load balancer. A Host a test sets itself
 * is kept.
 */
export const stableHost: RequestHandler = (req, _res, next) => {
  if (/^127\.0\.0\.1:\d+$/.test(req.headers.host ?? '')) req.headers.host = PUBLIC_HOST
  next()
}

/** The Host every instance of a test app sees, as behind one load balancer. */
export const PUBLIC_HOST = 'app.test'

/** The `X-Cache` of a response. */
export const xCache = (res: { headers: Record<string, unknown> }): unknown => res.headers['x-cache']

/** A supertest parser that keeps the body as the bytes received: `.buffer(true).parse(binary)`. */
export function binary(res: TestResponse, callback: (error: Error | null, body: Buffer) => void): void {
  // Superagent hands a parser the Node response stream.
  const stream = res as unknown as NodeJS.ReadableStream
  const chunks: Buffer[] = []
  stream.on('data', (chunk: Buffer) => chunks.push(chunk))
  stream.on('end', () => callback(null, Buffer.concat(chunks)))
  stream.on('error', (error: Error) => callback(error, Buffer.alloc(0)))
}

/** The body of a supertest response parsed with {@link binary}. */
export const bodyBytes = (res: TestResponse): Buffer => res.body as Buffer

export interface RawResponse {
  status: number
  headers: IncomingHttpHeaders
  /** Header names and values as received, one pair per header line. */
  rawHeaders: [string, string][]
  /** The body exactly as received (never inflated). */
  body: Buffer
  /** Time from sending the request to the end of the body. */
  ms: number
}

/** One request on a fresh connection, the body kept as raw bytes. */
export function rawRequest(
  server: Server,
  path: string,
  options: { method?: string; headers?: Record<string, string> } = {},
): Promise<RawResponse> {
  const { port } = server.address() as { port: number }
  const started = performance.now()
  return new Promise((resolve, reject) => {
    const req = httpRequest(
      { host: '127.0.0.1', port, path, method: options.method ?? 'GET', headers: options.headers, agent: false },
      (res) => {
        const chunks: Buffer[] = []
        res.on('data', (chunk: Buffer) => chunks.push(chunk))
        res.once('error', reject)
        res.once('end', () => {
          const rawHeaders: [string, string][] = []
          for (let i = 0; i < res.rawHeaders.length; i += 2) {
            rawHeaders.push([res.rawHeaders[i]!.toLowerCase(), res.rawHeaders[i + 1]!])
          }
          resolve({
            status: res.statusCode ?? 0,
            headers: res.headers,
            rawHeaders,
            body: Buffer.concat(chunks),
            ms: performance.now() - started,
          })
        })
      },
    )
    req.once('error', reject)
    req.end()
  })
}

/** Headers that belong to one response or one connection, and those the cache adds. */
const PER_RESPONSE = new Set([
  'date',
  'x-cache',
  'cache-status',
  'age',
  'connection',
  'keep-alive',
  'transfer-encoding',
])

/** The header lines of a response, minus {@link PER_RESPONSE} and `also`, in the order received. */
export function replayedHeaders(res: RawResponse, also: string[] = []): [string, string][] {
  return res.rawHeaders.filter(([name]) => !PER_RESPONSE.has(name) && !also.includes(name))
}

/**
 * The entry hash of a cache id given as its parts:
 * `<prefix>{<first 32 characters of base64url(sha256(<length>:<part> for each part))>}`.
 */
export function entryKeyOf(prefix: string, parts: string[]): string {
  const hash = createHash('sha256')
  for (const part of parts) hash.update(`${part.length}:${part}`)
  return `${prefix}{${hash.digest('base64url').slice(0, 32)}}`
}

/**
 * The entry hash of a response under the default key: protocol, host, the path and the query
 * as sent (`/path?b=2&a=1`; the query from its `?`). Host: the one of {@link stableHost}.
 */
export function responseEntryKey(prefix: string, target: string, host = PUBLIC_HOST): string {
  const queryAt = target.indexOf('?')
  const [path, query] = queryAt === -1 ? [target, ''] : [target.slice(0, queryAt), target.slice(queryAt)]
  return entryKeyOf(prefix, ['response', 'url', 'http', host, path, query])
}

/** The entry hash of a cached() value. */
export const cachedEntryKey = (prefix: string, key: string): string => entryKeyOf(prefix, ['cached', key])

/** The single-flight lock beside an entry hash. */
export const lockKeyOf = (entryKey: string): string => `${entryKey}:lock`

/** Repeats `attempt` every 20 ms until it resolves true; fails after `withinMs`. */
export async function eventually(
  attempt: () => Promise<boolean>,
  withinMs = 5_000,
  what = 'the condition',
): Promise<void> {
  const deadline = Date.now() + withinMs
  while (!(await attempt())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${withinMs} ms waiting for ${what}`)
    await sleep(20)
  }
}

/**
 * Waits until a fill whose response was already sent has committed its variant (the store
 * stages, tags, checks the invalidation counter and commits after the response went out).
 * Without `variant`, any variant will do.
 */
export async function untilStored(client: RedisClient, entryKey: string, variant?: string): Promise<void> {
  await eventually(
    async () =>
      variant === undefined
        ? (await client.hKeys(entryKey)).some((field) => String(field).startsWith('t:'))
        : Boolean(await client.hExists(entryKey, `t:${variant}`)),
    5_000,
    `${entryKey} stored`,
  )
}

/** The times stored for a variant of an entry (Redis ms; see src/cache/scripts.ts). */
export async function storedTimes(
  client: RedisClient,
  entryKey: string,
  variant = '',
): Promise<{ storedAt: number; freshUntil: number; staleWhileRevalidateUntil: number; staleIfErrorUntil: number }> {
  const text = await client.hGet(entryKey, `t:${variant}`)
  if (typeof text !== 'string') throw new Error(`${entryKey} has no variant '${variant}'`)
  const [storedAt, freshUntil, staleWhileRevalidateUntil, staleIfErrorUntil] = text.split(',').map(Number) as number[]
  return {
    storedAt: storedAt!,
    freshUntil: freshUntil!,
    staleWhileRevalidateUntil: staleWhileRevalidateUntil!,
    staleIfErrorUntil: staleIfErrorUntil!,
  }
}

/** The set of entry hashes carrying `tag` (tags of printable ASCII without braces are kept as is). */
export const tagKeyOf = (prefix: string, tag: string): string => `${prefix}tag:{${tag}}`

/**
 * The sets of `tag`'s copies: on a single Redis only {@link tagKeyOf}; on a Cluster three, the
 * others `<prefix>tag:{<tag>#<j>.<i>}` with the smallest i whose slot lies within a twelfth of
 * the slot space after the first copy's slot + j thirds of it.
 */
export function tagCopiesOf(prefix: string, tag: string, onCluster = mode === 'cluster'): string[] {
  const first = tagKeyOf(prefix, tag)
  if (!onCluster) return [first]
  const copies = [first]
  for (const j of [1, 2]) {
    const target = (clusterSlot(first) + Math.floor((j * 16384) / 3)) % 16384
    let i = 0
    while ((clusterSlot(`${prefix}tag:{${tag}#${j}.${i}}`) - target + 16384) % 16384 >= Math.floor(16384 / 12)) i++
    copies.push(`${prefix}tag:{${tag}#${j}.${i}}`)
  }
  return copies
}

/** How many entries carry `tag` (in all of its copies' sets). */
export async function taggedCount(client: RedisClient, prefix: string, tag: string): Promise<number> {
  let count = 0
  const onCluster = Array.isArray((client as { slots?: unknown }).slots)
  for (const key of tagCopiesOf(prefix, tag, onCluster)) count += Number(await client.sCard(key))
  return count
}

/**
 * Waits until fills whose responses were already sent have tagged their entries: `counts`
 * maps a tag to the number of entries that must carry it. A fill stores, tags, then reads
 * the invalidation counter once more, all after its response went out; an invalidation that
 * overlaps any of that drops the fill (and any other fill in progress), which is right but
 * not what a test that invalidates *after* its fills means to check.
 */
export async function untilTagged(client: RedisClient, prefix: string, counts: Record<string, number>): Promise<void> {
  for (const [tag, count] of Object.entries(counts)) {
    await eventually(
      async () => (await taggedCount(client, prefix, tag)) >= count,
      5_000,
      `${count} entries tagged ${tag}`,
    )
  }
  // The fill's last step: one read of the invalidation counter.
  await sleep(50)
}

/** A promise that resolves when `resolve()` is called, e.g. to hold a handler until the test lets it go. */
export function gate(): { promise: Promise<void>; open: () => void } {
  let open!: () => void
  const promise = new Promise<void>((resolve) => {
    open = resolve
  })
  return { promise, open }
}
