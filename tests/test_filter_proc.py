"""EVFILT_PROC and EVFILT_PROCDESC: every line of semantics.md's two process sections, and issue 3's list.

Reference: FreeBSD kern_event.c (filt_procattach, filt_proc, knote_fork) and sys_procdesc.c. A process knote
always has EV_CLEAR; its exit is reported once, with EV_EOF|EV_ONESHOT and data = the wait(2) status, and the
knote is gone afterwards (when no note the knote asked for fired, the exit is dropped: EV_DROP). NOTE_TRACK
attaches a knote to every child (same fflags, same udata) whose first event carries NOTE_CHILD with data =
the parent's pid; FreeBSD reports that notice as an event of its own, separate from the child's exit,
because both use `data`. kqrs adds (the [kqrs] lines): any visible process, not only children; it never
reaps; no signal handler, signal mask or thread; the kernel's process connector for fork/exec/track, and
nothing but the kernel may speak on it.

Processes are forks of this test process that block on a pipe until released (so the knote is in place
first), and exit with os._exit. A "non-child" is reparented to a subreaper of ours (not to init: this
machine's init reaps orphans only every ~2 s, and a non-child's status is known only once it is reaped).
"""

from __future__ import annotations

import ctypes
import errno
import faulthandler
import functools
import json
import os
import resource
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

import pytest

import kqrs
from kqrs import kevent

from kqhelpers import (
    ADD,
    CLEAR,
    DELETE,
    DISABLE,
    DISPATCH,
    ENABLE,
    EOF,
    ERROR,
    NOTE_CHILD,
    NOTE_EXEC,
    NOTE_EXIT,
    NOTE_EXITSTATUS,
    NOTE_FORK,
    NOTE_TRACK,
    NOTE_TRACKERR,
    ONESHOT,
    PROC,
    PROCDESC,
    apply,
    errno_of_add,
)

ALL_NOTES = NOTE_EXIT | NOTE_FORK | NOTE_EXEC | NOTE_TRACK
EXIT_FLAGS = CLEAR | EOF | ONESHOT

HAVE_PROC = kqrs._kqrs._filter_supported(PROC)
HAVE_PROCDESC = hasattr(kqrs, "KQ_FILTER_PROCDESC") and kqrs._kqrs._filter_supported(PROCDESC)

pytestmark = [
    pytest.mark.skipif(not HAVE_PROC, reason="EVFILT_PROC is not built yet"),
    pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning"),
]
needs_procdesc = pytest.mark.skipif(not HAVE_PROCDESC, reason="EVFILT_PROCDESC is not built yet")

NETLINK_CONNECTOR = 11
CN_IDX_PROC = CN_VAL_PROC = 1
PROC_CN_MCAST_LISTEN, PROC_CN_MCAST_IGNORE = 1, 2
PROC_EVENT_FORK, PROC_EVENT_EXEC, PROC_EVENT_EXIT = 0x1, 0x2, 0x80000000
PR_SET_CHILD_SUBREAPER = 36


# --- the kernel's process connector, seen without kqrs ---------------------------------------------------


def cn_message(payload: bytes, sender: int = 0, seq: int = 0) -> bytes:
    """nlmsghdr + cn_msg{id={CN_IDX_PROC, CN_VAL_PROC}} + payload."""
    cn = struct.pack("=IIIIHH", CN_IDX_PROC, CN_VAL_PROC, seq, 0, len(payload), 0) + payload
    return struct.pack("=IHHII", 16 + len(cn), 3, 0, seq, sender) + cn  # 3 = NLMSG_DONE


def proc_event(what: int, *fields: int) -> bytes:
    """struct proc_event: what, cpu, timestamp_ns, then the event_data union (24 bytes)."""
    return struct.pack("=IIQ", what, 0, 0) + struct.pack(f"={len(fields)}i", *fields).ljust(24, b"\0")


# skips only where the connector cannot work (no CAP_NET_ADMIN...), fails where it should: tests/conftest.py
needs_connector = pytest.mark.usefixtures("connector")


def connector_sockets() -> dict[int, dict]:
    """This process's NETLINK_CONNECTOR sockets, by inode: fd, port id, groups, bytes queued, drops."""
    inodes = {}
    for fd in os.listdir("/proc/self/fd"):
        try:
            link = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes[int(link[8:-1])] = int(fd)
    out = {}
    with open("/proc/net/netlink") as f:
        next(f)
        for line in f:
            p = line.split()
            if int(p[1]) == NETLINK_CONNECTOR and int(p[9]) in inodes:
                out[int(p[9])] = {
                    "fd": inodes[int(p[9])],
                    "portid": int(p[2]),
                    "groups": int(p[3], 16),
                    "rmem": int(p[4]),
                    "drops": int(p[8]),
                }
    return out


# --- processes ---------------------------------------------------------------------------------------------


class Child:
    """A fork of this process that waits on a pipe before running its body (unless not blocked)."""

    def __init__(self, pid: int, go: int):
        self.pid = pid
        self._go = go

    def release(self) -> None:
        os.write(self._go, b"x")

    def reap(self) -> int:
        return os.waitpid(self.pid, 0)[1]

    def cleanup(self) -> None:
        try:
            os.close(self._go)
        except OSError:
            pass
        try:
            done, _ = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:
            return  # reaped by the test
        if done == 0:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)


def _run_child(go_r: int, go_w: int, body, blocked: bool) -> None:
    code = 98
    try:
        os.close(go_w)
        if blocked and os.read(go_r, 1) == b"":
            os._exit(97)  # the test went away
        r = body() if body is not None else 0
        code = 0 if r is None else r
    except BaseException:
        code = 99
    finally:
        os._exit(code)


@pytest.fixture
def spawn():
    made: list[Child] = []

    def _spawn(body=None, blocked: bool = True) -> Child:
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            _run_child(r, w, body, blocked)
        os.close(r)
        c = Child(pid, w)
        made.append(c)
        return c

    yield _spawn
    for c in made:
        c.cleanup()


@pytest.fixture
def pipes():
    """pipes() -> (r, w); every end is closed after the test."""
    fds: list[int] = []

    def _pipe():
        r, w = os.pipe()
        fds.extend((r, w))
        return r, w

    yield _pipe
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


def ppid_of(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


def state_of(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):  # ESRCH: it went while we read
        return "gone"


class Orphan:
    """A process that is not ours: R (our child, a subreaper) forks M, M forks G and exits, and G is
    reparented to R. G runs `body` once released; R reaps it at once, or when let_reap() says so."""

    def __init__(self, spawn, pipes, body, gated: bool):
        go_r, self._go = pipes()
        info_r, info_w = pipes()
        gate_r, self._gate = pipes()

        def reaper():
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
            m = os.fork()
            if m == 0:
                g = os.fork()
                if g == 0:
                    _run_child(go_r, self._go, body, True)
                os.write(info_w, struct.pack("i", g))
                os._exit(0)
            os.waitpid(m, 0)
            if gated:
                os.read(gate_r, 1)
            while True:
                try:
                    os.waitpid(-1, 0)
                except ChildProcessError:
                    return 0

        self.reaper = spawn(reaper, blocked=False)
        (self.pid,) = struct.unpack("i", os.read(info_r, 4))
        deadline = time.monotonic() + 2
        while ppid_of(self.pid) != self.reaper.pid:  # M has not exited yet
            assert time.monotonic() < deadline, "the orphan was never reparented"
            time.sleep(0.001)

    def release(self) -> None:
        os.write(self._go, b"x")

    def let_reap(self) -> None:
        os.write(self._gate, b"x")

    def cleanup(self) -> None:
        try:
            if state_of(self.pid) not in ("gone", "Z") and ppid_of(self.pid) == self.reaper.pid:
                os.kill(self.pid, signal.SIGKILL)
        except (OSError, ValueError):
            pass
        try:
            self.let_reap()
        except OSError:
            pass


@pytest.fixture
def orphan(spawn, pipes):
    made: list[Orphan] = []

    def _orphan(body=None, gated: bool = False) -> Orphan:
        o = Orphan(spawn, pipes, body, gated)
        made.append(o)
        return o

    yield _orphan
    for o in made:
        o.cleanup()


def wait_exited(pid: int) -> None:
    """Block until our child `pid` has exited, without reaping it."""
    os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)


