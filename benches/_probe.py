"""Measurements that need a fresh process of their own (run by test_bench_memory.py / test_bench_fork.py).

    python _probe.py memory KIND COUNT            KIND = user | timer | read; prints JSON
    python _probe.py threads                      threads kqrs starts; prints JSON
    python _probe.py deps                         the modules `import kqrs` adds (kqrs's own left out)
    python _probe.py fork MODE FORKS [MODULES]    MODE = base | import | user | read_kqrs | read_epoll

Memory: user-space RSS grown by adding COUNT knotes (in changelists of 1,000) to one kqueue, divided by
COUNT; and the fds a kqueue and a knote take. Kernel memory (epoll items, timerfds) is not in RSS.
Threads: the threads of this process (/proc/self/task) before `import kqrs`, then after knotes of every
filter kind this build has (USER, TIMER, READ, WRITE, PROC on a child, SIGNAL, VNODE) are added, have fired
and have been retrieved.
Fork: os.fork() + os._exit(0) in the child + waitpid(), timed in a process that holds MODE's state. Every
fork mode first imports MODULES (comma-separated: what `deps` printed, i.e. every module `import kqrs`
brings in but kqrs's own), so that the sides differ only in kqrs; the JSON lists `sys.modules` for the
caller to check that. Every fork mode pins itself (and so its children) to one CPU, the same for all.
"""

from __future__ import annotations

import gc
import json
import os
import resource
import socket
import sys
import time

PAGE = os.sysconf("SC_PAGE_SIZE")
CHUNK = 1000


def raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def nfds() -> int:
    return len(os.listdir("/proc/self/fd"))


def socket_fds(count: int) -> list[int]:
    """`count` raw socket fds (both ends of socketpairs), as plain ints."""
    fds: list[int] = []
    while len(fds) < count:
        a, b = socket.socketpair()
        fds += [a.detach(), b.detach()]
    for fd in fds[count:]:
        os.close(fd)
    return fds[:count]


def memory(kind: str, count: int) -> dict:
    import kqrs

    # The first kqueue of a process also makes the process-wide fds (the always-readable fd close() wakes
    # waiters with); a kqueue's own cost is what the next one takes.
    f0 = nfds()
    first = kqrs.kqueue()
    fds_first = nfds() - f0
    f0 = nfds()
    kq = kqrs.kqueue()
    fds_per_kqueue = nfds() - f0
    first.close()
    if kind == "read":
        idents = socket_fds(count)
        flt, flags, data = kqrs.KQ_FILTER_READ, kqrs.KQ_EV_ADD, 0
    elif kind == "user":
        idents = list(range(1, count + 1))
        flt, flags, data = kqrs.KQ_FILTER_USER, kqrs.KQ_EV_ADD | kqrs.KQ_EV_CLEAR, 0
    elif kind == "timer":
        idents = list(range(1, count + 1))
        flt, flags, data = kqrs.KQ_FILTER_TIMER, kqrs.KQ_EV_ADD, 3_600_000  # 1 h: none fires
    else:
        raise SystemExit(f"unknown kind {kind}")
    kevent = kqrs.kevent
    # warm the Python allocator with one chunk's worth of kevent objects, so their memory is not counted
    tmp = [kevent(i, flt, flags, 0, data) for i in idents[:CHUNK]]
    del tmp
    # and the kqueue with one knote of the kind, added and deleted: what a kqueue makes once (its timer
    # source, for TIMER and USER) is not a cost per knote
    kq.control([kevent(idents[0], flt, flags, 0, data), kevent(idents[0], flt, kqrs.KQ_EV_DELETE, 0, data)], 0, 0)
    gc.collect()
    r0, f0 = rss(), nfds()
    for i in range(0, count, CHUNK):
        kq.control([kevent(x, flt, flags, 0, data) for x in idents[i : i + CHUNK]], 0, 0)
    r1, f1 = rss(), nfds()
    knotes = kq._stats()[0]
    assert knotes == count, (knotes, count)
    kq.close()
    return {
        "kind": kind,
        "knotes": count,
        "bytes_per_knote": (r1 - r0) / count,
        "fds_per_knote": (f1 - f0) / count,
        "fds_per_kqueue": fds_per_kqueue,
        "fds_per_process": fds_first - fds_per_kqueue,
    }


def deps() -> dict:
    before = set(sys.modules)
    import kqrs  # noqa: F401

    added = sorted(m for m in set(sys.modules) - before if m != "kqrs" and not m.startswith("kqrs."))
    return {"modules": added}


def fork(mode: str, forks: int, modules: list[str]) -> dict:
    import importlib

    # Every side runs on the same one CPU (the last this process may use), its children with it: a fork's
    # cost then does not depend on where the scheduler puts the child and where the parent wakes, which on a
    # shared 2-core machine moved the medians of identical sides by 5-10% from run to run.
    os.sched_setaffinity(0, {max(os.sched_getaffinity(0))})
    keep: list = []
    for m in modules:
        importlib.import_module(m)
    if mode == "import":
        import kqrs  # noqa: F401
    elif mode in ("user", "read_kqrs"):
        import kqrs

        socks = socket_fds(1000) if mode == "read_kqrs" else None
        for _ in range(10):
            kq = kqrs.kqueue()
            if socks:
                chl = [kqrs.kevent(fd, kqrs.KQ_FILTER_READ, kqrs.KQ_EV_ADD) for fd in socks]
            else:
                chl = [kqrs.kevent(i, kqrs.KQ_FILTER_USER, kqrs.KQ_EV_ADD | kqrs.KQ_EV_CLEAR) for i in range(1000)]
            kq.control(chl, 0, 0)
            assert kq._stats()[0] == 1000
            keep.append(kq)
        # What is measured is the kqueues and their knotes: the changelist that made them goes (read_epoll
        # keeps no such list either), since every page a process holds costs each of its forks (~140 ns).
        del chl
    elif mode == "read_epoll":
        import select

        socks = socket_fds(1000)
        for _ in range(10):
            ep = select.epoll()
            for fd in socks:
                ep.register(fd, select.EPOLLIN)
            keep.append(ep)
    elif mode != "base":
        raise SystemExit(f"unknown mode {mode}")
    gc.collect()
    lat = []
    for _ in range(forks):
        t0 = time.perf_counter_ns()
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        lat.append(time.perf_counter_ns() - t0)
        assert status == 0
    return {
        "mode": mode,
        "ns": lat,
        "rss": rss(),
        "imported_kqrs": "kqrs" in sys.modules,
        "modules": sorted(sys.modules),
    }


