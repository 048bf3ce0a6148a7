import { readFileSync } from 'node:fs'
import { expect } from 'chai'
import express from 'express'
import expressSession from 'express-session'
import request from 'supertest'
import { RedisStore } from '../../src/express-session/index.js'
import {
  cached,
  cacheResponse,
  createNotifier,
  invalidateTags,
  type Notifier,
  rateLimit,
  session,
} from '../../src/index.js'
import { countingApp, eventually, gate, lockKeyOf, responseEntryKey, untilStored } from '../helpers/cache-app.js'
import { recordingLogger } from '../helpers/outage.js'
import { connectRedis, eachKey, mode, type RedisClient, uniquePrefix } from '../helpers/redis.js'
import { sessionApp } from '../helpers/session-app.js'

/*
 * docs/architecture.md's table of Redis keys is true: every feature runs on a prefix of its own,
 * then every key under those prefixes (SCAN on every node) must match a row of the table (its
 * pattern, its type, a TTL exactly when the row says it has one, a writer the row names), and
 * every row must be matched by some key. A failure lists what was found, to fix the table with.
 */

const DOC = new URL('../../../../docs/architecture.md', import.meta.url)

interface Row {
  /** The row as written, for messages. */
  text: string
  pattern: string
  types: string[]
  /** Whether the row says the key expires. */
  expires: boolean
  /** The entry points the row says write it (the backticked names of its "Written by" cell). */
  writers: string[]
}

interface FoundKey {
  key: string
  /** The feature prefix it is under, and the writers that prefix was given to. */
  prefix: string
  writers: string[]
  type: string
  pttl: number
}

/** What each placeholder of the table's patterns stands for. */
const PLACEHOLDERS: Record<string, string> = {
  // a caller-controlled part, encoded: printable ASCII without braces, or # and a hash
  client: '[^{}]+',
  user: '[^{}]+',
  // a cache tag, or on a Cluster one of its copies (<tag>#<j>.<i>)
  'cache tag': '[^{}]+',
  channel: '[^{}]+',
  windowMs: '[0-9]+',
  hash: '[A-Za-z0-9_-]{43}',
  entry: '[A-Za-z0-9_-]{32}',
  tag: '[A-Za-z0-9_-]{11}',
}

const escapeRegExp = (text: string) => text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')

