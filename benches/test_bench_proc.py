"""Process exits: EVFILT_PROC vs pidfd + epoll by hand vs asyncio subprocess wait.

Children (forked by a small helper, then ours: see _util.Blocked and conftest's `children`) close every
fd but a shared pipe's read end and block on it; closing the write end releases them all at once, and each
_exits(0). The pairs (interleaved rounds, medians, recorded through `record` under the keys
benches/report.py lists):

- proc/kqrs.1000 vs proc/pidfd.1000: 1,000 blocked children; timed from the first registration to the last
  exit seen, reaped and its status in hand: one kqueue with 1,000 NOTE_EXIT knotes (one changelist; the
  status is the event's `data`; `os.waitpid` reaps) vs `os.pidfd_open` + `select.epoll` by hand (the status
  and the reaping from `os.waitid(P_PIDFD)`, then unregister + close).
- proc/kqrs_spawn.1000 vs proc/asyncio.1000: spawn 1,000 `true` and wait for them all: `subprocess.Popen`
  (what asyncio uses inside) + NOTE_EXIT knotes vs `asyncio.create_subprocess_exec` + `wait()` (on Python
  3.11 asyncio's default child watcher is ThreadedChildWatcher: a thread per child; 3.12+ uses pidfds).
- proc/kqrs.per_exit.10000 vs proc/kqrs.per_exit.100: one more child's exit -> its event, in a kqueue that
  watches 10,000 (blocked) processes vs one that watches 100. Timed from closing the child's pipe to the
  event; the child is forked and its knote added before (untimed).
"""

from __future__ import annotations

import asyncio
import os
import select
import shutil
import subprocess

import pytest

import kqrs

from _util import Blocked, free_fds, interleaved_rounds, record_all, scaled

PROC = kqrs.KQ_FILTER_PROC
ADD = kqrs.KQ_EV_ADD
NOTE_EXIT = kqrs.KQ_NOTE_EXIT
EXIT_FLAGS = kqrs.KQ_EV_CLEAR | kqrs.KQ_EV_EOF | kqrs.KQ_EV_ONESHOT
TRUE = shutil.which("true") or "/bin/true"

pytestmark = [
    pytest.mark.skipif(not kqrs._kqrs._filter_supported(PROC), reason="EVFILT_PROC is not built"),
    pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning"),
    pytest.mark.usefixtures("subreaper"),
]


def _watch_kqrs(b: Blocked) -> list[int]:
    pids = b.pids
    n = len(pids)
    kq = kqrs.kqueue()
    kq.control([kqrs.kevent(pid, PROC, ADD, NOTE_EXIT) for pid in pids], 0, 0)
    b.release()
    statuses = []
    waitpid = os.waitpid
    while len(statuses) < n:
        evs = kq.control(None, n, 5)
        if not evs:
            raise TimeoutError(f"{n - len(statuses)} exits not seen in 5 s")
        for ev in evs:
            waitpid(ev.ident, 0)
            statuses.append(ev.data)
    kq.close()
    return statuses


def _watch_pidfd(b: Blocked) -> list[int]:
    pids = b.pids
    n = len(pids)
    ep = select.epoll()
    fds = []
    for pid in pids:
        fd = os.pidfd_open(pid)
        ep.register(fd, select.EPOLLIN)
        fds.append(fd)
    b.release()
    statuses = []
    waitid, P_PIDFD, WEXITED, close = os.waitid, os.P_PIDFD, os.WEXITED, os.close
    while len(statuses) < n:
        evs = ep.poll(5, n)
        if not evs:
            raise TimeoutError(f"{n - len(statuses)} exits not seen in 5 s")
        for fd, _ in evs:
            r = waitid(P_PIDFD, fd, WEXITED)
            statuses.append(r.si_status)
            ep.unregister(fd)
            close(fd)
    ep.close()
    return statuses


