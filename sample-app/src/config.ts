import path from 'node:path'
import { z } from 'zod'
import { parseClusterNodes } from './cluster-nodes.js'
import { parseTrustProxy, type TrustProxy } from './trust-proxy.js'

/** pino's levels, most severe first, and `silent` (nothing logged). */
const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const
/** A pino level (LOG_LEVEL). */
export type LogLevel = (typeof LOG_LEVELS)[number]

const DEVELOPMENT_SECRET = 'development-only-secret-change-me-in-production'
/** Where mail goes without SMTP_URL: sample-app/mail.log (ignored by git, like every *.log). */
const DEFAULT_MAIL_LOG = path.resolve(import.meta.dirname, '..', 'mail.log')

/** Parses `text` as an integer from `min` to `max`, or reports that `name` must be one. */
const toInteger =
  (name: string, min: number, max: number) =>
  (text: string, ctx: z.RefinementCtx): number => {
    const value = Number(text)
    if (!/^\d+$/.test(text.trim()) || value < min || value > max) {
      ctx.addIssue({ code: 'custom', message: `${name} must be an integer from ${min} to ${max}` })
      return z.NEVER
    }
    return value
  }

const integer = (name: string, fallback: number, min: number, max: number) =>
  z
    .string()
    .default(String(fallback))
    .transform(toInteger(name, min, max))

/** An integer that may be left unset (or empty): undefined then. */
const optionalInteger = (name: string, min: number, max: number) =>
  z
    .string()
    .optional()
    .transform((text, ctx) => (text === undefined || text === '' ? undefined : toInteger(name, min, max)(text, ctx)))

const hasProtocol = (text: string, protocols: string[]) => {
  try {
    return protocols.includes(new URL(text).protocol)
  } catch {
    return false
  }
}
const urlMessage = (name: string, protocols: string[]) =>
  `${name} must be a URL starting with ${protocols.map((p) => `${p}//`).join(' or ')}`

const url = (name: string, protocols: string[], fallback: string) =>
  z
    .string()
    .default(fallback)
    .refine((text) => hasProtocol(text, protocols), urlMessage(name, protocols))

/** A URL that may be left unset (or empty): undefined then. */
const optionalUrl = (name: string, protocols: string[]) =>
  z
    .string()
    .optional()
    .transform((text) => (text === '' ? undefined : text))
    .refine((text) => text === undefined || hasProtocol(text, protocols), urlMessage(name, protocols))

