/**
 * The sample app's database toolchain without Prisma's native schema engine, which the Prisma CLI downloads from
 * binaries.prisma.sh for `generate`, `migrate` and `db` (machines without that host cannot run them). From sample-app/:
 *
 *   tsx scripts/db.ts generate      src/generated/prisma, like `prisma generate`
 *   tsx scripts/db.ts migrate       creates the database if missing, applies prisma/migrations, like `prisma migrate deploy`
 *   tsx scripts/db.ts diff <name>   writes prisma/migrations/<UTC timestamp>_<name>/migration.sql from the difference
 *                                   between the migrations and the schema, like `prisma migrate dev --create-only`
 *
 * The database is DATABASE_URL, else prisma.config.ts's default; paths come from prisma.config.ts too. Migrate and diff
 * run Prisma's own schema engine compiled to WebAssembly (@prisma/schema-engine-wasm, the version `prisma` bundles)
 * over the pg driver adapter, so they write what the native engine writes (`_prisma_migrations` included).
 */
import { spawnSync } from 'node:child_process'
import { randomUUID } from 'node:crypto'
import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises'
import path from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { PrismaPg } from '@prisma/adapter-pg'
import { bindMigrationAwareSqlAdapterFactory } from '@prisma/driver-adapter-utils'
import type { MigrationList, SchemaEngine, SchemaFilter } from '@prisma/schema-engine-wasm'
import pg from 'pg'
import config from '../prisma.config.js'

const appDir = path.resolve(import.meta.dirname, '..')
const schemaPath = path.resolve(appDir, config.schema!)
const migrationsDir = path.resolve(appDir, config.migrations!.path!)
const filters: SchemaFilter = { externalTables: [], externalEnums: [] }
const engineRuntimeUrl = import.meta.resolve('@prisma/schema-engine-wasm/schema_engine_bg')
const engineWasmUrl = new URL('schema_engine_bg.wasm', engineRuntimeUrl)

/** The database URL the commands use: DATABASE_URL, else prisma.config.ts's default. */
export const databaseUrl = config.datasource!.url!

/** Runs `prisma generate` (writes the client to the generator's output, src/generated/prisma). */
export function generatePrismaClient(): void {
  // `prisma generate` does not use the schema engine, but the CLI first makes sure the native engine is downloaded, and
  // that fails offline. PRISMA_SCHEMA_ENGINE_BINARY names an engine to use instead of downloading one, and generate only
  // checks that the file exists: any existing file does. It names the WebAssembly engine's .wasm file, which nothing
  // can execute by mistake. A real engine the user configured is kept.
  const engine = process.env.PRISMA_SCHEMA_ENGINE_BINARY || fileURLToPath(engineWasmUrl)
  const env = { ...process.env, PRISMA_SCHEMA_ENGINE_BINARY: engine }
  const prisma = path.join(appDir, 'node_modules', '.bin', 'prisma')
  const { status, error } = spawnSync(prisma, ['generate'], { cwd: appDir, env, stdio: 'inherit' })
  if (error || status !== 0) throw new Error(`prisma generate failed (${error?.message ?? `exit status ${status}`})`)
}

/**
 * Creates the database if it does not exist and applies the migrations not yet applied, recording them in
 * `_prisma_migrations` as `prisma migrate deploy` does; running it again applies nothing. Processes migrating the same
 * database at once take turns on an advisory lock (taken in the `postgres` maintenance database, which exists before
 * the target does), so the later one finds the database created and the migrations applied.
 */
export async function migrateDatabase(databaseUrl: string): Promise<void> {
  const database = decodeURIComponent(new URL(databaseUrl).pathname.slice(1))
  if (!database) throw new Error(`no database name in ${databaseUrl}`)
  const maintenance = new pg.Client({ connectionString: withDatabase(databaseUrl, 'postgres') })
  await maintenance.connect()
  try {
    await maintenance.query('SELECT pg_advisory_lock(hashtext($1))', [`prisma migrate ${database}`])
    const { rowCount } = await maintenance.query('SELECT 1 FROM pg_database WHERE datname = $1', [database])
    if (!rowCount) {
      await maintenance.query(`CREATE DATABASE ${maintenance.escapeIdentifier(database)}`)
      console.log(`› created database ${database}`)
    }
    const migrationsList = await readMigrations()
    const { appliedMigrationNames } = await withSchemaEngine(databaseUrl, (engine) =>
      engine.applyMigrations({ migrationsList, filters }),
    )
    for (const name of appliedMigrationNames) console.log(`› applied migration ${name}`)
  } finally {
    await maintenance.end() // ending the session releases the lock
  }
}

