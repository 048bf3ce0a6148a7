import { RedisKitError } from '../shared/errors.js'

/** Turns cached() values into text and back. */
export interface Serializer {
  serialize(value: unknown): string
  deserialize(text: string): unknown
}

const TYPE = '$erk'

/** Binary types kept byte for byte (as base64), by constructor name. */
const BINARY: Record<string, (bytes: Buffer) => unknown> = {
  Buffer: (bytes) => bytes,
  ArrayBuffer: (bytes) => bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength),
  DataView: (bytes) => new DataView(copyOf(bytes)),
  Uint8Array: (bytes) => new Uint8Array(copyOf(bytes)),
  Uint8ClampedArray: (bytes) => new Uint8ClampedArray(copyOf(bytes)),
  Int8Array: (bytes) => new Int8Array(copyOf(bytes)),
  Uint16Array: (bytes) => new Uint16Array(copyOf(bytes)),
  Int16Array: (bytes) => new Int16Array(copyOf(bytes)),
  Uint32Array: (bytes) => new Uint32Array(copyOf(bytes)),
  Int32Array: (bytes) => new Int32Array(copyOf(bytes)),
  Float32Array: (bytes) => new Float32Array(copyOf(bytes)),
  Float64Array: (bytes) => new Float64Array(copyOf(bytes)),
  BigInt64Array: (bytes) => new BigInt64Array(copyOf(bytes)),
  BigUint64Array: (bytes) => new BigUint64Array(copyOf(bytes)),
}

/** The error classes kept as themselves (a subclass of them is an unknown class). */
const ERRORS: Record<string, ErrorConstructor> = {
  Error,
  TypeError,
  RangeError,
  SyntaxError,
  ReferenceError,
  EvalError,
  URIError,
}

/**
 * JSON that gives back exactly what it was given, or refuses it. Besides what JSON keeps, it
 * keeps `undefined`, `NaN`, the infinities, `-0`, `BigInt`, `Date` (an invalid one too),
 * `RegExp`, `Map`, `Set`, `Buffer`, `Uint8Array` (Prisma's `Bytes`) and the other typed arrays,
 * `ArrayBuffer`, `DataView`, the built-in errors (message, stack, cause, own fields),
 * objects with a null prototype, and own properties named `__proto__` (as data: they pollute
 * nothing). It throws `ERK_UNSERIALIZABLE`, naming where in the value, for what it cannot
 * give back as it was: a cycle, a function, a symbol, a sparse array, or an instance of a
 * class it does not know (such as Prisma's `Decimal`: pass a serializer that knows it).
 * A value used twice comes back as two equal copies. An object that happens to have a
 * `$erk` key is escaped, so no stored data is mistaken for a tagged value.
 */
export const typedJson: Serializer = {
  serialize(value) {
    try {
      return JSON.stringify(new Tagger().tag(value, 'value'))
    } catch (error) {
      if (error instanceof RedisKitError) throw error
      if (error instanceof RangeError) throw unserializable('value', 'is nested too deeply')
      throw error
    }
  },
  deserialize(text) {
    return untag(JSON.parse(text))
  },
}

function unserializable(path: string, problem: string): RedisKitError {
  return new RedisKitError(
    'ERK_UNSERIALIZABLE',
    `express-redis-kit cached: cannot store the value: ${path} ${problem}; nothing was stored (pass a serializer that handles it)`,
  )
}

/** One serialization: the objects being walked, to refuse a cycle instead of overflowing the stack. */
class Tagger {
  private readonly ancestors = new Set<object>()

  tag(value: unknown, path: string): unknown {
    switch (typeof value) {
      case 'undefined':
        return { [TYPE]: 'undefined' }
      case 'bigint':
        return { [TYPE]: 'bigint', v: value.toString() }
      case 'number':
        if (!Number.isFinite(value)) return { [TYPE]: 'number', v: String(value) }
        return Object.is(value, -0) ? { [TYPE]: 'number', v: '-0' } : value
      case 'function':
        throw unserializable(path, 'is a function')
      case 'symbol':
        throw unserializable(path, 'is a symbol')
      case 'object':
        if (value === null) return null
        if (this.ancestors.has(value)) throw unserializable(path, 'refers to an object that contains it (a cycle)')
        this.ancestors.add(value)
        try {
          return this.tagObject(value, path)
        } finally {
          this.ancestors.delete(value)
        }
      default:
        return value
    }
  }

