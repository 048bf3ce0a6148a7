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
