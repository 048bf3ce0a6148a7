import { createHmac, randomBytes } from 'node:crypto'
import { once } from 'node:events'
import type { Server } from 'node:http'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { expect } from 'chai'
import { createClient, createCluster } from 'redis'
import request, { type Response } from 'supertest'
import { createApp } from '../../src/app.js'
import { type Config, loadConfig } from '../../src/config.js'
import { consoleStyle, type Logger } from '../../src/logging.js'
import { createServices, type Services } from '../../src/services.js'
import { prepareDatabase, testDatabaseUrl } from './db.js'

export const redisUrl = process.env.REDIS_URL || 'redis://127.0.0.1:6379'
/** The Redis Cluster that `npm test` starts (scripts/cluster.sh), as REDIS_CLUSTER_NODES: CLUSTER_NODES, else 127.0.0.1:7000-7002. */
export const clusterNodes = process.env.CLUSTER_NODES || '127.0.0.1:7000,127.0.0.1:7001,127.0.0.1:7002'
export const sessionSecret = 'test-session-secret-0123456789-abcdefghijklmnop'
export const PASSWORD = 'correct horse battery staple'

/** A Redis key prefix no other test file or run uses. */
export function uniquePrefix(name = 'app'): string {
  return `test:${name}:${process.pid}:${randomBytes(4).toString('hex')}:`
}

/** A fresh, valid email address. */
export function uniqueEmail(name = 'user'): string {
  return `${name}-${randomBytes(5).toString('hex')}@example.com`
}

/** The environment of a test app: test database, a unique REDIS_PREFIX, limits raised unless overridden. */
export function testEnv(overrides: Record<string, string> = {}): NodeJS.ProcessEnv {
  return {
    NODE_ENV: 'test',
    DATABASE_URL: testDatabaseUrl,
    REDIS_URL: redisUrl,
    REDIS_PREFIX: uniquePrefix(),
    SESSION_SECRETS: sessionSecret,
    API_RATE_LIMIT: '1000000',
    LOGIN_FAILURES_PER_IP: '1000000',
    LOGIN_FAILURES_PER_ACCOUNT_AND_IP: '1000000',
    LOGIN_FAILURES_PER_ACCOUNT: '1000000',
    SIGNUP_RATE_LIMIT: '1000000',
    // no request logs in the test output (observability.test.ts reads them from a stream of its own)
    LOG_LEVEL: 'silent',
    // mail from the test's job workers, never in sample-app/mail.log
    MAIL_LOG: path.join(tmpdir(), `express-redis-kit-test-mail-${process.pid}.log`),
    ...overrides,
  }
}

/** A logger that keeps what it is given (the app logs nothing to the test output). */
export interface RecordingLogger {
  warnings: unknown[][]
  errors: unknown[][]
  warn(...args: unknown[]): void
  error(...args: unknown[]): void
}

export function recordingLogger(): RecordingLogger {
  const warnings: unknown[][] = []
  const errors: unknown[][] = []
  return {
    warnings,
    errors,
    warn: (...args) => void warnings.push(args),
    error: (...args) => void errors.push(args),
  }
}

export interface TestApp {
  config: Config
  services: Services
  server: Server
  logger: RecordingLogger
  /** supertest against the listening server. */
  http(): ReturnType<typeof request>
  close(): Promise<void>
}

/**
 * The app in this process as the server builds it (createServices + createApp), listening on a
 * free loopback port. With `waitForRedis` (default) it resolves once the Redis client is ready.
 */