/**
 * Writes the SQL that takes a database from the migrations to the schema as a new migration, named as
 * `prisma migrate dev` names it, and returns its directory; null when there is no difference. The engine replays the
 * migrations in a temporary shadow database on the server of `databaseUrl` (the role needs CREATEDB), created from the
 * `postgres` maintenance database: the database itself is not read and need not exist.
 */
export async function diffMigration(name: string, databaseUrl: string): Promise<string | null> {
  const migrationsList = await readMigrations()
  // The engine reads the connector from the lock file, which the first migration writes (as `prisma migrate dev` does)
  migrationsList.lockfile.content ??= lockfile
  const schema = { files: [{ path: schemaPath, content: await readFile(schemaPath, 'utf8') }] }
  const { stdout: script } = await withSchemaEngine(withDatabase(databaseUrl, 'postgres'), (engine) =>
    engine.diff({
      from: { tag: 'migrations', ...migrationsList },
      to: { tag: 'schemaDatamodel', ...schema },
      script: true,
      exitCode: null,
      filters,
    }),
  )
  if (!script || script.trim() === '-- This is an empty migration.') return null
  const slug = name
    .replace(/([a-z\d])([A-Z])/g, '$1_$2')
    .toLowerCase()
    .replace(/[^a-z\d]+/g, '_')
    .replace(/^_|_$/g, '')
    .slice(0, 200)
  const timestamp = new Date().toISOString().replace(/\D/g, '').slice(0, 14)
  const dir = path.join(migrationsDir, `${timestamp}_${slug}`)
  await mkdir(dir, { recursive: true })
  await writeFile(path.join(dir, 'migration.sql'), script)
  await writeFile(path.join(migrationsDir, 'migration_lock.toml'), lockfile)
  return dir
}

const lockfile = `# Please do not edit this file manually
# It should be added in your version-control system (e.g., Git)
provider = "postgresql"
`

/** The migrations directory as the Prisma CLI hands it to the engine (its order, its lock file, its error values). */
async function readMigrations(): Promise<MigrationList> {
  const read = (file: string) => readFile(path.join(migrationsDir, file), 'utf8')
  const entries = await readdir(migrationsDir, { withFileTypes: true }).catch(() => [])
  const migrationDirectories = await Promise.all(
    entries
      .filter((entry) => entry.isDirectory())
      .map(async ({ name }) => ({
        path: name,
        migrationFile: {
          path: 'migration.sql',
          content: await read(path.join(name, 'migration.sql')).then(
            (value) => ({ tag: 'ok' as const, value }),
            (error: Error) => ({ tag: 'error' as const, value: error.message }),
          ),
        },
      })),
  )
  return {
    baseDir: migrationsDir,
    lockfile: { path: 'migration_lock.toml', content: await read('migration_lock.toml').catch(() => null) },
    migrationDirectories: migrationDirectories.sort((a, b) => a.path.localeCompare(b.path)),
    shadowDbInitScript: config.migrations?.initShadowDb ?? '',
  }
}

/** `databaseUrl` naming another database on the same server. */
function withDatabase(databaseUrl: string, database: string): string {
  const url = new URL(databaseUrl)
  url.pathname = `/${encodeURIComponent(database)}`
  return url.href
}

/** Starts the WebAssembly schema engine on a database through the pg driver adapter, runs `work`, stops it. */
async function withSchemaEngine<T>(databaseUrl: string, work: (engine: SchemaEngine) => Promise<T>): Promise<T> {
  engineRuntime ??= loadEngineRuntime()
  const runtime = await engineRuntime
  const pool = enginePool(databaseUrl)
  const adapter = bindMigrationAwareSqlAdapterFactory(engineAdapterFactory(pool, databaseUrl))
  const log = (message: string) => process.env.DEBUG && console.error(message)
  const datamodel = await readFile(schemaPath, 'utf8')
  const engine = await runtime.SchemaEngine.new({ datamodels: [[schemaPath, datamodel]] }, log, adapter)
  try {
    return await work(engine)
  } finally {
    engine.free()
    await pool.end()
  }
}

// @prisma/adapter-pg 7.10.0 is made for Prisma Client's queries; the schema engine needs three fixes (all three seen
// failing here without them). enginePool and engineAdapterFactory make them, on pools of ours (ended afterwards).

/**
 * A pool whose results report pg's internal "char" type (OID 18) as text, as its values are (one-character strings):
 * the engine reads such catalog columns to describe a schema (diff), and the adapter rejects the type ("Column type
 * 'char' could not be deserialized"), as it once did `name` (prisma/prisma#27403).
 */
