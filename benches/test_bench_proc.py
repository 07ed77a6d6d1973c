"""Process exits: EVFILT_PROC vs pidfd + epoll by hand vs asyncio subprocess wait.

PLACEHOLDER, filled in when EVFILT_PROC lands (issue 6). The pairs to add here, each recorded through the
`record` fixture under the keys benches/report.py already lists (rows marked "pending" until then):
- proc/kqrs.1000, proc/pidfd.1000, proc/asyncio.1000: time to see 1,000 children exit (fork them, each
  _exits at once; NOTE_EXIT knotes vs pidfd_open + epoll vs asyncio.create_subprocess_exec + wait()).
- proc/kqrs.per_exit.100, proc/kqrs.per_exit.10000: per-exit cost with 100 vs 10,000 processes watched.
The engine bench (benches/engine.rs) gets "NOTE_EXIT vs pidfd + epoll_wait" at the same time.
"""

from __future__ import annotations

import pytest

import kqrs


def test_proc_exits_placeholder():
    if not kqrs._kqrs._filter_supported(kqrs.KQ_FILTER_PROC):
        pytest.skip("EVFILT_PROC not built yet (issue 6: placeholder)")
    pytest.skip("EVFILT_PROC is built: the process-exit benchmarks are still to be written here (issue 6)")