export async function startApp(
  overrides: Record<string, string> = {},
  {
    waitForRedis = true,
    log,
  }: {
    waitForRedis?: boolean
    /** A pino logger (createLogger) for every line, the request logs', the app's and the kit's, as the server does; the TestApp's `logger` then records nothing. */
    log?: Logger
  } = {},
): Promise<TestApp> {
  await prepareDatabase()
  const config = loadConfig(testEnv(overrides))
  const logger = recordingLogger()
  const appLogger = log ? consoleStyle(log) : logger
  const services = createServices(config, appLogger)
  if (waitForRedis) await waitUntil(() => services.redis.isReady, 10_000, 'the Redis client to be ready')
  const app = createApp({ config, ...services, logger: appLogger, log })
  const server = app.listen(0, '127.0.0.1')
  await once(server, 'listening')
  let closed: Promise<void> | undefined
  return {
    config,
    services,
    server,
    logger,
    http: () => request(server),
    close() {
      closed ??= (async () => {
        server.closeAllConnections()
        await new Promise((resolve) => server.close(resolve))
        await services.close()
        if (config.redisClusterNodes.length > 0) await deleteKeys(config.redisPrefix, config.redisClusterNodes)
        else if (config.redisUrl === redisUrl) await deleteKeys(config.redisPrefix)
      })()
      return closed
    },
  }
}

/**
 * Deletes every key under `prefix` from the suite's Redis (sessions would otherwise stay a day),
 * or, given the nodes (`host:port`) of a Redis Cluster, from every master of that Cluster.
 */
export async function deleteKeys(prefix: string, clusterNodes: readonly string[] = []): Promise<void> {
  try {
    await onEachNode(clusterNodes, async (client) => {
      for await (const keys of client.scanIterator({ MATCH: `${prefix}*`, COUNT: 1000 })) {
        // one at a time: on a Cluster one node's keys are in many slots, and a command takes keys of one
        await Promise.all(keys.map((key) => client.unlink(key)))
      }
    })
  } catch {
    // only housekeeping: the keys expire anyway
  }
}

/** The keys under `prefix` in the suite's Redis, or, given its nodes, on every master of a Redis Cluster. */
export async function keysUnder(prefix: string, clusterNodes: readonly string[] = []): Promise<string[]> {
  const found: string[] = []
  await onEachNode(clusterNodes, async (client) => {
    for await (const keys of client.scanIterator({ MATCH: `${prefix}*`, COUNT: 1000 })) found.push(...keys)
  })
  return found
}

interface NodeConnection {
  scanIterator(options: { MATCH: string; COUNT: number }): AsyncIterable<string[]>
  unlink(key: string): Promise<number>
}

/** Runs `task` on a connection to the suite's Redis, or to each master of the Redis Cluster at `clusterNodes`. */
async function onEachNode(
  clusterNodes: readonly string[],
  task: (client: NodeConnection) => Promise<void>,
): Promise<void> {
  if (clusterNodes.length === 0) {
    const client = createClient({ url: redisUrl })
    client.on('error', () => {})
    try {
      await task(await client.connect())
    } finally {
      client.destroy()
    }
    return
  }
  const cluster = createCluster({ rootNodes: clusterNodes.map((node) => ({ url: `redis://${node}` })) })
  cluster.on('error', () => {})
  try {
    await cluster.connect()
    await Promise.all(cluster.masters.map(async (master) => task(await cluster.nodeClient(master))))
  } finally {
    cluster.destroy()
  }
}

/** Throws, saying how to start one, unless a Redis Cluster at `nodes` (comma-separated) serves every slot. */
export async function expectClusterUp(nodes: string): Promise<void> {
  const cluster = createCluster({
    rootNodes: nodes.split(',').map((node) => ({ url: `redis://${node}` })),
    defaults: { socket: { connectTimeout: 1_000, reconnectStrategy: false } },
  })
  cluster.on('error', () => {})
  try {
    await cluster.connect()
    const info = await cluster.sendCommand(undefined, true, ['CLUSTER', 'INFO'])
    if (!String(info).includes('cluster_state:ok')) throw new Error(String(info))
  } catch (error) {
    throw new Error(
      `no Redis Cluster serves every slot at ${nodes}: start one with \`bash scripts/cluster.sh start\` (npm test does)`,
      { cause: error },
    )
  } finally {
    cluster.destroy()
  }
}

