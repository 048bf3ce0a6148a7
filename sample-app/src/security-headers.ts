import type { RequestHandler } from 'express'
import helmet from 'helmet'

/**
 * The app's one content security policy, on every response (the UI's page and files, and the
 * JSON routes): the UI (sample-app/public) loads its script, style and data (fetch,
 * EventSource) from this origin only, with no inline script or style; no plugins, no `<base>`,
 * no framing by any page, forms post here only.
 */
export const CSP_DIRECTIVES = {
  'default-src': ["'self'"],
  'img-src': ["'self'", 'data:'],
  'object-src': ["'none'"],
  'base-uri': ["'none'"],
  'frame-ancestors': ["'none'"],
  'form-action': ["'self'"],
}

/**
 * helmet's headers, app-wide: the CSP above (exactly, without helmet's default directives),
 * X-Frame-Options DENY (frame-ancestors 'none' for browsers without CSP), and helmet's defaults
 * for the rest: X-Content-Type-Options nosniff, Referrer-Policy no-referrer,
 * Strict-Transport-Security (browsers ignore it over plain HTTP), Cross-Origin-Opener-Policy and
 * Cross-Origin-Resource-Policy same-origin, Origin-Agent-Cluster, X-DNS-Prefetch-Control off,
 * X-Download-Options, X-Permitted-Cross-Domain-Policies none, X-XSS-Protection 0.
 */
export function securityHeaders(): RequestHandler {
  return helmet({
    contentSecurityPolicy: { useDefaults: false, directives: CSP_DIRECTIVES },
    xFrameOptions: { action: 'deny' },
  })
}
