"""Fork cost for worker pools: os.fork() + os._exit() + waitpid() in a process holding 10 kqueues with
1,000 knotes each, vs the same process without kqrs.

Two pairs, each side in fresh processes (benches/_probe.py), alternating in chunks so both see the same
machine:
- USER knotes (no fds): 10 kqueues x 1,000 EVFILT_USER knotes vs a process that never imports kqrs (but
  imports the stdlib modules kqrs imports, threading among them: see _probe.py).
- READ knotes: 1,000 sockets watched by 10 kqueues x 1,000 READ knotes vs the same 1,000 sockets in 10
  select.epoll objects (the same process with epoll instead of kqrs).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys

from _util import scaled

PROBE = os.path.join(os.path.dirname(__file__), "_probe.py")
PAIRS = {"user": ("user", "base"), "read": ("read_kqrs", "read_epoll"), "import": ("import", "base")}


def _run(mode: str, forks: int) -> list[int]:
    out = subprocess.run(
        [sys.executable, PROBE, "fork", mode, str(forks)], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["mode"] == mode and len(r["ns"]) == forks
    assert r["imported_kqrs"] == (mode in ("user", "read_kqrs", "import"))
    return r["ns"]


def test_fork_cost(record):
    chunks, forks = scaled(8, 1), scaled(150, 3)
    lat: dict[str, list[int]] = {}
    modes = sorted({m for pair in PAIRS.values() for m in pair})
    for c in range(chunks):
        for mode in modes if c % 2 == 0 else modes[::-1]:
            lat.setdefault(mode, []).extend(_run(mode, forks))
    for mode, xs in lat.items():
        assert len(xs) == chunks * forks
        record(f"fork/{mode}.median", statistics.median(xs) / 1000, "us per fork+exit+wait")
