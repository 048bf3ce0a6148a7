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
      REDIS_PREFIX: 'app:',
      SESSION_SECRETS: `${secret}new,${secret}old`,
      TRUST_PROXY: '1',
      API_RATE_LIMIT: '10',
      LOGIN_FAILURES_PER_IP: '3',
      LOGIN_FAILURES_PER_ACCOUNT_AND_IP: '2',
      LOGIN_FAILURES_PER_ACCOUNT: '40',
      LOGIN_SLOWDOWN_MS: '0',
    })
    expect(config).to.deep.equal({
      production: true,
      host: '0.0.0.0',
      port: 0,
      databaseUrl: 'postgres://u@db:5432/app',
      redisUrl: 'rediss://cache:6380',
      redisPrefix: 'app:',
      sessionSecrets: [`${secret}new`, `${secret}old`],
      trustProxy: true,
      apiRateLimit: 10,
      loginFailuresPerIp: 3,
      loginFailuresPerAccountAndIp: 2,
      loginFailuresPerAccount: 40,
      loginSlowdownMs: 0,
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
    ['DATABASE_URL', 'mysql://localhost/app'],
    ['DATABASE_URL', 'not a url'],
    ['REDIS_URL', 'http://127.0.0.1:6379'],
    ['REDIS_PREFIX', 'has space:'],
    ['REDIS_PREFIX', '{tag}:'],
    ['TRUST_PROXY', 'yes'],
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
