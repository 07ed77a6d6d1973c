"""kqrs.asyncio: awaitable process/fd waits, async iteration over a KQueue and over file changes, and an
event loop whose selector is a kqrs kqueue.

Every coroutine runs twice: on asyncio's default (epoll) loop, where the helpers ride on the kqueue fd being
pollable (loop.add_reader), and on kqrs's own loop (kqrs.asyncio.new_event_loop). The `aio` fixture checks
after each test that no fd, thread or task was left behind (counting /proc/self/fd), which is also what
"cancellation removes the knote" comes down to: the shared per-loop kqueue is closed with its last waiter.
"""

from __future__ import annotations

import asyncio
import errno
import os
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

import kqrs
import kqrs.asyncio as kaio
from kqrs import ExitStatus, Filter, KQueue, KQueueError, VnodeNote

from kqhelpers import open_fds

HAVE_VNODE = kqrs._kqrs._filter_supported(kqrs.KQ_FILTER_VNODE)
needs_vnode = pytest.mark.skipif(not HAVE_VNODE, reason="EVFILT_VNODE is not built yet")


def hub_count() -> int:
    return len(kaio._Hub._hubs)


LOOPS = {"default": asyncio.new_event_loop, "kqrs": kaio.new_event_loop}


@pytest.fixture(params=sorted(LOOPS))
def aio(request):
    """aio(coro) runs a coroutine on a fresh loop of the parametrized kind and returns its result; after the
    test, no fd, thread, task or per-loop kqueue may remain."""
    factory = LOOPS[request.param]
    # The first kqueue of the process makes the one fd kqrs keeps for good (the eventfd close() wakes waiters
    # with): made now, so that a test run alone does not count it as left behind.
    kqrs.kqueue().close()
    fds_before = open_fds()
    threads_before = threading.active_count()
    loops: list[asyncio.AbstractEventLoop] = []

    def run(coro):
        loop = factory()
        loops.append(loop)
        try:
            result = loop.run_until_complete(coro)
            leftover = asyncio.all_tasks(loop)
            assert leftover == set(), leftover
            return result
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    run.kind = request.param
    yield run
    assert hub_count() == 0
    assert threading.active_count() == threads_before
    assert open_fds() == fds_before


@pytest.fixture
def popen():
    made: list[subprocess.Popen] = []

    def _popen(*args: str, **kw) -> subprocess.Popen:
        p = subprocess.Popen(list(args), **kw)
        made.append(p)
        return p

    yield _popen
    for p in made:
        if p.poll() is None:
            p.kill()
        p.wait()
        if p.stdout:
            p.stdout.close()


@pytest.fixture
def pair():
    a, b = socket.socketpair()
    yield a, b
    a.close()
    b.close()


# --- wait_process ------------------------------------------------------------------------------------------


def test_wait_process_returns_the_decoded_status_without_reaping(aio, popen):
    p = popen(sys.executable, "-c", "import sys; sys.exit(9)")
    st = aio(kaio.wait_process(p))
    assert isinstance(st, ExitStatus)
    assert (st.exit_code, st.signal, st.returncode, st.status) == (9, None, 9, 9 << 8)
    assert p.wait() == 9


def test_wait_process_by_pid_killed(aio, popen):
    p = popen("sleep", "10")

    async def main():
        w = asyncio.ensure_future(kaio.wait_process(p.pid))
        await asyncio.sleep(0.01)
        p.send_signal(signal.SIGINT)
        return await w

    st = aio(main())
    assert (st.exit_code, st.signal, st.returncode) == (None, signal.SIGINT, -signal.SIGINT)


def test_wait_process_for_a_process_that_is_not_a_child(aio, popen):
    p = popen("sh", "-c", "(read x </dev/null; sleep 0.1; exit 12) & echo $!; wait", stdout=subprocess.PIPE)
    pid = int(p.stdout.readline())
    assert aio(kaio.wait_process(pid)).exit_code == 12


def test_wait_process_by_pidfd(aio, popen):
    p = popen(sys.executable, "-c", "import sys; sys.exit(3)")
    fd = os.pidfd_open(p.pid)
    try:
        assert aio(kaio.wait_process(pidfd=fd)).exit_code == 3
        os.fstat(fd)  # left open for its owner
    finally:
        os.close(fd)


