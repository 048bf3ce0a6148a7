import { isIP } from 'node:net'

/**
 * `TRUST_PROXY` in the forms Express's `trust proxy` setting takes:
 * - `false` / `0`: trust nothing (the default): the client IP is the connecting address;
 * - a hop count `1`, `2`, ...: trust that many proxies in front of the app, so the client IP is the
 *   address the outermost of them added to `X-Forwarded-For` (the right-most entries are theirs);
 * - a comma-separated list of addresses, subnets (CIDR) and Express's names `loopback`,
 *   `linklocal`, `uniquelocal`: trust the proxies connecting from there;
 * - `true`: trust every hop. The client IP is then the left-most `X-Forwarded-For` entry, which any
 *   client can write: it makes every per-IP limit spoofable (the app warns at startup).
 */
export type TrustProxy = boolean | number | string[]

const NAMES = new Set(['loopback', 'linklocal', 'uniquelocal'])
const MAX_HOPS = 100

/** Whether `entry` is an address, a subnet (`address/prefix-length`) or one of Express's names. */
function isTrustedEntry(entry: string): boolean {
  if (NAMES.has(entry)) return true
  const [address = '', bits, ...rest] = entry.split('/')
  const version = isIP(address)
  if (version === 0 || rest.length > 0) return false
  if (bits === undefined) return true
  return /^\d{1,3}$/.test(bits) && Number(bits) <= (version === 4 ? 32 : 128)
}

/** Parses `TRUST_PROXY`; returns an error message (naming the accepted forms) when it is none of them. */
export function parseTrustProxy(text: string): TrustProxy | { error: string } {
  const value = text.trim()
  if (value === 'true') return true
  if (value === 'false' || value === '0') return false
  if (/^\d+$/.test(value)) {
    const hops = Number(value)
    if (hops <= MAX_HOPS) return hops
  }
  const entries = value.split(',').map((entry) => entry.trim())
  if (value !== '' && entries.every(isTrustedEntry)) return entries
  return {
    error:
      `TRUST_PROXY must be false, a hop count (1 to ${MAX_HOPS}), or a comma-separated list of addresses, ` +
      'subnets (CIDR) and loopback, linklocal, uniquelocal; true trusts every hop (spoofable)',
  }
}

/** The warning to log at startup for a setting that lets clients choose their IP, or undefined. */
export function trustProxyWarning(trustProxy: TrustProxy): string | undefined {
  if (trustProxy !== true) return undefined
  return (
    'TRUST_PROXY=true trusts every X-Forwarded-For hop: any client can pick the IP the rate limits count ' +
    '(per-IP login and API limits are bypassed). Set the number of proxies in front of the app (TRUST_PROXY=1) ' +
    'or their addresses (TRUST_PROXY=loopback or 10.0.0.0/8,...) instead.'
  )
}
