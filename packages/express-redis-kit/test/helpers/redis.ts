import { execFile, spawn } from 'node:child_process'
import { mkdtemp, rm } from 'node:fs/promises'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { createClient, createCluster } from 'redis'
import type { RedisClient } from '../../src/index.js'

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
    return cluster as unknown as RedisClient
  }
  const client = createClient({ url: redisUrl })
  client.on('error', () => {})
  await client.connect()
  return client as unknown as RedisClient
}

/** Every address of the suite's Redis (one, or each cluster master). */
export function redisAddresses(): { host: string; port: number }[] {
  const urls = mode === 'cluster' ? clusterNodes.map((node) => node.url) : [redisUrl]
  return urls.map((url) => {
    const parsed = new URL(url)
    return { host: parsed.hostname, port: Number(parsed.port || 6379) }
  })
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
  /** Kills the master that serves `key`'s slot; resolves with its port. */
  killMasterOf(key: string): Promise<number>
  stop(): Promise<void>
}

export async function startDisposableCluster(): Promise<DisposableCluster> {
  const dir = await mkdtemp(join(tmpdir(), 'erk-cluster-'))
  const ports = [await freePort(), await freePort(), await freePort()]
  const servers = ports.map((port) =>
    spawn(
      'redis-server',
      [
        '--port',
        String(port),
        '--bind',
        '127.0.0.1',
        '--cluster-enabled',
        'yes',
        '--cluster-config-file',
        join(dir, `${port}.conf`),
        '--dir',
        dir,
        '--save',
        '',
        '--appendonly',
        'no',
      ],
      { stdio: 'ignore' },
    ),
  )
  const run = (args: string[]) =>
    new Promise<string>((resolve, reject) => {
      execFile('redis-cli', args, (error, stdout) => (error ? reject(error) : resolve(stdout)))
    })
  for (const port of ports) {
    for (let attempt = 0; attempt < 100; attempt++) {
      if ((await run(['-p', String(port), 'ping']).catch(() => '')).includes('PONG')) break
      await sleep(50)
    }
  }
  await run([
    '--cluster',
    'create',
    ...ports.map((port) => `127.0.0.1:${port}`),
    '--cluster-replicas',
    '0',
    '--cluster-yes',
  ])
  for (let attempt = 0; attempt < 100; attempt++) {
    if ((await run(['-p', String(ports[0]), 'cluster', 'info'])).includes('cluster_state:ok')) break
    await sleep(50)
  }
  const kill = async (index: number) => {
    const server = servers[index]!
    if (server.exitCode !== null || server.signalCode !== null) return
    const exited = new Promise((resolve) => server.once('exit', resolve))
    server.kill('SIGKILL')
    await exited
  }
  return {
    ports,
    async killMasterOf(key) {
      const slot = Number((await run(['-p', String(ports[0]), 'cluster', 'keyslot', key])).trim())
      const shards = (await run(['-p', String(ports[0]), 'cluster', 'nodes'])).trim().split('\n')
      for (const line of shards) {
        const [, address, , , , , , , ...ranges] = line.split(' ')
        const owns = ranges.some((range) => {
          const [from, to = from] = range.split('-').map(Number) as [number, number?]
          return slot >= from && slot <= (to as number)
        })
        if (owns) {
          const port = Number(address!.split(':')[1]!.split('@')[0])
          await kill(ports.indexOf(port))
          return port
        }
      }
      throw new Error(`no master owns slot ${slot}`)
    },
    async stop() {
      await Promise.all(servers.map((_, index) => kill(index)))
      await rm(dir, { recursive: true, force: true })
    },
  }
}
