"""Threads and free-threading: exactly-once delivery, close() waking waiters, races with changes.

These tests are also run under pytest-run-parallel (`--parallel-threads=4`), each test body in four
threads at once, on the GIL build and on free-threaded CPython; every test owns its kqueues.
"""

from __future__ import annotations

import errno
import os
import socket
import sys
import sysconfig
import threading
import time

import pytest

import kqrs
from kqrs import EventQueue, kevent, kqueue

from kqhelpers import ADD, CLEAR, DELETE, DISPATCH, ENABLE, ONESHOT, READ, TIMER, TRIGGER, USER


def _run(n: int, target, *args) -> list[threading.Thread]:
    ts = [threading.Thread(target=target, args=args) for _ in range(n)]
    for t in ts:
        t.start()
    return ts


def _join(ts: list[threading.Thread]) -> None:
    for t in ts:
        t.join(10)
        assert not t.is_alive(), "a thread hung"


@pytest.mark.skipif(not sysconfig.get_config_var("Py_GIL_DISABLED"), reason="needs free-threaded CPython")
def test_gil_stays_disabled_with_kqrs_imported() -> None:
    assert sys._is_gil_enabled() is False


@pytest.mark.parametrize("flag", [ONESHOT, DISPATCH])
def test_oneshot_and_dispatch_reach_exactly_one_waiter(flag: int) -> None:
    with kqueue() as kq:
        for _ in range(30):
            kq.control([kevent(1, USER, ADD | flag)], 0)
            got: list[int] = []
            lock = threading.Lock()
            start = threading.Barrier(5)

            def waiter() -> None:
                start.wait()  # noqa: B023
                evs = kq.control(None, 4, 0.05)
                with lock:  # noqa: B023
                    got.extend(e.ident for e in evs)  # noqa: B023

            ts = _run(4, waiter)
            start.wait()
            kq.control([kevent(1, USER, ENABLE, TRIGGER)], 0)
            _join(ts)
            assert got == [1]
            if flag == DISPATCH:
                kq.control([kevent(1, USER, DELETE)], 0)


def test_timer_expiry_reaches_exactly_one_waiter() -> None:
    with kqueue() as kq:
        got: list[int] = []
        lock = threading.Lock()

        def waiter() -> None:
            evs = kq.control(None, 4, 0.3)
            with lock:
                got.extend(e.data for e in evs)

        ts = _run(4, waiter)
        kq.control([kevent(9, TIMER, ADD | ONESHOT, 0, 20)], 0)
        _join(ts)
        assert got == [1]


def test_delete_racing_delivery_is_safe() -> None:
    with kqueue() as kq:
        stop = threading.Event()
        seen: list[int] = []

        def waiter() -> None:
            while not stop.is_set():
                seen.extend(e.ident for e in kq.control(None, 8, 0.005))

        ts = _run(3, waiter)
        for i in range(2000):
            ident = i % 8
            kq.control([kevent(ident, USER, ADD | CLEAR, TRIGGER)], 0)
            kq.control([kevent(ident, USER, DELETE)], 0)
        stop.set()
        _join(ts)
        assert set(seen) <= set(range(8))
        assert kq._stats()[0] == 0  # every knote gone


def test_close_wakes_every_waiter() -> None:
    kq = kqueue()
    outcomes: list[str] = []
    lock = threading.Lock()

    def waiter() -> None:
        try:
            r = kq.control(None, 1)
            out = f"returned {r}"
        except ValueError:
            out = "ValueError"
        except OSError as e:
            out = f"OSError {e.errno}"
        with lock:
            outcomes.append(out)

    ts = _run(4, waiter)
    time.sleep(0.05)
    kq.close()
    _join(ts)
    assert outcomes == ["ValueError"] * 4


def test_rapid_open_close_of_watched_fds_while_another_thread_waits() -> None:
    with kqueue() as kq:
        stop = threading.Event()
        errors: list[BaseException] = []

        def waiter() -> None:
            try:
                while not stop.is_set():
                    kq.control(None, 16, 0.002)
            except BaseException as e:  # pragma: no cover - a failure is reported below
                errors.append(e)

        ts = _run(2, waiter)
        for _ in range(300):
            a, b = socket.socketpair()
            kq.control([kevent(a, READ, ADD)], 0)
            b.send(b"x")
            a.close()
            b.close()
        stop.set()
        _join(ts)
        assert errors == []
        # no event for a closed fd keeps the queue busy
        t = time.monotonic()
        assert kq.control(None, 16, 0.05) == []
        assert time.monotonic() - t >= 0.05


