import { withTimeout } from '../shared/redis.js'

/**
 * What a subscription loop waits on (a blocking read, a pause before retrying) and `stop()`
 * cuts short: one wait at a time. A running handler is never interrupted.
 */
export class Interruptible {
  #interrupt: (() => void) | undefined

  /** Ends the current wait: a read rejects (`stopped`), a pause resolves. */
  interrupt(): void {
    this.#interrupt?.()
  }

  /** `promise`, or a rejection as soon as `interrupt()` is called. */
  wait<T>(promise: Promise<T>): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      this.#interrupt = () => reject(new Error('stopped'))
      promise.then(resolve, reject)
    }).finally(() => {
      this.#interrupt = undefined
    })
  }

  /** Resolves after `ms`, or as soon as `interrupt()` is called. */
  pause(ms: number): Promise<void> {
    return new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, ms)
      this.#interrupt = () => {
        clearTimeout(timer)
        resolve()
      }
    }).finally(() => {
      this.#interrupt = undefined
    })
  }
}

/** The pause after a first failed read; each further failure in a row doubles it, up to {@link RETRY_MAX_MS}. */
const RETRY_FIRST_MS = 100

/**
 * The longest pause between failed reads: a subscription that keeps failing sends no more
 * commands than an idle one whose blocking reads time out (one per 5 s).
 */
export const RETRY_MAX_MS = 5_000

/**
 * How long a subscription loop pauses after `failures` (1, 2, ...) failed reads in a row:
 * 100 ms doubled per failure up to 5 s, of which the second half is random, so that the
 * subscriptions of many processes that failed at once do not retry at once.
 */
export function retryDelay(failures: number): number {
  const ceiling = Math.min(RETRY_MAX_MS, RETRY_FIRST_MS * 2 ** Math.min(Math.max(failures, 1) - 1, 16))
  return ceiling / 2 + Math.random() * (ceiling / 2)
}

/**
 * The end of a subscription loop once its `stopping` flag is set: interrupts its wait, lets a
 * running handler finish, gives the loop `timeoutMs` to end (an acknowledgement to go through),
 * then closes the connection, which ends any command still waiting for a Redis that is down.
 */
export async function stopLoop(
  waiting: Interruptible,
  subscriber: { idle(): Promise<unknown> },
  loop: Promise<void> | undefined,
  connection: { destroy(): void } | undefined,
  timeoutMs: number,
): Promise<void> {
  waiting.interrupt()
  await subscriber.idle()
  if (loop) await withTimeout(loop, timeoutMs).catch(() => {})
  connection?.destroy()
  await loop
}
