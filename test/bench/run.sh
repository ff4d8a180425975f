#!/usr/bin/env bash
# spillagg benchmark: spillagg's aggregates against PostgreSQL's own query for
# the same answer, on one generated table, serial and parallel.
#
#   bash test/bench/run.sh                                  # 10M rows, 15-30 min on 2 cores
#   ROWS=200000 DISTINCT_K=50000 RUNS=1 bash test/bench/run.sh   # smoke run, ~1 min
#
# Options (environment variables):
#   ROWS        rows of table t                               (default 10000000)
#   DISTINCT_K  distinct values of t.k, each ROWS/DISTINCT_K times (default 2000000)
#   GROUPS      distinct values of t.g                         (default 100)
#               (bash ignores a "GROUPS=50 cmd" prefix, GROUPS being a bash
#               variable: write "env GROUPS=50 bash test/bench/run.sh", or
#               BENCH_GROUPS=50)
#   RUNS        timed runs per query; the median is reported   (default 3)
#   BUDGET_KB   spillagg.work_mem (kB) for the spillagg queries (default 4096)
#   WORKERS     max_parallel_workers_per_gather values         (default "0 2")
#   WORK_MEM    work_mem of the server, i.e. of the native queries (default 64MB)
#   SHARED_BUFFERS                                              (default 1GB)
#   JIT         on|off                                          (default off)
#   OUT         output directory                  (default test/bench/results)
#   FOREIGN_MAX, QUIET_WAIT_TOTAL, RETRY_BUDGET  guard against other load on the
#               host (see README.md; 0.25 cores, 300 s, 600 s)
#
# It installs what it lacks (postgresql-15-hll, python3-matplotlib,
# python3-psycopg2; the extension itself only if spillagg.so is not
# installed), starts a throwaway cluster (test/cluster.sh) running a pinned
# copy of spillagg.so, generates t,
# runs test/bench/bench.py (timings, VmHWM, temp bytes, answer checks, plans),
# which writes $OUT/bench.tsv, $OUT/bench.png, $OUT/bench.md, $OUT/raw.json
# and prints the Markdown table, then stops and deletes the cluster.
# See test/bench/README.md for what is measured and the caveats.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cd "$root"

export ROWS=${ROWS:-10000000}
export DISTINCT_K=${DISTINCT_K:-2000000}
# GROUPS is a bash builtin variable (the user's group ids), so read the value
# this process was started with from its environment.
env_groups=$(tr '\0' '\n' < /proc/$$/environ | sed -n 's/^GROUPS=//p')
export BENCH_GROUPS=${BENCH_GROUPS:-${env_groups:-100}}
export RUNS=${RUNS:-3}
export BUDGET_KB=${BUDGET_KB:-4096}
export WORKERS=${WORKERS:-"0 2"}
WORK_MEM=${WORK_MEM:-64MB}
SHARED_BUFFERS=${SHARED_BUFFERS:-1GB}
JIT=${JIT:-off}
export OUT=${OUT:-$here/results}
started=$(date +%s)

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"

# ---- dependencies -----------------------------------------------------------
missing=()
for p in python3-matplotlib python3-psycopg2 postgresql-15-hll; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "bench: installing ${missing[*]}"
  $sudo apt-get update -qq || true
  for p in "${missing[@]}"; do
    if [ "$p" = postgresql-15-hll ] &&
       ! apt-cache policy postgresql-15-hll 2>/dev/null | grep -q 'Candidate: [0-9]'; then
      echo "bench: postgresql-15-hll is not available; the hll rows will read n/a"
      continue
    fi
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$p" >/dev/null ||
      echo "bench: could not install $p"
  done
fi
# Debian's python3 packages: use the system interpreter, not a pyenv shim.
PY=/usr/bin/python3
$PY -c 'import psycopg2, matplotlib' || { echo "bench: python3-psycopg2/python3-matplotlib missing"; exit 1; }
HLL=0
[ -f "$(pg_config --sharedir)/extension/hll.control" ] && HLL=1
export HLL

if [ ! -f "$(pg_config --pkglibdir)/spillagg.so" ]; then
  echo "bench: spillagg is not installed; building and installing it"
  bash test/setup-debian.sh
  make -s
  $sudo make -s install
fi