def test_many_concurrent_waits_share_one_kqueue(aio, popen):
    ps = [popen(sys.executable, "-c", f"import sys, time; time.sleep(0.05); sys.exit({i})") for i in range(5)]

    async def main():
        tasks = [asyncio.ensure_future(kaio.wait_process(p)) for p in ps]
        await asyncio.sleep(0)
        hub = kaio._Hub._hubs[asyncio.get_running_loop()]
        shared = (hub_count(), len(hub.kq.handles), hub.users)
        return shared, [t.exit_code for t in await asyncio.gather(*tasks)]

    shared, codes = aio(main())
    assert shared == (1, 5, 5)
    assert codes == [0, 1, 2, 3, 4]


def test_wait_process_errors(aio, popen):
    p = popen("true")
    p.wait()

    async def main():
        with pytest.raises(ProcessLookupError) as ei:
            await kaio.wait_process(p.pid)
        return ei.value

    e = aio(main())
    assert isinstance(e, KQueueError) and (e.errno, e.filter, e.ident) == (errno.ESRCH, Filter.PROC, p.pid)


def test_cancelling_wait_process_removes_the_knote(aio, popen):
    p = popen("sleep", "10")

    async def main():
        t = asyncio.ensure_future(kaio.wait_process(p))
        await asyncio.sleep(0.01)
        hub = kaio._Hub._hubs[asyncio.get_running_loop()]
        assert [h.ident for h in hub.kq.handles] == [p.pid]
        kq_fd = hub.kq.fileno()
        t.cancel()
        with pytest.raises(asyncio.CancelledError):
            await t
        return hub, kq_fd

    hub, kq_fd = aio(main())
    assert hub.kq.closed and hub.kq.handles == [] and hub_count() == 0
    assert p.poll() is None  # still running, and no longer watched
    # (the aio fixture checks that the kqueue's fds and the process's pidfd are gone)


# --- wait_readable / wait_writable ------------------------------------------------------------------------


def test_wait_readable_reports_bytes_and_eof(aio, pair):
    a, b = pair

    async def main():
        asyncio.get_running_loop().call_later(0.01, b.send, b"four")
        ev1 = await kaio.wait_readable(a)
        b.shutdown(socket.SHUT_WR)
        a.recv(4)
        ev2 = await kaio.wait_readable(a.fileno())
        return ev1, ev2

    ev1, ev2 = aio(main())
    assert (ev1.filter, ev1.ident, ev1.value, ev1.eof) == (Filter.READ, a.fileno(), 4, False)
    assert ev2.eof and ev2.value == 0


def test_wait_writable(aio, pair):
    a, _ = pair
    ev = aio(kaio.wait_writable(a))
    assert ev.filter == Filter.WRITE and ev.value > 0


def test_two_waiters_on_one_fd_is_eexist(aio, pair):
    a, _ = pair

    async def main():
        t = asyncio.ensure_future(kaio.wait_readable(a))
        await asyncio.sleep(0)
        with pytest.raises(FileExistsError):
            await kaio.wait_readable(a)
        t.cancel()
        with pytest.raises(asyncio.CancelledError):
            await t

    aio(main())


def test_cancelling_wait_readable_removes_the_knote(aio, pair):
    a, b = pair

    async def main():
        t = asyncio.ensure_future(kaio.wait_readable(a))
        await asyncio.sleep(0.01)
        t.cancel()
        with pytest.raises(asyncio.CancelledError):
            await t
        # the fd can be waited on again at once
        asyncio.get_running_loop().call_later(0.01, b.send, b"x")
        return await asyncio.wait_for(kaio.wait_readable(a), 5)

    assert aio(main()).value == 1


def test_wait_with_a_timeout_cleans_up(aio, pair):
    a, _ = pair

    async def main():
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(kaio.wait_readable(a), 0.02)

    aio(main())


# --- events(kq) --------------------------------------------------------------------------------------------


def test_events_iterates_until_no_handle_is_left(aio):
    async def main():
        with KQueue() as kq:
            kq.timer(0.01, repeat=False, data="a")
            kq.timer(0.03, repeat=False, data="b")
            u = kq.user(data="u")
            asyncio.get_running_loop().call_later(0.02, u.trigger)
            got = []
            async for ev in kaio.events(kq):
                got.append(ev.data)
                if ev.data == "u":
                    u.remove()
            return got

    assert aio(main()) == ["a", "u", "b"]


def test_events_ends_when_the_kqueue_is_closed(aio):
    async def main():
        kq = KQueue()
        kq.user()
        asyncio.get_running_loop().call_later(0.02, kq.close)
        t0 = time.monotonic()
        got = [ev async for ev in kaio.events(kq)]
        return got, time.monotonic() - t0

    got, took = aio(main())
    assert got == [] and took < 5


