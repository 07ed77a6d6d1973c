"""kqrs.EventQueue vs queue.SimpleQueue, queue.Queue and asyncio.Queue.

- queue/<side>: put + get of one item in one thread (the queue empty before and after).
- queue_xthread/<side>: 1 producer thread / 1 consumer thread (this one), ITEMS items; time per item (items
  per second recorded beside it). GIL scheduling decides how the two interleave.
- queue_4x4/<side>: 4 producer threads / 4 consumer threads, each producer putting ITEMS_4X4 items; time
  per item, from the start barrier to the last join.
- queue_handoff/<side>.p50 / .p99: cross-thread hand-off latency: a thread blocked in `get()` and a `put()`
  from this one; from the put to the blocked get returning (µs).
- queue_asyncio/<side>: a thread puts ITEMS_ASYNC items, a coroutine on the default asyncio loop awaits
  each one; kqrs: `q.put(i)` → `await q.async_get()`; asyncio: `loop.call_soon_threadsafe(aq.put_nowait, i)`
  → `await aq.get()`. Time per item. queue_asyncio_kqrsloop/<side>: the same on kqrs's own loop.
- queue_asyncio_pingpong/<side>: the same, one item at a time: the thread puts the next item only once the
  coroutine has taken the last (a threading.Event on both sides), so every item wakes the loop.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time

import pytest

import kqrs
import kqrs.asyncio

from _util import Waiter, interleaved, interleaved_rounds, percentile, record_all, scaled

SIDES = {"kqrs": kqrs.EventQueue, "simplequeue": queue.SimpleQueue, "queue": queue.Queue}


def _empty(q) -> bool:
    return q.empty()


@pytest.fixture
def queues():
    qs = {name: cls() for name, cls in SIDES.items()}
    yield qs
    qs["kqrs"].close()


@pytest.mark.parametrize("name", list(SIDES))
def test_queue_put_get(benchmark, queues, name):
    q = queues[name]
    put, get = q.put, q.get

    def f():
        put(1)
        return get()

    benchmark.group = "queue put+get"
    benchmark.extra_info["key"] = f"queue/{name}"
    assert benchmark(f) == 1
    assert _empty(q)


def test_queue_put_get_pair(queues, record):
    sides = {n: ("put(1); get()", {"put": q.put, "get": q.get}) for n, q in queues.items()}
    med = interleaved(sides, rounds=scaled(200), iters=scaled(2000, 5))
    for q in queues.values():
        assert _empty(q)
    record_all(record, "queue", med)


def _producers_consumers(q, producers: int, consumers: int, items: int) -> float:
    """`producers` threads put `items` ints each, `consumers` threads get them all (the first consumer is
    this thread when there is one consumer); returns the elapsed seconds from the start to the last item."""
    total_items = producers * items
    per, extra = divmod(total_items, consumers)
    go = threading.Barrier(producers + consumers) if consumers > 1 else threading.Barrier(producers + 1)
    sums = [0] * consumers

    def produce():
        go.wait()
        put = q.put
        for i in range(items):
            put(i)

    def consume(k: int, n: int):
        if consumers > 1:
            go.wait()
        get = q.get
        s = 0
        for _ in range(n):
            s += get()
        sums[k] = s

    ts = [threading.Thread(target=produce) for _ in range(producers)]
    if consumers > 1:
        ts += [threading.Thread(target=consume, args=(k, per + (k < extra))) for k in range(consumers)]
    for t in ts:
        t.start()
    if consumers > 1:
        t0 = time.perf_counter()
        for t in ts:
            t.join()
        dt = time.perf_counter() - t0
    else:
        go.wait()
        t0 = time.perf_counter()
        consume(0, total_items)
        dt = time.perf_counter() - t0
        for t in ts:
            t.join()
    assert sum(sums) == producers * items * (items - 1) // 2
    return dt


def test_queue_xthread_pair(record):
    """1 producer / 1 consumer."""
    items = scaled(20000, 50)
    med = interleaved_rounds(
        {n: (cls, lambda q: _producers_consumers(q, 1, 1, items)) for n, cls in SIDES.items()},
        rounds=scaled(30, 1),
    )
    per_item = {n: v / items for n, v in med.items()}
    record_all(record, "queue_xthread", per_item)
    for n, v in per_item.items():
        record(f"queue_xthread/{n}.items_per_s", 1 / v, "items per second (producer thread -> consumer)")


def test_queue_4x4_pair(record):
    """4 producers / 4 consumers (threads started inside the timing: ~100 µs of ~10-100 ms)."""
    items = scaled(10000, 20)
    med = interleaved_rounds(
        {n: (cls, lambda q: _producers_consumers(q, 4, 4, items)) for n, cls in SIDES.items()},
        rounds=scaled(15, 1),
    )
    per_item = {n: v / (4 * items) for n, v in med.items()}
    record_all(record, "queue_4x4", per_item)


def test_queue_handoff_latency(record):
    """put() in this thread → a thread blocked in get() returns with the item, both sides in turn."""
    n = scaled(2000, 5)
    qs = {"kqrs": kqrs.EventQueue(), "simplequeue": queue.SimpleQueue()}
    waiters = {name: Waiter(q.get) for name, q in qs.items()}
    for w in waiters.values():
        w.start()
    lat: dict[str, list[float]] = {name: [] for name in qs}
    try:
        for i in range(n):
            for name in list(qs) if i % 2 == 0 else list(qs)[::-1]:
                put = qs[name].put
                lat[name].append(waiters[name].sample(lambda: put(1)) / 1000)  # noqa: B023
    finally:
        for name, w in waiters.items():
            put = qs[name].put
            w.finish(lambda: put(1))  # noqa: B023
        qs["kqrs"].close()
    for name, xs in lat.items():
        assert all(x > 0 for x in xs)
        for p in (50, 99):
            record(f"queue_handoff/{name}.p{p}", percentile(xs, p), "µs, put → a blocked get() returns")


async def _consume_kqrs(q, n: int) -> int:
    get = q.async_get
    s = 0
    for _ in range(n):
        s += await get()
    return s


async def _consume_asyncio(aq, n: int) -> int:
    get = aq.get
    s = 0
    for _ in range(n):
        s += await get()
    return s


def _asyncio_round(loop, side: str, n: int) -> float:
    if side == "kqrs":
        q = kqrs.EventQueue()

        def produce():
            put = q.put
            for i in range(n):
                put(i)

        coro = _consume_kqrs(q, n)
    else:
        aq: asyncio.Queue[int] = asyncio.Queue()

        def produce():
            cs, put = loop.call_soon_threadsafe, aq.put_nowait
            for i in range(n):
                cs(put, i)

        coro = _consume_asyncio(aq, n)
    t = threading.Thread(target=produce)
    t0 = time.perf_counter()
    t.start()
    s = loop.run_until_complete(coro)
    dt = time.perf_counter() - t0
    t.join()
    if side == "kqrs":
        q.close()
    assert s == n * (n - 1) // 2
    return dt


@pytest.mark.parametrize("loop_kind", ["default", "kqrsloop"])
def test_queue_asyncio_pair(record, loop_kind):
    n = scaled(5000, 20)
    loop = asyncio.new_event_loop() if loop_kind == "default" else kqrs.asyncio.new_event_loop()
    try:
        med = interleaved_rounds(
            {side: (lambda: None, lambda _, side=side: _asyncio_round(loop, side, n)) for side in ("kqrs", "asyncio")},
            rounds=scaled(20, 1),
        )
    finally:
        loop.close()
    row = "queue_asyncio" if loop_kind == "default" else "queue_asyncio_kqrsloop"
    record_all(record, row, {side: v / n for side, v in med.items()})


def _pingpong_round(loop, side: str, n: int) -> float:
    ack = threading.Event()
    if side == "kqrs":
        q = kqrs.EventQueue()
        get = q.async_get

        def put(i: int) -> None:
            q.put(i)
    else:
        aq: asyncio.Queue[int] = asyncio.Queue()
        get = aq.get

        def put(i: int) -> None:
            loop.call_soon_threadsafe(aq.put_nowait, i)

    def produce():
        for i in range(n):
            put(i)
            ack.wait()
            ack.clear()

    async def consume() -> int:
        s = 0
        for _ in range(n):
            s += await get()
            ack.set()
        return s

    t = threading.Thread(target=produce)
    t0 = time.perf_counter()
    t.start()
    s = loop.run_until_complete(consume())
    dt = time.perf_counter() - t0
    t.join()
    if side == "kqrs":
        q.close()
    assert s == n * (n - 1) // 2
    return dt


def test_queue_asyncio_pingpong_pair(record):
    n = scaled(500, 5)
    loop = asyncio.new_event_loop()
    try:
        med = interleaved_rounds(
            {side: (lambda: None, lambda _, side=side: _pingpong_round(loop, side, n)) for side in ("kqrs", "asyncio")},
            rounds=scaled(20, 1),
        )
    finally:
        loop.close()
    record_all(record, "queue_asyncio_pingpong", {side: v / n for side, v in med.items()})
