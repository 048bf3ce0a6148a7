import { expect } from 'chai'
import { type Decision, LocalLimiter, type Window, waitOf } from '../../../src/rate-limit/local.js'
import type { Algorithm } from '../../../src/rate-limit/scripts.js'
import { at } from '../../helpers/frozen-clock.js'

/*
 * The in-process limiter of `onRedisError: 'local'`: the same four algorithms as the decision
 * scripts. It reads Date.now() itself, so each decision runs at a moment the test chooses (at()).
 */

/** A moment on a whole second, so that sliding-window buckets start where the test says. */
const T0 = 1_700_000_000_000

/** A limiter of one window per client; `decide(t)` decides a request of `cost` at T0 + t. */
function limiter(algorithm: Algorithm, window: Window, options: { burst?: number; blockMs?: number } = {}) {
  const local = new LocalLimiter(algorithm, 1_000)
  const decide = (t: number, cost = 1, key = 'client'): Decision =>
    at(T0 + t, () => local.decide([key], `${key}:block`, [window], cost, options.burst, options.blockMs ?? 0))
  return { local, decide }
}

/** What the test reads of a decision: admitted, and its one window's used, remaining, resetMs. */
const summary = ({ allowed, windows: [window] }: Decision) => ({
  allowed,
  used: window!.used,
  remaining: window!.remaining,
  resetMs: window!.resetMs,
})

