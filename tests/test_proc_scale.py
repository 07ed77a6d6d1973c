"""EVFILT_PROC at scale: one kqueue watching 10,000 processes (or as many as the fd limit allows: one pidfd
per knote) reports every exit exactly once, with its status, and keeps no knote afterwards.

Children (forked by a small helper, then ours: see _FORKER) block on one pipe (every other fd closed) and
are released together by closing its write end; each _exits(0). Skipped when the machine cannot fork that many (RLIMIT_NPROC, pids, memory).
"""

from __future__ import annotations

import ctypes
import errno
import os
import resource
import signal
import subprocess
import sys
import time

import pytest

import kqrs

from kqhelpers import CLEAR, EOF, NOTE_EXIT, ONESHOT, PROC

EXIT_FLAGS = CLEAR | EOF | ONESHOT
WANT = 10000
HEADROOM = 300  # fds kept free for pytest, the kqueue's own fds and the pipe
MB_PER_CHILD = 1  # a blocked fork of the helper costs well under 0.35 MB; ask for 1 MB each to be safe

pytestmark = [
    pytest.mark.skipif(not kqrs._kqrs._filter_supported(PROC), reason="EVFILT_PROC is not built"),
    pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning"),
]


def _how_many() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    n = min(WANT, soft - len(os.listdir("/proc/self/fd")) - HEADROOM)
    nproc, _ = resource.getrlimit(resource.RLIMIT_NPROC)
    if nproc != resource.RLIM_INFINITY:
        n = min(n, nproc - 200 - len(os.listdir("/proc")))  # /proc's entries over-count: fine
    with open("/proc/sys/kernel/pid_max") as f:
        n = min(n, int(f.read()) // 2)
    with open("/proc/meminfo") as f:
        avail_mb = next(int(line.split()[1]) // 1024 for line in f if line.startswith("MemAvailable:"))
    return min(n, avail_mb // 4 // MB_PER_CHILD)  # use at most a quarter of the free memory


# The children are forked by a small helper interpreter (`python -S`, ~8 MB) and become ours when it exits
# (this process is made a child subreaper for the test): fork cost grows with the forking process's memory,
# and forking 10,000 from the pytest process took ~22 s instead of ~1.6 s.
_FORKER = r"""
import os, sys
r, n = int(sys.argv[1]), int(sys.argv[2])
pids, err = [], ""
try:
    for _ in range(n):
        pid = os.fork()
        if pid == 0:
            try:
                os.closerange(0, r)
                os.closerange(r + 1, 1 << 20)
                os.read(r, 1)
            finally:
                os._exit(0)
        pids.append(pid)
except OSError as e:
    err = f"{e.errno} {e}"
sys.stdout.write(" ".join(map(str, pids)) + "\n" + err)
"""
PR_SET_CHILD_SUBREAPER, PR_GET_CHILD_SUBREAPER = 36, 37


@pytest.fixture
def blocked_children():
    """fork(n): n children of ours blocked on one pipe; returns (pids, release). All are killed and reaped
    at the end, and the subreaper attribute is restored."""
    libc = ctypes.CDLL(None, use_errno=True)
    was = ctypes.c_int(0)
    libc.prctl(PR_GET_CHILD_SUBREAPER, ctypes.byref(was), 0, 0, 0)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        pytest.skip(f"prctl(PR_SET_CHILD_SUBREAPER) failed: errno {ctypes.get_errno()}")
    pids: list[int] = []
    pipe: list[int] = []

    def release():
        while pipe:
            os.close(pipe.pop())

    def fork(n):
        r, w = os.pipe()
        pipe.append(w)
        try:
            out = subprocess.run(
                [sys.executable, "-S", "-c", _FORKER, str(r), str(n)],
                pass_fds=(r,),
                capture_output=True,
                text=True,
                timeout=60,
            )
        finally:
            os.close(r)
        line, err = out.stdout.split("\n", 1) if "\n" in out.stdout else ("", out.stdout)
        pids.extend(int(p) for p in line.split())
        if len(pids) < n:
            if err.split(" ", 1)[0] in (str(errno.EAGAIN), str(errno.ENOMEM)):
                pytest.skip(f"cannot fork {n} children here: forked {len(pids)}, then {err}")
            raise AssertionError(f"forked {len(pids)} of {n}: {err or out.stderr[-500:]}")
        assert out.returncode == 0, out.stderr
        return list(pids), release

    try:
        yield fork
    finally:
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        release()
        for pid in pids:
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
        libc.prctl(PR_SET_CHILD_SUBREAPER, was.value, 0, 0, 0)


def test_watch_10000_processes_every_exit_once(blocked_children):
    n = _how_many()
    if n < 1000:
        pytest.skip(f"this machine can watch only {n} processes (fd limit, RLIMIT_NPROC or memory)")
    t0 = time.monotonic()
    pids, release = blocked_children(n)
    with kqrs.kqueue() as kq:
        assert (
            kq.control([kqrs.kevent(pid, PROC, kqrs.KQ_EV_ADD, NOTE_EXIT, 0, pid % 1000) for pid in pids], 0, 0) == []
        )
        assert kq._stats()[0] == n
        assert kq.control(None, 16, 0) == []  # all blocked: nothing yet
        release()
        seen: dict[int, int] = {}
        deadline = time.monotonic() + 15
        while len(seen) < n and time.monotonic() < deadline:
            for ev in kq.control(None, 4096, 1):
                assert (ev.filter, ev.flags, ev.fflags, ev.data, ev.udata) == (
                    PROC,
                    EXIT_FLAGS,
                    NOTE_EXIT,
                    0,
                    ev.ident % 1000,
                ), ev
                assert ev.ident not in seen, f"exit of {ev.ident} reported twice"
                seen[ev.ident] = ev.data
        assert len(seen) == n, f"{n - len(seen)} of {n} exits not reported"
        assert set(seen) == set(pids)
        # exactly once: nothing more comes, and no knote is left
        assert kq.control(None, 16, 0.1) == []
        assert kq._stats()[0] == 0
        # kqrs never reaps: every child is still ours to wait for, with the same status
        for pid in pids:
            assert os.waitpid(pid, 0) == (pid, 0)
    assert time.monotonic() - t0 < 60  # generous: ~5 s here
