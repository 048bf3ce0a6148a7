import type { Response } from 'express'

/** What holding a response needs from the session of its request (`state`); one object for every request. */
export interface HoldHooks<State> {
  /** Whether saving would write anything (synchronous, so that most responses are not held). */
  needsSave(state: State): boolean
  /** Saves; resolves `false` when the save failed and the response must not go out as written. */
  save(state: State): Promise<boolean>
  /** Sets (or clears) the session cookie, just before the head goes out. */
  applyCookie(res: Response, state: State): void
  /** Logs what went wrong while writing a held response (throttled). */
  logError(message: string, error?: unknown): void
}

type Call = (...args: unknown[]) => unknown

/** One response's hold: kept on the response, so that the wrappers are shared functions, not closures per request. */
interface Hold {
  hooks: HoldHooks<unknown>
  state: unknown
  writeHead: Call
  write: Call
  end: Call
  saved: Promise<boolean> | undefined
  queued: number
  /** Nothing (more) to wait for: calls go straight through. */
  direct: boolean
  /** A queued call is being replayed: the calls it makes (an implicit writeHead) go straight through. */
  replaying: boolean
  /** The save failed and the response was answered (503) or cut short: the handler's calls are dropped. */
  abandoned: boolean
  tail: Promise<unknown> | undefined
}

type HeldResponse = Response & { [hold: symbol]: Hold }

/**
 * Returns `hold(res, state)`, which holds a response (its head included) until its session
 * is saved, so that the cookie goes out with the headers and the next request (a redirect
 * after login) sees the data. `writeHead`, `write` and `end` are queued behind the save, in
 * order, and replayed once it succeeded. When it failed, the client gets a 503 (nothing of
 * the response was sent); if the head had gone out already, the response is cut short: it
 * never hangs. A response whose session has nothing to save is never held.
 *
 * One holder per session middleware: its wrappers are made once and find the hold of each
 * response under a symbol of their own (no closures per request; two session middlewares on
 * one app each hold the response in turn).
 */
export function responseHolder<State>(hooks: HoldHooks<State>): (res: Response, state: State) => void {
  const HOLD = Symbol('express-redis-kit.session.hold')

  function writeHeadAfterSave(this: HeldResponse, ...args: unknown[]): unknown {
    const hold = this[HOLD]!
    if (hold.direct || hold.replaying) {
      hold.hooks.applyCookie(this, hold.state)
      return hold.writeHead.apply(this, args)
    }
    enqueue(this, hold, 'writeHead', args)
    return this
  }

  function writeAfterSave(this: HeldResponse, ...args: unknown[]): unknown {
    const hold = this[HOLD]!
    if (hold.direct || hold.replaying) return hold.write.apply(this, args)
    return enqueue(this, hold, 'write', args) ?? true
  }

  function endAfterSave(this: HeldResponse, ...args: unknown[]): unknown {
    const hold = this[HOLD]!
    if (hold.direct || hold.replaying) return hold.end.apply(this, args)
    enqueue(this, hold, 'end', args)
    return this
  }

  return (res, state) => {
    ;(res as HeldResponse)[HOLD] = {
      hooks: hooks as HoldHooks<unknown>,
      state,
      writeHead: res.writeHead as Call,
      write: res.write as Call,
      end: res.end as Call,
      saved: undefined,
      queued: 0,
      direct: false,
      replaying: false,
      abandoned: false,
      tail: undefined,
    }
    res.writeHead = writeHeadAfterSave as Response['writeHead']
    res.write = writeAfterSave as Response['write']
    res.end = endAfterSave as Response['end']
  }
}

/** Runs the call now if there is nothing to save; else queues it behind the save. Returns what a call made now returned. */
function enqueue(res: HeldResponse, hold: Hold, method: 'writeHead' | 'write' | 'end', args: unknown[]): unknown {
  if (hold.saved === undefined && !hold.hooks.needsSave(hold.state)) {
    hold.direct = true
    return call(res, hold, method, args)
  }
  hold.saved ??= hold.hooks.save(hold.state)
  hold.queued++
  hold.tail = (hold.tail ?? hold.saved).then((ok) => {
    hold.replaying = true
    try {
      if (hold.abandoned) dropped(args)
      else if (ok) call(res, hold, method, args)
      else giveUp(res, hold, args)
    } catch (error) {
      hold.hooks.logError('express-redis-kit session: writing the response failed', error)
    } finally {
      hold.replaying = false
      hold.queued--
      if (hold.queued === 0 && !hold.abandoned) hold.direct = true
    }
    return ok
  })
  return undefined
}

function call(res: HeldResponse, hold: Hold, method: 'writeHead' | 'write' | 'end', args: unknown[]): unknown {
  if (method === 'writeHead') hold.hooks.applyCookie(res, hold.state)
  return hold[method].apply(res, args)
}

/** The save failed: answer 503 if nothing was sent yet, else cut the response short. */
function giveUp(res: HeldResponse, hold: Hold, args: unknown[]): void {
  hold.abandoned = true
  if (!res.headersSent) sendUnavailable(res, hold.end)
  else res.destroy()
  dropped(args)
}

/** A call that will never be made: its callback (if any) hears so, so that nothing waits for it. */
function dropped(args: unknown[]): void {
  const callback = args.findLast((arg) => typeof arg === 'function') as ((error?: Error) => void) | undefined
  if (callback) process.nextTick(callback, new Error('express-redis-kit session: the response was abandoned'))
}

function sendUnavailable(res: Response, end: Call): void {
  res.statusCode = 503
  for (const header of ['Content-Length', 'ETag', 'Content-Type', 'Set-Cookie']) res.removeHeader(header)
  const body = JSON.stringify({ error: 'The session store is unavailable; nothing was saved. Try again.' })
  res.setHeader('Content-Type', 'application/json; charset=utf-8')
  res.setHeader('Retry-After', '5')
  end.call(res, body)
}
