/** A Node-style callback, as passport, express-session and their stores pass them. */
export type NodeCallback<T = void> = (error: Error | null, value?: T) => void

/**
 * Serves a promise API to callback code as well: when `callback` is a function, it is called
 * once, after `promise` settled, with `(null, value)` or `(error)`, on a tick of its own (so
 * that a callback that throws is an uncaught exception, as with any callback API, and never
 * a rejection of the promise). The promise is returned either way; with a callback, its
 * rejection counts as handled (no `unhandledRejection` for code that ignores it).
 */
export function withCallback<T>(promise: Promise<T>, callback: unknown): Promise<T> {
  if (typeof callback !== 'function') return promise
  const done = callback as NodeCallback<T>
  promise.then(
    (value) => process.nextTick(done, null, value),
    (error: unknown) => process.nextTick(done, error as Error),
  )
  return promise
}