def nthreads() -> int:
    return len(os.listdir("/proc/self/task"))


def threads() -> dict:
    """Threads kqrs starts: knotes of every filter kind this build has, added, fired and retrieved."""
    import signal
    import tempfile

    t0 = nthreads()
    import kqrs

    counts = [nthreads()]
    K = kqrs
    supported = K._kqrs._filter_supported
    kqs = [K.kqueue() for _ in range(3)]  # a few kqueues: kqrs might start something per kqueue
    kq = kqs[0]
    counts.append(nthreads())
    closers: list = []
    changes = [
        K.kevent(1, K.KQ_FILTER_USER, K.KQ_EV_ADD | K.KQ_EV_CLEAR),
        K.kevent(1, K.KQ_FILTER_TIMER, K.KQ_EV_ADD | K.KQ_EV_ONESHOT, 0, 1),
    ]
    want = {K.KQ_FILTER_USER, K.KQ_FILTER_TIMER}
    a, b = socket.socketpair()
    closers += [a.close, b.close]
    once = K.KQ_EV_ADD | K.KQ_EV_ONESHOT
    changes += [K.kevent(a, K.KQ_FILTER_READ, once), K.kevent(b, K.KQ_FILTER_WRITE, once)]
    want |= {K.KQ_FILTER_READ, K.KQ_FILTER_WRITE}
    child = None
    if supported(K.KQ_FILTER_PROC):
        r, w = os.pipe()
        child = os.fork()
        if child == 0:
            os.close(w)
            os.read(r, 1)
            os._exit(0)
        os.close(r)
        changes.append(K.kevent(child, K.KQ_FILTER_PROC, K.KQ_EV_ADD, K.KQ_NOTE_EXIT))
        want.add(K.KQ_FILTER_PROC)
    sig = signal.SIGUSR1
    if supported(K.KQ_FILTER_SIGNAL):
        old = signal.signal(sig, lambda *_: None)
        closers.append(lambda: signal.signal(sig, old))
        changes.append(K.kevent(sig, K.KQ_FILTER_SIGNAL, K.KQ_EV_ADD))
        want.add(K.KQ_FILTER_SIGNAL)
    tmp = None
    if supported(K.KQ_FILTER_VNODE):
        tmp = tempfile.NamedTemporaryFile()
        closers.append(tmp.close)
        vfd = os.open(tmp.name, os.O_RDONLY)
        closers.append(lambda: os.close(vfd))
        changes.append(K.kevent(vfd, K.KQ_FILTER_VNODE, K.KQ_EV_ADD | K.KQ_EV_CLEAR, K.KQ_NOTE_WRITE))
        want.add(K.KQ_FILTER_VNODE)
    for q in kqs:
        q.control(changes if q is kq else changes[:4], 0, 0)
    counts.append(nthreads())
    # make every one of them fire
    kq.control([K.kevent(1, K.KQ_FILTER_USER, 0, K.KQ_NOTE_TRIGGER)], 0, 0)
    b.send(b"x")
    if child is not None:
        os.close(w)
    if K.KQ_FILTER_SIGNAL in want:
        os.kill(os.getpid(), sig)
    if tmp is not None:
        tmp.write(b"x")
        tmp.flush()
    seen: set[int] = set()
    deadline = time.monotonic() + 5
    polls = 0
    while not want <= seen and time.monotonic() < deadline:
        got = {ev.filter for ev in kq.control(None, 16, 0.1)}
        polls += 1
        if not got <= seen:
            counts.append(nthreads())
            seen |= got
    if child is not None:
        os.waitpid(child, 0)
    time.sleep(0.05)  # anything started lazily has started by now
    counts.append(nthreads())
    for q in kqs:
        q.close()
    for c in reversed(closers):
        c()
    names = {getattr(K, n): n for n in dir(K) if n.startswith("KQ_FILTER_")}
    return {
        "before": t0,
        "counts": counts,
        "started": max(counts) - t0,
        "polls": polls,
        "filters": sorted(names[f] for f in want),
        "missing": sorted(names[f] for f in want - seen),
    }


def main() -> None:
    raise_nofile()
    what = sys.argv[1]
    if what == "memory":
        out = memory(sys.argv[2], int(sys.argv[3]))
    elif what == "fork":
        out = fork(
            sys.argv[2], int(sys.argv[3]), [m for m in (sys.argv[4] if len(sys.argv) > 4 else "").split(",") if m]
        )
    elif what == "threads":
        out = threads()
    elif what == "deps":
        out = deps()
    else:
        raise SystemExit(__doc__)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
