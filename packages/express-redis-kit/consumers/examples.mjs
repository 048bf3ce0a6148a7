#!/usr/bin/env node
/*
 * The examples runner: every code example of the root README, the package README and
 * docs/migrating.md runs as written, against the packed package as users install it. The blocks
 * and their markers are read by examples/extract.mjs (a block without a marker fails). For each
 * Express major (5 and 4) one fresh project installs the tarball, express and @types/express of
 * that major, and what the examples import (the peers of docs/migrating.md included); then each
 * example is
 *   - type-checked on its own (TypeScript strict, module nodenext, one program per example, so
 *     that no example compiles thanks to another's declarations), errors shown at their line
 *     in the document;
 *   - run as a child process (examples/harness.mjs: its `listen(3000)` gets a free port) against
 *     a Redis of the runner's own (a redis-server per Express major, emptied before each example,
 *     so the examples' default key prefixes meet nobody's keys), the Cluster of CLUSTER_NODES for
 *     `redis: cluster`, or an address where nothing answers for `redis: down`;
 *   - checked: its module runs to its end without throwing, its `check:` requests answer as the
 *     marker says (examples/checks.mjs), and the process is still alive after them (an Express 4
 *     async handler whose rejection is not passed to next() ends it).
 * What the runner changes in an example's code: a continued example's code goes first
 * (`continues:`), and the Redis addresses the documents use (redis://127.0.0.1:6379; for a
 * Cluster redis://127.0.0.1:7100, :7101, :7102) become those above. The environment has
 * SESSION_SECRETS and SESSION_SECRET (the examples read them as an app reads its secrets).
 *
 *   node consumers/examples.mjs   (from packages/express-redis-kit; packs the package; needs the npm registry)
 *
 * consumers/run.mjs runs the same on its tarball, after the matrix. Environment: CLUSTER_NODES
 * (default 127.0.0.1:7000,127.0.0.1:7001,127.0.0.1:7002), CONSUMERS_CACHE (the npm cache),
 * EXAMPLES_ONLY (comma-separated example names to run alone), EXAMPLES_EXPRESS (one major),
 * EXAMPLES_KEEP (keep the projects, to look into them).
 */
