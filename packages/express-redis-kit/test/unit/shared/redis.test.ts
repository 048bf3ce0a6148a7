import { createHash } from 'node:crypto'
import { expect } from 'chai'
import { createClient, createCluster } from 'redis'
import { RedisKitError } from '../../../src/shared/errors.js'
import {
  clusterSlot,
  encodeKeyPart,
  isCluster,
  isRedisClient,
  type RedisClient,
  runCommand,
  Script,
  withTimeout,
} from '../../../src/shared/redis.js'

const sha256 = (text: string) => `#${createHash('sha256').update(text).digest('base64url')}`

describe('shared Redis helpers', () => {
  describe('encodeKeyPart: a caller-controlled identifier inside a key and its {hash tag}', () => {
    it('short printable ASCII without { } #: kept as it is, readable in redis-cli', () => {
      for (const id of ['203.0.113.7', '2001:db8::/56', 'user@example.com', 'a b', '"quoted"', '~|`!$%^&*()', 'x']) {
        expect(encodeKeyPart(id), id).to.equal(id)
      }
      expect(encodeKeyPart('y'.repeat(200))).to.equal('y'.repeat(200))
    })

    const hashed: [string, string][] = [
      ['an empty string', ''],
      ['an opening brace (would end the hash tag early)', 'a{b'],
      ['a closing brace', 'a}b'],
      ['a leading #', '#abc'],
      ['a # anywhere', 'a#b'],
      ['unicode', 'josé'],
      ['an emoji', '🙂'],
      ['a newline', 'a\nb'],
      ['a NUL', 'a\0b'],
      ['DEL (0x7f)', 'a\x7fb'],
      ['a tab', 'a\tb'],
      ['201 characters', 'y'.repeat(201)],
    ]
    for (const [what, id] of hashed) {
      it(`${what}: # and its SHA-256 in base64url`, () => {
        const encoded = encodeKeyPart(id)
        expect(encoded).to.equal(sha256(id))
        expect(encoded).to.match(/^#[A-Za-z0-9_-]{43}$/)
      })
    }

    it('injective: no raw part starts with #, and distinct identifiers stay distinct', () => {
      const ids = ['#x', sha256('#x'), sha256('#x').slice(1), '', ' ', '{', '}', 'a', 'A']
      const encoded = ids.map(encodeKeyPart)
      expect(new Set(encoded).size).to.equal(ids.length)
      // the encoded form of anything hashed is never what another identifier keeps raw
      expect(encodeKeyPart(sha256('#x'))).not.to.equal(sha256('#x'))
    })
  })

  describe('clusterSlot: CRC16 (XMODEM) mod 16384 of the hash tag or the key, as CLUSTER KEYSLOT says', () => {
    // Each value below is what Redis 7's CLUSTER KEYSLOT answered for the key.
    const slots: [string, number][] = [
      ['123456789', 12739],
      ['foo', 12182],
      ['bar', 5061],
      ['hello', 866],
      ['a', 15495],
      ['', 0],
      ['é', 10180],
      ['{user1000}.following', 3443],
      ['{user1000}.followers', 3443],
      ['user1000', 3443],
      ['foo{bar}{zap}', 5061],
      ['foo{}{bar}', 8363],
      ['foo{{bar}}zap', 4015],
      ['{bar', 4015],
      ['{bar}', 5061],
      ['bar}', 6624],
      ['{}', 15257],
      ['{', 4092],
      ['x}', 11978],
      ['rl:{203.0.113.7}', 8508],
      ['sess:{abc}:x', 7638],
    ]
    for (const [key, slot] of slots)
      it(`${JSON.stringify(key)} → ${slot}`, () => expect(clusterSlot(key)).to.equal(slot))

    it('keys sharing a hash tag share a slot, whatever is around it', () => {
      const slot = clusterSlot('{203.0.113.7}')
      for (const key of ['rl:{203.0.113.7}', 'rl:{203.0.113.7}:block', 'other:{203.0.113.7}:60000'])
        expect(clusterSlot(key), key).to.equal(slot)
    })

    it('always in 0..16383', () => {
      for (let i = 0; i < 2_000; i++) {
        const slot = clusterSlot(`key:${i}:${'\u00ff'.repeat(i % 7)}`)
        expect(slot).to.be.within(0, 16383)
      }
    })
  })

  describe('withTimeout', () => {
    it('a value in time: resolved with it', async () => {
      expect(await withTimeout(Promise.resolve(42), 1_000)).to.equal(42)
    })

    it('no value in time: ERK_REDIS_UNAVAILABLE (503) naming the timeout; the late value goes to onLateValue', async () => {
      let release!: (value: string) => void
      const late = new Promise<string>((resolve) => {
        release = resolve
      })
      let timedOut = 0
      const lateValues: string[] = []
      const error = await withTimeout(
        late,
        5,
        (value) => lateValues.push(value),
        () => timedOut++,
      ).catch((caught: unknown) => caught)
      expect(error).to.be.instanceOf(RedisKitError)
      expect(error).to.include({ code: 'ERK_REDIS_UNAVAILABLE', status: 503 })
      expect((error as Error).message).to.equal('express-redis-kit: Redis did not answer within 5 ms')
      expect(timedOut).to.equal(1)
      release('late')
      await late
      await Promise.resolve()
      expect(lateValues).to.deep.equal(['late'])
    })

    it('a failure: wrapped as ERK_REDIS_UNAVAILABLE with its cause; one of ours passes as it is', async () => {
      const cause = new Error('READONLY You can’t write against a read only replica.')
      const wrapped = await withTimeout(Promise.reject(cause), 1_000).catch((caught: unknown) => caught)
      expect(wrapped).to.include({ code: 'ERK_REDIS_UNAVAILABLE', cause })
      expect((wrapped as Error).message).to.equal(`express-redis-kit: the Redis command failed: ${cause.message}`)
      const ours = new RedisKitError('ERK_INTERNAL', 'ours')
      expect(await withTimeout(Promise.reject(ours), 1_000).catch((caught: unknown) => caught)).to.equal(ours)
    })
  })

  describe('runCommand and Script on a client that is not connected', () => {
    it('reject at once with ERK_REDIS_UNAVAILABLE: nothing waits in the offline queue', async () => {
      const client = createClient() as unknown as RedisClient
      let sent = false
      const error = await runCommand(
        client,
        'k',
        async () => {
          sent = true
        },
        1_000,
      ).catch((caught: unknown) => caught)
      expect(sent).to.equal(false)
      expect(error).to.include({ code: 'ERK_REDIS_UNAVAILABLE', status: 503 })
      expect((error as Error).message).to.equal('express-redis-kit: the Redis client is not connected')
      const script = new Script('return 1', 'test.one')
      const scriptError = await script.run(client, ['k'], [], 1_000).catch((caught: unknown) => caught)
      expect(scriptError).to.include({ code: 'ERK_REDIS_UNAVAILABLE' })
    })

    it('a Script’s SHA1 is the SHA1 of its source, as SCRIPT LOAD computes it', () => {
      const source = "return redis.call('GET', KEYS[1])"
      expect(new Script(source, 'test.get').sha1).to.equal(createHash('sha1').update(source).digest('hex'))
    })
  })

  it('isCluster and isRedisClient', () => {
    const client = createClient()
    const cluster = createCluster({ rootNodes: [{ url: 'redis://127.0.0.1:7000' }] })
    expect(isRedisClient(client)).to.equal(true)
    expect(isRedisClient(cluster)).to.equal(true)
    expect(isCluster(client as unknown as RedisClient)).to.equal(false)
    expect(isCluster(cluster as unknown as RedisClient)).to.equal(true)
    for (const value of [null, undefined, {}, { evalSha() {} }, 'client']) expect(isRedisClient(value)).to.equal(false)
  })
})
