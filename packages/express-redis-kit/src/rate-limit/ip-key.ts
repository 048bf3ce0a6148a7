import { isIPv4, isIPv6 } from 'node:net'

/**
 * The rate-limit key for a client address: an IPv4 address as is (IPv4-mapped
 * IPv6 such as `::ffff:203.0.113.7` is unwrapped to `203.0.113.7`), an IPv6
 * address reduced to its network of `ipv6Subnet` bits in canonical form (e.g.
 * `2001:db8:1:200::/56`) so that a client cannot escape its limit by rotating
 * through the addresses its ISP gives it. `ipv6Subnet: false` keeps the full address.
 */
export function ipKeyGenerator(ip: string, ipv6Subnet: number | false = 56): string {
  const address = ip.includes('%') ? ip.slice(0, ip.indexOf('%')) : ip
  if (isIPv4(address)) return address
  if (!isIPv6(address)) return address
  const groups = expandIPv6(address)
  if (
    groups[0] === 0 &&
    groups[1] === 0 &&
    groups[2] === 0 &&
    groups[3] === 0 &&
    groups[4] === 0 &&
    groups[5] === 0xffff
  ) {
    return `${groups[6]! >> 8}.${groups[6]! & 0xff}.${groups[7]! >> 8}.${groups[7]! & 0xff}`
  }
  if (ipv6Subnet === false) return canonicalIPv6(groups)
  const masked = groups.map((group, index) => {
    const bitsInGroup = Math.min(16, Math.max(0, ipv6Subnet - index * 16))
    return bitsInGroup === 16 ? group : group & ((0xffff << (16 - bitsInGroup)) & 0xffff)
  })
  return `${canonicalIPv6(masked)}/${ipv6Subnet}`
}

/** Eight 16-bit groups of a valid IPv6 address (with `::` and a trailing dotted IPv4 expanded). */
function expandIPv6(address: string): number[] {
  let text = address.toLowerCase()
  const dotted = /(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(text)
  if (dotted) {
    const [a, b, c, d] = dotted.slice(1).map(Number) as [number, number, number, number]
    text = `${text.slice(0, dotted.index)}${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`
  }
  const [head = '', tail] = text.split('::')
  const headGroups = head ? head.split(':') : []
  const tailGroups = tail ? tail.split(':') : []
  const zeros = tail === undefined ? [] : Array(8 - headGroups.length - tailGroups.length).fill('0')
  return [...headGroups, ...zeros, ...tailGroups].map((group) => Number.parseInt(group, 16))
}

/** RFC 5952 text: lowercase, no leading zeros, the longest run of two or more zero groups as `::`. */
function canonicalIPv6(groups: number[]): string {
  const url = new URL(`http://[${groups.map((group) => group.toString(16)).join(':')}]/`)
  return url.hostname.slice(1, -1)
}
