import { execFile, spawn } from 'node:child_process'
import { mkdtemp, rm } from 'node:fs/promises'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { createClient, createCluster, type RedisClientType, type RedisClusterType } from 'redis'

/**
 * The clients the tests hold: node-redis clients and clusters, with every command typed (the
 * package's own `RedisClient` type names only what it calls).
 */
export type RedisClient = SingleClient | RedisClusterType<NoModules, NoModules, NoModules, 3, NoModules>

/** What createClient() and createCluster() are typed with when given no modules, scripts or type mapping. */
// biome-ignore lint/complexity/noBannedTypes: node-redis's own type for "none".
type NoModules = {}
type SingleClient = RedisClientType<NoModules, NoModules, NoModules, 3, NoModules>

/** The suite runs once against a single Redis and once against a Redis Cluster. */
export const mode: 'single' | 'cluster' = process.env.REDIS_MODE === 'cluster' ? 'cluster' : 'single'
export const redisUrl = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379'
export const clusterNodes = (process.env.CLUSTER_NODES ?? '127.0.0.1:7000,127.0.0.1:7001,127.0.0.1:7002')
  .split(',')
  .map((address) => ({ url: `redis://${address}` }))

/** A connected client of the suite's mode. Close it with `client.close()` (or `quit`). */
export async function connectRedis(): Promise<RedisClient> {
  if (mode === 'cluster') {
    const cluster = createCluster({ rootNodes: clusterNodes })
    cluster.on('error', () => {})
    await cluster.connect()
    return cluster
  }
  const client = createClient({ url: redisUrl })
  client.on('error', () => {})
  await client.connect()
  return client
}

/** Every address of the suite's Redis (one, or each cluster master). */
export function redisAddresses(): { host: string; port: number }[] {
  const urls = mode === 'cluster' ? clusterNodes.map((node) => node.url) : [redisUrl]
  return urls.map((url) => {
    const parsed = new URL(url)
    return { host: parsed.hostname, port: Number(parsed.port || 6379) }
  })
}

/**
 * Calls `visit` with every key under `prefix` on the suite's Redis (SCAN on each node: every
 * master of the Cluster), and a client of the node that holds it.
 */
export async function eachKey(
  prefix: string,
  visit: (admin: SingleClient, key: string) => Promise<void>,
): Promise<void> {
  for (const address of redisAddresses()) {
    const admin: SingleClient = createClient({ socket: address })
    admin.on('error', () => {})
    await admin.connect()
    try {
      for await (const keys of admin.scanIterator({ MATCH: `${prefix}*`, COUNT: 1000 })) {
        for (const key of keys) await visit(admin, key)
      }
    } finally {
      admin.destroy()
    }
  }
}

/**
 * Every key under `prefix` on the suite's Redis, with its whole content as strings: a hash's
 * fields and values, a sorted set's members and scores, a string's value.
 */
export async function dumpKeys(prefix: string): Promise<Map<string, string[]>> {
  const dump = new Map<string, string[]>()
  await eachKey(prefix, async (admin, key) => {
    const type = await admin.type(key)
    let content: string[] = []
    if (type === 'hash') content = Object.entries(await admin.hGetAll(key)).flat()
    else if (type === 'zset')
      content = (await admin.zRangeWithScores(key, 0, -1)).flatMap(({ value, score }) => [value, String(score)])
    else if (type === 'string') content = [String(await admin.get(key))]
    else if (type === 'set') content = (await admin.sMembers(key)).map(String)
    dump.set(key, content)
  })
  return dump
}

let counter = 0
/** A key prefix no other test uses, so tests never see each other's keys. */
export function uniquePrefix(name = 'test'): string {
  counter += 1
  return `t:${name}:${process.pid}:${Date.now().toString(36)}:${counter}:`
}

/** Pauses every Redis of the suite (CLIENT PAUSE ALL) for `ms`, as a stalled server. */
export async function pauseRedis(ms: number): Promise<void> {
  for (const address of redisAddresses()) {
    const admin = createClient({ socket: address })
    admin.on('error', () => {})
    await admin.connect()
    await admin.sendCommand(['CLIENT', 'PAUSE', String(ms), 'ALL'])
    admin.destroy()
  }
}

/** A throwaway redis-server of our own on a free port, that a test may stop or kill. */
export interface DisposableRedis {
  port: number
  url: string
  stop(): Promise<void>
}

export async function startDisposableRedis(): Promise<DisposableRedis> {
  const port = await freePort()
  const server = spawn(
    'redis-server',
    ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'],
    {
      stdio: 'ignore',
    },
  )
  const url = `redis://127.0.0.1:${port}`
  for (let attempt = 0; attempt < 100; attempt++) {
    const probe = createClient({ url, socket: { reconnectStrategy: false } })
    probe.on('error', () => {})
    try {
      await probe.connect()
      probe.destroy()
      break
    } catch {
      await sleep(50)
    }
  }
  return {
    port,
    url,
    async stop() {
      if (server.exitCode !== null || server.signalCode !== null) return
      const exited = new Promise((resolve) => server.once('exit', resolve))
      server.kill('SIGKILL')
      await exited
    },
  }
}

