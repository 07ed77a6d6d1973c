"""``kqrs doctor``: probe this machine and say, filter by filter and feature by feature, what works.

Every verdict comes from a live probe (nothing is assumed from the kernel version), and a row that does not
work says why. What a row states without having probed it, a property of how kqrs is built, is marked
"by design:"; everything else in a row was just measured.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import platform
import socket
import sys
import sysconfig
import tempfile
import time
from collections.abc import Callable
from typing import Any, NamedTuple

from . import _kqrs
from ._kqrs import kevent, kqueue

OK, NO, PARTIAL = "yes", "no", "partly"


def _errname(e: int) -> str:
    return f"{errno.errorcode.get(e, e)} ({os.strerror(e)})"


def _one(kq: kqueue, changes: list[kevent] | None, timeout: float = 1.0) -> list[kevent]:
    return kq.control(changes, 8, timeout)


def probe_read() -> tuple[str, str]:
    notes = []
    with kqueue() as kq:
        a, b = socket.socketpair()
        with a, b:
            b.send(b"hello")
            ev = _one(kq, [kevent(a, _kqrs.KQ_FILTER_READ)])
            if not ev or ev[0].data != 5:
                return NO, f"socketpair: expected data=5, got {ev}"
            notes.append("sockets (bytes readable)")
        srv = socket.socket()
        with srv:
            srv.bind(("127.0.0.1", 0))
            srv.listen(8)
            clients = [socket.create_connection(srv.getsockname()) for _ in range(3)]
            try:
                time.sleep(0.05)
                ev = _one(kq, [kevent(srv, _kqrs.KQ_FILTER_READ)])
                if ev and ev[0].data == 3:
                    notes.append("listen backlog (real count)")
                else:
                    return PARTIAL, f"listen backlog: expected 3, got {ev and ev[0].data}"
            finally:
                for c in clients:
                    c.close()
        r, w = os.pipe()
        try:
            os.write(w, b"x" * 10)
            ev = _one(kq, [kevent(r, _kqrs.KQ_FILTER_READ)])
            if not ev or ev[0].data != 10:
                return NO, f"pipe: expected data=10, got {ev}"
            os.close(w)
            w = -1
            ev = _one(kq, None)
            if not ev or not ev[0].flags & _kqrs.KQ_EV_EOF:
                return PARTIAL, "pipe: no EV_EOF after the writer closed"
            notes.append("pipes (+EOF)")
        finally:
            os.close(r)
            if w >= 0:
                os.close(w)
        with tempfile.TemporaryFile() as f:
            f.write(b"abc")
            f.flush()
            f.seek(0)
            ev = _one(kq, [kevent(f, _kqrs.KQ_FILTER_READ)])
            if not ev or ev[0].data != 3:
                return PARTIAL, f"regular file: expected data=3, got {ev}"
            f.seek(3)
            if _one(kq, None, 0):
                return PARTIAL, "regular file: fired at EOF"
            os.pwrite(f.fileno(), b"defg", 3)
            ev = _one(kq, None)
            if not ev or ev[0].data != 4:
                return PARTIAL, "regular file: no event after growth (inotify missing?)"
            notes.append("regular files (re-armed on growth, via inotify)")
    return OK, ", ".join(notes)


def probe_write() -> tuple[str, str]:
    W, R = _kqrs.KQ_FILTER_WRITE, _kqrs.KQ_FILTER_READ
    EOF, LOWAT = _kqrs.KQ_EV_EOF, _kqrs.KQ_NOTE_LOWAT
    with kqueue() as kq:
        a, b = socket.socketpair()
        with a, b:
            ev = _one(kq, [kevent(a, W)])
            if not ev or ev[0].data <= 0:
                return NO, f"socketpair: {ev}"
            free = ev[0].data
            a.send(b"x" * 1000)
            ev2 = _one(kq, None)
            if not ev2 or ev2[0].data >= free:
                return PARTIAL, "socket write space does not shrink as data is queued"
            # NOTE_LOWAT: no report below the mark, one once it is reached
            kq.control([kevent(a, W, _kqrs.KQ_EV_DELETE), kevent(b, R, _kqrs.KQ_EV_ADD, LOWAT, 1004)], 0)
            if [e for e in _one(kq, None, 0.05) if e.ident == b.fileno()]:
                return PARTIAL, "NOTE_LOWAT: READ reported 1000 bytes under a mark of 1004"
            a.send(b"yyyy")
            ev = [e for e in _one(kq, None) if e.ident == b.fileno()]
            if not ev or ev[0].data != 1004:
                return PARTIAL, f"NOTE_LOWAT: READ did not report once the mark was reached: {ev}"
            kq.control([kevent(b, R, _kqrs.KQ_EV_DELETE), kevent(a, W, _kqrs.KQ_EV_ADD, LOWAT, 1 << 30)], 0)
            if _one(kq, None, 0.05):
                return PARTIAL, "NOTE_LOWAT: WRITE reported less free space than its mark"
            kq.control([kevent(a, W, _kqrs.KQ_EV_DELETE)], 0)
            # EV_EOF: the peer is gone
            b.close()
            ev = _one(kq, [kevent(a, W)])
            if not ev or not ev[0].flags & EOF:
                return PARTIAL, f"socket: no EV_EOF on WRITE once the peer closed: {ev}"
            kq.control([kevent(a, W, _kqrs.KQ_EV_DELETE)], 0)
        r, w = os.pipe()
        try:
            ev = _one(kq, [kevent(w, W)])
            if not ev or ev[0].data <= 0:
                return NO, f"pipe: {ev}"
            if ev[0].flags & EOF:
                return PARTIAL, "pipe: EV_EOF while the reader is still there"
            os.close(r)
            r = -1
            ev = _one(kq, None)
            if not ev or not ev[0].flags & EOF:
                return PARTIAL, f"pipe: no EV_EOF on WRITE once the reader closed: {ev}"
        finally:
            if r >= 0:
                os.close(r)
            os.close(w)
    return OK, "sockets and pipes (free space), EV_EOF when the reader/peer is gone, NOTE_LOWAT (READ and WRITE)"


def _fds_for(changes: list[kevent]) -> int:
    """kqrs's own fds that these changes add to a kqueue that already has its timer source."""
    with kqueue() as kq:
        kq.control([kevent(0, _kqrs.KQ_FILTER_TIMER, _kqrs.KQ_EV_ADD, 0, 10**9)], 0)
        before = _kqrs._owned_fd_count()
        kq.control(changes, 0)
        return _kqrs._owned_fd_count() - before


