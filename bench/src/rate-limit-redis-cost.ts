/**
 * Redis's own work per allowed request of each rate limiter: the instructions redis-server
 * executes per request, counted by valgrind's callgrind in a redis-server of this benchmark's
 * own. Unlike µs per request under load (`pnpm bench`, INFO commandstats), which move with
 * whatever else runs on this shared machine, the count comes out nearly the same from run to run
 * (within about 1%), so a change to a script shows at once, and it can gate a regression.
 *
 *   pnpm bench:redis-cost     (the package built first; needs valgrind; about a minute)
 *
 * Each limiter of src/scenarios.ts (and a few option variants of rateLimit) runs in this
 * process, requests built in memory (src/callgrind.ts's sendInMemory), one at a time, against
 * the one redis-server started under callgrind: a warm-up (the first request of a limiter loads
 * its script and creates its key), then callgrind's counters are dumped (`callgrind_control
 * --dump`, which also zeroes them) before and after BENCH_REQUESTS requests. What is counted is
 * all of redis-server (reading the command, EVALSHA or EVAL, the commands the script runs, the
 * reply), as each limiter really calls it; the server's cron runs at --hz 1, so idle time adds
 * next to nothing.
 *
 * Environment: BENCH_REQUESTS (per limiter, default 2000), BENCH_SCENARIOS (comma-separated:
 * names of src/scenarios.ts's allowed-path group or of VARIANTS below; default all of them).
 */
import { execFile, spawn } from 'node:child_process'
import { mkdtemp, readdir, readFile, rm, stat } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import express, { type RequestHandler } from 'express'
import { type RateLimitOptions, type RedisClient, rateLimit } from 'express-redis-kit'
import { createClient } from 'redis'
import { type Handler, sendInMemory } from './callgrind.js'
import { log, positive, thousands } from './harness.js'
import { freePort, untilAnswering } from './private-redis.js'
import { commandDelta, commandStats, describeCounts } from './redis-stats.js'
import { buildMiddleware, CLIENT_KEY, defaultLimit, LABELS, type Scenario, WINDOW_MS } from './scenarios.js'

const run = promisify(execFile)
const REQUESTS = Math.round(positive('BENCH_REQUESTS', 2000))
const WARMUP_REQUESTS = 200

type Client = ReturnType<typeof createClient>

/** rateLimit on the benchmark's client key with `options`. */
const erk = (client: Client, prefix: string, options: Omit<RateLimitOptions, 'client'>): RequestHandler =>
  rateLimit({ client: client as unknown as RedisClient, prefix, keyGenerator: () => CLIENT_KEY, ...options })

/** rateLimit with options that leave its default decision script (each costs only when used). */
const VARIANTS: Record<string, { label: string; build: (client: Client, prefix: string) => RequestHandler }> = {
  'erk-sliding-window-limits': {
    label: "rateLimit 'sliding-window', limits: 2 windows (the general script)",
    build: (client, prefix) =>
      erk(client, prefix, {
        limits: [
          { limit: 1_000_000_000, windowMs: WINDOW_MS },
          { limit: 1_000_000_000, windowMs: 24 * WINDOW_MS },
        ],
      }),
  },
  'erk-sliding-window-block': {
    label: "rateLimit 'sliding-window', blockDuration (the general script)",
    build: (client, prefix) => erk(client, prefix, { limit: 1_000_000_000, windowMs: WINDOW_MS, blockDuration: '1m' }),
  },
}

const PEERS: Scenario[] = ['express-rate-limit', 'rate-limiter-flexible']
const SCENARIOS: string[] = [
  'erk-sliding-window',
  ...Object.keys(VARIANTS),
  'erk-fixed-window',
  'erk-sliding-log',
  'erk-token-bucket',
  ...PEERS,
]
const chosen = process.env.BENCH_SCENARIOS?.split(',').filter(Boolean) ?? SCENARIOS
const unknown = chosen.filter((name) => !SCENARIOS.includes(name))
if (unknown.length) throw new Error(`BENCH_SCENARIOS: unknown ${unknown.join(', ')}; known: ${SCENARIOS.join(', ')}`)

const labelOf = (name: string): string => VARIANTS[name]?.label ?? LABELS[name as Scenario]

