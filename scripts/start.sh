#!/usr/bin/env bash
# Starts the sample app: installs what it needs, starts Redis if it is not answering,
# builds the package, and runs the app (PORT, default 3000; REDIS_URL).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
ensure_dependencies
ensure_redis
pnpm run --silent build
exec pnpm --filter sample-app run --silent start
