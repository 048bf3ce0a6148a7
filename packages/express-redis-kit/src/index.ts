export {
  type CacheCommonOptions,
  type CachedOptions,
  type CacheMiddleware,
  type CacheResponseOptions,
  cached,
  cacheResponse,
  invalidateTags,
  type LocalCacheOptions,
  type Serializer,
  typedJson,
} from './cache/index.js'
export {
  compareStreamIds,
  createNotifier,
  type Envelope,
  type EventHandler,
  type EventMeta,
  type GapInfo,
  type History,
  type HistoryOptions,
  type Notifier,
  type NotifierOptions,
  type PublishOptions,
  type SubscribeOptions,
  type Unsubscribe,
} from './notifier/index.js'
export {
  type Algorithm,
  ipKeyGenerator,
  type RateLimitHandlerInfo,
  type RateLimitInfo,
  type RateLimitMiddleware,
  type RateLimitOptions,
  type RateLimitState,
  type RateLimitValidations,
  rateLimit,
  type StandardHeaders,
  type ValueOrFunction,
} from './rate-limit/index.js'
export {
  type Session,
  type SessionCallback,
  type SessionCookie,
  type SessionCookieOptions,
  type SessionData,
  type SessionMethods,
  type SessionMiddleware,
  type SessionOptions,
  session,
  type UserSessionInfo,
} from './session/index.js'
export {
  type CacheEvent,
  CHANNELS,
  type NotifierEvent,
  type RateLimitEvent,
  type RedisCallContext,
  type SessionEvent,
} from './shared/diagnostics.js'
export type { Duration, DurationUnit } from './shared/duration.js'
export { ArgumentError, type ErrorCode, OptionError, RedisKitError } from './shared/errors.js'
export type { Logger, WarningCode } from './shared/logger.js'
export type { RedisClient } from './shared/redis.js'