# ---- cluster ----------------------------------------------------------------
# shellcheck source=../cluster.sh
source test/cluster.sh
cluster_start "$(mktemp -d /tmp/spillagg-bench.XXXXXX)"
export SERVER_LOG=$CLUSTER_DIR/server.log
export BENCH_PGDATA=$CLUSTER_DIR/data BENCH_PGCTL=$PGBIN/pg_ctl
# Pin the build: the extension's functions load a copy of spillagg.so in the
# cluster directory, so a "make install" elsewhere during the run does not
# mix two builds into one table (the script file is read once, by CREATE EXTENSION).
BENCH_SO_INSTALLED="$(pg_config --pkglibdir)/spillagg.so"
BENCH_SO=$CLUSTER_DIR/spillagg.so
export BENCH_SO_INSTALLED BENCH_SO
for _ in 1 2 3 4 5; do
  cp -p "$BENCH_SO_INSTALLED" "$BENCH_SO"
  cmp -s "$BENCH_SO_INSTALLED" "$BENCH_SO" && break
  sleep 2
done
chmod 755 "$BENCH_SO"
psql_() { psql -X -q -v ON_ERROR_STOP=1 -d postgres "$@"; }

# A throwaway cluster: durability off for the load; autovacuum off so nothing
# runs beside the measured queries; every temp file logged with its process
# and its parallel leader, so bench.py can attribute temp bytes to a query.
psql_ <<SQL
ALTER SYSTEM SET shared_buffers = '$SHARED_BUFFERS';
ALTER SYSTEM SET work_mem = '$WORK_MEM';
ALTER SYSTEM SET hash_mem_multiplier = 2.0;
ALTER SYSTEM SET maintenance_work_mem = '512MB';
ALTER SYSTEM SET max_worker_processes = 8;
ALTER SYSTEM SET max_parallel_workers = 8;
ALTER SYSTEM SET jit = $JIT;
ALTER SYSTEM SET autovacuum = off;
ALTER SYSTEM SET fsync = off;
ALTER SYSTEM SET synchronous_commit = off;
ALTER SYSTEM SET full_page_writes = off;
ALTER SYSTEM SET wal_level = minimal;
ALTER SYSTEM SET max_wal_senders = 0;
ALTER SYSTEM SET max_wal_size = '8GB';
ALTER SYSTEM SET log_temp_files = 0;
ALTER SYSTEM SET log_line_prefix = '%m [%p] leader=%P ';
SQL
as_owner "$PGBIN/pg_ctl" -D "$CLUSTER_DIR/data" -l "$SERVER_LOG" -w restart >/dev/null

# ---- data -------------------------------------------------------------------
# k: (i * 7919) mod DISTINCT_K is a bijection on every period of DISTINCT_K
# rows (7919 is prime; another prime is used if it divides DISTINCT_K), so k
# takes exactly DISTINCT_K values (when ROWS >= DISTINCT_K), each ROWS/DISTINCT_K
# times, in a scattered order. g, v, f: hashes of i, independent of k.
mult=7919
[ $((DISTINCT_K % mult)) -eq 0 ] && mult=7927
echo "bench: generating t ($ROWS rows, $DISTINCT_K distinct k, $BENCH_GROUPS groups)"
t0=$(date +%s)
psql_ <<SQL
CREATE EXTENSION spillagg;
UPDATE pg_proc SET probin = '$BENCH_SO' WHERE probin = '\$libdir/spillagg';
$( [ "$HLL" = 1 ] && echo "CREATE EXTENSION hll;" )
CREATE TABLE t AS
  SELECT k, g, v, f, 'key-' || k AS s
  FROM (SELECT ((i * $mult) % $DISTINCT_K)::int AS k,
               ((hashint8(i) & 2147483647) % $BENCH_GROUPS)::int AS g,
               ((hashint8extended(i, 1) & 2147483647) % 1000)::int AS v,
               (hashint8extended(i, 2) & 1048575) / 1048576.0::float8 AS f
        FROM generate_series(1::bigint, $ROWS) AS i) AS x;
VACUUM ANALYZE t;
CHECKPOINT;
SQL
sync  # the load's dirty pages, written back now rather than during the first case
pinned=$(psql_ -Atc "SELECT count(*) FILTER (WHERE probin = '$BENCH_SO') || ' ' || count(*) FROM pg_proc WHERE probin LIKE '%spillagg%'")
if [ "${pinned% *}" -eq 0 ] || [ "${pinned% *}" != "${pinned#* }" ]; then
  echo "bench: could not pin spillagg.so (functions pinned, all: $pinned)"
  exit 1
fi
export LOAD_SECONDS=$(( $(date +%s) - t0 ))

# ---- measure ----------------------------------------------------------------
export STARTED=$started
mkdir -p "$OUT"
$PY "$here/bench.py"
cluster_stop
trap - EXIT
echo "bench: total $(( $(date +%s) - started )) s"