def test_events_ends_when_closed_from_another_thread(aio):
    async def main():
        kq = KQueue()
        kq.user()
        threading.Timer(0.02, kq.close).start()
        got = [ev async for ev in kaio.events(kq)]
        await asyncio.sleep(0.01)  # let the Timer thread finish
        return got

    assert aio(main()) == []


def test_cancelling_an_events_iteration_unregisters_the_kqueue_fd(aio):
    async def main():
        loop = asyncio.get_running_loop()
        with KQueue() as kq:
            kq.user()

            async def consume():
                async for _ in kaio.events(kq):
                    pass

            t = asyncio.ensure_future(consume())
            await asyncio.sleep(0.01)
            sel = loop._selector  # type: ignore[attr-defined]
            registered = kq.fileno() in sel.get_map()
            t.cancel()
            with pytest.raises(asyncio.CancelledError):
                await t
            return registered, kq.fileno() in sel.get_map()

    assert aio(main()) == (True, False)


def test_events_with_handles_added_by_another_task(aio, popen):
    p = popen(sys.executable, "-c", "import sys; sys.exit(5)")

    async def main():
        with KQueue() as kq:
            keep = kq.user()

            async def later():
                await asyncio.sleep(0.01)
                kq.process(p, data="proc")

            t = asyncio.ensure_future(later())
            async for ev in kaio.events(kq):
                keep.remove()
                await t
                return ev

    ev = aio(main())
    assert (ev.data, ev.exit_code) == ("proc", 5)


# --- watch(path) -------------------------------------------------------------------------------------------


@needs_vnode
def test_watch_reports_changes(aio, tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"")

    async def main():
        got = []
        async with kaio.watch(path) as w:
            fd = w.handle.fd
            asyncio.get_running_loop().call_later(0.01, path.write_bytes, b"hello")
            async for ev in w:
                got.append(ev)
                if ev.notes & VnodeNote.EXTEND:
                    break
            os.chmod(path, 0o600)
            got.append(await w.__anext__())
        assert w.closed and not w.handle.active
        with pytest.raises(OSError):
            os.fstat(fd)
        return got

    got = aio(main())
    assert all(ev.filter == Filter.VNODE for ev in got)
    assert got[0].notes & (VnodeNote.WRITE | VnodeNote.EXTEND) == VnodeNote.WRITE | VnodeNote.EXTEND
    assert got[-1].notes == VnodeNote.ATTRIB


@needs_vnode
def test_cancelling_a_watch_closes_its_fd(aio, tmp_path):
    async def main():
        async def watcher():
            async with kaio.watch(tmp_path, VnodeNote.WRITE) as w:
                async for _ in w:
                    pass

        t = asyncio.ensure_future(watcher())
        await asyncio.sleep(0.01)
        assert hub_count() == 1
        t.cancel()
        with pytest.raises(asyncio.CancelledError):
            await t

    aio(main())


@needs_vnode
def test_a_watch_that_is_closed_ends_its_iteration(aio, tmp_path):
    async def main():
        w = kaio.watch(str(tmp_path))
        asyncio.get_running_loop().call_later(0.01, w.close)
        return [ev async for ev in w]

    assert aio(main()) == []


def test_watch_of_a_missing_path_leaks_nothing(aio, tmp_path):
    async def main():
        with pytest.raises(FileNotFoundError):
            kaio.watch(tmp_path / "missing")

    aio(main())


# --- the selector and the loop -----------------------------------------------------------------------------


def test_selector_register_select_modify_unregister(pair):
    a, b = pair
    with kaio.KqueueSelector() as sel:
        key = sel.register(a, selectors.EVENT_READ | selectors.EVENT_WRITE, "data")
        assert (key.fd, key.events, key.data) == (a.fileno(), 3, "data")
        assert sel.get_key(a) is key and len(sel.get_map()) == 1 and list(sel.get_map()) == [a.fileno()]
        assert sel.select(0) == [(key, selectors.EVENT_WRITE)]
        b.send(b"x")
        assert sel.select(1) == [(key, selectors.EVENT_READ | selectors.EVENT_WRITE)]  # merged
        key2 = sel.modify(a, selectors.EVENT_READ, "r")
        assert sel.select(1) == [(key2, selectors.EVENT_READ)]
        assert sel.modify(a, selectors.EVENT_READ, "r2").data == "r2"
        with pytest.raises(KeyError):
            sel.register(a, selectors.EVENT_READ)
        with pytest.raises(ValueError):
            sel.register(b, 0)
        sel.unregister(a)
        with pytest.raises(KeyError):
            sel.unregister(a)
        assert sel.select(0) == []
        t0 = time.monotonic()
        assert sel.select(0.03) == []
        assert time.monotonic() - t0 >= 0.03
        assert os.get_inheritable(sel.fileno()) is False


