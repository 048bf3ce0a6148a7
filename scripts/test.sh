#!/usr/bin/env bash
# Runs every check and test. Installs what it needs (pnpm, dependencies), runs the package's
# unit tier (pure logic, no network), starts what is not running (Redis on 127.0.0.1:6379, a
# 3-master Redis Cluster on 7000-7002, which it tears down afterwards), then runs the type
# check, the linter, the package's suite twice (single Redis, then Cluster), the sample app's
# suite, and the consumer matrix (the packed package in fresh projects; it needs the npm
# registry). Ends with one line: "N passed, N failed".
set -uo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

ensure_dependencies || exit 1

passed=0
failed=0
log=$(mktemp)

# A gate that is not a mocha suite counts as one test.
gate() {
  local name=$1; shift
  echo "› $name"
  if "$@"; then passed=$((passed + 1)); else echo "✗ $name failed"; failed=$((failed + 1)); fi
}

# Runs a mocha suite, shows its output, adds its counts; a suite that crashes counts as a failure.
suite() {
  local name=$1 dir=$2; shift 2
  counted "$name" "$dir" env "$@" pnpm exec mocha --reporter spec
}

# Runs a command that reports mocha-style "N passing" / "N failing" lines, and adds its counts.
counted() {
  local name=$1 dir=$2; shift 2
  echo "› $name"
  (cd "$dir" && "$@") 2>&1 | tee "$log"
  local status=${PIPESTATUS[0]}
  local ok bad
  ok=$(grep -Eo '^ *[0-9]+ passing' "$log" | grep -Eo '[0-9]+' | tail -1)
  bad=$(grep -Eo '^ *[0-9]+ failing' "$log" | grep -Eo '[0-9]+' | tail -1)
  passed=$((passed + ${ok:-0}))
  failed=$((failed + ${bad:-0}))
  if [ "$status" -ne 0 ] && [ -z "$bad" ]; then
    echo "✗ $name exited with status $status"
    failed=$((failed + 1))
  fi
}

# The unit tier first, before any service is started: pure logic, no Redis. Where this user may
# make a network namespace (root: `unshare -n`; else an unprivileged one: `unshare -rn`), it runs
# in one of its own, where nothing answers on any address, which proves it needs no network.
unit=(pnpm exec mocha --config .mocharc.unit.json --reporter spec)
if unshare -n true 2>/dev/null; then
  counted "unit tier (no network)" packages/express-redis-kit unshare -n "${unit[@]}"
elif unshare -rn true 2>/dev/null; then
  counted "unit tier (no network)" packages/express-redis-kit unshare -rn "${unit[@]}"
else
  counted "unit tier" packages/express-redis-kit "${unit[@]}"
fi

ensure_redis || exit 1
ensure_postgres || exit 1
ensure_prisma_client || exit 1 # the sample app imports it: before the type check

bash scripts/cluster.sh start || exit 1
trap 'bash scripts/cluster.sh stop' EXIT

gate "typecheck (tsc -b)" pnpm run --silent typecheck
gate "lint (biome check)" pnpm run --silent lint

suite "express-redis-kit on a single Redis" packages/express-redis-kit REDIS_MODE=single
suite "express-redis-kit on a Redis Cluster" packages/express-redis-kit REDIS_MODE=cluster CLUSTER_NODES=127.0.0.1:7000,127.0.0.1:7001,127.0.0.1:7002
if [ -d sample-app/test ]; then
  # its browser test drives Debian's Chromium (without it, that test fails and says why)
  ensure_chromium || echo "✗ no Chromium: the sample app's browser test will fail"
  suite "sample app" sample-app
fi
# The packed package in fresh projects (ESM, CommonJS, TypeScript; express and redis at the floor
# and latest of their ranges; single Redis and Cluster), publint, arethetypeswrong. Needs the npm registry.
counted "consumer matrix" packages/express-redis-kit node consumers/run.mjs

rm -f "$log"
echo
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