/** The rows of the document's key table. */
function keyTable(): Row[] {
  const lines = readFileSync(DOC, 'utf8').split('\n')
  const header = lines.findIndex((line) => /^\| Key \| Type \| TTL \| Written by \| Read by \|$/.test(line))
  expect(header, 'the key table’s header in docs/architecture.md').to.be.greaterThan(-1)
  const rows: Row[] = []
  for (const line of lines.slice(header + 2)) {
    if (!line.startsWith('|')) break
    const cells = line.split(' | ').map((cell) => cell.replace(/^\| ?| ?\|$/g, '').trim())
    expect(cells, line).to.have.length(5)
    const [key, type, ttl, writtenBy] = cells as [string, string, string, string]
    rows.push({
      text: line,
      pattern: key.replace(/^`|`$/g, ''),
      types: type.split(/,\s*/),
      expires: !ttl.startsWith('none'),
      writers: [...writtenBy.matchAll(/`([^`]+)`/g)].map((match) => match[1]!),
    })
  }
  return rows
}

/** The regular expression of a row's pattern under `prefix`. */
function patternOf(row: Row, prefix: string): RegExp {
  const source = row.pattern
    .split(/(<[^>]+>)/)
    .map((part) => {
      if (!part.startsWith('<')) return escapeRegExp(part)
      const name = part.slice(1, -1)
      if (name === 'prefix') return escapeRegExp(prefix)
      expect(PLACEHOLDERS, `the placeholder ${part} of ${row.pattern}`).to.have.property(name)
      return PLACEHOLDERS[name]
    })
    .join('')
  return new RegExp(`^${source}$`)
}

/** Every key under `base` on every node, with its type and TTL. */
async function scanKeys(base: string, prefixes: Map<string, string[]>): Promise<FoundKey[]> {
  const found: FoundKey[] = []
  await eachKey(base, async (admin, key) => {
    const prefix = [...prefixes.keys()].find((candidate) => key.startsWith(candidate))
    const [type, pttl] = await Promise.all([admin.type(key), admin.pTTL(key)])
    found.push({ key, prefix: prefix ?? '', writers: prefix ? prefixes.get(prefix)! : [], type, pttl })
  })
  return found
}

describe(`docs/architecture.md: the Redis key table (${mode} Redis)`, () => {
  let client: RedisClient
  const notifiers: Notifier[] = []
  before(async () => {
    client = await connectRedis()
  })
  after(async () => {
    await Promise.all(notifiers.map((notifier) => notifier.close()))
    await client.close()
  })

  it('every key the kit writes matches a row (pattern, type, TTL, writer), and every row a key', async () => {
    const base = uniquePrefix('keys')
    /** Each feature's prefix, and the entry points that write under it (as the table names them). */
    const prefixes = new Map<string, string[]>()
    const prefixFor = (name: string, writers: string[]) => {
      const prefix = `${base}${name}:`
      prefixes.set(prefix, writers)
      return prefix
    }
    const logger = recordingLogger()
    // generous: a machine under load must not turn a command into a fallback that writes nothing
    const timeoutMs = 10_000

    // rateLimit: each algorithm, past its limit with a block; and several windows
    for (const algorithm of ['sliding-window', 'fixed-window', 'sliding-log', 'token-bucket'] as const) {
      const limiter = rateLimit({
        client,
        prefix: prefixFor(`rl-${algorithm}`, ['rateLimit']),
        algorithm,
        limit: 1,
        windowMs: '10m',
        blockDuration: '10m',
        logger,
        timeoutMs,
      })
      const app = express()
        .use(limiter)
        .get('/', (_req, res) => void res.send('ok'))
      expect((await request(app).get('/')).status).to.equal(200)
      expect((await request(app).get('/')).status).to.equal(429)
    }
    const windows = rateLimit({
      client,
      prefix: prefixFor('rl-limits', ['rateLimit']),
      limits: [
        { limit: 5, windowMs: '10m' },
        { limit: 50, windowMs: '1h' },
      ],
      logger,
      timeoutMs,
    })
    expect(
      (
        await request(
          express()
            .use(windows)
            .get('/', (_req, res) => void res.send('ok')),
        ).get('/')
      ).status,
    ).to.equal(200)

    // session: a signed-in user (their index), and a guest with data
    const sessions = session({ client, prefix: prefixFor('sess', ['session']), userKey: 'userId', logger, timeoutMs })
    const sessionsApp = sessionApp(sessions)
    expect((await request(sessionsApp).post('/login?user=7')).status).to.equal(200)
    expect((await request(sessionsApp).post('/set/color?value=red')).status).to.equal(200)

    // the cache: a stored tagged response, a fill in progress (its lock), cached(), invalidations
    const cachePrefix = prefixFor('cache', ['cacheResponse', 'cached()', 'invalidateTags'])
    const cache = cacheResponse({
      client,
      prefix: cachePrefix,
      tags: ['products'],
      lockTimeout: '1m',
      logger,
      timeoutMs,
    })
    const held = gate()
    const { app: cacheApp } = countingApp(cache, async (req, res, run) => {
      if (req.path === '/held') await held.promise
      res.send(`run ${run}`)
    })
    expect((await request(cacheApp).get('/stored')).status).to.equal(200)
    await untilStored(client, responseEntryKey(cachePrefix, '/stored'))
    expect((await request(cacheApp).get('/invalidated')).status).to.equal(200)
    await untilStored(client, responseEntryKey(cachePrefix, '/invalidated'))
    expect((await request(cacheApp).post('/invalidated')).status).to.equal(200)
    const fill = request(cacheApp)
      .get('/held')
      .then((res) => res.status)
    const heldLock = lockKeyOf(responseEntryKey(cachePrefix, '/held'))
    await eventually(async () => (await client.exists(heldLock)) === 1, 10_000, 'the lock of a fill in progress')
    expect(
      await cached(client, 'user:7', { prefix: cachePrefix, tags: ['user:7'], logger, timeoutMs }, () => ({ id: 7 })),
    ).to.deep.equal({ id: 7 })
    await invalidateTags(client, ['retired'], { prefix: cachePrefix, timeoutMs })

    // the notifier: pub/sub (no key), durable and fan-out (a stream each)
    for (const notifierMode of ['pubsub', 'durable', 'fanout'] as const) {
      const notifier = createNotifier({
        client,
        prefix: prefixFor(`events-${notifierMode}`, ['createNotifier']),
        mode: notifierMode,
        logger,
        timeoutMs,
      })
      notifiers.push(notifier)
      await notifier.subscribe('orders', () => {})
      await notifier.publish('orders', { id: 1 })
    }

    // the express-session store, with a user index
    const store = new RedisStore({
      client,
      prefix: prefixFor('express-session', ['RedisStore']),
      userKey: 'userId',
      logger,
      timeoutMs,
    })
    const storeApp = express()
      .use(expressSession({ store, secret: 'key table', resave: false, saveUninitialized: false }))
      .post('/login', (req, res) => {
        ;(req.session as unknown as { userId: string }).userId = 'u1'
        res.json({ ok: true })
      })
    expect((await request(storeApp).post('/login')).status).to.equal(200)

    const found = await scanKeys(base, prefixes)
    held.open()
    expect(await fill).to.equal(200)
    await untilStored(client, responseEntryKey(cachePrefix, '/held'))
    // nothing left behind (the streams have no TTL), whatever the verdict: the subscriptions end
    // first (a durable one would create its stream again)
    await Promise.all(notifiers.splice(0).map((notifier) => notifier.close()))
    for (const { key } of await scanKeys(base, prefixes)) await client.unlink(key)

    const rows = keyTable()
    const describeKey = ({ key, type, pttl }: FoundKey) => `${key.slice(base.length)} (${type}, PTTL ${pttl})`
    const unmatched: string[] = []
    const matched = new Set<Row>()
    for (const key of found) {
      const rowsOfKey = rows.filter(
        (row) =>
          key.writers.some((writer) => row.writers.includes(writer)) &&
          patternOf(row, key.prefix).test(key.key) &&
          row.types.includes(key.type),
      )
      const right = rowsOfKey.filter((row) => row.expires === key.pttl > 0)
      if (right.length === 0) {
        unmatched.push(
          `${describeKey(key)}${rowsOfKey.length > 0 ? `: its TTL is not what ${rowsOfKey[0]!.pattern} says` : ''}`,
        )
      }
      for (const row of right) matched.add(row)
    }
    const listing = found.map(describeKey).sort().join('\n  ')
    expect(
      unmatched,
      `keys that no row of docs/architecture.md describes; every key found:\n  ${listing}\n`,
    ).to.deep.equal([])
    const unused = rows.filter((row) => !matched.has(row)).map((row) => row.text)
    expect(unused, `rows of docs/architecture.md that no key matched; every key found:\n  ${listing}\n`).to.deep.equal(
      [],
    )
    // every feature wrote something, but pub/sub
    for (const [prefix, writers] of prefixes) {
      if (prefix.endsWith('events-pubsub:')) {
        expect(
          found.filter((key) => key.prefix === prefix),
          'pub/sub writes no key',
        ).to.deep.equal([])
        continue
      }
      expect(
        found.some((key) => key.prefix === prefix),
        `${writers.join(', ')} under ${prefix}`,
      ).to.equal(true)
    }
  })
})
