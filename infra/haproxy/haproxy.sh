#!/usr/bin/env bash
# Run a project-owned HAProxy (Debian's package), the edge on the public port.
#
#   infra/haproxy/haproxy.sh install             install Debian's haproxy if it is missing
#   infra/haproxy/haproxy.sh check CONFIG        validate a configuration (haproxy -c)
#   infra/haproxy/haproxy.sh start CONFIG        start it in the background (master-worker mode)
#   infra/haproxy/haproxy.sh run CONFIG          run it in the foreground (a container's process)
#   infra/haproxy/haproxy.sh stop
#   infra/haproxy/haproxy.sh status
#
# The configuration reads its upstreams, ports and secrets from the environment (HAProxy expands
# "${VAR}" in quoted arguments), so the committed deploy/edge/haproxy.cfg serves make run, the
# tests, compose and Kubernetes alike.
#
# Settings (environment):
#   EDGE_STATE_DIR  pid file, logs and the peers section   (default <repo>/.state/edge)
#   EDGE_PEER_NAME  this instance's name among its peers    (default: local)
#   EDGE_PEERS      every instance, "name@host:port ..."    (default: local@127.0.0.1:10000)
#   EDGE_CORS_ORIGINS  origins browsers may call from, comma separated (default: none)
#   EDGE_TRUSTED_PROXIES  proxies in front (addresses or CIDRs, comma separated) whose last
#                   X-Forwarded-For entry is the client (default: none)
#   CRM_JWT_SECRET  the HS256 secret (32 characters or more), or for RS256
#   EDGE_JWT_PUBLIC_KEY_FILE, or CRM_JWT_PUBLIC_KEY (PEM text, written to a file here)
#                   Replicas keep their rate-limit tables in step through HAProxy's peers protocol,
#                   so a limit holds across them. The list differs per deployment, so it is written
#                   here, as a second configuration file, not in the generated one.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
state="${EDGE_STATE_DIR:-$repo/.state/edge}"
pidfile="$state/haproxy.pid"

log() { echo "[edge] $*" >&2; }

binary() { command -v haproxy || { [ -x /usr/sbin/haproxy ] && echo /usr/sbin/haproxy; }; }

install() {
  if binary >/dev/null; then return 0; fi
  log "installing Debian's haproxy package"
  if [ "$(id -u)" -ne 0 ]; then log "need root (or sudo) to apt-get install haproxy"; exit 1; fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq haproxy >/dev/null
  # The package starts a system-wide instance; ours is project-owned, so stop and disable that one.
  if command -v systemctl >/dev/null 2>&1; then systemctl disable --now haproxy >/dev/null 2>&1 || true; fi
  if [ -x /etc/init.d/haproxy ]; then /etc/init.d/haproxy stop >/dev/null 2>&1 || true; fi
}

running() { [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }

peers_file() {
  # The peers section the generated configuration's stick tables refer to ("peers edge").
  local file="$1" entry
  echo "peers edge" > "$file"
  for entry in ${EDGE_PEERS:-local@127.0.0.1:10000}; do
    echo "    peer ${entry%@*} ${entry#*@}" >> "$file"
  done
}

list_file() {
  # A comma-separated setting as a pattern file for the configuration: an entry a line, trimmed.
  tr ',' '\n' <<< "$1" | sed 's/^ *//; s/ *$//' | grep -v '^$' > "$2" || true
}

token_key() {
  # RS256 when a public key is given (a file, or CRM_JWT_PUBLIC_KEY's PEM text written to one):
  # the configuration then verifies with it and nothing else. Otherwise HS256 with the secret, which
  # must be long: an empty one would make the edge accept tokens signed with an empty key.
  if [ -z "${EDGE_JWT_PUBLIC_KEY_FILE:-}" ] && [ -n "${CRM_JWT_PUBLIC_KEY:-}" ]; then
    # A key pasted into a variable with literal \n for its line breaks is a key too.
    printf '%s\n' "${CRM_JWT_PUBLIC_KEY//\\n/$'\n'}" > "$state/jwt-public.pem"
    export EDGE_JWT_PUBLIC_KEY_FILE="$state/jwt-public.pem"
  fi
  if [ -n "${EDGE_JWT_PUBLIC_KEY_FILE:-}" ]; then
    # HAProxy accepts a missing or broken key file and then refuses every token; say so now.
    if ! grep -q "BEGIN PUBLIC KEY" "$EDGE_JWT_PUBLIC_KEY_FILE" 2>/dev/null; then
      log "EDGE_JWT_PUBLIC_KEY_FILE ($EDGE_JWT_PUBLIC_KEY_FILE) is not a readable PEM public key"; exit 1
    fi
    if command -v openssl >/dev/null && ! openssl rsa -pubin -in "$EDGE_JWT_PUBLIC_KEY_FILE" -noout 2>/dev/null; then
      log "EDGE_JWT_PUBLIC_KEY_FILE ($EDGE_JWT_PUBLIC_KEY_FILE) is not an RSA public key (RS256 needs one)"; exit 1
    fi
    return 0
  fi
  export EDGE_JWT_PUBLIC_KEY_FILE=""
  local secret="${CRM_JWT_SECRET:-}"
  if [ "${#secret}" -lt 32 ]; then log "CRM_JWT_SECRET must be set, 32 characters or more"; exit 1; fi
}

prepare() {
  mkdir -p "$state"
  export EDGE_STATE_DIR="$state"
  token_key
  # Origins browsers may call from, compared whole; the proxies in front of the edge whose
  # X-Forwarded-For names the client (none by default: the peer is the client).
  list_file "${EDGE_CORS_ORIGINS:-}" "$state/cors-origins.lst"
  list_file "${EDGE_TRUSTED_PROXIES:-}" "$state/trusted-proxies.lst"
  peers_file "$state/$1"
}

check() {
  install
  prepare peers.check.cfg
  "$(binary)" -c -q -L "${EDGE_PEER_NAME:-local}" -f "$state/peers.check.cfg" -f "$1"
}

foreground() {
  # In a container: HAProxy is the container's process (master-worker, logs on stderr).
  prepare peers.cfg
  exec "$(binary)" -W -db -L "${EDGE_PEER_NAME:-local}" -f "$state/peers.cfg" -f "$1"
}

start() {
  install
  local config="$1"
  if running; then log "already running (pid $(cat "$pidfile"))"; return 0; fi
  prepare peers.cfg
  local args=(-L "${EDGE_PEER_NAME:-local}" -f "$state/peers.cfg" -f "$config")
  "$(binary)" -c -q "${args[@]}"
  # -W: master-worker, so a reload (SIGUSR2) swaps workers without dropping connections;
  # -D: daemon, the master's pid in the pid file.
  "$(binary)" -W -D -p "$pidfile" "${args[@]}"
  log "started (pid $(cat "$pidfile")) with $config"
}

stop() {
  if ! running; then rm -f "$pidfile"; return 0; fi
  local pid; pid="$(cat "$pidfile")"
  kill -USR1 "$pid" 2>/dev/null || true  # soft stop: finish what is in flight, then exit
  for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || { rm -f "$pidfile"; return 0; }; sleep 0.25; done
  log "still alive after 10 s, stopping it"; kill -TERM "$pid" 2>/dev/null || true; rm -f "$pidfile"
}

case "${1:-}" in
  install) install ;;
  check) check "${2:?config file}" ;;
  start) start "${2:?config file}" ;;
  run) foreground "${2:?config file}" ;;
  stop) stop ;;
  status) running ;;
  *) echo "usage: $0 install|check CONFIG|start CONFIG|run CONFIG|stop|status" >&2; exit 2 ;;
esac
