#!/usr/bin/env bash
# Run a project-owned Redis (Debian's redis-server), for gateway replicas that share rate limits
# (CRM_RATE_LIMIT_STORAGE=redis://127.0.0.1:$REDIS_PORT). Nothing is persisted: limits are transient.
#
#   infra/redis/redis.sh start | stop | status
#
# Settings (environment): REDIS_PORT (default 6379), REDIS_STATE_DIR (default <repo>/.state/redis-<port>)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
port="${REDIS_PORT:-6379}"
state="${REDIS_STATE_DIR:-$repo/.state/redis-$port}"

log() { echo "[redis] $*" >&2; }

install_server() {
  command -v redis-server >/dev/null && return 0
  log "installing Debian's redis-server package"
  if [ "$(id -u)" -ne 0 ]; then log "need root (or sudo) to apt-get install redis-server"; exit 1; fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
}

answering() { redis-cli -p "$port" ping 2>/dev/null | grep -q PONG; }

case "${1:-}" in
  start)
    install_server
    if answering; then log "already answering on 127.0.0.1:$port"; exit 0; fi
    mkdir -p "$state"
    state="$(cd "$state" && pwd)"
    redis-server --bind 127.0.0.1 --port "$port" --save '' --appendonly no --daemonize yes \
      --dir "$state" --pidfile "$state/redis.pid" --logfile "$state/redis.log"
    for _ in $(seq 50); do answering && { log "ready on 127.0.0.1:$port"; exit 0; }; sleep 0.1; done
    log "did not answer; see $state/redis.log"; exit 1 ;;
  stop)
    if [ -f "$state/redis.pid" ]; then kill "$(cat "$state/redis.pid")" 2>/dev/null || true; rm -f "$state/redis.pid"; fi ;;
  status)
    answering && echo "running on 127.0.0.1:$port" || { echo "stopped"; exit 1; } ;;
  *)
    echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