const environment = z.object({
  NODE_ENV: z.string().default('development'),
  HOST: z.string().min(1).default('127.0.0.1'),
  PORT: integer('PORT', 3000, 0, 65535),
  DATABASE_URL: url(
    'DATABASE_URL',
    ['postgresql:', 'postgres:'],
    'postgresql://postgres@127.0.0.1:5432/express_redis_kit',
  ),
  REDIS_URL: url('REDIS_URL', ['redis:', 'rediss:'], 'redis://127.0.0.1:6379'),
  REDIS_CLUSTER_NODES: z
    .string()
    .default('')
    .transform((text, ctx) => {
      const parsed = parseClusterNodes(text)
      if (Array.isArray(parsed)) return parsed
      ctx.addIssue({ code: 'custom', message: parsed.error })
      return z.NEVER
    }),
  REDIS_PREFIX: z
    .string()
    .regex(/^[^{}\s]*$/, 'REDIS_PREFIX must not contain spaces, { or }')
    .default('sample:'),
  SESSION_SECRETS: z.string().optional(),
  TRUST_PROXY: z
    .string()
    .default('false')
    .transform((text, ctx) => {
      const parsed = parseTrustProxy(text)
      if (typeof parsed !== 'object' || Array.isArray(parsed)) return parsed
      ctx.addIssue({ code: 'custom', message: parsed.error })
      return z.NEVER
    }),
  API_RATE_LIMIT: integer('API_RATE_LIMIT', 600, 1, 1_000_000),
  LOGIN_FAILURES_PER_IP: integer('LOGIN_FAILURES_PER_IP', 20, 1, 1_000_000),
  LOGIN_FAILURES_PER_ACCOUNT_AND_IP: integer('LOGIN_FAILURES_PER_ACCOUNT_AND_IP', 5, 1, 1_000_000),
  LOGIN_FAILURES_PER_ACCOUNT: integer('LOGIN_FAILURES_PER_ACCOUNT', 50, 1, 1_000_000),
  LOGIN_SLOWDOWN_MS: integer('LOGIN_SLOWDOWN_MS', 1000, 0, 60_000),
  SIGNUP_RATE_LIMIT: integer('SIGNUP_RATE_LIMIT', 10, 1, 1_000_000),
  SSE_MAX_PER_IP: integer('SSE_MAX_PER_IP', 10, 1, 1_000_000),
  SSE_MAX_TOTAL: integer('SSE_MAX_TOTAL', 1000, 1, 1_000_000),
  EVENTS_MAX_LENGTH: integer('EVENTS_MAX_LENGTH', 10_000, 100, 10_000_000),
  // background jobs (src/jobs/)
  QUEUE_REDIS_URL: optionalUrl('QUEUE_REDIS_URL', ['redis:', 'rediss:']),
  SMTP_URL: optionalUrl('SMTP_URL', ['smtp:', 'smtps:']),
  MAIL_LOG: z.string().min(1, 'MAIL_LOG must be a file path').default(DEFAULT_MAIL_LOG),
  RUN_WORKER: z.enum(['true', 'false'], { message: 'RUN_WORKER must be true or false' }).default('true'),
  WORKER_CONCURRENCY: integer('WORKER_CONCURRENCY', 5, 1, 100),
  JOB_ATTEMPTS: integer('JOB_ATTEMPTS', 5, 1, 100),
  JOB_BACKOFF_MS: integer('JOB_BACKOFF_MS', 2000, 0, 3_600_000),
  JOB_LOCK_MS: integer('JOB_LOCK_MS', 30_000, 1_000, 3_600_000),
  JOB_STALLED_INTERVAL_MS: integer('JOB_STALLED_INTERVAL_MS', 30_000, 500, 3_600_000),
  // the transactional outbox's relay (src/outbox.ts)
  OUTBOX_RELAY: z.enum(['true', 'false'], { message: 'OUTBOX_RELAY must be true or false' }).default('true'),
  OUTBOX_POLL_MS: integer('OUTBOX_POLL_MS', 5000, 10, 3_600_000),
  OUTBOX_BATCH_SIZE: integer('OUTBOX_BATCH_SIZE', 100, 1, 10_000),
  OUTBOX_RETRY_MAX_MS: integer('OUTBOX_RETRY_MAX_MS', 30_000, 100, 3_600_000),
  // logs and metrics (src/logging.ts, src/metrics.ts)
  LOG_LEVEL: z.enum(LOG_LEVELS, { message: `LOG_LEVEL must be one of ${LOG_LEVELS.join(', ')}` }).default('info'),
  METRICS_TOKEN: z
    .string()
    .optional()
    .transform((text) => (text === '' ? undefined : text))
    .refine(
      (text) => text === undefined || /^[\x21-\x7e]{16,200}$/.test(text),
      'METRICS_TOKEN must be 16 to 200 printable characters without spaces',
    ),
  METRICS_PORT: optionalInteger('METRICS_PORT', 0, 65535),
  // the local cache in front of Redis for GET /users/:id and the session check (routes/users.ts, credentials.ts)
  LOCAL_CACHE: z
    .enum(['true', 'false', '1', '0'], { message: 'LOCAL_CACHE must be true or false (or 1 or 0)' })
    .default('true'),
  LOCAL_CACHE_FENCE_MS: integer('LOCAL_CACHE_FENCE_MS', 20, 4, 60_000),
})

/** Logs and metrics (src/logging.ts, src/metrics.ts, src/stats.ts). */
export interface ObservabilityConfig {
  /** pino's level for the request logs and every other line of the app (`silent`: none). @default 'info' */
  logLevel: LogLevel
  /**
   * The bearer token GET /metrics asks for (`Authorization: Bearer <token>`, compared in constant time).
   * @default undefined: no /metrics on the app's port (404), only on `metricsPort` if that is set
   */
  metricsToken: string | undefined
  /**
   * A port of its own for GET /metrics, bound to HOST like the app (0: any free port). The token is
   * asked there too when `metricsToken` is set.
   * @default undefined: no metrics port
   */
  metricsPort: number | undefined
}

