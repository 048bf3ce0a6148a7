/**
 * OpenTelemetry metrics from the kit's diagnostics channels: `express-redis-kit/metrics`, a
 * separate entry point so that the main import needs no dependency. It needs
 * `@opentelemetry/api` (a peer dependency the app installs with its OpenTelemetry SDK).
 *
 * @example
 * ```ts
 * import { enableMetrics } from 'express-redis-kit/metrics'
 * const stop = enableMetrics() // the global MeterProvider, as the OpenTelemetry SDK registers it
 * ```
 */
import diagnostics from 'node:diagnostics_channel'
import { type Attributes, type Meter, type MeterProvider, metrics, type ObservableResult } from '@opentelemetry/api'
import {
  type CacheEvent,
  CHANNELS,
  type NotifierEvent,
  type RateLimitEvent,
  type RedisCallContext,
  redisTracing,
  type SessionEvent,
} from './shared/diagnostics.js'
import { OptionError } from './shared/errors.js'
import { rejectUnknownOptions } from './shared/options.js'

/** Options of {@link enableMetrics}. */
export interface MetricsOptions {
  /**
   * Where the instruments are created.
   * @default the global MeterProvider (`metrics.getMeterProvider()` of `@opentelemetry/api`)
   */
  meterProvider?: MeterProvider
  /**
   * Also record `db.client.operation.duration` for every Redis round trip, through the
   * `express-redis-kit:redis` tracing channel. Off by default: tracing each round trip and
   * recording it in a histogram cost 8 to 18% more CPU per request in `pnpm bench:overhead`
   * (the counters alone were within its noise); turn it on where that is worth it.
   * @default false
   */
  redisDurations?: boolean
}

/**
 * The instruments, as documented in the README ("Observability"): names follow OpenTelemetry's
 * semantic conventions where they exist (`db.client.operation.duration`; the rate-limiting
 * counter after ASP.NET Core's `aspnetcore.rate_limiting.requests`).
 */
export const METRIC_NAMES = {
  redisDuration: 'db.client.operation.duration',
  rateLimitRequests: 'rate_limiting.requests',
  cacheRequests: 'cache.requests',
  cacheFills: 'cache.fills',
  cacheWait: 'cache.wait.duration',
  cacheInvalidated: 'cache.invalidated_entries',
  sessionOperations: 'session.operations',
  notifierMessages: 'notifier.messages',
  notifierLag: 'notifier.consumer.lag',
} as const

/**
 * A monotonic counter counted in this process and reported when the SDK collects (an
 * ObservableCounter): a recording is one Map lookup, where a synchronous counter would hash its
 * attributes on every request. `key` identifies the attribute set; `attributes` is built only
 * the first time a key is seen.
 */
interface Tally {
  add(value: number, key: string, attributes: () => Attributes): void
  stop(): void
}

function tally(meter: Meter, name: string, options: { description: string; unit: string }): Tally {
  const counts = new Map<string, { attributes: Attributes; value: number }>()
  const counter = meter.createObservableCounter(name, options)
  const observe = (result: ObservableResult) => {
    for (const { attributes, value } of counts.values()) result.observe(value, attributes)
  }
  counter.addCallback(observe)
  return {
    add(value, key, attributes) {
      const entry = counts.get(key)
      if (entry) entry.value += value
      else counts.set(key, { attributes: attributes(), value })
    },
    stop: () => counter.removeCallback(observe),
  }
}

/** The rate-limiting result, as ASP.NET Core names it (`acquired`), and ours for the rest. */
const RATE_LIMIT_RESULT: Record<RateLimitEvent['result'], string> = {
  allowed: 'acquired',
  limited: 'rejected',
  error: 'error',
}

/**
 * Subscribes to the kit's diagnostics channels and records OpenTelemetry metrics from them.
 * Returns a function that unsubscribes. Calling it twice records everything twice: call it once.
 * @throws {TypeError} (code `ERK_INVALID_OPTION`) naming an invalid option.
 */
