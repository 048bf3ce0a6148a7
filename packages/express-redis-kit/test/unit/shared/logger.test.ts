import { expect } from 'chai'
import { withCallback } from '../../../src/shared/callback.js'
import { throttledLogger, warning, warnOnce } from '../../../src/shared/logger.js'
import { recordingLogger, waitUntil } from '../../helpers/outage.js'

/*
 * throttledLogger reads no clock of ours: its windows are timers (setTimeout). The window's end
 * is tested with a short real window, waiting for the line it logs (time is the behaviour).
 */
describe('logging', () => {
  describe('throttledLogger', () => {
    const messages = (logger: ReturnType<typeof recordingLogger>) => logger.warnings.map(([message]) => message)

    it('the first of a kind at once, at the level asked, with its error only when there is one', () => {
      const logger = recordingLogger()
      const failure = new Error('down')
      throttledLogger(logger, 'error', 60_000)('cache: Redis unavailable', failure)
      throttledLogger(logger, 'warn', 60_000)('session: Redis unavailable')
      expect(logger.errors).to.deep.equal([['cache: Redis unavailable', failure]])
      expect(logger.warnings).to.deep.equal([['session: Redis unavailable']])
    })

    it('a kind is the message and the error’s code: other codes, or no code, are other kinds', () => {
      const logger = recordingLogger()
      const warn = throttledLogger(logger, 'warn', 60_000)
      const coded = (code: string | undefined) => Object.assign(new Error(code ?? 'none'), { code })
      warn('store failed', coded('ERK_REDIS_UNAVAILABLE'))
      warn('store failed', coded('ERK_REDIS_UNAVAILABLE'))
      warn('store failed', coded('ERK_UNSERIALIZABLE'))
      warn('store failed', coded(undefined))
      warn('store failed', 'a string has no code')
      warn('store failed')
      warn('other failure', coded('ERK_UNSERIALIZABLE'))
      expect(logger.warnings.map(([message, error]) => [message, (error as { code?: string })?.code])).to.deep.equal([
        ['store failed', 'ERK_REDIS_UNAVAILABLE'],
        ['store failed', 'ERK_UNSERIALIZABLE'],
        ['store failed', undefined],
        ['other failure', 'ERK_UNSERIALIZABLE'],
      ])
    })

    it('past 100 kinds, the new kinds share one window: a flood of distinct messages logs 101 lines', () => {
      const logger = recordingLogger()
      const warn = throttledLogger(logger, 'warn', 60_000)
      for (let i = 0; i < 1_000; i++) warn(`failure ${i}`)
      expect(logger.warnings).to.have.length(101)
      expect(messages(logger).at(-1)).to.equal('failure 100')
      // a kind seen before the limit still has its own window
      warn('failure 5')
      expect(logger.warnings).to.have.length(101)
    })

    it('when the window ends, one line counts what it suppressed, with the last error; then a quiet window', async () => {
      const logger = recordingLogger()
      const warn = throttledLogger(logger, 'warn', 20)
      for (let i = 1; i <= 4; i++) warn('cache: Redis unavailable', new Error(`failure ${i}`))
      await waitUntil(() => logger.warnings.length === 2, 2_000, 'the count of what was suppressed')
      expect(messages(logger)).to.deep.equal([
        'cache: Redis unavailable',
        'cache: Redis unavailable (3 more like this suppressed in the last 0.02 s)',
      ])
      expect((logger.warnings[1]![1] as Error).message).to.equal('failure 4')
      // The next window suppresses nothing: it ends silently, and the kind starts over. A window of
      // another logger, opened now with the same length, ends after it (Node runs timers of one
      // length in the order they were set): its count line says the first one has ended.
      const witness = recordingLogger()
      const witnessWarn = throttledLogger(witness, 'warn', 20)
      witnessWarn('witness')
      witnessWarn('witness')
      await waitUntil(() => witness.warnings.length === 2, 2_000, 'the witness window')
      expect(logger.warnings).to.have.length(2)
      warn('cache: Redis unavailable', new Error('failure 5'))
      expect(messages(logger)[2]).to.equal('cache: Redis unavailable')
    })
  })

  it('warning: the setup warning format, with its stable code', () => {
    expect(warning('rateLimit', 'ERK_SHARED_PREFIX', 'two limiters share a prefix')).to.equal(
      'express-redis-kit rateLimit [ERK_SHARED_PREFIX]: two limiters share a prefix',
    )
  })

  it('warnOnce: once per subject and message', () => {
    const logger = recordingLogger()
    const a = {}
    const b = {}
    warnOnce(logger, a, 'one')
    warnOnce(logger, a, 'one')
    warnOnce(logger, a, 'two')
    warnOnce(logger, b, 'one')
    expect(logger.warnings).to.deep.equal([['one'], ['two'], ['one']])
  })

  describe('withCallback: a promise API served to callback code', () => {
    it('no callback: the promise itself', () => {
      const promise = Promise.resolve(1)
      expect(withCallback(promise, undefined)).to.equal(promise)
      expect(withCallback(promise, 'not a function')).to.equal(promise)
    })

    it('(null, value) after the promise settled, on a tick of its own', async () => {
      const calls: unknown[][] = []
      const promise = withCallback(Promise.resolve('v'), (...args: unknown[]) => calls.push(args))
      expect(await promise).to.equal('v')
      expect(calls, 'not in the same microtask').to.deep.equal([])
      await new Promise((resolve) => process.nextTick(resolve))
      expect(calls).to.deep.equal([[null, 'v']])
    })

    it('(error) on rejection, and the rejection counts as handled', async () => {
      const failure = new Error('no')
      const unhandled: unknown[] = []
      const onUnhandled = (reason: unknown) => unhandled.push(reason)
      process.on('unhandledRejection', onUnhandled)
      try {
        const got = await new Promise<unknown[]>((resolve) => {
          withCallback(Promise.reject(failure), (...args: unknown[]) => resolve(args))
        })
        expect(got).to.deep.equal([failure])
        await new Promise((resolve) => setImmediate(resolve))
        expect(unhandled).to.deep.equal([])
      } finally {
        process.off('unhandledRejection', onUnhandled)
      }
    })
  })
})
