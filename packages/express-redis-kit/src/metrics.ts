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
import { type Attributes, type MeterProvider, metrics } from '@opentelemetry/api'
import {
  type CacheEvent,
  CHANNELS,
  type NotifierEvent,
  type RateLimitEvent,
  type RedisCallContext,
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
   * Also record `db.client.operation.duration` for every Redis round trip (through the
   * `express-redis-kit:redis` tracing channel; its cost is one timer read and one histogram
   * record per round trip).
   * @default true
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

  const rateLimitRequests = meter.createCounter(METRIC_NAMES.rateLimitRequests, {
    description: 'Requests a rate limiter decided on',
    unit: '{request}',
  })
  const cacheRequests = meter.createCounter(METRIC_NAMES.cacheRequests, {
    description: 'Cache lookups by result (hit, stale, miss, bypass, error)',
    unit: '{request}',
  })
  const cacheFills = meter.createCounter(METRIC_NAMES.cacheFills, {
    description: 'Fills stored or refused',
    unit: '{fill}',
  })
  const cacheWait = meter.createHistogram(METRIC_NAMES.cacheWait, {
    description: "Time a request waited for another request's fill",
    unit: 's',
  })
  const cacheInvalidated = meter.createCounter(METRIC_NAMES.cacheInvalidated, {
    description: 'Entries removed by tag invalidations',
    unit: '{entry}',
  })
  const sessionOperations = meter.createCounter(METRIC_NAMES.sessionOperations, {
    description: 'Session loads, saves and destroys by result',
    unit: '{operation}',
  })
  const notifierMessages = meter.createCounter(METRIC_NAMES.notifierMessages, {
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
        rateLimitRequests.add(1, {
          'rate_limiting.result': RATE_LIMIT_RESULT[event.result],
          'rate_limiting.source': event.source,
          'rate_limiting.mode': event.mode,
          'rate_limiting.policy': event.policy,
        })
      },
    ],
    [
      CHANNELS.cache,
      (message) => {
        const event = message as CacheEvent
        switch (event.result) {
          case 'stored':
          case 'refused':
            cacheFills.add(1, {
              result: event.result,
              source: event.source,
              ...(event.reason ? { reason: event.reason } : {}),
            })
            return
          case 'waited':
            cacheWait.record((event.waitedMs ?? 0) / 1000, { source: event.source })
            return
          case 'invalidated':
            cacheInvalidated.add(event.count ?? 0, { source: event.source })
            return
          default:
            cacheRequests.add(1, {
              result: event.result,
              source: event.source,
              ...(event.result === 'bypass' && event.reason ? { reason: event.reason } : {}),
            })
        }
      },
    ],
    [
      CHANNELS.session,
      (message) => {
        const event = message as SessionEvent
        sessionOperations.add(1, { operation: event.operation, result: event.result })
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
        notifierMessages.add(event.count ?? 1, {
          result: event.result,
          mode: event.mode,
          ...(event.reason ? { reason: event.reason } : {}),
        })
      },
    ],
  ]
  for (const [name, listener] of listeners) diagnostics.subscribe(name, listener)

  const tracing = diagnostics.tracingChannel<unknown, RedisCallContext & { startedAt?: number }>(CHANNELS.redis)
  const redisDuration = meter.createHistogram(METRIC_NAMES.redisDuration, {
    description: 'Duration of Redis round trips made by express-redis-kit',
    unit: 's',
    advice: { explicitBucketBoundaries: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1] },
  })
  const noop = () => {}
  const timing = {
    start(context: RedisCallContext & { startedAt?: number }) {
      context.startedAt = performance.now()
    },
    end: noop,
    asyncStart: noop,
    asyncEnd(context: RedisCallContext & { startedAt?: number }) {
      if (context.startedAt === undefined) return
      const attributes: Attributes = {
        'db.system.name': 'redis',
        'db.operation.name': context.command,
        'express_redis_kit.operation': context.operation,
      }
      if (context.error !== undefined) attributes['error.type'] = errorType(context.error)
      redisDuration.record((performance.now() - context.startedAt) / 1000, attributes)
    },
    error: noop,
  }
  const redisDurations = options.redisDurations ?? true
  if (redisDurations) tracing.subscribe(timing)

  return () => {
    for (const [name, listener] of listeners) diagnostics.unsubscribe(name, listener)
    if (redisDurations) tracing.unsubscribe(timing)
    notifierLag.removeCallback(observeLag)
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
