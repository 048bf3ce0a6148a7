/** The part of apicache-plus 2.x (which ships no types) that the cache benchmark uses. */
declare module 'apicache-plus' {
  import type { RequestHandler } from 'express'

  interface ApiCacheOptions {
    /** An ioredis client, or a node-redis v3 client with `detect_buffers: true`; absent: memory. */
    redisClient?: unknown
    [option: string]: unknown
  }

  interface ApiCache {
    /** The caching middleware; `duration` like '5 minutes' or milliseconds. */
    middleware(duration?: string | number, toggle?: unknown, options?: ApiCacheOptions): RequestHandler
    /** A new instance (the default export is one shared instance). */
    newInstance(options?: ApiCacheOptions): ApiCache
  }

  const apicache: ApiCache
  export default apicache
}
