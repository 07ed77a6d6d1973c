"""Registering N sockets in one changelist vs N `epoll.register` calls; deleting likewise; and the whole
cycle (N EV_ADD in one prebuilt changelist, then N EV_DELETE in one prebuilt changelist, vs a loop of N
`epoll.register` then a loop of N `epoll.unregister`), reported per fd.

Each round starts from a fresh queue (made, and for deletes filled, outside the timed part).
"""

from __future__ import annotations

import select

import pytest

import kqrs

from _util import Queues, interleaved_rounds, record_all, scaled

SIZES = (1000, 10000)
READ, ADD, DELETE = kqrs.KQ_FILTER_READ, kqrs.KQ_EV_ADD, kqrs.KQ_EV_DELETE
IN = select.EPOLLIN


def _rounds(n: int) -> int:
    return scaled(100 if n <= 1000 else 30)


def _pedantic(benchmark, target, setup, n):
    benchmark.pedantic(target, setup=setup, rounds=_rounds(n), warmup_rounds=scaled(2, 0))


def _changes(fds, flags):
    return [kqrs.kevent(fd, READ, flags) for fd in fds]


def _ep_fill(fds):
    def fill(ep):
        for fd in fds:
            ep.register(fd, IN)

    return fill


# ---- per side (pytest-benchmark) ------------------------------------------------------------------


@pytest.mark.parametrize("n", SIZES)
def test_add_kqrs(benchmark, socket_sets, n):
    """One control() with a prebuilt changelist of N EV_ADD kevents."""
    changes = _changes(socket_sets(n).fds, ADD)

    def target(kq):
        assert kq.control(changes, 0, 0) == []

    benchmark.group = f"register {n}"
    benchmark.extra_info["key"] = f"add{n}/kqrs"
    qs = Queues()
    try:
        _pedantic(benchmark, target, qs.pedantic(kqrs.kqueue), n)
    finally:
        qs.close()


@pytest.mark.parametrize("n", SIZES)
def test_add_kqrs_build(benchmark, socket_sets, n):
    """The same, building the kevent objects inside the timed part (what most code does)."""
    fds = socket_sets(n).fds
    kevent = kqrs.kevent

    def target(kq):
        kq.control([kevent(fd, READ, ADD) for fd in fds], 0, 0)

    benchmark.group = f"register {n}"
    benchmark.extra_info["key"] = f"add{n}/kqrs_build"
    qs = Queues()
    try:
        _pedantic(benchmark, target, qs.pedantic(kqrs.kqueue), n)
    finally:
        qs.close()


@pytest.mark.parametrize("n", SIZES)
def test_add_epoll(benchmark, socket_sets, n):
    fds = socket_sets(n).fds

    def target(ep):
        reg = ep.register
        for fd in fds:
            reg(fd, IN)

    benchmark.group = f"register {n}"
    benchmark.extra_info["key"] = f"add{n}/epoll"
    qs = Queues()
    try:
        _pedantic(benchmark, target, qs.pedantic(select.epoll), n)
    finally:
        qs.close()


@pytest.mark.parametrize("n", SIZES)
def test_delete_kqrs(benchmark, socket_sets, n):
    fds = socket_sets(n).fds
    adds, dels = _changes(fds, ADD), _changes(fds, DELETE)

    def target(kq):
        assert kq.control(dels, 0, 0) == []

    benchmark.group = f"delete {n}"
    benchmark.extra_info["key"] = f"del{n}/kqrs"
    qs = Queues()
    try:
        _pedantic(benchmark, target, qs.pedantic(kqrs.kqueue, lambda kq: kq.control(adds, 0, 0)), n)
    finally:
        qs.close()
    kq = kqrs.kqueue()
    kq.control(adds, 0, 0)
    kq.control(dels, 0, 0)
    assert kq._stats()[0] == 0  # every knote is gone
    kq.close()


@pytest.mark.parametrize("n", SIZES)
def test_delete_epoll(benchmark, socket_sets, n):
    fds = socket_sets(n).fds

    def target(ep):
        unreg = ep.unregister
        for fd in fds:
            unreg(fd)

    benchmark.group = f"delete {n}"
    benchmark.extra_info["key"] = f"del{n}/epoll"
    qs = Queues()
    try:
        _pedantic(benchmark, target, qs.pedantic(select.epoll, _ep_fill(fds)), n)
    finally:
        qs.close()


# ---- every side interleaved: the figures the table's ratios come from ----------------------------


@pytest.mark.parametrize("n", SIZES)
def test_add_pair(socket_sets, n, record):
    fds = socket_sets(n).fds
    changes = _changes(fds, ADD)
    kevent = kqrs.kevent

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
    adds, dels = _changes(fds, ADD), _changes(fds, DELETE)

    def ep_unregister(ep):
        unreg = ep.unregister
        for fd in fds:
            unreg(fd)

    qs = Queues()
    try:
        med = interleaved_rounds(
            {
                "kqrs": (qs.fresh(kqrs.kqueue, lambda kq: kq.control(adds, 0, 0)), lambda kq: kq.control(dels, 0, 0)),
                "epoll": (qs.fresh(select.epoll, _ep_fill(fds)), ep_unregister),
            },
            _rounds(n),
        )
    finally:
        qs.close()
    record_all(record, f"del{n}", med)


@pytest.mark.parametrize("n", SIZES)
def test_cycle_pair(socket_sets, n, record):
    """N adds then N deletes on an empty queue; recorded as the time per fd of the whole cycle. A third side,
    the floor, makes the same epoll_ctl calls in a loop with nothing around them: what no changelist can go
    under, whatever it does in user space."""
    fds = socket_sets(n).fds
    adds, dels = _changes(fds, ADD), _changes(fds, DELETE)

    def kq_cycle(kq):
        kq.control(adds, 0, 0)
        kq.control(dels, 0, 0)

    def ep_cycle(ep):
        reg, unreg = ep.register, ep.unregister
        for fd in fds:
            reg(fd, IN)
        for fd in fds:
            unreg(fd)

    floor = kqrs._kqrs._epoll_ctl_cycle

    def floor_cycle(ep):
        # the same syscalls in a plain loop (in Rust, no knotes, no Python per fd): the kernel's share
        floor(ep.fileno(), fds, IN)

    qs = Queues()
    try:
        med = interleaved_rounds(
            {
                "kqrs": (qs.fresh(kqrs.kqueue), kq_cycle),
                "epoll": (qs.fresh(select.epoll), ep_cycle),
                "floor": (qs.fresh(select.epoll), floor_cycle),
            },
            _rounds(n),
        )
        kq = qs.fresh(kqrs.kqueue)()
        kq.control(adds, 0, 0)
        assert kq._stats()[0] == n
        kq.control(dels, 0, 0)
        assert kq._stats()[0] == 0
    finally:
        qs.close()
    record_all(record, f"cycle{n}", {k: v / n for k, v in med.items()})