export function enableMetrics(options: MetricsOptions = {}): () => void {
  if (typeof options !== 'object' || options === null) throw new OptionError('options', 'an object', options)
  rejectUnknownOptions(options, new Set(['meterProvider', 'redisDurations']))
  const provider = options.meterProvider ?? metrics.getMeterProvider()
  if (typeof provider?.getMeter !== 'function') {
    throw new OptionError('meterProvider', 'an OpenTelemetry MeterProvider', options.meterProvider)
  }
  const meter = provider.getMeter('express-redis-kit')

  const rateLimitRequests = tally(meter, METRIC_NAMES.rateLimitRequests, {
    description: 'Requests a rate limiter decided on',
    unit: '{request}',
  })
  const cacheRequests = tally(meter, METRIC_NAMES.cacheRequests, {
    description: 'Cache lookups by result (hit, stale, miss, bypass, error)',
    unit: '{request}',
  })
  const cacheFills = tally(meter, METRIC_NAMES.cacheFills, {
    description: 'Fills stored or refused',
    unit: '{fill}',
  })
  const cacheWait = meter.createHistogram(METRIC_NAMES.cacheWait, {
    description: "Time a request waited for another request's fill",
    unit: 's',
  })
  const cacheInvalidated = tally(meter, METRIC_NAMES.cacheInvalidated, {
    description: 'Entries removed by tag invalidations',
    unit: '{entry}',
  })
  const sessionOperations = tally(meter, METRIC_NAMES.sessionOperations, {
    description: 'Session loads, saves and destroys by result',
    unit: '{operation}',
  })
  const notifierMessages = tally(meter, METRIC_NAMES.notifierMessages, {
    description: 'Notifier messages by result (published, delivered, dropped, redelivered, reclaimed, trimmed)',
    unit: '{message}',
  })
  const lags = new Map<string, number>()
  const notifierLag = meter.createObservableGauge(METRIC_NAMES.notifierLag, {
    description: 'Entries of a stream its consumer group has not read yet (durable mode), as last reported',
    unit: '{message}',
  })
  const observeLag = (result: { observe(value: number, attributes: Attributes): void }) => {
    for (const [channel, lag] of lags) result.observe(lag, { 'notifier.channel': channel })
  }
  notifierLag.addCallback(observeLag)

  const listeners: [string, (message: unknown) => void][] = [
    [
      CHANNELS.rateLimit,
      (message) => {
        const event = message as RateLimitEvent
        rateLimitRequests.add(1, `${event.result}\n${event.source}\n${event.mode}\n${event.policy}`, () => ({
          'rate_limiting.result': RATE_LIMIT_RESULT[event.result],
          'rate_limiting.source': event.source,
          'rate_limiting.mode': event.mode,
          'rate_limiting.policy': event.policy,
        }))
      },
    ],
    [
      CHANNELS.cache,
      (message) => {
        const event = message as CacheEvent
        switch (event.result) {
          case 'stored':
          case 'refused':
            cacheFills.add(1, `${event.result}\n${event.source}\n${event.reason ?? ''}`, () => ({
              result: event.result,
              source: event.source,
              ...(event.reason ? { reason: event.reason } : {}),
            }))
            return
          case 'waited':
            cacheWait.record((event.waitedMs ?? 0) / 1000, { source: event.source })
            return
          case 'invalidated':
            cacheInvalidated.add(event.count ?? 0, event.source, () => ({ source: event.source }))
            return
          default:
            cacheRequests.add(
              1,
              `${event.result}\n${event.source}\n${event.result === 'bypass' ? event.reason : ''}`,
              () => ({
                result: event.result,
                source: event.source,
                ...(event.result === 'bypass' && event.reason ? { reason: event.reason } : {}),
              }),
            )
        }
      },
    ],
    [
      CHANNELS.session,
      (message) => {
        const event = message as SessionEvent
        sessionOperations.add(1, `${event.operation}\n${event.result}`, () => ({
          operation: event.operation,
          result: event.result,
        }))
      },
    ],
    [
      CHANNELS.notifier,
      (message) => {
        const event = message as NotifierEvent
        if (event.result === 'lag') {
          lags.set(event.channel, event.lag ?? 0)
          return
        }
        notifierMessages.add(event.count ?? 1, `${event.result}\n${event.mode}\n${event.reason ?? ''}`, () => ({
          result: event.result,
          mode: event.mode,
          ...(event.reason ? { reason: event.reason } : {}),
        }))
      },
    ],
  ]
  for (const [name, listener] of listeners) diagnostics.subscribe(name, listener)

  const redisDuration = meter.createHistogram(METRIC_NAMES.redisDuration, {
    description: 'Duration of Redis round trips made by express-redis-kit',
    unit: 's',
    advice: { explicitBucketBoundaries: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1] },
  })
  const noop = () => {}
  /** The attributes of each (operation, command, error) seen: built once. */
  const durationAttributes = new Map<string, Attributes>()
  const timing = {
    start(context: RedisCallContext & { startedAt?: number }) {
      context.startedAt = performance.now()
    },
    end: noop,
    asyncStart: noop,
    asyncEnd(context: RedisCallContext & { startedAt?: number }) {
      if (context.startedAt === undefined) return
      const error = context.error === undefined ? '' : errorType(context.error)
      const key = `${context.operation}\n${context.command}\n${error}`
      let attributes = durationAttributes.get(key)
      if (!attributes) {
        attributes = {
          'db.system.name': 'redis',
          'db.operation.name': context.command,
          'express_redis_kit.operation': context.operation,
          ...(error ? { 'error.type': error } : {}),
        }
        durationAttributes.set(key, attributes)
      }
      redisDuration.record((performance.now() - context.startedAt) / 1000, attributes)
    },
    error: noop,
  }
  const redisDurations = options.redisDurations ?? false
  if (redisDurations) redisTracing.subscribe(timing)

  return () => {
    for (const [name, listener] of listeners) diagnostics.unsubscribe(name, listener)
    if (redisDurations) redisTracing.unsubscribe(timing)
    notifierLag.removeCallback(observeLag)
    for (const counter of [
      rateLimitRequests,
      cacheRequests,
      cacheFills,
      cacheInvalidated,
      sessionOperations,
      notifierMessages,
    ])
      counter.stop()
  }
}

/** `error.type` of OpenTelemetry's conventions: the error's code, else its class name. */
function errorType(error: unknown): string {
  if (typeof error === 'object' && error !== null) {
    const code = (error as { code?: unknown }).code
    if (typeof code === 'string') return code
    return error.constructor?.name ?? 'Error'
  }
  return '_OTHER'
}
