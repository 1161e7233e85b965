#!/usr/bin/env bash
# Start a throw-away PostgreSQL server on 127.0.0.1 for the multi-worker tests (sourced by .ci/run; safe to run by
# hand). It installs Debian's postgresql if missing, initialises a cluster in .ci-pg/ owned by the postgres user
# (the server refuses to run as root), starts it on a free port (or PG_PORT) and exports AUTOCOMPRESS_TEST_POSTGRES.
set -euo pipefail
PG_PORT="${PG_PORT:-$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}"
PG_DIR="$(pwd)/.ci-pg"
if ! ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    apt-get install -y -q postgresql >/dev/null || { apt-get update -q >/dev/null && apt-get install -y -q postgresql >/dev/null; }
  else
    echo "== PostgreSQL is not installed and this is not root: multi-worker tests will skip"; return 0 2>/dev/null || exit 0
  fi
fi
PG_BIN="$(dirname "$(ls -d /usr/lib/postgresql/*/bin/pg_ctl | sort -V | tail -1)")"
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
"$PG_BIN/pg_ctl" -D "$PG_DIR" status >/dev/null 2>&1 && as_pg "$PG_BIN/pg_ctl" -D "$PG_DIR" stop -m fast >/dev/null || true
rm -rf "$PG_DIR"
mkdir -p "$PG_DIR"
[ "$(id -u)" = 0 ] && chown postgres "$PG_DIR"
as_pg "$PG_BIN/initdb" -D "$PG_DIR/data" -A trust -U autocompress >/dev/null
as_pg "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/server.log" -w \
  -o "-p $PG_PORT -c listen_addresses=127.0.0.1 -k $PG_DIR" start >/dev/null
as_pg "$PG_BIN/createdb" -h 127.0.0.1 -p "$PG_PORT" -U autocompress autocompress
export AUTOCOMPRESS_TEST_POSTGRES="postgresql+psycopg2://autocompress@127.0.0.1:$PG_PORT/autocompress"
export PG_BIN PG_DIR
echo "== PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}') on 127.0.0.1:$PG_PORT"
