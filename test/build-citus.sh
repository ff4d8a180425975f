#!/usr/bin/env bash
# Builds and installs Citus from a source tarball into the PostgreSQL that
# pg_config (or $PG_CONFIG) names, for test/t/005_citus.pl.
#   test/build-citus.sh [CITUS_TARBALL]
# The tarball is a `git archive` of a Citus tag with no top-level folder
# (e.g. citus-13.2.2.tar.gz). Exits 0 without doing anything when
#   - no tarball is given or the file does not exist (the Citus test then
#     skips), or
#   - citus.so of the same Citus version is already installed for this
#     pg_config.
# Against PostgreSQL 15.18 and later 15 minors, which export
# have_createdb_privilege(), Citus 13.2.2's static copy of it is removed
# (the change of citus-pg15-minor.patch, applied here with sed so the
# script needs nothing but the tarball).
set -euo pipefail

tarball=${1:-}
PG_CONFIG=${PG_CONFIG:-pg_config}
if [ -z "$tarball" ] || [ ! -f "$tarball" ]; then
  echo "build-citus: no Citus source tarball (${tarball:-none given}); skipping"
  exit 0
fi
tarball=$(realpath "$tarball")

version=$(tar xzOf "$tarball" configure.ac 2>/dev/null \
          | sed -n 's/^AC_INIT(\[Citus\], \[\([^]]*\)\]).*/\1/p' | head -n1 || true)
if [ -z "$version" ]; then
  echo "build-citus: $tarball has no Citus configure.ac" >&2
  exit 1
fi
libdir=$("$PG_CONFIG" --pkglibdir)
if [ -f "$libdir/citus.so" ] && grep -aq "Citus $version " "$libdir/citus.so"; then
  echo "build-citus: Citus $version already installed in $libdir"
  exit 0
fi

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
missing=()
for p in libkrb5-dev liblz4-dev libzstd-dev libssl-dev libxslt1-dev libselinux1-dev libpam0g-dev libreadline-dev zlib1g-dev; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ] && command -v apt-get >/dev/null; then
  echo "build-citus: installing ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

src=$(mktemp -d /tmp/citus-build.XXXXXX)
trap 'rm -rf "$src"' EXIT
tar xzf "$tarball" -C "$src"
cd "$src"
compat=src/include/pg_version_compat.h
if grep -q "have_createdb_privilege" "$("$PG_CONFIG" --includedir-server)/commands/dbcommands.h" \
   && grep -q "^have_createdb_privilege(void)" "$compat"; then
  echo "build-citus: this PostgreSQL exports have_createdb_privilege(); dropping Citus's static copy"
  # The static inline function: from its "static inline bool" line to the
  # closing brace of its body.
  awk '
    /^static inline bool$/ { held = $0; next }
    held != "" && /^have_createdb_privilege\(void\)$/ { skip = 1; held = ""; next }
    held != "" { print held; held = "" }
    skip && /^}$/ { skip = 0; print "/* PostgreSQL exports have_createdb_privilege() itself */"; next }
    skip { next }
    { print }
  ' "$compat" > "$compat.new"
  mv "$compat.new" "$compat"
fi
start=$(date +%s)
PG_CONFIG="$PG_CONFIG" ./configure --without-libcurl PG_CONFIG="$PG_CONFIG" >/dev/null
make -s -j"$(nproc)" >/dev/null
$sudo make -s install >/dev/null
echo "build-citus: Citus $version installed in $libdir ($(( $(date +%s) - start )) s)"
