#!/usr/bin/env bash
# Starts (or stops) the 3-master Redis Cluster the tests run against, on loopback ports.
#   scripts/cluster.sh start   replaces any server left on those ports by an earlier run
#   scripts/cluster.sh stop
set -euo pipefail
PORTS=(${CLUSTER_PORTS:-7000 7001 7002})
STATE_DIR=${CLUSTER_DIR:-/tmp/express-redis-kit-cluster}

stop() {
  for port in "${PORTS[@]}"; do
    redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || true
  done
  for port in "${PORTS[@]}"; do
    for _ in $(seq 50); do redis-cli -p "$port" ping >/dev/null 2>&1 || break; sleep 0.1; done
  done
  rm -rf "$STATE_DIR"
}

start() {
  stop
  for port in "${PORTS[@]}"; do
    mkdir -p "$STATE_DIR/$port"
    redis-server --port "$port" --bind 127.0.0.1 --cluster-enabled yes \
      --cluster-config-file "$STATE_DIR/$port/nodes.conf" --dir "$STATE_DIR/$port" \
      --save "" --appendonly no --daemonize yes --logfile "$STATE_DIR/$port/redis.log"
  done
  for port in "${PORTS[@]}"; do
    for _ in $(seq 50); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
  done
  local nodes=()
  for port in "${PORTS[@]}"; do nodes+=("127.0.0.1:$port"); done
  redis-cli --cluster create "${nodes[@]}" --cluster-replicas 0 --cluster-yes >/dev/null
  for _ in $(seq 100); do
    if redis-cli -p "${PORTS[0]}" cluster info | grep -q 'cluster_state:ok'; then
      echo "› Redis Cluster ready on ${nodes[*]}"
      return
    fi
    sleep 0.1
  done
  echo "the Redis Cluster did not become ready" >&2
  return 1
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