/** A redis-server under callgrind, on a free port; its counters dumped on demand. */
async function callgrindRedis(): Promise<{ url: string; dump(): Promise<number>; stop(): Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), 'erk-redis-cost-'))
  const port = await freePort()
  const server = spawn(
    'valgrind',
    [
      '--tool=callgrind',
      `--callgrind-out-file=${join(dir, 'callgrind.out')}`,
      'redis-server',
      '--port',
      String(port),
      '--bind',
      '127.0.0.1',
      '--save',
      '',
      '--appendonly',
      'no',
      '--hz',
      '1',
    ],
    { stdio: 'ignore' },
  )
  const exited = new Promise((resolve) => server.once('exit', resolve))
  process.on('exit', () => server.kill('SIGKILL'))
  const url = `redis://127.0.0.1:${port}`
  // valgrind takes a few seconds to start it
  await untilAnswering(url, 30_000)
  return {
    url,
    /** Dumps the counters (zeroing them) and returns the instructions counted since the last dump. */
    async dump() {
      const before = new Set(await readdir(dir))
      await run('callgrind_control', ['--dump', String(server.pid)])
      const added = (await readdir(dir)).filter((name) => !before.has(name))
      if (added.length !== 1) throw new Error(`callgrind_control --dump wrote ${added.length} files`)
      const text = await readFile(join(dir, added[0]!), 'utf8')
      const total = /^(?:summary|totals): (\d+)/m.exec(text)
      if (!total) throw new Error(`no total in ${added[0]}`)
      return Number(total[1])
    },
    async stop() {
      server.kill('SIGTERM')
      await exited
      if ((await stat(dir)).isDirectory()) await rm(dir, { recursive: true })
    },
  }
}

interface Result {
  name: string
  instructions: number
  commands: string
}

async function measure(client: Client, dump: () => Promise<number>, name: string): Promise<Result> {
  const prefix = `redis-cost:${name}:`
  const middleware = VARIANTS[name]
    ? VARIANTS[name].build(client, prefix)
    : buildMiddleware(name as Scenario, client, prefix, defaultLimit(name as Scenario))
  const app = express()
  app.use(middleware!)
  app.get('/', (_req, res) => {
    res.send('ok')
  })
  const send = async (count: number) => {
    for (let i = 0; i < count; i++) {
      const res = await sendInMemory(app as unknown as Handler, 'GET', '/')
      if (res.statusCode !== 200) throw new Error(`${name}: request answered ${res.statusCode}`)
    }
  }
  await send(WARMUP_REQUESTS)
  const before = await commandStats(client)
  await dump()
  await send(REQUESTS)
  const instructions = (await dump()) / REQUESTS
  const after = await commandStats(client)
  const commands = describeCounts(commandDelta(before.calls, after.calls), REQUESTS)
  log(`${name}: ${thousands(instructions)} instructions/request (${commands})`)
  return { name, instructions, commands }
}

const redis = await callgrindRedis()
const client: Client = createClient({ url: redis.url })
await client.connect()
const results: Result[] = []
try {
  for (const name of chosen) results.push(await measure(client, redis.dump, name))
} finally {
  client.destroy()
  await redis.stop()
}

const version = String((await run('redis-server', ['--version'])).stdout).match(/v=(\S+)/)?.[1] ?? '?'
const peers = results.filter(({ name }) => PEERS.includes(name as Scenario))
const best = peers.length ? peers.reduce((a, b) => (b.instructions < a.instructions ? b : a)) : undefined
const date = new Date().toISOString().slice(0, 16).replace('T', ' ')
process.stdout.write(
  [
    `## rateLimit: Redis instructions per allowed request (${date} UTC, \`pnpm bench:redis-cost\`)`,
    '',
    `redis-server ${version} under valgrind's callgrind, Node ${process.version}; ${thousands(REQUESTS)} requests per limiter, one at a time, after ${WARMUP_REQUESTS} unmeasured; limits never reached, one client key, each package's defaults but the limit, window, key and prefix.`,
    '',
    `| limiter | Redis instructions / request |${best ? ` vs ${labelOf(best.name)} |` : ''} commands Redis runs / request (INFO commandstats) |`,
    `|---|--:|${best ? '--:|' : ''}---|`,
    ...results.map(
      ({ name, instructions, commands }) =>
        `| ${labelOf(name)} | ${thousands(instructions)} |${best ? ` ${(instructions / best.instructions).toFixed(2)}x |` : ''} ${commands} |`,
    ),
    '',
  ].join('\n'),
)