describe('LocalLimiter: the decision scripts’ algorithms in memory', () => {
  describe('fixed-window', () => {
    const window = { limit: 3, windowMs: 1_000 }

    it('admits `limit` per window, counted from the first request; refuses the rest until it ends', () => {
      const { decide } = limiter('fixed-window', window)
      expect(summary(decide(0))).to.deep.equal({ allowed: true, used: 1, remaining: 2, resetMs: 1_000 })
      expect(summary(decide(100))).to.deep.equal({ allowed: true, used: 2, remaining: 1, resetMs: 900 })
      expect(summary(decide(200))).to.deep.equal({ allowed: true, used: 3, remaining: 0, resetMs: 800 })
      expect(summary(decide(300))).to.deep.equal({ allowed: false, used: 3, remaining: 0, resetMs: 700 })
      expect(summary(decide(999))).to.include({ allowed: false, resetMs: 1 })
      expect(summary(decide(1_000))).to.deep.equal({ allowed: true, used: 1, remaining: 2, resetMs: 1_000 })
    })

    it('cost: a request counts its cost; cost 0 always passes and counts nothing; over the limit never fits', () => {
      const { decide } = limiter('fixed-window', window)
      expect(summary(decide(0, 2))).to.include({ allowed: true, used: 2 })
      expect(summary(decide(1, 2))).to.include({ allowed: false, used: 2 })
      expect(summary(decide(2, 1))).to.include({ allowed: true, used: 3 })
      expect(summary(decide(3, 0))).to.include({ allowed: true, used: 3, remaining: 0 })
      const fresh = limiter('fixed-window', window)
      expect(summary(fresh.decide(0, 4))).to.deep.equal({ allowed: false, used: 0, remaining: 3, resetMs: 1_000 })
    })

    it('a refund gives the request back to the window that counted it, never to a later one', () => {
      const { local, decide } = limiter('fixed-window', window)
      const first = decide(0)
      decide(1)
      at(T0 + 2, () => local.refund(['client'], [window], 1, first))
      expect(summary(decide(3))).to.include({ used: 2 })
      // a new window: the old request's refund does not touch it
      const later = decide(1_500)
      expect(later.windows[0]!.used).to.equal(1)
      at(T0 + 1_501, () => local.refund(['client'], [window], 1, first))
      expect(summary(decide(1_502))).to.include({ used: 2 })
    })
  })

  describe('sliding-window', () => {
    const window = { limit: 10, windowMs: 1_000 }

    it('the previous bucket weighs what is left of it in the window', () => {
      const { decide } = limiter('sliding-window', window)
      for (let i = 0; i < 10; i++) expect(decide(i * 10).allowed, `request ${i}`).to.equal(true)
      expect(summary(decide(500))).to.include({ allowed: false, used: 10, remaining: 0 })
      // halfway into the next bucket, the previous 10 weigh 5
      expect(summary(decide(1_500))).to.deep.equal({ allowed: true, used: 6, remaining: 4, resetMs: 500 })
      for (let i = 0; i < 4; i++) expect(decide(1_500).allowed).to.equal(true)
      const refused = decide(1_500)
      expect(refused.allowed).to.equal(false)
      // it fits once the previous bucket weighs 4: at 1,600 ms
      expect(refused.windows[0]!.resetMs).to.equal(100)
      expect(decide(1_599).allowed).to.equal(false)
      expect(decide(1_600).allowed).to.equal(true)
    })

    it('a bucket two windows old weighs nothing', () => {
      const { decide } = limiter('sliding-window', window)
      for (let i = 0; i < 10; i++) decide(0)
      expect(summary(decide(2_000))).to.deep.equal({ allowed: true, used: 1, remaining: 9, resetMs: 1_000 })
    })

    it('a request over what the current bucket can take waits into the next window', () => {
      const { decide } = limiter('sliding-window', window)
      for (let i = 0; i < 8; i++) decide(100)
      const refused = decide(200, 5)
      expect(refused.allowed).to.equal(false)
      // 800 ms to the end of this bucket, then until the 8 weigh at most 5: 3/8 of the next
      expect(refused.windows[0]!.resetMs).to.equal(800 + 375)
      expect(decide(1_374, 5).allowed).to.equal(false)
      expect(decide(1_375, 5).allowed).to.equal(true)
    })

    it('a refund goes to the bucket that counted the request, current or previous', () => {
      const { local, decide } = limiter('sliding-window', window)
      const early = decide(0)
      for (let i = 0; i < 9; i++) decide(1)
      // next bucket: the early request is in the previous one
      at(T0 + 1_000, () => local.refund(['client'], [window], 1, early))
      expect(summary(decide(1_000))).to.include({ allowed: true, used: 10 })
    })
  })

  describe('sliding-log', () => {
    const window = { limit: 3, windowMs: 1_000 }

    it('the exact count of the last windowMs; a refused request waits for the oldest to leave', () => {
      const { decide } = limiter('sliding-log', window)
      decide(0)
      decide(100)
      expect(summary(decide(200))).to.deep.equal({ allowed: true, used: 3, remaining: 0, resetMs: 1_000 - 200 })
      expect(summary(decide(300))).to.deep.equal({ allowed: false, used: 3, remaining: 0, resetMs: 700 })
      expect(decide(999).allowed).to.equal(false)
      expect(summary(decide(1_000))).to.include({ allowed: true, used: 3 })
      // a cost of 2 needs the two oldest gone: the one of 100 ms and the one of 200 ms
      expect(summary(decide(1_050, 2))).to.include({ allowed: false, resetMs: 150 })
    })

    it('a refund takes back exactly that request', () => {
      const { local, decide } = limiter('sliding-log', window)
      decide(0)
      const second = decide(10)
      decide(20)
      at(T0 + 30, () => local.refund(['client'], [window], 1, second))
      expect(summary(decide(40))).to.include({ allowed: true, used: 3 })
      expect(decide(50).allowed).to.equal(false)
    })
  })

  describe('token-bucket (GCRA)', () => {
    const window = { limit: 10, windowMs: 1_000 }

    it('a full bucket takes `limit` back to back, then one per interval', () => {
      const { decide } = limiter('token-bucket', window)
      for (let i = 0; i < 10; i++) expect(decide(0).allowed, `request ${i}`).to.equal(true)
      const refused = decide(0)
      expect(summary(refused)).to.include({ allowed: false, remaining: 0, resetMs: 100 })
      expect(decide(99).allowed).to.equal(false)
      expect(decide(100).allowed).to.equal(true)
      expect(decide(150).allowed).to.equal(false)
    })

    it('burst bounds what passes back to back, the rate stays limit per window', () => {
      const { decide } = limiter('token-bucket', window, { burst: 2 })
      expect(summary(decide(0))).to.include({ allowed: true, remaining: 1 })
      expect(summary(decide(0))).to.include({ allowed: true, remaining: 0 })
      expect(summary(decide(0))).to.include({ allowed: false, resetMs: 100 })
      expect(decide(100).allowed).to.equal(true)
    })

    it('a refund puts the tokens back', () => {
      const { local, decide } = limiter('token-bucket', window, { burst: 1 })
      const taken = decide(0)
      expect(decide(1).allowed).to.equal(false)
      at(T0 + 2, () => local.refund(['client'], [window], 1, taken))
      expect(decide(3).allowed).to.equal(true)
    })
  })

  describe('every algorithm', () => {
    const algorithms: Algorithm[] = ['fixed-window', 'sliding-window', 'sliding-log', 'token-bucket']

    for (const algorithm of algorithms) {
      it(`${algorithm}: blockDuration blocks from the first refusal, whatever the window says, counting nothing`, () => {
        const { decide } = limiter(algorithm, { limit: 1, windowMs: 1_000 }, { blockMs: 5_000 })
        expect(decide(0).allowed).to.equal(true)
        const refused = decide(10)
        expect(refused).to.include({ allowed: false, blockMs: 5_000 })
        expect(waitOf(refused)).to.equal(5_000)
        const later = decide(3_010)
        expect(later).to.include({ allowed: false, blockMs: 2_000 })
        expect(decide(5_010).allowed).to.equal(true)
      })

      it(`${algorithm}: clients are counted apart; delete() and clear() forget`, () => {
        const { local, decide } = limiter(algorithm, { limit: 1, windowMs: 60_000 })
        expect(decide(0, 1, 'a').allowed).to.equal(true)
        expect(decide(0, 1, 'b').allowed).to.equal(true)
        expect(decide(1, 1, 'a').allowed).to.equal(false)
        local.delete(['a', 'a:block'])
        expect(decide(2, 1, 'a').allowed).to.equal(true)
        expect(decide(2, 1, 'b').allowed).to.equal(false)
        local.clear()
        expect(decide(3, 1, 'b').allowed).to.equal(true)
      })
    }

    it('several windows: admitted only if it fits in all, then counted in all; refused, counted in none', () => {
      const local = new LocalLimiter('fixed-window', 1_000)
      const windows = [
        { limit: 2, windowMs: 1_000 },
        { limit: 3, windowMs: 60_000 },
      ]
      const decide = (t: number) =>
        at(T0 + t, () => local.decide(['c:1s', 'c:1m'], 'c:block', windows, 1, undefined, 0))
      expect(decide(0).allowed).to.equal(true)
      expect(decide(1).allowed).to.equal(true)
      const refused = decide(2)
      expect(refused.allowed).to.equal(false)
      expect(refused.windows.map((window) => [window.used, window.fits])).to.deep.equal([
        [2, false],
        [2, true],
      ])
      expect(waitOf(refused)).to.equal(998)
      const next = decide(1_000)
      expect(next.allowed).to.equal(true)
      expect(next.windows.map((window) => window.used)).to.deep.equal([1, 3])
      expect(decide(1_001).windows.map((window) => window.fits)).to.deep.equal([true, false])
    })

    it('keeps at most maxKeys clients, the least recently used going first', () => {
      const local = new LocalLimiter('fixed-window', 2)
      const window = { limit: 1, windowMs: 60_000 }
      const decide = (key: string) => at(T0, () => local.decide([key], `${key}:block`, [window], 1, undefined, 0))
      decide('a')
      decide('b')
      expect(decide('a').allowed, 'a is still counted, and now the most recent').to.equal(false)
      decide('c')
      expect(decide('b').allowed, 'b was the least recently used: forgotten').to.equal(true)
      expect(decide('a').allowed, 'a was kept').to.equal(true)
    })
  })

  it('waitOf: the block, or the longest wait of the windows that refuse', () => {
    const window = (fits: boolean, resetMs: number) => ({ used: 0, remaining: 0, resetMs, token: '', fits })
    expect(waitOf({ allowed: true, blockMs: 0, windows: [window(true, 500)] })).to.equal(0)
    expect(waitOf({ allowed: false, blockMs: 0, windows: [window(false, 300), window(true, 900)] })).to.equal(300)
    expect(waitOf({ allowed: false, blockMs: 0, windows: [window(false, 300), window(false, 700)] })).to.equal(700)
    expect(waitOf({ allowed: false, blockMs: 2_000, windows: [window(false, 300)] })).to.equal(2_000)
  })
})
