"""Shared pieces of the kqrs benchmark suite (pytest-benchmark).

Each row of the results table compares kqrs with what a Python user would use otherwise. Two kinds of
tests measure them:
- per-side pytest-benchmark tests (``benchmark(...)``, ``benchmark.extra_info["key"] = "<row>/<side>"``):
  pytest-benchmark's own tables and JSON, for looking at one side or comparing builds;
- one ``*_pair`` test per row that measures all sides *interleaved* (a round of each side in turn, many
  rounds, medians) and records them through the ``record`` fixture under the same keys. On a shared
  machine load drifts over seconds, so only interleaved sides give stable ratios: ``benches/report.py``
  takes these when present. Latency percentiles, bytes and fds go through ``record`` too.
Run everything with ``bash benches/run.sh``.

``KQRS_BENCH_SMOKE=1`` makes every measurement tiny (CI checks that the suite runs, not its numbers).
"""

from __future__ import annotations

import gc
import json
import os
import resource
import socket
import statistics
import time
import timeit
from typing import Any, Callable

import pytest

SMOKE = os.environ.get("KQRS_BENCH_SMOKE") == "1"
METRICS_PATH = os.environ.get("KQRS_BENCH_METRICS")

# N registered fds for the "one ready among N" and changelist pairs. 10,000 fds need 5,000 socketpairs
# (both ends registered); the hard RLIMIT_NOFILE here is 20,000, so the soft limit is raised to it.
SIZES = (1, 1000, 10000)


def _raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


_raise_nofile()


def scaled(full: int, smoke: int = 2) -> int:
    """A count of rounds / samples: `full` normally, `smoke` in smoke mode."""
    return smoke if SMOKE else full


def percentile(xs: list[float], p: float) -> float:
    """The p-th percentile (0..100) of `xs`, nearest-rank on the sorted samples."""
    s = sorted(xs)
    if not s:
        return float("nan")
    k = max(0, min(len(s) - 1, round(p / 100 * (len(s) - 1))))
    return s[k]


class SocketSet:
    """`n` socket fds, both ends of n/2 socketpairs, none readable. `fds[0]` is made readable by
    `make_ready()` (a byte sent by its peer) and drained by `drain()`."""

    def __init__(self, n: int):
        self.pairs = [socket.socketpair() for _ in range(max(1, (n + 1) // 2))]
        for a, b in self.pairs:
            a.setblocking(False)
            b.setblocking(False)
        self.socks = [s for pair in self.pairs for s in pair][:n]
        self.fds = [s.fileno() for s in self.socks]
        self.ready_sock, self.peer = self.pairs[0]

    def make_ready(self) -> None:
        self.peer.send(b"x")

    def drain(self) -> None:
        try:
            while self.ready_sock.recv(4096):
                pass
        except BlockingIOError:
            pass

    def close(self) -> None:
        for a, b in self.pairs:
            a.close()
            b.close()
        self.pairs = []


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


_metrics: dict[str, float] = {}
_notes: dict[str, str] = {}


@pytest.fixture
def record():
    """record(key, value, note=None): a measurement that is not a time per call (latency, bytes, fds)."""

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


def interleaved(sides: dict[str, tuple[str, dict]], rounds: int, iters: int) -> dict[str, float]:
    """Times each side's statement (`timeit`, GC off) `iters` times per round, the sides taking turns
    (the order reversed every other round), for `rounds` rounds. Returns each side's median seconds per
    execution."""
    timers = {n: timeit.Timer(stmt, globals=g) for n, (stmt, g) in sides.items()}
    names = list(timers)
    for n in names:  # warm-up
        timers[n].timeit(max(1, iters // 4))
    samples: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        for n in names if r % 2 == 0 else names[::-1]:
            samples[n].append(timers[n].timeit(iters) / iters)
    return {n: statistics.median(v) for n, v in samples.items()}


def interleaved_rounds(sides: dict[str, tuple[Callable[[], Any], Callable[[Any], Any]]], rounds: int,
                       warmup: int = 1) -> dict[str, float]:
    """Like interleaved() for operations that need a fresh state each time: each side is (setup, run);
    setup() is untimed and its result is passed to run(), which is timed once per round."""
    names = list(sides)
    samples: dict[str, list[float]] = {n: [] for n in names}
    was = gc.isenabled()
    gc.disable()
    try:
        for r in range(-warmup, rounds):
            for n in names if r % 2 == 0 else names[::-1]:
                setup, run = sides[n]
                arg = setup()
                t0 = time.perf_counter_ns()
                run(arg)
                dt = time.perf_counter_ns() - t0
                if r >= 0:
                    samples[n].append(dt * 1e-9)
    finally:
        if was:
            gc.enable()
    return {n: statistics.median(v) for n, v in samples.items()}


def record_all(record, row: str, medians: dict[str, float]) -> None:
    for side, v in medians.items():
        record(f"{row}/{side}", v, "s (interleaved median)")
