#!/usr/bin/env bash
# Build (once) and cache a free-threaded CPython 3.13 from Debian's source package; print its path.
exec bash "$(dirname "$0")/cpython313.sh" nogil
