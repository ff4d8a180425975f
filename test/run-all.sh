#!/usr/bin/env bash
# Every spillagg test, from a fresh Debian machine: installs dependencies,
# builds and installs the extension, then runs
#   1. the GoogleTest unit tests of src/core (plain and under ASan/UBSan),
#   2. pg_regress (sql/*.sql vs expected/) in a throwaway cluster,
#   3. the TAP tests (test/t/*.pl), which start clusters of their own.
# As root, steps 2-3 run as the "postgres" user on a copy of the tree.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

bash test/setup-debian.sh
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
make -s
$sudo make -s install
# Citus for test/t/005_citus.pl, from the source tarball named by
# CITUS_TARBALL (skipped, and that test with it, when there is none).
bash test/build-citus.sh "${CITUS_TARBALL:-}"

echo "== unit tests"
make -s unittest
make -s -C test/unit asan

work=$(mktemp -d /tmp/spillagg-test.XXXXXX)
chmod 755 "$work"
tar --exclude=.git -cf - . | (mkdir "$work/tree" && cd "$work/tree" && tar -xf -)
[ "$(id -u)" -eq 0 ] && chown -R postgres: "$work/tree"

source test/cluster.sh
cluster_start "$work/cluster"
trap 'cluster_stop; rm -rf "$work"' EXIT

echo "== pg_regress and TAP tests"
if ! as_owner env PGHOST="$PGHOST" PGPORT="$PGPORT" PGUSER=postgres \
     make -s -C "$work/tree" installcheck; then
  cat "$work/tree/regression.diffs" 2>/dev/null || true
  for f in "$work"/tree/tmp_check/log/regress_log_*; do
    [ -f "$f" ] && { echo "---- $f"; tail -n 60 "$f"; }
  done
  exit 1
fi
echo "== all tests passed"
