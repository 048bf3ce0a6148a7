import { setTimeout as sleep } from 'node:timers/promises'
import { expect } from 'chai'
import { type CachedOptions, cached, invalidateTags, type Serializer, typedJson } from '../../src/index.js'
import { cachedEntryKey, eventually } from '../helpers/cache-app.js'
import { recordingLogger } from '../helpers/outage.js'
import { connectRedis, mode, type RedisClient, uniquePrefix } from '../helpers/redis.js'

/*
 * Issue 4: "cached(): read-through with the same stampede protection, tag invalidation and
 * stale options. Distinguish a cached null/0/''/false from a miss; cache "not found" (null)
 * for negativeTtl (default short). Round-trip values with their types (a Date stays a Date,
 * BigInt stays BigInt), with a pluggable serializer. A loader that throws caches nothing and
 * rethrows to the caller."
 */
describe(`cached() (${mode} Redis)`, () => {
  let client: RedisClient
  before(async () => {
    client = await connectRedis()
  })
  after(async () => {
    await client.close()
  })

  /** A counting loader over `cached` with its own prefix: `value(run)` is what run `run` returns. */
  const counting = <T>(value: (run: number) => T | Promise<T>, options: Partial<CachedOptions> = {}) => {
    const prefix = uniquePrefix('cached')
    const state = { loads: 0, prefix }
    const call = (key = 'key') =>
      cached(client, key, { prefix, ttl: '1m', ...options }, () => {
        state.loads++
        return value(state.loads)
      })
    return { call, state }
  }

  describe('read-through', () => {
    it('a miss runs the loader and stores its value; a hit does not run it', async () => {
      const { call, state } = counting((run) => ({ run }))
      expect(await call()).to.deep.equal({ run: 1 })
      expect(await call()).to.deep.equal({ run: 1 })
      expect(await call('other')).to.deep.equal({ run: 2 })
      expect(state.loads).to.equal(2)
    })

    it('an async loader: its resolved value is stored', async () => {
      const { call, state } = counting(async (run) => {
        await sleep(10)
        return `async ${run}`
      })
      expect(await call()).to.equal('async 1')
      expect(await call()).to.equal('async 1')
      expect(state.loads).to.equal(1)
    })

    it('expires after ttl: the loader runs again', async () => {
      const { call, state } = counting((run) => run, { ttl: '300ms' })
      expect(await call()).to.equal(1)
      expect(await call()).to.equal(1)
      await sleep(400)
      expect(await call()).to.equal(2)
      expect(state.loads).to.equal(2)
    })

    for (const [name, value] of [
      ['null', null],
      ['0', 0],
      ["''", ''],
      ['false', false],
      ['undefined', undefined],
      ['NaN', Number.NaN],
    ] as const) {
      it(`a cached ${name} is a hit: the loader runs once`, async () => {
        const { call, state } = counting(() => value)
        for (let i = 0; i < 3; i++) {
          const result = await call()
          if (Number.isNaN(value)) expect(Number.isNaN(result)).to.equal(true)
          else expect(result).to.equal(value)
        }
        expect(state.loads).to.equal(1)
      })
    }
  })

  describe('negativeTtl', () => {
    it("null (not found) is cached for negativeTtl ('300ms'), then the loader runs again", async () => {
      const { call, state } = counting((run) => (run === 1 ? null : { found: run }), { negativeTtl: '300ms' })
      expect(await call()).to.equal(null)
      expect(await call()).to.equal(null)
      expect(state.loads).to.equal(1)
      await sleep(400)
      expect(await call()).to.deep.equal({ found: 2 })
      expect(state.loads).to.equal(2)
    })

    it('a found value keeps its ttl, not negativeTtl', async () => {
      const { call, state } = counting((run) => run, { negativeTtl: '300ms' })
      await call()
      await sleep(400)
      expect(await call()).to.equal(1)
      expect(state.loads).to.equal(1)
    })

    it('the default negativeTtl is short (30 s) even with a long ttl', async () => {
      const { call, state } = counting(() => null, { ttl: '1h' })
      await call()
      const ttl = await client.pTTL(cachedEntryKey(state.prefix, 'key'))
      expect(ttl).to.be.within(25_000, 30_000)
    })
  })

  describe('types (typedJson, the default serializer)', () => {
    it('a Date stays a Date, a BigInt stays a BigInt, Map and Set round-trip, nested', async () => {
      const value = {
        at: new Date('2026-11-05T10:20:30.456Z'),
        big: 12345678901234567890123n,
        negative: -5n,
        map: new Map<unknown, unknown>([
          ['a', 1],
          [2, new Date(0)],
        ]),
        set: new Set(['x', 3n]),
        list: [new Date(1), 1n, null],
        infinity: Number.POSITIVE_INFINITY,
        nested: { deeper: { when: new Date(86_400_000) } },
      }
      const { call } = counting(() => value)
      await call()
      const hit = await call()
      expect(hit).not.to.equal(value)
      expect(hit.at).to.be.instanceOf(Date)
      expect(hit.at.toISOString()).to.equal('2026-11-05T10:20:30.456Z')
      expect(hit.big).to.equal(12345678901234567890123n)
      expect(hit.negative).to.equal(-5n)
      expect(hit.map).to.be.instanceOf(Map)
      expect([...hit.map.keys()]).to.deep.equal(['a', 2])
      expect(hit.map.get(2)).to.be.instanceOf(Date)
      expect(hit.set).to.be.instanceOf(Set)
      expect([...hit.set]).to.deep.equal(['x', 3n])
      expect(hit.list[0]).to.be.instanceOf(Date)
      expect(hit.list.slice(1)).to.deep.equal([1n, null])
      expect(hit.infinity).to.equal(Number.POSITIVE_INFINITY)
      expect(hit.nested.deeper.when).to.be.instanceOf(Date)
      expect(hit).to.deep.equal(value)
    })

    it('a plain object with a `$erk` key round-trips as the plain object it is', async () => {
      const value = {
        $erk: 'Date',
        v: 5,
        inner: { $erk: 'bigint', v: '7' },
        list: [{ $erk: 'Map', v: [] }],
      }
      const { call } = counting(() => value)
      await call()
      const hit = await call()
      expect(hit).to.deep.equal(value)
      expect(hit.inner).not.to.be.a('bigint')
    })

    it('a BigInt at the top level and a Date at the top level', async () => {
      const big = counting(() => 2n ** 70n)
      await big.call()
      expect(await big.call()).to.equal(2n ** 70n)
      const date = counting(() => new Date(42))
      await date.call()
      const hit = await date.call()
      expect(hit).to.be.instanceOf(Date)
      expect(hit.getTime()).to.equal(42)
    })
  })

  describe('types JSON loses: given back exactly, or refused with ERK_UNSERIALIZABLE', () => {
    /** The value a hit returns, after a miss stored `value`. */
    const roundTrip = async <T>(value: T): Promise<T> => {
      const { call, state } = counting(() => value)
      expect(await call(), 'the miss returns the loader value itself').to.equal(value)
      const hit = await call()
      expect(state.loads, 'the second call was a hit').to.equal(1)
      return hit
    }

    it('a Buffer (Prisma Bytes as Buffer) comes back as a Buffer, byte for byte', async () => {
      const bytes = Buffer.from([0, 1, 127, 128, 254, 255])
      const hit = await roundTrip({ avatar: bytes })
      expect(Buffer.isBuffer(hit.avatar)).to.equal(true)
      expect(hit.avatar.equals(bytes)).to.equal(true)
    })

    it('a Uint8Array (Prisma 6+ Bytes) comes back as a Uint8Array, not a Buffer; other typed arrays and ArrayBuffer too', async () => {
      const hit = await roundTrip({
        bytes: new Uint8Array([1, 2, 3]),
        floats: new Float64Array([1.5, -0, Number.NaN]),
        bigs: new BigInt64Array([-(2n ** 63n)]),
        raw: new Uint8Array([9, 8]).buffer,
        slice: new Uint8Array([0, 1, 2, 3]).subarray(1, 3),
      })
      expect(hit.bytes).to.be.instanceOf(Uint8Array)
      expect(Buffer.isBuffer(hit.bytes)).to.equal(false)
      expect([...hit.bytes]).to.deep.equal([1, 2, 3])
      expect(hit.floats).to.be.instanceOf(Float64Array)
      expect(Object.is(hit.floats[1], -0) && Number.isNaN(hit.floats[2])).to.equal(true)
      expect(hit.bigs[0]).to.equal(-(2n ** 63n))
      expect(hit.raw).to.be.instanceOf(ArrayBuffer)
      expect([...new Uint8Array(hit.raw)]).to.deep.equal([9, 8])
      expect([...hit.slice]).to.deep.equal([1, 2])
    })

    it('RegExp (source and flags), -0, an invalid Date', async () => {
      const hit = await roundTrip({ pattern: /^a+b$/giu, zero: -0, never: new Date(Number.NaN) })
      expect(hit.pattern).to.be.instanceOf(RegExp)
      expect([hit.pattern.source, hit.pattern.flags]).to.deep.equal(['^a+b$', 'giu'])
      expect(Object.is(hit.zero, -0)).to.equal(true)
      expect(hit.never).to.be.instanceOf(Date)
      expect(Number.isNaN(hit.never.getTime())).to.equal(true)
      expect(Object.is(await roundTrip(-0), -0)).to.equal(true)
    })

    it('a built-in Error: its class, message, stack, cause and own fields', async () => {
      const error = Object.assign(new RangeError('out of range', { cause: new Error('root') }), { code: 'E_RANGE' })
      const hit = await roundTrip({ error })
      expect(hit.error).to.be.instanceOf(RangeError)
      expect(hit.error.message).to.equal('out of range')
      expect(hit.error.stack).to.equal(error.stack)
      expect((hit.error.cause as Error).message).to.equal('root')
      expect(hit.error.code).to.equal('E_RANGE')
    })

    it('an own `__proto__` field stays a field (no prototype is changed), a null-prototype object stays one', async () => {
      const value = JSON.parse('{"__proto__": {"admin": true}, "name": "x"}') as Record<string, unknown>
      const hit = await roundTrip(value)
      expect(Object.getPrototypeOf(hit)).to.equal(Object.prototype)
      expect(Object.hasOwn(hit, '__proto__')).to.equal(true)
      expect((hit as { admin?: boolean }).admin).to.equal(undefined)
      expect(({} as { admin?: boolean }).admin).to.equal(undefined)
      const bare = Object.assign(Object.create(null) as Record<string, number>, { a: 1 })
      const bareHit = await roundTrip(bare)
      expect(Object.getPrototypeOf(bareHit)).to.equal(null)
      expect(bareHit.a).to.equal(1)
    })

    const cyclic: Record<string, unknown> = { name: 'a' }
    cyclic.self = { parent: cyclic }
    class Decimal {
      constructor(readonly value: string) {}
      toJSON() {
        return this.value
      }
    }
    // biome-ignore lint/suspicious/noSparseArray: a sparse array is what this case is about.
    const sparse = [1, , 3]
    let deep: Record<string, unknown> = {}
    const deepRoot = deep
    for (let i = 0; i < 20_000; i++) {
      deep.next = {}
      deep = deep.next as Record<string, unknown>
    }
    for (const [what, value, named] of [
      ['a cycle', cyclic, 'value.self.parent'],
      ['a function', { onClick: () => 1 }, 'value.onClick'],
      ['a symbol', { kind: Symbol('k') }, 'value.kind'],
      ['a sparse array', { list: sparse }, 'value.list[1]'],
      [
        'an instance of a class it does not know (Prisma Decimal has toJSON)',
        { price: new Decimal('9.99') },
        'value.price',
      ],
      ['a subclass of Error', { error: new (class AppError extends Error {})('x') }, 'value.error'],
      ['a value nested too deeply for the stack', deepRoot, 'value'],
    ] as const) {
      it(`${what}: the call rejects with ERK_UNSERIALIZABLE naming ${named}; nothing is stored, the lock is given back`, async () => {
        const { call, state } = counting(() => value)
        const error = await call().then(
          () => undefined,
          (reason: unknown) => reason,
        )
        expect(error).to.include({ code: 'ERK_UNSERIALIZABLE' })
        expect((error as Error).message).to.include(named)
        expect(await client.exists(cachedEntryKey(state.prefix, 'key'))).to.equal(0)
        // The lock was given back: the next call runs the loader at once (no wait for lockTimeout).
        const next = await call().catch(() => undefined)
        expect(next).to.equal(undefined)
        expect(state.loads).to.equal(2)
      })
    }

    it('a custom serializer that throws: ERK_UNSERIALIZABLE with its error as the cause', async () => {
      const failing: Serializer = {
        serialize() {
          throw new Error('cannot')
        },
        deserialize: (text) => text,
      }
      const { call } = counting(() => 1, { serializer: failing })
      const error = (await call().catch((reason: unknown) => reason)) as Error & { code: string }
      expect(error.code).to.equal('ERK_UNSERIALIZABLE')
      expect((error.cause as Error).message).to.equal('cannot')
    })
  })

  describe('serializer', () => {
    it('a custom serializer is used to store and to read the value', async () => {
      const calls = { serialize: 0, deserialize: 0 }
      const reversed: Serializer = {
        serialize(value) {
          calls.serialize++
          return `custom:${JSON.stringify(value).split('').reverse().join('')}`
        },
        deserialize(text) {
          calls.deserialize++
          return { ...JSON.parse(text.slice('custom:'.length).split('').reverse().join('')), viaCustom: true }
        },
      }
      const { call, state } = counting((run) => ({ run }), { serializer: reversed })
      expect(await call()).to.deep.equal({ run: 1 })
      expect(calls.serialize).to.equal(1)
      const stored = await client.hGet(cachedEntryKey(state.prefix, 'key'), 'b:')
      expect(stored).to.equal('custom:}1:"nur"{')
      expect(await call()).to.deep.equal({ run: 1, viaCustom: true })
      expect(calls.deserialize).to.equal(1)
      expect(state.loads).to.equal(1)
    })

    it('typedJson is exported and is the default', async () => {
      const { call, state } = counting(() => new Date(7))
      await call()
      const stored = await client.hGet(cachedEntryKey(state.prefix, 'key'), 'b:')
      expect(stored).to.equal(typedJson.serialize(new Date(7)))
    })

    it('a stored value the serializer cannot read is loaded again, with a warning', async () => {
      const logger = recordingLogger()
      const { call, state } = counting((run) => ({ run }), { logger })
      await call()
      await client.hSet(cachedEntryKey(state.prefix, 'key'), 'b:', '{not json')
      expect(await call()).to.deep.equal({ run: 2 })
      expect(logger.warnings).to.have.length(1)
      expect(String(logger.warnings[0]?.[0])).to.include('could not be read')
    })
  })

  describe('a loader that throws', () => {
    it('caches nothing and rethrows the same error; the next call runs the loader again', async () => {
      const failure = new Error('database down')
      const { call, state } = counting((run) => {
        if (run === 1) throw failure
        return `run ${run}`
      })
      let caught: unknown
      try {
        await call()
      } catch (error) {
        caught = error
      }
      expect(caught).to.equal(failure)
      expect(await client.exists(cachedEntryKey(state.prefix, 'key'))).to.equal(0)
      expect(await call()).to.equal('run 2')
      expect(await call()).to.equal('run 2')
      expect(state.loads).to.equal(2)
    })

    it('a loader that rejects while other callers wait: its caller gets the error, one waiter loads again, the rest get that value', async () => {
      const failure = new Error('rejected')
      const { call, state } = counting(async (run) => {
        await sleep(100)
        if (run === 1) throw failure
        return 'ok'
      })
      const results = await Promise.allSettled([call(), call(), call()])
      expect(results.filter((result) => result.status === 'rejected').map((result) => result.reason)).to.deep.equal([
        failure,
      ])
      expect(results.filter((result) => result.status === 'fulfilled').map((result) => result.value)).to.deep.equal([
        'ok',
        'ok',
      ])
      expect(state.loads).to.equal(2)
    })
  })

  describe('single flight', () => {
    it('20 concurrent calls of a missing key run the loader once; all get its value', async () => {
      const { call, state } = counting(async (run) => {
        await sleep(200)
        return { run, at: new Date(run) }
      })
      const values = await Promise.all(Array.from({ length: 20 }, () => call()))
      expect(state.loads).to.equal(1)
      for (const value of values) {
        expect(value.run).to.equal(1)
        expect(value.at).to.be.instanceOf(Date)
      }
    })

    it('20 concurrent calls over 4 connections (as 4 instances would) run the loader once', async () => {
      const others = await Promise.all(Array.from({ length: 3 }, () => connectRedis()))
      try {
        const prefix = uniquePrefix('cached-instances')
        let loads = 0
        const loader = async () => {
          loads++
          await sleep(200)
          return 'shared'
        }
        const clients = [client, ...others]
        const values = await Promise.all(
          Array.from({ length: 20 }, (_, i) => cached(clients[i % 4]!, 'key', { prefix, ttl: '1m' }, loader)),
        )
        expect(loads).to.equal(1)
        expect(new Set(values)).to.deep.equal(new Set(['shared']))
      } finally {
        await Promise.all(others.map((other) => other.close()))
      }
    })
  })

  describe('staleWhileRevalidate', () => {
    it('after the ttl: the stale value at once (to every caller), one refresh in the background, then the new value', async () => {
      const { call, state } = counting(
        async (run) => {
          if (run > 1) await sleep(300)
          return `version ${run}`
        },
        { ttl: '300ms', staleWhileRevalidate: '5s' },
      )
      expect(await call()).to.equal('version 1')
      await sleep(400)
      const started = Date.now()
      const values = await Promise.all(Array.from({ length: 10 }, () => call()))
      expect(Date.now() - started, 'stale answers took (ms)').to.be.below(300)
      expect(new Set(values)).to.deep.equal(new Set(['version 1']))
      await eventually(async () => (await call()) === 'version 2', 5_000, 'the refreshed value')
      expect(state.loads).to.equal(2)
    })

    it('past ttl + staleWhileRevalidate: the caller waits for the loader', async () => {
      const { call, state } = counting((run) => `version ${run}`, { ttl: '300ms', staleWhileRevalidate: '300ms' })
      await call()
      await sleep(700)
      expect(await call()).to.equal('version 2')
      expect(state.loads).to.equal(2)
    })
  })

  describe('staleIfError', () => {
    it('the loader throws after the ttl: the stale value', async () => {
      const { call, state } = counting(
        (run) => {
          if (run > 1) throw new Error('database down')
          return 'good'
        },
        { ttl: '300ms', staleIfError: '5s' },
      )
      expect(await call()).to.equal('good')
      await sleep(400)
      expect(await call()).to.equal('good')
      expect(await call()).to.equal('good')
      expect(state.loads).to.equal(3)
    })

    it('without staleIfError: the error reaches the caller', async () => {
      const failure = new Error('database down')
      const { call } = counting(
        (run) => {
          if (run > 1) throw failure
          return 'good'
        },
        { ttl: '300ms' },
      )
      await call()
      await sleep(400)
      let caught: unknown
      await call().catch((error: unknown) => {
        caught = error
      })
      expect(caught).to.equal(failure)
    })

    it('past ttl + staleIfError: the error reaches the caller', async () => {
      const { call } = counting(
        (run) => {
          if (run > 1) throw new Error('database down')
          return 'good'
        },
        { ttl: '300ms', staleIfError: '300ms' },
      )
      await call()
      await sleep(700)
      let caught: unknown
      await call().catch((error: unknown) => {
        caught = error
      })
      expect(caught).to.be.instanceOf(Error)
    })
  })

  describe('tags', () => {
    it('invalidateTags removes the values carrying any of the tags, and no other', async () => {
      const prefix = uniquePrefix('cached-tags')
      let loads = 0
      const load = (key: string, tags: string[]) =>
        cached(client, key, { prefix, ttl: '1m', tags }, () => `${key} ${++loads}`)
      await load('user:1', ['user:1', 'users'])
      await load('user:2', ['user:2', 'users'])
      await load('stats', ['stats'])
      expect(await invalidateTags(client, ['user:1', 'nothing'], { prefix })).to.equal(1)
      expect(await load('user:1', ['user:1', 'users'])).to.equal('user:1 4')
      expect(await load('user:2', ['user:2', 'users'])).to.equal('user:2 2')
      expect(await invalidateTags(client, ['users'], { prefix })).to.equal(2)
      expect(await load('user:2', ['user:2', 'users'])).to.equal('user:2 5')
      expect(await load('stats', ['stats'])).to.equal('stats 3')
    })
  })

  describe('validation', () => {
    const invalid: [string, Partial<CachedOptions>, string][] = [
      ["ttl 'x'", { ttl: 'x' as never }, 'ttl'],
      ['ttl 0', { ttl: 0 as never }, 'ttl'],
      ["tags 'a'", { tags: 'a' as never }, 'tags'],
      ["tags ['']", { tags: [''] }, 'tags'],
      ['negativeTtl -1', { negativeTtl: -1 }, 'negativeTtl'],
      ['serializer {}', { serializer: {} as never }, 'serializer'],
      ["prefix 'a{b'", { prefix: 'a{b' }, 'prefix'],
      ["staleWhileRevalidate 'soon'", { staleWhileRevalidate: 'soon' as never }, 'staleWhileRevalidate'],
      ['timeoutMs 0', { timeoutMs: 0 }, 'timeoutMs'],
    ]
    for (const [description, options, option] of invalid) {
      it(`${description}: TypeError ERK_INVALID_OPTION naming \`${option}\`; the loader never runs`, async () => {
        let loads = 0
        let caught: unknown
        try {
          await cached(client, 'key', { prefix: uniquePrefix('cached-invalid'), ...options }, () => ++loads)
        } catch (error) {
          caught = error
        }
        expect(caught).to.be.instanceOf(TypeError)
        expect(caught).to.have.property('code', 'ERK_INVALID_OPTION')
        expect((caught as Error).message).to.include(`\`${option}\``)
        expect(loads).to.equal(0)
      })
    }

    it('an empty key: TypeError naming `key`', async () => {
      let caught: unknown
      await cached(client, '', {}, () => 1).catch((error: unknown) => {
        caught = error
      })
      expect(caught).to.be.instanceOf(TypeError)
      expect((caught as Error).message).to.include('`key`')
    })
  })
})
