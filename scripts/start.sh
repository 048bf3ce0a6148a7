#!/usr/bin/env bash
# Starts the sample app: installs what it needs, starts Redis and PostgreSQL if they are not
# answering, generates the Prisma Client, creates and migrates the database, builds the package,
# and runs the app (PORT, default 3000; REDIS_URL, or REDIS_CLUSTER_NODES for a Redis Cluster; DATABASE_URL).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
ensure_dependencies
ensure_redis
ensure_prisma_client
ensure_database
pnpm run --silent build
exec pnpm --filter sample-app run --silent start
