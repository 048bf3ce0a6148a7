import { expect } from 'chai'
import { RETRY_MAX_MS, retryDelay } from '../../src/notifier/interruptible.js'

describe('notifier: the pause after failed reads (retryDelay)', () => {
  it('100 ms after the first failure, doubled after each further one, up to 5 s; the second half random', () => {
    for (let failures = 1; failures <= 40; failures++) {
      const ceiling = Math.min(RETRY_MAX_MS, 100 * 2 ** (failures - 1))
      for (let draw = 0; draw < 50; draw++) {
        const delay = retryDelay(failures)
        expect(delay, `after ${failures} failures`).to.be.within(ceiling / 2, ceiling)
      }
    }
    const draws = Array.from({ length: 50 }, () => retryDelay(10))
    expect(new Set(draws).size, 'jitter').to.be.greaterThan(40)
  })
})