def read_line(fd: int, timeout: float = 2.0) -> bytes:
    r, _, _ = select.select([fd], [], [], timeout)
    assert r, "the process never said it was ready"
    return os.read(fd, 64)


# --- kqueue helpers ---------------------------------------------------------------------------------------


def proc(ident, fflags=NOTE_EXIT, flags=ADD, udata=0, data=0):
    return kevent(ident, PROC, flags, fflags, data, udata)


def procdesc(fd, fflags=NOTE_EXIT, flags=ADD, udata=0):
    return kevent(fd, PROCDESC, flags, fflags, 0, udata)


def knotes(kq) -> int:
    return kq._stats()[0]


def one_event(kq, timeout=2.0):
    evs = kq.control(None, 8, timeout)
    assert len(evs) == 1, f"expected one event within {timeout} s, got {evs}"
    return evs[0]


def quiet(kq, timeout=0.2):
    """control() returns no event, not before the timeout, and without spinning meanwhile."""
    t0, c0 = time.monotonic(), time.thread_time()
    got = kq.control(None, 8, timeout)
    wall, cpu = time.monotonic() - t0, time.thread_time() - c0
    assert got == [], got
    assert wall >= timeout - 0.001, f"returned [] after {wall:.3f} s, before the {timeout} s timeout"
    assert cpu < 0.5 * wall + 0.02, f"{cpu:.3f} s of CPU in a {wall:.3f} s wait: spinning"


def collect(kq, done, timeout=5.0, n=256):
    """Events until done(events) or the timeout."""
    evs: list = []
    deadline = time.monotonic() + timeout
    while not done(evs):
        left = deadline - time.monotonic()
        if left <= 0:
            break
        evs.extend(kq.control(None, n, min(left, 0.5)))
    return evs


def assert_exit(ev, pid, status, udata=0, fflags=NOTE_EXIT, extra_flags=0):
    assert (ev.ident, ev.filter, ev.udata) == (pid, PROC, udata), ev
    assert ev.flags == EXIT_FLAGS | extra_flags, hex(ev.flags)
    assert ev.fflags == fflags, hex(ev.fflags)
    assert ev.data == status, (hex(ev.data), hex(status))


def exits_with(code):
    return lambda: code


def kills_itself(sig, core=False):
    def body():
        faulthandler.disable()  # pytest's faulthandler would catch SIGSEGV/SIGABRT first
        signal.signal(sig, signal.SIG_DFL)
        if not core:
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        os.kill(os.getpid(), sig)
        time.sleep(5)
        return 90

    return body


# --- constants and validation -----------------------------------------------------------------------------


def test_constants_have_libkqueue_values_and_kqrs_procdesc():
    assert (PROC, kqrs.KQ_FILTER_PROCDESC) == (-5, -13)
    assert (NOTE_EXIT, NOTE_FORK, NOTE_EXEC) == (0x80000000, 0x40000000, 0x20000000)
    assert (NOTE_TRACK, NOTE_TRACKERR, NOTE_CHILD) == (1, 2, 4)
    assert kqrs.KQ_NOTE_EXITSTATUS == 0x04000000
    assert (kqrs.KQ_NOTE_PCTRLMASK, kqrs.KQ_NOTE_PDATAMASK) == (0xF0000000, 0x000FFFFF)


@pytest.mark.parametrize("fflags", [NOTE_CHILD, NOTE_TRACKERR, 0x10, 0x08000000, NOTE_EXIT | 0x100])
def test_unknown_or_output_only_fflags_are_einval(kq, spawn, fflags):
    c = spawn()
    assert errno_of_add(kq, proc(c.pid, fflags)) == errno.EINVAL
    assert knotes(kq) == 0


def test_nonexistent_pid_is_esrch(kq, spawn):
    c = spawn(blocked=False)
    c.reap()  # the pid is free now
    assert errno_of_add(kq, proc(c.pid)) == errno.ESRCH
    with pytest.raises(ProcessLookupError):
        kq.control([proc(c.pid)], 0)
    with open("/proc/sys/kernel/pid_max") as f:
        beyond = int(f.read()) + 1
    assert errno_of_add(kq, proc(beyond)) == errno.ESRCH
    assert knotes(kq) == 0


def test_thread_id_is_not_a_process_id(kq):
    """A thread's id is no process id (FreeBSD: ESRCH; Linux's pidfd_open says EINVAL or, on 6.18, ENOENT)."""
    tid = []
    go = threading.Event()
    t = threading.Thread(target=lambda: (tid.append(threading.get_native_id()), go.wait(5)))
    t.start()
    try:
        while not tid:
            time.sleep(0.001)
        assert errno_of_add(kq, proc(tid[0])) == errno.ESRCH
    finally:
        go.set()
        t.join()


# --- NOTE_EXIT: statuses, EV_EOF, no reaping --------------------------------------------------------------


@pytest.mark.parametrize("code", [0, 3, 255])
def test_exit_code_is_the_wait_status_and_the_child_is_not_reaped(kq, spawn, code):
    c = spawn(exits_with(code))
    apply(kq, proc(c.pid, udata=17))
    assert knotes(kq) == 1
    quiet(kq, 0.05)
    c.release()
    assert_exit(one_event(kq), c.pid, code << 8, udata=17)
    # kqrs never reaps: the child is a zombie until its parent waits, and the parent gets the same status
    assert state_of(c.pid) == "Z"
    assert os.waitpid(c.pid, os.WNOHANG) == (c.pid, code << 8)
    # the knote is gone (EV_ONESHOT)
    assert knotes(kq) == 0
    assert errno_of_add(kq, proc(c.pid, flags=DELETE, fflags=0)) == errno.ENOENT
    quiet(kq, 0.05)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_death_by_signal_is_the_signal_number(kq, spawn, sig):
    c = spawn()  # never released: killed while blocked
    apply(kq, proc(c.pid))
    os.kill(c.pid, sig)
    assert_exit(one_event(kq), c.pid, int(sig))
    assert c.reap() == int(sig)


@pytest.mark.parametrize("sig", [signal.SIGABRT, signal.SIGSEGV])
def test_core_signal_without_core_dump(kq, spawn, sig):
    c = spawn(kills_itself(sig))
    apply(kq, proc(c.pid))
    c.release()
    ev = one_event(kq)
    status = c.reap()
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == sig
    assert_exit(ev, c.pid, status)  # with or without the 0x80 core flag, as the kernel says