def probe_timer() -> tuple[str, str]:
    T, ADD, ONESHOT = _kqrs.KQ_FILTER_TIMER, _kqrs.KQ_EV_ADD, _kqrs.KQ_EV_ONESHOT
    with kqueue() as kq:
        # each unit: 20 ms written in it fires after 20 ms, not before, and within a second
        for name, unit, value in (
            ("ms", 0, 20),
            ("us", _kqrs.KQ_NOTE_USECONDS, 20_000),
            ("ns", _kqrs.KQ_NOTE_NSECONDS, 20_000_000),
        ):
            t0 = time.monotonic()
            ev = _one(kq, [kevent(1, T, ADD | ONESHOT, unit, value)])
            dt = time.monotonic() - t0
            if not ev or not 0.019 <= dt < 1.0:
                return NO, f"20 ms one-shot in {name}: {ev} after {dt:.4f} s"
        # 1 in NOTE_SECONDS is a second: it has not fired after 0.1 s
        if _one(kq, [kevent(2, T, ADD | ONESHOT, _kqrs.KQ_NOTE_SECONDS, 1)], 0.1):
            return NO, "a 1 s one-shot in NOTE_SECONDS fired within 0.1 s"
        kq.control([kevent(2, T, _kqrs.KQ_EV_DELETE)], 0)
        # overruns: a 5 ms periodic timer left alone for 60 ms reports about 12 expirations at once
        kq.control([kevent(3, T, ADD, 0, 5)], 0)
        time.sleep(0.06)
        ev = _one(kq, None)
        kq.control([kevent(3, T, _kqrs.KQ_EV_DELETE)], 0)
        if not ev or ev[0].data < 10:
            return PARTIAL, f"overruns: a 5 ms timer after 60 ms reported {ev and ev[0].data} expirations"
        dl = int((time.time() + 0.02) * 1e6)
        ev = _one(kq, [kevent(4, T, ADD, _kqrs.KQ_NOTE_ABSOLUTE | _kqrs.KQ_NOTE_USECONDS, dl)])
        if not ev or time.time() * 1e6 < dl:
            return PARTIAL, f"NOTE_ABSOLUTE: {ev} before its deadline" if ev else "NOTE_ABSOLUTE did not fire"
    extra = _fds_for([kevent(100 + i, T, ADD, 0, 10**9) for i in range(100)])
    if extra:
        return PARTIAL, f"100 more timers took {extra} more fds"
    pw2 = "ns-precision waits (epoll_pwait2)" if _kqrs._has_epoll_pwait2() else "ms-precision waits (no epoll_pwait2)"
    return OK, f"no fd per timer (100 timers: 0 fds); s/ms/us/ns units, NOTE_ABSOLUTE, overrun counts; {pw2}"