export async function waitUntil(condition: () => boolean, withinMs = 10_000, what = 'the condition'): Promise<void> {
  const deadline = Date.now() + withinMs
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${withinMs} ms waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
}

/** Asserts the app's error shape `{ error: { code, message, details? } }` and returns the error. */
export function expectError(
  res: Response,
  status: number,
  code: string,
): { code: string; message: string; details?: unknown } {
  expect(res.status, `status (body: ${res.text})`).to.equal(status)
  expect(res.headers['content-type']).to.match(/^application\/json/)
  expect(res.body).to.be.an('object').with.property('error')
  expect(Object.keys(res.body)).to.deep.equal(['error'])
  const error = res.body.error
  expect(error.code).to.equal(code)
  expect(error.message).to.be.a('string').and.not.empty
  return error
}

/** The `sid=...` pair of a response's Set-Cookie (to send as a Cookie header), or undefined. */
export function sidCookie(res: Response): string | undefined {
  const cookies = ([] as string[]).concat(res.headers['set-cookie'] ?? [])
  const sid = cookies.find((cookie) => cookie.startsWith('sid='))
  const pair = sid?.split(';')[0]
  return pair === 'sid=' ? undefined : pair
}

/** Whether the response clears the sid cookie. */
export function clearsSid(res: Response): boolean {
  const cookies = ([] as string[]).concat(res.headers['set-cookie'] ?? [])
  return cookies.some((cookie) => /^sid=;/.test(cookie) && /Expires=Thu, 01 Jan 1970/i.test(cookie))
}

/** The session cookie value (`<tag>.<token>`) inside a signed `sid=s%3A<value>.<signature>` cookie pair. */
export function sessionIdOf(cookie: string): string {
  const value = decodeURIComponent(cookie.slice('sid='.length))
  expect(value, 'a signed cookie').to.match(/^s:/)
  return value.slice(2, value.lastIndexOf('.'))
}

/** A session cookie value of the shape the kit issues (`<tag>.<token>`) that names no session. */
export function madeUpSessionValue(): string {
  return `${randomBytes(8).toString('base64url').slice(0, 11)}.${randomBytes(32).toString('base64url')}`
}

/** A `sid` cookie pair for `id`, signed as cookie-parser signs (what an attacker who planted a cookie would send). */
export function signedSid(id: string, secret = sessionSecret): string {
  const signature = createHmac('sha256', secret).update(id).digest('base64').replace(/=+$/, '')
  return `sid=${encodeURIComponent(`s:${id}.${signature}`)}`
}

export interface CreatedUser {
  id: number
  email: string
  name: string
  password: string
}

/** Signs a user up through the API (201 expected). */
export async function signUp(app: TestApp, fields: Partial<Omit<CreatedUser, 'id'>> = {}): Promise<CreatedUser> {
  const user = { email: uniqueEmail(), name: 'Test User', password: PASSWORD, ...fields }
  const res = await app.http().post('/users').send(user)
  expect(res.status, res.text).to.equal(201)
  return { ...user, id: res.body.id, email: res.body.email }
}

/** Logs in through the API (200 expected); resolves to the `sid=...` cookie pair. */
export async function logIn(app: TestApp, user: { email: string; password: string }, cookie?: string): Promise<string> {
  const req = app.http().post('/login')
  if (cookie) req.set('Cookie', cookie)
  const res = await req.send({ email: user.email, password: user.password })
  expect(res.status, res.text).to.equal(200)
  const sid = sidCookie(res)
  expect(sid, 'a sid cookie').to.be.a('string')
  return sid!
}

/** Signs a user up and logs them in. */
export async function signedInUser(
  app: TestApp,
  fields: Partial<Omit<CreatedUser, 'id'>> = {},
): Promise<CreatedUser & { cookie: string }> {
  const user = await signUp(app, fields)
  return { ...user, cookie: await logIn(app, user) }
}