def test_core_dump_sets_the_core_flag(kq, spawn, tmp_path):
    """A small program (sh) dumps core into tmp_path: data = signal | 0x80, the same as waitpid's."""

    def body():
        os.chdir(tmp_path)
        resource.setrlimit(resource.RLIMIT_CORE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        os.execv("/bin/sh", ["sh", "-c", "kill -SEGV $$"])

    c = spawn(body)
    apply(kq, proc(c.pid))
    c.release()
    ev = one_event(kq)
    status = c.reap()
    assert os.WTERMSIG(status) == signal.SIGSEGV
    assert_exit(ev, c.pid, status)
    if os.listdir(tmp_path):  # core_pattern wrote a file here: the kernel did dump core
        assert os.WCOREDUMP(status) and ev.data & 0x80


def test_note_exitstatus_is_accepted_and_the_status_reported(kq, spawn):
    c = spawn(exits_with(9))
    apply(kq, proc(c.pid, NOTE_EXIT | NOTE_EXITSTATUS))
    c.release()
    ev = one_event(kq)
    assert (ev.ident, ev.flags, ev.data) == (c.pid, EXIT_FLAGS, 9 << 8)
    assert ev.fflags & NOTE_EXIT and not ev.fflags & ~(NOTE_EXIT | NOTE_EXITSTATUS)


def test_zombie_added_after_its_exit_fires_at_once(kq, spawn):
    c = spawn(exits_with(5), blocked=False)
    wait_exited(c.pid)
    assert state_of(c.pid) == "Z"
    apply(kq, proc(c.pid, udata=3))
    assert_exit(one_event(kq, timeout=0), c.pid, 5 << 8, udata=3)
    assert c.reap() == 5 << 8


def test_zombie_added_in_the_collecting_call(kq, spawn):
    c = spawn(exits_with(6), blocked=False)
    wait_exited(c.pid)
    evs = kq.control([proc(c.pid)], 4, 0)
    assert len(evs) == 1
    assert_exit(evs[0], c.pid, 6 << 8)


def test_child_reaped_before_collection_still_reports_its_status(kq, spawn):
    c = spawn(exits_with(4))
    apply(kq, proc(c.pid))
    c.release()
    assert c.reap() == 4 << 8  # the application reaps first
    assert_exit(one_event(kq), c.pid, 4 << 8)
    assert knotes(kq) == 0
    quiet(kq, 0.2)  # nothing left, and no spinning


def test_child_killed_and_reaped_before_collection(kq, spawn):
    c = spawn()
    apply(kq, proc(c.pid))
    os.kill(c.pid, signal.SIGKILL)
    assert c.reap() == signal.SIGKILL
    assert_exit(one_event(kq), c.pid, signal.SIGKILL)


def test_waiting_on_a_live_child_does_not_spin(kq, spawn, has_connector):
    c = spawn()
    apply(kq, proc(c.pid, ALL_NOTES if has_connector else NOTE_EXIT))
    quiet(kq, 0.3)
    os.kill(c.pid, signal.SIGKILL)
    assert one_event(kq).data == signal.SIGKILL


@needs_connector
def test_exit_without_note_exit_is_dropped(kq, spawn):
    """FreeBSD filt_proc: at exit a knote with no fired note gets EV_DROP: no event, and it is gone."""
    c = spawn(exits_with(2))
    apply(kq, proc(c.pid, NOTE_EXEC))
    c.release()
    wait_exited(c.pid)
    time.sleep(0.05)
    quiet(kq, 0.2)
    assert knotes(kq) == 0


def test_disabled_knote_reports_the_exit_once_enabled(kq, spawn):
    c = spawn(exits_with(12))
    # FreeBSD replaces udata, fflags and data with every change to an existing knote, EV_DISABLE and
    # EV_ENABLE included: a portable program repeats them
    apply(kq, proc(c.pid, udata=5))
    apply(kq, proc(c.pid, flags=DISABLE, udata=5))
    c.release()
    wait_exited(c.pid)
    quiet(kq, 0.1)
    apply(kq, proc(c.pid, flags=ENABLE, udata=5))
    assert_exit(one_event(kq), c.pid, 12 << 8, udata=5)


def test_add_disabled_then_enable(kq, spawn):
    c = spawn(exits_with(1))
    apply(kq, proc(c.pid, flags=ADD | DISABLE))
    c.release()
    wait_exited(c.pid)
    quiet(kq, 0.1)
    apply(kq, proc(c.pid, flags=ENABLE))
    assert_exit(one_event(kq), c.pid, 1 << 8)


def test_deleted_knote_reports_nothing(kq, spawn):
    c = spawn(exits_with(1))
    apply(kq, proc(c.pid))
    apply(kq, proc(c.pid, flags=DELETE, fflags=0))
    assert knotes(kq) == 0
    c.release()
    wait_exited(c.pid)
    quiet(kq, 0.1)
    assert errno_of_add(kq, proc(c.pid, flags=DELETE, fflags=0)) == errno.ENOENT


def test_re_add_modifies_the_knote(kq, spawn):
    c = spawn(exits_with(8))
    apply(kq, proc(c.pid, udata=1))
    apply(kq, proc(c.pid, NOTE_EXIT | NOTE_EXITSTATUS, udata=2))
    assert knotes(kq) == 1
    c.release()
    ev = one_event(kq)
    assert (ev.ident, ev.udata, ev.data) == (c.pid, 2, 8 << 8)
    quiet(kq, 0.05)


def test_two_kqueues_both_see_the_exit(kq, spawn):
    c = spawn(exits_with(7))
    with kqrs.kqueue() as kq2:
        apply(kq, proc(c.pid, udata=1))
        apply(kq2, proc(c.pid, udata=2))
        c.release()
        assert_exit(one_event(kq), c.pid, 7 << 8, udata=1)
        assert_exit(one_event(kq2), c.pid, 7 << 8, udata=2)


def test_many_children_each_report_their_own_status(kq, spawn):
    kids = [spawn(exits_with(i + 1)) for i in range(20)]
    apply(kq, *[proc(c.pid, udata=i) for i, c in enumerate(kids)])
    for c in kids:
        c.release()
    evs = collect(kq, lambda e: len(e) >= len(kids))
    assert len(evs) == len(kids)
    got = {e.ident: (e.udata, e.data) for e in evs}
    assert got == {c.pid: (i, (i + 1) << 8) for i, c in enumerate(kids)}
    assert knotes(kq) == 0


# --- non-children -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["exit", "SIGKILL"])
def test_non_child_exit_reports_its_status(kq, orphan, how):
    o = orphan(exits_with(7))
    with pytest.raises(ChildProcessError):
        os.waitpid(o.pid, os.WNOHANG)  # not ours: reparented to the subreaper
    assert ppid_of(o.pid) == o.reaper.pid
    apply(kq, proc(o.pid, udata=11))
    quiet(kq, 0.1)  # libkqueue spins here at 100% CPU
    if how == "exit":
        o.release()
        status = 7 << 8
    else:
        os.kill(o.pid, signal.SIGKILL)
        status = signal.SIGKILL
    assert_exit(one_event(kq), o.pid, status, udata=11)


def test_non_child_zombie_before_its_parent_reaps_it(kq, orphan):
    """G exited but its parent has not reaped it yet: the status still arrives, and nothing spins."""
    o = orphan(exits_with(9), gated=True)
    apply(kq, proc(o.pid))
    o.release()
    deadline = time.monotonic() + 2
    while state_of(o.pid) != "Z":
        assert time.monotonic() < deadline
        time.sleep(0.001)
    t0, c0 = time.monotonic(), time.thread_time()
    evs = kq.control(None, 4, 0.2)
    cpu = time.thread_time() - c0
    assert cpu < 0.5 * (time.monotonic() - t0) + 0.02, "spinning on a zombie"
    if not evs:
        o.let_reap()
        evs = [one_event(kq)]
    assert_exit(evs[0], o.pid, 9 << 8)


def test_non_child_zombie_added_before_it_is_reaped(kq, orphan):
    o = orphan(exits_with(13), gated=True)
    o.release()
    deadline = time.monotonic() + 2
    while state_of(o.pid) != "Z":
        assert time.monotonic() < deadline
        time.sleep(0.001)
    apply(kq, proc(o.pid))
    evs = kq.control(None, 4, 0.1)
    if not evs:
        o.let_reap()
        evs = [one_event(kq)]
    assert_exit(evs[0], o.pid, 13 << 8)


def test_non_child_reaped_before_collection(kq, orphan):
    o = orphan(exits_with(21))
    apply(kq, proc(o.pid))
    o.release()
    deadline = time.monotonic() + 2
    while state_of(o.pid) != "gone":  # the subreaper reaps it
        assert time.monotonic() < deadline
        time.sleep(0.001)
    assert_exit(one_event(kq), o.pid, 21 << 8)


def test_non_child_started_with_setsid(kq, orphan):
    def body():
        os.setsid()
        return 33

    o = orphan(body)
    apply(kq, proc(o.pid))
    o.release()
    assert_exit(one_event(kq), o.pid, 33 << 8)


# --- NOTE_FORK, NOTE_EXEC (the process connector) ---------------------------------------------------------


@needs_connector
def test_note_fork(kq, spawn, pipes):
    ready_r, ready_w = pipes()
    go_r, go_w = pipes()

    def body():
        for _ in range(2):  # two forks before the report: one event
            g = os.fork()
            if g == 0:
                os._exit(0)
            os.waitpid(g, 0)
        os.write(ready_w, b"r")
        os.read(go_r, 1)
        g = os.fork()
        if g == 0:
            os._exit(0)
        os.waitpid(g, 0)
        os.read(go_r, 1)
        return 0

    c = spawn(body)
    apply(kq, proc(c.pid, NOTE_FORK | NOTE_EXIT, udata=4))
    c.release()
    read_line(ready_r)
    ev = one_event(kq)
    assert (ev.ident, ev.filter, ev.flags, ev.fflags, ev.data, ev.udata) == (c.pid, PROC, CLEAR, NOTE_FORK, 0, 4)
    quiet(kq, 0.05)  # EV_CLEAR: reported once
    os.write(go_w, b"x")  # one more fork
    ev = one_event(kq)
    assert (ev.ident, ev.flags, ev.fflags, ev.data) == (c.pid, CLEAR, NOTE_FORK, 0)
    os.write(go_w, b"x")
    assert_exit(one_event(kq), c.pid, 0, udata=4)
    assert knotes(kq) == 0  # NOTE_FORK without NOTE_TRACK attached nothing to the children


@needs_connector
def test_note_fork_of_this_very_process(kq, spawn):
    apply(kq, proc(os.getpid(), NOTE_FORK, udata=6))
    spawn(blocked=False)
    ev = one_event(kq)
    assert (ev.ident, ev.flags, ev.fflags, ev.data, ev.udata) == (os.getpid(), CLEAR, NOTE_FORK, 0, 6)
    apply(kq, proc(os.getpid(), flags=DELETE))


@needs_connector
@pytest.mark.parametrize("extra", [ONESHOT, DISPATCH])
def test_note_fork_with_oneshot_or_dispatch(kq, spawn, pipes, extra):
    go_r, go_w = pipes()
    ready_r, ready_w = pipes()

    def body():
        for _ in range(2):
            os.read(go_r, 1)
            g = os.fork()
            if g == 0:
                os._exit(0)
            os.waitpid(g, 0)
            os.write(ready_w, b"r")
        os.read(go_r, 1)
        return 0

    c = spawn(body)
    apply(kq, proc(c.pid, NOTE_FORK | NOTE_EXIT, flags=ADD | extra))
    c.release()
    os.write(go_w, b"x")
    read_line(ready_r)
    ev = one_event(kq)
    assert (ev.ident, ev.flags, ev.fflags) == (c.pid, CLEAR | extra, NOTE_FORK)
    os.write(go_w, b"x")  # a second fork: not reported (deleted, or disabled)
    read_line(ready_r)
    quiet(kq, 0.1)
    assert knotes(kq) == (0 if extra == ONESHOT else 1)
    if extra == DISPATCH:
        apply(kq, proc(c.pid, NOTE_FORK | NOTE_EXIT, flags=ENABLE))
        ev = one_event(kq)  # the fork that came while it was disabled
        assert (ev.flags, ev.fflags) == (CLEAR | DISPATCH, NOTE_FORK)
        os.write(go_w, b"x")  # the child exits while the knote is disabled again
        wait_exited(c.pid)
        quiet(kq, 0.1)
        apply(kq, proc(c.pid, NOTE_FORK | NOTE_EXIT, flags=ENABLE))
        assert_exit(one_event(kq), c.pid, 0, extra_flags=DISPATCH)
    else:
        os.write(go_w, b"x")


@needs_connector
def test_note_exec(kq, spawn, pipes):
    in_r, in_w = pipes()

    def body():
        os.dup2(in_r, 0)
        os.execv("/bin/sh", ["sh", "-c", "read x; exit 4"])

    c = spawn(body)
    apply(kq, proc(c.pid, NOTE_EXEC | NOTE_EXIT, udata=9))
    c.release()
    ev = one_event(kq)
    assert (ev.ident, ev.filter, ev.flags, ev.fflags, ev.data, ev.udata) == (c.pid, PROC, CLEAR, NOTE_EXEC, 0, 9)
    quiet(kq, 0.05)
    os.write(in_w, b"\n")
    assert_exit(one_event(kq), c.pid, 4 << 8, udata=9)


@needs_connector
def test_fork_and_exec_before_the_report_coalesce(kq, spawn, pipes):
    out_r, out_w = pipes()
    in_r, in_w = pipes()

    def body():
        g = os.fork()
        if g == 0:
            os._exit(0)
        os.waitpid(g, 0)
        os.dup2(in_r, 0)
        os.dup2(out_w, 1)
        os.execv("/bin/sh", ["sh", "-c", "echo ready; read x; exit 2"])

    c = spawn(body)
    apply(kq, proc(c.pid, NOTE_FORK | NOTE_EXEC | NOTE_EXIT))
    c.release()
    assert read_line(out_r) == b"ready\n"  # both notes were sent by now
    ev = one_event(kq)
    assert (ev.ident, ev.flags, ev.fflags, ev.data) == (c.pid, CLEAR, NOTE_FORK | NOTE_EXEC, 0)
    os.write(in_w, b"\n")
    assert_exit(one_event(kq), c.pid, 2 << 8)


@needs_connector
def test_exec_and_exit_before_the_report_coalesce(kq, spawn):
    c = spawn(lambda: os.execv("/bin/sh", ["sh", "-c", "exit 6"]))
    apply(kq, proc(c.pid, NOTE_EXEC | NOTE_EXIT))
    c.release()
    wait_exited(c.pid)
    time.sleep(0.05)  # let the connector's message land too
    evs = kq.control(None, 8, 1)
    assert len(evs) == 1, evs
    assert_exit(evs[0], c.pid, 6 << 8, fflags=NOTE_EXEC | NOTE_EXIT)


@needs_connector
def test_a_new_thread_is_not_a_fork(kq, spawn, pipes):
    ready_r, ready_w = pipes()
    go_r, _go_w = pipes()

    def body():
        t = threading.Thread(target=lambda: None)
        t.start()
        t.join()
        os.write(ready_w, b"r")
        os.read(go_r, 1)
        return 0

    c = spawn(body)
    apply(kq, proc(c.pid, ALL_NOTES))
    c.release()
    read_line(ready_r)
    quiet(kq, 0.2)  # no NOTE_FORK, no tracked "child", and the thread's exit is not the process's
    assert knotes(kq) == 1
    os.kill(c.pid, signal.SIGKILL)
    assert_exit(one_event(kq), c.pid, signal.SIGKILL)


# --- NOTE_TRACK -------------------------------------------------------------------------------------------


def assert_no_trackerr(evs):
    """kqrs forces an 8 MiB receive buffer on its connector socket (these tests have CAP_NET_ADMIN): no tree
    in these tests comes near filling it, so a NOTE_TRACKERR here is a bug, whatever else runs on the
    machine. The tests that provoke one on purpose are further down (test_trackerr_*)."""
    bad = [e for e in evs if e.fflags & NOTE_TRACKERR]
    assert not bad, f"NOTE_TRACKERR that no overflow provoked by the test explains: {bad}; {connector_sockets()}"


def _by_pid(evs):
    out: dict[int, list] = {}
    for e in evs:
        out.setdefault(e.ident, []).append(e)
    return out


@needs_connector
def test_track_gives_each_child_its_own_knote(kq, spawn, pipes):
    info_r, info_w = pipes()
    g_go_r, g_go_w = pipes()

    def body():
        g = os.fork()
        if g == 0:
            os.read(g_go_r, 1)
            os._exit(5)
        os.write(info_w, struct.pack("i", g))
        os.waitpid(g, 0)
        return 1

    c = spawn(body)
    apply(kq, proc(c.pid, NOTE_TRACK | NOTE_FORK | NOTE_EXIT, udata=42))
    c.release()
    (g,) = struct.unpack("i", os.read(info_r, 4))
    evs = collect(kq, lambda e: {x.ident for x in e} >= {c.pid, g}, timeout=2)
    assert_no_trackerr(evs)
    by = _by_pid(evs)
    parent_ff = functools.reduce(lambda a, e: a | e.fflags, by.get(c.pid, []), 0)
    assert parent_ff == NOTE_FORK, by
    first = by[g][0]
    assert (first.filter, first.udata, first.data) == (PROC, 42, c.pid), first
    assert first.fflags & NOTE_CHILD and not first.fflags & (NOTE_EXIT | NOTE_TRACKERR), first
    assert first.flags & CLEAR and not first.flags & (EOF | ERROR), first
    assert knotes(kq) == 2
    os.write(g_go_w, b"x")
    evs = collect(kq, lambda e: len([x for x in e if x.fflags & NOTE_EXIT]) >= 2, timeout=2)
    assert_no_trackerr(evs)
    exits = {e.ident: e for e in evs if e.fflags & NOTE_EXIT}
    assert_exit(exits[g], g, 5 << 8, udata=42)
    assert_exit(exits[c.pid], c.pid, 1 << 8, udata=42)
    assert knotes(kq) == 0


@needs_connector
def test_track_a_three_level_tree(kq, spawn, pipes):
    go_r, go_w = pipes()

    def a_body():
        b = os.fork()
        if b == 0:
            c = os.fork()
            if c == 0:
                os.read(go_r, 1)
                os._exit(3)
            os.waitpid(c, 0)
            os._exit(2)
        os.waitpid(b, 0)
        return 1

    a = spawn(a_body)
    apply(kq, proc(a.pid, NOTE_TRACK | NOTE_FORK | NOTE_EXIT, udata=7))
    a.release()

    def children(evs):
        return {e.ident: e.data for e in evs if e.fflags & NOTE_CHILD}

    evs = collect(kq, lambda e: len(children(e)) >= 2, timeout=2)
    assert_no_trackerr(evs)
    parents = children(evs)
    assert len(parents) == 2, evs
    (b,) = [p for p, pp in parents.items() if pp == a.pid]
    (c,) = [p for p, pp in parents.items() if pp == b]
    by = _by_pid(evs)
    assert by[b][0].fflags & NOTE_CHILD and by[c][0].fflags & NOTE_CHILD  # each one's first event
    assert all(e.udata == 7 for e in evs)
    os.write(go_w, b"x")
    evs += collect(kq, lambda e: len([x for x in e if x.fflags & NOTE_EXIT]) >= 3, timeout=2)
    assert_no_trackerr(evs)
    by = _by_pid(evs)
    ff = {p: functools.reduce(lambda x, e: x | e.fflags, es, 0) for p, es in by.items()}
    assert ff == {a.pid: NOTE_FORK | NOTE_EXIT, b: NOTE_CHILD | NOTE_FORK | NOTE_EXIT, c: NOTE_CHILD | NOTE_EXIT}
    status = {p: es[-1].data for p, es in by.items()}
    assert status == {a.pid: 1 << 8, b: 2 << 8, c: 3 << 8}
    for es in by.values():
        assert es[-1].flags == EXIT_FLAGS and all(e.udata == 7 for e in es)
    assert knotes(kq) == 0


@needs_connector
def test_track_child_that_exits_before_collection_keeps_its_parent_pid(kq, spawn, pipes):
    """FreeBSD reports the NOTE_CHILD notice (data = parent pid) apart from the exit (data = status)."""
    ready_r, ready_w = pipes()

    def body():
        g = os.fork()
        if g == 0:
            os._exit(6)
        os.waitpid(g, 0)  # reaped before the kqueue looks
        os.write(ready_w, struct.pack("i", g))
        time.sleep(5)

    c = spawn(body)
    apply(kq, proc(c.pid, NOTE_TRACK | NOTE_FORK | NOTE_EXIT))
    c.release()
    (g,) = struct.unpack("i", os.read(ready_r, 4))
    evs = collect(
        kq,
        lambda e: any(x.ident == g and x.fflags & NOTE_EXIT for x in e) or any(x.fflags & NOTE_TRACKERR for x in e),
        timeout=2,
    )
    assert_no_trackerr(evs)
    by = _by_pid(evs)
    assert g in by, evs
    child_notice = [e for e in by[g] if e.fflags & NOTE_CHILD]
    exit_ev = [e for e in by[g] if e.fflags & NOTE_EXIT]
    assert child_notice and child_notice[0].data == c.pid, by[g]
    assert exit_ev and exit_ev[0].data == 6 << 8, by[g]


@needs_connector
def test_track_child_reaped_before_attach_is_reported(kq, spawn, pipes):
    """A child born and reaped before the kqueue reads the connector has no pidfd to open: its knote is still
    attached, says NOTE_CHILD, and reports the exit status the connector's exit message carried."""
    ready_r, ready_w = pipes()

    def body():
        g = os.fork()
        if g == 0:
            os._exit(4)
        os.waitpid(g, 0)
        os.write(ready_w, struct.pack("i", g))
        time.sleep(5)

    c = spawn(body)
    apply(kq, proc(c.pid, NOTE_TRACK | NOTE_FORK | NOTE_EXIT))
    c.release()
    (g,) = struct.unpack("i", os.read(ready_r, 4))
    time.sleep(0.05)
    evs = collect(kq, lambda e: False, timeout=0.5)
    assert_no_trackerr(evs)
    by = _by_pid(evs)
    assert set(by) == {c.pid, g}, evs
    assert [e.fflags for e in by[c.pid]] == [NOTE_FORK], by[c.pid]
    notice, exit_ = by[g]
    assert (notice.fflags, notice.data) == (NOTE_CHILD, c.pid), notice
    assert_exit(exit_, g, 4 << 8)
    os.kill(c.pid, signal.SIGKILL)
    assert one_event(kq).ident == c.pid
    assert knotes(kq) == 0


def _storm(kq, spawn, pipes, n, live):
    """A root forks n children, each forks a grandchild; every child exits i % 250 + 1, every grandchild
    0. Returns (events, root pid, {child: (i, grandchild)})."""
    map_r, map_w = pipes()

    def root():
        kids = []
        for i in range(n):
            k = os.fork()
            if k == 0:
                g = os.fork()
                if g == 0:
                    os._exit(0)
                os.write(map_w, struct.pack("iii", i, os.getpid(), g))
                os.waitpid(g, 0)
                os._exit(i % 250 + 1)
            kids.append(k)
        for k in kids:
            os.waitpid(k, 0)
        return 0

    r = spawn(root)
    apply(kq, proc(r.pid, NOTE_TRACK | NOTE_FORK | NOTE_EXIT, udata=99))
    t0 = time.monotonic()
    r.release()
    if not live:
        wait_exited(r.pid)
    evs: list = []
    deadline = t0 + 8
    root_gone = False
    while time.monotonic() < deadline:  # until every exit, or 0.3 s of silence after the root's (the last)
        got = kq.control(None, 1024, 0.3 if root_gone else 0.5)
        evs += got
        if sum(1 for x in evs if x.fflags & NOTE_EXIT) >= 2 * n + 1 or (root_gone and not got):
            break
        root_gone = any(x.ident == r.pid and x.fflags & NOTE_EXIT for x in evs)
    raw = b""
    while len(raw) < 12 * n:
        chunk = os.read(map_r, 12 * n - len(raw))
        assert chunk
        raw += chunk
    kids = {pid: (i, g) for i, pid, g in struct.iter_unpack("iii", raw)}
    assert len(kids) == n
    assert time.monotonic() - t0 < 10
    return evs, r.pid, kids


def _check_storm(kq, evs, root, kids):
    grand = {g: k for k, (_, g) in kids.items()}
    by = _by_pid(evs)
    assert set(by) <= {root} | set(kids) | set(grand), "events for processes outside the tree"
    assert_no_trackerr(evs)
    exits = {}
    for e in evs:
        assert e.udata == 99
        if e.fflags & NOTE_EXIT:
            assert e.ident not in exits, f"two exits for {e.ident}"
            assert e.flags == EXIT_FLAGS
            exits[e.ident] = e.data
        elif e.fflags & NOTE_CHILD:
            parent = root if e.ident in kids else grand[e.ident]
            assert e.data == parent, (e, parent)
    assert exits.get(root) == 0
    for k, (i, g) in kids.items():
        assert exits.get(k) == (i % 250 + 1) << 8, k
        assert exits.get(g) == 0, g
    assert knotes(kq) == 0, "knotes left behind after every process exited"


@needs_connector
def test_fork_storm_collected_live(kq, spawn, pipes):
    evs, root, kids = _storm(kq, spawn, pipes, 300, live=True)
    _check_storm(kq, evs, root, kids)


@needs_connector
def test_fork_storm_collected_after_it_is_over(kq, spawn, pipes):
    """Nobody reads the connector during the storm: children are reaped before kqrs hears of their birth.
    The 1,200 fork and exit messages fit in the socket's buffer, so each exit is reported with its status,
    from the connector's exit message when the child was gone before a pidfd could be opened. (An overflow,
    provoked on purpose: test_trackerr_when_the_connector_socket_overflows.)"""
    evs, root, kids = _storm(kq, spawn, pipes, 300, live=False)
    _check_storm(kq, evs, root, kids)


def _set_receive_buffer(inode: int, size: int) -> None:
    """Sets SO_RCVBUF of this process's socket with that inode (forced past rmem_max: CAP_NET_ADMIN)."""
    for name in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{name}") == f"socket:[{inode}]":
                s = socket.socket(fileno=os.dup(int(name)))
                try:
                    s.setsockopt(socket.SOL_SOCKET, 33, size)  # SO_RCVBUFFORCE
                finally:
                    s.close()
                return
        except OSError:
            continue
    raise AssertionError(f"no fd for socket inode {inode}")


@needs_connector
def test_trackerr_when_the_connector_socket_overflows(kq, spawn, pipes):
    """Provoked: the kqueue's connector socket is shrunk to its minimum and flooded, so the kernel drops a
    tracked child's exit message (ENOBUFS), and the child is reaped before kqrs looks. The tracking knote
    says NOTE_TRACKERR; a knote that does not track (NOTE_FORK only) is not told anything; and no knote is
    left that can never fire (a program waiting for every tracked exit would hang on it)."""
    info_r, info_w = pipes()
    go_r, go_w = pipes()

    def body():
        g = os.fork()
        if g == 0:
            os.read(go_r, 1)
            os._exit(4)
        os.write(info_w, struct.pack("i", g))
        os.waitpid(g, 0)
        os.read(go_r, 1)
        return 0

    p = spawn(body)
    bystander = spawn()
    before = set(connector_sockets())
    apply(kq, proc(p.pid, NOTE_TRACK | NOTE_FORK | NOTE_EXIT), proc(bystander.pid, NOTE_FORK | NOTE_EXIT))
    (inode,) = set(connector_sockets()) - before
    p.release()
    (g,) = struct.unpack("i", os.read(info_r, 4))
    # g's fork message is queued now (the kernel sends it before fork() returns in p). Only from here is
    # the socket shrunk to make it overflow on purpose (kqrs asks for a big one): shrunk any earlier, the
    # forks of every other process on a busy machine could fill it first and drop g's fork message too.
    _set_receive_buffer(inode, 1)
    # fill the kqueue's connector socket with other processes' forks and exits
    subprocess.run(["sh", "-c", "i=0; while [ $i -lt 600 ]; do (:) & i=$((i+1)); done; wait"], check=True)
    drops = connector_sockets()[inode]["drops"]
    assert drops > 0, "600 forks did not overflow a minimal receive buffer"
    os.write(go_w, b"x")  # g exits into a full socket, and p reaps it
    deadline = time.monotonic() + 2
    while state_of(g) != "gone":
        assert time.monotonic() < deadline
        time.sleep(0.001)
    assert connector_sockets()[inode]["drops"] > drops, "g's exit message was not dropped"
    _set_receive_buffer(inode, 8 << 20)  # the overflow happened: no more of them while the test reads
    evs = collect(kq, lambda e: False, timeout=0.5)
    by = _by_pid(evs)
    assert set(by) <= {p.pid, g}, evs
    assert [e.fflags for e in by.get(p.pid, [])] == [NOTE_FORK | NOTE_TRACKERR], evs
    assert knotes(kq) == 2, f"{knotes(kq) - 2} knote(s) besides the parent's and the bystander's: {by.get(g)}"
    os.write(go_w, b"x")
    assert [e.fflags & NOTE_EXIT for e in collect(kq, lambda e: bool(e), timeout=2)] == [NOTE_EXIT]
    os.kill(bystander.pid, signal.SIGKILL)
    assert_exit(one_event(kq), bystander.pid, signal.SIGKILL)  # no NOTE_TRACKERR: it does not track
    assert knotes(kq) == 0


def _lowest_free_fd() -> int:
    fd = os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)
    os.close(fd)
    return fd


