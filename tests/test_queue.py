"""kqrs.EventQueue: queue.Queue's API and exceptions, blocking without spinning, one waiter woken per item,
close(), the fd (readable exactly while items are queued; EVFILT_READ data = the item count), asyncio
(async_get / async_put, cancel-safe, on the default loop and on kqrs's), fork, and a property test of
exactly-once, per-producer FIFO delivery.

The many-threads tests are in test_threads.py (also run under pytest-run-parallel).
"""

from __future__ import annotations

import asyncio
import gc
import os
import queue
import select
import selectors
import signal
import sys
import sysconfig
import threading
import time
import weakref

import pytest

import kqrs
import kqrs.asyncio
from kqrs import EventQueue, kevent, kqueue

from kqhelpers import ADD, CLEAR, DELETE, READ

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import (  # noqa: E402
    HealthCheck,
    given,
    settings,
    strategies as st,  # noqa: E402
)


def readable(fd: int) -> bool:
    return bool(select.select([fd], [], [], 0)[0])


def wait_for(cond, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition never became true"
        time.sleep(0.002)


def start(target, *args) -> threading.Thread:
    t = threading.Thread(target=target, args=args, daemon=True)
    t.start()
    return t


def join(*ts: threading.Thread) -> None:
    for t in ts:
        t.join(10)
        assert not t.is_alive(), "a thread hung"


# --- queue.Queue's API ----------------------------------------------------------------------------------


def test_exceptions_are_the_queue_modules() -> None:
    assert kqrs.Empty is queue.Empty and kqrs.Full is queue.Full
    assert "EventQueue" in kqrs.__all__ and "Full" in kqrs.__all__


def test_fifo_and_the_size_methods() -> None:
    with EventQueue() as q:
        assert q.maxsize == 0 and q.qsize() == 0 and len(q) == 0 and q.empty() and not q.full()
        for i in range(5):
            q.put(i)
        q.put_nowait("five")
        assert q.qsize() == 6 and len(q) == 6 and not q.empty() and not q.full()
        assert [q.get(), q.get_nowait(), q.get(block=False), q.get(True, 1), q.get(timeout=1)] == [0, 1, 2, 3, 4]
        assert q.get() == "five" and q.empty()
        with pytest.raises(queue.Empty):
            q.get_nowait()
        with pytest.raises(queue.Empty):
            q.get(False)
        with pytest.raises(queue.Empty):
            q.get(timeout=0)


def test_plain_and_spelled_out_calls_behave_the_same() -> None:
    """put(x) / get() (the plain calls, which take kqrs's fast path) and the same calls with their
    arguments spelled out (PyO3's full methods) share one queue and one behaviour, errors included."""
    q = EventQueue(maxsize=2)
    q.put(1)
    q.put(2, True, None)
    with pytest.raises(queue.Full):
        q.put_nowait(3)
    with pytest.raises(queue.Full):
        q.put(3, block=False)
    assert [q.get(), q.get(block=True, timeout=None)] == [1, 2]
    with pytest.raises(queue.Empty):
        q.get_nowait()
    with pytest.raises(queue.Empty):
        q.get(False)
    with pytest.raises(TypeError):
        q.put()
    with pytest.raises(TypeError):
        q.get(True, None, "extra")
    with pytest.raises(TypeError):
        EventQueue.put(object(), 1)  # a method called on something that is not a queue
    q.close()
    for call in (lambda: q.put(1), lambda: q.put(1, True), lambda: q.get(), lambda: q.get(True)):
        with pytest.raises(ValueError, match="closed EventQueue"):
            call()


def test_an_item_refused_by_a_full_queue_is_released_at_once() -> None:
    """put_nowait on a full queue drops its reference to the item before it returns (no deferred release):
    the item's weakref is dead as soon as the caller lets go of it."""

    class Item:
        pass

    q = EventQueue(1)
    q.put(0)
    item = Item()
    ref = weakref.ref(item)
    with pytest.raises(queue.Full):
        q.put_nowait(item)
    with pytest.raises(queue.Full):
        q.put(item, False)
    del item
    assert ref() is None


def test_a_subclass_overriding_put_and_get_is_called() -> None:
    seen = []

    class Logged(EventQueue):
        def put(self, item, block=True, timeout=None):
            seen.append(("put", item))
            super().put(item, block, timeout)

        def get(self, block=True, timeout=None):
            item = super().get(block, timeout)
            seen.append(("get", item))
            return item

    q = Logged()
    q.put(7)
    assert q.get() == 7
    assert seen == [("put", 7), ("get", 7)]


def test_same_object_comes_out_and_references_are_released() -> None:
    class Item:
        pass

    q = EventQueue()
    item = Item()
    ref = weakref.ref(item)
    q.put(item)
    assert q.get() is item
    q.put(item)
    del item
    gc.collect()
    assert ref() is not None  # the queue holds it
    q.close()  # close() drops what is queued
    gc.collect()
    assert ref() is None


@pytest.mark.thread_unsafe  # looks at an fd number after it is closed
def test_a_queue_in_a_reference_cycle_is_collected() -> None:
    q: EventQueue[object] = EventQueue()
    fd = q.fileno()
    q.put(q)  # the queue holds itself
    q.put([q])
    ref = weakref.ref(q)
    del q
    gc.collect()
    assert ref() is None
    with pytest.raises(OSError):
        os.fstat(fd)  # and its fd is closed


def test_get_timeout_raises_empty_after_the_timeout() -> None:
    q = EventQueue()
    for timeout in (0.05, 1e-9):
        t = time.monotonic()
        with pytest.raises(queue.Empty):
            q.get(timeout=timeout)
        assert time.monotonic() - t >= timeout
    q.close()


def test_bad_timeouts_and_sizes() -> None:
    q = EventQueue(1)
    with pytest.raises(ValueError, match="non-negative"):
        q.get(timeout=-1)
    with pytest.raises(ValueError, match="non-negative"):
        q.get(timeout=float("nan"))
    with pytest.raises(TypeError):
        q.get(timeout="1")  # type: ignore[arg-type]
    q.put(1)
    with pytest.raises(ValueError, match="non-negative"):
        q.put(2, timeout=-0.5)
    with pytest.raises(ValueError):
        q.get_many(-1)
    assert EventQueue(-3).maxsize == 0  # queue.Queue: maxsize <= 0 is unbounded
    q.close()


def test_maxsize_backpressure_full_and_a_waiting_put() -> None:
    q = EventQueue(2)
    q.put(1)
    q.put_nowait(2)
    assert q.full() and q.qsize() == 2
    with pytest.raises(queue.Full):
        q.put_nowait(3)
    with pytest.raises(queue.Full):
        q.put(3, block=False)
    t = time.monotonic()
    with pytest.raises(queue.Full):
        q.put(3, timeout=0.05)
    assert time.monotonic() - t >= 0.05
    assert q.qsize() == 2  # a timed-out put put nothing
    done: list[str] = []
    putter = start(lambda: (q.put(3), done.append("put")))
    wait_for(lambda: q._stats()[1] == 1)
    assert done == [] and q.qsize() == 2
    assert q.get() == 1  # makes room: the waiting put goes in, after 2
    join(putter)
    assert done == ["put"]
    assert [q.get(), q.get()] == [2, 3]
    q.close()


def test_blocked_putters_go_in_in_order() -> None:
    q = EventQueue(1)
    q.put("first")
    putters = []
    for i in range(4):
        putters.append(start(q.put, i))
        wait_for(lambda: q._stats()[1] == i + 1)  # noqa: B023
    got = [q.get(timeout=5) for _ in range(5)]
    join(*putters)
    assert got == ["first", 0, 1, 2, 3]
    q.close()


def test_get_many() -> None:
    q = EventQueue()
    for i in range(10):
        q.put(i)
    assert q.get_many(3) == [0, 1, 2]
    assert q.get_many(0) == []
    assert q.get_many() == list(range(3, 10))
    assert q.qsize() == 0
    with pytest.raises(queue.Empty):
        q.get_many(block=False)
    with pytest.raises(queue.Empty):
        q.get_many(5, timeout=0.01)
    # blocks for the first item, then takes what is there
    t = start(lambda: (time.sleep(0.05), q.put("a")))
    assert q.get_many(5, timeout=5) == ["a"]
    join(t)
    q.close()


def test_get_many_makes_room_for_every_blocked_putter() -> None:
    q = EventQueue(2)
    q.put(0)
    q.put(1)
    putters = []
    for i in (2, 3):
        putters.append(start(q.put, i))
        wait_for(lambda: q._stats()[1] == i - 1)  # noqa: B023
    assert q.get_many() == [0, 1]
    join(*putters)
    assert q.get_many() == [2, 3]
    q.close()


def test_repr_and_generic_alias() -> None:
    q: EventQueue[int] = EventQueue(3)
    assert "qsize=0" in repr(q) and "maxsize=3" in repr(q)
    q.close()
    assert "closed" in repr(q)
    alias = EventQueue[int]
    assert alias.__origin__ is EventQueue and alias.__args__ == (int,)


# --- waiting: GIL released, no spin, one waiter per item ------------------------------------------------


def test_a_blocked_get_releases_the_gil_and_uses_no_cpu() -> None:
    q = EventQueue()
    cpu: list[float] = []

    def waiter() -> None:
        t = time.thread_time()
        with pytest.raises(queue.Empty):
            q.get(timeout=0.3)
        cpu.append(time.thread_time() - t)

    th = start(waiter)
    spins = 0
    deadline = time.monotonic() + 0.2
    while time.monotonic() < deadline:  # this thread runs Python code all along: the GIL is free
        spins += 1
    join(th)
    assert spins > 1000
    assert cpu[0] < 0.03, f"a blocked get() used {cpu[0]:.3f} s of CPU in 0.3 s"
    q.close()


def test_each_item_wakes_one_waiter_only() -> None:
    q = EventQueue()
    got: list[int] = []
    lock = threading.Lock()

    def getter() -> None:
        x = q.get(timeout=10)
        with lock:
            got.append(x)

    ts = [start(getter) for _ in range(4)]
    wait_for(lambda: q._stats()[0] == 4)
    wait_for(lambda: q._stats()[2] >= 4)
    sleeps = q._stats()[2]
    q.put(1)
    wait_for(lambda: got == [1])
    time.sleep(0.05)
    # one waiter woke; the three others never did (a herd would have put them back to sleep: more sleeps)
    assert q._stats()[:2] == (3, 0) and q._stats()[2] == sleeps
    for i in range(2, 5):
        q.put(i)
    join(*ts)
    assert sorted(got) == [1, 2, 3, 4] and q._stats()[2] == sleeps
    q.close()


@pytest.mark.thread_unsafe  # signal handlers are set from the main thread
def test_a_signal_handler_interrupts_a_blocked_get() -> None:
    class Stop(Exception):
        pass

    def handler(signum, frame):  # noqa: ANN001
        raise Stop

    old = signal.signal(signal.SIGUSR1, handler)
    q = EventQueue()
    try:
        main = threading.get_ident()
        kicker = start(lambda: (time.sleep(0.05), signal.pthread_kill(main, signal.SIGUSR1)))
        t = time.monotonic()
        with pytest.raises(Stop):
            q.get(timeout=5)
        assert time.monotonic() - t < 4
        join(kicker)
        assert q._stats()[:2] == (0, 0)  # the interrupted waiter left
        q.put(1)
        assert q.get_nowait() == 1
    finally:
        signal.signal(signal.SIGUSR1, old)
        q.close()


# --- close() --------------------------------------------------------------------------------------------


def test_close_wakes_getters_and_putters_and_later_calls_fail() -> None:
    q = EventQueue(1)
    empty = EventQueue()
    q.put("x")
    outcomes: list[str] = []
    lock = threading.Lock()

    def run(f) -> None:  # noqa: ANN001
        try:
            f()
            out = "returned"
        except ValueError as e:
            out = str(e)
        with lock:
            outcomes.append(out)

    ts = [start(run, lambda: q.put("y")) for _ in range(2)] + [start(run, empty.get) for _ in range(2)]
    wait_for(lambda: q._stats()[1] == 2 and empty._stats()[0] == 2)
    q.close()
    empty.close()
    join(*ts)
    assert sorted(outcomes) == ["get() on a closed EventQueue"] * 2 + ["put() on a closed EventQueue"] * 2
    for c in (q, empty):
        assert c.closed and c.qsize() == 0 and len(c) == 0
        with pytest.raises(ValueError, match="closed"):
            c.get_nowait()
        with pytest.raises(ValueError, match="closed"):
            c.get(timeout=1)
        with pytest.raises(ValueError, match="closed"):
            c.put(1)
        with pytest.raises(ValueError, match="closed"):
            c.get_many()
        with pytest.raises(ValueError, match="closed"):
            c.fileno()
        c.close()  # twice is fine


def test_context_manager_closes() -> None:
    with EventQueue() as q:
        q.put(1)
    assert q.closed
    with pytest.raises(ValueError):
        q.get()


# --- the fd ---------------------------------------------------------------------------------------------


def test_fileno_is_readable_exactly_while_items_are_queued() -> None:
    q = EventQueue()
    q.put("before")  # items queued before the fd exists count too
    fd = q.fileno()
    assert fd == q.fileno() and readable(fd)
    assert q.get() == "before" and not readable(fd)
    ep = select.epoll()
    ep.register(fd, select.EPOLLIN)
    for n in range(1, 4):
        q.put(n)
        assert readable(fd) and ep.poll(0) == [(fd, select.EPOLLIN)]
    assert q.get_many(2) == [1, 2] and readable(fd)
    assert q.get() == 3 and not readable(fd) and ep.poll(0) == []
    # an item handed straight to a blocked getter never makes it readable
    t = start(lambda: q.get(timeout=5))
    wait_for(lambda: q._stats()[0] == 1)
    q.put("handed")
    join(t)
    assert not readable(fd)
    q.close()  # after close: readable for good, so pollers wake and learn of it
    assert readable(fd) and ep.poll(0) == [(fd, select.EPOLLIN)]
    ep.close()


def test_read_knote_reports_the_item_count() -> None:
    with EventQueue() as q, kqueue() as kq:
        fd = q.fileno()
        kq.control([kevent(fd, READ, ADD)], 0)
        assert kq.control(None, 1, 0) == []
        for _ in range(3):
            q.put(object())
        [ev] = kq.control(None, 1, 0)
        assert (ev.ident, ev.filter, ev.data) == (fd, READ, 3)
        q.get()
        assert [e.data for e in kq.control(None, 1, 0)] == [2]
        q.get_many()
        assert kq.control(None, 1, 0) == []
        # EV_CLEAR: the empty -> non-empty edge, with the count at that moment
        kq.control([kevent(fd, READ, DELETE), kevent(fd, READ, ADD | CLEAR)], 0)
        q.put(1)
        q.put(2)
        assert [e.data for e in kq.control(None, 1, 0)] == [2]
        assert kq.control(None, 1, 0) == []
        # a blocked control() wakes for the first item
        t = start(lambda: (time.sleep(0.05), q.put(3)))
        q.get_many()
        evs = kq.control(None, 1, 5)
        join(t)
        assert [(e.ident, e.data) for e in evs] == [(fd, 1)]


def test_space_fd_is_readable_while_there_is_room() -> None:
    q = EventQueue(2)
    fd = q._space_fileno()
    assert readable(fd)
    q.put(1)
    assert readable(fd)
    q.put(2)
    assert not readable(fd)
    q.get()
    assert readable(fd)
    q.close()
    assert readable(fd)


@pytest.mark.thread_unsafe  # counts the process's kqrs fds
def test_fds_are_closed_when_the_queue_is_freed() -> None:
    before = kqrs._kqrs._owned_fd_count()
    q = EventQueue(1)
    q.fileno()
    q._space_fileno()
    assert kqrs._kqrs._owned_fd_count() == before + 2
    q.close()
    assert kqrs._kqrs._owned_fd_count() == before + 2  # kept (readable) until freed
    del q
    gc.collect()
    assert kqrs._kqrs._owned_fd_count() == before
    EventQueue().put(1)  # a queue whose fileno() was never asked for makes no fd
    assert kqrs._kqrs._owned_fd_count() == before


def test_fileno_works_in_a_selector_beside_a_socket() -> None:
    import socket

    a, b = socket.socketpair()
    with EventQueue() as q, selectors.DefaultSelector() as sel:
        sel.register(q, selectors.EVENT_READ, "queue")
        sel.register(a, selectors.EVENT_READ, "socket")
        assert sel.select(0) == []
        q.put("item")
        b.send(b"x")
        assert sorted(key.data for key, _ in sel.select(1)) == ["queue", "socket"]
        sel.unregister(q)
    a.close()
    b.close()


# --- asyncio --------------------------------------------------------------------------------------------

LOOPS = {"default": asyncio.new_event_loop, "kqrs": kqrs.asyncio.new_event_loop}


def run_on(kind: str, coro):  # noqa: ANN001, ANN201
    loop = LOOPS[kind]()
    try:
        return loop.run_until_complete(asyncio.wait_for(coro, 30))
    finally:
        loop.close()


@pytest.mark.parametrize("kind", list(LOOPS))
def test_async_get_fed_by_a_thread(kind: str) -> None:
    q: EventQueue[int] = EventQueue()

    async def main() -> list[int]:
        t = start(lambda: [(q.put(i), time.sleep(0.0005 if i % 50 == 0 else 0)) for i in range(500)])
        got = [await q.async_get() for _ in range(500)]
        join(t)
        await asyncio.sleep(0.01)
        return got

    assert run_on(kind, main()) == list(range(500))
    assert not q._loops  # readers removed once nobody waits
    q.close()


@pytest.mark.parametrize("kind", list(LOOPS))
def test_async_get_many_waiters_on_one_loop(kind: str) -> None:
    q: EventQueue[int] = EventQueue()

    async def main() -> list[int]:
        async def worker() -> list[int]:
            mine = []
            while True:
                x = await q.async_get()
                if x < 0:
                    return mine
                mine.append(x)

        tasks = [asyncio.ensure_future(worker()) for _ in range(5)]
        await asyncio.sleep(0.01)
        t = start(lambda: [q.put(i) for i in range(1000)] + [q.put(-1) for _ in range(5)])
        results = await asyncio.gather(*tasks)
        join(t)
        for r in results:
            assert r == sorted(r)
        return sorted(x for r in results for x in r)

    assert run_on(kind, main()) == list(range(1000))
    q.close()


@pytest.mark.parametrize("kind", list(LOOPS))
def test_a_cancelled_async_get_loses_no_item(kind: str) -> None:
    """Cancel getters at every point around a wake-up: each item ends up either returned by a getter that
    was not cancelled in time or still in the queue, never lost and never twice."""
    q: EventQueue[int] = EventQueue()

    async def main() -> None:
        received: list[int] = []
        put = 0
        for spins in range(6):
            for n_waiters in (1, 3):
                tasks = [asyncio.ensure_future(q.async_get()) for _ in range(n_waiters)]
                await asyncio.sleep(0)
                q.put(put)
                put += 1
                for _ in range(spins):
                    await asyncio.sleep(0)
                tasks[0].cancel()
                await asyncio.sleep(0.01)
                for i in range(put, put + n_waiters):  # enough for every getter still waiting
                    q.put(i)
                put += n_waiters
                for t in tasks:
                    try:
                        received.append(await t)
                    except asyncio.CancelledError:
                        pass
        received += q.get_many(block=False) if q.qsize() else []
        assert sorted(received) == list(range(put))

    run_on(kind, main())
    q.close()


@pytest.mark.parametrize("kind", list(LOOPS))
def test_async_put_waits_for_room_and_a_cancelled_one_puts_nothing(kind: str) -> None:
    q: EventQueue[str] = EventQueue(1)

    async def main() -> None:
        await q.async_put("a")
        t = asyncio.ensure_future(q.async_put("b"))
        await asyncio.sleep(0.02)
        assert not t.done() and q.qsize() == 1
        getter = start(lambda: (time.sleep(0.02), q.get()))
        await t
        join(getter)
        assert q.get_nowait() == "b"
        q.put("c")
        cancelled = asyncio.ensure_future(q.async_put("never"))
        await asyncio.sleep(0.01)
        cancelled.cancel()
        with pytest.raises(asyncio.CancelledError):
            await cancelled
        assert q.get_many(block=False) == ["c"]
        await asyncio.sleep(0.01)
        assert q.qsize() == 0

    run_on(kind, main())
    assert not q._loops
    q.close()


@pytest.mark.parametrize("kind", list(LOOPS))
def test_close_wakes_async_waiters(kind: str) -> None:
    q: EventQueue[int] = EventQueue(1)
    full: EventQueue[int] = EventQueue(1)
    full.put(0)

    async def main() -> None:
        getters = [asyncio.ensure_future(q.async_get()) for _ in range(3)]
        putter = asyncio.ensure_future(full.async_put(1))
        await asyncio.sleep(0.01)
        closer = start(lambda: (q.close(), full.close()))  # from another thread
        for t in [*getters, putter]:
            with pytest.raises(ValueError, match="closed"):
                await t
        join(closer)

    run_on(kind, main())


# --- fork -----------------------------------------------------------------------------------------------


def _in_child(body) -> int:  # noqa: ANN001
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            code = 0 if body() else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


FORK_WARNING = "ignore:This process .* is multi-threaded:DeprecationWarning"


@pytest.mark.thread_unsafe
@pytest.mark.filterwarnings(FORK_WARNING)
def test_the_fork_childs_copy_reads_as_closed_and_the_parents_items_are_untouched() -> None:
    q = EventQueue()
    fd = q.fileno()
    for i in range(3):
        q.put(i)

    def child() -> bool:
        def raises(f) -> bool:  # noqa: ANN001
            try:
                f()
            except ValueError:
                return True
            return False

        ok = q.closed and len(q) == 0 and q.qsize() == 0
        ok = ok and raises(q.get_nowait) and raises(lambda: q.get(timeout=1)) and raises(lambda: q.put(9))
        ok = ok and raises(q.fileno) and raises(q.get_many)
        q.close()
        fresh = EventQueue()  # a new queue works in the child
        fresh.put("x")
        return ok and fresh.get_nowait() == "x" and readable(fresh.fileno()) is False

    assert _in_child(child) == 0
    assert not q.closed and q.qsize() == 3 and readable(fd)
    with kqueue() as kq:
        kq.control([kevent(fd, READ, ADD)], 0)
        assert [e.data for e in kq.control(None, 1, 0)] == [3]
    assert q.get_many() == [0, 1, 2] and not readable(fd)
    q.close()


@pytest.mark.thread_unsafe
@pytest.mark.filterwarnings(FORK_WARNING)
def test_fork_while_another_thread_uses_the_queue() -> None:
    q = EventQueue()
    q.fileno()
    stop = threading.Event()

    def churn() -> None:
        while not stop.is_set():
            q.put(1)
            q.get()

    t = start(churn)
    try:
        for _ in range(20):
            # The child never takes the queue's lock (a thread of the parent may have held it at fork).
            assert _in_child(lambda: q.closed and q.qsize() == 0 and q._stats() == (0, 0, 0)) == 0
    finally:
        stop.set()
        join(t)
    q.close()


# --- free-threading -------------------------------------------------------------------------------------


@pytest.mark.skipif(not sysconfig.get_config_var("Py_GIL_DISABLED"), reason="needs free-threaded CPython")
def test_gil_stays_disabled_after_using_the_queue() -> None:
    q: EventQueue[int] = EventQueue(4)
    ts = [start(lambda: [q.put(i) for i in range(100)]) for _ in range(2)]
    got = [q.get(timeout=5) for _ in range(200)]
    join(*ts)

    async def main() -> int:
        q.put(7)
        return await q.async_get()

    assert run_on("kqrs", main()) == 7 and len(got) == 200
    q.close()
    assert sys._is_gil_enabled() is False


# --- property: exactly once, FIFO per producer ----------------------------------------------------------

OPS = st.sampled_from(["get", "get_nowait", "get_timeout", "get_many"])


@pytest.mark.thread_unsafe  # hypothesis is not thread-safe; this test starts its own threads
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    producers=st.lists(st.integers(min_value=0, max_value=300), min_size=1, max_size=4),
    consumers=st.lists(OPS, min_size=1, max_size=4),
    maxsize=st.sampled_from([0, 1, 3, 50]),
    batch=st.integers(min_value=1, max_value=8),
)
def test_every_item_is_delivered_once_in_fifo_order_per_producer(
    producers: list[int], consumers: list[str], maxsize: int, batch: int
) -> None:
    q: EventQueue[tuple[int, int] | None] = EventQueue(maxsize)
    received: list[list[tuple[int, int]]] = [[] for _ in consumers]

    def produce(p: int, n: int) -> None:
        for i in range(n):
            if i % 7 == 3:
                while True:  # put_nowait, retried while full
                    try:
                        q.put_nowait((p, i))
                        break
                    except queue.Full:
                        time.sleep(0)
            else:
                q.put((p, i), timeout=10)

    def consume(k: int, how: str) -> None:
        mine = received[k]
        while True:
            if how == "get":
                items = [q.get(timeout=10)]
            elif how == "get_nowait":
                try:
                    items = [q.get_nowait()]
                except queue.Empty:
                    time.sleep(0)
                    continue
            elif how == "get_timeout":
                try:
                    items = [q.get(timeout=0.001)]
                except queue.Empty:
                    continue
            else:
                items = q.get_many(batch, timeout=10)
            done = False
            for x in items:
                if x is None:
                    if done:
                        q.put(None)  # a batch took another consumer's end marker: give it back
                    done = True
                else:
                    assert not done  # every item is queued before the end markers
                    mine.append(x)
            if done:
                return

    ps = [threading.Thread(target=produce, args=(p, n)) for p, n in enumerate(producers)]
    cs = [threading.Thread(target=consume, args=(k, how)) for k, how in enumerate(consumers)]
    for t in ps + cs:
        t.start()
    for t in ps:
        t.join(30)
        assert not t.is_alive()
    for _ in consumers:
        q.put(None, timeout=10)
    for t in cs:
        t.join(30)
        assert not t.is_alive()
    q.close()
    # exactly once
    got = sorted(x for r in received for x in r)
    assert got == sorted((p, i) for p, n in enumerate(producers) for i in range(n))
    # FIFO per producer, as each consumer saw them
    for r in received:
        for p in range(len(producers)):
            seq = [i for (pp, i) in r if pp == p]
            assert seq == sorted(seq)
