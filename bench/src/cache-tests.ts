/**
 * Runs the public HTTP cache test suite (cache-tests.fyi) against cacheResponse, in front of
 * the suite's own origin server, and compares the outcome with the suite's published results
 * of other caches:
 *
 *   pnpm bench:cache-tests    (from the repository root; the package must be built first)
 *
 * - the suite's origin server (test-engine/server/server.mjs) runs in a child process on a
 *   free port;
 * - an Express 5 reverse proxy runs in this process on another loopback port:
 *   `cacheResponse({ client, prefix, ...CACHE_OPTIONS })` in front of a handler that sends
 *   every request to the origin and streams its answer back as received (raw bytes, status,
 *   headers less the hop-by-hop ones), so that what the suite measures is the cache;
 * - the suite's client (test-engine/cli.mjs) runs against the proxy in a child process (about
 *   a minute) and prints its results as JSON;
 * - every test is classified on its own (`determineTestResult(suites, id, results, false)`:
 *   no dependency chain), for this run and for the published results in results/*.json.
 *
 * Prints Markdown on stdout (the table, then our failing required and optional tests),
 * progress on stderr. Environment: CACHE_TESTS_DIR, the suite's directory (default:
 * `shared/cache-tests` beside the repository).
 *
 * The suite's interim-response tests load the npm package `undici` from the suite's own
 * directory, which has no node_modules: the client gets a resolve hook that loads bench's
 * copy instead (without it, those tests fail for the harness's sake, not the cache's).
 *
 * Nothing shared is flushed: every key lives under a prefix unique to this run, deleted
 * (SCAN + UNLINK) at the end.
 */
import { type ChildProcess, spawn } from 'node:child_process'
import { once } from 'node:events'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import http from 'node:http'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'
import express, { type NextFunction, type Request, type RequestHandler, type Response } from 'express'
import { type CacheResponseOptions, cacheResponse } from 'express-redis-kit'
import { createClient } from 'redis'
import { type Client, deleteUnder, REDIS_URL } from './redis-stats.js'

/**
 * cacheResponse's options besides `client` and `prefix` (which every run sets). Only options
 * that exist today; options the cache gains (RFC 9111 behaviours, say) belong here, so that
 * the suite runs against them.
 */
const CACHE_OPTIONS: Omit<CacheResponseOptions, 'client' | 'prefix'> = {
  ttl: '1h',
  // What is measured is HTTP caching, not how the cache copes with a slow Redis: on this
  // shared machine a busy moment must not turn a store into a failure.
  timeoutMs: 5_000,
}

/** The published results shown beside ours (files in the suite's results/, when present). */
const PUBLISHED = ['caddy.json', 'apache.json', 'varnish.json', 'squid.json', 'nginx.json', 'fastly.json']
const OURS = 'express-redis-kit cacheResponse (this run)'
/** The suite's client gives up on a request after 10 s; a run that takes this long is stuck. */
const SUITE_TIMEOUT_MS = 10 * 60_000
/** CACHE_TESTS_ID=<test id>: run that test alone and show the suite's dump of it (no report). */
const ONLY = process.env.CACHE_TESTS_ID ?? ''
const ORIGIN_START_TIMEOUT_MS = 15_000

const SUITE_DIR = process.env.CACHE_TESTS_DIR
  ? pathToFileURL(`${process.env.CACHE_TESTS_DIR.replace(/\/$/, '')}/`)
  : new URL('../../../shared/cache-tests/', import.meta.url)
const suitePath = (path: string): string => fileURLToPath(new URL(path, SUITE_DIR))

const log = (message: string) => process.stderr.write(`${message}\n`)

// ---- The suite's shapes (its modules are plain JavaScript) ----

/** A test's outcome: `true`, or the error's name and message ('Assertion', 'Setup', ...). */
type TestResult = true | false | [string, string]
type TestResults = Record<string, TestResult>
/** An entry of lib/results.mjs's `resultTypes`: [icon, colour, text]; compared by identity. */
type ResultType = readonly [string, string, string]

interface SuiteTest {
  id: string
  name: string
  kind?: 'required' | 'optimal' | 'check'
  browser_only?: boolean
}

interface TestSuite {
  id: string
  name: string
  tests: SuiteTest[]
}

interface ResultsModule {
  resultTypes: Record<'pass' | 'fail' | 'optional_fail' | 'setup_fail' | 'harness_fail' | 'retry', ResultType>
  determineTestResult(suites: TestSuite[], id: string, results: TestResults, honorDependencies: boolean): ResultType
}