def test_selector_unregister_after_close_of_the_fd():
    a, b = socket.socketpair()
    with kaio.KqueueSelector() as sel:
        sel.register(a, selectors.EVENT_READ)
        a.close()
        sel.unregister(a)  # found by identity, no error
        b.close()
        assert sel.get_map() == {}


def test_cpython_selector_suite_on_kqrs_selector():
    """CPython's own selector tests (test_selectors.BaseSelectorTestCase) on kqrs.asyncio.KqueueSelector."""
    import unittest

    try:
        from test import test_selectors
    except ImportError:
        pytest.skip("CPython's test package is not installed")

    class T(test_selectors.BaseSelectorTestCase, unittest.TestCase):
        SELECTOR = kaio.KqueueSelector

    slow = {"test_timeout", "test_select_interrupt_exc", "test_select_interrupt_noraise"}
    suite = unittest.TestSuite(T(name) for name in unittest.TestLoader().getTestCaseNames(T) if name not in slow)
    result = unittest.TextTestRunner(verbosity=0, stream=open(os.devnull, "w")).run(suite)
    assert result.testsRun >= 15
    assert not result.failures and not result.errors, result.failures + result.errors


def test_new_event_loop_runs_on_a_kqrs_selector():
    loop = kaio.new_event_loop()
    try:
        assert isinstance(loop, asyncio.SelectorEventLoop)
        assert isinstance(loop._selector, kaio.KqueueSelector)  # type: ignore[attr-defined]
    finally:
        loop.close()


def test_streams_on_the_kqrs_loop():
    async def main():
        async def echo(reader, writer):
            writer.write(await reader.readline())
            await writer.drain()
            writer.close()
            await writer.wait_closed()

        server = await asyncio.start_server(echo, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"ping\n")
        line = await reader.readline()
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()
        return line, type(asyncio.get_running_loop()._selector)  # type: ignore[attr-defined]

    assert kaio.run(main()) == (b"ping\n", kaio.KqueueSelector)


def test_a_kqueue_inside_the_kqrs_loop_nests():
    async def main():
        with KQueue() as kq:
            u = kq.user(data="nested")
            asyncio.get_running_loop().call_later(0.01, u.trigger)
            async for ev in kaio.events(kq):
                return ev.data

    assert kaio.run(main()) == "nested"


def test_event_loop_policy():
    old = asyncio.get_event_loop_policy()
    try:
        asyncio.set_event_loop_policy(kaio.EventLoopPolicy())

        async def main():
            return type(asyncio.get_running_loop()._selector)  # type: ignore[attr-defined]

        assert asyncio.run(main()) is kaio.KqueueSelector
    finally:
        asyncio.set_event_loop_policy(old)


def test_run_returns_the_result_and_closes_the_loop():
    before = open_fds()

    async def main():
        await asyncio.sleep(0)
        return asyncio.get_running_loop()

    loop = kaio.run(main())
    assert loop.is_closed()
    assert open_fds() == before


def test_subprocess_on_the_kqrs_loop():
    async def main():
        p = await asyncio.create_subprocess_exec(sys.executable, "-c", "print('hi')", stdout=subprocess.PIPE)
        out, _ = await p.communicate()
        return out, p.returncode

    assert kaio.run(main()) == (b"hi\n", 0)


def test_the_select_module_is_left_alone():
    """kqrs.asyncio's loop uses kqrs.kqueue directly: nothing is put into (or left in) `select`."""
    code = (
        "import select, selectors, asyncio, kqrs.asyncio as k\n"
        "async def main():\n"
        "    await asyncio.sleep(0)\n"
        "    return type(asyncio.get_running_loop()._selector).__module__\n"
        "assert k.run(main()) == 'kqrs.asyncio'\n"
        "assert not hasattr(select, 'kqueue') and not hasattr(selectors, 'KqueueSelector')\n"
        "assert selectors.DefaultSelector is selectors.EpollSelector\n"
        "print('ok')\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert r.stdout.strip() == "ok", r.stderr
