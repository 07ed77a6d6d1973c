"""Fixtures and hooks of the kqrs benchmark suite (pytest-benchmark); plain helpers are in _util.py.

Each row of the results table compares kqrs with what a Python user would use otherwise, like for like
(the same number of event slots asked for on both sides; selectors as a user writes them). Two kinds of
tests measure them:
- per-side pytest-benchmark tests (``benchmark(...)``, ``benchmark.extra_info["key"] = "<row>/<side>"``):
  pytest-benchmark's own tables and JSON, for looking at one side or comparing builds;
- one ``*_pair`` test per row that measures all sides *interleaved* (a round of each side in turn, many
  rounds, medians) and records them through the ``record`` fixture under the same keys. On a shared
  machine load drifts over seconds, so only interleaved sides give stable ratios: ``benches/report.py``
  takes these when present. Latency percentiles, bytes, fds and threads go through ``record`` too.
Run everything with ``bash benches/run.sh``.

``KQRS_BENCH_SMOKE=1`` makes every measurement tiny (CI checks that the suite runs, not its numbers).
"""

from __future__ import annotations

import ctypes
import json
import select

import pytest

import kqrs

from _util import (
    METRICS_PATH,
    PR_GET_CHILD_SUBREAPER,
    PR_SET_CHILD_SUBREAPER,
    Blocked,
    EventfdSet,
    SocketSet,
    raise_nofile,
)

raise_nofile()


@pytest.fixture
def kq():
    q = kqrs.kqueue()
    yield q
    q.close()


@pytest.fixture
def ep():
    e = select.epoll()
    yield e
    e.close()


@pytest.fixture
def kq_selectors():
    """The selectors module with KqueueSelector on kqrs (`kqrs.install()`), as a user gets it; the
    process's select module is restored after."""
    kqrs.install()
    import selectors

    try:
        assert selectors.KqueueSelector is not None
        yield selectors
    finally:
        kqrs.uninstall()


@pytest.fixture(scope="module")
def socket_sets():
    """A factory of SocketSets, closed at the end of the module (so modules do not pile up fds)."""
    made: dict[int, SocketSet] = {}

    def get(n: int) -> SocketSet:
        if n not in made:
            made[n] = SocketSet(n)
        return made[n]

    yield get
    for s in made.values():
        s.close()


@pytest.fixture
def eventfd_set():
    """A factory of one EventfdSet, closed when the test ends."""
    made: list[EventfdSet] = []

    def get(n: int) -> EventfdSet:
        made.append(EventfdSet(n))
        return made[-1]

    yield get
    for s in made:
        s.close()


@pytest.fixture(scope="module")
def subreaper():
    """Orphans (the children `Blocked` forks through its helper) are reparented to this process while the
    module runs."""
    libc = ctypes.CDLL(None, use_errno=True)
    was = ctypes.c_int(0)
    libc.prctl(PR_GET_CHILD_SUBREAPER, ctypes.byref(was), 0, 0, 0)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        pytest.skip(f"prctl(PR_SET_CHILD_SUBREAPER): errno {ctypes.get_errno()}")
    yield
    libc.prctl(PR_SET_CHILD_SUBREAPER, was.value, 0, 0, 0)


@pytest.fixture
def children(subreaper):
    """A factory of Blocked sets; every child is killed and reaped at the end."""
    made: list[Blocked] = []

    def make(n: int) -> Blocked:
        b = Blocked(n)
        made.append(b)
        return b

    yield make
    for b in made:
        b.cleanup()


_metrics: dict[str, float] = {}
_notes: dict[str, str] = {}


@pytest.fixture
def record():
    """record(key, value, note=None): a measurement that benches/report.py reads (interleaved medians,
    latency, bytes, fds, threads)."""

    def rec(key: str, value: float, note: str | None = None) -> None:
        _metrics[key] = float(value)
        if note:
            _notes[key] = note

    return rec


def pytest_sessionfinish(session, exitstatus):
    if METRICS_PATH and _metrics:
        with open(METRICS_PATH, "w") as f:
            json.dump({"metrics": _metrics, "notes": _notes}, f, indent=1, sort_keys=True)


def pytest_terminal_summary(terminalreporter):
    if _metrics:
        terminalreporter.section("kqrs bench metrics")
        for k in sorted(_metrics):
            terminalreporter.write_line(f"{k:<45} {_metrics[k]:>14.6g}  {_notes.get(k, '')}")