/** An entry of results/index.mjs. */
interface PublishedCache {
  file: string
  name: string
  type: string
  version: string
}

// Computed paths: TypeScript does not look for types of the suite's .mjs files.
const importSuite = async <T>(path: string): Promise<T> => (await import(new URL(path, SUITE_DIR).href)) as T

// ---- Ports and child processes ----

/** A port free on loopback now (the suite's server takes a port number only, not a socket). */
async function freePort(): Promise<number> {
  const server = createServer()
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const address = server.address()
  server.close()
  await once(server, 'close')
  if (address === null || typeof address === 'string') throw new Error('no port')
  return address.port
}

/** Forwards a child's output to stderr, line by line, prefixed with its name. */
function relayLines(stream: NodeJS.ReadableStream, name: string, onLine?: (line: string) => void): void {
  let pending = ''
  stream.setEncoding('utf8')
  stream.on('data', (chunk: string) => {
    pending += chunk
    const lines = pending.split('\n')
    pending = lines.pop() ?? ''
    for (const line of lines) {
      onLine?.(line)
      if (line.trim() !== '') log(`[${name}] ${line}`)
    }
  })
}

/** Stops a child (SIGTERM, then SIGKILL after 5 s) and waits for it to be gone. */
async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return
  const exited = once(child, 'exit')
  child.kill('SIGTERM')
  const timer = setTimeout(() => child.kill('SIGKILL'), 5_000)
  await exited
  clearTimeout(timer)
}

/** The suite's origin server on `port`, resolved once it listens. */
async function startOrigin(port: number, pidfile: string): Promise<ChildProcess> {
  const child = spawn(process.execPath, [suitePath('test-engine/server/server.mjs')], {
    env: {
      ...process.env,
      npm_config_protocol: 'http',
      npm_config_port: String(port),
      npm_config_pidfile: pidfile,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  const listening = new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('the origin did not listen within 15 s')), ORIGIN_START_TIMEOUT_MS)
    relayLines(child.stdout!, 'origin', (line) => {
      if (!line.startsWith('Listening on')) return
      clearTimeout(timer)
      resolve()
    })
    child.once('exit', (code, signal) => {
      clearTimeout(timer)
      reject(new Error(`the origin exited before it listened (code ${code}, signal ${signal})`))
    })
  })
  relayLines(child.stderr!, 'origin')
  try {
    await listening
  } catch (error) {
    await stopChild(child)
    throw error
  }
  return child
}

/**
 * An `--import` for the suite's client that resolves the bare specifier `undici` to bench's
 * copy, or undefined (with a warning) when bench has none.
 */
function undiciImport(): string | undefined {
  let undici: string
  try {
    undici = import.meta.resolve('undici')
  } catch {
    log('warning: bench has no undici: the interim-response tests will fail for the harness, not the cache')
    return undefined
  }
  const hooks = `export async function resolve(specifier, context, next) {
  return specifier === 'undici' ? { url: ${JSON.stringify(undici)}, shortCircuit: true } : next(specifier, context)
}`
  const register = `import { register } from 'node:module'
register(${JSON.stringify(`data:text/javascript,${encodeURIComponent(hooks)}`)})`
  return `data:text/javascript,${encodeURIComponent(register)}`
}

/** Runs the suite's client against `baseUrl`; its results as it prints them. */
async function runSuite(baseUrl: string, running: Set<ChildProcess>): Promise<TestResults | undefined> {
  const preload = undiciImport()
  const args = ['--no-warnings', ...(preload ? ['--import', preload] : []), suitePath('test-engine/cli.mjs')]
  const child = spawn(process.execPath, args, {
    // Both id variables must be set, even empty: cli.mjs runs a single test otherwise.
    env: { ...process.env, npm_config_base: baseUrl, npm_config_id: ONLY, npm_package_config_id: ONLY },
    stdio: ['ignore', ONLY ? 'inherit' : 'pipe', 'pipe'],
  })
  running.add(child)
  const output: Buffer[] = []
  child.stdout?.on('data', (chunk: Buffer) => output.push(chunk))
  relayLines(child.stderr!, 'suite')
  const timer = setTimeout(() => {
    log(`the suite did not finish within ${SUITE_TIMEOUT_MS / 60_000} minutes: stopping it`)
    child.kill('SIGKILL')
  }, SUITE_TIMEOUT_MS)
  const [code, signal] = (await once(child, 'exit')) as [number | null, NodeJS.Signals | null]
  clearTimeout(timer)
  running.delete(child)
  const text = Buffer.concat(output).toString('utf8')
  if (code !== 0) throw new Error(`the suite's client failed (code ${code}, signal ${signal}): ${text.slice(-2000)}`)
  if (ONLY) return undefined
  const json = text.slice(text.indexOf('{'), text.lastIndexOf('}') + 1)
  try {
    return JSON.parse(json) as TestResults
  } catch (error) {
    throw new Error(`the suite's client printed no JSON: ${text.slice(0, 2000)}`, { cause: error })
  }
}

