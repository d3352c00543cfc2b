#!/usr/bin/env bash
# Run a project-owned PostgreSQL cluster (Debian's server) with one database per service.
#
#   infra/postgres/postgres.sh start    install the server if missing, init once, start, create databases
#   infra/postgres/postgres.sh stop
#   infra/postgres/postgres.sh status
#   infra/postgres/postgres.sh url SERVICE   print the SQLAlchemy URL of that service's database
#
# Settings (environment):
#   PG_STATE_DIR  data folder, socket and log   (default <repo>/.state/postgres)
#   PG_PORT       TCP port on 127.0.0.1          (default 5432)
#   PG_USER / PG_PASSWORD                        (default crm / crm)
#   PG_DATABASES  space separated                (default: the five CONTRACT databases)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
state="${PG_STATE_DIR:-$repo/.state/postgres}"
port="${PG_PORT:-5432}"
user="${PG_USER:-crm}"
password="${PG_PASSWORD:-crm}"
databases="${PG_DATABASES:-crm_leads crm_opportunities crm_orders crm_notifications crm_gateway}"
data="$state/data"

log() { echo "[postgres] $*" >&2; }

bindir() {
  local d
  d="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)"
  [ -n "$d" ] && [ -x "$d/initdb" ] && echo "$d"
}

install_server() {
  if bindir >/dev/null; then return 0; fi
  log "installing Debian's postgresql package"
  if [ "$(id -u)" -ne 0 ]; then log "need root (or sudo) to apt-get install postgresql"; exit 1; fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  # Debian starts a system cluster on 5432 after install; ours is project-owned, so stop that one.
  pg_ctlcluster --help >/dev/null 2>&1 && for c in $(pg_lsclusters -h 2>/dev/null | awk '{print $1"/"$2}'); do
    pg_ctlcluster ${c%/*} ${c#*/} stop 2>/dev/null || true; done
}

# PostgreSQL refuses to run as root; as root we run it as the 'postgres' system user the package made.
as_owner() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

running() { as_owner "$(bindir)/pg_ctl" -D "$data" status >/dev/null 2>&1; }

psql_admin() {
  as_owner "$(bindir)/psql" -h "$state" -p "$port" -d postgres -v ON_ERROR_STOP=1 -qAt "$@"
}

start() {
  install_server
  local bin; bin="$(bindir)"
  mkdir -p "$state"
  [ "$(id -u)" -eq 0 ] && chown postgres: "$state"
  if [ ! -f "$data/PG_VERSION" ]; then
    log "initialising cluster in $data"
    as_owner "$bin/initdb" -D "$data" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
      -E UTF8 --locale=C.UTF-8 >/dev/null
    cat >> "$data/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
unix_socket_directories = '$state'
max_connections = 300
shared_buffers = 256MB
fsync = on
synchronous_commit = on
logging_collector = off
CONF
  fi
  if ! running; then
    log "starting on 127.0.0.1:$port"
    as_owner "$bin/pg_ctl" -D "$data" -o "-p $port" -l "$state/server.log" -w -t 60 start >/dev/null
  fi
  if [ "$(psql_admin -c "select 1 from pg_roles where rolname='$user'")" != "1" ]; then
    psql_admin -c "create role $user login createdb password '$password'"
  fi
  for db in $databases; do
    if [ "$(psql_admin -c "select 1 from pg_database where datname='$db'")" != "1" ]; then
      psql_admin -c "create database $db owner $user"
    fi
  done
  log "ready: postgresql+psycopg://$user:***@127.0.0.1:$port/{$(echo $databases | tr ' ' ',')}"
}

stop() {
  bindir >/dev/null || return 0
  [ -f "$data/PG_VERSION" ] || return 0
  running && as_owner "$(bindir)/pg_ctl" -D "$data" -m fast -w stop >/dev/null
  return 0
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) running ;;
  url) echo "postgresql+psycopg://$user:$password@127.0.0.1:$port/crm_${2:?service}" ;;
  *) echo "usage: $0 start|stop|status|url SERVICE" >&2; exit 2 ;;
esac
