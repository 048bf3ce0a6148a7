#!/usr/bin/env node
/*
 * The consumer matrix: the package as users get it. Packs the package (prepack builds it),
 * installs the tarball from the npm registry's point of view into fresh projects of each kind
 * (ESM and CommonJS JavaScript, TypeScript with module nodenext from ESM and from CommonJS,
 * node16 from CommonJS, moduleResolution bundler), with express and redis at the floor and at the
 * latest of their declared ranges, type-checks them (the package's declarations too, without
 * skipLibCheck, against @types/node at its floor and at its latest), and runs a smoke app that uses every export
 * against the real Redis (single and Cluster): a request through each middleware, one cached()
 * value, one notifier message, a diagnostics channel and the express-redis-kit/metrics entry point,
 * cached() with `localCache` (local hits with node-redis 5.9+, a warning and Redis hits
 * before), and a passport-local sign-in and sign-out on the session (express 4 and 5). A second
 * smoke app runs express-session with the express-redis-kit/express-session store (its own
 * program in TypeScript projects: express-session's types declare `req.session` otherwise).
 * Then publint and @arethetypeswrong/cli on the tarball, and every code example of the READMEs
 * and docs/migrating.md on Express 5 and 4 (consumers/examples.mjs, one line per example and major).
 *
 *   node consumers/run.mjs        (from packages/express-redis-kit; needs the npm registry)
 *
 * Environment: REDIS_URL (default redis://127.0.0.1:6379), CLUSTER_NODES (default
 * 127.0.0.1:7000,127.0.0.1:7001,127.0.0.1:7002), CONSUMERS_CACHE (npm cache shared by every
 * project; default ~/.cache/express-redis-kit-consumers), CONSUMERS_ONLY (a cell name to run alone).
 * Prints one line per cell and ends with "N passed, N failed"; exits 1 if any failed.
 */
