"""asyncio on selectors.KqueueSelector backed by kqrs vs the default EpollSelector loop.

The kqrs loop is made after `kqrs.install()` (so `selectors.KqueueSelector` exists and uses kqrs) and
`kqrs.uninstall()` restores the process's select module when the test ends.
"""

from __future__ import annotations

import asyncio
import socket

import pytest

import kqrs

from _util import interleaved, on_kqrs, record_all, scaled

ROUND_TRIPS = 100


def _make_loop(kind: str) -> asyncio.AbstractEventLoop:
    import selectors

    if kind == "kqrs":
        sel = selectors.KqueueSelector()
        assert on_kqrs(sel)
    else:
        sel = selectors.EpollSelector()
    lp = asyncio.SelectorEventLoop(sel)
    lp.kind = kind
    return lp


@pytest.fixture(params=["epoll", "kqrs"])
def loop(request):
    if request.param == "kqrs":
        kqrs.install()
    try:
        lp = _make_loop(request.param)
        try:
            yield lp
        finally:
            lp.close()
    finally:
        if request.param == "kqrs":
            kqrs.uninstall()


@pytest.fixture
def both_loops():
    """{"kqrs": KqueueSelector loop on kqrs, "epoll": EpollSelector loop}, for interleaved pairs."""
    kqrs.install()
    loops = {}
    try:
        loops = {k: _make_loop(k) for k in ("kqrs", "epoll")}
        yield loops
    finally:
        for lp in loops.values():
            lp.close()
        kqrs.uninstall()


class Echo(asyncio.Protocol):
    def connection_made(self, transport):
        self.t = transport

    def data_received(self, data):
        self.t.write(data)


class Client(asyncio.Protocol):
    def __init__(self):
        self.t = None
        self.left = 0
        self.done = None

    def connection_made(self, transport):
        self.t = transport

    def data_received(self, data):
        self.left -= len(data)
        if self.left > 0:
            self.t.write(b"x")
        else:
            self.done.set_result(None)


class PingPong:
    """ROUND_TRIPS one-byte round trips over a socketpair on `loop`, protocols on both ends."""

    def __init__(self, loop):
        self.loop = loop
        self.a, self.b = socket.socketpair()

        async def setup():
            await loop.connect_accepted_socket(Echo, sock=self.b)
            _, client = await loop.connect_accepted_socket(Client, sock=self.a)
            return client

        self.client = loop.run_until_complete(setup())

    async def _run(self):
        client = self.client
        client.left = ROUND_TRIPS
        client.done = self.loop.create_future()
        client.t.write(b"x")
        await client.done

    def run(self):
        self.loop.run_until_complete(self._run())
        assert self.client.left == 0

    def close(self):
        self.client.t.close()
        self.loop.run_until_complete(asyncio.sleep(0))
        self.a.close()
        self.b.close()


def test_asyncio_pingpong(benchmark, loop):
    """ROUND_TRIPS one-byte round trips over a socketpair, protocols on both ends."""
    pp = PingPong(loop)

    benchmark.group = "asyncio ping-pong"
    benchmark.extra_info["key"] = f"pingpong/{loop.kind}"
    try:
        benchmark(pp.run)
    finally:
        pp.close()


def test_asyncio_add_remove_reader(benchmark, loop):
    """loop.add_reader(fd, cb) + loop.remove_reader(fd) on a socket (no loop iteration in between)."""
    a, b = socket.socketpair()
    fd = a.fileno()
    cb = lambda: None  # noqa: E731
    add, remove = loop.add_reader, loop.remove_reader

    def f():
        add(fd, cb)
        return remove(fd)

    benchmark.group = "asyncio add/remove_reader"
    benchmark.extra_info["key"] = f"reader/{loop.kind}"
    try:
        assert benchmark(f) is True
        assert fd not in loop._selector.get_map()
    finally:
        a.close()
        b.close()


# ---- both loops interleaved: the figures the table's ratios come from ----------------------------


def test_asyncio_pingpong_pair(both_loops, record):
    pps = {k: PingPong(lp) for k, lp in both_loops.items()}
    try:
        g = {k: pp.run for k, pp in pps.items()}
        med = interleaved({k: (f"{k}()", g) for k in pps}, scaled(300, 2), scaled(3, 1))
    finally:
        for pp in pps.values():
            pp.close()
    record_all(record, "pingpong", med)


def test_asyncio_add_remove_reader_pair(both_loops, record):
    a, b = socket.socketpair()
    try:
        g = {"fd": a.fileno(), "cb": lambda: None}
        for k, lp in both_loops.items():
            g[f"{k}_add"], g[f"{k}_remove"] = lp.add_reader, lp.remove_reader
        med = interleaved(
            {k: (f"{k}_add(fd, cb); {k}_remove(fd)", g) for k in both_loops}, scaled(600, 3), scaled(100, 3)
        )
        for lp in both_loops.values():
            assert a.fileno() not in lp._selector.get_map()
    finally:
        a.close()
        b.close()
    record_all(record, "reader", med)
