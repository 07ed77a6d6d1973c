"""Soak (issue 8): many add/delete cycles on one kqueue and many kqueue create/close cycles, with memory
flat and the fd count back to where it started.

Scaled down by default (50,000 add/delete cycles, 5,000 kqueues; a few seconds); `KQRS_LONG=1` runs the
full sizes (1,000,000 and 100,000). Each test prints one line with its numbers (run with `-s` to see it);
`KQRS_SOAK_REPORT=path` also appends them to that file as JSON lines.

"Flat" is tight enough to catch a leak of one knote per 1,000 cycles (issue 14). That is 50 knotes in the
short run: a few KiB, below what RSS can show (whole pages, allocator arenas), so RSS is only a backstop.
The bound is on exact counts, read after a warm-up (tables and caches at their working size) and again at
the end, as growth per cycle:
- the knotes the engine holds (`kqueue._stats()[0]`): a knote that is never freed;
- the extension's Rust heap, in blocks and bytes (`_kqrs._heap()`, a counting allocator): a knote's
  memory (64-byte slot, boxed filter state) or any table that keeps growing, counted or not;
- Python's allocated blocks (`sys.getallocatedblocks()`): a kevent object (one block) or any other object
  the layer keeps.
Each may grow by less than half of what one leaked knote (or kevent) per 1,000 cycles adds; measured
steady state is zero. `test_the_checker_catches_*` prove the bound: the same cycles with one knote, one
knote's worth of engine memory, or one kevent object leaked per 1,000 cycles are flagged.
"""

from __future__ import annotations

import gc
import json
import os
import socket
import sys
import time
from array import array
from dataclasses import dataclass

import pytest

import kqrs
from kqrs import _kqrs, kevent

from kqhelpers import ADD, CLEAR, DELETE, NOTE_EXIT, NOTE_FORK, PROC, READ, TIMER, TRIGGER, USER, WRITE

LONG = os.environ.get("KQRS_LONG") == "1"
ADD_DELETE_CYCLES = 1_000_000 if LONG else 50_000
KQUEUE_CYCLES = 100_000 if LONG else 5_000
LONG_MS = 10**9

# The leak the bound must catch: one knote per LEAK_EVERY cycles. What one leaked knote adds at the least:
# its 64-byte slot in the knote table (no block of its own), or, for a knote with boxed state, one block.
LEAK_EVERY = 1000
KNOTE_BYTES = 64
# RSS only as a backstop: pages and allocator arenas move by tens of KiB without any leak.
RSS_SLACK_KB = 1024

pytestmark = pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")


def rss_kb() -> int:
    # (os.read, not open(): on CPython 3.11 each text-mode open() keeps one block, which would count here)
    fd = os.open("/proc/self/status", os.O_RDONLY | os.O_CLOEXEC)
    try:
        status = os.read(fd, 1 << 16)
    finally:
        os.close(fd)
    return int(status.split(b"VmRSS:", 1)[1].split()[0])


def listed_fds() -> set[int]:
    """Every number /proc/self/fd lists, unchecked (kqhelpers.open_fds fstat()s each and so leaves out the
    one listdir used): enough for `leaked`, which compares two listings and keeps only the kinds of fd
    these cycles create."""
    return {int(fd) for fd in os.listdir("/proc/self/fd")}


def leaked(before: set[int], after: set[int]) -> dict[int, str]:
    """fds opened since `before` of the kinds these cycles create (pipes, sockets, kqrs's anonymous
    inodes); anything else appeared from elsewhere in the process (another test's leftover thread)."""
    out = {}
    for fd in after - before:
        try:
            link = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if link.startswith(("pipe:", "socket:", "anon_inode:")):
            out[fd] = link
    return out


def report(name: str, **numbers) -> None:
    line = f"soak {name}: " + ", ".join(f"{k}={v}" for k, v in numbers.items())
    print(line)
    path = os.environ.get("KQRS_SOAK_REPORT")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps({"test": name, **numbers}) + "\n")


def first_kqueue_made() -> None:
    """The process's first kqueue makes kqrs's one process-wide fd (the always-readable eventfd that wakes
    threads blocked on a kqueue being closed): make it before counting fds."""
    kqrs.kqueue().close()
    # Kqueues earlier tests left in reference cycles are freed by the collector, at a moment nobody
    # chooses: free them now, so that the fds counted before and after are this test's own.
    gc.collect()
    gc.collect()


