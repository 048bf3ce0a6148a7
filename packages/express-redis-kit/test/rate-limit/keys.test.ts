import { createHash } from 'node:crypto'
import { expect } from 'chai'
import request from 'supertest'
import { rateLimit } from '../../src/index.js'
import { appWith } from '../helpers/app.js'
import { recordingLogger } from '../helpers/outage.js'
import {
  ALGORITHMS,
  expectedClientTag,
  expectedRedisKey,
  redisTimeMs,
  settle,
  slidingWindowState,
} from '../helpers/rate-limit.js'
import { connectRedis, mode, type RedisClient, uniquePrefix } from '../helpers/redis.js'

/*
 * Issue 2: one key per client, `<prefix>{<client key>}`, with the client key kept as is
 * when it is short printable ASCII without `{`, `}` or `#` and replaced by `#` + its
 * SHA-256 (base64url) otherwise; safe whatever the identifier holds, on a Cluster too;
 * a millisecond expiry on every key written; the `prefix` option.
 */
describe('rateLimit Redis keys', () => {
  let client: RedisClient
  before(async () => {
    client = await connectRedis()
  })
  after(async () => {
    await client.close()
  })

  describe('key naming', () => {
    it('keeps a short printable ASCII client key readable inside the hash tag', async () => {
      const prefix = uniquePrefix('name')
      const app = appWith(rateLimit({ client, prefix, keyGenerator: () => 'user-42:/api v1', windowMs: '1h' }))
      expect((await request(app).get('/')).status).to.equal(200)
      expect(await client.exists(`${prefix}{user-42:/api v1}:sw`)).to.equal(1)
    })

    const awkward: Record<string, string> = {
      unicode: 'ユーザー🙂 é',
      'an opening brace': 'a{b',
      'a closing brace': 'a}b',
      'a whole hash tag': '{tag}',
      'a hash sign': '#x',
      'a newline': 'line\nbreak',
      'a 10 kB string': 'x'.repeat(10_240),
      'control characters': '\u0000\u0007\t',
    }
    const identifiers = Object.values(awkward)

    it(`hashes any other client key: \`<prefix>{#<sha256 base64url>}\` (${Object.keys(awkward).join(', ')})`, async () => {
      const prefix = uniquePrefix('hashed')
      const app = appWith(
        rateLimit({ client, prefix, keyGenerator: (req) => identifiers[Number(req.query.id)]!, windowMs: '1h' }),
      )
      for (const [index, identifier] of identifiers.entries()) {
        expect((await request(app).get(`/?id=${index}`)).status).to.equal(200)
        const key = `${prefix}{#${createHash('sha256').update(identifier).digest('base64url')}}:sw`
        expect(await client.exists(key), `key of ${JSON.stringify(identifier.slice(0, 20))}`).to.equal(1)
      }
    })

    for (const algorithm of ALGORITHMS) {
      it(`${algorithm}: limits each awkward client key on its own${mode === 'cluster' ? ' (on the Cluster)' : ''}`, async () => {
        const prefix = uniquePrefix('awkward')
        const app = appWith(
          rateLimit({
            client,
            prefix,
            algorithm,
            limit: 2,
            windowMs: '1h',
            keyGenerator: (req) => identifiers[Number(req.query.id)]!,
          }),
        )
        // Interleaved, so that any two identifiers sharing a key would run out early.
        for (let round = 1; round <= 3; round++) {
          for (const [index, identifier] of identifiers.entries()) {
            const res = await request(app).get(`/?id=${index}`)
            expect(res.status, `round ${round}, ${JSON.stringify(identifier.slice(0, 20))}`).to.equal(
              round <= 2 ? 200 : 429,
            )
          }
        }
        for (const identifier of identifiers) {
          expect(await client.exists(expectedRedisKey(prefix, identifier, algorithm))).to.equal(1)
        }
      })
    }

    it('keeps an identifier that looks like a hashed one apart from the one it hashes', async () => {
      const prefix = uniquePrefix('collide')
      const original = 'a{b'
      const lookalike = `#${createHash('sha256').update(original).digest('base64url')}`
      const ids = [original, lookalike]
      const app = appWith(
        rateLimit({ client, prefix, limit: 1, windowMs: '1h', keyGenerator: (req) => ids[Number(req.query.id)]! }),
      )
      expect((await request(app).get('/?id=0')).status).to.equal(200)
      expect((await request(app).get('/?id=1')).status).to.equal(200)
    })
  })

  describe('expiry', () => {
    const windowMs = 1500
    for (const algorithm of ALGORITHMS) {
      // The two-bucket estimate needs the current window's count through the next window.
      const longest = algorithm === 'sliding-window' ? 2 * windowMs : windowMs

      it(`${algorithm}: every key written has a millisecond expiry, within ${longest === windowMs ? 'the window' : 'two windows'}`, async () => {
        const prefix = uniquePrefix('ttl')
        const app = appWith(rateLimit({ client, prefix, algorithm, limit: 3, windowMs, keyGenerator: () => 'k' }))
        const key = expectedRedisKey(prefix, 'k', algorithm)
        for (let i = 0; i < 4; i++) {
          await request(app).get('/')
          const ttl = await client.pTTL(key)
          expect(ttl, `PTTL after request ${i + 1}`).to.be.within(1, longest)
        }
      })

      it(`${algorithm}: a key given back (skipFailedRequests) is deleted or still expires`, async () => {
        const prefix = uniquePrefix('ttl-refund')
        const limiter = rateLimit({
          client,
          prefix,
          algorithm,
          limit: 3,
          windowMs,
          keyGenerator: () => 'k',
          skipFailedRequests: true,
        })
        const app = appWith(limiter)
        const key = expectedRedisKey(prefix, 'k', algorithm)
        expect((await request(app).get('/status/500')).status).to.equal(500)
        expect(await settle(async () => (await limiter.getKey('k'))?.used ?? 0, 0)).to.equal(0)
        const ttl = await client.pTTL(key)
        if (ttl !== -2) expect(ttl).to.be.within(1, longest)
      })
    }

    it('token-bucket with `burst`: expires when the bucket is full again (burst / limit windows)', async () => {
      const prefix = uniquePrefix('ttl-burst')
      const app = appWith(
        rateLimit({ client, prefix, algorithm: 'token-bucket', limit: 1, burst: 4, windowMs, keyGenerator: () => 'k' }),
      )
      for (let i = 0; i < 4; i++) expect((await request(app).get('/')).status).to.equal(200)
      expect(await client.pTTL(expectedRedisKey(prefix, 'k', 'token-bucket'))).to.be.within(3 * windowMs, 4 * windowMs)
    })
  })

  describe("sliding-window's data (the README's data model)", () => {
    const HOUR = 3_600_000
    /** The 32 bytes of a sliding-window key: start, count, previous count, expiry, little-endian doubles. */
    const packed = (start: number, count: number, previous: number, expiresAt: number): Buffer => {
      const value = Buffer.alloc(32)
      for (const [i, n] of [start, count, previous, expiresAt].entries()) value.writeDoubleLE(n, 8 * i)
      return value
    }
    /** Writes a window key as the README documents it, for the current hour on Redis's clock. */
    async function writeWindow(key: string, count: number, previous: number): Promise<number> {
      const now = await redisTimeMs()
      const start = now - (now % HOUR)
      await client.set(key, packed(start, count, previous, start + 2 * HOUR), { PXAT: start + 2 * HOUR })
      return start
    }
    const limiter = (prefix: string, windowMs = HOUR) =>
      rateLimit({ client, prefix, limit: 10, windowMs, keyGenerator: () => 'k' })
    const used = async (app: ReturnType<typeof appWith>): Promise<number> =>
      ((await request(app).get('/info')).body as { used: number }).used

    it('a key written as documented is read and counted on, keeping its expiry', async () => {
      const prefix = uniquePrefix('sw-data')
      const key = expectedRedisKey(prefix, 'k')
      const start = await writeWindow(key, 4, 0)
      const app = appWith(limiter(prefix))
      expect(await used(app)).to.equal(5)
      expect(await used(app)).to.equal(6)
      expect(await slidingWindowState(client, key)).to.deep.equal({
        start,
        count: 6,
        previous: 0,
        expiresAt: start + 2 * HOUR,
      })
      expect(await client.pExpireTime(key)).to.equal(start + 2 * HOUR)
    })

    it("the previous window's count weighs by the share of it still inside the sliding window", async () => {
      const prefix = uniquePrefix('sw-previous')
      const key = expectedRedisKey(prefix, 'k')
      await writeWindow(key, 0, 8)
      const before = await redisTimeMs()
      const seen = await used(appWith(limiter(prefix)))
      const after = await redisTimeMs()
      // used = ceil(8 x (share of the hour left) + 1), the share read between `before` and `after`
      const at = (now: number) => Math.ceil((8 * (HOUR - (now % HOUR))) / HOUR + 1 - 1e-9)
      expect(seen).to.be.within(at(after), at(before))
    })

    it('a key of another window length, or that lost its expiry, counts for nothing and is written anew', async () => {
      const prefix = uniquePrefix('sw-foreign')
      const key = expectedRedisKey(prefix, 'k')
      // Counted with a one-hour window, then read by a limiter of one minute on the same prefix.
      await writeWindow(key, 9, 9)
      expect(await used(appWith(limiter(prefix, 60_000)))).to.equal(1)
      const ttl = await client.pTTL(key)
      expect(ttl, 'PTTL (ms): two one-minute windows at most').to.be.within(60_000, 120_000)
      // A key without its expiry (PERSIST) would let the time read from it drift: it is replaced.
      await writeWindow(key, 9, 9)
      await client.persist(key)
      expect(await used(appWith(limiter(prefix)))).to.equal(1)
      expect(await client.pTTL(key), 'PTTL (ms): within two hours').to.be.within(HOUR, 2 * HOUR)
    })

    it('a hash an earlier version left under the old name (`<prefix>{<key>}`) changes nothing; resetKey deletes it too', async () => {
      const prefix = uniquePrefix('sw-earlier')
      const earlier = expectedClientTag(prefix, 'k')
      const now = await redisTimeMs()
      await client.hSet(earlier, { s: String(now - (now % HOUR)), c: '10', p: '0' })
      await client.pExpire(earlier, 2 * HOUR)
      const middleware = limiter(prefix)
      const app = appWith(middleware)
      expect(await used(app)).to.equal(1)
      expect(await client.hGet(earlier, 'c'), 'the earlier hash is not written').to.equal('10')
      await middleware.resetKey('k')
      expect(await client.exists([earlier, expectedRedisKey(prefix, 'k')])).to.equal(0)
    })
  })

  describe('prefix', () => {
    it("defaults to 'rl:'", async () => {
      const key = `default-prefix-${process.pid}-${Date.now()}`
      const limiter = rateLimit({ client, keyGenerator: () => key, windowMs: '1m', logger: recordingLogger() })
      expect((await request(appWith(limiter)).get('/')).status).to.equal(200)
      expect(await client.exists(`rl:{${key}}:sw`)).to.equal(1)
      await limiter.resetKey(key)
    })

    it('two limiters with different prefixes count separately', async () => {
      const options = { client, limit: 2, windowMs: '1h', keyGenerator: () => 'same-client' } as const
      const first = appWith(rateLimit({ ...options, prefix: uniquePrefix('first') }))
      const second = appWith(rateLimit({ ...options, prefix: uniquePrefix('second') }))
      for (let i = 0; i < 2; i++) expect((await request(first).get('/')).status).to.equal(200)
      expect((await request(first).get('/')).status).to.equal(429)
      for (let i = 0; i < 2; i++) expect((await request(second).get('/')).status).to.equal(200)
      expect((await request(second).get('/')).status).to.equal(429)
    })

    it('two limiters with the same prefix on one client log a warning naming the prefix', async () => {
      const prefix = uniquePrefix('shared')
      const logger = recordingLogger()
      rateLimit({ client, prefix, logger })
      expect(logger.warnings).to.have.length(0)
      rateLimit({ client, prefix, logger })
      expect(logger.warnings).to.have.length(1)
      expect(String(logger.warnings[0]![0])).to.include(prefix)
      rateLimit({ client, prefix: uniquePrefix('other'), logger })
      expect(logger.warnings).to.have.length(1)
      expect(logger.errors).to.have.length(0)
    })

    it('the same prefix on another client is no warning', async () => {
      const other = await connectRedis()
      try {
        const prefix = uniquePrefix('two-clients')
        const logger = recordingLogger()
        rateLimit({ client, prefix, logger })
        rateLimit({ client: other, prefix, logger })
        expect(logger.warnings).to.have.length(0)
      } finally {
        await other.close()
      }
    })
  })
})
