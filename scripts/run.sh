#!/usr/bin/env bash
# make run / make migrate: the project's cluster, migrations, then `orrery serve`.
# Every variable already set in the environment wins over what this script would choose.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

export DATABASE_URL="${DATABASE_URL:-$(scripts/db.sh url)}"
# Migrations run as the schema owner; the server as the app role that row-level security binds.
if [[ -z "${ORRERY_MIGRATION_DATABASE_URL:-}" ]]; then
  if [[ "$DATABASE_URL" == "$(scripts/db.sh url)" ]]; then ORRERY_MIGRATION_DATABASE_URL=$(scripts/db.sh owner-url)
  else ORRERY_MIGRATION_DATABASE_URL=$DATABASE_URL; fi
fi
export ORRERY_MIGRATION_DATABASE_URL
export ORRERY_LISTEN="${ORRERY_LISTEN:-127.0.0.1:8080}"
export ORRERY_ENV="${ORRERY_ENV:-development}"
export ORRERY_MIGRATIONS_DIR="${ORRERY_MIGRATIONS_DIR:-$ROOT/migrations}"
export ORRERY_AGENTS_DIR="${ORRERY_AGENTS_DIR:-$ROOT/agents}"
export ORRERY_LIB_DIR="${ORRERY_LIB_DIR:-$ROOT/lib}"
if [[ -z "${ORRERY_JWT_SECRET:-}" ]]; then
  # Development only: a random secret kept under .data/ so tokens survive a restart.
  if [[ ! -s .data/jwt-secret ]]; then
    (umask 077; head -c 48 /dev/urandom | base64 | tr -d '\n' > .data/jwt-secret)
    echo "run: generated a development JWT secret in .data/jwt-secret"
  fi
  ORRERY_JWT_SECRET=$(cat .data/jwt-secret); export ORRERY_JWT_SECRET
fi
if [[ -z "${ORRERY_INSTANCE_ID:-}" ]]; then
  # One stable id for this checkout's server: after a crash, the next start redelivers at once
  # what the last one accepted but had not handled (docs/messages.md).
  [[ -s .data/instance-id ]] || cat /proc/sys/kernel/random/uuid > .data/instance-id
  ORRERY_INSTANCE_ID=$(cat .data/instance-id); export ORRERY_INSTANCE_ID
fi
BIN="${ORRERY_BIN:-$ROOT/build/bin/orrery}"

"$BIN" migrate
[[ "${1:-serve}" == migrate ]] && exit 0

# Show the URL without the password.
echo "run: DATABASE_URL=$(sed -E 's#(://[^:/@]+):[^@]*@#\1:***@#' <<<"$DATABASE_URL") (password in .data/db-password)"
echo "run: serving http://$ORRERY_LISTEN  (Ctrl-C stops the server; 'make db-stop' stops PostgreSQL)"
exec "$BIN" serve
