"""``kqrs doctor``: probe this machine and say, filter by filter and feature by feature, what works.

Every row comes from a live probe (nothing is assumed from the kernel version), and a row that does not
work says why.
"""

from __future__ import annotations

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
    with kqueue() as kq:
        a, b = socket.socketpair()
        with a, b:
            ev = _one(kq, [kevent(a, _kqrs.KQ_FILTER_WRITE)])
            if not ev or ev[0].data <= 0:
                return NO, f"socketpair: {ev}"
            free = ev[0].data
            a.send(b"x" * 1000)
            ev2 = _one(kq, None)
            if not ev2 or ev2[0].data >= free:
                return PARTIAL, "socket write space does not shrink as data is queued"
        r, w = os.pipe()
        try:
            ev = _one(kq, [kevent(w, _kqrs.KQ_FILTER_WRITE)])
            if not ev or ev[0].data <= 0:
                return NO, f"pipe: {ev}"
        finally:
            os.close(r)
            os.close(w)
    return OK, "sockets and pipes (free space), EV_EOF, NOTE_LOWAT"


def probe_timer() -> tuple[str, str]:
    with kqueue() as kq:
        t0 = time.monotonic()
        ev = _one(kq, [kevent(1, _kqrs.KQ_FILTER_TIMER, _kqrs.KQ_EV_ADD | _kqrs.KQ_EV_ONESHOT, 0, 20)])
        dt = time.monotonic() - t0
        if not ev or dt < 0.019:
            return NO, f"20 ms oneshot: {ev} after {dt:.4f}s"
        dl = int((time.time() + 0.02) * 1e6)
        ev = _one(
            kq, [kevent(2, _kqrs.KQ_FILTER_TIMER, _kqrs.KQ_EV_ADD, _kqrs.KQ_NOTE_ABSOLUTE | _kqrs.KQ_NOTE_USECONDS, dl)]
        )
        if not ev:
            return PARTIAL, "NOTE_ABSOLUTE did not fire"
    pw2 = "ns-precision waits (epoll_pwait2)" if _kqrs._has_epoll_pwait2() else "ms-precision waits (no epoll_pwait2)"
    return OK, f"timerfd per timer; all units, NOTE_ABSOLUTE, overrun counts; {pw2}"


def probe_user() -> tuple[str, str]:
    with kqueue() as kq:
        ev = _one(kq, [kevent(7, _kqrs.KQ_FILTER_USER, _kqrs.KQ_EV_ADD | _kqrs.KQ_EV_CLEAR)], 0)
        ev = _one(kq, [kevent(7, _kqrs.KQ_FILTER_USER, 0, _kqrs.KQ_NOTE_TRIGGER | _kqrs.KQ_NOTE_FFCOPY | 5)], 0)
        if not ev or ev[0].fflags != 5:
            return NO, f"trigger: {ev}"
    return OK, "no fd per knote; NOTE_FF* operations"


def probe_unbuilt(name: str, filt: int) -> tuple[str, str]:
    with kqueue() as kq:
        ev = kq.control([kevent(os.getpid(), filt, _kqrs.KQ_EV_ADD, 0)], 1, 0)
    if ev and ev[0].flags & _kqrs.KQ_EV_ERROR and ev[0].data:
        return NO, f"not built yet: EV_ADD fails with {_errname(ev[0].data)}, never silently"
    return NO, f"unexpected answer {ev}"


def probe_proc() -> tuple[str, str]:
    import subprocess

    pidfd, _getinfo, conn = _kqrs._proc_support()
    if not pidfd:
        return NO, "pidfd_open(2) is missing (Linux < 5.3): NOTE_EXIT cannot be watched without reaping"
    notes = []
    with kqueue() as kq:
        p = subprocess.Popen(["sh", "-c", "exit 3"])
        ev = _one(kq, [kevent(p.pid, _kqrs.KQ_FILTER_PROC, _kqrs.KQ_EV_ADD, _kqrs.KQ_NOTE_EXIT)], 5)
        if not ev or ev[0].data != 3 << 8:
            return NO, f"child exit: {ev}"
        if p.wait() != 3:
            return NO, "kqrs reaped the child: waitpid() lost its status"
        notes.append("NOTE_EXIT with wait status for children and non-children, never reaping")
    reaped, _ = reaped_status_readable()
    notes.append(
        "status of processes reaped by others" + ("" if reaped else ": no (needs PIDFD_INFO_EXIT, Linux 6.15)")
    )
    if conn == 0:
        notes.append("NOTE_FORK/NOTE_EXEC/NOTE_TRACK via the process connector")
        return OK, "; ".join(notes)
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
        "inotify, one instance per kqueue; follows the open file; FreeBSD's notes and order per "
        "operation, plus libkqueue's NOTE_TRUNCATE (0x80); no wake-up on open/read/close unless asked: "
        "opt-in NOTE_OPEN 0x800 (FreeBSD's 0x80 is NOTE_TRUNCATE here), NOTE_CLOSE 0x100, "
        "NOTE_CLOSE_WRITE 0x200, NOTE_READ 0x400"
    )


def probe_signal() -> tuple[str, str]:
    import signal as sig

    seen = []
    old = sig.signal(sig.SIGUSR2, lambda s, f: seen.append(s))
    try:
        with kqueue() as kq:
            kq.control([kevent(sig.SIGUSR2, _kqrs.KQ_FILTER_SIGNAL, _kqrs.KQ_EV_ADD)], 0)
            os.kill(os.getpid(), sig.SIGUSR2)
            os.kill(os.getpid(), sig.SIGUSR2)
            ev = _one(kq, None)
            if not ev or ev[0].data != 2:
                return NO, f"two deliveries: {ev}"
        if seen != [sig.SIGUSR2, sig.SIGUSR2]:
            return PARTIAL, "deliveries counted, but the application's handler did not run each time"
    finally:
        sig.signal(sig.SIGUSR2, old)
    return OK, "counted by a chaining handler: the application's handlers still run, no mask, no thread"


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
    return OK, "the kqueue fd is an epoll fd: poll/select/epoll and EVFILT_READ see it"


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
        return OK, "a kqueue is closed in the child (pthread_atfork generation)"
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
    return OK, "pidfd_open works (EVFILT_PROC's NOTE_EXIT will use it)"


def probe_inotify() -> tuple[str, str]:
    try:
        with open("/proc/sys/fs/inotify/max_user_watches") as f:
            watches = f.read().strip()
    except OSError:
        watches = "?"
    return OK, f"inotify available (max_user_watches={watches})"


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
    gil = getattr(sys, "_is_gil_enabled", lambda: True)()
    if gil:
        return OK, "GIL build: the GIL is released while control() blocks"
    return OK, "free-threaded build: the GIL stays disabled with kqrs imported"


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
