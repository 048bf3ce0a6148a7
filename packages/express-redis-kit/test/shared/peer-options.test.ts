import { expect } from 'chai'
import {
  cached,
  cacheResponse,
  createNotifier,
  invalidateTags,
  type Notifier,
  rateLimit,
  session,
} from '../../src/index.js'
import { connectRedis, mode, type RedisClient, uniquePrefix } from '../helpers/redis.js'

/*
 * Options of the peer packages (express-rate-limit, rate-limit-redis, rate-limiter-flexible,
 * express-session, connect-redis, apicache, cache-manager) are refused at creation with a hint
 * in one format: `(use `ours`[: how it differs])`, or `(not needed: why)` / `(not supported:
 * why)` when nothing here corresponds. Every entry point refuses option names it does not have.
 */
describe(`peer packages' option names, and unknown options everywhere (${mode} Redis)`, () => {
  let client: RedisClient
  const notifiers: Notifier[] = []
  before(async () => {
    client = await connectRedis()
  })
  after(async () => {
    await Promise.all(notifiers.map((notifier) => notifier.close()))
    await client.close()
  })

  type EntryPoint = 'rateLimit' | 'session' | 'session cookie' | 'cacheResponse' | 'cached' | 'createNotifier'
  /** Calls the entry point with `options` (over a valid client) and returns what it threw or rejected with. */
  async function refusal(entry: EntryPoint, options: Record<string, unknown>): Promise<Error & { code?: string }> {
    try {
      switch (entry) {
        case 'rateLimit':
          rateLimit({ client, prefix: uniquePrefix('peer'), ...options } as never)
          break
        case 'session':
          session({ client, ...options } as never)
          break
        case 'session cookie':
          session({ client, cookie: options } as never)
          break
        case 'cacheResponse':
          cacheResponse({ client, ...options } as never)
          break
        case 'cached':
          await cached(client, 'peer', options as never, () => 'loaded')
          break
        case 'createNotifier':
          notifiers.push(createNotifier({ client, prefix: uniquePrefix('peer'), ...options } as never))
          break
      }
    } catch (error) {
      return error as Error & { code?: string }
    }
    throw new Error(`${entry} accepted ${JSON.stringify(options)}`)
  }

  /** The one hint format: the option, "must be a known option", the hint in parentheses, what was given. */
  const HINT_FORMAT =
    /option `[\w.]+` must be a known option \((use `\w+`(: .+)?|not needed: .+|not supported: .+)\); received /

  // entry point, peer option name, what the hint must say
  const peers: [EntryPoint, string, RegExp][] = [
    // express-rate-limit (and express-slow-down)
    ['rateLimit', 'max', /\(use `limit`\)/],
    ['rateLimit', 'headers', /\(use `legacyHeaders`\)/],
    ['rateLimit', 'store', /\(use `client`: /],
    ['rateLimit', 'passOnStoreError', /\(use `onRedisError`: 'allow' .*'block'/],
    ['rateLimit', 'onLimitReached', /\(use `onLimit`\)/],
    ['rateLimit', 'draft_polli_ratelimit_headers', /\(use `standardHeaders`: 'draft-6'\)/],
    ['rateLimit', 'retryAfter', /\(not needed: `Retry-After` is how long/],
    ['rateLimit', 'delayAfter', /\(not supported: .*never delayed\)/],
    ['rateLimit', 'delayMs', /\(not supported: .*never delayed\)/],
    ['rateLimit', 'maxDelayMs', /\(not supported: .*never delayed\)/],
    // rate-limit-redis
    ['rateLimit', 'sendCommand', /\(use `client`/],
    ['rateLimit', 'sendCommandCluster', /\(use `client`/],
    ['rateLimit', 'resetExpiryOnChange', /\(use `algorithm`: /],
    // rate-limiter-flexible
    ['rateLimit', 'storeClient', /\(use `client`\)/],
    ['rateLimit', 'points', /\(use `limit`\)/],
    ['rateLimit', 'duration', /\(use `windowMs`: in milliseconds, where rate-limiter-flexible counts seconds\)/],
    ['rateLimit', 'keyPrefix', /\(use `prefix`\)/],
    ['rateLimit', 'blockOnConsumed', /\(use `blockDuration`: /],
    ['rateLimit', 'inMemoryBlockOnConsumed', /\(use `localBlockCache`: /],
    ['rateLimit', 'inMemoryBlockDuration', /\(use `localBlockCache`: /],
    ['rateLimit', 'insuranceLimiter', /\(use `onRedisError`: 'local'/],
    ['rateLimit', 'rejectIfRedisNotReady', /\(use `onRedisError`: 'block'/],
    ['rateLimit', 'execEvenly', /\(not supported: .*never delayed\)/],
    ['rateLimit', 'execEvenlyMinDelayMs', /\(not supported: .*never delayed\)/],
    ['rateLimit', 'customIncrTtlLuaScript', /\(use `algorithm`: /],
    ['rateLimit', 'useRedisPackage', /\(not needed: /],
    ['rateLimit', 'useRedis3AndLowerPackage', /\(not needed: /],
    // express-session
    ['session', 'secret', /\(use `secrets`: .*cookie-parser/],
    ['session', 'store', /\(use `client`: /],
    ['session', 'rolling', /\(use `idleTimeout`: /],
    ['session', 'maxAge', /\(use `idleTimeout`\)/],
    ['session', 'resave', /\(not needed: a session is saved only when it changed\)/],
    [
      'session',
      'saveUninitialized',
      /\(not needed: a new session is stored, and gets a cookie, only once it holds data\)/,
    ],
    ['session', 'genid', /\(not supported: /],
    ['session', 'proxy', /\(not needed: .*`trust proxy`/],
    ['session', 'unset', /\(not needed: .*destroy\(\)/],
    ['session cookie', 'maxAge', /option `cookie\.maxAge` .*\(use `idleTimeout`: /],
    ['session cookie', 'expires', /option `cookie\.expires` .*\(use `absoluteTimeout`: /],
    ['session cookie', 'signed', /\(not needed: the cookie is always signed\)/],
    ['session cookie', 'priority', /\(not supported: /],
    ['session cookie', 'encode', /\(not supported: /],
    // connect-redis
    ['session', 'ttl', /\(use `idleTimeout`: in milliseconds, where connect-redis counts seconds\)/],
    ['session', 'disableTTL', /\(not needed: every session expires/],
    ['session', 'disableTouch', /\(not needed: /],
    ['session', 'scanCount', /\(not needed: /],
    ['session', 'serializer', /\(not supported: /],
    // apicache
    ['cacheResponse', 'expire', /\(use `ttl`\)/],
    ['cacheResponse', 'duration', /\(use `ttl`\)/],
    ['cacheResponse', 'defaultDuration', /\(use `ttl`\)/],
    ['cacheResponse', 'enabled', /\(use `bypass`: /],
    ['cacheResponse', 'redisClient', /\(use `client`\)/],
    ['cacheResponse', 'appendKey', /\(use `key`: /],
    ['cacheResponse', 'statusCodes', /\(use `statuses`: /],
    ['cacheResponse', 'headerBlacklist', /\(not supported: .*Set-Cookie/],
    ['cacheResponse', 'headers', /\(not supported: /],
    ['cacheResponse', 'events', /\(not supported: .*diagnostics channel/],
    ['cacheResponse', 'debug', /\(not needed: .*diagnostics channel/],
    ['cacheResponse', 'trackPerformance', /\(not needed: `enableMetrics\(\)`/],
    ['cacheResponse', 'respectCacheControl', /\(not supported: /],
    ['cacheResponse', 'jsonp', /\(not needed: /],
    // cache-manager
    ['cacheResponse', 'stores', /\(use `client`: /],
    ['cached', 'store', /\(use `client`: /],
    ['cached', 'stores', /\(use `client`: /],
    ['cached', 'refreshThreshold', /\(use `staleWhileRevalidate`: /],
    ['cached', 'max', /\(not needed: .*`maxmemory`/],
    ['cached', 'nonBlocking', /\(not needed: there is one store: Redis\)/],
    ['cached', 'refreshAllStores', /\(not needed: there is one store: Redis\)/],
    ['cached', 'cacheId', /\(use `prefix`\)/],
    ['cached', 'isCacheable', /\(use `negativeTtl`: /],
    ['cached', 'client', /\(not needed: the client is cached\(\)'s first argument\)/],
  ]
  for (const [entry, name, hint] of peers) {
    it(`${entry}({ ${name} }): refused, ${hint.source.replace(/\\/g, '').slice(0, 60)}`, async () => {
      const error = await refusal(entry, { [name]: 1 })
      expect(error.code).to.equal('ERK_INVALID_OPTION')
      expect(error.message).to.match(hint)
      expect(error.message).to.match(HINT_FORMAT)
    })
  }

  describe('typos, near misses of ours or of a peer name, in every entry point', () => {
    const typos: [EntryPoint, string, RegExp][] = [
      ['cached', 'tll', /option `tll` must be a known option \(use `ttl`\); received the number 1$/],
      ['cached', 'negativeTTL', /\(use `negativeTtl`\)/],
      ['cached', 'tag', /\(use `tags`\)/],
      ['cacheResponse', 'statuss', /\(use `statuses`\)/],
      ['rateLimit', 'windowMS', /\(use `windowMs`\)/],
      ['session', 'saveUnitialized', /`saveUnitialized` must be a known option \(not needed: a new session is stored/],
      ['session', 'resaves', /\(not needed: a session is saved only when it changed\)/],
      ['createNotifier', 'claimIdel', /\(use `claimIdle`\)/],
      ['cached', 'notAnOption', /option `notAnOption` must be a known option; received the number 1$/],
    ]
    for (const [entry, name, message] of typos) {
      it(`${entry}({ ${name} }): refused, ${message.source.replace(/\\/g, '').slice(0, 60)}`, async () => {
        const error = await refusal(entry, { [name]: 1 })
        expect(error.code).to.equal('ERK_INVALID_OPTION')
        expect(error.message).to.match(message)
      })
    }

    it('cached() refuses an unknown option before anything runs: the loader is not called', async () => {
      let calls = 0
      const error = await cached(client, 'peer', { tll: '5m' } as never, () => ++calls).catch((caught) => caught)
      expect(error).to.have.property('code', 'ERK_INVALID_OPTION')
      expect(calls).to.equal(0)
    })

    it('invalidateTags(client, tags, options) refuses an unknown option', async () => {
      const error = await invalidateTags(client, ['t'], { prefx: 'cache:' } as never).catch((caught) => caught)
      expect(error).to.have.property('code', 'ERK_INVALID_OPTION')
      expect((error as Error).message).to.include('`prefx` must be a known option (use `prefix`)')
    })

    it('localCache: an unknown setting is named with its place and a near miss', async () => {
      const error = await refusal('cacheResponse', { localCache: { maxByte: 1_000 } })
      expect(error.message).to.include('option `localCache.maxByte` must be a known option (use `maxBytes`)')
    })

    it("a notifier's subscribe, publish and history refuse an unknown option", async () => {
      const notifier = createNotifier({ client, prefix: uniquePrefix('peer'), mode: 'fanout' })
      notifiers.push(notifier)
      const subscribe = await notifier.subscribe('c', () => {}, { fromm: '0' } as never).catch((caught) => caught)
      expect((subscribe as Error).message).to.include('option `fromm` must be a known option (use `from`)')
      const publish = await notifier.publish('c', {}, { ids: 'x' } as never).catch((caught) => caught)
      expect((publish as Error).message).to.include('option `ids` must be a known option (use `id`)')
      const history = await notifier.history('c', { aftr: '0-1' } as never).catch((caught) => caught)
      expect((history as Error).message).to.include('option `aftr` must be a known option (use `after`)')
    })
  })

  describe('a missing option: "received undefined", once', () => {
    for (const entry of ['rateLimit', 'session', 'cacheResponse', 'createNotifier'] as const) {
      it(`${entry}({ client: undefined })`, async () => {
        const error = await refusal(entry, { client: undefined })
        expect(error.message).to.match(/option `client` must be .+; received undefined$/)
        expect(error.message).not.to.include('undefined undefined')
      })
    }
  })
})
