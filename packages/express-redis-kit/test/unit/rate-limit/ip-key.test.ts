import { expect } from 'chai'
import { ipKeyGenerator } from '../../../src/rate-limit/ip-key.js'

describe('ipKeyGenerator: the rate-limit key of a client address', () => {
  const address = '2001:db8:85a3:1234:5678:8a2e:370:7334'

  it('IPv4 as it is (a zone id dropped)', () => {
    expect(ipKeyGenerator('203.0.113.7')).to.equal('203.0.113.7')
    expect(ipKeyGenerator('203.0.113.7%eth0')).to.equal('203.0.113.7')
  })

  it('IPv4-mapped IPv6, dotted or in hex, any subnet: unwrapped to IPv4', () => {
    for (const mapped of ['::ffff:203.0.113.7', '::FFFF:203.0.113.7', '::ffff:cb00:7107', '0:0:0:0:0:ffff:cb00:7107'])
      for (const subnet of [56, 128, false] as const)
        expect(ipKeyGenerator(mapped, subnet), mapped).to.equal('203.0.113.7')
  })

  it('IPv6 grouped by /56 by default: every address a customer’s ISP hands out is one client', () => {
    expect(ipKeyGenerator(address)).to.equal('2001:db8:85a3:1200::/56')
    expect(ipKeyGenerator('2001:db8:85a3:12ff:ffff:ffff:ffff:ffff')).to.equal('2001:db8:85a3:1200::/56')
    expect(ipKeyGenerator('2001:db8:85a3:1300::1')).to.equal('2001:db8:85a3:1300::/56')
  })

  it('other prefix lengths, within a group and on its edges', () => {
    expect(ipKeyGenerator(address, 64)).to.equal('2001:db8:85a3:1234::/64')
    expect(ipKeyGenerator(address, 48)).to.equal('2001:db8:85a3::/48')
    expect(ipKeyGenerator(address, 55)).to.equal('2001:db8:85a3:1200::/55')
    expect(ipKeyGenerator('2001:db8:85a3:1334::', 55)).to.equal('2001:db8:85a3:1200::/55')
    expect(ipKeyGenerator(address, 1)).to.equal('::/1')
    expect(ipKeyGenerator('8001::', 1)).to.equal('8000::/1')
    expect(ipKeyGenerator(address, 128)).to.equal(`${address}/128`)
  })

  it('false: the full address, in canonical form (RFC 5952)', () => {
    expect(ipKeyGenerator(address, false)).to.equal(address)
    expect(ipKeyGenerator('2001:0DB8:0000:0000:0000:0000:0000:0001', false)).to.equal('2001:db8::1')
    // the longest run of zeros is compressed, the first of equal runs
    expect(ipKeyGenerator('2001:db8:0:0:1:0:0:1', false)).to.equal('2001:db8::1:0:0:1')
    expect(ipKeyGenerator('2001:0:0:1:0:0:0:1', false)).to.equal('2001:0:0:1::1')
  })

  it('every spelling of one address gives one key', () => {
    const spellings = [
      '2001:db8::1',
      '2001:DB8::1',
      '2001:0db8:0:0:0:0:0:1',
      '2001:db8:0000::0001',
      '2001:db8::0.0.0.1',
      '2001:db8::1%eth0',
    ]
    for (const spelling of spellings) expect(ipKeyGenerator(spelling, false), spelling).to.equal('2001:db8::1')
  })

  it('loopback, unspecified, link-local with a zone, an embedded IPv4 (not mapped)', () => {
    expect(ipKeyGenerator('::1')).to.equal('::/56')
    expect(ipKeyGenerator('::1', false)).to.equal('::1')
    expect(ipKeyGenerator('::')).to.equal('::/56')
    expect(ipKeyGenerator('fe80::1%eth0', 64)).to.equal('fe80::/64')
    expect(ipKeyGenerator('64:ff9b::203.0.113.7', 96)).to.equal('64:ff9b::/96')
    expect(ipKeyGenerator('::203.0.113.7', 128)).to.equal('::cb00:7107/128')
  })

  it('not an IP address: kept as it is (a unix socket path, a custom value)', () => {
    for (const value of ['not-an-ip', '1.2.3', '01.2.3.4', '2001:db8::1::2', '/run/app.sock', ''])
      expect(ipKeyGenerator(value), value).to.equal(value)
  })
})
