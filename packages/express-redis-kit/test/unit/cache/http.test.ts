import { createHash } from 'node:crypto'
import { expect } from 'chai'
import express, { type Request } from 'express'
import { decodeEntry, encodeMeta, parseTimes } from '../../../src/cache/entry.js'
import { type Freshness, freshnessOf } from '../../../src/cache/freshness.js'
import {
  cacheStatus,
  defaultKeyParts,
  type StoredHeader,
  strongEtag,
  ttlSeconds,
  unstorableReason,
  variantOf,
  varyOf,
} from '../../../src/cache/http.js'

/** A request as the cache reads it: what Express gives a handler, with `trust proxy` as set on a real app. */
function request(
  url: string,
  headers: Record<string, string | undefined>,
  { trustProxy = false, remoteAddress = '10.0.0.1', protocol = 'http' } = {},
): Request {
  const app = express()
  app.set('trust proxy', trustProxy)
  return { originalUrl: url, url, headers, protocol, socket: { remoteAddress }, app } as unknown as Request
}

const freshnessFor = (headers: StoredHeader[]): Freshness => freshnessOf(headers, 0, 0)

describe('cache HTTP rules', () => {
  describe('defaultKeyParts: protocol, host, path and query, exactly as sent', () => {
    it('the query from its `?`, not reordered or decoded; "" without one', () => {
      expect(defaultKeyParts(request('/a/b?y=2&x=1', { host: 'example.com' }))).to.deep.equal([
        'http',
        'example.com',
        '/a/b',
        '?y=2&x=1',
      ])
      expect(defaultKeyParts(request('/a/b', { host: 'example.com' }))).to.deep.equal([
        'http',
        'example.com',
        '/a/b',
        '',
      ])
      expect(defaultKeyParts(request('/a/b?', { host: 'example.com' }))[3]).to.equal('?')
      expect(defaultKeyParts(request('/a/%2e%2e/b?q=%20', { host: 'h' })).slice(2)).to.deep.equal([
        '/a/%2e%2e/b',
        '?q=%20',
      ])
    })

    it('X-Forwarded-Host only from a trusted proxy, its first value', () => {
      const headers = { host: 'internal:3000', 'x-forwarded-host': 'public.example, proxy.example' }
      expect(defaultKeyParts(request('/', headers))[1], 'trust proxy off').to.equal('internal:3000')
      expect(defaultKeyParts(request('/', headers, { trustProxy: true }))[1], 'a trusted proxy').to.equal(
        'public.example',
      )
      const loopbackOnly = { trustProxy: 'loopback' as unknown as boolean, remoteAddress: '203.0.113.9' }
      expect(defaultKeyParts(request('/', headers, loopbackOnly))[1], 'an untrusted peer').to.equal('internal:3000')
      expect(defaultKeyParts(request('/', { host: 'h', 'x-forwarded-host': '' }, { trustProxy: true }))[1]).to.equal(
        'h',
      )
    })

    it('no Host at all: ""', () => {
      expect(defaultKeyParts(request('/', {}))[1]).to.equal('')
    })
  })

  describe('Vary', () => {
    it('varyOf: lowercase names, deduplicated, sorted, from every Vary field', () => {
      expect(
        varyOf([
          ['vary', 'Accept-Encoding, Origin'],
          ['content-type', 'text/plain'],
          ['vary', ['accept-encoding', ' X-Custom ,,']],
        ]),
      ).to.equal('accept-encoding,origin,x-custom')
      expect(varyOf([])).to.equal('')
      expect(varyOf([['vary', '*']])).to.equal('*')
    })

    it('variantOf: a hash of the named request headers; "" for no Vary', () => {
      const a = request('/', { 'accept-encoding': 'gzip', origin: 'https://a.example' })
      const b = request('/', { 'accept-encoding': 'gzip', origin: 'https://b.example' })
      expect(variantOf(a, '')).to.equal('')
      expect(variantOf(a, 'accept-encoding')).to.equal(variantOf(b, 'accept-encoding'))
      expect(variantOf(a, 'accept-encoding,origin')).not.to.equal(variantOf(b, 'accept-encoding,origin'))
      expect(variantOf(a, 'accept-encoding,origin')).to.match(/^[A-Za-z0-9_-]{22}$/)
    })

    it('variantOf: values are length-prefixed, so shifting text between headers is another variant', () => {
      const one = request('/', { a: 'xy', b: '' })
      const two = request('/', { a: 'x', b: 'y' })
      expect(variantOf(one, 'a,b')).not.to.equal(variantOf(two, 'a,b'))
    })

    it('variantOf: an absent header and an empty one are the same variant', () => {
      expect(variantOf(request('/', {}), 'origin')).to.equal(variantOf(request('/', { origin: '' }), 'origin'))
    })
  })

  describe('unstorableReason (RFC 9111 section 3)', () => {
    const reason = (status: number, headers: StoredHeader[], statuses = [200]) =>
      unstorableReason(status, headers, statuses, freshnessFor(headers))

    it('a 200 with nothing against it may be stored', () => {
      expect(reason(200, [['cache-control', 'max-age=60']])).to.equal(undefined)
    })

    it('a status not listed, Set-Cookie, no-store, private, no-cache without a validator, Vary: *', () => {
      expect(reason(404, [])).to.equal('status')
      expect(reason(404, [], [200, 404])).to.equal(undefined)
      expect(reason(200, [['set-cookie', ['a=1']]])).to.equal('set-cookie')
      expect(reason(200, [['cache-control', 'no-store']])).to.equal('cache-control')
      expect(reason(200, [['cache-control', 'private']])).to.equal('cache-control')
      expect(reason(200, [['cache-control', 'no-cache']])).to.equal('cache-control')
      expect(reason(200, [['vary', 'Origin, *']])).to.equal('vary')
    })

    it('no-cache with a validator may be stored (it is revalidated on every use)', () => {
      expect(
        reason(200, [
          ['cache-control', 'no-cache'],
          ['etag', '"v1"'],
        ]),
      ).to.equal(undefined)
    })
  })

  it('strongEtag: a quoted SHA-256 of the body, the same for the same bytes', () => {
    const body = Buffer.from('hello')
    const expected = `"${createHash('sha256').update(body).digest('base64url').slice(0, 27)}"`
    expect(strongEtag(body)).to.equal(expected)
    expect(strongEtag(Buffer.from('hello'))).to.equal(expected)
    expect(strongEtag(Buffer.from('hellp'))).not.to.equal(expected)
  })

  it('cacheStatus (RFC 9211): hit or fwd=<outcome>, then its parameters', () => {
    expect(cacheStatus('hit', { ttl: 42 })).to.equal('express-redis-kit; hit; ttl=42')
    expect(cacheStatus('miss', { stored: true, detail: undefined })).to.equal('express-redis-kit; fwd=miss; stored')
    expect(cacheStatus('stale', { ttl: -3, detail: 'revalidating' })).to.equal(
      'express-redis-kit; fwd=stale; ttl=-3; detail=revalidating',
    )
    expect(cacheStatus('bypass')).to.equal('express-redis-kit; fwd=bypass')
  })

  it('ttlSeconds: whole seconds of freshness left, negative once stale', () => {
    expect(ttlSeconds(10_999, 0)).to.equal(10)
    expect(ttlSeconds(1_000, 1_000)).to.equal(0)
    expect(ttlSeconds(0, 1)).to.equal(-1)
    expect(ttlSeconds(0, 2_500)).to.equal(-3)
  })

  describe('a stored entry (entry.ts)', () => {
    const response = {
      status: 203,
      headers: [
        ['Content-Type', 'text/plain'],
        ['X-Multi', ['a', 'b']],
      ] as [string, string | string[]][],
      initialAge: 1_500,
      generatedEtag: true,
    }

    it('metadata and body round trip, byte for byte', () => {
      const body = Buffer.from([0, 255, 10, 13])
      const meta = encodeMeta(response)
      expect(JSON.parse(meta)).to.deep.equal({ s: 203, h: response.headers, a: 1_500, g: 1 })
      expect(decodeEntry(meta, body)).to.deep.equal({ ...response, body })
      expect(decodeEntry(Buffer.from(meta), body)).to.deep.equal({ ...response, body })
      expect(JSON.parse(encodeMeta({ ...response, generatedEtag: false }))).not.to.have.property('g')
    })

    it('corrupt or foreign metadata: undefined, never a throw', () => {
      for (const meta of ['', 'not json', 'null', '[]', '{"s":"200","h":[]}', '{"s":200.5,"h":[]}', '{"s":200}'])
        expect(decodeEntry(meta, Buffer.alloc(0)), meta).to.equal(undefined)
    })

    it('a negative or missing age reads as 0; only g:1 marks the cache’s own ETag', () => {
      expect(decodeEntry('{"s":200,"h":[],"a":-5,"g":true}', Buffer.alloc(0))).to.include({
        initialAge: 0,
        generatedEtag: false,
      })
    })

    it('parseTimes: four comma-separated numbers, or undefined', () => {
      expect(parseTimes('1,2,3,4')).to.deep.equal({
        storedAt: 1,
        freshUntil: 2,
        staleWhileRevalidateUntil: 3,
        staleIfErrorUntil: 4,
      })
      for (const text of ['', '1,2,3', '1,2,3,x', '1,2,3,Infinity', 'a,b,c,d'])
        expect(parseTimes(text), text).to.equal(undefined)
    })
  })
})
