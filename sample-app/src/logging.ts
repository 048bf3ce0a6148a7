import { AsyncLocalStorage } from 'node:async_hooks'
import { randomUUID } from 'node:crypto'
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { RequestHandler } from 'express'
import { type DestinationStream, type Logger, pino } from 'pino'
import { pinoHttp } from 'pino-http'
import type { LogLevel } from './config.js'

export type { Logger } from 'pino'

/** What the app's own code logs with: console's `(message, ...details)`, as console, a recordingLogger and {@link consoleStyle} take it. */
export type AppLogger = Pick<Console, 'warn' | 'error'>

/** An incoming X-Request-Id the app keeps (a proxy's or a client's): 1 to 64 of `A-Z a-z 0-9 . _ -`. */
export const REQUEST_ID = /^[A-Za-z0-9._-]{1,64}$/

/** The request being served, for every line logged while serving it (whoever logs: the app, the kit, pino-http). */
const requestContext = new AsyncLocalStorage<{ requestId: string }>()

/**
 * The app's pino logger: one JSON object per line (pino's `level`, `time`, `msg`; `err` with its
 * stack), and `reqId` on every line logged while a request is served.
 * @param destination where the lines go. @default standard output
 */
export function createLogger(level: LogLevel, destination?: DestinationStream): Logger {
  return pino(
    {
      level,
      base: undefined, // no pid or hostname on every line: the process manager adds what it knows
      mixin: () => {
        const request = requestContext.getStore()
        return request ? { reqId: request.requestId } : {}
      },
    },
    destination,
  )
}

/**
 * The app's console-style logger on `log`: `warn(message, error)` becomes pino's
 * `warn({ err: error }, message)`, so that the error keeps its stack (pino itself would drop an
 * argument its message has no placeholder for). The kit's options take the pino logger itself
 * (they adapt it the same way): {@link pinoOf} gets it back.
 */
export function consoleStyle(log: Logger): AppLogger {
  const line =
    (level: 'warn' | 'error') =>
    (message: unknown, ...details: unknown[]): void => {
      const [error, ...rest] = details
      if (error === undefined) log[level](String(message))
      else log[level](rest.length > 0 ? { err: error, details: rest } : { err: error }, String(message))
    }
  return Object.assign({ warn: line('warn'), error: line('error') }, { [PINO]: log })
}

const PINO = Symbol('pino')

/** The pino logger behind a {@link consoleStyle} logger, else the logger itself (console, a test's recorder). */
export function pinoOf(logger: AppLogger): Logger | AppLogger {
  return (logger as { [PINO]?: Logger })[PINO] ?? logger
}

/** The request's id: a well-formed incoming X-Request-Id (a proxy's, to follow one request through both logs), else a new UUID. */
function requestId(req: IncomingMessage): string {
  const incoming = req.headers['x-request-id']
  return typeof incoming === 'string' && REQUEST_ID.test(incoming) ? incoming : randomUUID()
}

/**
 * First middleware of the app: gives the request its id (the X-Request-Id response header, and
 * `reqId` on every line logged while serving it) and logs one line per response with pino-http
 * (`req` method and path, `res` status, `responseTime` in ms; 5xx at `error`, the rest at `info`).
 * No header, cookie, query string or body is logged.
 */
export function requestLogging(log: Logger): RequestHandler {
  const logResponses = pinoHttp({
    logger: log,
    genReqId: (req) => (req as IncomingMessage & { id: string }).id,
    // the response line names its request itself: 'close' (a client gone) may come outside the request's context
    customSuccessObject: (req, _res, line) => ({ ...line, reqId: req.id }),
    customErrorObject: (req, _res, _error, line) => ({ ...line, reqId: req.id }),
    serializers: {
      req: (req: { method: string; url: string }) => ({ method: req.method, path: req.url.split('?')[0] }),
      res: (res: { statusCode: number }) => ({ statusCode: res.statusCode }),
    },
    customLogLevel: (_req, res, error) => (error || res.statusCode >= 500 ? 'error' : 'info'),
    customSuccessMessage: (req, res) => `${req.method} ${req.url?.split('?')[0]} ${res.statusCode}`,
    customErrorMessage: (req, res) => `${req.method} ${req.url?.split('?')[0]} ${res.statusCode}`,
  })
  return (req, res, next) => {
    const id = requestId(req)
    ;(req as IncomingMessage & { id: string }).id = id
    res.setHeader('X-Request-Id', id)
    requestContext.run({ requestId: id }, () => logResponses(req, res as ServerResponse, next))
  }
}
