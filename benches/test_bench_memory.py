"""Resources: user-space bytes per knote (RSS delta at 100,000 knotes), fds per kqueue and per knote, and
threads started by kqrs.

Each is measured in a fresh process (benches/_probe.py). READ knotes need one fd each (and TIMER knotes
may), so they are measured at as many knotes as the hard RLIMIT_NOFILE allows (19,000 with this machine's
20,000), not 100,000. Kernel memory (epoll items, timerfds) is not in RSS and not counted.
"""

from __future__ import annotations

import pytest

from _util import SMOKE, probe, probe_fd_budget

COUNTS = {"user": 100_000, "timer": probe_fd_budget(), "read": probe_fd_budget()}


@pytest.mark.parametrize("kind", ["user", "timer", "read"])
def test_memory_per_knote(kind, record):
    count = 1000 if SMOKE else COUNTS[kind]
    r = probe("memory", kind, str(count))
    assert r["knotes"] == count
    record(f"mem/{kind}.bytes", r["bytes_per_knote"], f"bytes per knote at {count} knotes (RSS delta)")
    record(f"mem/{kind}.count", count)
    record(f"mem/{kind}.fds", r["fds_per_knote"], "fds per knote")
    record("mem/kqueue.fds", r["fds_per_kqueue"], "fds per kqueue")
    record("mem/process.fds", r["fds_per_process"], "fds per process, made with its first kqueue")


def test_threads(record):
    """Threads in /proc/self/task before `import kqrs` and after knotes of every filter kind fired."""
    r = probe("threads", timeout=60)
    assert not r["missing"], f"events never seen: {r['missing']}"
    record("threads/kqrs", r["started"], f"threads started by kqrs ({', '.join(r['filters'])})")
