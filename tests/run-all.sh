#!/usr/bin/env bash
# The whole test suite, from a fresh checkout: the engine's Rust tests, the C library, the release wheels
# and sdist (scripts/build-wheels.sh), then the Python package's tests (with CPython's own kqueue suites)
# against the manylinux2014 wheel just built, installed into a venv of the machine's CPython 3.11, of
# CPython 3.13 and of a free-threaded CPython 3.13t (the cp313t wheel).
set -euo pipefail
cd "$(dirname "$0")/.."
phase() { echo "== $* [at $((SECONDS)) s]"; }

phase "style: cargo fmt --check, cargo clippy -D warnings (engine, C face, Python face), ruff check, ruff format --check"
cargo fmt --check
cargo clippy --quiet --all-targets -- -D warnings
cargo clippy --quiet --all-targets --features capi -- -D warnings
PYO3_PYTHON=${PYTHON:-python3} cargo clippy --quiet --all-targets --all-features -- -D warnings
# ruff in a venv of its own, at the version the test extras name (pyproject.toml), before anything is built
"${PYTHON:-python3}" -m venv --clear .venv-style
.venv-style/bin/pip install --quiet "$(sed -n 's/^ *"\(ruff[^"]*\)",.*/\1/p' pyproject.toml)"
.venv-style/bin/ruff check .
.venv-style/bin/ruff format --check .

phase "cargo test (engine alone, no Python; then the library's unit tests with the C face built in)"
cargo test --quiet
cargo test --quiet --features capi --lib

phase "the C library (libkqueue.so.0), and libkqueue's own test suite against it"
CAPI_DIR=$PWD/.capi
bash scripts/build-capi.sh "$CAPI_DIR"
export KQRS_CAPI_DIR=$CAPI_DIR  # tests/test_capi.py uses this build
suite=${LIBKQUEUE_SUITE:-}
for d in "$PWD/../shared/libkqueue-suite" /work/shared/libkqueue-suite; do
  if [ -z "$suite" ] && [ -f "$d/run.sh" ]; then suite=$d; fi
done
if [ -n "$suite" ]; then
  bash tests/libkqueue-suite.sh "$suite" "$CAPI_DIR"
else
  echo "libkqueue's suite not found (set LIBKQUEUE_SUITE=DIR): not run"
fi

phase "release wheels and sdist (scripts/build-wheels.sh)"
bash scripts/build-wheels.sh dist
export KQRS_DIST=$PWD/dist  # tests/test_packaging.py checks what it holds

arch=$(uname -m)
sdist_tested=
run_pytest() {  # $1 = interpreter, $2 = venv dir
  "$1" -m venv --clear "$2"
  "$2/bin/pip" install --quiet --upgrade pip >/dev/null
  local abi whl
  abi=$("$2/bin/python" -c 'import sys, sysconfig; print("cp%d%d%s" % (sys.version_info[:2] + ("t" if sysconfig.get_config_var("Py_GIL_DISABLED") else "",)))')
  whl=$(ls dist/kqrs-*-"${abi%t}"-"$abi"-*_"$arch".whl)
  # the release wheel, not the source tree: the tests import it from site-packages (test_installed_wheel.py)
  "$2/bin/pip" install --quiet "$whl[test]"
  phase "pytest on $("$2/bin/python" -c 'import sys; print(sys.version.split()[0], "free-threaded" if not getattr(sys, "_is_gil_enabled", lambda: True)() else "")') against $(basename "$whl")"
  # the sdist is built and tested from a fresh unpack once per run, in the first venv
  KQRS_EXPECT_WHEEL=1 KQRS_SDIST_TESTED=$sdist_tested "$2/bin/python" -m pytest -q -p no:cacheprovider tests
  sdist_tested=1
  phase "the thread-safety tests again, each in 4 threads at once (pytest-run-parallel)"
  KQRS_EXPECT_WHEEL=1 "$2/bin/python" -m pytest -q -p no:cacheprovider -o timeout_method=thread --parallel-threads=4 tests/test_threads.py tests/test_queue.py
}

run_pytest "${PYTHON:-python3}" .venv-test
run_pytest "$(bash .ci/py313.sh)" .venv-313
run_pytest "$(bash .ci/py313t.sh)" .venv-313t
phase "all done"
