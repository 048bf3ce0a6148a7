import type { Request, RequestHandler } from 'express'
import { HttpError } from './errors.js'

/** Methods that change nothing (RFC 9110 9.2.1): never checked. */
const SAFE_METHODS = new Set(['GET', 'HEAD', 'OPTIONS'])

const rejected = (why: string) =>
  new HttpError(403, 'csrf_rejected', `Cross-site request refused: ${why}. Send it from this site's own pages.`)

/** Whether `origin` names this request's own site: the host (and port) the client sent the request to. */
function isOwnOrigin(req: Request, origin: string): boolean {
  let url: URL
  try {
    url = new URL(origin) // `Origin: null` (sandboxed frames, some redirects) is not a URL: refused
  } catch {
    return false
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') return false
  // the Host header, and X-Forwarded-Host when the proxy is trusted (req.host), read with the origin's scheme
  // so that a default port written out (example.com:443) compares equal
  return [req.get('host'), req.host].some((host) => {
    if (!host) return false
    try {
      return new URL(`${url.protocol}//${host}`).host === url.host
    } catch {
      return false
    }
  })
}

/**
 * Cross-site request forgery defence, beyond the session cookie's SameSite=Lax. A request with an
 * unsafe method (anything but GET, HEAD, OPTIONS) is refused with 403 `csrf_rejected` when:
 * - its `Sec-Fetch-Site` (set by the browser, pages cannot forge it) is anything but
 *   `same-origin` or `none` (a typed URL, a bookmark): `cross-site`, and `same-site` too, since a
 *   sibling subdomain is another origin that SameSite=Lax cookies do not keep out;
 * - without `Sec-Fetch-Site` (older browsers), its `Origin` is present and names another host than
 *   the one the request was sent to (`Host`, or `X-Forwarded-Host` when the proxy is trusted),
 *   `Origin: null` included.
 * A request with neither header is not a browser's cross-site request (curl, server to server): it
 * passes. Safe methods always pass: they must not change anything.
 */
export function csrfProtection(): RequestHandler {
  return (req, _res, next) => {
    if (SAFE_METHODS.has(req.method)) return next()
    const site = req.get('sec-fetch-site')
    if (site !== undefined) {
      const value = site.trim().toLowerCase()
      return next(
        value === 'same-origin' || value === 'none'
          ? undefined
          : rejected(`Sec-Fetch-Site is ${JSON.stringify(value.slice(0, 20))}`),
      )
    }
    const origin = req.get('origin')
    if (origin !== undefined && !isOwnOrigin(req, origin.trim())) {
      return next(rejected('its Origin is not this site'))
    }
    next()
  }
}
