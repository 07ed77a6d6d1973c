"""One ready eventfd among 10,000 registered: `kq.control(None, 1, 0)` vs `ep.poll(0, 1)`.

One eventfd is written once and never read, so it stays readable (level-triggered) for the whole test;
the other 9,999 are never written. Its own module: 10,000 eventfds beside test_bench_poll.py's 11,001
sockets would pass the fd limit.
"""

from __future__ import annotations

import select

import kqrs

from _util import interleaved, record_all, scaled

N = 10000


def _setup(kq, ep, fds):
    kq.control([kqrs.kevent(fd, kqrs.KQ_FILTER_READ, kqrs.KQ_EV_ADD) for fd in fds], 0, 0)
    for fd in fds:
        ep.register(fd, select.EPOLLIN)
    [ev] = kq.control(None, 1, 0)
    assert (ev.ident, ev.filter) == (fds[0], kqrs.KQ_FILTER_READ)
    assert ep.poll(0, 1) == [(fds[0], select.EPOLLIN)]


def test_eventfd_ready_kqrs(benchmark, kq, ep, eventfd_set):
    s = eventfd_set(N)
    s.make_ready()
    _setup(kq, ep, s.fds)
    benchmark.group = f"one ready among {N} eventfds"
    benchmark.extra_info["key"] = f"ready{N}_eventfd/kqrs"
    [ev] = benchmark(kq.control, None, 1, 0)
    assert ev.ident == s.fds[0]


def test_eventfd_ready_epoll(benchmark, kq, ep, eventfd_set):
    s = eventfd_set(N)
    s.make_ready()
    _setup(kq, ep, s.fds)
    benchmark.group = f"one ready among {N} eventfds"
    benchmark.extra_info["key"] = f"ready{N}_eventfd/epoll"
    assert benchmark(ep.poll, 0, 1) == [(s.fds[0], select.EPOLLIN)]


def test_eventfd_ready_pair(kq, ep, eventfd_set, record):
    s = eventfd_set(N)
    s.make_ready()
    _setup(kq, ep, s.fds)
    g = {"kq": kq, "ep": ep}
    med = interleaved(
        {"kqrs": ("kq.control(None, 1, 0)", g), "epoll": ("ep.poll(0, 1)", g)}, scaled(600, 3), scaled(200, 3)
    )
    assert ep.poll(0, 1) == [(s.fds[0], select.EPOLLIN)]  # still the one ready
    record_all(record, f"ready{N}_eventfd", med)
