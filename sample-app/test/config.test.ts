import { expect } from 'chai'
import { ConfigError, loadConfig, usesDevelopmentSecret } from '../src/config.js'

const secret = 's'.repeat(32)

describe('loadConfig(env)', () => {
  it('has working defaults for development', () => {
    const config = loadConfig({})
    expect(config).to.include({
      production: false,
      host: '127.0.0.1',
      port: 3000,
      redisUrl: 'redis://127.0.0.1:6379',
      redisPrefix: 'sample:',
      trustProxy: false,
      apiRateLimit: 600,
      loginFailuresPerIp: 20,
      loginFailuresPerAccountAndIp: 5,
      loginFailuresPerAccount: 50,
      loginSlowdownMs: 1000,
      signupRateLimit: 10,
      sseMaxPerIp: 10,
      sseMaxTotal: 1000,
    })
    expect(usesDevelopmentSecret(config)).to.equal(true)
  })

  it('reads every variable', () => {
    const config = loadConfig({
      NODE_ENV: 'production',
      HOST: '0.0.0.0',
      PORT: '0',
      DATABASE_URL: 'postgres://u@db:5432/app',
      REDIS_URL: 'rediss://cache:6380',
      REDIS_CLUSTER_NODES: '10.0.0.1:7000,10.0.0.2:7000',
      REDIS_PREFIX: 'app:',
      SESSION_SECRETS: `${secret}new,${secret}old`,
      TRUST_PROXY: '1',
      API_RATE_LIMIT: '10',
      LOGIN_FAILURES_PER_IP: '3',
      LOGIN_FAILURES_PER_ACCOUNT_AND_IP: '2',
      LOGIN_FAILURES_PER_ACCOUNT: '40',
      LOGIN_SLOWDOWN_MS: '0',
      SIGNUP_RATE_LIMIT: '5',
      SSE_MAX_PER_IP: '3',
      SSE_MAX_TOTAL: '50',
      QUEUE_REDIS_URL: 'redis://queue:6379',
      SMTP_URL: 'smtp://mail:1025',
      MAIL_LOG: '/var/log/app-mail.log',
      RUN_WORKER: 'false',
      WORKER_CONCURRENCY: '2',
      JOB_ATTEMPTS: '3',
      JOB_BACKOFF_MS: '500',
      JOB_LOCK_MS: '10000',
      JOB_STALLED_INTERVAL_MS: '5000',
      LOG_LEVEL: 'warn',
      METRICS_TOKEN: 'a-metrics-token-of-32-characters',
      METRICS_PORT: '9464',
      EVENTS_MAX_LENGTH: '5000',
      OUTBOX_RELAY: 'false',
      OUTBOX_POLL_MS: '250',
      OUTBOX_BATCH_SIZE: '20',
      OUTBOX_RETRY_MAX_MS: '1000',
      LOCAL_CACHE: '1',
      LOCAL_CACHE_FENCE_MS: '50',
    })
    expect(config).to.deep.equal({
      production: true,
      host: '0.0.0.0',
      port: 0,
      databaseUrl: 'postgres://u@db:5432/app',
      redisUrl: 'rediss://cache:6380',
      redisClusterNodes: ['10.0.0.1:7000', '10.0.0.2:7000'],
      redisPrefix: 'app:',
      sessionSecrets: [`${secret}new`, `${secret}old`],
      trustProxy: 1,
      apiRateLimit: 10,
      loginFailuresPerIp: 3,
      loginFailuresPerAccountAndIp: 2,
      loginFailuresPerAccount: 40,
      loginSlowdownMs: 0,
      signupRateLimit: 5,
      sseMaxPerIp: 3,
      sseMaxTotal: 50,
      jobs: {
        queueRedisUrl: 'redis://queue:6379',
        smtpUrl: 'smtp://mail:1025',
        mailLog: '/var/log/app-mail.log',
        runWorker: false,
        workerConcurrency: 2,
        attempts: 3,
        backoffMs: 500,
        lockMs: 10_000,
        stalledIntervalMs: 5_000,
      },
      observability: { logLevel: 'warn', metricsToken: 'a-metrics-token-of-32-characters', metricsPort: 9464 },
      eventsMaxLength: 5000,
      outbox: { relay: false, pollMs: 250, batchSize: 20, retryMaxMs: 1000 },
      localCache: { fenceMs: 50 },
    })
    expect(usesDevelopmentSecret(config)).to.equal(false)
  })

  for (const [variable, value] of [
    ['PORT', 'abc'],
    ['PORT', '-1'],
    ['PORT', '65536'],
    ['PORT', '3000.5'],
    ['PORT', ''],
    ['API_RATE_LIMIT', '0'],
    ['LOGIN_FAILURES_PER_IP', 'many'],
    ['LOGIN_FAILURES_PER_IP', '0'],
    ['LOGIN_FAILURES_PER_ACCOUNT_AND_IP', '1e3'],
    ['LOGIN_FAILURES_PER_ACCOUNT', '0'],
    ['LOGIN_SLOWDOWN_MS', '-1'],
    ['LOGIN_SLOWDOWN_MS', '60001'],
    ['SIGNUP_RATE_LIMIT', '0'],
    ['EVENTS_MAX_LENGTH', '50'],
    ['OUTBOX_RELAY', 'yes'],
    ['OUTBOX_POLL_MS', '0'],
    ['OUTBOX_BATCH_SIZE', '100000'],
    ['DATABASE_URL', 'mysql://localhost/app'],
    ['DATABASE_URL', 'not a url'],
    ['REDIS_URL', 'http://127.0.0.1:6379'],
    ['REDIS_CLUSTER_NODES', '127.0.0.1'],
    ['REDIS_CLUSTER_NODES', 'redis://127.0.0.1:7000'],
    ['REDIS_CLUSTER_NODES', '127.0.0.1:7000,'],
    ['REDIS_CLUSTER_NODES', '127.0.0.1:7000;127.0.0.1:7001'],
    ['REDIS_CLUSTER_NODES', '127.0.0.1:70000'],
    ['REDIS_CLUSTER_NODES', '::1:7000'],
    ['REDIS_PREFIX', 'has space:'],
    ['REDIS_PREFIX', '{tag}:'],
    ['TRUST_PROXY', 'yes'],
    ['TRUST_PROXY', ''],
    ['TRUST_PROXY', '101'],
    ['TRUST_PROXY', '1.5'],
    ['TRUST_PROXY', '-1'],
    ['TRUST_PROXY', '10.0.0.0/33'],
    ['TRUST_PROXY', '999.0.0.1'],
    ['TRUST_PROXY', 'loopback,'],
    ['TRUST_PROXY', 'proxy.example.com'],
    ['SSE_MAX_PER_IP', '0'],
    ['SSE_MAX_TOTAL', 'lots'],
    ['QUEUE_REDIS_URL', 'http://127.0.0.1:6379'],
    ['SMTP_URL', 'mail.example.com'],
    ['MAIL_LOG', ''],
    ['RUN_WORKER', 'yes'],
    ['WORKER_CONCURRENCY', '0'],
    ['JOB_ATTEMPTS', '0'],
    ['JOB_BACKOFF_MS', '-1'],
    ['JOB_LOCK_MS', '999'],
    ['JOB_STALLED_INTERVAL_MS', 'often'],
    ['LOG_LEVEL', 'verbose'],
    ['METRICS_TOKEN', 'too-short'],
    ['METRICS_TOKEN', 'has a space in it, 1234567890'],
    ['METRICS_PORT', '65536'],
    ['METRICS_PORT', 'metrics'],
    ['LOCAL_CACHE', 'yes'],
    ['LOCAL_CACHE_FENCE_MS', '3'],
    ['LOCAL_CACHE_FENCE_MS', '60001'],
    ['SESSION_SECRETS', 'short'],
    ['SESSION_SECRETS', `${secret},short`],
  ] as const) {
    it(`rejects ${variable}=${JSON.stringify(value)} with a ConfigError naming it`, () => {
      expect(() => loadConfig({ [variable]: value }))
        .to.throw(ConfigError)
        .with.property('message')
        .that.includes(variable)
    })
  }

  it("takes TRUST_PROXY in Express's trust proxy forms: false, a hop count, addresses and subnets, true", () => {
    for (const [value, expected] of [
      ['false', false],
      ['0', false],
      ['1', 1],
      ['2', 2],
      ['loopback', ['loopback']],
      ['10.0.0.0/8,127.0.0.1', ['10.0.0.0/8', '127.0.0.1']],
      [
        'loopback, uniquelocal, 192.168.1.10/32, fd00::/8, ::1',
        ['loopback', 'uniquelocal', '192.168.1.10/32', 'fd00::/8', '::1'],
      ],
      ['true', true],
    ] as const) {
      expect(loadConfig({ TRUST_PROXY: value }).trustProxy, value).to.deep.equal(expected)
    }
  })

  it('takes REDIS_CLUSTER_NODES as a comma-separated list of host:port; unset or empty: a single Redis', () => {
    expect(loadConfig({}).redisClusterNodes).to.deep.equal([])
    expect(loadConfig({ REDIS_CLUSTER_NODES: ' ' }).redisClusterNodes).to.deep.equal([])
    expect(loadConfig({ REDIS_CLUSTER_NODES: '127.0.0.1:7000' }).redisClusterNodes).to.deep.equal(['127.0.0.1:7000'])
    expect(
      loadConfig({ REDIS_CLUSTER_NODES: 'redis-1:6379, redis-2.internal:6380 ,[::1]:7000,[fd00::2]:7001' })
        .redisClusterNodes,
    ).to.deep.equal(['redis-1:6379', 'redis-2.internal:6380', '[::1]:7000', '[fd00::2]:7001'])
  })

  it('names the REDIS_CLUSTER_NODES entry that is not host:port', () => {
    expect(() => loadConfig({ REDIS_CLUSTER_NODES: '10.0.0.1:7000,10.0.0.2' }))
      .to.throw(ConfigError)
      .with.property('message')
      .that.matches(
        /REDIS_CLUSTER_NODES: REDIS_CLUSTER_NODES must be a comma-separated list of host:port .*"10\.0\.0\.2"/,
      )
  })

  it('turns the local cache on by default (fenceMs 20); LOCAL_CACHE=false or 0 turns it off', () => {
    expect(loadConfig({}).localCache).to.deep.equal({ fenceMs: 20 })
    expect(loadConfig({ LOCAL_CACHE: 'true' }).localCache).to.deep.equal({ fenceMs: 20 })
    expect(loadConfig({ LOCAL_CACHE: 'false', LOCAL_CACHE_FENCE_MS: '50' }).localCache).to.equal(false)
    expect(loadConfig({ LOCAL_CACHE: '0' }).localCache).to.equal(false)
  })

  it("runs jobs on the app's Redis, mail to sample-app/mail.log and a worker in the server by default", () => {
    expect(loadConfig({}).jobs).to.deep.include({
      queueRedisUrl: undefined,
      smtpUrl: undefined,
      runWorker: true,
      workerConcurrency: 5,
      attempts: 5,
      backoffMs: 2000,
      lockMs: 30_000,
      stalledIntervalMs: 30_000,
    })
    expect(loadConfig({}).jobs.mailLog).to.match(/sample-app\/mail\.log$/)
    expect(loadConfig({ QUEUE_REDIS_URL: '', SMTP_URL: '' }).jobs).to.include({
      queueRedisUrl: undefined,
      smtpUrl: undefined,
    })
  })

  it('lists every invalid variable at once', () => {
    expect(() => loadConfig({ PORT: 'abc', REDIS_URL: 'x', TRUST_PROXY: 'maybe' }))
      .to.throw(ConfigError)
      .that.satisfies((error: Error) =>
        ['PORT', 'REDIS_URL', 'TRUST_PROXY'].every((name) => error.message.includes(name)),
      )
  })

  it('requires SESSION_SECRETS in production', () => {
    expect(() => loadConfig({ NODE_ENV: 'production' }))
      .to.throw(ConfigError)
      .with.property('message')
      .that.includes('SESSION_SECRETS')
  })
})
