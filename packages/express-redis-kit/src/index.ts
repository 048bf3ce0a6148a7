export {
  type Algorithm,
  ipKeyGenerator,
  type RateLimitInfo,
  type RateLimitMiddleware,
  type RateLimitOptions,
  type RateLimitState,
  rateLimit,
  type StandardHeaders,
  type ValueOrFunction,
} from './rate-limit/index.js'
export type { Duration } from './shared/duration.js'
export { type ErrorCode, OptionError, RedisKitError } from './shared/errors.js'
export type { Logger } from './shared/logger.js'
export type { RedisClient } from './shared/redis.js'