/** Background jobs (src/jobs/): where the queue lives, how jobs are retried, where mail goes. */
export interface JobsConfig {
  /** The queue's own Redis (BullMQ wants `maxmemory-policy noeviction`); undefined: the app's Redis or Cluster. */
  queueRedisUrl: string | undefined
  /** Mail goes through this SMTP server (`smtp://` or `smtps://`); undefined: appended to `mailLog`. */
  smtpUrl: string | undefined
  /** The file mail is appended to as JSON lines when there is no `smtpUrl`. @default sample-app/mail.log */
  mailLog: string
  /** Whether the server process runs a job worker too (the quickstart); the worker script always does. @default true */
  runWorker: boolean
  /** Jobs one worker process runs at a time. @default 5 */
  workerConcurrency: number
  /** Attempts of a job before it fails for good (kept in the failed set for inspection). @default 5 */
  attempts: number
  /** The first retry's delay (ms); each next one doubles it (exponential backoff). @default 2000 */
  backoffMs: number
  /** How long a worker's lock on the job it runs lasts (ms; renewed at half of it while the worker lives). @default 30000 */
  lockMs: number
  /** How often workers look for jobs whose worker died (lock expired) and put them back to wait (ms). @default 30000 */
  stalledIntervalMs: number
}

/** The transactional outbox's relay (src/outbox.ts). */
export interface OutboxConfig {
  /** Whether this instance runs a relay (any number of instances may: they claim different rows). @default true */
  relay: boolean
  /** How often (ms) the relay looks for rows it was not notified of (LISTEN down, rows a dead relay left). @default 5000 */
  pollMs: number
  /** Rows claimed, relayed and deleted per transaction. @default 100 */
  batchSize: number
  /** The longest wait (ms) between two tries while relaying fails (it starts at 100 ms and doubles). @default 30000 */
  retryMaxMs: number
}

/** The app's settings, read from environment variables (each has a default that works on a development machine). */
export interface Config {
  production: boolean
  host: string
  port: number
  databaseUrl: string
  redisUrl: string
  /** Nodes (`host:port`) of the Redis Cluster to run on, instead of the single Redis at `redisUrl` (empty: none). */
  redisClusterNodes: string[]
  /** Prefix of every Redis key and channel of the app. */
  redisPrefix: string
  /** Cookie signing secrets: the first signs, all verify (rotation). */
  sessionSecrets: string[]
  /** Express's `trust proxy`: false, a hop count, trusted addresses/subnets, or true (every hop; warned about). */
  trustProxy: TrustProxy
  /** Requests per minute per client IP, on every route. */
  apiRateLimit: number
  /** Failed sign-ins per 15 minutes from one client IP, all emails together; over it the IP is refused for 15 minutes. */
  loginFailuresPerIp: number
  /** Failed sign-ins per 15 minutes for one email from one client IP; over it that pair is refused for 15 minutes. */
  loginFailuresPerAccountAndIp: number
  /** Failed sign-ins per 15 minutes for one email from anywhere; over it every attempt on it waits `loginSlowdownMs`. */
  loginFailuresPerAccount: number
  /** The wait (ms) before the password is checked once an email is over `loginFailuresPerAccount` (0: none). */
  loginSlowdownMs: number
  /** Sign-ups (POST /users, every attempt) per hour from one client IP; over it 429. */
  signupRateLimit: number
  /** Open GET /events streams per client IP on one instance; over it 429. */
  sseMaxPerIp: number
  /** Open GET /events streams on one instance, all clients together; over it 503. */
  sseMaxTotal: number
  /**
   * User events kept in Redis (the notifier's fan-out stream, trimmed to about this many): a
   * /events client that reconnects with a Last-Event-ID at most this many events old gets
   * exactly what it missed; an older one gets `resync`.
   */
  eventsMaxLength: number
  /** Background jobs: QUEUE_REDIS_URL, SMTP_URL, MAIL_LOG, RUN_WORKER, WORKER_CONCURRENCY, JOB_* */
  jobs: JobsConfig
  /** The outbox relay: OUTBOX_RELAY, OUTBOX_POLL_MS, OUTBOX_BATCH_SIZE, OUTBOX_RETRY_MAX_MS */
  outbox: OutboxConfig
  /** Logs and metrics: LOG_LEVEL, METRICS_TOKEN, METRICS_PORT */
  observability: ObservabilityConfig
  /**
   * The kit's `localCache` option of GET /users/:id and of the session check's cached() read
   * (one local cache per Redis client: both get this same value): fresh entries served from this
   * instance's memory with no Redis command, dropped on every instance when they change in Redis.
   * `false` with LOCAL_CACHE=false (or 0); `fenceMs` (LOCAL_CACHE_FENCE_MS) is the longest another
   * instance may serve a copy after its change in Redis.
   * @default { fenceMs: 20 }
   */
  localCache: false | { fenceMs: number }
}

