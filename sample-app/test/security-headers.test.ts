import http from 'node:http'
import type { AddressInfo } from 'node:net'
import { expect } from 'chai'
import { startApp, type TestApp } from './helpers/app.js'

/** The app's one CSP, as helmet writes it (directives joined by ";"). */
const CSP =
  "default-src 'self';img-src 'self' data:;object-src 'none';base-uri 'none';frame-ancestors 'none';form-action 'self'"

/** The headers every response must carry (helmet, src/security-headers.ts). */
function expectSecurityHeaders(headers: http.IncomingHttpHeaders, what: string): void {
  expect(headers['x-content-type-options'], `${what}: X-Content-Type-Options`).to.equal('nosniff')
  expect(headers['content-security-policy'], `${what}: CSP`).to.equal(CSP)
  const directives = String(headers['content-security-policy'])
    .split(';')
    .map((directive) => directive.trim())
  expect(directives, `${what}: CSP directives`).to.include("frame-ancestors 'none'").and.include("object-src 'none'")
  expect(headers['x-frame-options'], `${what}: X-Frame-Options`).to.equal('DENY')
  expect(headers['referrer-policy'], `${what}: Referrer-Policy`).to.equal('no-referrer')
  expect(headers['cross-origin-opener-policy'], `${what}: COOP`).to.equal('same-origin')
  expect(headers['cross-origin-resource-policy'], `${what}: CORP`).to.equal('same-origin')
  expect(headers['strict-transport-security'], `${what}: HSTS`).to.match(/^max-age=\d+/)
  expect(headers['x-powered-by'], `${what}: X-Powered-By`).to.equal(undefined)
}

describe('security headers (helmet): one CSP, nosniff, no framing, on every response', () => {
  let app: TestApp
  before(async () => {
    app = await startApp({ API_RATE_LIMIT: '1000000' })
  })
  after(async () => {
    await app?.close()
  })

  it('JSON routes: successes, 4xx errors and the 404 carry them', async () => {
    for (const [method, path, status] of [
      ['get', '/healthz', 200],
      ['get', '/users', 200],
      ['get', '/users/abc', 400],
      ['get', '/me', 401],
      ['get', '/no-such-route', 404],
      ['post', '/login', 415],
    ] as const) {
      const res = await app.http()[method](path)
      expect(res.status, `${method} ${path}`).to.equal(status)
      expect(res.headers['content-type']).to.match(/^application\/json/)
      expectSecurityHeaders(res.headers, `${method.toUpperCase()} ${path}`)
    }
  })

  it('the page and its files carry the same CSP, nosniff and X-Frame-Options', async () => {
    for (const path of ['/', '/app.js', '/style.css']) {
      const res = await app.http().get(path)
      expect(res.status, path).to.equal(200)
      expectSecurityHeaders(res.headers, `GET ${path}`)
    }
  })

  it('the event stream (GET /events) carries them too', async () => {
    const { port } = app.server.address() as AddressInfo
    const headers = await new Promise<http.IncomingHttpHeaders>((resolve, reject) => {
      const req = http.get(`http://127.0.0.1:${port}/events`, { agent: false }, (res) => {
        expect(res.statusCode).to.equal(200)
        expect(res.headers['content-type']).to.match(/^text\/event-stream/)
        resolve(res.headers)
        req.destroy()
      })
      req.on('error', reject)
    })
    expectSecurityHeaders(headers, 'GET /events')
  })
})
