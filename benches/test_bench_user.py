"""EVFILT_USER vs eventfd: trigger + retrieve in one thread, and wake-up latency across threads.

Both sides ask for one event slot: `kq.control(..., 1, ...)` vs `ep.poll(..., 1)`.
"""

from __future__ import annotations

import os
import select

import pytest

import kqrs

from _util import Waiter, interleaved, percentile, record_all, scaled

USER = kqrs.KQ_FILTER_USER


@pytest.fixture
def user_kq():
    kq = kqrs.kqueue()
    kq.control([kqrs.kevent(1, USER, kqrs.KQ_EV_ADD | kqrs.KQ_EV_CLEAR)], 0, 0)
    yield kq
    kq.close()


@pytest.fixture
def efd_ep():
    efd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
    ep = select.epoll()
    ep.register(efd, select.EPOLLIN)
    yield efd, ep
    ep.close()
    os.close(efd)


def test_user_trigger_kqrs(benchmark, user_kq):
    """Trigger and retrieve in one control() call."""
    chl = [kqrs.kevent(1, USER, 0, kqrs.KQ_NOTE_TRIGGER)]
    benchmark.group = "user trigger+retrieve"
    benchmark.extra_info["key"] = "user/kqrs"
    [ev] = benchmark(user_kq.control, chl, 1, 0)
    assert (ev.ident, ev.filter, ev.flags & kqrs.KQ_EV_CLEAR) == (1, USER, kqrs.KQ_EV_CLEAR)
    assert user_kq.control(None, 1, 0) == []


def test_user_trigger_kqrs_two_calls(benchmark, user_kq):
    """Trigger in one control() call, retrieve with control(None, 1, 0)."""
    chl = [kqrs.kevent(1, USER, 0, kqrs.KQ_NOTE_TRIGGER)]
    control = user_kq.control

    def f():
        control(chl, 0, 0)
        return control(None, 1, 0)

    benchmark.group = "user trigger+retrieve"
    benchmark.extra_info["key"] = "user/kqrs_two_calls"
    [ev] = benchmark(f)
    assert (ev.ident, ev.filter) == (1, USER)


def test_user_trigger_eventfd(benchmark, efd_ep):
    efd, ep = efd_ep
    write, read, poll = os.eventfd_write, os.eventfd_read, ep.poll

    def f():
        write(efd, 1)
        r = poll(0, 1)
        read(efd)
        return r

    benchmark.group = "user trigger+retrieve"
    benchmark.extra_info["key"] = "user/eventfd"
    assert benchmark(f) == [(efd, select.EPOLLIN)]


def test_user_trigger_pair(user_kq, efd_ep, record):
    """All three sides interleaved: the figures the table's ratios come from."""
    efd, ep = efd_ep
    g = {
        "c": user_kq.control,
        "chl": [kqrs.kevent(1, USER, 0, kqrs.KQ_NOTE_TRIGGER)],
        "w": os.eventfd_write,
        "r": os.eventfd_read,
        "p": ep.poll,
        "efd": efd,
    }
    assert len(user_kq.control(g["chl"], 1, 0)) == 1
    med = interleaved(
        {
            "kqrs": ("c(chl, 1, 0)", g),
            "kqrs_two_calls": ("c(chl, 0, 0); c(None, 1, 0)", g),
            "eventfd": ("w(efd, 1); p(0, 1); r(efd)", g),
        },
        scaled(600, 3),
        scaled(200, 3),
    )
    assert user_kq.control(None, 1, 0) == [] and ep.poll(0, 1) == []
    record_all(record, "user", med)


# ---- cross-thread wake-up latency ----------------------------------------------------------------


def test_user_wakeup_latency(benchmark, user_kq, efd_ep, record):
    """Trigger from the main thread, a second thread blocked in `control(None, 1, None)` /
    `epoll.poll(-1, 1)` wakes: p50/p99 of trigger -> returned, ready to wait again (the eventfd side reads
    the counter back to 0, which EV_CLEAR does inside kqrs's call). Samples alternate in chunks between the
    two, the order swapped every chunk."""
    efd, ep = efd_ep
    trig = [kqrs.kevent(1, USER, 0, kqrs.KQ_NOTE_TRIGGER)]

    def kq_wait():
        [ev] = user_kq.control(None, 1, None)
        assert ev.ident == 1

    def efd_wait():
        assert ep.poll(-1, 1) == [(efd, select.EPOLLIN)]
        os.eventfd_read(efd)

    kq_fire = lambda: user_kq.control(trig, 0, 0)  # noqa: E731
    efd_fire = lambda: os.eventfd_write(efd, 1)  # noqa: E731
    wk, we = Waiter(kq_wait), Waiter(efd_wait)
    wk.start()
    we.start()
    lat = {"kqrs": [], "eventfd": []}
    samples, chunk = scaled(2000, 4), scaled(100, 2)

    sides = [("kqrs", wk, kq_fire), ("eventfd", we, efd_fire)]

    def run():
        for c in range(samples // chunk):
            for side, w, fire in sides if c % 2 == 0 else sides[::-1]:
                lat[side] += [w.sample(fire) for _ in range(chunk)]

    try:
        benchmark.group = "user cross-thread wake-up"
        benchmark.extra_info["key"] = "xthread/run"
        benchmark.pedantic(run, rounds=1, iterations=1)
    finally:
        wk.finish(kq_fire)
        we.finish(efd_fire)
    assert not wk.is_alive() and not we.is_alive()
    for side, xs in lat.items():
        assert len(xs) == samples and min(xs) > 0
        record(f"xthread/{side}.p50", percentile(xs, 50) / 1000, "us")
        record(f"xthread/{side}.p99", percentile(xs, 99) / 1000, "us")