/**
 * A client of a disposable Redis that retries every 100 ms while it is down (what outage tests
 * need) and whose connection errors are expected, so not reported. `options` may add to it.
 */
export async function connectTo(
  redis: DisposableRedis,
  options: { commandOptions?: { timeout?: number } } = {},
): Promise<SingleClient> {
  const client = createClient({ url: redis.url, socket: { reconnectStrategy: () => 100 }, ...options })
  client.on('error', () => {})
  await client.connect()
  return client
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer()
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number }
      server.close(() => resolve(port))
    })
  })
}

/** A throwaway 3-master Redis Cluster of our own, whose nodes a test may kill. */
export interface DisposableCluster {
  ports: number[]
  addresses: { host: string; port: number }[]
  /** A new cluster client connected to it. */
  connect(): Promise<RedisClient>
  /** Kills the master that serves `key`'s slot; resolves with its port. */
  killMasterOf(key: string): Promise<number>
  /** Kills every node (SIGKILL); safe to call more than once. */
  stop(): Promise<void>
  /** Creates the cluster (assigns the slots) when it was started with `created: false`. */
  create(): Promise<void>
}

/**
 * Three cluster-enabled masters on free ports, made a cluster at once, or (`created: false`)
 * left without slots until `create()`: a cluster still being set up.
 */
export async function startDisposableCluster({ created = true } = {}): Promise<DisposableCluster> {
  const dir = await mkdtemp(join(tmpdir(), 'erk-cluster-'))
  const ports = await clusterPorts(3)
  const servers = ports.map((port) =>
    spawn(
      'redis-server',
      [
        ...['--port', String(port), '--bind', '127.0.0.1', '--cluster-enabled', 'yes'],
        ...['--cluster-config-file', join(dir, `${port}.conf`), '--dir', dir, '--save', '', '--appendonly', 'no'],
      ],
      { stdio: 'ignore' },
    ),
  )
  const cli = (args: string[]) =>
    new Promise<string>((resolve, reject) => {
      execFile('redis-cli', args, (error, stdout) => (error ? reject(error) : resolve(stdout)))
    })
  const kill = async (index: number) => {
    const server = servers[index]
    if (!server || server.exitCode !== null || server.signalCode !== null) return
    const exited = new Promise((resolve) => server.once('exit', resolve))
    server.kill('SIGKILL')
    await exited
  }
  let stopped: Promise<void> | undefined
  const stop = () => {
    stopped ??= Promise.all(servers.map((_, index) => kill(index))).then(() =>
      rm(dir, { recursive: true, force: true }),
    )
    return stopped
  }
  const create = async () => {
    await cli([
      '--cluster',
      'create',
      ...ports.map((port) => `127.0.0.1:${port}`),
      '--cluster-replicas',
      '0',
      '--cluster-yes',
    ])
    for (const port of ports) {
      await waitFor(async () => (await cli(['-p', String(port), 'cluster', 'info'])).includes('cluster_state:ok'))
    }
  }
  try {
    for (const port of ports) await waitFor(async () => (await cli(['-p', String(port), 'ping'])).includes('PONG'))
    if (created) await create()
  } catch (error) {
    await stop()
    throw error
  }
  const addresses = ports.map((port) => ({ host: '127.0.0.1', port }))
  return {
    ports,
    addresses,
    async connect() {
      const cluster = createCluster({ rootNodes: ports.map((port) => ({ url: `redis://127.0.0.1:${port}` })) })
      cluster.on('error', () => {})
      await cluster.connect()
      return cluster
    },
    async killMasterOf(key) {
      const slot = Number((await cli(['-p', String(ports[0]), 'cluster', 'keyslot', key])).trim())
      for (const line of (await cli(['-p', String(ports[0]), 'cluster', 'nodes'])).trim().split('\n')) {
        const [, address, , , , , , , ...ranges] = line.split(' ')
        const owns = ranges.some((range) => {
          const [from = -1, to = from] = range.split('-').map(Number)
          return slot >= from && slot <= to
        })
        if (!owns) continue
        const port = Number(address?.split(':')[1]?.split('@')[0])
        await kill(ports.indexOf(port))
        return port
      }
      throw new Error(`no master owns slot ${slot}`)
    },
    stop,
    create,
  }
}

/** Polls `check` (errors count as "not yet") every 50 ms for up to 10 s. */
async function waitFor(check: () => Promise<boolean>): Promise<void> {
  for (let attempt = 0; attempt < 200; attempt++) {
    if (await check().catch(() => false)) return
    await sleep(50)
  }
  throw new Error('a disposable Redis did not become ready')
}

/** Free ports whose cluster bus port (+10000) is free too. */
export async function clusterPorts(count: number): Promise<number[]> {
  const ports: number[] = []
  while (ports.length < count) {
    const port = 20_000 + Math.floor(Math.random() * 20_000)
    if (!ports.includes(port) && (await isFree(port)) && (await isFree(port + 10_000))) ports.push(port)
  }
  return ports
}

function isFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer()
    server.once('error', () => resolve(false))
    server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)))
  })
}
