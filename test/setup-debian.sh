#!/usr/bin/env bash
# Installs what building and testing spillagg needs on Debian (bookworm):
# PostgreSQL 15 server and its PGXS headers (together, so their minor
# versions match), clang-14 for the JIT bitcode, GoogleTest, and IPC::Run for
# the TAP tests. Does nothing when everything is already there.
set -euo pipefail

packages=(postgresql-15 postgresql-server-dev-15 clang-14 g++ make libgtest-dev libipc-run-perl)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "setup: installing ${missing[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
  postgresql-15 postgresql-server-dev-15 "${missing[@]}" >/dev/null
