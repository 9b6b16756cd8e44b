#!/usr/bin/env bash
# The project's own PostgreSQL 15 cluster under .data/ (dev and tests).
#   db.sh start   initdb on first use, start, create role + database `orrery`, print DATABASE_URL
#   db.sh stop    stop the cluster (fast shutdown)
#   db.sh url     print the DATABASE_URL of the app role `orrery_app` (not owner, not superuser, no BYPASSRLS)
#   db.sh owner-url  print the URL of `orrery`, owner of the schema, which runs migrations
#   db.sh admin-url  print a superuser URL over the private socket (tests create databases with it)
#   db.sh status
# Port: ORRERY_PG_PORT (default 54329). As root the server runs as the `postgres` user.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
DATA="$ROOT/.data"
PORT=${ORRERY_PG_PORT:-54329}
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
mkdir -p "$DATA"
chmod 755 "$DATA"

if [[ $(id -u) -eq 0 ]]; then RUN_AS=(runuser -u postgres --); PG_USER=postgres; else RUN_AS=(); PG_USER=$(id -un); fi

# The server's user must reach its data directory. When the checkout sits under a folder it cannot
# traverse (e.g. /root), keep the cluster in /var/lib/orrery/<hash of the checkout path> instead.
PG_HOME="$DATA"
if [[ $(id -u) -eq 0 ]] && ! "${RUN_AS[@]}" test -x "$DATA" 2>/dev/null; then
  PG_HOME="/var/lib/orrery/$(printf '%s' "$ROOT" | sha1sum | cut -c1-12)"
  mkdir -p "$PG_HOME"; chown "$PG_USER" "$PG_HOME"
fi
PGDATA="$PG_HOME/pg"
SOCK="$PG_HOME/run"
LOG="$DATA/postgres.log"
PASSFILE="$DATA/db-password"

as_pg() { "${RUN_AS[@]}" "$@"; }
admin_psql() { "$PG_BIN/../bin/psql" -X -q -v ON_ERROR_STOP=1 -h "$SOCK" -p "$PORT" -U postgres "$@"; }

app_url() {
  local pw; pw=$(cat "$PASSFILE")
  printf 'postgresql://orrery_app:%s@127.0.0.1:%s/orrery\n' "$pw" "$PORT"
}
owner_url() {
  local pw; pw=$(cat "$PASSFILE")
  printf 'postgresql://orrery:%s@127.0.0.1:%s/orrery\n' "$pw" "$PORT"
}

running() { [[ -f "$PGDATA/postmaster.pid" ]] && as_pg "$PG_BIN/pg_ctl" -D "$PGDATA" status >/dev/null 2>&1; }

init_cluster() {
  echo "db: creating cluster in $PGDATA"
  mkdir -p "$PGDATA" "$SOCK"
  [[ -n "${RUN_AS[*]}" ]] && chown "$PG_USER" "$PGDATA" "$SOCK"
  chmod 700 "$PGDATA" "$SOCK"
  as_pg "$PG_BIN/initdb" -D "$PGDATA" -U postgres -E UTF8 --locale=C.UTF-8 \
    --auth-local=trust --auth-host=scram-sha-256 >/dev/null
  cat >> "$PGDATA/postgresql.conf" <<CONF
# orrery: private cluster, loopback and a private socket only
listen_addresses = '127.0.0.1'
port = $PORT
unix_socket_directories = '$SOCK'
max_connections = 300
CONF
}

start() {
  [[ -f "$PGDATA/PG_VERSION" ]] || init_cluster
  touch "$LOG"; [[ -n "${RUN_AS[*]}" ]] && chown "$PG_USER" "$LOG"
  if ! running; then
    as_pg "$PG_BIN/pg_ctl" -D "$PGDATA" -l "$LOG" -w -t 60 start >/dev/null || {
      echo "db: PostgreSQL failed to start; last lines of $LOG:" >&2; tail -n 20 "$LOG" >&2; exit 1; }
  fi
  if [[ ! -s "$PASSFILE" ]]; then
    (umask 077; head -c 24 /dev/urandom | base64 | tr -d '/+=\n' > "$PASSFILE")
  fi
  local pw; pw=$(cat "$PASSFILE")
  admin_psql -d postgres -v pw="$pw" <<'SQL'
SELECT format('CREATE ROLE orrery LOGIN PASSWORD %L', :'pw') WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'orrery') \gexec
ALTER ROLE orrery NOSUPERUSER NOCREATEROLE NOBYPASSRLS PASSWORD :'pw';
SELECT format('CREATE ROLE orrery_app LOGIN PASSWORD %L', :'pw') WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'orrery_app') \gexec
ALTER ROLE orrery_app NOSUPERUSER NOCREATEROLE NOCREATEDB NOBYPASSRLS PASSWORD :'pw';
SELECT 'CREATE DATABASE orrery OWNER orrery' WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = 'orrery') \gexec
SQL
  echo "db: PostgreSQL 15 on 127.0.0.1:$PORT (data $PGDATA)"
}

case "${1:-}" in
  start) start ;;
  stop) if running; then as_pg "$PG_BIN/pg_ctl" -D "$PGDATA" -m fast -w stop >/dev/null; echo "db: stopped"; else echo "db: not running"; fi ;;
  url) app_url ;;
  owner-url) owner_url ;;
  admin-url) printf 'postgresql://postgres@/postgres?host=%s&port=%s\n' "$SOCK" "$PORT" ;;
  status) if running; then echo "db: running on 127.0.0.1:$PORT"; else echo "db: stopped"; exit 1; fi ;;
  *) echo "usage: $0 start|stop|url|owner-url|admin-url|status" >&2; exit 2 ;;
esac
