import { randomBytes } from 'node:crypto'
import { hostname } from 'node:os'
import { type Duration, parseDuration } from '../shared/duration.js'
import type { Logger } from '../shared/logger.js'
import {
  check,
  parseClient,
  parseLogger,
  parsePrefix,
  parseTimeoutMs,
  rejectUnknownOptions,
  warnIfNotConnected,
} from '../shared/options.js'
import type { RedisClient } from '../shared/redis.js'

/** Options of {@link createNotifier}. */
export interface NotifierOptions {
  /**
   * A connected node-redis client or cluster. `publish` uses it; subscriptions run on
   * connections the notifier duplicates from it and owns. Required.
   */
  client: RedisClient
  /**
   * Prefix of the Redis channels (pub/sub) or stream keys (durable, fan-out).
   * @default 'events:'
   */
  prefix?: string
  /**
   * `'pubsub'` (default): Redis pub/sub (sharded pub/sub on a Cluster), at-most-once:
   * a subscriber that is disconnected misses what is published meanwhile.
   * `'durable'`: Redis Streams with consumer groups, at-least-once: a message is
   * acknowledged only after its handler succeeded and survives subscriber restarts.
   * `'fanout'`: fan-out with history on Redis Streams: every subscription (on every instance)
   * reads every message from its own position, may start from a given message, resumes after
   * a reconnect from the last message it delivered, and is told (`onGap`) when messages it
   * had not read were trimmed; `history()` reads what came after a message.
   * @default 'pubsub'
   */
  mode?: 'pubsub' | 'durable' | 'fanout'
  /**
   * Where malformed messages, failing handlers and connection errors are reported.
   * @default console
   */
  logger?: Logger
  /**
   * Called (pub/sub mode) every time a subscription may have missed messages: its connection
   * dropped, or on a Cluster its channel moved to another node (a failover). It runs once the
   * subscription is renewed, and in any case before the first message after the gap reaches a
   * handler; it is not awaited. Messages published meanwhile are lost, so drop what you cached
   * from them. On a Cluster it is also called about a second after a master that a channel left
   * without handing it over (it froze, and its replica was promoted) answers again: waking up, it
   * runs the publishes it held (they had timed out for their publishers) and the new master
   * delivers them, after messages published later. Not called in durable and fan-out modes,
   * where nothing is lost within maxLength.
   * @default undefined (none)
   */
  onReconnect?: () => void | Promise<void>
  /**
   * How long `publish` waits for Redis before it rejects with `ERK_REDIS_UNAVAILABLE`, in milliseconds.
   * @default 500
   */
  timeoutMs?: number
  /**
   * Largest message (JSON envelope) published or accepted, in bytes.
   * @default 1048576 (1 MiB)
   */
  maxMessageBytes?: number
  /**
   * Durable and fan-out: the stream is trimmed to about this many entries (`XADD ... MAXLEN ~`;
   * Redis keeps at least this many, trimming whole macro nodes, so a few more may stay).
   * @default 10000
   */
  maxLength?: number
  /**
   * Durable: the consumer group of a subscription unless `subscribe` names one.
   * @default 'default'
   */
  group?: string
  /**
   * Durable: this process's consumer name within its groups. Give a stable name to have a
   * restarted process take back the messages it had received but not acknowledged at once,
   * instead of after `claimIdle`.
   * @default `<hostname>-<pid>-<random>`
   */
  consumer?: string
  /**
   * Durable: a message delivered but not acknowledged for this long (its consumer died,
   * or its handler failed) is claimed by a live consumer of the group (`XAUTOCLAIM`).
   * @default '30s'
   */
  claimIdle?: Duration
  /**
   * Durable: a message is dropped (and logged) after this many failed deliveries.
   * @default 5
   */
  maxDeliveries?: number
  /**
   * Durable and fan-out: how many messages one read takes (and, durable, one `XACK` acknowledges).
   * @default 10
   */
  batchSize?: number
}

/** The notifier's options after validation. */
export interface ParsedNotifierOptions {
  client: RedisClient
  prefix: string
  mode: 'pubsub' | 'durable' | 'fanout'
  logger: Logger
  onReconnect: (() => void | Promise<void>) | undefined
  timeoutMs: number
  maxMessageBytes: number
  maxLength: number
  group: string
  consumer: string
  claimIdleMs: number
  maxDeliveries: number
  batchSize: number
}

const KNOWN_OPTIONS = new Set([
  'client',
  'prefix',
  'mode',
  'logger',
  'onReconnect',
  'timeoutMs',
  'maxMessageBytes',
  'maxLength',
  'group',
  'consumer',
  'claimIdle',
  'maxDeliveries',
  'batchSize',
])

/** A channel, group or consumer name: 1 to 200 printable ASCII characters without spaces. */
const NAME = /^[\x21-\x7e]{1,200}$/

export function isValidName(value: unknown): value is string {
  return typeof value === 'string' && NAME.test(value)
}

export const NAME_EXPECTED = '1 to 200 printable ASCII characters without spaces'

function positiveInteger(value: unknown, fallback: number, option: string): number {
  const result = value ?? fallback
  check(Number.isSafeInteger(result) && (result as number) > 0, option, 'a positive integer', result)
  return result as number
}

const CALL_OPTIONS = {
  subscribe: new Set(['parse', 'group', 'from', 'onGap']),
  publish: new Set(['id']),
  history: new Set(['after', 'limit']),
}

/** Refuses the options of a `subscribe`, `publish` or `history` call that are not an object, or name an option it does not have. */
export function checkCallOptions(options: unknown, method: keyof typeof CALL_OPTIONS): void {
  check(typeof options === 'object' && options !== null, 'options', 'an object', options)
  rejectUnknownOptions(options as object, CALL_OPTIONS[method])
}

export function parseNotifierOptions(options: NotifierOptions): ParsedNotifierOptions {
  check(typeof options === 'object' && options !== null, 'options', 'an object', options)
  rejectUnknownOptions(options, KNOWN_OPTIONS)
  parseClient(options.client)
  const logger = parseLogger(options.logger)
  const mode = options.mode ?? 'pubsub'
  check(mode === 'pubsub' || mode === 'durable' || mode === 'fanout', 'mode', "'pubsub', 'durable' or 'fanout'", mode)
  check(
    options.onReconnect === undefined || typeof options.onReconnect === 'function',
    'onReconnect',
    'a function',
    options.onReconnect,
  )
  const group = options.group ?? 'default'
  check(isValidName(group), 'group', NAME_EXPECTED, group)
  const consumer = options.consumer ?? `${hostname()}-${process.pid}-${randomBytes(4).toString('hex')}`
  check(isValidName(consumer), 'consumer', NAME_EXPECTED, consumer)
  const parsed: ParsedNotifierOptions = {
    client: options.client,
    prefix: parsePrefix(options.prefix, 'events:'),
    mode,
    logger,
    onReconnect: options.onReconnect,
    timeoutMs: parseTimeoutMs(options.timeoutMs),
    maxMessageBytes: positiveInteger(options.maxMessageBytes, 1024 * 1024, 'maxMessageBytes'),
    maxLength: positiveInteger(options.maxLength, 10_000, 'maxLength'),
    group,
    consumer,
    claimIdleMs: parseDuration(options.claimIdle ?? '30s', 'claimIdle', { logger, feature: 'createNotifier' }),
    maxDeliveries: positiveInteger(options.maxDeliveries, 5, 'maxDeliveries'),
    batchSize: positiveInteger(options.batchSize, 10, 'batchSize'),
  }
  warnIfNotConnected(options.client, logger, 'createNotifier')
  return parsed
}
