# Shared by scripts/test.sh and scripts/start.sh: make sure the tools and services exist.
# Every function is idempotent: it does nothing when what it ensures is already there.

REDIS_PORT=${REDIS_PORT:-6379}

ensure_pnpm() {
  if ! command -v pnpm >/dev/null 2>&1; then
    echo "› installing pnpm 10 (npm install -g pnpm@10)"
    # corepack fails its signature check on some machines; npm always works.
    npm install -g pnpm@10 >/dev/null
  fi
}

ensure_dependencies() {
  ensure_pnpm
  pnpm install --frozen-lockfile --reporter=silent
}

ensure_redis() {
  if redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping >/dev/null 2>&1; then return; fi
  echo "› starting Redis on 127.0.0.1:$REDIS_PORT"
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port "$REDIS_PORT" --save "" --appendonly no \
    --dir /tmp --logfile "/tmp/redis-$REDIS_PORT.log"
  for _ in $(seq 50); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && return; sleep 0.1; done
  echo "Redis did not start on port $REDIS_PORT" >&2
  return 1
}

ensure_postgres() {
  if pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then return; fi
  echo "› starting PostgreSQL"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql)" main start
}

# The Prisma Client the sample app imports, generated into sample-app/src/generated/prisma
# (git-ignored): needed before any type check. Works offline, without Prisma's native engines
# (sample-app/scripts/db.ts explains how).
ensure_prisma_client() {
  local output
  if ! output=$(pnpm --filter sample-app run --silent db:generate 2>&1); then
    echo "$output" >&2
    echo "generating the Prisma Client failed" >&2
    return 1
  fi
}

# The sample app's database at DATABASE_URL (default in sample-app/prisma.config.ts: database
# express_redis_kit on 127.0.0.1:5432, role postgres): created if missing, every migration in
# prisma/migrations applied. Several processes may run it at once.
ensure_database() {
  ensure_postgres
  pnpm --filter sample-app run --silent db:migrate
}

# Debian's Chromium for the sample app's browser test (sample-app/test/browser.test.ts drives it
# with playwright-core; no browser is ever downloaded). Installed with apt-get as root; without
# root, a missing Chromium is an error that says what to run. CHROMIUM_PATH names another binary.
ensure_chromium() {
  local chromium=${CHROMIUM_PATH:-/usr/bin/chromium}
  if [ -x "$chromium" ]; then return; fi
  if [ -n "${CHROMIUM_PATH:-}" ]; then
    echo "CHROMIUM_PATH=$CHROMIUM_PATH is not an executable" >&2
    return 1
  fi
  if [ "$(id -u)" -ne 0 ]; then
    echo "Chromium is missing: run 'sudo apt-get install -y chromium' (the sample app's browser test needs it)" >&2
    return 1
  fi
  echo "› installing Chromium (apt-get install chromium)"
  if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } >/tmp/apt-chromium.log 2>&1; then
    tail -20 /tmp/apt-chromium.log >&2
    echo "installing Chromium failed (log: /tmp/apt-chromium.log)" >&2
    return 1
  fi
}
