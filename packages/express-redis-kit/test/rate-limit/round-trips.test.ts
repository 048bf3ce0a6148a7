import { expect } from 'chai'
import request from 'supertest'
import { rateLimit } from '../../src/index.js'
import { appWith } from '../helpers/app.js'
import { ALGORITHMS, commandCalls as countCommands, onEveryNode as onEveryNodeOf } from '../helpers/rate-limit.js'
import {
  connectTo,
  type DisposableCluster,
  type DisposableRedis,
  mode,
  type RedisClient,
  startDisposableCluster,
  startDisposableRedis,
  uniquePrefix,
} from '../helpers/redis.js'

/*
 * Issue 2: one Redis round trip per request, one EVALSHA, with EVAL only after a NOSCRIPT
 * error; issue 12: none for a client Redis already said is over its limit (the local block
 * cache). Counted on the server with `INFO commandstats` (summed over every Cluster master),
 * read through separate connections, on a Redis (or Cluster) of these tests' own: the counts
 * are the server's, so nothing else may talk to it.
 */
describe('rateLimit Redis round trips', () => {
  let client: RedisClient
  let server: DisposableRedis | DisposableCluster | undefined
  let addresses: { host: string; port: number }[] = []
  before(async function () {
    this.timeout(30_000)
    if (mode === 'cluster') {
      const cluster = await startDisposableCluster()
      server = cluster
      addresses = cluster.addresses
      client = await cluster.connect()
    } else {
      const redis = await startDisposableRedis()
      server = redis
      addresses = [{ host: '127.0.0.1', port: redis.port }]
      client = await connectTo(redis)
    }
  })
  after(async () => {
    await client?.close()
    await server?.stop()
  })
  const commandCalls = () => countCommands(addresses)
  const onEveryNode = (command: string[]) => onEveryNodeOf(command, addresses)

  /**
   * EVALSHA and EVAL calls between two snapshots, less what taking a snapshot costs.
   * (Commands a script runs are counted under their own names, so only these two tell
   * round trips.)
   */
  async function scriptCallsDuring(action: () => Promise<void>): Promise<{ evalsha: number; eval: number }> {
    // What one snapshot adds (its connection's handshake and INFO), measured right before.
    const first = await commandCalls()
    const second = await commandCalls()
    const before = await commandCalls()
    await action()
    const after = await commandCalls()
    const added = (name: string) =>
      (after.get(name) ?? 0) - (before.get(name) ?? 0) - ((second.get(name) ?? 0) - (first.get(name) ?? 0))
    return { evalsha: added('evalsha'), eval: added('eval') }
  }

  it('sliding-window with the default options: GET, PTTL and SETRANGE inside the EVALSHA, no TIME once the key exists (a Redis of its own)', async () => {
    const redis = await startDisposableRedis()
    const own = await connectTo(redis)
    try {
      const calls = async (): Promise<Map<string, number>> => {
        const info = String(await own.sendCommand(['INFO', 'commandstats']))
        return new Map(
          [...info.matchAll(/^cmdstat_([^:]+):calls=(\d+)/gm)].map((match) => [match[1]!, Number(match[2])]),
        )
      }
      const app = appWith(rateLimit({ client: own, keyGenerator: () => 'k', limit: 100, windowMs: '1h' }))
      expect((await request(app).get('/')).status).to.equal(200)
      const before = await calls()
      for (let i = 0; i < 10; i++) expect((await request(app).get('/')).status).to.equal(200)
      const after = await calls()
      const ran = Object.fromEntries(
        [...after]
          .map(([name, count]) => [name, count - (before.get(name) ?? 0)] as const)
          .filter(([name, count]) => count > 0 && name !== 'info'),
      )
      // SET rewrites the key when a window starts (an hour boundary passing during the test).
      const { set = 0, setrange = 0, ...rest } = ran
      expect(set, 'SET').to.be.at.most(1)
      expect({ ...rest, 'set or setrange': set + setrange }).to.deep.equal({
        evalsha: 10,
        get: 10,
        pttl: 10,
        'set or setrange': 10,
      })
    } finally {
      own.destroy()
      await redis.stop()
    }
  })

  for (const algorithm of ALGORITHMS) {
    describe(algorithm, () => {
      for (const [localBlockCache, evalsha, what] of [
        [false, 20, 'localBlockCache false: every request asks Redis, 20 EVALSHA'],
        [undefined, 11, 'by default: 11 EVALSHA (the first rejection asks Redis, the 9 after it are answered here)'],
      ] as const) {
        it(`20 requests (10 allowed, 10 rejected), no EVAL; ${what}`, async () => {
          const app = appWith(
            rateLimit({
              client,
              algorithm,
              prefix: uniquePrefix('trips'),
              keyGenerator: () => 'k',
              limit: 11,
              windowMs: '1h',
              localBlockCache,
            }),
          )
          // The first request may load the script (EVAL after NOSCRIPT) on a fresh server.
          expect((await request(app).get('/')).status).to.equal(200)
          const statuses: number[] = []
          const commands = await scriptCallsDuring(async () => {
            for (let i = 0; i < 20; i++) statuses.push((await request(app).get('/')).status)
          })
          expect(statuses.filter((status) => status === 200)).to.have.length(10)
          expect(statuses.filter((status) => status === 429)).to.have.length(10)
          expect(commands).to.deep.equal({ evalsha, eval: 0 })
        })
      }

      it('after SCRIPT FLUSH on every node, the next request falls back to EVAL once and counts once', async () => {
        const limiter = rateLimit({
          client,
          algorithm,
          prefix: uniquePrefix('flush'),
          keyGenerator: () => 'k',
          limit: 5,
          windowMs: '1h',
        })
        const app = appWith(limiter)
        expect((await request(app).get('/')).status).to.equal(200)
        expect(await limiter.getKey('k')).to.include({ used: 1 })
        await onEveryNode(['SCRIPT', 'FLUSH'])
        const commands = await scriptCallsDuring(async () => {
          expect((await request(app).get('/')).status).to.equal(200)
        })
        // The EVALSHA that got NOSCRIPT, then the EVAL that ran (and loaded) the script.
        expect(commands).to.deep.equal({ evalsha: 1, eval: 1 })
        expect(await limiter.getKey('k')).to.include({ used: 2 })
        const next = await scriptCallsDuring(async () => {
          expect((await request(app).get('/')).status).to.equal(200)
        })
        expect(next).to.deep.equal({ evalsha: 1, eval: 0 })
        expect(await limiter.getKey('k')).to.include({ used: 3 })
      })
    })
  }
})
