import { expect } from 'chai'
import { typedJson } from '../../../src/cache/serializer.js'
import { RedisKitError } from '../../../src/shared/errors.js'

const roundTrip = <T>(value: T): T => typedJson.deserialize(typedJson.serialize(value)) as T

/** The error serialize throws for `value` (ERK_UNSERIALIZABLE), or a failure if it stores it. */
function refusal(value: unknown): RedisKitError {
  try {
    typedJson.serialize(value)
  } catch (error) {
    expect(error).to.be.instanceOf(RedisKitError)
    expect(error).to.have.property('code', 'ERK_UNSERIALIZABLE')
    return error as RedisKitError
  }
  throw new Error('it was stored')
}

describe('typedJson: gives back exactly what it was given, or refuses it', () => {
  describe('round trips', () => {
    it('what JSON keeps', () => {
      const value = { a: 1, b: 'two', c: [true, false, null], d: { e: [] }, f: '', g: 0 }
      expect(roundTrip(value)).to.deep.equal(value)
      for (const scalar of [0, 1.5, 'text', true, null, '$erk']) expect(roundTrip(scalar)).to.equal(scalar)
    })

    it('undefined (alone, in arrays, as a field), NaN, the infinities, -0, BigInt beyond 2^53', () => {
      expect(roundTrip(undefined)).to.equal(undefined)
      expect(roundTrip([undefined, 1])).to.deep.equal([undefined, 1])
      const withField = roundTrip({ a: undefined })
      expect(Object.keys(withField)).to.deep.equal(['a'])
      expect(roundTrip(Number.NaN)).to.be.NaN
      expect(roundTrip(Number.POSITIVE_INFINITY)).to.equal(Number.POSITIVE_INFINITY)
      expect(roundTrip(Number.NEGATIVE_INFINITY)).to.equal(Number.NEGATIVE_INFINITY)
      expect(Object.is(roundTrip(-0), -0)).to.equal(true)
      expect(roundTrip(2n ** 100n + 1n)).to.equal(2n ** 100n + 1n)
      expect(roundTrip(-5n)).to.equal(-5n)
    })

    it('Date (an invalid one too), RegExp with its flags', () => {
      const date = new Date('2024-01-15T12:00:00.123Z')
      expect(roundTrip(date)).to.be.instanceOf(Date).and.deep.equal(date)
      expect(Number.isNaN(roundTrip(new Date('nope')).getTime())).to.equal(true)
      const pattern = roundTrip(/a+b\/c/giu)
      expect(pattern).to.be.instanceOf(RegExp)
      expect([pattern.source, pattern.flags]).to.deep.equal(['a+b\\/c', 'giu'])
    })

    it('Map and Set, their keys and items typed too', () => {
      const map = new Map<unknown, unknown>([
        [1, 'one'],
        ['1', new Set([1n, undefined])],
        [new Date(0), { nested: new Map([[null, -0]]) }],
      ])
      const back = roundTrip(map)
      expect(back).to.be.instanceOf(Map)
      expect([...back.keys()]).to.deep.equal([1, '1', new Date(0)])
      expect(back.get('1')).to.deep.equal(new Set([1n, undefined]))
      const nested = [...back.values()][2] as { nested: Map<unknown, number> }
      expect(Object.is(nested.nested.get(null), -0)).to.equal(true)
    })

    it('Buffer, Uint8Array (Prisma Bytes), every typed array, ArrayBuffer, DataView: same class, same bytes', () => {
      const bytes = [0, 1, 127, 128, 255, 0, 10, 13]
      const values: ArrayBufferView[] = [
        Buffer.from(bytes),
        new Uint8Array(bytes),
        new Uint8ClampedArray(bytes),
        new Int8Array(bytes),
        new Uint16Array([0, 65535, 256]),
        new Int16Array([-32768, 32767]),
        new Uint32Array([2 ** 32 - 1]),
        new Int32Array([-(2 ** 31)]),
        new Float32Array([1.5, Number.NaN]),
        new Float64Array([Math.PI, -0]),
        new BigInt64Array([-(2n ** 63n)]),
        new BigUint64Array([2n ** 64n - 1n]),
        new DataView(new Uint8Array(bytes).buffer, 2, 3),
      ]
      for (const value of values) {
        const back = roundTrip(value)
        expect(back.constructor, value.constructor.name).to.equal(value.constructor)
        expect(Buffer.from(back.buffer, back.byteOffset, back.byteLength)).to.deep.equal(
          Buffer.from(value.buffer, value.byteOffset, value.byteLength),
        )
      }
      const buffer = roundTrip(new Uint8Array(bytes).buffer)
      expect(buffer).to.be.instanceOf(ArrayBuffer)
      expect([...new Uint8Array(buffer)]).to.deep.equal(bytes)
    })

    it('a view on part of a larger buffer keeps only its own bytes', () => {
      const whole = Buffer.from('0123456789')
      const back = roundTrip(whole.subarray(3, 6))
      expect(back.toString()).to.equal('345')
      expect(back.byteLength).to.equal(3)
    })

    it('built-in errors: class, message, stack, cause, own fields', () => {
      const cause = new TypeError('inner')
      const error = Object.assign(new RangeError('outer', { cause }), { code: 'E_RANGE', details: { at: 3n } })
      const back = roundTrip(error)
      expect(back).to.be.instanceOf(RangeError)
      expect(back.message).to.equal('outer')
      expect(back.stack).to.equal(error.stack)
      expect(back.cause).to.be.instanceOf(TypeError).and.have.property('message', 'inner')
      expect(back).to.include({ code: 'E_RANGE' })
      expect(back.details).to.deep.equal({ at: 3n })
      expect(Object.keys(back)).to.deep.equal(['code', 'details'])
    })

    it('objects with a null prototype stay so', () => {
      const value = Object.assign(Object.create(null) as Record<string, unknown>, { a: 1 })
      const back = roundTrip(value)
      expect(Object.getPrototypeOf(back)).to.equal(null)
      expect(back.a).to.equal(1)
    })

    it('a value used twice comes back as two equal copies', () => {
      const shared = { n: 1 }
      const back = roundTrip({ x: shared, y: shared })
      expect(back.x).to.deep.equal(shared)
      expect(back.x).not.to.equal(back.y)
    })
  })

  describe('hostile data', () => {
    it('an own __proto__ field is data: it comes back as a field and pollutes nothing', () => {
      const value = JSON.parse('{"__proto__": {"polluted": true}, "a": 1}') as Record<string, unknown>
      const back = roundTrip(value)
      expect(Object.hasOwn(back, '__proto__')).to.equal(true)
      expect(Object.getPrototypeOf(back)).to.equal(Object.prototype)
      expect((back as { polluted?: unknown }).polluted).to.equal(undefined)
      expect(({} as { polluted?: unknown }).polluted).to.equal(undefined)
    })

    it('stored text with __proto__ (not written by serialize) pollutes nothing either', () => {
      const back = typedJson.deserialize('{"__proto__": {"polluted": true}}') as Record<string, unknown>
      expect(Object.getPrototypeOf(back)).to.equal(Object.prototype)
      expect(({} as { polluted?: unknown }).polluted).to.equal(undefined)
    })

    it('data that looks like a tagged value is escaped, and comes back as the data it was', () => {
      const lookalikes = [
        { $erk: 'Date', v: '0' },
        { $erk: 'undefined' },
        { $erk: 'binary', c: 'Function', v: '' },
        { $erk: 'Object', v: { $erk: 'bigint', v: '1' } },
      ]
      for (const value of lookalikes) expect(roundTrip(value), JSON.stringify(value)).to.deep.equal(value)
    })

    it('stored text naming an unknown binary class: ERK_UNSERIALIZABLE, nothing constructed', () => {
      expect(() => typedJson.deserialize('{"$erk":"binary","c":"Function","v":""}'))
        .to.throw(RedisKitError)
        .with.property('code', 'ERK_UNSERIALIZABLE')
      expect(() => typedJson.deserialize('{"$erk":"binary","c":"constructor","v":""}')).to.throw(RedisKitError)
    })

    it('stored text naming an unknown error class: a plain Error', () => {
      const back = typedJson.deserialize('{"$erk":"Error","c":"AggregateErrorX","m":"m","s":"stack","v":{}}')
      expect(back).to.be.instanceOf(Error)
      expect(Object.getPrototypeOf(back)).to.equal(Error.prototype)
    })
  })

  describe('refused, naming where in the value: ERK_UNSERIALIZABLE, nothing stored', () => {
    const cases: [string, () => unknown, string][] = [
      ['a function', () => ({ a: { b: () => 1 } }), 'value.a.b is a function'],
      ['a symbol', () => [1, Symbol('s')], 'value[1] is a symbol'],
      [
        'a cycle',
        () => {
          const a: Record<string, unknown> = {}
          a.self = { back: a }
          return a
        },
        'value.self.back refers to an object that contains it (a cycle)',
      ],
      [
        'a sparse array',
        () => {
          const list = new Array<number>(3)
          list[0] = 1
          list[2] = 3
          return { list }
        },
        'value.list[1] is a hole in a sparse array',
      ],
      [
        'an instance of a class',
        () => {
          class Decimal {
            constructor(readonly digits: string) {}
          }
          return { price: new Decimal('1.10') }
        },
        'value.price is an instance of the class Decimal',
      ],
      ['a subclass of Map', () => new (class Registry extends Map {})(), 'value is an instance of the class Registry'],
      [
        'a subclass of a built-in error',
        () => ({ error: new (class HttpError extends Error {})('x') }),
        'value.error is an instance of the class HttpError',
      ],
      ['an array subclass', () => new (class List extends Array {})(), 'value is an instance of an unknown class'],
      ['a WeakMap', () => new WeakMap(), 'value is an instance of the class WeakMap'],
      ['a Promise', () => ({ p: Promise.resolve(1) }), 'value.p is an instance of the class Promise'],
      ['a function in a Map value', () => new Map([['k', () => 1]]), 'value.get(…) is a function'],
      ['a symbol in a Set', () => new Set([Symbol('s')]), 'value item 0 is a symbol'],
      ['a function in an error’s cause', () => new Error('x', { cause: () => 1 }), 'value.cause is a function'],
    ]
    for (const [what, make, message] of cases) {
      it(what, () => {
        expect(refusal(make()).message).to.equal(
          `express-redis-kit cached: cannot store the value: ${message}; nothing was stored (pass a serializer that handles it)`,
        )
      })
    }

    it('nesting too deep for the stack: refused, not a RangeError', () => {
      let deep: unknown = 1
      for (let i = 0; i < 100_000; i++) deep = [deep]
      expect(refusal(deep).message).to.include('value is nested too deeply')
    })
  })
})