function enginePool(databaseUrl: string): pg.Pool {
  const pool = new pg.Pool({ connectionString: databaseUrl })
  pool.on('error', () => {}) // an idle connection the server dropped; the next query reports it
  const query = pool.query.bind(pool) as (query: pg.QueryConfig | string) => Promise<pg.QueryResult>
  pool.query = (async (config: pg.QueryConfig | string) => {
    const result = await query(config)
    for (const field of result.fields ?? []) if (field.dataTypeID === 18) field.dataTypeID = 25
    return result
  }) as typeof pool.query
  return pool
}

function engineAdapterFactory(pool: pg.Pool, databaseUrl: string): PrismaPg {
  const factory = new PrismaPg(pool)
  // A script (a migration) runs whole, as one simple query (pg sends one when there are no parameters), in one implicit
  // transaction, as the native engine runs it; the adapter splits it at every ';', even inside a string or a function.
  const connect = factory.connect.bind(factory)
  factory.connect = async () => {
    const adapter = await connect()
    adapter.executeScript = async (script) => void (await adapter.executeRaw({ sql: script, args: [], argTypes: [] }))
    return adapter
  }
  // The adapter's shadow database (diff) fails twice: pg ignores the shadow `database` it sets next to a connection
  // string (it would replay the migrations in the database itself), and it drops the shadow database while its pool is
  // still connected to it ("being accessed by other users"). The same steps, without either.
  factory.connectToShadowDb = async () => {
    const name = `prisma_migrate_shadow_db_${randomUUID()}`
    await pool.query(`CREATE DATABASE "${name}"`)
    const shadowPool = enginePool(withDatabase(databaseUrl, name))
    const shadow = await engineAdapterFactory(shadowPool, withDatabase(databaseUrl, name)).connect()
    shadow.dispose = async () => {
      await shadowPool.end()
      await pool.query(`DROP DATABASE "${name}"`)
    }
    return shadow
  }
  return factory
}

type EngineRuntime = typeof import('@prisma/schema-engine-wasm') & { __wbg_set_wasm(exports: object): void }
// The two WebAssembly calls used, typed here: @types/node 20 does not declare them (and lib has no DOM)
declare const WebAssembly: {
  compile(bytes: Uint8Array): Promise<object>
  Instance: new (module: object, imports: object) => { exports: Record<string, unknown> }
}
let engineRuntime: Promise<EngineRuntime> | undefined

async function loadEngineRuntime(): Promise<EngineRuntime> {
  // Node 20 cannot import the package's entry, which imports the .wasm file: instantiate the module against its JS glue
  // by hand, as that entry would. The engine reports a Rust panic through this global, as in the Prisma CLI.
  const runtime = (await import('@prisma/schema-engine-wasm/schema_engine_bg')) as EngineRuntime
  const panics = { set_message: (message: string) => console.error(message) }
  Object.assign(globalThis, { PRISMA_WASM_PANIC_REGISTRY: panics })
  // The engine never clears a timer: the 10 s timeout on its advisory lock (migrate) stays pending once it has the lock
  // and would hold the process open 10 s longer. Its timers are unref'd; a query it waits for holds the process anyway.
  const unrefTimeout = (run: () => void, ms: number) => setTimeout(run, ms >>> 0).unref()
  const glue = Object.fromEntries(
    Object.entries(runtime).map(([name, value]) => [name, name.startsWith('__wbg_setTimeout_') ? unrefTimeout : value]),
  )
  const module = await WebAssembly.compile(await readFile(engineWasmUrl))
  const instance = new WebAssembly.Instance(module, { './schema_engine_bg.js': glue })
  runtime.__wbg_set_wasm(instance.exports)
  ;(instance.exports.__wbindgen_start as () => void)()
  return runtime
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const [command, name] = process.argv.slice(2)
  try {
    if (command === 'generate') generatePrismaClient()
    else if (command === 'migrate') await migrateDatabase(databaseUrl)
    else if (command === 'diff' && name) {
      const dir = await diffMigration(name, databaseUrl)
      console.log(dir ? `› wrote ${path.relative(process.cwd(), dir)}/migration.sql` : '› no difference')
    } else {
      console.error('usage: tsx scripts/db.ts generate | migrate | diff <name>   (database: DATABASE_URL)')
      process.exitCode = 2
    }
  } catch (error) {
    console.error(`db ${command}: ${error instanceof Error ? error.message : JSON.stringify(error)}`)
    process.exitCode = 1
  }
}
