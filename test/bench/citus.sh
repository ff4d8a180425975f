#!/usr/bin/env bash
# spillagg Citus benchmark: spillagg 0.1 (internal state: Citus pulls every
# row to the coordinator), spillagg 0.2 (spillagg_state: the partial
# aggregation is pushed down to the workers) and Citus's native query for the
# same answer, on a distributed table, on a throwaway Citus cluster on
# localhost (a coordinator and 2 workers).
#
#   bash test/bench/citus.sh                                   # 2M rows, ~4-5 min on 2 cores
#   ROWS=200000 RUNS=1 bash test/bench/citus.sh                # smoke run, ~1 min
#   PG_CONFIG=/opt/x/usr/lib/postgresql/15/bin/pg_config bash test/bench/citus.sh
#
# Options (environment variables):
#   PG_CONFIG   pg_config of the PostgreSQL to run (its bindir, pkglibdir:
#               Citus and spillagg must be installed there) (default: pg_config on PATH)
#   ROWS        rows of the distributed table t                 (default 2000000)
#   DISTINCT_K  distinct values of t.k, each ROWS/DISTINCT_K times (default ROWS/5)
#   GROUPS      distinct values of t.g (or BENCH_GROUPS; see run.sh)  (default 100)
#   RUNS        timed runs per query and version; the median is reported (default 3)
#   BUDGETS     spillagg.work_mem values (kB; -1 = work_mem x hash_mem_multiplier),
#               set on every node                                (default "-1 4096")
#   SHARD_COUNT shards of t (citus.shard_count)                 (default 8)
#   WORK_MEM    work_mem of every node                          (default 64MB)
#   SHARED_BUFFERS  of every node                               (default 256MB)
#   OUT         output directory                   (default test/bench/results)
#
# It starts three PostgreSQL servers (coordinator, worker1, worker2; as user
# postgres when run as root) with shared_preload_libraries = citus in a
# temporary directory, creates citus everywhere and registers the workers,
# generates t (distributed by id, not by the aggregated key k), then runs
# test/bench/citus.py twice: with spillagg 0.1 (CREATE EXTENSION spillagg
# VERSION '0.1') and after ALTER EXTENSION spillagg UPDATE (0.2), checking
# that every node has the same version (Citus propagates both statements; if
# a worker were left behind, the script runs the statement there itself).
# citus.py writes $OUT/citus.tsv, $OUT/citus.md, $OUT/citus-raw.json and
# prints the Markdown table. The cluster is stopped and deleted at the end,
# also on error. See test/bench/README.md ("Citus") for what is measured.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cd "$root"

PG_CONFIG=${PG_CONFIG:-pg_config}
export ROWS=${ROWS:-2000000}
export DISTINCT_K=${DISTINCT_K:-$((ROWS / 5))}
env_groups=$(tr '\0' '\n' < /proc/$$/environ | sed -n 's/^GROUPS=//p')
export BENCH_GROUPS=${BENCH_GROUPS:-${env_groups:-100}}
export RUNS=${RUNS:-3}
export BUDGETS=${BUDGETS:-"-1 4096"}
SHARD_COUNT=${SHARD_COUNT:-8}
WORK_MEM=${WORK_MEM:-64MB}
SHARED_BUFFERS=${SHARED_BUFFERS:-256MB}
export OUT=${OUT:-$here/results}
export STARTED=$(date +%s)
export UPTIME_BEFORE=$(uptime)

PGBIN=$("$PG_CONFIG" --bindir)
libdir=$("$PG_CONFIG" --pkglibdir)
for f in "$libdir/citus.so" "$libdir/spillagg.so" "$("$PG_CONFIG" --sharedir)/extension/spillagg--0.1.sql"; do
  [ -f "$f" ] || { echo "citus-bench: $f is missing (test/build-citus.sh builds Citus; make install spillagg)"; exit 1; }
done
PY=/usr/bin/python3
$PY -c 'import psycopg2' 2>/dev/null || { echo "citus-bench: python3-psycopg2 is missing (apt-get install python3-psycopg2)"; exit 1; }

as_owner() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

# ---- cluster ----------------------------------------------------------------
DIR=$(mktemp -d /tmp/spillagg-citus.XXXXXX)
[ "$(id -u)" -eq 0 ] && chown postgres: "$DIR"
NODES=(coordinator worker1 worker2)
BASE_PORT=$((20000 + RANDOM % 20000))
port_of() { case $1 in coordinator) echo $BASE_PORT;; worker1) echo $((BASE_PORT + 1));; worker2) echo $((BASE_PORT + 2));; esac; }