def test_event_queue_exactly_once_across_consumers() -> None:
    with EventQueue() as q:
        got: list[int] = []
        lock = threading.Lock()

        def consumer() -> None:
            while True:
                x = q.get(timeout=5)
                if x is None:
                    return
                with lock:
                    got.append(x)

        ts = _run(4, consumer)
        producers = _run(2, lambda: [q.put(i) for i in range(2500)])
        _join(producers)
        for _ in ts:
            q.put(None)
        _join(ts)
        assert sorted(got) == sorted(list(range(2500)) * 2)


def test_event_queue_is_an_event_in_another_kqueue() -> None:
    with EventQueue() as q, kqueue() as kq:
        kq.control([kevent(q.fileno(), READ, ADD)], 0)
        assert kq.control(None, 1, 0) == []
        q.put("a")
        q.put("b")
        assert len(q) == 2
        assert [e.ident for e in kq.control(None, 1, 1)] == [q.fileno()]
        assert q.get_nowait() == "a" and q.get_nowait() == "b"
        assert kq.control(None, 1, 0) == []  # empty again: no event
        with pytest.raises(kqrs.Empty):
            q.get_nowait()


def test_event_queue_get_timeout_and_close() -> None:
    q = EventQueue()
    t = time.monotonic()
    with pytest.raises(kqrs.Empty):
        q.get(timeout=0.05)
    assert time.monotonic() - t >= 0.05
    result: list[str] = []

    def waiter() -> None:
        try:
            q.get()
            result.append("item")
        except ValueError:
            result.append("closed")

    ts = _run(2, waiter)
    time.sleep(0.05)
    q.close()
    _join(ts)
    assert result == ["closed", "closed"]
    with pytest.raises(ValueError):
        q.put(1)
    assert q.closed


@pytest.mark.parametrize("maxsize", [0, 1, 8])
def test_event_queue_many_producers_many_consumers(maxsize: int) -> None:
    """4 producers, 4 consumers (get, get with a timeout, get_many, get_nowait): every item exactly once,
    and each consumer sees each producer's items in the order they were put."""
    n = 2000
    with EventQueue(maxsize) as q:
        received: list[list[tuple[int, int]]] = [[] for _ in range(4)]

        def produce(p: int) -> None:
            for i in range(n):
                q.put((p, i), timeout=10)

        def consume(k: int) -> None:
            mine = received[k]
            while True:
                if k == 0:
                    items = [q.get(timeout=10)]
                elif k == 1:
                    try:
                        items = [q.get(timeout=0.001)]
                    except kqrs.Empty:
                        continue
                elif k == 2:
                    items = q.get_many(16, timeout=10)
                else:
                    try:
                        items = [q.get_nowait()]
                    except kqrs.Empty:
                        time.sleep(0)
                        continue
                done = False
                for x in items:
                    if x is None:
                        if done:
                            q.put(None)  # another consumer's end marker, taken in a batch: given back
                        done = True
                    else:
                        mine.append(x)
                if done:
                    return

        cs = [threading.Thread(target=consume, args=(k,)) for k in range(4)]
        ps = [threading.Thread(target=produce, args=(p,)) for p in range(4)]
        for t in cs + ps:
            t.start()
        _join(ps)
        for _ in cs:
            q.put(None, timeout=10)  # one end marker per consumer, after every item
        _join(cs)
        got = sorted(x for r in received for x in r)
        assert got == [(p, i) for p in range(4) for i in range(n)]
        for r in received:
            for p in range(4):
                seq = [i for (pp, i) in r if pp == p]
                assert seq == sorted(seq)
        assert q.qsize() == 0 and q._stats()[:2] == (0, 0)


