import { z } from 'zod'
import { parseClusterNodes } from './cluster-nodes.js'
import { parseTrustProxy, type TrustProxy } from './trust-proxy.js'

const DEVELOPMENT_SECRET = 'development-only-secret-change-me-in-production'

const integer = (name: string, fallback: number, min: number, max: number) =>
  z
    .string()
    .default(String(fallback))
    .transform((text, ctx) => {
      const value = Number(text)
      if (!/^\d+$/.test(text.trim()) || value < min || value > max) {
        ctx.addIssue({ code: 'custom', message: `${name} must be an integer from ${min} to ${max}` })
        return z.NEVER
      }
      return value
    })

const url = (name: string, protocols: string[], fallback: string) =>
  z
    .string()
    .default(fallback)
    .refine(
      (text) => {
        try {
          return protocols.includes(new URL(text).protocol)
        } catch {
          return false
        }
      },
      `${name} must be a URL starting with ${protocols.map((p) => `${p}//`).join(' or ')}`,
    )

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
})

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
  }
}

/** Whether the configuration uses the built-in development secret (the server warns about it). */
export function usesDevelopmentSecret(config: Config): boolean {
  return config.sessionSecrets[0] === DEVELOPMENT_SECRET
}