def probe_user() -> tuple[str, str]:
    U = _kqrs.KQ_FILTER_USER
    TRIGGER = _kqrs.KQ_NOTE_TRIGGER
    with kqueue() as kq:
        _one(kq, [kevent(7, U, _kqrs.KQ_EV_ADD | _kqrs.KQ_EV_CLEAR)], 0)
        for op, ff, want in (
            (_kqrs.KQ_NOTE_FFCOPY, 0b1101, 0b1101),
            (_kqrs.KQ_NOTE_FFAND, 0b0111, 0b0101),
            (_kqrs.KQ_NOTE_FFOR, 0b1000, 0b1101),
        ):
            ev = _one(kq, [kevent(7, U, 0, TRIGGER | op | ff)], 0)
            if not ev or ev[0].fflags != want:
                return NO, f"trigger with fflags operation {op:#x}: {ev}, expected fflags {want:#x}"
    extra = _fds_for([kevent(100 + i, U, _kqrs.KQ_EV_ADD) for i in range(100)])
    if extra:
        return PARTIAL, f"100 USER knotes took {extra} more fds"
    return OK, "no fd per knote (100 knotes: 0 fds); NOTE_FFCOPY, NOTE_FFAND, NOTE_FFOR"


def probe_unbuilt(name: str, filt: int) -> tuple[str, str]:
    with kqueue() as kq:
        ev = kq.control([kevent(os.getpid(), filt, _kqrs.KQ_EV_ADD, 0)], 1, 0)
    if ev and ev[0].flags & _kqrs.KQ_EV_ERROR and ev[0].data:
        return NO, f"not built yet: EV_ADD fails with {_errname(ev[0].data)}, never silently"
    return NO, f"unexpected answer {ev}"


