import { expect } from 'chai'
import { BlockCache } from '../../../src/rate-limit/block-cache.js'
import type { Decision } from '../../../src/rate-limit/local.js'
import { at } from '../../helpers/frozen-clock.js'

/*
 * The clients Redis said are over their limit, answered here until they may pass. BlockCache
 * reads performance.now() itself: each call runs at a moment the test chooses (at()).
 */

/** A refusal: one window that does not fit for `resetMs`, and a block of `blockMs`. */
const refusal = (resetMs: number, blockMs = 0): Decision => ({
  allowed: false,
  blockMs,
  windows: [{ used: 10, remaining: 0, resetMs, token: '', fits: false }],
})

describe('BlockCache: refused clients answered without Redis until they may pass', () => {
  it('the refusal, its times counted down from when Redis decided', () => {
    const cache = new BlockCache(100)
    at(1_000, () => cache.set('client', 1, 10, refusal(500)))
    const later = at(1_200, () => cache.get('client', 1, 10))
    expect(later).to.deep.equal({
      allowed: false,
      blockMs: 0,
      windows: [{ used: 10, remaining: 0, resetMs: 300, token: '', fits: false }],
    })
    expect(at(1_499.5, () => cache.get('client', 1, 10))?.windows[0]?.resetMs, 'never below 1 ms').to.equal(1)
  })

  it('forgotten once the wait is over', () => {
    const cache = new BlockCache(100)
    at(1_000, () => cache.set('client', 1, 10, refusal(500)))
    expect(at(1_500, () => cache.get('client', 1, 10))).to.equal(undefined)
    expect(
      at(1_000, () => cache.get('client', 1, 10)),
      'gone, even at an earlier moment',
    ).to.equal(undefined)
  })

  it('a blockDuration: kept for the block, the longest wait', () => {
    const cache = new BlockCache(100)
    at(0, () => cache.set('client', 1, 10, refusal(500, 60_000)))
    const during = at(30_000, () => cache.get('client', 1, 10))
    expect(during?.blockMs).to.equal(30_000)
    expect(during?.windows[0]?.resetMs, "the window's own wait is over, shown as 1 ms").to.equal(1)
    expect(at(60_000, () => cache.get('client', 1, 10))).to.equal(undefined)
  })

  it('only for a request that would be refused as well: the same limit, no smaller cost', () => {
    const cache = new BlockCache(100)
    at(0, () => cache.set('client', 3, 10, refusal(500)))
    expect(at(1, () => cache.get('client', 3, 10))).not.to.equal(undefined)
    expect(
      at(1, () => cache.get('client', 5, 10)),
      'a larger cost',
    ).not.to.equal(undefined)
    expect(
      at(1, () => cache.get('client', 2, 10)),
      'a smaller cost may fit',
    ).to.equal(undefined)
    expect(
      at(1, () => cache.get('client', 3, 20)),
      'another limit',
    ).to.equal(undefined)
    expect(
      at(1, () => cache.get('other', 3, 10)),
      'another client',
    ).to.equal(undefined)
  })

  it('a decision that says nothing to wait for is not kept', () => {
    const cache = new BlockCache(100)
    const admitted: Decision = {
      allowed: true,
      blockMs: 0,
      windows: [{ used: 1, remaining: 9, resetMs: 500, token: '', fits: true }],
    }
    at(0, () => cache.set('a', 1, 10, admitted))
    at(0, () => cache.set('b', 1, 10, refusal(0)))
    expect(at(0, () => cache.get('a', 1, 10))).to.equal(undefined)
    expect(at(0, () => cache.get('b', 1, 10))).to.equal(undefined)
  })

  it('at most maxKeys clients, the least recently blocked going first; delete() forgets one', () => {
    const cache = new BlockCache(2)
    at(0, () => cache.set('a', 1, 10, refusal(1_000)))
    at(0, () => cache.set('b', 1, 10, refusal(1_000)))
    at(1, () => cache.set('a', 1, 10, refusal(1_000)))
    at(2, () => cache.set('c', 1, 10, refusal(1_000)))
    expect(
      at(3, () => cache.get('b', 1, 10)),
      'b was blocked least recently',
    ).to.equal(undefined)
    expect(at(3, () => cache.get('a', 1, 10))).not.to.equal(undefined)
    cache.delete('a')
    expect(at(3, () => cache.get('a', 1, 10))).to.equal(undefined)
    expect(at(3, () => cache.get('c', 1, 10))).not.to.equal(undefined)
  })
})
