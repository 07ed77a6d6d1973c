#!/usr/bin/env bash
# Runs every kqrs benchmark (the Rust engine bench, the C face's bench and the pytest-benchmark suites) and
# writes a markdown
# table of kqrs / alternative ratios to benches/RESULTS.md, with a chart of every ratio against its target
# (benches/results.svg).
#
#   bash benches/run.sh            full run: release build of kqrs into a bench venv, 2 runs
#   bash benches/run.sh --smoke    a tiny version of everything (well under a minute), for CI
#
# Options:
#   --python PY   use this interpreter as it is (kqrs, pytest and pytest-benchmark importable; no build)
#   --runs N      how many times to run everything (default 2; 1 with --smoke)
#   --out FILE    where to write the table (default benches/RESULTS.md)
#   --chart FILE  where to write the SVG chart (default results.svg beside the table)
# Environment: KQRS_BENCH_VENV (default ~/.cache/kqrs/bench-venv), CARGO_TARGET_DIR as usual.
#
# The default benches/RESULTS.md names the commit it was measured from, so it is only written from a
# clean tree (no uncommitted changes in tracked files) whose HEAD does not move during the run; with
# --out elsewhere any tree will do, and the table says when it was dirty.
set -euo pipefail
cd "$(dirname "$0")/.."
ARGS="$*"
SMOKE=0 RUNS="" PY="" OUT="benches/RESULTS.md" CHART=""
while [ $# -gt 0 ]; do
  case "$1" in
    --smoke) SMOKE=1 ;;
    --python) PY="$2"; shift ;;
    --runs) RUNS="$2"; shift ;;
    --out) OUT="$2"; shift ;;
    --chart) CHART="$2"; shift ;;
    *) echo "run.sh: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
[ -n "$RUNS" ] || RUNS=$([ "$SMOKE" = 1 ] && echo 1 || echo 2)

# What is measured: the commit, and whether tracked files differ from it.
COMMIT=$(git rev-parse HEAD 2>/dev/null || true)
DIRTY=0
if [ -n "$COMMIT" ] && ! git diff --quiet HEAD -- 2>/dev/null; then DIRTY=1; fi
REPORT_OPTS=()
[ -z "$COMMIT" ] || REPORT_OPTS+=(--commit "$COMMIT")
[ "$DIRTY" = 0 ] || REPORT_OPTS+=(--dirty)
[ -z "$CHART" ] || REPORT_OPTS+=(--chart "$CHART")
mkdir -p "$(dirname "$OUT")"
if [ "$(realpath -m "$OUT")" = "$(realpath -m benches/RESULTS.md)" ]; then
  if [ -z "$COMMIT" ]; then
    echo "run.sh: refusing to write benches/RESULTS.md: not a git checkout, so it could not name the commit" \
      "measured. Use --out FILE to write elsewhere." >&2
    exit 3
  fi
  if [ "$DIRTY" = 1 ]; then
    echo "run.sh: refusing to write benches/RESULTS.md from a tree with uncommitted changes in tracked files" \
      "(it must name the commit it measured). Commit first, or use --out FILE to write elsewhere:" >&2
    git status --short --untracked-files=no >&2
    exit 3
  fi
  REPORT_OPTS+=(--require-clean)
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/kqrs-bench.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

if [ -z "$PY" ]; then
  VENV=${KQRS_BENCH_VENV:-$HOME/.cache/kqrs/bench-venv}
  [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet maturin pytest 'pytest-benchmark>=4' 'watchfiles>=0.21'
  echo "== building kqrs (release wheel) into $VENV"
  "$VENV/bin/maturin" build --release --quiet -i "$VENV/bin/python" -o "$WORK/wheels" >/dev/null
  "$VENV/bin/pip" install --quiet --force-reinstall --no-deps "$WORK"/wheels/kqrs-*.whl
  PY="$VENV/bin/python"
  BUILD="release wheel (maturin build --release), installed in the bench venv"
else
  BUILD="as installed for $PY ($("$PY" -c 'import kqrs, os; print(os.path.dirname(kqrs.__file__))'))"
fi
PYVER=$("$PY" -c 'import sys; print(sys.version.split()[0], "free-threaded" if not getattr(sys, "_is_gil_enabled", lambda: True)() else "")')

if [ "$SMOKE" = 1 ]; then
  export KQRS_BENCH_SMOKE=1
  BENCH_OPTS=(--benchmark-min-rounds=1 --benchmark-max-time=0.0005 --benchmark-min-time=0.000001 --benchmark-warmup=off)
else
  unset KQRS_BENCH_SMOKE
  BENCH_OPTS=(--benchmark-min-rounds=100 --benchmark-max-time=0.5 --benchmark-min-time=0.0002 --benchmark-warmup=on)
fi

# The C face: kqrs's libkqueue.so.0 built from this tree (a smoke run may reuse the one tests/run-all.sh
# installed, KQRS_CAPI_DIR), and benches/capi.c linked against it as a C program would be.
CAPI=${KQRS_CAPI_DIR:-}
if [ "$SMOKE" = 0 ] || [ -z "$CAPI" ]; then
  CAPI="$WORK/capi"
  echo "== building kqrs's C library into $CAPI"
  bash scripts/build-capi.sh "$CAPI" >/dev/null
fi
cc -O2 -I"$CAPI/include/kqueue" benches/capi.c -L"$CAPI/lib" -Wl,-rpath,"$CAPI/lib" -lkqueue -o "$WORK/capi-bench"

DIRS=()
for i in $(seq 1 "$RUNS"); do
  D="$WORK/run$i"
  mkdir -p "$D"
  echo "== run $i/$RUNS: engine (cargo bench --bench engine)"
  KQRS_BENCH_ENGINE_JSON="$D/engine.json" cargo bench --quiet --bench engine -- $([ "$SMOKE" = 1 ] && echo --smoke)
  echo "== run $i/$RUNS: C face (benches/capi.c)"
  "$WORK/capi-bench" "$D/capi.json" $([ "$SMOKE" = 1 ] && echo --smoke)
  echo "== run $i/$RUNS: Python suites (pytest benches/)"
  KQRS_BENCH_METRICS="$D/metrics.json" "$PY" -m pytest benches -q -p no:cacheprovider -o addopts="" \
    --benchmark-disable-gc --benchmark-json="$D/bench.json" --benchmark-columns=median,iqr,rounds \
    --benchmark-sort=name "${BENCH_OPTS[@]}"
  DIRS+=("$D")
done

"$PY" benches/report.py --out "$OUT" --command "bash benches/run.sh${ARGS:+ $ARGS}" --build "$BUILD" \
  --python "$PYVER" $([ "$SMOKE" = 1 ] && echo --smoke) "${REPORT_OPTS[@]}" "${DIRS[@]}"
echo "== wrote $OUT"