// ---- The reverse proxy ----

/** Hop-by-hop headers (RFC 9110 section 7.6.1): they belong to one connection, never forwarded. */
const HOP_BY_HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-authenticate',
  'proxy-authorization',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
])

interface HeaderLines {
  /** The name as first received (its case kept). */
  name: string
  /** Every line's value, in order. */
  values: string[]
}

/**
 * The end-to-end headers of a message, from its raw lines, by lowercase name: hop-by-hop
 * headers and those the Connection header names are left out; repeated lines stay separate.
 */
function endToEndHeaders(rawHeaders: string[]): Map<string, HeaderLines> {
  const connectionListed = new Set<string>()
  for (let i = 0; i + 1 < rawHeaders.length; i += 2) {
    if (rawHeaders[i]!.toLowerCase() !== 'connection') continue
    for (const token of rawHeaders[i + 1]!.split(',')) connectionListed.add(token.trim().toLowerCase())
  }
  const headers = new Map<string, HeaderLines>()
  for (let i = 0; i + 1 < rawHeaders.length; i += 2) {
    const name = rawHeaders[i]!
    const lower = name.toLowerCase()
    if (HOP_BY_HOP.has(lower) || connectionListed.has(lower)) continue
    const lines = headers.get(lower)
    if (lines) lines.values.push(rawHeaders[i + 1]!)
    else headers.set(lower, { name, values: [rawHeaders[i + 1]!] })
  }
  return headers
}

interface ProxyCounts {
  requests: number
  forwarded: number
}

/**
 * Sends every request to the origin and streams its answer back as received: status and
 * reason, end-to-end headers (case and repeated lines kept), interim 102 and 103 responses,
 * and the body's bytes as they come (never decoded).
 */
function forwardTo(originHost: string, originPort: number, agent: http.Agent, counts: ProxyCounts): RequestHandler {
  return function forwardToOrigin(req: Request, res: Response): void {
    counts.forwarded++
    const headers: string[] = []
    const asReceived = endToEndHeaders(req.rawHeaders)
    for (const [lower, { name, values }] of asReceived) {
      // A middleware before this one took the header off the request: cacheResponse does so
      // with a client's If-None-Match / If-Modified-Since, to get the full response to store.
      const current = req.headers[lower]
      if (lower === 'host' || current === undefined) continue
      // ...or changed it (as received: one line, the lines joined, or the first of a field
      // that cannot repeat): send what it is now.
      if (Array.isArray(current) || current === values.join(', ') || current === values[0])
        for (const value of values) headers.push(name, value)
      else headers.push(name, current)
    }
    // ...or put one on: the validators of a stale entry, to revalidate it.
    for (const [lower, value] of Object.entries(req.headers)) {
      if (asReceived.has(lower) || value === undefined || HOP_BY_HOP.has(lower)) continue
      for (const line of Array.isArray(value) ? value : [value]) headers.push(lower, line)
    }
    headers.push('Host', `${originHost}:${originPort}`)
    let answered: http.IncomingMessage | undefined
    const upstream = http.request({
      host: originHost,
      port: originPort,
      method: req.method,
      path: req.originalUrl,
      headers,
      setHost: false,
      agent,
    })

    upstream.on('information', (info) => {
      // What a ServerResponse can send: 100 Continue is Node's own business, 101 an upgrade.
      if (info.statusCode === 102) res.writeProcessing()
      else if (info.statusCode === 103) {
        const hints: Record<string, string | string[]> = {}
        for (const [lower, { values }] of endToEndHeaders(info.rawHeaders))
          hints[lower] = values.length === 1 ? values[0]! : values
        res.writeEarlyHints(hints)
      }
    })
    upstream.on('response', (answer) => {
      // The origin's Date or none: Node would add its own to this response otherwise.
      res.sendDate = false
      for (const { name, values } of endToEndHeaders(answer.rawHeaders).values())
        res.setHeader(name, values.length === 1 ? values[0]! : values)
      res.writeHead(answer.statusCode ?? 502, answer.statusMessage)
      answer.pipe(res)
      answer.on('error', (error) => {
        if (!answer.complete) res.destroy(error)
      })
      answered = answer
    })
    upstream.on('error', (error) => {
      // Bytes past the Content-Length the origin declared (a test sends such a response):
      // the answer is complete, what follows belongs to no response and is dropped.
      if (answered?.complete) return
      log(`proxy: ${req.method} ${req.originalUrl}: ${error.message}`)
      if (res.headersSent) res.destroy(error)
      else res.status(502).end()
    })
    res.on('close', () => {
      if (!res.writableFinished) upstream.destroy()
    })
    req.pipe(upstream)
  }
}

