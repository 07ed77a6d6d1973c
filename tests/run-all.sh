#!/usr/bin/env bash
# The whole test suite, from a fresh checkout: the engine's Rust tests, then the Python package's tests
# (with CPython's own kqueue suites) on the machine's CPython and on a free-threaded CPython 3.13t.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo test (engine alone, no Python)"
cargo test --quiet

echo "== the C library (libkqueue.so.0), and libkqueue's own test suite against it"
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

run_pytest() {  # $1 = interpreter, $2 = venv dir
  "$1" -m venv --clear "$2"
  "$2/bin/pip" install --quiet --upgrade pip >/dev/null
  "$2/bin/pip" install --quiet '.[test]'
  echo "== pytest on $("$2/bin/python" -c 'import sys; print(sys.version.split()[0], "free-threaded" if not getattr(sys, "_is_gil_enabled", lambda: True)() else "")')"
  "$2/bin/python" -m pytest -q -p no:cacheprovider tests
  echo "== the thread-safety tests again, each in 4 threads at once (pytest-run-parallel)"
  "$2/bin/python" -m pytest -q -p no:cacheprovider -o timeout_method=thread --parallel-threads=4 tests/test_threads.py tests/test_queue.py
}

run_pytest "${PYTHON:-python3}" .venv-test
PY313T=$(bash .ci/py313t.sh)
run_pytest "$PY313T" .venv-313t
