/**
 * `express-redis-kit/express-session`: a session store for express-session, in place of
 * connect-redis. A subpath of its own, so that the main entry never loads express-session (an
 * optional peer dependency: install it to use this).
 */
export type { RedisStoreOptions, StoreSerializer } from './options.js'
export { RedisStore, type StoredSession, type StoredSessionInfo } from './store.js'
