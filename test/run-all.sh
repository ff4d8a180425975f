#!/usr/bin/env bash
# Every spillagg test, from a fresh Debian machine: installs dependencies,
# runs the GoogleTest unit tests of src/core once (plain and under
# ASan/UBSan), then for each PostgreSQL major version in PG_VERSIONS
# (default "15 18"):
#   1. builds and installs spillagg with that version's pg_config,
#   2. runs pg_regress (sql/*.sql vs expected/) in a throwaway cluster of
#      that version,
#   3. runs the TAP tests (test/t/*.pl), which start clusters of their own.
# Version 15 is Debian's package (test/setup-debian.sh); a version Debian
# bookworm does not package is built from source once into
# /opt/spillagg-pg/VERSION by test/build-postgres.sh.
# As root, steps 2-3 run as the "postgres" user on a copy of the tree.
#
#   bash test/run-all.sh                     # 15 and 18
#   PG_VERSIONS="18" bash test/run-all.sh    # one version
# Citus (test/t/005_citus.pl) is built from CITUS_TARBALL, if given (.ci/run
# names the vendored one), for the versions in CITUS_PG_VERSIONS (default 15).
set -euo pipefail
cd "$(dirname "$0")/.."
versions=${PG_VERSIONS:-15 18}

bash test/setup-debian.sh
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
jobs=$(nproc 2>/dev/null || echo 2)

# pg_config of a major version: Debian's package when installed, otherwise a
# source build of our own.
pg_config_of() {
  local v=$1
  if [ -x "/usr/lib/postgresql/$v/bin/pg_config" ]; then
    echo "/usr/lib/postgresql/$v/bin/pg_config"
  else
    bash test/build-postgres.sh "$v" >&2 || return 1
    echo "/opt/spillagg-pg/$v/bin/pg_config"
  fi
}

echo "== unit tests"
make -s -j"$jobs" unittest
make -s -j"$jobs" -C test/unit asan

work=$(mktemp -d /tmp/spillagg-test.XXXXXX)
chmod 755 "$work"
source test/cluster.sh
trap 'cluster_stop; rm -rf "$work"' EXIT

for v in $versions; do
  pgc=$(pg_config_of "$v")
  echo "== PostgreSQL $v: $("$pgc" --version) ($pgc)"
  # A copy of the tree per version, cleaned first: objects (and the JIT
  # bitcode) differ between versions, and the copy is what the postgres
  # user runs the tests in.
  tree="$work/tree-$v"
  mkdir "$tree"
  tar --exclude=.git --exclude=.obj --exclude=.obj-asan -cf - . | (cd "$tree" && tar -xf -)
  make -s -C "$tree" PG_CONFIG="$pgc" clean
  make -s -C "$tree" -j"$jobs" PG_CONFIG="$pgc"
  $sudo make -s -C "$tree" PG_CONFIG="$pgc" install
  # Citus for test/t/005_citus.pl, from the source tarball CITUS_TARBALL
  # (none: skipped, and the test with it), for the versions it supports
  # (Citus 13.2.2: 15 to 17).
  case " ${CITUS_PG_VERSIONS:-15} " in
    *" $v "*) PG_CONFIG="$pgc" bash test/build-citus.sh "${CITUS_TARBALL:-}" ;;
  esac
  [ "$(id -u)" -eq 0 ] && chown -R postgres: "$tree"

  cluster_start "$work/cluster-$v" "$("$pgc" --bindir)"
  trap 'cluster_stop; rm -rf "$work"' EXIT

  echo "== PostgreSQL $v: pg_regress and TAP tests"
  if ! as_owner env PGHOST="$PGHOST" PGPORT="$PGPORT" PGUSER=postgres \
       make -s -C "$tree" PG_CONFIG="$pgc" installcheck; then
    cat "$tree/regression.diffs" 2>/dev/null || true
    for f in "$tree"/tmp_check/log/regress_log_*; do
      [ -f "$f" ] && { echo "---- $f"; tail -n 60 "$f"; }
    done
    echo "== PostgreSQL $v: FAILED"
    exit 1
  fi
  cluster_stop
done
echo "== all tests passed (PostgreSQL $versions)"
