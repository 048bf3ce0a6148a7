import { createHmac, timingSafeEqual } from 'node:crypto'
import type { Request } from 'express'

/** What a request's session cookie says, once its signature is checked. */
export interface VerifiedCookie {
  /** The value that was signed. */
  value: string
  /**
   * It was signed with the first secret (else it is re-signed on the next save); undefined
   * behind cookie-parser until {@link CookieCodec.signedWithCurrent} is asked (an HMAC).
   */
  current: boolean | undefined
  /** What the caller derived from the value (e.g. its hash), kept with the verified value while it is remembered. */
  derived?: unknown
}

/** The most verified cookie values remembered, so that a repeat cookie costs no HMAC. */
const VERIFIED_CACHE_SIZE = 10_000

/**
 * Signs and verifies the session cookie the way cookie-parser and express do
 * (`s:<value>.<HMAC-SHA256 in base64, unpadded>`), so that both can read each other's
 * cookies. With its own `secrets` it parses only its own cookie out of the `Cookie` header,
 * and remembers the values it verified (successes only: a forged cookie is checked every time
 * and never reaches Redis); without, it reads what cookie-parser verified
 * (`req.signedCookies`, signed with `req.secret`).
 */
export class CookieCodec {
  private readonly verified = new Map<string, VerifiedCookie>()

  constructor(
    private readonly name: string,
    /** The first signs, all verify; undefined: cookie-parser's. */
    private readonly secrets: string[] | undefined,
  ) {}

  /** Whether cookie-parser is needed and missing (its secret is what signs then). */
  missingCookieParser(req: Request): boolean {
    return (
      this.secrets === undefined &&
      (req.signedCookies === undefined || typeof (req as { secret?: unknown }).secret !== 'string')
    )
  }

  /** The verified value of the request's session cookie, or undefined (absent, unsigned, forged). */
  read(req: Request): VerifiedCookie | undefined {
    if (this.secrets === undefined) {
      const value = (req.signedCookies as Record<string, unknown>)[this.name]
      return typeof value === 'string' ? { value, current: undefined } : undefined
    }
    const raw = rawCookie(req, this.name)
    if (raw === undefined) return undefined
    const known = this.verified.get(raw)
    if (known) return known
    const found = this.verify(raw)
    if (found) {
      if (this.verified.size >= VERIFIED_CACHE_SIZE) this.verified.delete(this.verified.keys().next().value!)
      this.verified.set(raw, found)
    }
    return found
  }

  /** Whether the request's cookie was signed with the first secret (a retired one still verifies). */
  signedWithCurrent(req: Request, cookie: VerifiedCookie): boolean {
    if (cookie.current !== undefined) return cookie.current
    const secret = (req as { secret?: string }).secret!
    return rawCookie(req, this.name) === `s:${sign(cookie.value, secret)}`
  }

  /** The cookie value to send for `value` (for `res.cookie`), and whether express must sign it. */
  encode(value: string): { value: string; signed: boolean } {
    if (this.secrets === undefined) return { value, signed: true }
    return { value: `s:${sign(value, this.secrets[0]!)}`, signed: false }
  }

  private verify(raw: string): VerifiedCookie | undefined {
    if (!raw.startsWith('s:')) return undefined
    const signed = raw.slice(2)
    const dot = signed.lastIndexOf('.')
    if (dot <= 0) return undefined
    const value = signed.slice(0, dot)
    const mac = Buffer.from(signed.slice(dot + 1))
    for (const [index, secret] of this.secrets!.entries()) {
      const expected = Buffer.from(hmac(value, secret))
      if (expected.length === mac.length && timingSafeEqual(expected, mac)) return { value, current: index === 0 }
    }
    return undefined
  }
}

function hmac(value: string, secret: string): string {
  return createHmac('sha256', secret).update(value).digest('base64').replace(/=+$/, '')
}

function sign(value: string, secret: string): string {
  return `${value}.${hmac(value, secret)}`
}

/**
 * The first `name=` cookie of the request's `Cookie` header, percent-decoded (as the cookie
 * package does: the first occurrence wins, a value that cannot be decoded is kept as sent).
 */
function rawCookie(req: Request, name: string): string | undefined {
  const header = req.headers.cookie
  if (header === undefined) return undefined
  let start = 0
  while (start < header.length) {
    const equals = header.indexOf('=', start)
    if (equals === -1) return undefined
    let end = header.indexOf(';', start)
    if (end === -1) end = header.length
    else if (end < equals) {
      // A pair without '=' before this one: skip to the pair that holds the '='.
      start = header.lastIndexOf(';', equals - 1) + 1
      continue
    }
    if (header.slice(start, equals).trim() === name) {
      let value = header.slice(equals + 1, end).trim()
      if (value.startsWith('"') && value.endsWith('"') && value.length > 1) value = value.slice(1, -1)
      if (!value.includes('%')) return value
      try {
        return decodeURIComponent(value)
      } catch {
        return value
      }
    }
    start = end + 1
  }
  return undefined
}
