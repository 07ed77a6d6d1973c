"""Fork and fd lifetime: a kqueue is not inherited, the child holds none of kqrs's fds, and fork() while
other threads are inside kqrs never deadlocks the child."""

from __future__ import annotations

import multiprocessing
import os
import signal
import socket
import threading
import time

import pytest

import kqrs
from kqrs import kevent, kqueue

from kqhelpers import ADD, CLEAR, READ, TIMER, TRIGGER, USER

pytestmark = pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")


def _wait_child(pid: int, timeout: float = 10.0) -> int:
    """The child's exit code; kills it and fails if it has not exited in time (a deadlock)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got, status = os.waitpid(pid, os.WNOHANG)
        if got:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.005)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    pytest.fail(f"fork child {pid} did not exit within {timeout}s (deadlock?)")


def _child(fn) -> int:
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            code = 0 if fn() else 3
        except BaseException:
            import traceback

            traceback.print_exc()
            code = 2
        finally:
            os._exit(code)
    return _wait_child(pid)


def test_child_holds_no_kqrs_fd_and_can_reuse_the_numbers() -> None:
    kq = kqueue()
    kq.control([kevent(1, TIMER, ADD, 0, 1000), kevent(2, USER, ADD | CLEAR)], 0)
    kq_fd = kq.fileno()
    assert kqrs._kqrs._owned_fd_count() >= 2  # the kqueue's epoll and its timer source
    holder = [kq]

    def child() -> bool:
        if kqrs._kqrs._owned_fd_count() != 0 or not holder[0].closed:
            return False
        try:
            os.fstat(kq_fd)
            return False  # the kqueue fd is still open in the child
        except OSError:
            pass
        # the number is free: a new file gets it, and dropping the old kqueue object does not close it
        r, w = os.pipe()
        holder.clear()
        import gc

        gc.collect()
        os.write(w, b"x")
        return os.read(r, 1) == b"x"

    try:
        assert _child(child) == 0
        # the parent's kqueue is untouched by anything the child did
        kq.control([kevent(2, USER, 0, TRIGGER)], 0)
        assert [(e.ident, e.filter) for e in kq.control(None, 4, 1)] == [(2, USER)]
    finally:
        kq.close()


def test_child_leaves_large_knote_tables_alone_and_the_parent_keeps_them() -> None:
    """Tables this large live in memory a fork child gets zero-filled (MADV_WIPEONFORK): the child must see
    the kqueue closed, fail every call on it, drop it without touching that memory, and build its own."""
    n = 10_000
    kq = kqueue()
    a, b = socket.socketpair()
    kq.control([kevent(i, USER, ADD | CLEAR) for i in range(n)] + [kevent(a, READ, ADD)], 0)
    assert kq._stats()[0] == n + 1
    holder = [kq]

    def child() -> bool:
        import gc

        old = holder[0]
        if not old.closed:
            return False
        for changes, nevents in ((None, 1), ([kevent(1, USER, 0, TRIGGER)], 0)):
            try:
                old.control(changes, nevents, 0)
                return False
            except (OSError, ValueError):
                pass
        holder.clear()
        del old
        gc.collect()
        with kqueue() as mine:
            mine.control([kevent(i, USER, ADD | CLEAR) for i in range(n)], 0)
            mine.control([kevent(n - 1, USER, 0, TRIGGER)], 0)
            return [e.ident for e in mine.control(None, 4, 0)] == [n - 1] and mine._stats()[0] == n

    try:
        assert _child(child) == 0
        assert kq._stats()[0] == n + 1
        b.send(b"xy")
        kq.control([kevent(n - 1, USER, 0, TRIGGER), kevent(7, USER, 0, TRIGGER)], 0)
        got = sorted((e.filter, e.ident, e.data) for e in kq.control(None, 8, 1))
        assert got == sorted([(USER, 7, 0), (USER, n - 1, 0), (READ, a.fileno(), 2)])
        kq.control([kevent(i, USER, kqrs.KQ_EV_DELETE) for i in range(n)], 0)
        assert kq._stats()[0] == 1
    finally:
        kq.close()
        a.close()
        b.close()


@pytest.mark.parametrize("child_makes_a_kqueue", [False, True])
def test_grandchild_closes_only_its_parents_kqrs_fds(child_makes_a_kqueue: bool) -> None:
    """The fork handler closes the fds kqrs owns in the forking process, and nothing else: not files the
    child opened on the numbers its parent's kqueues had, whether or not the child made kqueues itself."""
    kq = kqueue()
    kq.control([kevent(1, TIMER, ADD, 0, 1000)], 0)
    parent_fds = set(range(kq.fileno(), kq.fileno() + 4))

    def child() -> bool:
        # the numbers the parent's kqueue held are free here: the child's own files take them
        mine = [os.pipe() for _ in range(3)]
        taken = {fd for p in mine for fd in p}
        if not taken & parent_fds:
            return False
        own = kqueue() if child_makes_a_kqueue else None
        if own is not None:
            own.control([kevent(1, TIMER, ADD, 0, 1000)], 0)
            if kqrs._kqrs._owned_fd_count() < 2:
                return False
        elif kqrs._kqrs._owned_fd_count() != 0:
            return False
        own_fd = own.fileno() if own is not None else -1

        def grandchild() -> bool:
            for r, w in mine:  # every file the child opened is still open, and works
                os.write(w, b"g")
                if os.read(r, 1) != b"g":
                    return False
            if own_fd >= 0:
                try:
                    os.fstat(own_fd)
                    return False  # the child's kqueue fd is still open in the grandchild
                except OSError:
                    pass
            return kqrs._kqrs._owned_fd_count() == 0

        ok = _child(grandchild) == 0
        if own is not None:
            ok = ok and own.control([kevent(2, USER, ADD | CLEAR)], 0) == [] and not own.closed
            own.close()
        return ok

    try:
        assert _child(child) == 0
        assert not kq.closed
    finally:
        kq.close()