def probe_proc() -> tuple[str, str]:
    import subprocess

    P, ADD, EXIT, FORK = _kqrs.KQ_FILTER_PROC, _kqrs.KQ_EV_ADD, _kqrs.KQ_NOTE_EXIT, _kqrs.KQ_NOTE_FORK
    pidfd, _getinfo, conn = _kqrs._proc_support()
    if not pidfd:
        return NO, "pidfd_open(2) is missing (Linux < 5.3): NOTE_EXIT cannot be watched without reaping"
    notes = []
    partial = False
    with kqueue() as kq:
        p = subprocess.Popen(["sh", "-c", "exit 3"])
        ev = _one(kq, [kevent(p.pid, P, ADD, EXIT)], 5)
        if not ev or ev[0].data != 3 << 8:
            return NO, f"child exit: {ev}"
        if p.wait() != 3:
            return NO, "kqrs reaped the child: waitpid() lost its status"
        notes.append("NOTE_EXIT with the wait status of a child, never reaping it")
        # a process that is not ours, reaped by its own parent
        q = subprocess.Popen(
            ["sh", "-c", 'sh -c "read x; exit 5" & echo $!; wait'], stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        assert q.stdin is not None and q.stdout is not None
        with q.stdin, q.stdout:
            other = int(q.stdout.readline())
            kq.control([kevent(other, P, ADD, EXIT)], 0)
            q.stdin.write(b"\n")
            q.stdin.flush()
            ev = _one(kq, None, 5)
        q.wait()
        if ev and ev[0].data == 5 << 8 and not ev[0].flags & _kqrs.KQ_EV_ERROR:
            notes.append("and of a non-child reaped by its parent")
        else:
            partial = True
            notes.append(f"a non-child reaped by its parent: {ev} (status {'lost' if ev else 'never reported'})")
        if conn == 0:
            r = subprocess.Popen(["sh", "-c", "read x; (exit 0); exit 3"], stdin=subprocess.PIPE)
            assert r.stdin is not None
            with r.stdin:
                kq.control([kevent(r.pid, P, ADD, EXIT | FORK)], 0)
                r.stdin.write(b"\n")
            evs: list[kevent] = []
            deadline = time.monotonic() + 5
            while not any(e.fflags & EXIT for e in evs) and time.monotonic() < deadline:
                evs += kq.control(None, 8, 1)
            r.wait()
            if any(e.fflags & FORK for e in evs):
                notes.append("NOTE_FORK seen (NOTE_FORK/NOTE_EXEC/NOTE_TRACK use the process connector)")
            else:
                partial = True
                notes.append(f"NOTE_FORK: the connector opened, but a fork was not reported: {evs}")
    reaped, _ = reaped_status_readable()
    notes.append(
        "status of processes reaped by others" + ("" if reaped else ": no (needs PIDFD_INFO_EXIT, Linux 6.15)")
    )
    if conn == 0:
        return (PARTIAL if partial else OK), "; ".join(notes)
    why = "needs CAP_NET_ADMIN" if conn == errno.EPERM else _errname(conn)
    notes.append(
        f"NOTE_FORK/NOTE_EXEC/NOTE_TRACK: no, the process connector says {_errname(conn)} ({why}); such changes fail with that errno"
    )
    return PARTIAL, "; ".join(notes)


def probe_vnode() -> tuple[str, str]:
    V = _kqrs.KQ_FILTER_VNODE
    notes = (
        _kqrs.KQ_NOTE_WRITE
        | _kqrs.KQ_NOTE_EXTEND
        | _kqrs.KQ_NOTE_RENAME
        | _kqrs.KQ_NOTE_DELETE
        | _kqrs.KQ_NOTE_ATTRIB
        | _kqrs.KQ_NOTE_LINK
    )
    with tempfile.TemporaryDirectory() as d, kqueue() as kq:
        path = os.path.join(d, "f")
        with open(path, "w"):
            pass
        fd = os.open(path, os.O_RDWR)
        try:
            kq.control([kevent(fd, V, _kqrs.KQ_EV_ADD | _kqrs.KQ_EV_CLEAR, notes)], 0)
            with open(path) as other:  # someone else opening and reading: no event
                other.read()
            if kq.control(None, 4, 0.05):
                return PARTIAL, "an open/read by someone else woke kevent()"
            os.write(fd, b"x")
            ev = _one(kq, None)
            if not ev or ev[0].fflags != _kqrs.KQ_NOTE_WRITE | _kqrs.KQ_NOTE_EXTEND:
                return NO, f"write: {ev}"
            os.rename(path, path + "2")
            os.unlink(path + "2")
            ev = _one(kq, None)
            want = _kqrs.KQ_NOTE_RENAME | _kqrs.KQ_NOTE_DELETE  # FreeBSD: a name removed is NOTE_DELETE
            if not ev or ev[0].fflags != want:
                return PARTIAL, f"rename+unlink: {ev}"
            use = _kqrs.KQ_NOTE_OPEN | _kqrs.KQ_NOTE_READ | _kqrs.KQ_NOTE_CLOSE
            kq.control([kevent(fd, V, _kqrs.KQ_EV_ADD | _kqrs.KQ_EV_CLEAR, notes | use)], 0)
            with open(f"/proc/self/fd/{fd}", "rb") as other:  # opened, read and closed by someone else
                other.read()
            ev = _one(kq, None)
            if not ev or ev[0].fflags != use:
                return PARTIAL, f"opt-in NOTE_OPEN|NOTE_READ|NOTE_CLOSE: {ev}"
        finally:
            os.close(fd)
    return OK, (
        "write, rename and unlink reported with FreeBSD's notes; no wake-up on open/read/close unless "
        "asked: opt-in NOTE_OPEN, NOTE_READ, NOTE_CLOSE work; by design: inotify, one instance per "
        "kqueue, following the open file; libkqueue's NOTE_TRUNCATE (0x80); NOTE_OPEN is 0x800 "
        "(FreeBSD's 0x80 is NOTE_TRUNCATE here), NOTE_CLOSE 0x100, NOTE_CLOSE_WRITE 0x200, NOTE_READ 0x400"
    )


def probe_signal() -> tuple[str, str]:
    import signal as sig

    S = _kqrs.KQ_FILTER_SIGNAL
    seen: list[int] = []
    tasks = len(os.listdir("/proc/self/task"))
    mask = sig.pthread_sigmask(sig.SIG_BLOCK, [])
    old = sig.signal(sig.SIGUSR2, lambda s, f: seen.append(s))
    limits = []
    try:
        with kqueue() as kq:
            kq.control([kevent(sig.SIGUSR2, S, _kqrs.KQ_EV_ADD)], 0)
            os.kill(os.getpid(), sig.SIGUSR2)
            os.kill(os.getpid(), sig.SIGUSR2)
            ev = _one(kq, None)
            if not ev or ev[0].data != 2:
                return NO, f"two deliveries: {ev}"
            if seen != [sig.SIGUSR2, sig.SIGUSR2]:
                return PARTIAL, "deliveries counted, but the application's handler did not run each time"
            if len(os.listdir("/proc/self/task")) != tasks or sig.pthread_sigmask(sig.SIG_BLOCK, []) != mask:
                return PARTIAL, "watching a signal started a thread or changed the signal mask"
            # blocked: FreeBSD counts each signal sent, and the signal stays pending for the application
            sig.pthread_sigmask(sig.SIG_BLOCK, [sig.SIGUSR2])
            try:
                os.kill(os.getpid(), sig.SIGUSR2)
                ev = _one(kq, None, 0.5)
                if not ev or ev[0].data != 1:
                    return PARTIAL, f"a signal sent while blocked: {ev and ev[0].data} counted (FreeBSD: 1)"
                os.kill(os.getpid(), sig.SIGUSR2)
                os.kill(os.getpid(), sig.SIGUSR2)
                got = sum(e.data for e in _one(kq, None, 0.1))
                if got != 2:
                    limits.append(
                        f"a signal sent twice more while one is pending (blocked) counts {got}, "
                        "FreeBSD 2: Linux keeps one pending instance"
                    )
            finally:
                sig.pthread_sigmask(sig.SIG_SETMASK, mask)
            if seen != [sig.SIGUSR2] * 3:
                return PARTIAL, "a blocked signal did not reach the application's handler once unblocked"
            if _one(kq, None, 0.05):
                return PARTIAL, "a blocked signal counted again when it was delivered"
    finally:
        sig.signal(sig.SIGUSR2, old)
    what = (
        "counted by a chaining handler: the application's handlers still run, no mask, no thread; a "
        "blocked signal is counted when sent and stays pending for the application"
    )
    if limits:
        return PARTIAL, what + "; not like FreeBSD: " + "; ".join(limits)
    return OK, what


def probe_nesting() -> tuple[str, str]:
    import select

    with kqueue() as outer, kqueue() as inner:
        _one(outer, [kevent(inner, _kqrs.KQ_FILTER_READ)], 0)
        if _one(outer, None, 0):
            return NO, "inner kqueue readable with nothing pending"
        _one(inner, [kevent(1, _kqrs.KQ_FILTER_USER, _kqrs.KQ_EV_ADD, _kqrs.KQ_NOTE_TRIGGER)], 0)
        if not _one(outer, None, 1):
            return NO, "outer kqueue did not see the inner one's event"
        p = select.poll()
        p.register(inner.fileno(), select.POLLIN)
        if not p.poll(0):
            return PARTIAL, "poll() does not see the pending event"
    return OK, "poll() and another kqueue's EVFILT_READ see the kqueue fd readable exactly while it has an event"


def probe_fork() -> tuple[str, str]:
    if not hasattr(os, "fork"):
        return NO, "no fork()"
    kq = kqueue()
    try:
        pid = os.fork()
        if pid == 0:
            ok = kq.closed
            try:
                kqueue().close()
            except Exception:
                ok = False
            os._exit(0 if ok else 1)
        _, status = os.waitpid(pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            return NO, "the child saw the parent's kqueue open"
        if not _kqrs._has_wipeonfork():
            return PARTIAL, (
                "a kqueue reads as closed in a fork child, which can make new ones; but each fork copies the"
                " knote tables (no MADV_WIPEONFORK: Linux 4.14+)"
            )
        return OK, (
            "a kqueue reads as closed in a fork child, which can make new ones; fork does not copy the knote"
            " tables (MADV_WIPEONFORK)"
        )
    finally:
        kq.close()


def probe_pidfd() -> tuple[str, str]:
    if not hasattr(os, "pidfd_open"):
        return NO, "os.pidfd_open missing (Python < 3.9)"
    try:
        fd = os.pidfd_open(os.getpid())
    except OSError as e:
        return NO, f"pidfd_open: {_errname(e.errno or 0)} (kernel < 5.3?)"
    os.close(fd)
    return OK, "pidfd_open works (by design: EVFILT_PROC's NOTE_EXIT uses one per knote)"


def probe_inotify() -> tuple[str, str]:
    libc = ctypes.CDLL(None, use_errno=True)
    fd = libc.inotify_init1(os.O_CLOEXEC | os.O_NONBLOCK)
    if fd < 0:
        e = ctypes.get_errno()
        return NO, f"inotify_init1: {_errname(e)}: no EVFILT_VNODE, and READ on regular files is not re-armed"
    try:
        with tempfile.TemporaryDirectory() as d:
            wd = libc.inotify_add_watch(fd, d.encode(), 0x100)  # IN_CREATE
            if wd < 0:
                return NO, f"inotify_add_watch: {_errname(ctypes.get_errno())}"
            open(os.path.join(d, "f"), "w").close()
            if not os.read(fd, 4096):
                return PARTIAL, "inotify watch added, but no event for a file created"
    finally:
        os.close(fd)
    limits = []
    for name in ("max_user_instances", "max_user_watches"):
        try:
            with open(f"/proc/sys/fs/inotify/{name}") as f:
                limits.append(f"{name}={f.read().strip()}")
        except OSError:
            pass
    return OK, f"inotify works ({', '.join(limits)}; by design: one instance per kqueue that needs it)"


class KernelFeature(NamedTuple):
    name: str
    since: str  # the Linux release that added it
    gives: str  # what kqrs does with it
    without: str  # what kqrs does on a kernel without it


# The supported kernel range, one row per kernel facility kqrs adapts to. The README's "Supported kernels"
# section is checked against this table (tests/test_release.py), and `kqrs doctor` probes each row live.
KERNEL_FEATURES: tuple[KernelFeature, ...] = (
    KernelFeature(
        "pidfd",
        "5.3",
        "EVFILT_PROC NOTE_EXIT and EVFILT_PROCDESC for any visible process, nothing reaped",
        "EVFILT_PROC and EVFILT_PROCDESC fail: kqrs needs 5.3",
    ),
    KernelFeature(
        "waitid P_PIDFD",
        "5.4",
        "a child's wait status read through its pidfd, without reaping it",
        "the status is read from /proc/PID/stat while the child is a zombie (same result)",
    ),
    KernelFeature(
        "epoll_pwait2",
        "5.11",
        "kevent() timeouts with nanosecond precision",
        "timeouts are rounded up to whole milliseconds (epoll_wait)",
    ),
    KernelFeature("PIDFD_GET_INFO", "6.13", "the pidfd ioctl that PIDFD_INFO_EXIT extends", "nothing lost by itself"),
    KernelFeature(
        "PIDFD_INFO_EXIT",
        "6.15",
        "the wait status of a process someone else reaped before kqrs read it",
        "such a NOTE_EXIT comes with EV_ERROR and ECHILD in data",
    ),
    KernelFeature(
        "process connector",
        "any, with CONFIG_PROC_EVENTS",
        "NOTE_FORK, NOTE_EXEC, NOTE_TRACK (needs CAP_NET_ADMIN in the initial namespaces)",
        "EV_ADD with those notes fails with EPERM (EOPNOTSUPP where there is no connector)",
    ),
)
OLDEST_KERNEL = "5.3"


def _pidfd_info_exit(pidfd: int) -> int | None:
    """PIDFD_GET_INFO asking for PIDFD_INFO_EXIT: the exit status it reports, None if it reports none;
    OSError on kernels without the ioctl."""
    import fcntl
    import struct

    pidfd_get_info = 0xC000_0000 | (64 << 16) | (0xFF << 8) | 11  # _IOWR(0xFF, 11, struct pidfd_info v0)
    pidfd_info_exit = 1 << 3
    buf = bytearray(64)
    struct.pack_into("=Q", buf, 0, pidfd_info_exit)
    fcntl.ioctl(pidfd, pidfd_get_info, buf)
    mask = struct.unpack_from("=Q", buf, 0)[0]
    return struct.unpack_from("=i", buf, 60)[0] if mask & pidfd_info_exit else None


def reaped_status_readable() -> tuple[bool, str]:
    """Whether PIDFD_INFO_EXIT tells the status of a child that was already reaped (Linux 6.15+)."""
    import subprocess

    p = subprocess.Popen(["sh", "-c", "exit 7"])
    try:
        child = os.pidfd_open(p.pid)
    except OSError as e:
        p.wait()
        return False, f"pidfd_open: {_errname(e.errno or 0)}"
    try:
        p.wait()  # reaped: only PIDFD_INFO_EXIT can still tell how it exited
        status = _pidfd_info_exit(child)
        return status == 7 << 8, "" if status == 7 << 8 else f"a reaped child's status reads as {status!r}"
    except OSError as e:
        return False, _errname(e.errno or 0)
    finally:
        os.close(child)


def kernel_features() -> list[dict[str, Any]]:
    """Each KERNEL_FEATURES row with `present`: probed live on this kernel (True/False), and `note`."""
    present: dict[str, tuple[bool, str]] = {}
    try:
        fd = os.pidfd_open(os.getpid())
    except (OSError, AttributeError) as e:
        present["pidfd"] = (False, f"pidfd_open: {e}")
        fd = -1
    else:
        present["pidfd"] = (True, "")
    if fd >= 0:
        try:
            try:  # our own process is not our child: ECHILD where P_PIDFD exists, EINVAL where it does not
                os.waitid(os.P_PIDFD, fd, os.WEXITED | os.WNOHANG)
                present["waitid P_PIDFD"] = (True, "")
            except ChildProcessError:
                present["waitid P_PIDFD"] = (True, "")
            except OSError as e:
                present["waitid P_PIDFD"] = (False, _errname(e.errno or 0))
            try:
                _pidfd_info_exit(fd)
                present["PIDFD_GET_INFO"] = (True, "")
            except OSError as e:
                present["PIDFD_GET_INFO"] = (False, _errname(e.errno or 0))
        finally:
            os.close(fd)
    if present.get("PIDFD_GET_INFO", (False, ""))[0]:
        present["PIDFD_INFO_EXIT"] = reaped_status_readable()
    else:
        present["PIDFD_INFO_EXIT"] = (False, "no PIDFD_GET_INFO")
    present["epoll_pwait2"] = (_kqrs._has_epoll_pwait2(), "")
    conn = _kqrs._proc_support()[2]
    present["process connector"] = (conn == 0, "" if conn == 0 else _errname(conn))
    rows = []
    for f in KERNEL_FEATURES:
        ok, note = present.get(f.name, (False, "not probed: needs pidfd"))
        rows.append({**f._asdict(), "present": ok, "note": note})
    return rows


def probe_kernel(features: list[dict[str, Any]]) -> tuple[str, str]:
    have = [
        f"{f['name']} ({f['since'].split(',')[0]}): {'yes' if f['present'] else 'no'}"
        + (f" [{f['note']}]" if f["note"] and not f["present"] else "")
        for f in features
    ]
    missing = [f for f in features if not f["present"]]
    summary = f"Linux {platform.release()}; kqrs supports {OLDEST_KERNEL}+. " + ", ".join(have)
    if any(f["name"] == "pidfd" for f in missing):
        return NO, summary
    return (PARTIAL if missing else OK), summary


def build_info() -> dict[str, Any]:
    """How the installed extension was built (from the extension itself), and the wheel tag pip recorded."""
    info: dict[str, Any] = dict(_kqrs.build_info())
    info["wheel_tag"] = None
    try:
        from importlib.metadata import distribution

        wheel = distribution("kqrs").read_text("WHEEL") or ""
        tags = [ln.split(":", 1)[1].strip() for ln in wheel.splitlines() if ln.startswith("Tag:")]
        info["wheel_tag"] = tags[-1] if tags else None
    except Exception:  # not installed from a wheel (a source tree on sys.path): no tag to show
        pass
    return info


def probe_build(info: dict[str, Any]) -> tuple[str, str]:
    interp_ft = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))
    parts = [
        f"kqrs {info['version']}",
        f"wheel {info['wheel_tag']}" if info["wheel_tag"] else "not from a wheel",
        f"{info['python_abi']} ({'free-threaded' if info['free_threaded'] else 'GIL'})",
        f"{info['target']}, linked for glibc {info['glibc']}",
        f"{info['profile']}, debug assertions {'ON (a development build: slower)' if info['debug_assertions'] else 'off'}",
        str(info["rustc"]),
    ]
    detail = "; ".join(parts)
    package = __import__("kqrs").__version__
    if info["version"] != package:
        return NO, f"the extension is kqrs {info['version']} but the Python package is {package}: " + detail
    if info["free_threaded"] != interp_ft:
        return NO, "the extension and the interpreter disagree on free-threading: " + detail
    return OK, detail