@needs_connector
def test_trackerr_when_a_child_cannot_be_attached(kq, spawn, pipes):
    """Provoked: kqrs needs a pidfd for each tracked child, and here the process has no fd left
    (RLIMIT_NOFILE lowered to its lowest free fd while the kqueue reads the fork). As FreeBSD's knote_fork
    does when the child's knote cannot be made, the parent's event says NOTE_TRACKERR and the child gets no
    knote, so no event at all. Once fds are available again, the next child is tracked as usual."""
    info_r, info_w = pipes()
    go_r, go_w = pipes()
    next_r, next_w = pipes()

    def body():
        kids = []
        for _ in range(2):
            os.read(next_r, 1)
            g = os.fork()
            if g == 0:
                os.read(go_r, 1)
                os._exit(5 + len(kids))
            kids.append(g)
            os.write(info_w, struct.pack("i", g))
        for g in kids:
            os.waitpid(g, 0)
        return 1

    c = spawn(body)
    apply(kq, proc(c.pid, NOTE_TRACK | NOTE_FORK | NOTE_EXIT, udata=3))
    c.release()
    os.write(next_w, b"x")
    (g1,) = struct.unpack("i", os.read(info_r, 4))  # its fork message is in the kqueue's connector socket now
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (_lowest_free_fd(), hard))
    try:
        evs = collect(kq, lambda e: bool(e), timeout=2)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert [(e.ident, e.fflags, e.udata) for e in evs] == [(c.pid, NOTE_FORK | NOTE_TRACKERR, 3)], evs
    assert knotes(kq) == 1, "a knote for the child that could not be attached"
    os.write(next_w, b"x")
    (g2,) = struct.unpack("i", os.read(info_r, 4))
    evs = collect(kq, lambda e: len(e) >= 2, timeout=2)
    assert_no_trackerr(evs)
    by = _by_pid(evs)
    assert [e.fflags for e in by[c.pid]] == [NOTE_FORK], evs
    assert [(e.fflags, e.data, e.udata) for e in by[g2]] == [(NOTE_CHILD, c.pid, 3)], evs
    os.write(go_w, b"xx")
    evs = collect(kq, lambda e: len([x for x in e if x.fflags & NOTE_EXIT]) >= 2, timeout=2)
    assert_no_trackerr(evs)
    exits = {e.ident: e for e in evs if e.fflags & NOTE_EXIT}
    assert set(exits) == {g2, c.pid}, evs  # g1 was never tracked
    assert_exit(exits[g2], g2, 6 << 8, udata=3)
    assert_exit(exits[c.pid], c.pid, 1 << 8, udata=3)
    assert g1 not in _by_pid(evs)
    quiet(kq, 0.1)
    assert knotes(kq) == 0