def test_event_queue_close_while_producers_and_consumers_run() -> None:
    q: EventQueue[int] = EventQueue(4)
    put: list[int] = []
    got: list[int] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def produce(base: int) -> None:
        try:
            for i in range(base, base + 100000):
                q.put(i)
                with lock:
                    put.append(i)
        except ValueError:
            pass
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    def consume() -> None:
        try:
            while True:
                x = q.get()
                with lock:
                    got.append(x)
        except ValueError:
            pass
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    ts = _run(1, produce, 0) + _run(1, produce, 1_000_000) + _run(3, consume)
    time.sleep(0.1)
    q.close()
    _join(ts)
    assert errors == []
    assert len(got) == len(set(got)) and set(got) <= set(put)  # nothing twice, nothing made up
    assert q.closed


def test_event_queue_shared_by_an_asyncio_loop_and_threads() -> None:
    import asyncio

    n = 3000
    q: EventQueue[int | None] = EventQueue()
    from_loop: list[int] = []
    from_threads: list[int] = []
    lock = threading.Lock()

    async def loop_consumers() -> None:
        async def one() -> None:
            while (x := await q.async_get()) is not None:
                from_loop.append(x)

        await asyncio.gather(*(one() for _ in range(3)))

    def thread_consumer() -> None:
        while (x := q.get(timeout=10)) is not None:
            with lock:
                from_threads.append(x)

    loop_thread = threading.Thread(target=lambda: asyncio.run(asyncio.wait_for(loop_consumers(), 30)))
    loop_thread.start()
    cs = _run(2, thread_consumer)
    ps = _run(2, lambda base: [q.put(base + i) for i in range(n)], 0)
    ps += _run(1, lambda: [q.put(10 * n + i) for i in range(n)])
    _join(ps)
    for _ in range(5):
        q.put(None)
    _join(cs + [loop_thread])
    everything = sorted(from_loop + from_threads)
    assert everything == sorted(list(range(n)) * 2 + [10 * n + i for i in range(n)])
    q.close()


def _outcome(kq, timeout):
    t0 = time.monotonic()
    try:
        r = kq.control(None, 1, timeout)
        out = f"returned {r}"
    except ValueError:
        out = "ValueError"
    except OSError as e:
        out = f"OSError {e.errno}"
    return out, time.monotonic() - t0


@pytest.mark.parametrize("timeout", [None, 30.0])
def test_kqueue_fd_closed_behind_a_waiting_thread(timeout) -> None:
    """os.close() of the kqueue's fd while a thread waits in control(): close(2) wakes no one (the waiter's
    epoll_wait holds the file), so the waiter checks its fd after each empty second of waiting: it fails
    with EBADF within about a second, the kqueue reads as closed, and closing it later leaves alone the
    number, which another file may have taken meanwhile."""
    kq = kqueue()
    kq.control([kevent(1, USER, ADD)], 0)
    got: list = []
    t = threading.Thread(target=lambda: got.append(_outcome(kq, timeout)))
    t.start()
    time.sleep(0.1)
    os.close(kq.fileno())
    t.join(5)
    assert not t.is_alive(), "the waiter never woke up"
    ((out, took),) = got
    assert out == f"OSError {errno.EBADF}", out
    assert took < 2.5
    assert kq.closed
    with pytest.raises(ValueError):
        kq.control(None, 1, 0)
    r, w = os.pipe()  # may take the kqueue's old number
    try:
        kq.close()
        os.fstat(r)
        os.fstat(w)  # still open: close() did not close a number that is not the kqueue's any more
    finally:
        os.close(r)
        os.close(w)


def test_kqueue_fd_closed_behind_several_waiting_threads() -> None:
    kq = kqueue()
    outcomes: list = []
    ts = _run(3, lambda: outcomes.append(_outcome(kq, None)))
    time.sleep(0.1)
    os.close(kq.fileno())
    _join(ts)
    # the waiter that finds the fd gone fails with EBADF; the others see the kqueue closed by then
    assert {o for o, _ in outcomes} <= {f"OSError {errno.EBADF}", "ValueError"}, outcomes
    assert f"OSError {errno.EBADF}" in {o for o, _ in outcomes}
    assert max(took for _, took in outcomes) < 2.5, outcomes
    assert kq.closed