def test_child_can_create_and_use_kqueues_at_once() -> None:
    parent_kq = kqueue()

    def child() -> bool:
        with kqueue() as kq:
            a, b = socket.socketpair()
            b.send(b"abc")
            evs = kq.control([kevent(a, READ, ADD)], 4, 1)
            return [(e.ident, e.data) for e in evs] == [(a.fileno(), 3)]

    try:
        assert _child(child) == 0
    finally:
        parent_kq.close()


def test_child_exit_does_not_disturb_parent_registrations() -> None:
    with kqueue() as kq:
        a, b = socket.socketpair()
        with a, b:
            kq.control([kevent(a, READ, ADD)], 0)
            assert _child(lambda: True) == 0
            b.send(b"hi")
            assert [(e.ident, e.data) for e in kq.control(None, 4, 1)] == [(a.fileno(), 2)]


@pytest.mark.parametrize("round_", range(20))
def test_fork_while_threads_block_and_change_never_deadlocks(round_: int) -> None:
    kq = kqueue()
    stop = threading.Event()

    def waiter() -> None:
        while not stop.is_set():
            try:
                kq.control(None, 4, 0.01)
            except (ValueError, OSError):
                return

    def changer() -> None:
        i = 0
        while not stop.is_set():
            i += 1
            try:
                kq.control([kevent(i % 64, USER, ADD | CLEAR, TRIGGER)], 0)
                kq.control([kevent(i % 64, USER, kqrs.KQ_EV_DELETE)], 0)
            except (ValueError, OSError):
                return

    threads = [threading.Thread(target=waiter) for _ in range(2)] + [threading.Thread(target=changer)]
    for t in threads:
        t.start()
    try:
        time.sleep(0.005)

        def child() -> bool:
            if not kq.closed:
                return False
            with kqueue() as k2:  # creating one takes the registry lock another thread may have held
                k2.control([kevent(1, USER, ADD, TRIGGER)], 0)
                return len(k2.control(None, 1, 1)) == 1

        assert _child(child) == 0
    finally:
        stop.set()
        for t in threads:
            t.join()
        kq.close()


def _mp_child(q) -> None:
    with kqueue() as kq:
        kq.control([kevent(5, USER, ADD, TRIGGER)], 0)
        q.put([(e.ident, e.filter) for e in kq.control(None, 2, 1)])


def test_multiprocessing_fork_start_method() -> None:
    kq = kqueue()  # alive in the parent while the pool forks
    try:
        ctx = multiprocessing.get_context("fork")
        q = ctx.Queue()
        p = ctx.Process(target=_mp_child, args=(q,))
        p.start()
        assert q.get(timeout=10) == [(5, USER)]
        p.join(10)
        assert p.exitcode == 0
    finally:
        kq.close()