  private tagObject(value: object, path: string): unknown {
    const prototype = Object.getPrototypeOf(value)
    if (Array.isArray(value)) {
      if (prototype !== Array.prototype) throw unserializable(path, 'is an instance of an unknown class')
      const out = new Array(value.length)
      for (let i = 0; i < value.length; i++) {
        if (!(i in value)) throw unserializable(`${path}[${i}]`, 'is a hole in a sparse array')
        out[i] = this.tag(value[i], `${path}[${i}]`)
      }
      return out
    }
    if (prototype === Object.prototype) return this.tagFields(value, path, undefined)
    if (prototype === null) return { [TYPE]: 'null-prototype', v: this.tagFields(value, path, undefined) }
    if (value instanceof Date && prototype === Date.prototype) return { [TYPE]: 'Date', v: String(value.getTime()) }
    if (value instanceof RegExp && prototype === RegExp.prototype)
      return { [TYPE]: 'RegExp', v: value.source, f: value.flags }
    if (value instanceof Map && prototype === Map.prototype) {
      return {
        [TYPE]: 'Map',
        v: [...value].map(([k, v], i) => [this.tag(k, `${path} key ${i}`), this.tag(v, `${path}.get(…)`)]),
      }
    }
    if (value instanceof Set && prototype === Set.prototype) {
      return { [TYPE]: 'Set', v: [...value].map((item, i) => this.tag(item, `${path} item ${i}`)) }
    }
    const name = (prototype as { constructor?: { name?: string } }).constructor?.name ?? ''
    if (
      Object.hasOwn(BINARY, name) &&
      prototype === (globalThis as unknown as Record<string, { prototype?: unknown } | undefined>)[name]?.prototype
    ) {
      const view =
        value instanceof ArrayBuffer
          ? Buffer.from(value)
          : Buffer.from(
              (value as ArrayBufferView).buffer,
              (value as ArrayBufferView).byteOffset,
              (value as ArrayBufferView).byteLength,
            )
      return { [TYPE]: 'binary', c: name, v: view.toString('base64') }
    }
    if (value instanceof Error && Object.hasOwn(ERRORS, name) && prototype === ERRORS[name]?.prototype) {
      const error = value as Error & { cause?: unknown }
      const fields = this.tagFields(error, path, new Set(['message', 'stack', 'cause']))
      return {
        [TYPE]: 'Error',
        c: name,
        m: error.message,
        s: error.stack,
        ...('cause' in error ? { x: this.tag(error.cause, `${path}.cause`) } : {}),
        v: fields,
      }
    }
    throw unserializable(path, `is an instance of ${name ? `the class ${name}` : 'an unknown class'}`)
  }

  /** The own enumerable string-keyed fields, tagged (defineProperty: a `__proto__` field stays a field). */
  private tagFields(value: object, path: string, skip: Set<string> | undefined): Record<string, unknown> {
    const out: Record<string, unknown> = {}
    for (const key of Object.keys(value)) {
      if (skip?.has(key)) continue
      const item = this.tag((value as Record<string, unknown>)[key], `${path}.${key}`)
      Object.defineProperty(out, key, { value: item, writable: true, enumerable: true, configurable: true })
    }
    return TYPE in out ? { [TYPE]: 'Object', v: out } : out
  }
}

function untag(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(untag)
  if (value === null || typeof value !== 'object') return value
  const record = value as Record<string, unknown>
  switch (record[TYPE]) {
    case undefined:
      break
    case 'undefined':
      return undefined
    case 'bigint':
      return BigInt(record.v as string)
    case 'number':
      return record.v === '-0' ? -0 : Number(record.v)
    case 'Date':
      return new Date(Number(record.v))
    case 'RegExp':
      return new RegExp(record.v as string, record.f as string)
    case 'Map':
      return new Map((record.v as [unknown, unknown][]).map(([k, v]) => [untag(k), untag(v)]))
    case 'Set':
      return new Set((record.v as unknown[]).map(untag))
    case 'binary': {
      const make = Object.hasOwn(BINARY, record.c as string) ? BINARY[record.c as string] : undefined
      if (!make)
        throw new RedisKitError(
          'ERK_UNSERIALIZABLE',
          'express-redis-kit cached: a stored value has an unknown binary type',
        )
      return make(Buffer.from(record.v as string, 'base64'))
    }
    case 'Error': {
      const Class = Object.hasOwn(ERRORS, record.c as string) ? (ERRORS[record.c as string] as ErrorConstructor) : Error
      const error = new Class(record.m as string)
      Object.defineProperty(error, 'stack', { value: record.s, writable: true, configurable: true, enumerable: false })
      if ('x' in record) {
        Object.defineProperty(error, 'cause', {
          value: untag(record.x),
          writable: true,
          configurable: true,
          enumerable: false,
        })
      }
      for (const [key, item] of Object.entries(untagFields(record.v as Record<string, unknown>) as object)) {
        Object.defineProperty(error, key, { value: item, writable: true, enumerable: true, configurable: true })
      }
      return error
    }
    case 'null-prototype':
      return Object.assign(Object.create(null), untag(record.v))
    case 'Object':
      return untagFields(record.v as Record<string, unknown>)
  }
  return untagFields(record)
}

function untagFields(record: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {}
  for (const [key, item] of Object.entries(record)) {
    Object.defineProperty(out, key, { value: untag(item), writable: true, enumerable: true, configurable: true })
  }
  return out
}

function copyOf(bytes: Buffer): ArrayBuffer {
  return bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) as ArrayBuffer
}
