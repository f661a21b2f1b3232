# shellcheck shell=bash
# A throwaway PostgreSQL 15 cluster on loopback for tests. Source this file, then:
#   pg_start DIR   -> exports DN_TEST_DATABASE_URL (database "postgres", user "postgres", no password)
#   pg_stop        -> stops the cluster and deletes DIR
#   pg_halt DIR    -> stops the cluster of DIR, keeping its data (an outage)
#   pg_resume DIR  -> starts it again on the same port
# Installs the Debian package postgresql-15 if its binaries are missing. initdb refuses to run as root, so
# the cluster runs as the postgres user on a directory that user owns.

PG_BIN=/usr/lib/postgresql/15/bin

pg_install() {
  if [ -x "$PG_BIN/initdb" ]; then return 0; fi
  echo "installing postgresql-15 (Debian package)" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2 && apt-get install -y -qq postgresql-15 >&2
}

pg_free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

pg_start() {
  PG_DIR=$1
  pg_install
  id postgres >/dev/null 2>&1 || useradd --system --home-dir /nonexistent postgres
  rm -rf "$PG_DIR" && mkdir -p "$PG_DIR"
  chown postgres "$PG_DIR"
  PG_PORT=$(pg_free_port)
  local as_pg=(runuser -u postgres --)
  [ "$(id -u)" -ne 0 ] && as_pg=()
  "${as_pg[@]}" "$PG_BIN/initdb" -D "$PG_DIR/data" -U postgres --auth=trust -E UTF8 >"$PG_DIR/initdb.log" 2>&1 \
    || { cat "$PG_DIR/initdb.log" >&2; return 1; }
  echo "$PG_PORT" >"$PG_DIR/port"
  pg_resume "$PG_DIR" || return 1
  export PG_DIR PG_PORT
  export DN_TEST_DATABASE_URL="postgres://postgres@127.0.0.1:$PG_PORT/postgres"
  echo "postgres running on 127.0.0.1:$PG_PORT" >&2
}

pg_stop() {
  [ -n "${PG_DIR:-}" ] || return 0
  local as_pg=(runuser -u postgres --)
  [ "$(id -u)" -ne 0 ] && as_pg=()
  "${as_pg[@]}" "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m immediate -w stop >/dev/null 2>&1 || true
  rm -rf "$PG_DIR"
  unset PG_DIR
}

pg_resume() {
  local dir=$1 as_pg=(runuser -u postgres --)
  [ "$(id -u)" -ne 0 ] && as_pg=()
  "${as_pg[@]}" "$PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
    -o "-c listen_addresses=127.0.0.1 -p $(cat "$dir/port") -k $dir -c max_connections=200 -c fsync=off" start >/dev/null \
    || { cat "$dir/server.log" >&2; return 1; }
}

pg_halt() {
  local dir=$1 as_pg=(runuser -u postgres --)
  [ "$(id -u)" -ne 0 ] && as_pg=()
  "${as_pg[@]}" "$PG_BIN/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null
}
