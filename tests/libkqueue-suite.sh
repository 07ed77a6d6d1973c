#!/usr/bin/env bash
# libkqueue's own C test suite against kqrs's C library: every test must pass except the ones listed in
# tests/libkqueue-suite-known.txt (each with the reason), and each of those must still fail (a known failure
# that passes is reported, as a strict xfail is: the list must then shrink).
# Usage: tests/libkqueue-suite.sh SUITE_DIR CAPI_DIR
set -euo pipefail
suite=$1 capi=$2
here=$(cd "$(dirname "$0")" && pwd)
log=$(mktemp)
TEST_TIMEOUT=${TEST_TIMEOUT:-60} bash "$suite/run.sh" "$capi/lib" "$capi/include/kqueue" >"$log" 2>&1 || true
tail -n 1 "$log"
failed=$(sed -n 's/^FAILED \([a-z_]* [0-9]*\):.*/\1/p' "$log" | sort -u)
known=$(sed -n 's/^\([a-z_]* [0-9]*\) *#.*/\1/p' "$here/libkqueue-suite-known.txt" | sort -u)
unexpected=$(comm -23 <(printf '%s\n' "$failed") <(printf '%s\n' "$known") | sed '/^$/d')
fixed=$(comm -13 <(printf '%s\n' "$failed") <(printf '%s\n' "$known") | sed '/^$/d')
if ! grep -q '^[0-9]* passed, [0-9]* failed$' "$log"; then
  echo "libkqueue's suite did not finish:"; tail -n 30 "$log"; exit 1
fi
if [ -n "$unexpected" ]; then
  echo "libkqueue's suite: unexpected failures:"
  while read -r t; do grep -m 1 "^FAILED $t:" "$log"; done <<<"$unexpected"
  exit 1
fi
if [ -n "$fixed" ]; then
  echo "libkqueue's suite: known failures that pass now (remove them from tests/libkqueue-suite-known.txt):"
  printf '  %s\n' "$fixed"; exit 1
fi
echo "libkqueue's suite: every failure is a known one (tests/libkqueue-suite-known.txt)"
