"""Polling with nothing ready, and one ready socket among N: `kq.control(None, 1, 0)` vs
`ep.poll(0, 1)` (both ask for one event slot); and one ready socket with its byte count: kqrs's `data`
vs `epoll.poll(0, 1)` + `fcntl.ioctl(FIONREAD)` by hand."""

from __future__ import annotations

import fcntl
import select
import termios

import pytest

import kqrs

from _util import SIZES, fionread_buffer, interleaved, record_all, scaled

ROUNDS = scaled(600, 3)


def _add_read(kq, fds):
    kq.control([kqrs.kevent(fd, kqrs.KQ_FILTER_READ, kqrs.KQ_EV_ADD) for fd in fds], 0, 0)


# ---- nothing ready -------------------------------------------------------------------------------


def test_empty_kqrs(benchmark, kq):
    benchmark.group = "empty poll, 1 slot"
    benchmark.extra_info["key"] = "empty/kqrs"
    assert benchmark(kq.control, None, 1, 0) == []


def test_empty_epoll(benchmark, ep):
    benchmark.group = "empty poll, 1 slot"
    benchmark.extra_info["key"] = "empty/epoll"
    assert benchmark(ep.poll, 0, 1) == []


# ---- one ready socket among N --------------------------------------------------------------------


@pytest.mark.parametrize("n", SIZES)
def test_one_ready_kqrs(benchmark, kq, socket_sets, n):
    s = socket_sets(n)
    _add_read(kq, s.fds)
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
    assert benchmark(ep.poll, 0, 1) == [(s.fds[0], select.EPOLLIN)]
    s.drain()


# ---- one ready socket, with the bytes it holds ---------------------------------------------------


class ReadyData:
    """One ready socket (1 byte pending) in a kqueue and in an epoll; the statements that return the
    number of readable bytes of every ready event, each side the way its user gets it."""

    KQRS = "for ev in c(None, 1, 0): n = ev.data"
    BY_HAND = "for fd, m in p(0, 1): io(fd, FIONREAD, buf); n = buf[0]"

    def __init__(self, kq, ep, s):
        _add_read(kq, s.fds)
        ep.register(s.fds[0], select.EPOLLIN)
        s.drain()
        s.make_ready()
        self.g = {
            "c": kq.control,
            "p": ep.poll,
            "io": fcntl.ioctl,
            "FIONREAD": termios.FIONREAD,
            "buf": fionread_buffer(),
            "n": -1,
        }
        for stmt in (self.KQRS, self.BY_HAND):
            self.g["n"] = -1
            exec(stmt, self.g)
            assert self.g["n"] == 1, stmt


def test_ready_data_kqrs(benchmark, kq, ep, socket_sets):
    s = socket_sets(1)
    g = ReadyData(kq, ep, s).g
    code = compile(ReadyData.KQRS, "kqrs", "exec")
    benchmark.group = "one ready socket + its byte count"
    benchmark.extra_info["key"] = "ready_data/kqrs"
    benchmark(exec, code, g)
    s.drain()


def test_ready_data_by_hand(benchmark, kq, ep, socket_sets):
    s = socket_sets(1)
    g = ReadyData(kq, ep, s).g
    code = compile(ReadyData.BY_HAND, "by_hand", "exec")
    benchmark.group = "one ready socket + its byte count"
    benchmark.extra_info["key"] = "ready_data/epoll_fionread"
    benchmark(exec, code, g)
    s.drain()


# ---- every side interleaved: the figures the table's ratios come from ----------------------------


def test_empty_pair(kq, ep, record):
    assert kq.control(None, 1, 0) == [] and ep.poll(0, 1) == []
    g = {"kq": kq, "ep": ep}
    med = interleaved({"kqrs": ("kq.control(None, 1, 0)", g), "epoll": ("ep.poll(0, 1)", g)}, ROUNDS, scaled(500, 5))
    record_all(record, "empty", med)


@pytest.mark.parametrize("n", SIZES)
def test_one_ready_pair(kq, ep, socket_sets, n, record):
    s = socket_sets(n)
    try:
        _add_read(kq, s.fds)
        for fd in s.fds:
            ep.register(fd, select.EPOLLIN)
        s.drain()
        s.make_ready()
        [ev] = kq.control(None, 1, 0)
        assert (ev.ident, ev.data) == (s.fds[0], 1)
        assert ep.poll(0, 1) == [(s.fds[0], select.EPOLLIN)]
        g = {"kq": kq, "ep": ep}
        med = interleaved(
            {"kqrs": ("kq.control(None, 1, 0)", g), "epoll": ("ep.poll(0, 1)", g)}, ROUNDS, scaled(200, 3)
        )
        record_all(record, f"ready{n}", med)
    finally:
        s.drain()


def test_ready_data_pair(kq, ep, socket_sets, record):
    s = socket_sets(1)
    try:
        g = ReadyData(kq, ep, s).g
        med = interleaved(
            {"kqrs": (ReadyData.KQRS, g), "epoll_fionread": (ReadyData.BY_HAND, g)}, ROUNDS, scaled(200, 3)
        )
        assert g["n"] == 1
        record_all(record, "ready_data", med)
    finally:
        s.drain()
