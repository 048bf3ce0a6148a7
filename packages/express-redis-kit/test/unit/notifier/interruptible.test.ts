import { expect } from 'chai'
import { Interruptible, RETRY_MAX_MS, retryDelay } from '../../../src/notifier/interruptible.js'

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

describe('notifier: Interruptible, what stop() cuts short', () => {
  it('wait: the promise’s outcome, or `stopped` as soon as interrupt() is called', async () => {
    const waiting = new Interruptible()
    expect(await waiting.wait(Promise.resolve('read'))).to.equal('read')
    const pending = waiting.wait(new Promise(() => {}))
    waiting.interrupt()
    const error = await pending.catch((caught: unknown) => caught)
    expect(error).to.be.instanceOf(Error).and.have.property('message', 'stopped')
  })

  it('pause: resolves at once on interrupt(), long before its time', async () => {
    const waiting = new Interruptible()
    const paused = waiting.pause(60_000)
    waiting.interrupt()
    await paused
  })

  it('interrupt() with nothing waiting does nothing, and does not cut the next wait short', async () => {
    const waiting = new Interruptible()
    waiting.interrupt()
    expect(await waiting.wait(Promise.resolve(1))).to.equal(1)
  })

  it('retryDelay: 0 or fewer failures count as one; very many stay at 5 s', () => {
    for (const failures of [0, -3]) expect(retryDelay(failures)).to.be.within(50, 100)
    expect(retryDelay(1_000_000)).to.be.within(RETRY_MAX_MS / 2, RETRY_MAX_MS)
  })
})
