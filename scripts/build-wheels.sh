#!/usr/bin/env bash
# Builds kqrs's release artefacts into dist/ (or DIR), then checks them (scripts/check-wheels.py):
#   - manylinux2014 (manylinux_2_17) x86_64 wheels for CPython 3.9 to 3.14. None of these interpreters
#     needs to be installed: maturin carries each version's sysconfig, and zig (the ziglang package) links
#     against glibc 2.17, so no manylinux container is needed;
#   - a cp313t manylinux2014 x86_64 wheel, built with the cached free-threaded interpreter (.ci/py313t.sh);
#   - the same CPython 3.9 to 3.14 wheels for aarch64, cross-built by zig (built and checked, not run: this
#     machine has no aarch64 CPU or emulator; maturin cross-builds free-threaded wheels only for 3.14t+);
#   - the sdist.
# Usage: bash scripts/build-wheels.sh [DIR]
# Env: KQRS_PYTHONS (default "3.9 3.10 3.11 3.12 3.13 3.14"), KQRS_ARCHS (default "x86_64 aarch64"),
#      KQRS_FREE_THREADED=0 to leave out cp313t, KQRS_BUILD_VENV (default ~/.cache/kqrs/build-venv),
#      CARGO_TARGET_DIR (default ./target), CARGO_BUILD_JOBS (default 2).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-dist}
pythons=${KQRS_PYTHONS:-3.9 3.10 3.11 3.12 3.13 3.14}
archs=${KQRS_ARCHS:-x86_64 aarch64}
export CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-2}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
# The glibc the wheels are linked for; build.rs records it for `kqrs doctor`.
export KQRS_TARGET_GLIBC=2.17
start=$SECONDS

# The pinned toolchain, in a venv of its own, rebuilt when scripts/build-requirements.txt changes.
venv=${KQRS_BUILD_VENV:-$HOME/.cache/kqrs/build-venv}
stamp=$(sha256sum scripts/build-requirements.txt | cut -c1-16)
if [ "$(cat "$venv/.kqrs-stamp" 2>/dev/null)" != "$stamp" ]; then
  python3 -m venv --clear "$venv"
  "$venv/bin/pip" install --quiet --upgrade pip
  "$venv/bin/pip" install --quiet -r scripts/build-requirements.txt
  echo "$stamp" > "$venv/.kqrs-stamp"
fi
maturin=$venv/bin/maturin
# maturin runs zig as `python3 -m ziglang`: the venv's python3 must come first on PATH
export PATH=$venv/bin:$PATH

mkdir -p "$out"
rm -f "$out"/kqrs-*.whl "$out"/kqrs-*.tar.gz
interp=()
for v in $pythons; do interp+=(-i "python$v"); done
quiet() {  # runs "$@", prints only what it built; on failure, the end of its log
  local log rc=0
  log=$(mktemp)
  "$@" >"$log" 2>&1 || rc=$?
  if [ "$rc" != 0 ]; then tail -n 60 "$log" >&2; rm -f "$log"; return "$rc"; fi
  grep -E '^📦 Built' "$log" || true
  rm -f "$log"
}
build() {  # $@: maturin build arguments
  quiet "$maturin" build --release --zig --compatibility manylinux2014 --out "$out" "$@"
}

for arch in $archs; do
  target=$arch-unknown-linux-gnu
  if [ "$arch" = x86_64 ]; then
    echo "== x86_64 wheels for CPython $pythons"
    build "${interp[@]}"
    if [ "${KQRS_FREE_THREADED:-1}" = 1 ]; then
      echo "== x86_64 wheel for free-threaded CPython 3.13t"
      build -i "$(bash .ci/py313t.sh)"
    fi
  else
    echo "== $arch wheels for CPython $pythons (cross-built)"
    if ! rustup target list --installed | grep -qx "$target"; then
      rustup target add "$target"
    fi
    build --target "$target" "${interp[@]}"
  fi
done
echo "== sdist"
quiet "$maturin" sdist --out "$out"

# Every wheel asked for must be there.
missing=0
for arch in $archs; do
  for v in $pythons; do
    t=cp${v/./}
    ls "$out"/kqrs-*-"$t"-"$t"-*_"$arch".whl >/dev/null 2>&1 || { echo "build-wheels: no $t $arch wheel" >&2; missing=1; }
  done
done
if [[ " $archs " == *" x86_64 "* && "${KQRS_FREE_THREADED:-1}" = 1 ]]; then
  ls "$out"/kqrs-*-cp313-cp313t-*_x86_64.whl >/dev/null 2>&1 || { echo "build-wheels: no cp313t wheel" >&2; missing=1; }
fi
ls "$out"/kqrs-*.tar.gz >/dev/null 2>&1 || { echo "build-wheels: no sdist" >&2; missing=1; }
[ "$missing" = 0 ]

echo "== checks: auditwheel, linked libraries, stubs, py.typed, licence files"
"$venv/bin/python" scripts/check-wheels.py "$out"
echo "built and checked in $((SECONDS - start)) s"
