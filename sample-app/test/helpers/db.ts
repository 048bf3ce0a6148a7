import pg from 'pg'
import { migrateDatabase } from '../../scripts/db.js'

/**
 * The suite's own database (never the development one): TEST_DATABASE_URL, else DATABASE_URL, else
 * express_redis_kit_test on the local server. Its name must contain "test", since the suite empties it.
 */
export const testDatabaseUrl =
  process.env.TEST_DATABASE_URL ||
  process.env.DATABASE_URL ||
  'postgresql://postgres@127.0.0.1:5432/express_redis_kit_test'

let prepared: Promise<void> | undefined

/** Creates and migrates the test database, then empties "User" and "Outbox" — once per process (root hook or first suite). */
export function prepareDatabase(): Promise<void> {
  prepared ??= (async () => {
    const name = decodeURIComponent(new URL(testDatabaseUrl).pathname.slice(1))
    if (!/test/i.test(name)) {
      throw new Error(`refusing to empty database "${name}": the test database's name must contain "test"`)
    }
    const log = console.log
    console.log = () => {} // migrateDatabase reports each step
    try {
      await migrateDatabase(testDatabaseUrl)
    } finally {
      console.log = log
    }
    await query('TRUNCATE TABLE "User" RESTART IDENTITY CASCADE')
    // not its identity: a message id (outbox-<row id>) is never given to two events, even by two runs
    await query('TRUNCATE TABLE "Outbox"')
  })()
  return prepared
}

let pool: pg.Pool | undefined

/** Runs SQL on the test database directly (not through the app). */
export async function query<Row extends pg.QueryResultRow = pg.QueryResultRow>(
  sql: string,
  values: unknown[] = [],
): Promise<Row[]> {
  pool ??= new pg.Pool({ connectionString: testDatabaseUrl, max: 2 })
  const result = await pool.query<Row>(sql, values)
  return result.rows
}

/** The id the database gives the next user (read from its sequence; nothing else may sign up meanwhile). */
export async function nextUserId(): Promise<number> {
  const [sequence] = await query<{ last_value: string; is_called: boolean }>(
    'SELECT last_value, is_called FROM "User_id_seq"',
  )
  return Number(sequence!.last_value) + (sequence!.is_called ? 1 : 0)
}

export async function countUsers(): Promise<number> {
  const [row] = await query<{ count: string }>('SELECT count(*) AS count FROM "User"')
  return Number(row?.count)
}

export interface UserRow {
  id: number
  email: string
  name: string
  passwordHash: string
  createdAt: Date
  updatedAt: Date
}

export async function userRow(id: number): Promise<UserRow | undefined> {
  const [row] = await query<UserRow>('SELECT * FROM "User" WHERE id = $1', [id])
  return row
}

export async function userByEmail(email: string): Promise<UserRow | undefined> {
  const [row] = await query<UserRow>('SELECT * FROM "User" WHERE email = $1', [email])
  return row
}

/** Every row, to compare before and after a request that must change nothing. */
export async function allUsers(): Promise<UserRow[]> {
  return query<UserRow>('SELECT * FROM "User" ORDER BY id')
}

export async function closePool(): Promise<void> {
  await pool?.end()
  pool = undefined
}
