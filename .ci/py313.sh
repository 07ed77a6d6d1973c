#!/usr/bin/env bash
# Build (once) and cache CPython 3.13 with the GIL from Debian's source package; print its path.
exec bash "$(dirname "$0")/cpython313.sh" gil