# --- the connector: opened only when needed, no thread, no forgeries, unavailable -------------------------


@needs_connector
def test_connector_socket_only_when_a_knote_needs_it(kq, spawn):
    c = spawn()
    before = connector_sockets()
    apply(kq, proc(c.pid, NOTE_EXIT))
    assert connector_sockets() == before, "NOTE_EXIT alone opened a connector socket"
    apply(kq, proc(c.pid, NOTE_EXIT | NOTE_FORK))
    new = set(connector_sockets()) - set(before)
    assert len(new) == 1
    apply(kq, proc(c.pid, NOTE_EXIT | NOTE_EXEC | NOTE_TRACK))
    assert set(connector_sockets()) - set(before) == new, "one connector socket per kqueue"
    kq.close()
    assert set(connector_sockets()) - set(before) == set()


def _sigcgt() -> int:
    with open("/proc/self/status") as f:
        return next(int(ln.split()[1], 16) for ln in f if ln.startswith("SigCgt:"))


def test_no_thread_no_signal_handler_no_signal_mask(kq, spawn, has_connector):
    tasks = len(os.listdir("/proc/self/task"))
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    handler = signal.getsignal(signal.SIGCHLD)
    caught = _sigcgt()
    c = spawn(exits_with(3))
    d = spawn()
    apply(kq, proc(c.pid), proc(d.pid, ALL_NOTES if has_connector else NOTE_EXIT))
    c.release()
    assert_exit(one_event(kq), c.pid, 3 << 8)
    assert len(os.listdir("/proc/self/task")) == tasks
    assert signal.pthread_sigmask(signal.SIG_BLOCK, []) == mask
    assert signal.getsignal(signal.SIGCHLD) == handler
    assert _sigcgt() == caught  # no signal handler installed behind Python's back