import { execFile, fork, spawn } from 'node:child_process'
import { once } from 'node:events'
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { createServer } from 'node:net'
import { homedir, tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { runChecks } from './examples/checks.mjs'
import { problems, programs, readExamples } from './examples/extract.mjs'

const run = promisify(execFile)
const here = dirname(fileURLToPath(import.meta.url))
const packageDir = join(here, '..')

/** What every examples project installs besides the tarball: what the examples import. */
const DEPENDENCIES = {
  redis: '^6.3.0',
  '@opentelemetry/api': '^1.9.0',
  '@opentelemetry/sdk-metrics': '^3.1.0',
  '@opentelemetry/exporter-prometheus': '^0.301.0',
  'express-session': '^1.19.0',
  passport: '^0.7.0',
  'passport-local': '^1.0.0',
  'cookie-parser': '^1.4.7',
  helmet: '^8.1.0',
  cors: '^2.8.5',
  compression: '^1.8.0',
  pino: '^9.7.0',
  winston: '^3.17.0',
  zod: '^4.1.0',
  // the peers of docs/migrating.md, for its "before" examples
  'express-rate-limit': '^8.2.0',
  'rate-limit-redis': '^6.0.0',
  'rate-limiter-flexible': '^11.0.0',
  'connect-redis': '^11.0.0',
  apicache: '^1.6.3',
  'cache-manager': '^7.2.0',
  keyv: '^5.5.0',
  '@keyv/redis': '^5.1.0',
}
const DEV_DEPENDENCIES = {
  typescript: '~5.9.3',
  '@types/node': '^20.19.0',
  '@types/express-session': '^1.18.0',
  '@types/passport': '^1.0.17',
  '@types/passport-local': '^1.0.38',
  '@types/cookie-parser': '^1.4.10',
  '@types/cors': '^2.8.19',
  '@types/compression': '^1.8.1',
  '@types/apicache': '^1.6.8',
}

async function sh(command, args, options = {}) {
  try {
    return await run(command, args, { maxBuffer: 32 * 1024 * 1024, ...options })
  } catch (error) {
    const output = `${error.stdout ?? ''}${error.stderr ?? ''}`.trim()
    throw Object.assign(new Error(`${command} ${args.join(' ')} failed:\n${output}`), { output })
  }
}

/** A port of 127.0.0.1 nothing listens on (free a moment ago). */
async function freePort() {
  const server = createServer().listen(0, '127.0.0.1')
  await once(server, 'listening')
  const { port } = server.address()
  server.close()
  await once(server, 'close')
  return port
}

/** A redis-server of the runner's own, without persistence; `stop()` ends it. */
async function privateRedis() {
  const port = await freePort()
  const server = spawn(
    'redis-server',
    ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'],
    {
      stdio: 'ignore',
    },
  )
  for (let tries = 0; ; tries++) {
    try {
      await sh('redis-cli', ['-p', String(port), 'ping'])
      break
    } catch (error) {
      if (tries > 50 || server.exitCode !== null)
        throw new Error(`redis-server did not start on port ${port}: ${error.message}`)
      await new Promise((done) => setTimeout(done, 100))
    }
  }
  return {
    url: `redis://127.0.0.1:${port}`,
    flush: () => sh('redis-cli', ['-p', String(port), 'flushall']),
    stop: () => server.kill(),
  }
}

/** The example's code with the documents' Redis addresses replaced by the ones of this run. */
function wired(code, addresses) {
  return code
    .replaceAll('redis://127.0.0.1:6379', addresses.single)
    .replace(/redis:\/\/127\.0\.0\.1:710(\d)/g, (_, index) => addresses.cluster[Number(index)] ?? addresses.cluster[0])
}

/** A type-check error at its line in the document: `README.md:120: error TS2304: ...`. */
function located(output, example) {
  return output.replace(/^[^\s(]*main\.(?:ts|mts)\((\d+),(\d+)\)/gm, (_, line) => {
    let left = Number(line)
    for (const [file, first, count] of example.segments) {
      if (left <= count) return `${file}:${first + left - 1}`
      left -= count
    }
    return `${example.file}:?`
  })
}

function tsconfigFor() {
  return {
    compilerOptions: {
      target: 'es2022',
      module: 'nodenext',
      moduleResolution: 'nodenext',
      strict: true,
      skipLibCheck: true,
      esModuleInterop: true,
      // no @types package takes part unless an example imports it (each example is its own program)
      types: ['node'],
      rootDir: '.',
      outDir: 'out',
      noEmitOnError: true,
    },
    include: ['main.ts'],
  }
}

/** Prepares one Express major's project: writes it, installs, writes and type-checks every example. */
async function prepareProject(major, examples, { root, tarball, cache }) {
  const dir = join(root, `examples-express-${major}`)
  await mkdir(dir, { recursive: true })
  const pkg = {
    name: `examples-express-${major}`,
    private: true,
    type: 'module',
    dependencies: { 'express-redis-kit': `file:${tarball}`, express: `^${major}`, ...DEPENDENCIES },
    devDependencies: { ...DEV_DEPENDENCIES, '@types/express': `^${major}` },
  }
  await writeFile(join(dir, 'package.json'), `${JSON.stringify(pkg, null, 2)}\n`)
  await writeFile(join(dir, 'harness.mjs'), await readFile(join(here, 'examples', 'harness.mjs')))
  await sh('npm', ['install', '--no-audit', '--no-fund', '--prefer-offline', '--cache', cache, '--loglevel', 'error'], {
    cwd: dir,
  })
  const failures = new Map()
  const typescript = examples.filter((example) => example.lang === 'ts')
  for (const example of examples) {
    const exampleDir = join(dir, 'examples', example.name)
    await mkdir(exampleDir, { recursive: true })
    const file = example.lang === 'ts' ? 'main.ts' : /\brequire\(/.test(example.code) ? 'main.cjs' : 'main.mjs'
    example.entry = join(exampleDir, example.lang === 'ts' ? join('out', 'main.js') : file)
    await writeFile(join(exampleDir, file), example.wiredCode)
    if (example.lang === 'ts')
      await writeFile(join(exampleDir, 'tsconfig.json'), JSON.stringify(tsconfigFor(), null, 2))
  }
  // One tsc process builds every example's program (each its own project): TypeScript reads the
  // shared declaration files once.
  try {
    await sh(
      join(dir, 'node_modules', '.bin', 'tsc'),
      ['-b', '--pretty', 'false', ...typescript.map((e) => `examples/${e.name}`)],
      {
        cwd: dir,
      },
    )
  } catch (error) {
    for (const example of typescript) {
      const own = (error.output ?? error.message)
        .split('\n')
        .filter((line) => line.startsWith(`examples/${example.name}/`))
        .map((line) => line.slice(`examples/${example.name}/`.length))
      if (own.length > 0) failures.set(example.name, `type check:\n${located(own.join('\n'), example)}`)
    }
    if (failures.size === 0) throw error
  }
  return { dir, failures }
}

/** Runs one example: a child process, its checks, and whether it is still alive after them. */
async function runExample(example, dir, env) {
  const child = fork(join(dir, 'harness.mjs'), [example.entry], {
    cwd: dir,
    env,
    stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
  })
  let output = ''
  child.stdout.on('data', (chunk) => (output += chunk))
  child.stderr.on('data', (chunk) => (output += chunk))
  const ports = new Map()
  // An example without checks may end by itself once its module has run (nothing keeps it alive).
  const exited = once(child, 'exit').then(([code, signal]) => {
    if (code === 0 && example.checks.length === 0) return
    throw new Error(`the example ended (${signal ?? `exit code ${code}`}) before its checks were done`)
  })
  exited.catch(() => {})
  try {
    let listened
    const listening = new Promise((resolve) => (listened = resolve))
    const ready = new Promise((resolve) =>
      child.on('message', (message) => {
        if (message.listening) {
          ports.set(message.listening[0], message.listening[1])
          listened()
        }
        if (message.ready) resolve()
      }),
    )
    const timeout = (ms, what) =>
      new Promise((_, reject) => setTimeout(() => reject(new Error(`${what} within ${ms / 1000} s`)), ms).unref())
    await Promise.race([ready, exited, timeout(30_000, 'its module did not run to its end')])
    // listen() may call back after the module's end: checks wait for it (the harness reports it)
    if (example.checks.length > 0 && ports.size === 0)
      await Promise.race([listening, exited, timeout(10_000, 'it did not listen')])
    if (example.checks.length > 0)
      await Promise.race([runChecks(example.checks, ports), exited, timeout(30_000, 'its checks did not finish')])
    // a rejection a handler left unhandled ends the process a moment after its response
    await Promise.race([new Promise((done) => setTimeout(done, 100)), exited])
    // a setup warning of the package (`[ERK_...]`) means the example is not written as it should be
    const warning = /^.*\[ERK_[A-Z_]+\].*$/m.exec(output)
    if (warning) throw new Error(`the package warned: ${warning[0]}`)
  } catch (error) {
    const tail = output.trim().split('\n').slice(-25).join('\n')
    throw new Error(`${error.message}${tail ? `\n    output:\n${tail.replace(/^/gm, '      ')}` : ''}`)
  } finally {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL')
      await once(child, 'exit').catch(() => {})
    }
  }
}

/**
 * Runs every example on each Express major (the two majors side by side, the examples of one
 * major one after the other). Resolves to `[{ name, ok, text, ms }]`, one per example and major.
 */
export async function runExamples({ tarball, root, cache, clusterNodes, log = console.log }) {
  const blocks = await readExamples()
  const found = problems(blocks)
  if (found.length > 0) return [{ name: 'examples: markers', ok: false, text: found.join('\n'), ms: 0 }]
  const only = process.env.EXAMPLES_ONLY?.split(',')
  const all = programs(blocks).filter((example) => !only || only.includes(example.name))
  const cluster = clusterNodes.split(',').map((node) => `redis://${node}`)
  const majors = (process.env.EXAMPLES_EXPRESS ?? '5,4').split(',')
  const results = []
  await Promise.all(
    majors.map(async (major) => {
      const examples = all.filter((example) => example.express.includes(major)).map((example) => ({ ...example }))
      for (const skipped of all.filter((example) => !example.express.includes(major)))
        log(`  - ${skipped.file}#${skipped.name}: not on Express ${major} (${skipped.expressReason})`)
      const redis = await privateRedis()
      try {
        const dead = await Promise.all([0, 1, 2].map(() => freePort()))
        for (const example of examples)
          example.wiredCode = wired(
            example.code,
            example.redis === 'down'
              ? { single: `redis://127.0.0.1:${dead[0]}`, cluster: dead.map((port) => `redis://127.0.0.1:${port}`) }
              : { single: redis.url, cluster },
          )
        const started = Date.now()
        const { dir, failures } = await prepareProject(major, examples, { root, tarball, cache })
        log(
          `  (express ${major}: project installed and type-checked in ${((Date.now() - started) / 1000).toFixed(0)} s)`,
        )
        const env = {
          PATH: process.env.PATH,
          HOME: process.env.HOME,
          SESSION_SECRETS: 'a-secret-for-the-examples-only-0123456789,an-older-secret-still-accepted-0123456789',
          SESSION_SECRET: 'a-secret-for-the-examples-only-0123456789',
        }
        for (const example of examples) {
          const name = `${example.file}#${example.name} (express ${major}, ${example.redis})`
          const begin = Date.now()
          if (failures.has(example.name)) {
            results.push({ name, ok: false, text: failures.get(example.name), ms: 0 })
            continue
          }
          try {
            await redis.flush()
            await runExample(example, dir, { ...env, EXAMPLE_REDIS: example.redis })
            results.push({ name, ok: true, text: `${example.checks.length} checks`, ms: Date.now() - begin })
          } catch (error) {
            results.push({ name, ok: false, text: error.message, ms: Date.now() - begin })
          }
        }
      } catch (error) {
        results.push({ name: `examples on Express ${major}`, ok: false, text: error.message, ms: 0 })
      } finally {
        redis.stop()
      }
    }),
  )
  return results
}

/** Prints results as the consumer matrix does; returns [passed, failed]. */
export function report(results, log = console.log) {
  let passed = 0
  let failed = 0
  for (const result of results) {
    const seconds = (result.ms / 1000).toFixed(1)
    if (result.ok) {
      passed++
      log(`  ✔ ${result.name}: ${result.text} [${seconds} s]`)
    } else {
      failed++
      log(`  ✗ ${result.name} [${seconds} s]\n${result.text.replace(/^/gm, '      ')}`)
    }
  }
  return [passed, failed]
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const root = await mkdtemp(join(tmpdir(), 'erk-examples-'))
  const cache = process.env.CONSUMERS_CACHE ?? join(homedir(), '.cache', 'express-redis-kit-consumers')
  const started = Date.now()
  try {
    const { stdout } = await sh('pnpm', ['pack', '--pack-destination', root], { cwd: packageDir })
    const tarball = stdout.trim().split('\n').at(-1)
    console.log(`› examples: ${tarball}`)
    const results = await runExamples({
      tarball,
      root,
      cache,
      clusterNodes: process.env.CLUSTER_NODES ?? '127.0.0.1:7000,127.0.0.1:7001,127.0.0.1:7002',
    })
    const [passed, failed] = report(results)
    console.log(
      `\n${passed} passing (${((Date.now() - started) / 1000).toFixed(0)} s)\n${failed > 0 ? `${failed} failing\n` : ''}`,
    )
    process.exitCode = failed > 0 ? 1 : 0
  } finally {
    if (process.env.EXAMPLES_KEEP) console.log(`(kept ${root})`)
    else await rm(root, { recursive: true, force: true })
  }
}