def test_proc_exits_pair(children, record):
    """1,000 exits: NOTE_EXIT knotes vs pidfd + epoll, interleaved rounds (fresh children each round)."""
    n, rounds = scaled(1000, 5), scaled(12, 1)
    got: dict[str, list[list[int]]] = {"kqrs": [], "pidfd": []}

    def side(name, fn):
        def run(b):
            got[name].append(fn(b))
            b.pids = []  # all reaped by fn

        return (lambda: children(n), run)

    med = interleaved_rounds({"kqrs": side("kqrs", _watch_kqrs), "pidfd": side("pidfd", _watch_pidfd)}, rounds)
    for name, runs in got.items():
        assert runs and all(s == [0] * n for s in runs), name
    record_all(record, "proc", {f"{k}.1000": v for k, v in med.items()})
    record("proc/n_exits", n, "children per round")


def _spawn_kqrs(n: int) -> list[int]:
    kq = kqrs.kqueue()
    procs = {}
    for _ in range(n):
        p = subprocess.Popen([TRUE])
        procs[p.pid] = p
    kq.control([kqrs.kevent(pid, PROC, ADD, NOTE_EXIT) for pid in procs], 0, 0)
    codes = []
    while procs:
        evs = kq.control(None, n, 5)
        if not evs:
            raise TimeoutError(f"{len(procs)} exits not seen in 5 s")
        for ev in evs:
            codes.append(procs.pop(ev.ident).wait())
    kq.close()
    return codes


def _spawn_asyncio(loop: asyncio.AbstractEventLoop, n: int) -> list[int]:
    async def main():
        procs = [await asyncio.create_subprocess_exec(TRUE) for _ in range(n)]
        return await asyncio.gather(*(p.wait() for p in procs))

    return loop.run_until_complete(main())


def test_proc_spawn_asyncio_pair(record):
    """Spawn N `true` and wait for every exit: Popen + NOTE_EXIT vs asyncio subprocesses."""
    n, rounds = scaled(1000, 5), scaled(6, 1)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    got: dict[str, list[list[int]]] = {"kqrs_spawn": [], "asyncio": []}
    try:
        med = interleaved_rounds(
            {
                "kqrs_spawn": (lambda: n, lambda k: got["kqrs_spawn"].append(_spawn_kqrs(k))),
                "asyncio": (lambda: n, lambda k: got["asyncio"].append(_spawn_asyncio(loop, k))),
            },
            rounds,
        )
    finally:
        loop.close()
        asyncio.set_event_loop(None)
    for name, runs in got.items():
        assert runs and all(s == [0] * n for s in runs), name
    record_all(record, "proc", {f"{k}.1000": v for k, v in med.items()})


def test_proc_per_exit_pair(children, record):
    """One exit -> its event with 10,000 vs 100 processes watched in the kqueue."""
    big_n, small_n = scaled(10000, 20), scaled(100, 10)
    big_n = min(big_n, free_fds() - small_n - 200)
    rounds = scaled(200, 2)
    watched = children(big_n)
    kq_big, kq_small = kqrs.kqueue(), kqrs.kqueue()
    try:
        kq_big.control([kqrs.kevent(pid, PROC, ADD, NOTE_EXIT) for pid in watched.pids], 0, 0)
        kq_small.control([kqrs.kevent(pid, PROC, ADD, NOTE_EXIT) for pid in watched.pids[:small_n]], 0, 0)
        assert (kq_big._stats()[0], kq_small._stats()[0]) == (big_n, small_n)

        def side(kq):
            def setup():
                b = children(1)
                kq.control([kqrs.kevent(b.pids[0], PROC, ADD, NOTE_EXIT)], 0, 0)
                return b

            def run(b):
                b.release()
                [ev] = kq.control(None, 1, 5)
                assert (ev.ident, ev.flags, ev.data) == (b.pids[0], EXIT_FLAGS, 0)
                # reaped by the fixture at the end (untimed)

            return setup, run

        med = interleaved_rounds({"big": side(kq_big), "small": side(kq_small)}, rounds, warmup=3)
        assert (kq_big._stats()[0], kq_small._stats()[0]) == (big_n, small_n)
        assert kq_big.control(None, 4, 0) == [] and kq_small.control(None, 4, 0) == []
    finally:
        kq_big.close()
        kq_small.close()
        watched.release()
    record("proc/kqrs.per_exit.10000", med["big"], f"s (interleaved median), {big_n} watched")
    record("proc/kqrs.per_exit.100", med["small"], f"s (interleaved median), {small_n} watched")
    record("proc/per_exit.watched", big_n, "processes watched on the big side")
