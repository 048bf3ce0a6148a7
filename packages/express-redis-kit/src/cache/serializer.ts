/** Turns cached() values into text and back. */
export interface Serializer {
  serialize(value: unknown): string
  deserialize(text: string): unknown
}

const TYPE = '$erk'

/**
 * JSON that keeps the types JSON loses: `Date`, `BigInt`, `Map`, `Set`, `undefined`,
 * `NaN` and the infinities come back as themselves. An object that happens to have a
 * `$erk` key is escaped, so no stored data is mistaken for a tagged value.
 */
export const typedJson: Serializer = {
  serialize(value) {
    return JSON.stringify(tag(value))
  },
  deserialize(text) {
    return untag(JSON.parse(text))
  },
}

function tag(value: unknown): unknown {
  if (value === undefined) return { [TYPE]: 'undefined' }
  if (typeof value === 'bigint') return { [TYPE]: 'bigint', v: value.toString() }
  if (typeof value === 'number' && !Number.isFinite(value)) return { [TYPE]: 'number', v: String(value) }
  if (value instanceof Date) return { [TYPE]: 'Date', v: value.getTime() }
  if (value instanceof Map) return { [TYPE]: 'Map', v: [...value].map(([k, v]) => [tag(k), tag(v)]) }
  if (value instanceof Set) return { [TYPE]: 'Set', v: [...value].map(tag) }
  if (Array.isArray(value)) return value.map(tag)
  if (value !== null && typeof value === 'object') {
    const plain =
      typeof (value as { toJSON?: unknown }).toJSON === 'function' ? (value as { toJSON(): unknown }).toJSON() : value
    if (plain !== value) return tag(plain)
    const out: Record<string, unknown> = {}
    for (const [key, item] of Object.entries(value)) if (item !== undefined) out[key] = tag(item)
    return TYPE in out ? { [TYPE]: 'Object', v: out } : out
  }
  return value
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
      return Number(record.v)
    case 'Date':
      return new Date(record.v as number)
    case 'Map':
      return new Map((record.v as [unknown, unknown][]).map(([k, v]) => [untag(k), untag(v)]))
    case 'Set':
      return new Set((record.v as unknown[]).map(untag))
    case 'Object':
      return untagObject(record.v as Record<string, unknown>)
  }
  return untagObject(record)
}

function untagObject(record: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {}
  for (const [key, item] of Object.entries(record)) {
    Object.defineProperty(out, key, { value: untag(item), writable: true, enumerable: true, configurable: true })
  }
  return out
}
