/**
 * Runs `run` with `Date.now()` and `performance.now()` both reading `ms`, and puts the real
 * clocks back before returning: each call is one moment, chosen by the test. For pure logic
 * that still reads the clock itself instead of taking `now` as an argument (the rate limiter's
 * LocalLimiter and BlockCache, the notifier's envelope time). `run` must be synchronous:
 * nothing else runs while the clocks are frozen, so nothing else (mocha's timers, other
 * tests) ever sees them.
 */
export function at<T>(ms: number, run: () => T): T {
  const dateNow = Object.getOwnPropertyDescriptor(Date, 'now')!
  const performanceNow = Object.getOwnPropertyDescriptor(performance, 'now')
  Object.defineProperty(Date, 'now', { ...dateNow, value: () => ms })
  Object.defineProperty(performance, 'now', { value: () => ms, configurable: true, writable: true })
  try {
    const result = run()
    if (result instanceof Promise) throw new Error('at(): run must be synchronous')
    return result
  } finally {
    Object.defineProperty(Date, 'now', dateNow)
    // performance.now lives on its prototype: taking the own property away brings it back
    if (performanceNow) Object.defineProperty(performance, 'now', performanceNow)
    else delete (performance as { now?: unknown }).now
  }
}
