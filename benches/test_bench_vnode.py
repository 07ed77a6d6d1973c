"""A write to a watched file, to the event in Python: EVFILT_VNODE vs inotify used directly vs watchfiles.

- one thread: `os.pwrite` (a same-size overwrite, so the file never grows) then wait for the event;
- across threads: a second thread blocked waiting for the event; latency = its wake-up time minus the time
  of the write (p50, p99), the sides taking turns in chunks of samples.

The sides:
- kqrs: an EVFILT_VNODE knote (NOTE_WRITE, EV_CLEAR) on an O_RDONLY fd; `control(None, 1, None)`.
- inotify: `inotify_init1` + `inotify_add_watch` (ctypes: the stdlib has no inotify) with the mask kqrs
  subscribes; the event is a blocking `os.read` of the inotify fd and the header unpacked.
- watchfiles: `watchfiles.watch(path, watch_filter=None, debounce=0, step=1, recursive=False)`, its fastest
  settings (its Rust loop sleeps `step` ms between looks at what notify's thread collected, and returns a
  change once a look finds nothing new: two steps at least). `rust_timeout` is short and
  `yield_on_timeout=True` so that the generator can be primed (its watch starts on the first `next()`);
  empty sets (timeouts) are skipped, not counted as events.
"""

from __future__ import annotations

import ctypes
import os
import struct

import pytest

import kqrs

from _util import Waiter, interleaved, percentile, record_all, scaled

watchfiles = pytest.importorskip("watchfiles")

VNODE = kqrs.KQ_FILTER_VNODE
IN_MODIFY, IN_ATTRIB, IN_MOVE_SELF, IN_DELETE_SELF = 0x2, 0x4, 0x800, 0x400
_libc = ctypes.CDLL(None, use_errno=True)


class Target:
    """A one-byte file, an fd to write it with, and one side's watcher on it (each side has a file of its
    own, so that no other watcher, such as watchfiles' notify thread, wakes up on its writes)."""

    def __init__(self, path, side):
        self.side = side
        self.path = str(path)
        with open(self.path, "wb") as f:
            f.write(b"x")
        self.wfd = os.open(self.path, os.O_WRONLY | os.O_CLOEXEC)
        self.fds = [self.wfd]
        if side == "kqrs":
            self.rfd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
            self.fds.append(self.rfd)
            self.kq = kqrs.kqueue()
            self.kq.control([kqrs.kevent(self.rfd, VNODE, kqrs.KQ_EV_ADD | kqrs.KQ_EV_CLEAR, kqrs.KQ_NOTE_WRITE)], 0)
            self.event = self.kqrs_event
        elif side == "inotify":
            self.ifd = _libc.inotify_init1(os.O_CLOEXEC)
            if self.ifd < 0:
                pytest.skip(f"inotify_init1: errno {ctypes.get_errno()}")
            self.fds.append(self.ifd)
            mask = IN_MODIFY | IN_ATTRIB | IN_MOVE_SELF | IN_DELETE_SELF
            if _libc.inotify_add_watch(self.ifd, self.path.encode(), mask) < 0:
                pytest.skip(f"inotify_add_watch: errno {ctypes.get_errno()}")
            self.event = self.inotify_event
        else:
            self.gen = watchfiles.watch(
                self.path,
                watch_filter=None,
                debounce=0,
                step=1,
                rust_timeout=50,
                yield_on_timeout=True,
                recursive=False,
                raise_interrupt=False,
            )
            assert next(self.gen) == set()  # primed: the watch is in place
            self.event = self.watchfiles_event
        self.check()

    def write(self) -> None:
        os.pwrite(self.wfd, b"x", 0)

    def kqrs_event(self):
        return self.kq.control(None, 1, None)

    def inotify_event(self):
        return struct.unpack_from("iIII", os.read(self.ifd, 4096))

    def watchfiles_event(self):
        while True:
            changes = next(self.gen)
            if changes:
                return changes

    def check(self) -> None:
        """One write is one event, and nothing is left over."""
        self.write()
        got = self.event()
        if self.side == "kqrs":
            [ev] = got
            assert (ev.ident, ev.filter, ev.flags, ev.fflags) == (self.rfd, VNODE, kqrs.KQ_EV_CLEAR, kqrs.KQ_NOTE_WRITE)
            assert self.kq.control(None, 1, 0) == []
        elif self.side == "inotify":
            assert got[1] == IN_MODIFY
        else:
            assert got == {(watchfiles.Change.modified, self.path)}

    def close(self) -> None:
        if self.side == "kqrs":
            self.kq.close()
        elif self.side == "watchfiles":
            self.gen.close()
        for fd in self.fds:
            os.close(fd)


