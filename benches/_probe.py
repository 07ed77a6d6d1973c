"""Measurements that need a fresh process of their own (run by test_bench_memory.py / test_bench_fork.py).

    python _probe.py memory KIND COUNT      KIND = user | timer | read; prints JSON
    python _probe.py fork MODE FORKS         MODE = base | import | user | read_kqrs | read_epoll; prints JSON

Memory: user-space RSS grown by adding COUNT knotes (in changelists of 1,000) to one kqueue, divided by
COUNT; and the fds a kqueue and a knote take. Kernel memory (epoll items, timerfds) is not in RSS.
Fork: os.fork() + os._exit(0) in the child + waitpid(), timed in a process that holds MODE's state.
Every fork mode first imports the stdlib modules `import kqrs` brings in (threading above all: its at-fork
hook alone costs CPython ~0.4 ms per fork), so a difference is kqrs's own.
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

    f0 = nfds()
    kq = kqrs.kqueue()
    fds_per_kqueue = nfds() - f0
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
    }


# What `import kqrs` imports from the stdlib (kqrs._queue); the fork baseline imports them too.
KQRS_STDLIB_DEPS = ("collections", "select", "threading", "time", "typing")


def fork(mode: str, forks: int) -> dict:
    keep: list = []
    for m in KQRS_STDLIB_DEPS:
        __import__(m)
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
    return {"mode": mode, "ns": lat, "rss": rss(), "imported_kqrs": "kqrs" in sys.modules}


def main() -> None:
    raise_nofile()
    what = sys.argv[1]
    if what == "memory":
        out = memory(sys.argv[2], int(sys.argv[3]))
    elif what == "fork":
        out = fork(sys.argv[2], int(sys.argv[3]))
    else:
        raise SystemExit(__doc__)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
