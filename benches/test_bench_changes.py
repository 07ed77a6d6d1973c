"""Registering N fds in one changelist vs N epoll.register calls; deleting likewise.

Each round starts from a fresh queue (made, and for deletes filled, outside the timed part).
"""

from __future__ import annotations

import select

import pytest

import kqrs
from conftest import interleaved_rounds, record_all, scaled

SIZES = (1000, 10000)
READ, ADD, DELETE = kqrs.KQ_FILTER_READ, kqrs.KQ_EV_ADD, kqrs.KQ_EV_DELETE


def _rounds(n: int) -> int:
    return scaled(100 if n <= 1000 else 30)


class Fresh:
    """setup() for benchmark.pedantic: closes the previous queue, makes a new one (optionally filled)."""

    def __init__(self, make, fill=None):
        self.make, self.fill, self.q = make, fill, None

    def __call__(self):
        self.close()
        self.q = self.make()
        if self.fill:
            self.fill(self.q)
        return (self.q,), {}

    def close(self):
        if self.q is not None:
            self.q.close()
            self.q = None


def _pedantic(benchmark, target, fresh, n):
    try:
        benchmark.pedantic(target, setup=fresh, rounds=_rounds(n), warmup_rounds=scaled(2, 0))
    finally:
        fresh.close()


@pytest.mark.parametrize("n", SIZES)
def test_add_kqrs(benchmark, socket_sets, n):
    """One control() with a prebuilt changelist of N EV_ADD kevents."""
    fds = socket_sets(n).fds
    changes = [kqrs.kevent(fd, READ, ADD) for fd in fds]

    def target(kq):
        assert kq.control(changes, 0, 0) == []

    benchmark.group = f"register {n}"
    benchmark.extra_info["key"] = f"add{n}/kqrs"
    fresh = Fresh(kqrs.kqueue)
    _pedantic(benchmark, target, fresh, n)


@pytest.mark.parametrize("n", SIZES)
def test_add_kqrs_build(benchmark, socket_sets, n):
    """The same, building the kevent objects inside the timed part (what most code does)."""
    fds = socket_sets(n).fds
    kevent = kqrs.kevent

    def target(kq):
        kq.control([kevent(fd, READ, ADD) for fd in fds], 0, 0)

    benchmark.group = f"register {n}"
    benchmark.extra_info["key"] = f"add{n}/kqrs_build"
    _pedantic(benchmark, target, Fresh(kqrs.kqueue), n)


@pytest.mark.parametrize("n", SIZES)
def test_add_epoll(benchmark, socket_sets, n):
    fds = socket_sets(n).fds
    IN = select.EPOLLIN

    def target(ep):
        reg = ep.register
        for fd in fds:
            reg(fd, IN)

    benchmark.group = f"register {n}"
    benchmark.extra_info["key"] = f"add{n}/epoll"
    _pedantic(benchmark, target, Fresh(select.epoll), n)


@pytest.mark.parametrize("n", SIZES)
def test_delete_kqrs(benchmark, socket_sets, n):
    fds = socket_sets(n).fds
    adds = [kqrs.kevent(fd, READ, ADD) for fd in fds]
    dels = [kqrs.kevent(fd, READ, DELETE) for fd in fds]

    def target(kq):
        assert kq.control(dels, 0, 0) == []

    benchmark.group = f"delete {n}"
    benchmark.extra_info["key"] = f"del{n}/kqrs"
    fresh = Fresh(kqrs.kqueue, lambda kq: kq.control(adds, 0, 0))
    _pedantic(benchmark, target, fresh, n)
    kq = kqrs.kqueue()
    kq.control(adds, 0, 0)
    kq.control(dels, 0, 0)
    assert kq._stats()[0] == 0  # every knote is gone
    kq.close()


@pytest.mark.parametrize("n", SIZES)
def test_delete_epoll(benchmark, socket_sets, n):
    fds = socket_sets(n).fds
    IN = select.EPOLLIN

    def fill(ep):
        for fd in fds:
            ep.register(fd, IN)

    def target(ep):
        unreg = ep.unregister
        for fd in fds:
            unreg(fd)

    benchmark.group = f"delete {n}"
    benchmark.extra_info["key"] = f"del{n}/epoll"
    _pedantic(benchmark, target, Fresh(select.epoll, fill), n)


# ---- every side interleaved: the figures the table's ratios come from ----------------------------


class Queues:
    """Fresh queues for interleaved_rounds(): each setup closes the queue the previous one made."""

    def __init__(self):
        self.open = []

    def fresh(self, make, fill=None):
        def setup():
            self.close()
            q = make()
            self.open.append(q)
            if fill:
                fill(q)
            return q

        return setup

    def close(self):
        for q in self.open:
            q.close()
        self.open = []


@pytest.mark.parametrize("n", SIZES)
def test_add_pair(socket_sets, n, record):
    fds = socket_sets(n).fds
    changes = [kqrs.kevent(fd, READ, ADD) for fd in fds]
    kevent, IN = kqrs.kevent, select.EPOLLIN

    def kq_prebuilt(kq):
        kq.control(changes, 0, 0)

    def kq_build(kq):
        kq.control([kevent(fd, READ, ADD) for fd in fds], 0, 0)

    def ep_register(ep):
        reg = ep.register
        for fd in fds:
            reg(fd, IN)

    qs = Queues()
    try:
        med = interleaved_rounds(
            {
                "kqrs": (qs.fresh(kqrs.kqueue), kq_prebuilt),
                "kqrs_build": (qs.fresh(kqrs.kqueue), kq_build),
                "epoll": (qs.fresh(select.epoll), ep_register),
            },
            _rounds(n),
        )
        kq = qs.fresh(kqrs.kqueue)()
        kq_prebuilt(kq)
        assert kq._stats()[0] == n
    finally:
        qs.close()
    record_all(record, f"add{n}", med)


@pytest.mark.parametrize("n", SIZES)
def test_delete_pair(socket_sets, n, record):
    fds = socket_sets(n).fds
    adds = [kqrs.kevent(fd, READ, ADD) for fd in fds]
    dels = [kqrs.kevent(fd, READ, DELETE) for fd in fds]
    IN = select.EPOLLIN

    def ep_fill(ep):
        for fd in fds:
            ep.register(fd, IN)

    def ep_unregister(ep):
        unreg = ep.unregister
        for fd in fds:
            unreg(fd)

    qs = Queues()
    try:
        med = interleaved_rounds(
            {
                "kqrs": (qs.fresh(kqrs.kqueue, lambda kq: kq.control(adds, 0, 0)), lambda kq: kq.control(dels, 0, 0)),
                "epoll": (qs.fresh(select.epoll, ep_fill), ep_unregister),
            },
            _rounds(n),
        )
    finally:
        qs.close()
    record_all(record, f"del{n}", med)
