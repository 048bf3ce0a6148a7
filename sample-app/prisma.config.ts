// Prisma 7 reads its configuration from prisma.config.ts in the directory the CLI runs in. It lives here, next to
// the sample app that installs `prisma`: `pnpm --filter sample-app exec prisma migrate deploy` (or `generate`) finds
// it. Relative paths are resolved from this file's directory. Prisma 7 loads no .env file: set DATABASE_URL.
// Without Prisma's native schema engine (offline machines), scripts/db.ts does generate, migrate and diff instead.
import { defineConfig } from 'prisma/config'

const defaultDatabaseUrl = 'postgresql://postgres@127.0.0.1:5432/express_redis_kit'

export default defineConfig({
  schema: '../prisma/schema.prisma',
  migrations: { path: '../prisma/migrations' },
  datasource: { url: process.env.DATABASE_URL || defaultDatabaseUrl },
})
