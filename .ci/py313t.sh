#!/usr/bin/env bash
# Build (once) and cache a free-threaded CPython 3.13 from Debian's source package.
# Prints the interpreter path. Recipe: ../shared/freethreaded-python.md.
set -eu
PREFIX=${PREFIX:-$HOME/.cache/kqrs/py313t}
if [ ! -x "$PREFIX/bin/python3.13t" ]; then
  (
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y dpkg-dev libssl-dev zlib1g-dev libffi-dev >/dev/null 2>&1 || { apt-get update >/dev/null && apt-get install -y dpkg-dev libssl-dev zlib1g-dev libffi-dev >/dev/null; }
    A=$(mktemp -d); mkdir -p $A/lists/partial $A/cache/archives/partial $A/src
    # the Debian mirror this machine's own apt sources name (first URIs: line of its deb822 sources,
    # else the first deb line of sources.list): no host is written into this repository
    URI=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
    [ -n "$URI" ] || URI=$(awk '$1 == "deb" {for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) {print $i; exit}}' /etc/apt/sources.list 2>/dev/null || true)
    [ -n "$URI" ] || { echo "py313t.sh: no Debian mirror found in /etc/apt/sources*" >&2; exit 1; }
    echo "deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $URI trixie main" > $A/sources.list
    O="-o Dir::Etc::sourcelist=$A/sources.list -o Dir::Etc::sourceparts=/nonexistent -o Dir::State::Lists=$A/lists -o Dir::Cache=$A/cache"
    apt-get $O update >/dev/null
    cd $A/src && apt-get $O source --download-only python3.13 >/dev/null
    tar xf python3.13_*.orig.tar.xz && cd Python-3.13.*/
    ./configure --disable-gil --prefix="$PREFIX" >/dev/null
    make -j"$(nproc)" >/dev/null 2>&1
    make install >/dev/null 2>&1
    rm -rf "$A"
  ) >&2
fi
"$PREFIX/bin/python3.13t" -c 'import sys; assert not sys._is_gil_enabled()' >&2
echo "$PREFIX/bin/python3.13t"