function buildProxy(client: Client, prefix: string, origin: { host: string; port: number }, agent: http.Agent) {
  const counts: ProxyCounts = { requests: 0, forwarded: 0 }
  const app = express()
  app.disable('x-powered-by')
  app.use((_req: Request, _res: Response, next: NextFunction) => {
    counts.requests++
    next()
  })
  app.use(cacheResponse({ client, prefix, ...CACHE_OPTIONS }))
  app.use(forwardTo(origin.host, origin.port, agent, counts))
  app.use((error: unknown, req: Request, res: Response, _next: NextFunction) => {
    log(`proxy: ${req.method} ${req.originalUrl}: ${error instanceof Error ? error.stack : String(error)}`)
    if (res.headersSent) res.destroy()
    else res.status(500).end()
  })
  return { app, counts }
}

// ---- Classification and report ----

interface Failure {
  id: string
  name: string
  suite: string
  detail: string
}

interface Tally {
  cache: string
  /** Tests run for a non-browser cache (browser-only tests excluded), as the suite counts them. */
  tests: number
  /** Results that are `true`, as the suite counts passes. */
  passed: number
  required: Failure[]
  optional: Failure[]
  /** Setup failures, harness failures, retries: neither a pass nor the cache's failure. */
  unclassified: Failure[]
}

function detailOf(result: TestResult | undefined): string {
  if (!Array.isArray(result)) return String(result)
  const [kind, message] = result
  const text = String(message ?? '').replace(/\s+/g, ' ')
  return kind === 'Assertion' ? text : `${kind}: ${text}`
}

/** Classifies every test on its own (no dependency chain), the way the suite counts passes. */
function tally(cache: string, suites: TestSuite[], results: TestResults, lib: ResultsModule): Tally {
  const { resultTypes } = lib
  const out: Tally = { cache, tests: 0, passed: 0, required: [], optional: [], unclassified: [] }
  for (const suite of suites) {
    for (const test of suite.tests) {
      if (test.browser_only === true) continue
      out.tests++
      if (results[test.id] === true) out.passed++
      const type = lib.determineTestResult(suites, test.id, results, false)
      const failure = () => ({ id: test.id, name: test.name, suite: suite.name, detail: detailOf(results[test.id]) })
      if (type === resultTypes.fail) out.required.push(failure())
      else if (type === resultTypes.optional_fail) out.optional.push(failure())
      else if (type === resultTypes.setup_fail || type === resultTypes.harness_fail || type === resultTypes.retry)
        out.unclassified.push(failure())
    }
  }
  return out
}

const listItem = (failure: Failure) => `- ${failure.id}: ${failure.name} (${failure.suite}) — ${failure.detail}`

function report(ours: Tally, published: Tally[], version: string): string {
  const rows = [...published, ours].sort(
    (a, b) => a.required.length - b.required.length || b.passed - a.passed || a.cache.localeCompare(b.cache),
  )
  const lines = [
    '## HTTP cache tests (cache-tests.fyi)',
    '',
    `Suite at ${version}: ${ours.tests} tests for a non-browser cache. Each test classified on its own`,
    '(no dependency chain); "passed" counts results that are `true`, as the suite does. Published',
    "results from the suite's results/*.json. Sorted by required failures, then passed.",
    '',
    '| cache | passed | required failures |',
    '| --- | ---: | ---: |',
    ...rows.map((row) => `| ${row.cache} | ${row.passed} | ${row.required.length} |`),
    '',
    `### Our failing required tests (${ours.required.length})`,
    '',
    ...(ours.required.length ? ours.required.map(listItem) : ['None.']),
    '',
    `### Our optional failures (${ours.optional.length})`,
    '',
    ...(ours.optional.length ? ours.optional.map(listItem) : ['None.']),
  ]
  if (ours.unclassified.length) {
    lines.push('', `### Our tests with a setup or harness failure (${ours.unclassified.length})`, '')
    lines.push(...ours.unclassified.map(listItem))
  }
  return `${lines.join('\n')}\n`
}

