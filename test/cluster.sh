#!/usr/bin/env bash
# Throwaway PostgreSQL cluster helpers, sourced by test/demo.sh and
# test/run-all.sh. As root the server (and the TAP tests, whose initdb
# refuses root) run as the unprivileged "postgres" user.
#   cluster_start DIR [BINDIR]  initdb + start in DIR with the server in
#                               BINDIR (default: `pg_config --bindir`, the
#                               Debian default); exports PGHOST, PGPORT, PGUSER
#   cluster_stop                stop the server and delete DIR
set -euo pipefail

as_owner() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

cluster_start() {
  CLUSTER_DIR=$1
  PGBIN=${2:-$(pg_config --bindir)}
  mkdir -p "$CLUSTER_DIR"
  [ "$(id -u)" -eq 0 ] && chown postgres: "$CLUSTER_DIR"
  as_owner "$PGBIN/initdb" -D "$CLUSTER_DIR/data" -A trust -U postgres >/dev/null
  # A temp tablespace of its own, so tests can see where spill files land.
  as_owner mkdir -p "$CLUSTER_DIR/tmpspace"
  export PGHOST=$CLUSTER_DIR PGUSER=postgres
  PGPORT=$((20000 + RANDOM % 20000))
  export PGPORT
  as_owner "$PGBIN/pg_ctl" -D "$CLUSTER_DIR/data" -l "$CLUSTER_DIR/server.log" -w \
    -o "-p $PGPORT -k $CLUSTER_DIR -c listen_addresses=''" start >/dev/null
  trap cluster_stop EXIT
}

cluster_stop() {
  if [ -n "${CLUSTER_DIR:-}" ] && [ -d "$CLUSTER_DIR/data" ]; then
    as_owner "$PGBIN/pg_ctl" -D "$CLUSTER_DIR/data" -m fast -w stop >/dev/null || true
    rm -rf "$CLUSTER_DIR"
  fi
  CLUSTER_DIR=
}