SIDES = ("kqrs", "inotify", "watchfiles")


@pytest.fixture
def targets(tmp_path):
    made = {}
    try:
        for side in SIDES:
            made[side] = Target(tmp_path / side, side)
        yield made
        for t in made.values():
            t.check()
    finally:
        for t in made.values():
            t.close()


# ---- one thread: write, then the event -------------------------------------------------------------


@pytest.mark.parametrize("side", SIDES)
def test_vnode_write(benchmark, targets, side):
    t = targets[side]
    write, event = t.write, t.event

    def f():
        write()
        return event()

    benchmark.group = "vnode write -> event"
    benchmark.extra_info["key"] = f"vnode/{side}"
    benchmark(f)


def test_vnode_write_pair(targets, record):
    """kqrs and inotify interleaved (many rounds); watchfiles, ~100x slower, in its own interleaved run
    with kqrs (fewer rounds). The table's ratios come from here."""
    g = {"k": targets["kqrs"], "i": targets["inotify"], "w": targets["watchfiles"]}
    med = interleaved(
        {"kqrs": ("k.write(); k.event()", g), "inotify": ("i.write(); i.event()", g)},
        scaled(300, 3),
        scaled(100, 3),
    )
    wf = interleaved(
        {"kqrs": ("k.write(); k.event()", g), "watchfiles": ("w.write(); w.event()", g)},
        scaled(30, 2),
        scaled(5, 1),
    )
    record_all(record, "vnode", {**med, "watchfiles": wf["watchfiles"], "kqrs_beside_watchfiles": wf["kqrs"]})


# ---- across threads: wake-up latency ---------------------------------------------------------------


def test_vnode_wakeup_latency(benchmark, targets, record):
    """The main thread writes; a thread blocked waiting for that file's event wakes: p50/p99 of
    write -> woken. The sides take turns in chunks of samples (watchfiles, at ~2 ms a sample, for fewer)."""
    waiters = {side: Waiter(targets[side].event) for side in SIDES}
    for w in waiters.values():
        w.start()
    lat: dict[str, list[int]] = {s: [] for s in SIDES}
    chunk = scaled(50, 1)
    rounds = {"kqrs": scaled(40, 2), "inotify": scaled(40, 2), "watchfiles": scaled(8, 1)}

    def run():
        for r in range(max(rounds.values())):
            for side in SIDES:
                if r < rounds[side]:
                    w, fire = waiters[side], targets[side].write
                    for _ in range(chunk):
                        lat[side].append(w.sample(fire))

    try:
        benchmark.group = "vnode cross-thread wake-up"
        benchmark.extra_info["key"] = "vnode_xthread/run"
        benchmark.pedantic(run, rounds=1, iterations=1)
    finally:
        for side, w in waiters.items():
            w.finish(targets[side].write)
    assert not any(w.is_alive() for w in waiters.values())
    for side, xs in lat.items():
        assert len(xs) == rounds[side] * chunk and min(xs) > 0
        record(f"vnode_xthread/{side}.p50", percentile(xs, 50) / 1000, "us")
        record(f"vnode_xthread/{side}.p99", percentile(xs, 99) / 1000, "us")