@needs_connector
def test_forged_connector_messages_are_ignored(kq, spawn):
    target = spawn()
    other = spawn()
    before = set(connector_sockets())
    apply(kq, proc(target.pid, ALL_NOTES, udata=1))
    (inode,) = set(connector_sockets()) - before
    port = connector_sockets()[inode]["portid"]
    forged_before = kq._stats()[5] if len(kq._stats()) > 5 else None
    with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_CONNECTOR) as s:
        s.bind((0, 0))
        me = s.getsockname()[0]
        assert me != 0
        forged = [
            proc_event(PROC_EVENT_FORK, target.pid, target.pid, other.pid, other.pid),
            proc_event(PROC_EVENT_EXEC, target.pid, target.pid),
            proc_event(PROC_EVENT_EXIT, target.pid, target.pid, 3 << 8, 17, 1, 1),
        ]
        for ev in forged:
            # unicast to the kqueue's own socket; refused with ECONNREFUSED if nobody has that port id
            s.sendto(cn_message(ev, sender=me), (port, 0))
            s.sendto(cn_message(ev, sender=0), (port, 0))  # lying in the header changes nothing
    # sendto() succeeding means the socket with that port id took them (ECONNREFUSED otherwise)
    quiet(kq, 0.2)
    assert knotes(kq) == 1  # nothing attached to `other`
    if forged_before is not None:
        assert kq._stats()[5] - forged_before == 6
    os.kill(target.pid, signal.SIGKILL)
    assert_exit(one_event(kq), target.pid, signal.SIGKILL, udata=1)