// ---- Main ----

async function main(): Promise<void> {
  const started = Date.now()
  const suites = (await importSuite<{ default: TestSuite[] }>('tests/index.mjs')).default
  const lib = await importSuite<ResultsModule>('test-engine/lib/results.mjs')
  const index = (await importSuite<{ default: PublishedCache[] }>('results/index.mjs')).default
  const version = readFileSync(suitePath('VERSION'), 'utf8').trim().split(/\s+/)[0]!.slice(0, 12)

  const running = new Set<ChildProcess>()
  const cleanups: (() => Promise<unknown>)[] = []
  let cleaned: Promise<void> | undefined
  const cleanUp = () => {
    cleaned ??= (async () => {
      for (const child of running) await stopChild(child).catch(() => {})
      for (const step of cleanups.reverse()) await step().catch((error: unknown) => log(`cleanup: ${String(error)}`))
    })()
    return cleaned
  }
  const onSignal = (signal: NodeJS.Signals) => {
    log(`${signal}: cleaning up`)
    void cleanUp().finally(() => process.exit(130))
  }
  process.once('SIGINT', onSignal)
  process.once('SIGTERM', onSignal)

  try {
    const pidDir = mkdtempSync(join(tmpdir(), 'cache-tests-'))
    cleanups.push(async () => rmSync(pidDir, { recursive: true, force: true }))
    const originPort = await freePort()
    const origin = await startOrigin(originPort, join(pidDir, 'origin.pid'))
    cleanups.push(() => stopChild(origin))
    log(`origin: the suite's server on port ${originPort}`)

    const client: Client = createClient({ url: REDIS_URL })
    client.on('error', (error: unknown) => log(`redis: ${String(error)}`))
    await client.connect()
    const prefix = `cache-tests:${Date.now().toString(36)}-${process.pid}:`
    cleanups.push(async () => {
      log(`redis: deleted ${await deleteUnder(client, prefix)} keys under ${prefix}`)
      await client.close()
    })

    // A connection per request: the origin closes idle connections, and a request sent on one
    // as it closes fails (socket hang up) for the harness's sake, not the cache's.
    const agent = new http.Agent({ keepAlive: false })
    cleanups.push(async () => agent.destroy())
    const { app, counts } = buildProxy(client, prefix, { host: '127.0.0.1', port: originPort }, agent)
    const proxy = app.listen(0, '127.0.0.1')
    await once(proxy, 'listening')
    cleanups.push(async () => {
      proxy.closeAllConnections()
      await new Promise((resolve) => proxy.close(resolve))
    })
    const address = proxy.address()
    if (address === null || typeof address === 'string') throw new Error('the proxy has no port')
    const baseUrl = `http://127.0.0.1:${address.port}`
    log(`proxy: cacheResponse (prefix ${prefix}) at ${baseUrl}`)

    log('suite: running (about a minute)')
    const progress = setInterval(
      () => log(`suite: ${counts.requests} requests so far, ${counts.forwarded} forwarded to the origin`),
      15_000,
    )
    let results: TestResults | undefined
    try {
      results = await runSuite(baseUrl, running)
    } finally {
      clearInterval(progress)
    }
    log(
      `suite: done in ${((Date.now() - started) / 1000).toFixed(0)} s (${counts.requests} requests, ${counts.forwarded} forwarded)`,
    )

    if (results === undefined) return
    const ours = tally(OURS, suites, results, lib)
    const published: Tally[] = []
    for (const file of PUBLISHED) {
      const entry = index.find((item) => item.file === file)
      let data: TestResults
      try {
        data = JSON.parse(readFileSync(suitePath(`results/${file}`), 'utf8')) as TestResults
      } catch {
        log(`published: no results/${file}, left out`)
        continue
      }
      const name = entry ? `${entry.name} ${entry.version}` : file.replace(/\.json$/, '')
      published.push(tally(name, suites, data, lib))
    }
    process.stdout.write(report(ours, published, version))
  } finally {
    process.off('SIGINT', onSignal)
    process.off('SIGTERM', onSignal)
    await cleanUp()
  }
}

main().catch((error: unknown) => {
  console.error(error)
  process.exitCode = 1
})