@dataclass(frozen=True)
class Reading:
    knotes: int
    heap_bytes: int
    heap_blocks: int
    py_blocks: int
    rss_kb: int


FIELDS = ("cycles",) + tuple(Reading.__dataclass_fields__)


class Meter:
    """Readings every so often; the base is the first one after the warm-up. The readings go into an array
    allocated up front, so that taking one keeps no Python object alive (it would count as a leak)."""

    def __init__(self, kq=None, max_samples: int = 64):
        self.kq = kq
        self.data = array("q", bytes(8 * len(FIELDS) * max_samples))
        self.n = 0
        self.base = -1

    def sample(self, cycles: int, warm: bool) -> None:
        # kevent objects have a free list of 256 (rust/src/python/mod.rs): freed ones are kept for reuse and
        # still count as blocks, and a leaked one may come from it. Fill it before each reading, so that it
        # is full at every reading: neither a growth nor a place where leaked objects hide.
        evs = [kevent(0) for _ in range(512)]
        del evs
        gc.collect()
        d, i = self.data, self.n * len(FIELDS)
        d[i] = cycles
        d[i + 1] = self.kq._stats()[0] if self.kq is not None else 0
        d[i + 2], d[i + 3] = _kqrs._heap()
        d[i + 5] = rss_kb()
        d[i + 4] = sys.getallocatedblocks()
        self.n += 1
        if warm and self.base < 0:
            self.base = self.n - 1

    def _at(self, k: int) -> tuple[int, Reading]:
        row = self.data[k * len(FIELDS) : (k + 1) * len(FIELDS)]
        return row[0], Reading(*row[1:])

    @property
    def samples(self) -> list[tuple[int, Reading]]:
        return [self._at(k) for k in range(self.n)]

    def growth(self) -> tuple[int, Reading]:
        """(cycles since the base, growth of each count from the base to the end)."""
        assert 0 <= self.base < self.n - 1, "no reading after the warm-up"
        (c0, b), (c1, e) = self._at(self.base), self._at(self.n - 1)
        return c1 - c0, Reading(*(getattr(e, f) - getattr(b, f) for f in Reading.__dataclass_fields__))

    def leaks(self) -> list[str]:
        """What grew by at least half of what one leaked knote (or kevent object) per LEAK_EVERY cycles
        adds; empty when the memory stayed flat."""
        cycles, g = self.growth()
        per_leak = cycles / LEAK_EVERY / 2  # half the leaked knotes: a leak at half the rate is caught too
        found = []
        if g.knotes >= max(1, per_leak):
            found.append(f"{g.knotes} more knotes")
        if g.heap_blocks >= max(1, per_leak):
            found.append(f"{g.heap_blocks} more Rust heap blocks")
        if g.heap_bytes >= max(KNOTE_BYTES, per_leak * KNOTE_BYTES):
            found.append(f"{g.heap_bytes} more Rust heap bytes")
        if g.py_blocks >= max(1, per_leak):
            found.append(f"{g.py_blocks} more Python blocks")
        if g.rss_kb >= RSS_SLACK_KB:
            found.append(f"{g.rss_kb} KiB more RSS")
        return [f"{x} over {cycles} cycles" for x in found]

    def numbers(self) -> dict:
        cycles, g = self.growth()
        samples = self.samples
        first, base, last = samples[0][1], samples[self.base][1], samples[-1][1]
        return dict(
            cycles_after_warmup=cycles,
            knotes_growth=g.knotes,
            heap_blocks_growth=g.heap_blocks,
            heap_bytes_growth=g.heap_bytes,
            py_blocks_growth=g.py_blocks,
            rss_start_kb=first.rss_kb,
            rss_after_warmup_kb=base.rss_kb,
            rss_end_kb=last.rss_kb,
            rss_max_kb=max(r.rss_kb for _, r in samples),
            growth_kb=g.rss_kb,
        )


