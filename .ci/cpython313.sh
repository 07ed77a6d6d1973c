#!/usr/bin/env bash
# Build (once) and cache CPython 3.13 from Debian's python3.13 source package (trixie); print the
# interpreter's path. Recipe: ../shared/freethreaded-python.md.
#   bash .ci/cpython313.sh nogil   free-threaded, ~/.cache/kqrs/py313t/bin/python3.13t
#   bash .ci/cpython313.sh gil     with the GIL,  ~/.cache/kqrs/py313/bin/python3.13
# The source tarball is kept in ~/.cache/kqrs/src, so the second flavour does not fetch it again.
set -eu
flavour=${1:?usage: cpython313.sh gil|nogil}
CACHE=$HOME/.cache/kqrs
case $flavour in
  nogil) PREFIX=${PREFIX:-$CACHE/py313t}; EXE=$PREFIX/bin/python3.13t; CONF=--disable-gil ;;
  gil)   PREFIX=${PREFIX:-$CACHE/py313};  EXE=$PREFIX/bin/python3.13;  CONF= ;;
  *) echo "cpython313.sh: gil or nogil, not '$flavour'" >&2; exit 2 ;;
esac
if [ ! -x "$EXE" ]; then
  (
    export DEBIAN_FRONTEND=noninteractive
    deps="dpkg-dev libssl-dev zlib1g-dev libffi-dev"
    apt-get install -y $deps >/dev/null 2>&1 || { apt-get update >/dev/null && apt-get install -y $deps >/dev/null; }
    SRC=$CACHE/src
    mkdir -p "$SRC"
    if ! ls "$SRC"/python3.13_*.orig.tar.xz >/dev/null 2>&1; then
      A=$(mktemp -d); mkdir -p $A/lists/partial $A/cache/archives/partial $A/src
      # the Debian mirror this machine's own apt sources name (first URIs: line of its deb822 sources,
      # else the first deb line of sources.list): no host is written into this repository
      URI=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
      [ -n "$URI" ] || URI=$(awk '$1 == "deb" {for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) {print $i; exit}}' /etc/apt/sources.list 2>/dev/null || true)
      [ -n "$URI" ] || { echo "cpython313.sh: no Debian mirror found in /etc/apt/sources*" >&2; exit 1; }
      echo "deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $URI trixie main" > $A/sources.list
      O="-o APT::Sandbox::User=root -o Dir::Etc::sourcelist=$A/sources.list -o Dir::Etc::sourceparts=/nonexistent -o Dir::State::Lists=$A/lists -o Dir::Cache=$A/cache"
      apt-get $O update >/dev/null
      (cd $A/src && apt-get $O source --download-only python3.13 >/dev/null)
      cp $A/src/python3.13_*.orig.tar.xz "$SRC/"
      rm -rf "$A"
    fi
    B=$(mktemp -d)
    cd "$B" && tar xf "$SRC"/python3.13_*.orig.tar.xz && cd Python-3.13.*/
    ./configure $CONF --prefix="$PREFIX" >/dev/null
    make -j"$(nproc)" >/dev/null 2>&1
    make install >/dev/null 2>&1
    cd / && rm -rf "$B"
  ) >&2
fi
if [ "$flavour" = nogil ]; then
  "$EXE" -c 'import sys; assert not sys._is_gil_enabled()' >&2
else
  "$EXE" -c 'import sys, sysconfig; assert sys._is_gil_enabled() and not sysconfig.get_config_var("Py_GIL_DISABLED")' >&2
fi
echo "$EXE"