cleanup() {
  local rc=$?
  for n in "${NODES[@]}"; do
    [ -d "$DIR/$n" ] && as_owner "$PGBIN/pg_ctl" -D "$DIR/$n" -m immediate -w stop >/dev/null 2>&1 || true
  done
  if [ $rc -ne 0 ]; then
    for n in "${NODES[@]}"; do
      [ -f "$DIR/$n.log" ] && { echo "--- tail of $n.log"; tail -n 15 "$DIR/$n.log"; }
    done
  fi
  rm -rf "$DIR"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

for n in "${NODES[@]}"; do
  as_owner "$PGBIN/initdb" -D "$DIR/$n" -A trust -U postgres >/dev/null
  # A throwaway cluster: durability off, autovacuum off (nothing runs beside
  # the measured queries), no parallel query inside a node (Citus already
  # runs the shards of a worker concurrently; 2 cores in all).
  cat >> "$DIR/$n/postgresql.conf" <<CONF
shared_preload_libraries = 'citus'
max_prepared_transactions = 20
port = $(port_of "$n")
listen_addresses = '127.0.0.1'
unix_socket_directories = '$DIR'
citus.node_conninfo = 'sslmode=disable'
shared_buffers = '$SHARED_BUFFERS'
work_mem = '$WORK_MEM'
hash_mem_multiplier = 2.0
max_parallel_workers_per_gather = 0
jit = off
autovacuum = off
fsync = off
synchronous_commit = off
full_page_writes = off
wal_level = minimal
max_wal_senders = 0
max_wal_size = '4GB'
log_temp_files = 0
CONF
  echo "host all all 127.0.0.1/32 trust" >> "$DIR/$n/pg_hba.conf"
  as_owner "$PGBIN/pg_ctl" -D "$DIR/$n" -l "$DIR/$n.log" -w start >/dev/null
done
psql_() { local n=$1; shift; "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$DIR" -p "$(port_of "$n")" -U postgres -d postgres "$@"; }
for n in "${NODES[@]}"; do psql_ "$n" -c 'CREATE EXTENSION citus'; done
psql_ coordinator -Atc "SELECT citus_set_coordinator_host('127.0.0.1', $(port_of coordinator))" >/dev/null
for n in worker1 worker2; do
  psql_ coordinator -Atc "SELECT citus_add_node('127.0.0.1', $(port_of "$n"))" >/dev/null
done
echo "citus-bench: cluster in $DIR, coordinator on port $BASE_PORT, workers on $((BASE_PORT + 1)), $((BASE_PORT + 2))"
export BENCH_HOST=$DIR BENCH_PORTS="$BASE_PORT $((BASE_PORT + 1)) $((BASE_PORT + 2))"
export CITUS_VERSION=$(psql_ coordinator -Atc "SELECT extversion FROM pg_extension WHERE extname = 'citus'")

# ---- data -------------------------------------------------------------------
# The formulas of run.sh: k = (i * 7919) mod DISTINCT_K takes exactly
# DISTINCT_K values, each ROWS/DISTINCT_K times, scattered; g and v are hashes
# of i, independent of k. t is distributed by id (= i), not by k.
mult=7919
[ $((DISTINCT_K % mult)) -eq 0 ] && mult=7927
echo "citus-bench: generating t ($ROWS rows, $DISTINCT_K distinct k, $BENCH_GROUPS groups, $SHARD_COUNT shards)"
t0=$(date +%s)
psql_ coordinator <<SQL >/dev/null
SET citus.shard_count = $SHARD_COUNT;
CREATE TABLE t (id bigint, k int, g int, v int);
SELECT create_distributed_table('t', 'id');
INSERT INTO t
  SELECT i, ((i * $mult) % $DISTINCT_K)::int,
         ((hashint8(i) & 2147483647) % $BENCH_GROUPS)::int,
         ((hashint8extended(i, 1) & 2147483647) % 1000)::int
  FROM generate_series(1::bigint, $ROWS) AS i;
VACUUM ANALYZE t;
SQL
export LOAD_SECONDS=$(( $(date +%s) - t0 ))

# ---- spillagg versions ------------------------------------------------------
# Runs a statement on the coordinator, then makes sure every worker has the
# extension at the coordinator's version (running the statement on a worker
# that Citus did not reach). Prints how it went, for the results.
ext_version() { psql_ "$1" -Atc "SELECT coalesce((SELECT extversion FROM pg_extension WHERE extname = 'spillagg'), 'none')"; }
on_all_nodes() {
  local sql=$1 want note="" n
  psql_ coordinator -c "$sql"
  want=$(ext_version coordinator)
  for n in worker1 worker2; do
    if [ "$(ext_version "$n")" = "$want" ]; then
      note+="$n: propagated by Citus ($want); "
    else
      note+="$n: NOT propagated ($(ext_version "$n")), run there; "
      psql_ "$n" -c "$sql"
    fi
    [ "$(ext_version "$n")" = "$want" ] || { echo "citus-bench: $n has spillagg $(ext_version "$n"), not $want"; exit 1; }
  done
  echo "$sql -> $note"
}
export PROPAGATION=""
PROPAGATION+="$(on_all_nodes "CREATE EXTENSION spillagg VERSION '0.1'")"$'\n'
echo "citus-bench: ${PROPAGATION%$'\n'}"
$PY "$here/citus.py" measure 0.1
PROPAGATION+="$(on_all_nodes "ALTER EXTENSION spillagg UPDATE")"
echo "citus-bench: ${PROPAGATION##*$'\n'}"
$PY "$here/citus.py" measure 0.2
$PY "$here/citus.py" report
echo "citus-bench: total $(( $(date +%s) - STARTED )) s"
