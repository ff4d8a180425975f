#!/usr/bin/env bash
# The README's first command: installs dependencies, builds and installs
# spillagg, starts a throwaway PostgreSQL 15 cluster, runs test/demo.sql (a
# query that spills), and removes the cluster.
set -euo pipefail
cd "$(dirname "$0")/.."

bash test/setup-debian.sh
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
make -s
$sudo make -s install

source test/cluster.sh
cluster_start "$(mktemp -d /tmp/spillagg-demo.XXXXXX)"
psql -X -v ON_ERROR_STOP=1 -d postgres -f test/demo.sql
