#!/usr/bin/env bash
# Builds a PostgreSQL server of major VERSION from source into PREFIX
# (default /opt/spillagg-pg/VERSION), for testing spillagg against versions
# Debian bookworm does not package (e.g. 18).
#
#   bash test/build-postgres.sh VERSION [PREFIX]
#
# Idempotent: when PREFIX already holds a server of that major version
# ($PREFIX/bin/pg_config --version), it is reused and nothing is built.
#
# The source is the upstream tarball that Debian ships as
# postgresql-VERSION_*.orig.tar.bz2, fetched with `apt-get source` from a
# deb-src entry for Debian sid (source only: no binary package of another
# suite is ever installed). The Debian packaging itself is not used. Built
# with ICU and --enable-tap-tests (so PGXS gets PostgreSQL::Test::Cluster),
# without docs or contrib. Runs as root without stdin (CI); installs its own
# build dependencies with apt-get.
set -euo pipefail

version=${1:?usage: build-postgres.sh VERSION [PREFIX]}
prefix=${2:-/opt/spillagg-pg/$version}

if [ -x "$prefix/bin/pg_config" ] &&
   "$prefix/bin/pg_config" --version | grep -q "^PostgreSQL $version[.a-z]"; then
  echo "build-postgres: reusing $("$prefix/bin/pg_config" --version) in $prefix"
  exit 0
fi

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive

# Source entry for sid (deb-src only), removed again once the source is
# fetched (so later apt-get updates do not index sid's sources).
list=/etc/apt/sources.list.d/spillagg-sid-src.list
added_list=""
work=$(mktemp -d /tmp/spillagg-pg-build.XXXXXX)
trap 'rm -rf "$work"; [ -z "$added_list" ] || $sudo rm -f "$added_list"' EXIT
if [ ! -f "$list" ]; then
  echo "deb-src http://deb.debian.org/debian sid main" | $sudo tee "$list" >/dev/null
  added_list=$list
fi

echo "build-postgres: installing build dependencies"
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends \
  build-essential bison flex libreadline-dev zlib1g-dev libicu-dev pkg-config \
  libipc-run-perl perl dpkg-dev bzip2 ca-certificates >/dev/null

cd "$work"
# As root, apt-get source downloads as its _apt user (else it warns).
chmod 755 "$work"
if [ "$(id -u)" -eq 0 ] && id _apt >/dev/null 2>&1; then chown _apt "$work"; fi
echo "build-postgres: fetching the postgresql-$version source"
apt-get source --download-only -qq "postgresql-$version" >/dev/null
[ -z "$added_list" ] || { $sudo rm -f "$added_list"; added_list=""; }
tarball=$(ls postgresql-"$version"_*.orig.tar.* 2>/dev/null | head -n 1)
[ -n "$tarball" ] || { echo "build-postgres: no upstream tarball for postgresql-$version" >&2; exit 1; }
echo "build-postgres: building $tarball into $prefix"
mkdir src
tar -xf "$tarball" -C src --strip-components=1
cd src

start=$(date +%s)
./configure --prefix="$prefix" --with-icu --enable-tap-tests --without-llvm \
  --enable-debug --quiet
make -s -j"$(nproc)"
$sudo make -s install
echo "build-postgres: built $("$prefix/bin/pg_config" --version) in $(( $(date +%s) - start )) s"

# The TAP modules PGXS's `make installcheck` (prove) needs.
test -f "$("$prefix/bin/pg_config" --pgxs | xargs dirname)/../test/perl/PostgreSQL/Test/Cluster.pm" || {
  echo "build-postgres: PostgreSQL::Test::Cluster was not installed" >&2; exit 1; }