import { execFile } from 'node:child_process'
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { homedir, tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { report, runExamples } from './examples.mjs'

const run = promisify(execFile)
const here = dirname(fileURLToPath(import.meta.url))
const packageDir = join(here, '..')
const cache = process.env.CONSUMERS_CACHE ?? join(homedir(), '.cache', 'express-redis-kit-consumers')
const redisUrl = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379'
const clusterNodes = process.env.CLUSTER_NODES ?? '127.0.0.1:7000,127.0.0.1:7001,127.0.0.1:7002'

/**
 * Each cell: how the project is set up and which versions it installs. Every declared floor
 * (express 4.21.0 and 5.0.0, redis 5.0.1) and every latest major (express 4 and 5, redis 5 and
 * 6) appears at least once, each kind of project once, each Redis mode more than once.
 * `node`: the @types/node range (default ^20.19.0); `libCheck: true` type-checks the
 * installed declarations, ours included (`skipLibCheck: false`), which a TypeScript project
 * does by default: @types/node at the floor (20.19.0) and at the latest, ESM and CommonJS.
 */
const CELLS = [
  { name: 'esm-js', kind: 'esm', express: '5', redis: '6', mode: 'single' },
  { name: 'cjs-js', kind: 'cjs', express: '4.21.0', redis: '5.0.1', mode: 'single' },
  { name: 'cjs-js-cluster', kind: 'cjs', express: '5', redis: '6', mode: 'cluster' },
  {
    name: 'ts-nodenext-esm+node-types-latest',
    kind: 'ts-esm',
    express: '5.0.0',
    redis: '6',
    mode: 'cluster',
    types: '5',
    node: 'latest',
    libCheck: true,
  },
  {
    name: 'ts-nodenext-cjs+node-types-floor',
    kind: 'ts-cjs',
    express: '4',
    redis: '5',
    mode: 'single',
    types: '4',
    node: '20.19.0',
    libCheck: true,
  },
  {
    name: 'ts-node16-cjs+node-types-latest',
    kind: 'ts-node16',
    express: '5',
    redis: '5.0.1',
    mode: 'cluster',
    types: '5',
    node: 'latest',
    libCheck: true,
  },
  {
    name: 'ts-bundler+express-session-types',
    kind: 'ts-bundler',
    express: '5',
    redis: '6',
    mode: 'single',
    types: '5',
    extra: { '@types/express-session': '^1.18.0' },
  },
]

async function sh(command, args, options = {}) {
  try {
    return await run(command, args, { maxBuffer: 32 * 1024 * 1024, ...options })
  } catch (error) {
    const output = `${error.stdout ?? ''}${error.stderr ?? ''}`.trim().split('\n').slice(-30).join('\n')
    throw new Error(`${command} ${args.join(' ')} failed:\n${output}`)
  }
}

const tsconfigs = {
  'ts-esm': { module: 'nodenext', moduleResolution: 'nodenext', type: 'module' },
  'ts-cjs': { module: 'nodenext', moduleResolution: 'nodenext', type: 'commonjs' },
  'ts-node16': { module: 'node16', moduleResolution: 'node16', type: 'commonjs' },
  'ts-bundler': { module: 'esnext', moduleResolution: 'bundler', type: 'module' },
}

/** The version a dist-tag (`latest`) names today, asked once: `npm ls` holds a tag in package.json as invalid. */
const tagged = new Map()
function resolveTag(name, range) {
  if (range !== 'latest') return range
  if (!tagged.has(name))
    tagged.set(
      name,
      sh('npm', ['view', `${name}@latest`, 'version', '--cache', cache]).then(({ stdout }) => stdout.trim()),
    )
  return tagged.get(name)
}

async function prepare(cell, tarball, dir) {
  const ts = cell.kind.startsWith('ts')
  const type = ts ? tsconfigs[cell.kind].type : cell.kind === 'esm' ? 'module' : 'commonjs'
  const pkg = {
    name: `consumer-${cell.name.replace(/[^a-z0-9-]/g, '-')}`,
    private: true,
    type,
    dependencies: {
      'express-redis-kit': `file:${tarball}`,
      express: cell.express,
      redis: cell.redis,
      // the optional peer of express-redis-kit/metrics
      '@opentelemetry/api': '^1.9.0',
      // the optional peer of express-redis-kit/express-session, and passport on the session
      'express-session': '^1.18.0',
      passport: '^0.7.0',
      'passport-local': '^1.0.0',
    },
    devDependencies: ts
      ? {
          typescript: '~5.9.3',
          '@types/express': `^${cell.types}`,
          '@types/node': await resolveTag('@types/node', cell.node ?? '^20.19.0'),
          '@types/passport': '^1.0.17',
          '@types/passport-local': '^1.0.38',
          '@types/express-session': '^1.18.0',
          ...(cell.kind === 'ts-bundler' ? { tsx: '^4.20.0' } : {}),
          ...(cell.extra ?? {}),
        }
      : {},
  }
  await writeFile(join(dir, 'package.json'), `${JSON.stringify(pkg, null, 2)}\n`)
  for (const name of SMOKES) await prepareSmoke(cell, dir, name)
}

/** The smoke apps: the package's main entry (and passport), and express-session with the store. */
const SMOKES = ['smoke', 'smoke-express-session']

async function prepareSmoke(cell, dir, name) {
  const ts = cell.kind.startsWith('ts')
  const smoke = await readFile(join(here, `${name}.ts`), 'utf8')
  if (ts) {
    const { module, moduleResolution } = tsconfigs[cell.kind]
    const compilerOptions = {
      target: 'es2022',
      module,
      moduleResolution,
      strict: true,
      skipLibCheck: !cell.libCheck,
      esModuleInterop: true,
      outDir: 'out',
      // Every installed @types package takes part, as in a project without a `types` list
      // (the bundler project has @types/express-session beside the package).
      ...(cell.kind === 'ts-bundler' ? {} : { types: ['node'] }),
      ...(cell.kind === 'ts-bundler' ? { noEmit: true } : {}),
    }
    // One program per smoke app: express-session's types and the kit's session() both declare `req.session`.
    const tsconfig = name === 'smoke' ? 'tsconfig.json' : `tsconfig.${name}.json`
    await writeFile(join(dir, tsconfig), JSON.stringify({ compilerOptions, include: [`${name}.ts`] }, null, 2))
    await writeFile(join(dir, `${name}.ts`), smoke)
  } else {
    // The same smoke test, types stripped by the TypeScript compiler of the package itself.
    const ts = await import('typescript')
    const { outputText } = ts.default.transpileModule(smoke, {
      compilerOptions: {
        target: ts.default.ScriptTarget.ES2022,
        module: cell.kind === 'esm' ? ts.default.ModuleKind.ESNext : ts.default.ModuleKind.CommonJS,
        esModuleInterop: true,
      },
    })
    await writeFile(join(dir, `${name}.js`), outputText)
  }
}

async function runCell(cell, tarball, root) {
  const dir = join(root, cell.name)
  await mkdir(dir, { recursive: true })
  await prepare(cell, tarball, dir)
  await sh('npm', ['install', '--no-audit', '--no-fund', '--prefer-offline', '--cache', cache, '--loglevel', 'error'], {
    cwd: dir,
  })
  const installed = JSON.parse(
    (await sh('npm', ['ls', 'express', 'redis', '@types/node', '--json', '--depth=0'], { cwd: dir })).stdout,
  ).dependencies
  const env = {
    ...process.env,
    SMOKE_MODE: cell.mode,
    SMOKE_REDIS_VERSION: installed.redis.version,
    REDIS_URL: redisUrl,
    CLUSTER_NODES: clusterNodes,
  }
  const lines = []
  for (const name of SMOKES) {
    const tsconfig = name === 'smoke' ? 'tsconfig.json' : `tsconfig.${name}.json`
    let entry
    if (cell.kind === 'ts-bundler') {
      await sh('npx', ['tsc', '-p', tsconfig], { cwd: dir })
      entry = ['npx', ['tsx', `${name}.ts`]]
    } else if (cell.kind.startsWith('ts')) {
      await sh('npx', ['tsc', '-p', tsconfig], { cwd: dir })
      entry = ['node', [`out/${name}.js`]]
    } else {
      entry = ['node', [`${name}.js`]]
    }
    const { stdout } = await sh(entry[0], entry[1], { cwd: dir, env, timeout: 60_000 })
    lines.push(stdout.trim().split('\n').at(-1))
  }
  const nodeTypes = installed['@types/node'] ? `, @types/node ${installed['@types/node'].version}` : ''
  const libCheck = cell.libCheck ? ', skipLibCheck: false' : ''
  return `${lines.join('; ')} (express ${installed.express.version}, redis ${installed.redis.version}${nodeTypes}${libCheck})`
}

async function main() {
  const root = await mkdtemp(join(tmpdir(), 'erk-consumers-'))
  let passed = 0
  let failed = 0
  try {
    await mkdir(cache, { recursive: true })
    const { stdout } = await sh('pnpm', ['pack', '--pack-destination', root], { cwd: packageDir })
    const tarball = stdout.trim().split('\n').at(-1)
    console.log(`› consumer matrix: ${tarball}`)
    const cells = CELLS.filter((cell) => !process.env.CONSUMERS_ONLY || cell.name === process.env.CONSUMERS_ONLY)
    // Two projects at a time: installs wait on the network, type checks and smoke runs on the CPU.
    const queue = [...cells]
    const results = new Map()
    await Promise.all(
      [0, 1].map(async () => {
        for (let cell = queue.shift(); cell; cell = queue.shift()) {
          const started = Date.now()
          try {
            results.set(cell.name, { ok: true, text: await runCell(cell, tarball, root), ms: Date.now() - started })
          } catch (error) {
            results.set(cell.name, { ok: false, text: error.message, ms: Date.now() - started })
          }
        }
      }),
    )
    for (const cell of cells) {
      const result = results.get(cell.name)
      const seconds = (result.ms / 1000).toFixed(0)
      if (result.ok) {
        passed++
        console.log(`  ✔ ${cell.name} (${cell.mode}): ${result.text} [${seconds} s]`)
      } else {
        failed++
        console.log(`  ✗ ${cell.name} (${cell.mode}) [${seconds} s]\n${result.text.replace(/^/gm, '      ')}`)
      }
    }
    if (!process.env.CONSUMERS_ONLY) {
      for (const [name, args] of [
        ['publint', ['-y', 'publint@0.3', tarball, '--strict']],
        ['@arethetypeswrong/cli', ['-y', '@arethetypeswrong/cli@0.18', tarball]],
      ]) {
        try {
          await sh('npx', ['--cache', cache, ...args], { cwd: root })
          passed++
          console.log(`  ✔ ${name}: no problems`)
        } catch (error) {
          failed++
          console.log(`  ✗ ${name}\n${error.message.replace(/^/gm, '      ')}`)
        }
      }
      const started = Date.now()
      console.log("› the documents' code examples, on Express 5 and 4")
      const [examplesPassed, examplesFailed] = report(await runExamples({ tarball, root, cache, clusterNodes }))
      console.log(`  (${((Date.now() - started) / 1000).toFixed(0)} s)`)
      passed += examplesPassed
      failed += examplesFailed
    }
  } finally {
    await rm(root, { recursive: true, force: true })
  }
  console.log(`\n${passed} passing\n${failed > 0 ? `${failed} failing\n` : ''}`)
  process.exitCode = failed > 0 ? 1 : 0
}

await main()
