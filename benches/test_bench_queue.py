"""kqrs.EventQueue vs queue.SimpleQueue and queue.Queue.

- queue/<side>: put + get of one item in one thread (the queue empty before and after, so EventQueue pays
  its trigger and its clear every time: its worst case).
- queue_xthread/<side>: a producer thread puts ITEMS items while this thread gets them; time per item
  (items per second recorded beside it). GIL scheduling decides how the two interleave.
"""

from __future__ import annotations

import queue
import threading
import time

import pytest

import kqrs
from _util import interleaved, interleaved_rounds, record_all, scaled

SIDES = {"kqrs": kqrs.EventQueue, "simplequeue": queue.SimpleQueue, "queue": queue.Queue}


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
    assert len(q) == 0 if name == "kqrs" else q.empty()


def test_queue_put_get_pair(queues, record):
    sides = {n: ("put(1); get()", {"put": q.put, "get": q.get}) for n, q in queues.items()}
    med = interleaved(sides, rounds=scaled(200), iters=scaled(2000, 5))
    for n, q in queues.items():
        assert (len(q) == 0) if n == "kqrs" else q.empty()
    record_all(record, "queue", med)


def _xthread(q, items: int) -> float:
    """Producer thread puts `items` ints, this thread gets them; returns the elapsed seconds."""
    go = threading.Event()

    def produce():
        go.wait()
        put = q.put
        for i in range(items):
            put(i)

    t = threading.Thread(target=produce)
    t.start()
    get = q.get
    t0 = time.perf_counter()
    go.set()
    total = 0
    for _ in range(items):
        total += get()
    dt = time.perf_counter() - t0
    t.join()
    assert total == items * (items - 1) // 2
    return dt


def test_queue_xthread_pair(queues, record):
    items = scaled(20000, 50)
    med = interleaved_rounds(
        {n: (lambda q=q: q, lambda q: _xthread(q, items)) for n, q in queues.items()},
        rounds=scaled(30, 1),
    )
    # interleaved_rounds times the whole run (thread start + join included: a few tens of µs in ~10 ms)
    per_item = {n: v / items for n, v in med.items()}
    record_all(record, "queue_xthread", per_item)
    for n, v in per_item.items():
        record(f"queue_xthread/{n}.items_per_s", 1 / v, "items per second (producer thread -> consumer)")