_NO_CONNECTOR_SNIPPET = r"""
import json, os, kqrs
from kqrs import kevent
kq = kqrs.kqueue()
r, w = os.pipe()
pid = os.fork()
if pid == 0:
    os.read(r, 1)
    os._exit(3)
res = {}
for name in ("FORK", "EXEC", "TRACK"):
    ff = getattr(kqrs, "KQ_NOTE_" + name) | kqrs.KQ_NOTE_EXIT
    res[name] = [(e.flags, e.data) for e in kq.control([kevent(pid, kqrs.KQ_FILTER_PROC, kqrs.KQ_EV_ADD, ff)], 4, 0)]
res["knotes"] = kq._stats()[0]
exit_only = kevent(pid, kqrs.KQ_FILTER_PROC, kqrs.KQ_EV_ADD, kqrs.KQ_NOTE_EXIT)
res["add_exit"] = [(e.flags, e.data) for e in kq.control([exit_only], 4, 0)]
os.write(w, b"x")
res["events"] = [(e.ident == pid, e.fflags, e.flags, e.data) for e in kq.control(None, 4, 5)]
res["waitpid"] = os.waitpid(pid, 0)[1]
print(json.dumps(res))
"""


def test_without_the_connector_fork_exec_track_fail_clearly_and_exit_still_works(network_namespace):
    """In a new network namespace the connector does not answer (the kernel serves it in the initial
    one only): NOTE_FORK/EXEC/TRACK fail with EPERM or EOPNOTSUPP; NOTE_EXIT alone works."""
    p = subprocess.run(
        ["unshare", "-n", sys.executable, "-c", _NO_CONNECTOR_SNIPPET], capture_output=True, text=True, timeout=20
    )
    assert p.returncode == 0, p.stderr
    res = json.loads(p.stdout)
    for name in ("FORK", "EXEC", "TRACK"):
        assert len(res[name]) == 1 and res[name][0][0] == ERROR, res
        assert res[name][0][1] in (errno.EPERM, errno.EOPNOTSUPP), (name, errno.errorcode.get(res[name][0][1]))
    assert res["knotes"] == 0
    assert res["add_exit"] == []
    assert res["events"] == [[True, NOTE_EXIT, EXIT_FLAGS, 3 << 8]]
    assert res["waitpid"] == 3 << 8


_UNPRIVILEGED_SNIPPET = r"""
import json, os, socket, struct, kqrs
from kqrs import kevent
os.setgroups([]); os.setgid(65534); os.setuid(65534)
def raw():
    s = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, 11)
    try:
        s.bind((0, 1))
        for op in (1, 2):
            p = struct.pack("I", op)
            cn = struct.pack("=IIIIHH", 1, 1, 0, 0, len(p), 0) + p
            s.send(struct.pack("=IHHII", 16 + len(cn), 3, 0, 0, 0) + cn)
        return 0
    except OSError as e:
        return e.errno
    finally:
        s.close()
kq = kqrs.kqueue()
r, w = os.pipe()
pid = os.fork()
if pid == 0:
    os.read(r, 1)
    g = os.fork()
    if g == 0:
        os._exit(0)
    os.waitpid(g, 0)
    os._exit(0)
got = kq.control([kevent(pid, kqrs.KQ_FILTER_PROC, kqrs.KQ_EV_ADD, kqrs.KQ_NOTE_FORK | kqrs.KQ_NOTE_EXIT)], 4, 0)
res = {"raw": raw(), "add": [(e.flags, e.data) for e in got]}
os.write(w, b"x")
evs = []
if not got:
    while not any(e.fflags & kqrs.KQ_NOTE_EXIT for e in evs):
        new = kq.control(None, 4, 5)
        if not new:
            break
        evs += new
res["fflags"] = [e.fflags for e in evs]
os.waitpid(pid, 0)
print(json.dumps(res))
"""


def test_unprivileged_user_gets_what_the_kernel_allows(can_change_user):
    """Without root, NOTE_FORK works exactly when this kernel lets an unprivileged process subscribe to the
    connector (Linux 6.6+ does); otherwise the change fails with EPERM."""
    p = subprocess.run(
        [sys.executable, "-c", _UNPRIVILEGED_SNIPPET], capture_output=True, text=True, timeout=20, cwd="/"
    )
    assert p.returncode == 0, p.stderr
    res = json.loads(p.stdout)
    if res["raw"] == 0:
        assert res["add"] == [], res
        assert NOTE_FORK in res["fflags"] or (NOTE_FORK | NOTE_EXIT) in res["fflags"], res
    else:
        assert res["add"] == [[ERROR, errno.EPERM]] or res["add"] == [[ERROR, errno.EOPNOTSUPP]], res


