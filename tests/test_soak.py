"""Soak (issue 8): many add/delete cycles on one kqueue and many kqueue create/close cycles, with flat RSS
and the fd count back to where it started.

Scaled down by default (50,000 add/delete cycles, 5,000 kqueues; a few seconds); `KQRS_LONG=1` runs the
full sizes (1,000,000 and 100,000). Each test prints one line with its numbers (run with `-s` to see it);
`KQRS_SOAK_REPORT=path` also appends them to that file as JSON lines.
"""

from __future__ import annotations

import gc
import json
import os
import socket
import time

import pytest

import kqrs
from kqrs import _kqrs, kevent

READ = kqrs.KQ_FILTER_READ
WRITE = kqrs.KQ_FILTER_WRITE
USER = kqrs.KQ_FILTER_USER
TIMER = kqrs.KQ_FILTER_TIMER
PROC = kqrs.KQ_FILTER_PROC
ADD = kqrs.KQ_EV_ADD
DELETE = kqrs.KQ_EV_DELETE
CLEAR = kqrs.KQ_EV_CLEAR
ONESHOT = kqrs.KQ_EV_ONESHOT
TRIGGER = kqrs.KQ_NOTE_TRIGGER
NOTE_EXIT = kqrs.KQ_NOTE_EXIT
NOTE_FORK = kqrs.KQ_NOTE_FORK

LONG = os.environ.get("KQRS_LONG") == "1"
ADD_DELETE_CYCLES = 1_000_000 if LONG else 50_000
KQUEUE_CYCLES = 100_000 if LONG else 5_000
LONG_MS = 10**9

pytestmark = pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")


def rss_kb() -> int:
    with open("/proc/self/status") as f:
        return next(int(ln.split()[1]) for ln in f if ln.startswith("VmRSS:"))


def open_fds() -> set[int]:
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


class RssTrack:
    """RSS samples; the baseline is taken after a warm-up (allocators and caches at their working size)."""

    def __init__(self):
        self.samples: list[int] = []
        self.base: int | None = None

    def sample(self, warm: bool) -> None:
        gc.collect()
        r = rss_kb()
        self.samples.append(r)
        if warm and self.base is None:
            self.base = r

    @property
    def growth(self) -> int:
        return max(self.samples[-3:]) - (self.base or self.samples[0])


def test_add_delete_cycles_keep_rss_flat():
    """One kqueue, ADD_DELETE_CYCLES knotes added and deleted: USER (plain, and triggered and collected),
    TIMER (a timerfd each), READ on a pipe with data (reported, then deleted), WRITE on a socket, PROC
    NOTE_EXIT on this process (a pidfd each). RSS stays flat; the fds and kqrs's own fd count come back."""
    r, w = os.pipe()
    a, b = socket.socketpair()
    os.write(w, b"x")
    fds0 = open_fds()
    kq = kqrs.kqueue()
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
    rss = RssTrack()
    rss.sample(warm=False)
    t0 = time.monotonic()
    cycles = 0
    rounds = 0
    every = max(1, ADD_DELETE_CYCLES // (4 * batch + 35) // 25)  # about 25 RSS samples
    while cycles < ADD_DELETE_CYCLES:
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
        rounds += 1
        if rounds % every == 0:
            rss.sample(warm=cycles >= ADD_DELETE_CYCLES // 10)
    elapsed = time.monotonic() - t0
    rss.sample(warm=True)
    assert kq._stats()[0] == 0
    assert _kqrs._owned_fd_count() == owned0
    kq.close()
    fds1 = open_fds()
    report(
        "add_delete",
        cycles=cycles,
        seconds=round(elapsed, 1),
        rss_start_kb=rss.samples[0],
        rss_after_warmup_kb=rss.base,
        rss_end_kb=rss.samples[-1],
        rss_max_kb=max(rss.samples),
        growth_kb=rss.growth,
        fds_before=len(fds0),
        fds_after=len(fds1),
    )
    assert leaked(fds0, fds1) == {}
    assert rss.growth < (16 if LONG else 8) * 1024, rss.samples
    for fd in (r, w):
        os.close(fd)
    a.close()
    b.close()


def test_kqueue_create_close_cycles_keep_rss_and_fds_flat(tmp_path, has_connector):
    """KQUEUE_CYCLES kqueues, each with knotes of several kinds (USER triggered and collected, a TIMER, a
    READ on a pipe; every 10th also watches another kqueue or is found again with fromfd, every 100th a
    regular file through inotify, every 1000th opens the process connector), then closed, or dropped without close
    (half of them). The fd set and kqrs's own fd count end where they started; RSS stays flat."""
    r, w = os.pipe()
    os.write(w, b"x")
    f = open(tmp_path / "file", "wb+")
    f.write(b"abc")
    f.flush()
    f.seek(0)
    other = kqrs.kqueue()
    connector = has_connector  # without CAP_NET_ADMIN: no connector in the cycles
    gc.collect()
    fds0 = open_fds()
    owned0 = _kqrs._owned_fd_count()
    base_changes = [
        kevent(1, USER, ADD | CLEAR, TRIGGER, 0, 1),
        kevent(2, TIMER, ADD, 0, LONG_MS, 2),
        kevent(r, READ, ADD, 0, 0, 3),
    ]
    rss = RssTrack()
    rss.sample(warm=False)
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
            rss.sample(warm=i >= KQUEUE_CYCLES // 10)
    elapsed = time.monotonic() - t0
    rss.sample(warm=True)
    owned1 = _kqrs._owned_fd_count()
    fds1 = open_fds()
    report(
        "kqueue_create_close",
        cycles=KQUEUE_CYCLES,
        seconds=round(elapsed, 1),
        rss_start_kb=rss.samples[0],
        rss_after_warmup_kb=rss.base,
        rss_end_kb=rss.samples[-1],
        rss_max_kb=max(rss.samples),
        growth_kb=rss.growth,
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
    assert rss.growth < (16 if LONG else 8) * 1024, rss.samples
