import type { Response } from 'express'

/** What holding a response needs from the session of its request. */
export interface HoldHooks {
  /** Whether saving would write anything (synchronous, so that most responses are not held). */
  needsSave(): boolean
  /** Saves; resolves `false` when the save failed and the response must not go out as written. */
  save(): Promise<boolean>
  /** Sets (or clears) the session cookie, just before the head goes out. */
  applyCookie(): void
  /** Logs what went wrong while writing a held response (throttled). */
  logError(message: string, error?: unknown): void
}

/**
 * Holds the response (its head included) until the session is saved, so that the cookie
 * goes out with the headers and the next request (a redirect after login) sees the data.
 * `writeHead`, `write` and `end` are queued behind the save, in order, and replayed once it
 * succeeded. When it failed, the client gets a 503 (nothing of the response was sent); if
 * the head had gone out already (`flushHeaders`), the response is cut short: it never hangs.
 * A response whose session has nothing to save is never held.
 */
export function holdResponseUntilSaved(res: Response, hooks: HoldHooks): void {
  const { writeHead, write, end } = res
  let saved: Promise<boolean> | undefined
  let queued = 0
  /** Nothing (more) to wait for: calls go straight through. */
  let direct = false
  /** A queued call is being replayed: the calls it makes (an implicit writeHead) go straight through. */
  let replaying = false
  /** The save failed and the response was answered (503) or cut short: the handler's calls are dropped. */
  let abandoned = false
  let tail: Promise<unknown> | undefined

  const enqueue = (operation: () => void, args: unknown[]): void => {
    if (saved === undefined && !hooks.needsSave()) {
      direct = true
      operation()
      return
    }
    saved ??= hooks.save()
    queued++
    tail = (tail ?? saved).then((ok) => {
      replaying = true
      try {
        if (abandoned) dropped(args)
        else if (ok) operation()
        else giveUp(args)
      } catch (error) {
        hooks.logError('express-redis-kit session: writing the response failed', error)
      } finally {
        replaying = false
        queued--
        if (queued === 0 && !abandoned) direct = true
      }
      return ok
    })
  }

  /** The save failed: answer 503 if nothing was sent yet, else cut the response short. */
  const giveUp = (args: unknown[]): void => {
    abandoned = true
    if (!res.headersSent) sendUnavailable(res, end)
    else res.destroy()
    dropped(args)
  }

  res.writeHead = function writeHeadAfterSave(this: Response, ...args: unknown[]) {
    if (direct || replaying) {
      hooks.applyCookie()
      return (writeHead as (...a: unknown[]) => Response).apply(this, args)
    }
    enqueue(() => {
      hooks.applyCookie()
      ;(writeHead as (...a: unknown[]) => Response).apply(res, args)
    }, [])
    return this
  } as typeof res.writeHead

  res.write = function writeAfterSave(this: Response, ...args: unknown[]) {
    if (direct || replaying) return (write as (...a: unknown[]) => boolean).apply(this, args)
    let written = true
    enqueue(() => {
      written = (write as (...a: unknown[]) => boolean).apply(res, args)
    }, args)
    return written
  } as typeof res.write

  res.end = function endAfterSave(this: Response, ...args: unknown[]) {
    if (direct || replaying) return (end as (...a: unknown[]) => Response).apply(this, args)
    enqueue(() => (end as (...a: unknown[]) => Response).apply(res, args), args)
    return this
  } as typeof res.end
}

/** A call that will never be made: its callback (if any) hears so, so that nothing waits for it. */
function dropped(args: unknown[]): void {
  const callback = args.findLast((arg) => typeof arg === 'function') as ((error?: Error) => void) | undefined
  if (callback) process.nextTick(callback, new Error('express-redis-kit session: the response was abandoned'))
}

function sendUnavailable(res: Response, end: Response['end']): void {
  res.statusCode = 503
  for (const header of ['Content-Length', 'ETag', 'Content-Type', 'Set-Cookie']) res.removeHeader(header)
  const body = JSON.stringify({ error: 'The session store is unavailable; nothing was saved. Try again.' })
  res.setHeader('Content-Type', 'application/json; charset=utf-8')
  res.setHeader('Retry-After', '5')
  ;(end as (chunk: string) => Response).call(res, body)
}