def probe_threads() -> tuple[str, str]:
    import threading

    gil = getattr(sys, "_is_gil_enabled", lambda: True)()
    # a thread blocked in control() must let this one run: it triggers the event the other waits for
    got: list[Any] = []
    with kqueue() as kq:
        kq.control([kevent(1, _kqrs.KQ_FILTER_USER, _kqrs.KQ_EV_ADD | _kqrs.KQ_EV_CLEAR)], 0)
        t = threading.Thread(target=lambda: got.append(kq.control(None, 1, 5)))
        t0 = time.monotonic()
        t.start()
        time.sleep(0.05)
        kq.control([kevent(1, _kqrs.KQ_FILTER_USER, 0, _kqrs.KQ_NOTE_TRIGGER)], 0)
        t.join(10)
        dt = time.monotonic() - t0
    if not got or len(got[0]) != 1 or dt > 2:
        return NO, f"a thread blocked in control() was not woken by another's trigger ({got}, {dt:.2f} s)"
    if gil:
        return OK, "GIL build: another thread runs while one is blocked in control(), and wakes it"
    if getattr(sys, "_is_gil_enabled", lambda: True)():
        return PARTIAL, "free-threaded build, but the GIL is enabled now that kqrs is loaded"
    return (
        OK,
        "free-threaded build: the GIL stays disabled with kqrs loaded; a blocked control() is woken by another thread",
    )