# --- SIGCHLD and subprocess keep working ------------------------------------------------------------------


@pytest.fixture
def sigchld():
    got: list[int] = []
    old = signal.signal(signal.SIGCHLD, lambda s, f: got.append(s))
    yield got
    signal.signal(signal.SIGCHLD, old)


def test_python_sigchld_handler_still_runs(kq, spawn, sigchld):
    c = spawn(exits_with(3))
    apply(kq, proc(c.pid))
    c.release()
    assert_exit(one_event(kq), c.pid, 3 << 8)
    deadline = time.monotonic() + 2
    while not sigchld and time.monotonic() < deadline:
        time.sleep(0.001)  # a pending handler runs between bytecodes
    assert sigchld and set(sigchld) == {signal.SIGCHLD}
    assert signal.getsignal(signal.SIGCHLD) is not signal.SIG_DFL
    assert c.reap() == 3 << 8


def test_sigchld_handler_that_reaps_and_kqueue_agree(kq, spawn):
    reaped: dict[int, int] = {}

    def handler(s, f):
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            reaped[pid] = status

    old = signal.signal(signal.SIGCHLD, handler)
    try:
        c = spawn(exits_with(44))
        apply(kq, proc(c.pid))
        c.release()
        ev = one_event(kq)
        deadline = time.monotonic() + 2
        while c.pid not in reaped and time.monotonic() < deadline:
            time.sleep(0.001)
    finally:
        signal.signal(signal.SIGCHLD, old)
    assert reaped.get(c.pid) == 44 << 8
    assert_exit(ev, c.pid, 44 << 8)


def test_subprocess_run_works_alongside_armed_knotes(kq, spawn, has_connector):
    a = spawn()
    b = spawn()
    apply(kq, proc(a.pid), proc(b.pid, ALL_NOTES if has_connector else NOTE_EXIT))
    assert subprocess.run(["sh", "-c", "exit 7"]).returncode == 7
    assert subprocess.run(["sh", "-c", "echo hi; sh -c 'exit 0'"], capture_output=True).stdout == b"hi\n"
    p = subprocess.Popen(["sh", "-c", "read x; exit 3"], stdin=subprocess.PIPE)
    apply(kq, proc(p.pid, udata=5))
    p.stdin.write(b"\n")
    p.stdin.close()
    assert p.wait(5) == 3  # kqrs did not take the status away from subprocess
    assert_exit(one_event(kq), p.pid, 3 << 8, udata=5)
    quiet(kq, 0.05)  # the armed knotes stayed quiet
    assert knotes(kq) == 2


def test_subprocess_pid_watched_from_another_thread(kq):
    p = subprocess.Popen(["sh", "-c", "sleep 0.1; exit 5"])
    apply(kq, proc(p.pid))
    result = []
    t = threading.Thread(target=lambda: result.append(kq.control(None, 4, 5)))
    t.start()
    assert p.wait(5) == 5
    t.join(5)
    assert len(result) == 1 and len(result[0]) == 1
    assert_exit(result[0][0], p.pid, 5 << 8)


# --- EVFILT_PROCDESC --------------------------------------------------------------------------------------


@pytest.fixture
def pidfds():
    fds: list[int] = []

    def _open(pid):
        fd = os.pidfd_open(pid)
        fds.append(fd)
        return fd

    yield _open
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


@needs_procdesc
def test_procdesc_reports_the_exit_status(kq, spawn, pidfds):
    c = spawn(exits_with(6))
    fd = pidfds(c.pid)
    apply(kq, procdesc(fd, udata=8))
    quiet(kq, 0.05)
    c.release()
    ev = one_event(kq)
    assert (ev.ident, ev.filter, ev.fflags, ev.data, ev.udata) == (fd, PROCDESC, NOTE_EXIT, 6 << 8, 8)
    assert ev.flags & (EOF | CLEAR) == EOF | CLEAR and not ev.flags & ERROR, hex(ev.flags)
    assert c.reap() == 6 << 8
    quiet(kq, 0.05)


@needs_procdesc
def test_procdesc_signal_and_zombie(kq, spawn, pidfds):
    c = spawn()
    fd = pidfds(c.pid)
    os.kill(c.pid, signal.SIGTERM)
    wait_exited(c.pid)
    apply(kq, procdesc(fd))  # a zombie: fires at once
    ev = one_event(kq, timeout=0)
    assert (ev.ident, ev.fflags, ev.data) == (fd, NOTE_EXIT, signal.SIGTERM)
    assert ev.flags & EOF


@needs_procdesc
def test_procdesc_survives_reaping_and_pid_reuse(kq, spawn, pidfds):
    c = spawn(exits_with(10))
    fd = pidfds(c.pid)
    apply(kq, procdesc(fd))
    c.release()
    assert c.reap() == 10 << 8  # the pid may now be reused; the pidfd still names the old process
    ev = one_event(kq)
    assert (ev.ident, ev.fflags, ev.data) == (fd, NOTE_EXIT, 10 << 8)


@needs_procdesc
def test_procdesc_added_after_the_process_was_reaped(kq, spawn, pidfds):
    c = spawn(exits_with(11))
    fd = pidfds(c.pid)
    c.release()
    assert c.reap() == 11 << 8
    apply(kq, procdesc(fd))
    ev = one_event(kq, timeout=0)
    assert (ev.ident, ev.fflags, ev.data) == (fd, NOTE_EXIT, 11 << 8)


@needs_procdesc
def test_procdesc_of_a_non_child(kq, orphan, pidfds):
    o = orphan(exits_with(15))
    fd = pidfds(o.pid)
    apply(kq, procdesc(fd))
    o.release()
    ev = one_event(kq)
    assert (ev.ident, ev.fflags, ev.data) == (fd, NOTE_EXIT, 15 << 8)


@needs_procdesc
def test_procdesc_and_proc_on_the_same_process(kq, spawn, pidfds):
    c = spawn(exits_with(2))
    fd = pidfds(c.pid)
    apply(kq, procdesc(fd, udata=1), proc(c.pid, udata=2))
    c.release()
    evs = collect(kq, lambda e: len(e) >= 2, timeout=2)
    assert sorted((e.filter, e.ident, e.data, e.udata) for e in evs) == sorted(
        [(PROCDESC, fd, 2 << 8, 1), (PROC, c.pid, 2 << 8, 2)]
    )


@needs_procdesc
def test_procdesc_rejects_what_is_not_a_pidfd(kq, pipes):
    r, w = pipes()
    assert errno_of_add(kq, procdesc(r)) == errno.EINVAL
    os.close(w)
    assert errno_of_add(kq, procdesc(w)) == errno.EBADF
    assert knotes(kq) == 0


@needs_procdesc
def test_procdesc_rejects_proc_only_fflags(kq, spawn, pidfds):
    c = spawn()
    fd = pidfds(c.pid)
    assert errno_of_add(kq, procdesc(fd, NOTE_EXIT | NOTE_TRACK)) == errno.EINVAL


@needs_procdesc
def test_procdesc_closing_the_pidfd_removes_the_knote(kq, spawn):
    """semantics.md: closing a watched fd removes its knotes; a new file on the same number starts clean."""
    c = spawn(exits_with(1))
    fd = os.pidfd_open(c.pid)
    apply(kq, procdesc(fd))
    os.close(fd)
    c.release()
    wait_exited(c.pid)
    r, w = os.pipe()  # likely reuses fd's number
    try:
        quiet(kq, 0.1)
        assert knotes(kq) == 0
    finally:
        os.close(r)
        os.close(w)