def add_delete_cycles(total: int, leak: str | None = None) -> tuple[Meter, dict]:
    """One kqueue, `total` knotes added and deleted: USER (plain, and triggered and collected), TIMER (a
    timerfd each), READ on a pipe with data (reported, then deleted), WRITE on a socket, PROC NOTE_EXIT on
    this process (a pidfd each). `leak` adds one leak per LEAK_EVERY cycles: "knote" (a USER knote left in
    the kqueue), "engine" (a timer knote left in another kqueue: its memory, not this kqueue's knote count),
    "python" (a kevent object kept). Returns the meter and the fd numbers."""
    r, w = os.pipe()
    a, b = socket.socketpair()
    os.write(w, b"x")
    first_kqueue_made()
    fds0 = listed_fds()
    kq = kqrs.kqueue()
    side = kqrs.kqueue()
    kept: list = []
    # the kqueue's timer source comes with its first timer or USER knote, once; count from there
    assert kq.control([kevent(0, USER, ADD), kevent(0, USER, DELETE)], 0) == []
    owned0 = _kqrs._owned_fd_count()
    batch = 250
    users_add = [kevent(i, USER, ADD, 0, 0, i) for i in range(batch)]
    users_del = [kevent(i, USER, DELETE) for i in range(batch)]
    trig_add = [kevent(i, USER, ADD | CLEAR, TRIGGER, 0, i) for i in range(batch)]
    timers_add = [kevent(i, TIMER, ADD, 0, LONG_MS, i) for i in range(batch)]
    timers_del = [kevent(i, TIMER, DELETE) for i in range(batch)]
    pipe_cycle = [kevent(r, READ, ADD, 0, 0, 1)]
    pipe_del = [kevent(r, READ, DELETE)]
    sock_pairs = [kevent(a.fileno(), WRITE, ADD), kevent(a.fileno(), WRITE, DELETE)] * (batch // 2)
    procs_add = [kevent(os.getpid(), PROC, ADD, NOTE_EXIT, 0, 7), kevent(os.getpid(), PROC, DELETE)] * 25
    meter = Meter(kq)
    meter.sample(0, warm=False)
    t0 = time.monotonic()
    cycles = 0
    rounds = 0
    leaks = 0
    every = max(1, total // (4 * batch + 35) // 25)  # about 25 samples
    while cycles < total:
        assert kq.control(users_add, 0) == []
        assert kq.control(users_del, 0) == []
        got = kq.control(trig_add, batch, 0)
        assert len(got) == batch
        assert kq.control(users_del, 0) == []
        assert kq.control(timers_add, 0) == []
        assert kq.control(timers_del, 0) == []
        assert kq.control(sock_pairs, 0) == []
        assert kq.control(procs_add, 0) == []
        cycles += 4 * batch + len(procs_add) // 2
        for _ in range(10):
            got = kq.control(pipe_cycle, 4, 0)
            assert [(e.ident, e.filter, e.data, e.udata) for e in got] == [(r, READ, 1, 1)]
            assert kq.control(pipe_del, 0) == []
            cycles += 1
        while leak and leaks < cycles // LEAK_EVERY:
            leaks += 1
            if leak == "knote":
                assert kq.control([kevent(10**6 + leaks, USER, ADD)], 0) == []
            elif leak == "engine":
                assert side.control([kevent(leaks, TIMER, ADD, 0, LONG_MS)], 0) == []
            elif leak == "python":
                kept.append(kevent(leaks, USER, ADD))
        rounds += 1
        if rounds % every == 0:
            meter.sample(cycles, warm=cycles >= total // 10)
    elapsed = time.monotonic() - t0
    meter.sample(cycles, warm=True)
    owned_end = _kqrs._owned_fd_count()
    kq.close()
    side.close()
    fds1 = listed_fds()
    for fd in (r, w):
        os.close(fd)
    a.close()
    b.close()
    del kept
    return meter, dict(
        seconds=round(elapsed, 1),
        cycles=cycles,
        fds_before=fds0,
        fds_after=fds1,
        owned_before=owned0,
        owned_end=owned_end,
    )


def test_add_delete_cycles_keep_memory_flat():
    """ADD_DELETE_CYCLES add/delete cycles: no knote, no Rust heap block or byte, no Python block (beyond
    half a leaked knote per 1,000 cycles) after the warm-up; the fds and kqrs's own fd count come back."""
    meter, info = add_delete_cycles(ADD_DELETE_CYCLES)
    report(
        "add_delete",
        cycles=info["cycles"],
        seconds=info["seconds"],
        **meter.numbers(),
        fds_before=len(info["fds_before"]),
        fds_after=len(info["fds_after"]),
    )
    assert meter.samples[-1][1].knotes == 0
    assert info["owned_end"] == info["owned_before"]
    assert leaked(info["fds_before"], info["fds_after"]) == {}
    assert meter.leaks() == [], meter.numbers()


CHECKER_CYCLES = 30_000


@pytest.mark.parametrize(
    "leak, what",
    [
        ("knote", "more knotes"),
        ("engine", "more Rust heap blocks"),
        ("python", "more Python blocks"),
    ],
)
def test_the_checker_catches_one_leak_per_1000_cycles(leak, what):
    """The same cycles, with one knote (or one knote's engine memory, or one kevent object) leaked per
    1,000 cycles: the bound flags it."""
    meter, _ = add_delete_cycles(CHECKER_CYCLES, leak)
    found = meter.leaks()
    assert any(what in f for f in found), (found, meter.numbers())


def test_kqueue_create_close_cycles_keep_memory_and_fds_flat(tmp_path, has_connector):
    """KQUEUE_CYCLES kqueues, each with knotes of several kinds (USER triggered and collected, a TIMER, a
    READ on a pipe; every 10th also watches another kqueue or is found again with fromfd, every 100th a
    regular file through inotify, every 1000th opens the process connector), then closed, or dropped without
    close (half of them). The fd set and kqrs's own fd count end where they started; the Rust heap and
    Python's blocks stay flat (within half a leaked knote per 1,000 kqueues)."""
    r, w = os.pipe()
    os.write(w, b"x")
    f = open(tmp_path / "file", "wb+")
    f.write(b"abc")
    f.flush()
    f.seek(0)
    first_kqueue_made()
    other = kqrs.kqueue()
    connector = has_connector  # without CAP_NET_ADMIN: no connector in the cycles
    gc.collect()
    fds0 = listed_fds()
    owned0 = _kqrs._owned_fd_count()
    base_changes = [
        kevent(1, USER, ADD | CLEAR, TRIGGER, 0, 1),
        kevent(2, TIMER, ADD, 0, LONG_MS, 2),
        kevent(r, READ, ADD, 0, 0, 3),
    ]
    meter = Meter()
    meter.sample(0, warm=False)
    t0 = time.monotonic()
    for i in range(KQUEUE_CYCLES):
        kq = kqrs.kqueue()
        changes = list(base_changes)
        if i % 10 == 3:
            changes.append(kevent(other.fileno(), READ, ADD, 0, 0, 4))
        if i % 100 == 5:
            # (closing a kqueue whose inotify instance has a watch costs the kernel ~8 ms: an SRCU grace
            # period in fsnotify; so only every 100th)
            changes.append(kevent(f, READ, ADD, 0, 0, 5))
        if connector and i % 1000 == 7:
            changes.append(kevent(os.getpid(), PROC, ADD, NOTE_EXIT | NOTE_FORK, 0, 6))
        got = kq.control(changes, 8, 0)
        want = {1, 3} | ({5} if i % 100 == 5 else set())
        assert {e.udata for e in got} == want, [(e.ident, e.filter, e.flags, e.data) for e in got]
        if i % 10 == 8:
            again = kqrs.kqueue.fromfd(kq.fileno())
            assert again.fileno() == kq.fileno()
            del again
        if i % 2:
            kq.close()
        del kq  # the other half: closed by the destructor
        if i % 500 == 499:
            meter.sample(i + 1, warm=i >= KQUEUE_CYCLES // 10)
    elapsed = time.monotonic() - t0
    meter.sample(KQUEUE_CYCLES, warm=True)
    owned1 = _kqrs._owned_fd_count()
    fds1 = listed_fds()
    report(
        "kqueue_create_close",
        cycles=KQUEUE_CYCLES,
        seconds=round(elapsed, 1),
        **meter.numbers(),
        fds_before=len(fds0),
        fds_after=len(fds1),
        kqrs_fds_before=owned0,
        kqrs_fds_after=owned1,
    )
    other.close()
    f.close()
    os.close(r)
    os.close(w)
    assert leaked(fds0, fds1) == {}
    assert owned1 == owned0
    assert meter.leaks() == [], meter.numbers()
