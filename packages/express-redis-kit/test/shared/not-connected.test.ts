import { setImmediate as nextTurn } from 'node:timers/promises'
import { expect } from 'chai'
import { createClient, createCluster } from 'redis'
import request from 'supertest'
import { cached, cacheResponse, createNotifier, rateLimit, session } from '../../src/index.js'
import { appWith } from '../helpers/app.js'
import { type RecordingLogger, recordingLogger } from '../helpers/outage.js'
import { clusterNodes, connectRedis, mode, type RedisClient, redisUrl, uniquePrefix } from '../helpers/redis.js'

/*
 * A client that is neither open nor connecting when a feature is created with it (connect()
 * was never called) is warned about once per client, right after the code that created it ran:
 * never an error, since an app may create its middleware before it connects.
 */
describe(`a client neither open nor connecting (${mode} Redis)`, () => {
  /** A client of the suite's Redis, not connected. */
  const unconnected = (): RedisClient => {
    const client = mode === 'cluster' ? createCluster({ rootNodes: clusterNodes }) : createClient({ url: redisUrl })
    client.on('error', () => {})
    return client as RedisClient
  }
  type Create = (client: RedisClient, logger: RecordingLogger) => Promise<unknown>
  const entryPoints: [string, Create][] = [
    ['rateLimit', async (client, logger) => rateLimit({ client, logger, prefix: uniquePrefix('nc') })],
    ['session', async (client, logger) => session({ client, logger })],
    ['cacheResponse', async (client, logger) => cacheResponse({ client, logger, prefix: uniquePrefix('nc') })],
    ['cached', async (client, logger) => cached(client, 'k', { logger, prefix: uniquePrefix('nc') }, () => 'loaded')],
    [
      'createNotifier',
      async (client, logger) => {
        await createNotifier({ client, logger, prefix: uniquePrefix('nc') }).close()
      },
    ],
  ]
  const notConnected = (logger: RecordingLogger) =>
    logger.warnings.map(([message]) => String(message)).filter((message) => message.includes('[ERK_NOT_CONNECTED]'))

  for (const [name, create] of entryPoints) {
    describe(name, () => {
      it('never connected: one warning (ERK_NOT_CONNECTED) asking "did you call connect()?", however many are created', async () => {
        const client = unconnected()
        const logger = recordingLogger()
        await create(client, logger)
        await create(client, logger)
        await nextTurn()
        const warnings = notConnected(logger)
        expect(warnings).to.have.length(1)
        expect(warnings[0]).to.match(
          new RegExp(`^express-redis-kit ${name} \\[ERK_NOT_CONNECTED\\]: .*did you call connect\\(\\)\\?`),
        )
      })

      it('connected: no such warning', async () => {
        const client = await connectRedis()
        try {
          const logger = recordingLogger()
          await create(client, logger)
          await nextTurn()
          expect(notConnected(logger)).to.deep.equal([])
        } finally {
          await client.close()
        }
      })

      /** Connects a new client and creates the feature with it, in the order given, in one turn. */
      const noWarningWhenConnecting = async (order: 'connect first' | 'create first') => {
        const client = unconnected()
        const logger = recordingLogger()
        const connecting = order === 'connect first' ? client.connect() : undefined
        const created = create(client, logger)
        const connected = connecting ?? client.connect()
        try {
          await created
          await nextTurn()
          expect(notConnected(logger)).to.deep.equal([])
        } finally {
          await connected
          await client.close()
        }
      }

      it('connecting (connect() called, not awaited yet): no such warning', () =>
        noWarningWhenConnecting('connect first'))

      it('created, then connect() called right after, in the same turn: no such warning', () =>
        noWarningWhenConnecting('create first'))
    })
  }

  it('never connected, a request still gets an answer: the limiter lets it through (onRedisError allow)', async () => {
    const logger = recordingLogger()
    const limiter = rateLimit({ client: unconnected(), logger, prefix: uniquePrefix('nc') })
    expect((await request(appWith(limiter)).get('/')).status).to.equal(200)
    expect(notConnected(logger)).to.have.length(1)
  })
})
