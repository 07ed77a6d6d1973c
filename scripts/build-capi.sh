#!/usr/bin/env bash
# Builds kqrs's C library and installs it the way `make install PREFIX=DEST` would:
#   DEST/lib/libkqueue.so.0 (SONAME libkqueue.so.0), DEST/lib/libkqueue.so -> libkqueue.so.0,
#   DEST/lib/libkqueue.a, DEST/lib/pkgconfig/libkqueue.pc, DEST/include/kqueue/sys/event.h (libkqueue's layout:
#   `pkg-config --cflags libkqueue` says -IDEST/include/kqueue)
# Usage: bash scripts/build-capi.sh DEST        (CARGO_TARGET_DIR as usual)
set -euo pipefail
cd "$(dirname "$0")/.."
dest=${1:?usage: build-capi.sh DEST}
mkdir -p "$dest"
dest=$(cd "$dest" && pwd)
target=${CARGO_TARGET_DIR:-$PWD/target}
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)

# The shared library exports kqueue, kevent and libkqueue_drain_pending_close and nothing else.
cargo rustc --quiet --release --lib --no-default-features --features capi --crate-type cdylib -- \
  -C link-arg=-Wl,-soname,libkqueue.so.0 -C link-arg=-Wl,--version-script=capi/libkqueue.map
cp "$target/release/libkqrs.so" "$dest/libkqueue.so.0.tmp"
cargo rustc --quiet --release --lib --no-default-features --features capi --crate-type staticlib
mkdir -p "$dest/lib/pkgconfig" "$dest/include/kqueue/sys"
mv "$dest/libkqueue.so.0.tmp" "$dest/lib/libkqueue.so.0"
ln -sf libkqueue.so.0 "$dest/lib/libkqueue.so"
cp "$target/release/libkqrs.a" "$dest/lib/libkqueue.a"
cp capi/include/sys/event.h "$dest/include/kqueue/sys/event.h"
sed -e "s|@PREFIX@|$dest|" -e "s|@VERSION@|$version|" capi/libkqueue.pc.in > "$dest/lib/pkgconfig/libkqueue.pc"
echo "installed kqrs's libkqueue $version into $dest"