PROBES: list[tuple[str, Callable[[], tuple[str, str]]]] = [
    ("EVFILT_READ", probe_read),
    ("EVFILT_WRITE", probe_write),
    ("EVFILT_TIMER", probe_timer),
    ("EVFILT_USER", probe_user),
    ("EVFILT_VNODE", probe_vnode),
    ("EVFILT_PROC", probe_proc),
    ("EVFILT_SIGNAL", probe_signal),
    ("EVFILT_AIO", lambda: probe_unbuilt("AIO", _kqrs.KQ_FILTER_AIO)),
    ("pollable / nestable", probe_nesting),
    ("fork safety", probe_fork),
    ("threads", probe_threads),
    ("pidfd", probe_pidfd),
    ("inotify", probe_inotify),
]


def collect() -> dict[str, Any]:
    build = build_info()
    features = kernel_features()
    probes: list[tuple[str, Callable[[], tuple[str, str]]]] = [
        ("build", lambda: probe_build(build)),
        *PROBES,
        ("kernel", lambda: probe_kernel(features)),
    ]
    rows = []
    for name, fn in probes:
        try:
            status, detail = fn()
        except Exception as e:  # a probe that crashes is a finding, not a crash of doctor
            status, detail = NO, f"probe raised {type(e).__name__}: {e}"
        rows.append({"feature": name, "works": status, "detail": detail})
    return {
        "kqrs": __import__("kqrs").__version__,
        "python": sys.version.split()[0],
        "kernel": platform.release(),
        "machine": platform.machine(),
        "build": build,
        "kernel_features": features,
        "rows": rows,
    }


def run(json_output: bool = False) -> int:
    report = collect()
    if json_output:
        print(json.dumps(report, indent=2))
        return 0
    print(f"kqrs {report['kqrs']} on Linux {report['kernel']} ({report['machine']}), Python {report['python']}")
    width = max(len(r["feature"]) for r in report["rows"])
    for r in report["rows"]:
        print(f"  {r['feature']:<{width}}  {r['works']:<6}  {r['detail']}")
    print(f"Kernel facilities kqrs adapts to (supported: Linux {OLDEST_KERNEL} and newer):")
    feats = report["kernel_features"]
    width = max(len(f["name"]) for f in feats)
    for f in feats:
        since = f["since"].split(",")[0]
        what = f["gives"] if f["present"] else f"without it: {f['without']}"
        print(f"  {f['name']:<{width}}  {since:<5}  {'yes' if f['present'] else 'no':<3}  {what}")
    return 0
