import { createHash } from 'node:crypto'
import { IncomingMessage, ServerResponse } from 'node:http'
import { Socket } from 'node:net'
import { expect } from 'chai'
import express, { type Response } from 'express'
import {
  defaultPolicyName,
  type HeaderValues,
  setDraft6Headers,
  setDraft7Headers,
  setDraft8Headers,
  setLegacyHeaders,
  setRetryAfterHeader,
} from '../../../src/rate-limit/headers.js'

/** An Express response on a socket that never connects: headers are set, nothing is sent. */
function response(): Response {
  const res = new ServerResponse(new IncomingMessage(new Socket()))
  Object.setPrototypeOf(res, express.response)
  return res as unknown as Response
}

/** express-rate-limit 8's partition key: the first 12 hex digits of the key's SHA-256, in base64. */
const partitionKey = (key: string) =>
  Buffer.from(createHash('sha256').update(key).digest('hex').slice(0, 12)).toString('base64')

const values: HeaderValues = { limit: 100, remaining: 42, resetMs: 12_345, windowMs: 60_000 }

describe('rate-limit headers (the names and formats of express-rate-limit 8)', () => {
  it('legacy: X-RateLimit-* with the reset as Unix seconds, and Date, from the `now` given', () => {
    const res = response()
    const now = Date.UTC(2024, 0, 15, 12, 0, 0, 500)
    setLegacyHeaders(res, values, now)
    expect(res.getHeaders()).to.deep.include({
      'x-ratelimit-limit': '100',
      'x-ratelimit-remaining': '42',
      'x-ratelimit-reset': String(Math.ceil((now + 12_345) / 1000)),
      date: 'Mon, 15 Jan 2024 12:00:00 GMT',
    })
  })

  it('draft-6: policy, limit, remaining, and a reset in whole seconds (rounded up; none at 0)', () => {
    const res = response()
    setDraft6Headers(res, values)
    expect(res.getHeaders()).to.deep.include({
      'ratelimit-policy': '100;w=60',
      'ratelimit-limit': '100',
      'ratelimit-remaining': '42',
      'ratelimit-reset': '13',
    })
    const done = response()
    setDraft6Headers(done, { ...values, resetMs: 0 })
    expect(done.hasHeader('ratelimit-reset')).to.equal(false)
  })

  it('draft-7: one RateLimit field; a window of a fraction of a second rounds up to 1', () => {
    const res = response()
    setDraft7Headers(res, { limit: 5, remaining: 0, resetMs: 1, windowMs: 500 })
    expect(res.getHeaders()).to.deep.include({
      'ratelimit-policy': '5;w=1',
      ratelimit: 'limit=5, remaining=0, reset=1',
    })
  })

  it('draft-8: a named policy whose partition key hides the client key', () => {
    const res = response()
    setDraft8Headers(res, values, '100-in-1min', '203.0.113.7')
    expect(res.getHeader('ratelimit-policy')).to.equal(
      `"100-in-1min"; q=100; w=60; pk=:${partitionKey('203.0.113.7')}:`,
    )
    expect(res.getHeader('ratelimit')).to.equal('"100-in-1min"; r=42; t=13')
    expect(String(res.getHeader('ratelimit-policy'))).not.to.include('203.0.113.7')
  })

  it('draft-8: each limiter on a route adds its own policy', () => {
    const res = response()
    setDraft8Headers(res, values, '100-in-1min', 'client')
    setDraft8Headers(res, { limit: 10, remaining: 9, resetMs: 900, windowMs: 1_000 }, '10-in-1sec', 'client')
    expect(res.getHeader('ratelimit')).to.deep.equal(['"100-in-1min"; r=42; t=13', '"10-in-1sec"; r=9; t=1'])
    expect(res.getHeader('ratelimit-policy')).to.have.length(2)
  })

  it('draft-8: the partition key is the same for a key seen before and after 10,000 others', () => {
    const first = response()
    setDraft8Headers(first, values, 'p', 'repeat')
    const others = response()
    for (let i = 0; i < 10_001; i++) {
      setDraft8Headers(others, values, 'p', `other-${i}`)
      others.removeHeader('ratelimit-policy')
      others.removeHeader('ratelimit')
    }
    const again = response()
    setDraft8Headers(again, values, 'p', 'repeat')
    expect(again.getHeader('ratelimit-policy')).to.equal(first.getHeader('ratelimit-policy'))
  })

  it('Retry-After: whole seconds, rounded up, never negative', () => {
    const seconds = (resetMs: number) => {
      const res = response()
      setRetryAfterHeader(res, resetMs)
      return res.getHeader('retry-after')
    }
    expect([seconds(1), seconds(1_000), seconds(1_001), seconds(0), seconds(-500)]).to.deep.equal([
      '1',
      '1',
      '2',
      '0',
      '0',
    ])
  })

  it('defaultPolicyName: express-rate-limit’s identifier', () => {
    const names: [number, string][] = [
      [500, '100-in-0.5sec'],
      [1_000, '100-in-1sec'],
      [59_999, '100-in-59.999sec'],
      [60_000, '100-in-1min'],
      [90_000, '100-in-1.5min'],
      [3_600_000, '100-in-1hr'],
      [5_400_000, '100-in-1.5hrs'],
      [7_200_000, '100-in-2hrs'],
      [86_400_000, '100-in-1day'],
      [129_600_000, '100-in-1.5days'],
      [172_800_000, '100-in-2days'],
    ]
    for (const [windowMs, name] of names) expect(defaultPolicyName(100, windowMs), String(windowMs)).to.equal(name)
  })
})
