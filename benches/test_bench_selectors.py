"""`selectors.KqueueSelector` on kqrs vs `selectors.EpollSelector`, used as a user writes them.

The kqrs side is `selectors.KqueueSelector()` after `kqrs.install()` (the `kq_selectors` fixture); sockets
(the objects, not their fds) are registered with `register(sock, EVENT_READ)`.
- selector.ready{n}: `select(0)` with one socket ready among n registered;
- selector.register: `register(sock, EVENT_READ)` + `unregister(sock)` of one socket, nothing else
  registered.
"""

from __future__ import annotations

import socket

import pytest

from _util import SIZES, interleaved, on_kqrs, record_all, scaled

ROUNDS = scaled(600, 3)


def _selector(selectors, kind):
    if kind == "kqrs":
        sel = selectors.KqueueSelector()
        assert on_kqrs(sel)
    else:
        sel = selectors.EpollSelector()
    return sel


def _fill(sel, selectors, s):
    for sock in s.socks:
        sel.register(sock, selectors.EVENT_READ)


# ---- select(0), one ready among N ----------------------------------------------------------------


@pytest.mark.parametrize("kind", ["kqrs", "epoll"])
@pytest.mark.parametrize("n", SIZES)
def test_select(benchmark, kq_selectors, socket_sets, n, kind):
    selectors = kq_selectors
    s = socket_sets(n)
    sel = _selector(selectors, kind)
    try:
        _fill(sel, selectors, s)
        s.drain()
        s.make_ready()
        benchmark.group = f"selector select(0), one ready among {n}"
        benchmark.extra_info["key"] = f"selector{n}/{kind}"
        [(key, mask)] = benchmark(sel.select, 0)
        assert (key.fileobj, mask) == (s.socks[0], selectors.EVENT_READ)
    finally:
        sel.close()
        s.drain()


@pytest.mark.parametrize("n", SIZES)
def test_select_pair(kq_selectors, socket_sets, n, record):
    selectors = kq_selectors
    s = socket_sets(n)
    ksel, esel = _selector(selectors, "kqrs"), _selector(selectors, "epoll")
    try:
        for sel in (ksel, esel):
            _fill(sel, selectors, s)
        s.drain()
        s.make_ready()
        for sel in (ksel, esel):
            assert [(k.fileobj, m) for k, m in sel.select(0)] == [(s.socks[0], selectors.EVENT_READ)]
        g = {"ksel": ksel, "esel": esel}
        med = interleaved({"kqrs": ("ksel.select(0)", g), "epoll": ("esel.select(0)", g)}, ROUNDS, scaled(200, 3))
        record_all(record, f"selector{n}", med)
    finally:
        ksel.close()
        esel.close()
        s.drain()


# ---- register + unregister -----------------------------------------------------------------------


@pytest.fixture
def one_socket():
    a, b = socket.socketpair()
    yield a
    a.close()
    b.close()


@pytest.mark.parametrize("kind", ["kqrs", "epoll"])
def test_register(benchmark, kq_selectors, one_socket, kind):
    selectors = kq_selectors
    sel = _selector(selectors, kind)
    R = selectors.EVENT_READ

    def f():
        sel.register(one_socket, R)
        sel.unregister(one_socket)

    try:
        benchmark.group = "selector register + unregister"
        benchmark.extra_info["key"] = f"selector_register/{kind}"
        benchmark(f)
        assert not sel.get_map()
    finally:
        sel.close()


def test_register_pair(kq_selectors, one_socket, record):
    selectors = kq_selectors
    ksel, esel = _selector(selectors, "kqrs"), _selector(selectors, "epoll")
    try:
        g = {"ksel": ksel, "esel": esel, "sock": one_socket, "R": selectors.EVENT_READ}
        med = interleaved(
            {
                "kqrs": ("ksel.register(sock, R); ksel.unregister(sock)", g),
                "epoll": ("esel.register(sock, R); esel.unregister(sock)", g),
            },
            ROUNDS,
            scaled(200, 3),
        )
        assert not ksel.get_map() and not esel.get_map()
        record_all(record, "selector_register", med)
    finally:
        ksel.close()
        esel.close()