/** Thrown for invalid settings; its message lists every problem, one per line. */
export class ConfigError extends Error {
  override name = 'ConfigError'
}

/** Reads and validates the configuration; throws a {@link ConfigError} naming each invalid variable. */
export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  const parsed = environment.safeParse(env)
  if (!parsed.success) {
    const problems = parsed.error.issues.map((issue) => `  - ${issue.path.join('.')}: ${issue.message}`)
    throw new ConfigError(`Invalid configuration:\n${problems.join('\n')}`)
  }
  const values = parsed.data
  const production = values.NODE_ENV === 'production'
  const secrets = (values.SESSION_SECRETS ?? '').split(',').filter((secret) => secret.length > 0)
  if (secrets.length === 0 && production) {
    throw new ConfigError('Invalid configuration:\n  - SESSION_SECRETS: required when NODE_ENV=production')
  }
  if (secrets.some((secret) => secret.length < 32)) {
    throw new ConfigError(
      'Invalid configuration:\n  - SESSION_SECRETS: each secret (comma-separated) must be at least 32 characters',
    )
  }
  return {
    production,
    host: values.HOST,
    port: values.PORT,
    databaseUrl: values.DATABASE_URL,
    redisUrl: values.REDIS_URL,
    redisClusterNodes: values.REDIS_CLUSTER_NODES,
    redisPrefix: values.REDIS_PREFIX,
    sessionSecrets: secrets.length > 0 ? secrets : [DEVELOPMENT_SECRET],
    trustProxy: values.TRUST_PROXY,
    apiRateLimit: values.API_RATE_LIMIT,
    loginFailuresPerIp: values.LOGIN_FAILURES_PER_IP,
    loginFailuresPerAccountAndIp: values.LOGIN_FAILURES_PER_ACCOUNT_AND_IP,
    loginFailuresPerAccount: values.LOGIN_FAILURES_PER_ACCOUNT,
    loginSlowdownMs: values.LOGIN_SLOWDOWN_MS,
    signupRateLimit: values.SIGNUP_RATE_LIMIT,
    sseMaxPerIp: values.SSE_MAX_PER_IP,
    sseMaxTotal: values.SSE_MAX_TOTAL,
    eventsMaxLength: values.EVENTS_MAX_LENGTH,
    jobs: {
      queueRedisUrl: values.QUEUE_REDIS_URL,
      smtpUrl: values.SMTP_URL,
      mailLog: path.resolve(values.MAIL_LOG),
      runWorker: values.RUN_WORKER === 'true',
      workerConcurrency: values.WORKER_CONCURRENCY,
      attempts: values.JOB_ATTEMPTS,
      backoffMs: values.JOB_BACKOFF_MS,
      lockMs: values.JOB_LOCK_MS,
      stalledIntervalMs: values.JOB_STALLED_INTERVAL_MS,
    },
    outbox: {
      relay: values.OUTBOX_RELAY === 'true',
      pollMs: values.OUTBOX_POLL_MS,
      batchSize: values.OUTBOX_BATCH_SIZE,
      retryMaxMs: values.OUTBOX_RETRY_MAX_MS,
    },
    observability: {
      logLevel: values.LOG_LEVEL,
      metricsToken: values.METRICS_TOKEN,
      metricsPort: values.METRICS_PORT,
    },
    localCache:
      values.LOCAL_CACHE === 'true' || values.LOCAL_CACHE === '1' ? { fenceMs: values.LOCAL_CACHE_FENCE_MS } : false,
  }
}

/** Whether the configuration uses the built-in development secret (the server warns about it). */
export function usesDevelopmentSecret(config: Config): boolean {
  return config.sessionSecrets[0] === DEVELOPMENT_SECRET
}

/** For a process's entry point: the configuration, or each problem on stderr and exit code 1. */
export function loadConfigOrExit(env: NodeJS.ProcessEnv = process.env): Config {
  try {
    return loadConfig(env)
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error
    console.error(error.message)
    process.exit(1)
  }
}
