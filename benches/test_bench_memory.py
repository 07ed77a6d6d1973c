"""Memory: user-space bytes per knote (RSS delta at 100,000 knotes), fds per kqueue and per knote.

Each kind is measured in a fresh process (benches/_probe.py). READ knotes need one fd each and TIMER
knotes own one timerfd each, so they are measured at as many knotes as the hard RLIMIT_NOFILE allows
(19,000 with this machine's 20,000), not 100,000. Kernel memory (epoll items, timerfds) is not in RSS and
not counted.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys

import pytest

from _util import SMOKE

PROBE = os.path.join(os.path.dirname(__file__), "_probe.py")


def _fd_budget() -> int:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    return min(100_000, (hard - 200) // 1000 * 1000)


COUNTS = {"user": 100_000, "timer": _fd_budget(), "read": _fd_budget()}


@pytest.mark.parametrize("kind", ["user", "timer", "read"])
def test_memory_per_knote(kind, record):
    count = 1000 if SMOKE else COUNTS[kind]
    out = subprocess.run(
        [sys.executable, PROBE, "memory", kind, str(count)], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["knotes"] == count
    assert r["fds_per_kqueue"] == 3  # outer epoll, inner epoll, kick eventfd
    assert r["fds_per_knote"] == (1.0 if kind == "timer" else 0.0)
    record(f"mem/{kind}.bytes", r["bytes_per_knote"], f"bytes per knote at {count} knotes (RSS delta)")
    record(f"mem/{kind}.count", count)
    record(f"mem/{kind}.fds", r["fds_per_knote"], "fds per knote")
    record("mem/kqueue.fds", r["fds_per_kqueue"], "fds per kqueue")
