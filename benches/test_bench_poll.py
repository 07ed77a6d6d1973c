"""Polling with nothing ready, and one ready fd among N: kqrs vs select.epoll vs selectors."""

from __future__ import annotations

import select

import pytest

import kqrs
from _util import SIZES, interleaved, on_kqrs, record_all, scaled

ROUNDS = scaled(600, 3)


# ---- nothing ready -------------------------------------------------------------------------------


def test_empty_kqrs(benchmark, kq):
    benchmark.group = "empty control"
    benchmark.extra_info["key"] = "empty/kqrs"
    assert benchmark(kq.control, None, 1, 0) == []


def test_empty_epoll(benchmark, ep):
    benchmark.group = "empty control"
    benchmark.extra_info["key"] = "empty/epoll"
    assert benchmark(ep.poll, 0) == []


# ---- one ready among N ---------------------------------------------------------------------------


@pytest.mark.parametrize("n", SIZES)
def test_one_ready_kqrs(benchmark, kq, socket_sets, n):
    s = socket_sets(n)
    kq.control([kqrs.kevent(fd, kqrs.KQ_FILTER_READ, kqrs.KQ_EV_ADD) for fd in s.fds], 0, 0)
    s.drain()
    s.make_ready()
    benchmark.group = f"one ready among {n}"
    benchmark.extra_info["key"] = f"ready{n}/kqrs"
    [ev] = benchmark(kq.control, None, 1, 0)
    assert (ev.ident, ev.filter, ev.data) == (s.fds[0], kqrs.KQ_FILTER_READ, 1)
    s.drain()


@pytest.mark.parametrize("n", SIZES)
def test_one_ready_epoll(benchmark, ep, socket_sets, n):
    s = socket_sets(n)
    for fd in s.fds:
        ep.register(fd, select.EPOLLIN)
    s.drain()
    s.make_ready()
    benchmark.group = f"one ready among {n}"
    benchmark.extra_info["key"] = f"ready{n}/epoll"
    assert benchmark(ep.poll, 0) == [(s.fds[0], select.EPOLLIN)]
    s.drain()


@pytest.mark.parametrize("n", SIZES)
def test_one_ready_epollselector(benchmark, socket_sets, n):
    import selectors

    s = socket_sets(n)
    sel = selectors.EpollSelector()
    try:
        for fd in s.fds:
            sel.register(fd, selectors.EVENT_READ)
        s.drain()
        s.make_ready()
        benchmark.group = f"one ready among {n}"
        benchmark.extra_info["key"] = f"ready{n}/epollselector"
        [(key, mask)] = benchmark(sel.select, 0)
        assert (key.fd, mask) == (s.fds[0], selectors.EVENT_READ)
    finally:
        sel.close()
        s.drain()


@pytest.mark.parametrize("n", SIZES)
def test_one_ready_kqueueselector(benchmark, kq_selectors, socket_sets, n):
    selectors = kq_selectors
    s = socket_sets(n)
    sel = selectors.KqueueSelector()
    try:
        assert on_kqrs(sel)
        for fd in s.fds:
            sel.register(fd, selectors.EVENT_READ)
        s.drain()
        s.make_ready()
        benchmark.group = f"one ready among {n}"
        benchmark.extra_info["key"] = f"ready{n}/kqueueselector"
        [(key, mask)] = benchmark(sel.select, 0)
        assert (key.fd, mask) == (s.fds[0], selectors.EVENT_READ)
    finally:
        sel.close()
        s.drain()


# ---- every side interleaved: the figures the table's ratios come from ----------------------------


def test_empty_pair(kq, ep, record):
    assert kq.control(None, 1, 0) == [] and ep.poll(0) == []
    g = {"kq": kq, "ep": ep}
    med = interleaved({"kqrs": ("kq.control(None, 1, 0)", g), "epoll": ("ep.poll(0)", g)}, ROUNDS, scaled(500, 5))
    record_all(record, "empty", med)


@pytest.mark.parametrize("n", SIZES)
def test_one_ready_pair(kq, ep, kq_selectors, socket_sets, n, record):
    selectors = kq_selectors
    s = socket_sets(n)
    esel, ksel = selectors.EpollSelector(), selectors.KqueueSelector()
    try:
        assert on_kqrs(ksel)
        kq.control([kqrs.kevent(fd, kqrs.KQ_FILTER_READ, kqrs.KQ_EV_ADD) for fd in s.fds], 0, 0)
        for fd in s.fds:
            ep.register(fd, select.EPOLLIN)
            esel.register(fd, selectors.EVENT_READ)
            ksel.register(fd, selectors.EVENT_READ)
        s.drain()
        s.make_ready()
        [ev] = kq.control(None, 1, 0)
        assert (ev.ident, ev.data) == (s.fds[0], 1)
        assert ep.poll(0) == [(s.fds[0], select.EPOLLIN)]
        assert [k.fd for k, _ in esel.select(0)] == [s.fds[0]] == [k.fd for k, _ in ksel.select(0)]
        g = {"kq": kq, "ep": ep, "esel": esel, "ksel": ksel}
        med = interleaved(
            {
                "kqrs": ("kq.control(None, 1, 0)", g),
                "epoll": ("ep.poll(0)", g),
                "epollselector": ("esel.select(0)", g),
                "kqueueselector": ("ksel.select(0)", g),
            },
            ROUNDS,
            scaled(200, 3),
        )
        record_all(record, f"ready{n}", med)
    finally:
        esel.close()
        ksel.close()
        s.drain()
