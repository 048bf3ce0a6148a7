import { expect } from 'chai'
import request from 'supertest'
import { ipKeyGenerator, type RateLimitOptions, rateLimit } from '../../src/index.js'
import { appWith } from '../helpers/app.js'
import { connectRedis, type RedisClient, uniquePrefix } from '../helpers/redis.js'

/*
 * Issue 2: the default keyGenerator is the client IP, IPv4-mapped IPv6 unwrapped to IPv4
 * and other IPv6 addresses grouped by their /56 network (`ipv6Subnet`). Clients are
 * simulated with X-Forwarded-For behind `trust proxy`.
 */
describe('rateLimit default keyGenerator (client IP)', () => {
  let client: RedisClient
  before(async () => {
    client = await connectRedis()
  })
  after(async () => {
    await client.close()
  })

  /** An app behind a trusted proxy, limiting each client (as the default key sees it) to one request. */
  function proxiedApp(options: Partial<RateLimitOptions> = {}) {
    const prefix = uniquePrefix('ip')
    const app = appWith(rateLimit({ client, prefix, limit: 1, windowMs: '1h', ...options }))
    app.set('trust proxy', true)
    return { app, prefix }
  }
  const from = (app: ReturnType<typeof proxiedApp>['app'], ip: string, path = '/') =>
    request(app).get(path).set('X-Forwarded-For', ip)

  it('limits two IPv4 clients separately', async () => {
    const { app } = proxiedApp()
    expect((await from(app, '203.0.113.1')).status).to.equal(200)
    expect((await from(app, '203.0.113.2')).status).to.equal(200)
    expect((await from(app, '203.0.113.1')).status).to.equal(429)
    expect((await from(app, '203.0.113.2')).status).to.equal(429)
  })

  it('an IPv4-mapped IPv6 address shares the limit of its IPv4 address', async () => {
    const { app, prefix } = proxiedApp()
    const mapped = await from(app, '::ffff:1.2.3.4', '/info')
    expect(mapped.status).to.equal(200)
    expect(mapped.body.key).to.equal('1.2.3.4')
    expect((await from(app, '1.2.3.4')).status).to.equal(429)
    expect(await client.exists(`${prefix}{1.2.3.4}:sw`)).to.equal(1)
  })

  it('two IPv6 addresses in one /56 share a limit; another /56 does not', async () => {
    const { app, prefix } = proxiedApp()
    const first = await from(app, '2001:db8:1:2ff::1', '/info')
    expect(first.status).to.equal(200)
    expect(first.body.key).to.equal('2001:db8:1:200::/56')
    expect((await from(app, '2001:db8:1:200:abcd::9')).status).to.equal(429)
    expect((await from(app, '2001:db8:1:300::1')).status).to.equal(200)
    expect(await client.exists(`${prefix}{2001:db8:1:200::/56}:sw`)).to.equal(1)
  })

  it('ipv6Subnet: 64 groups by /64', async () => {
    const { app } = proxiedApp({ ipv6Subnet: 64 })
    const first = await from(app, '2001:db8:1:2:aaaa::1', '/info')
    expect(first.body.key).to.equal('2001:db8:1:2::/64')
    expect((await from(app, '2001:db8:1:2:bbbb::1')).status).to.equal(429)
    expect((await from(app, '2001:db8:1:3::1')).status).to.equal(200)
  })

  it('ipv6Subnet: false limits each IPv6 address alone', async () => {
    const { app } = proxiedApp({ ipv6Subnet: false })
    const first = await from(app, '2001:0DB8:0000:0000:0000:0000:0000:0001', '/info')
    expect(first.body.key).to.equal('2001:db8::1')
    expect((await from(app, '2001:db8::2')).status).to.equal(200)
    expect((await from(app, '2001:db8::1')).status).to.equal(429)
  })

  it('without trust proxy, X-Forwarded-For is ignored: every request is the socket address', async () => {
    const app = appWith(rateLimit({ client, prefix: uniquePrefix('ip'), limit: 1, windowMs: '1h' }))
    expect((await request(app).get('/').set('X-Forwarded-For', '203.0.113.1')).status).to.equal(200)
    expect((await request(app).get('/').set('X-Forwarded-For', '203.0.113.2')).status).to.equal(429)
  })

  describe('ipKeyGenerator', () => {
    const cases: [string, number | false | undefined, string][] = [
      // ip, ipv6Subnet, key
      ['203.0.113.7', undefined, '203.0.113.7'],
      ['::ffff:203.0.113.7', undefined, '203.0.113.7'],
      ['::FFFF:cb00:7107', undefined, '203.0.113.7'],
      ['::ffff:203.0.113.7', false, '203.0.113.7'],
      ['2001:db8:1:2ff::1', undefined, '2001:db8:1:200::/56'],
      ['2001:0DB8:0001:02FF:0000:0000:0000:0001', 56, '2001:db8:1:200::/56'],
      ['2001:db8:1:2:3:4:5:6', 64, '2001:db8:1:2::/64'],
      ['2001:db8:abcd:12::', 48, '2001:db8:abcd::/48'],
      ['2001:db8:1:2ff::', 60, '2001:db8:1:2f0::/60'],
      ['2001:db8::1', 128, '2001:db8::1/128'],
      ['::1', undefined, '::/56'],
      ['2001:0db8:0000:0000:0000:0000:0000:0001', false, '2001:db8::1'],
      ['2001:db8:0:0:1:0:0:1', false, '2001:db8::1:0:0:1'],
      ['2001:db8:0:1:1:1:1:1', false, '2001:db8:0:1:1:1:1:1'],
      ['fe80::1%eth0', false, 'fe80::1'],
    ]
    for (const [ip, subnet, key] of cases) {
      it(`${ip}${subnet === undefined ? '' : ` (ipv6Subnet ${subnet})`} -> ${key}`, () => {
        expect(subnet === undefined ? ipKeyGenerator(ip) : ipKeyGenerator(ip, subnet)).to.equal(key)
      })
    }
  })
})
