"""kevent() as a whole (semantics.md), for the parts that need no watched fd, and the kqueue object itself
(CPython select.kqueue's behaviour and messages, /tmp/research.md section 1).

EVFILT_USER and EVFILT_TIMER serve as the probes: they need no fd, so each test is about the queue.
"""

from __future__ import annotations

import ast
import errno
import fcntl
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import pytest

import kqrs
from kqrs import _kqrs, kevent

from kqhelpers import (
    ADD,
    CLEAR,
    DELETE,
    DISABLE,
    DISPATCH,
    ENABLE,
    ERROR,
    FFCOPY,
    ONESHOT,
    READ,
    RECEIPT,
    SECONDS,
    TIMER,
    TRIGGER,
    USECONDS,
    USER,
    apply,
)

CLOSED_MSG = "I/O operation on closed kqueue object"
EPS = 1e-6
WATCHDOG = 999_999  # USER ident a watchdog triggers so that a hang becomes a failure


def user(ident, flags=ADD | CLEAR, fflags=0, data=0, udata=0):
    return kevent(ident, USER, flags, fflags, data, udata)


def trigger(ident, fflags=0, data=0, udata=0, flags=0):
    return kevent(ident, USER, flags, TRIGGER | fflags, data, udata)


def timer(ident, data, flags=ADD, fflags=0, udata=0):
    return kevent(ident, TIMER, flags, fflags, data, udata)


class Watchdog:
    """Triggers USER knote WATCHDOG in `kq` after `after` s, so that a control() that would hang returns."""

    def __init__(self, kq, after=4.0):
        self.kq = kq
        apply(kq, user(WATCHDOG))
        self.t = threading.Timer(after, self._fire)
        self.t.daemon = True

    def _fire(self):
        try:
            self.kq.control([trigger(WATCHDOG)], 0)
        except (OSError, ValueError):
            pass

    def __enter__(self):
        self.t.start()
        return self

    def __exit__(self, *exc):
        self.t.cancel()
        self.t.join(5)


def start_thread(target, *args):
    t = threading.Thread(target=target, args=args, daemon=True)
    t.start()
    return t


# --- changes, errors, receipts ---------------------------------------------------------------------


def test_changes_applied_in_order_before_collection(kq):
    got = kq.control([user(1), trigger(1, FFCOPY | 0x1), trigger(1, FFCOPY | 0x2), user(2), trigger(2, data=5)], 8, 0)
    assert sorted((e.ident, e.fflags, e.data) for e in got) == [(1, 0x2, 0), (2, 0, 5)]


def test_add_trigger_delete_in_one_call_leaves_nothing(kq):
    assert kq.control([user(1), trigger(1), user(1, flags=DELETE)], 8, 0) == []
    assert kq._stats()[0] == 0
    # delete then re-add: the new knote starts untriggered
    apply(kq, user(2), trigger(2))
    assert kq.control([user(2, flags=DELETE), user(2)], 8, 0.02) == []


def test_failing_change_becomes_error_entry_and_processing_continues(kq):
    apply(kq, user(1))
    changes = [
        user(10),  # ok
        kevent(77, USER, DELETE, 0, 0, 1234),  # ENOENT
        timer(5, -1, udata=55),  # EINVAL
        user(11),  # ok: applied although earlier changes failed
        trigger(1),  # ok
    ]
    got = kq.control(changes, 8, 0)
    assert len(got) == 2  # the error entries only: no pending event is collected in this call
    a, b = got
    assert (a.ident, a.filter, a.flags, a.data, a.udata) == (77, USER, ERROR, errno.ENOENT, 1234)
    assert (b.ident, b.filter, b.flags, b.data, b.udata) == (5, TIMER, ERROR, errno.EINVAL, 55)
    assert kq._stats()[0] == 3  # 1, 10, 11
    got = kq.control(None, 8, 0)  # the trigger was applied
    assert [e.ident for e in got] == [1]
    apply(kq, user(11, flags=DELETE))  # 11 exists


def test_failing_change_with_no_room_raises_and_stops(kq):
    with pytest.raises(FileNotFoundError) as ei:
        kq.control([user(1), user(77, flags=DELETE), user(2)], 0)
    assert ei.value.errno == errno.ENOENT
    assert kq._stats()[0] == 1
    apply(kq, user(1, flags=DELETE))  # the change before the failure was applied
    with pytest.raises(FileNotFoundError):  # the change after it was not
        kq.control([user(2, flags=DELETE)], 0)


def test_second_failure_once_the_room_is_used_up_raises(kq):
    # FreeBSD: the first error takes the only slot; the second finds no room and kevent() fails with it
    with pytest.raises(OSError) as ei:
        kq.control([user(77, flags=DELETE), timer(5, -1), user(3)], 1, 0)
    assert ei.value.errno == errno.EINVAL
    assert kq._stats()[0] == 0


def _closed_fd() -> int:
    r, w = os.pipe()
    os.close(r)
    os.close(w)
    return r


def _exists(kq, ident) -> bool:
    return kq.control([user(ident, flags=DELETE | RECEIPT)], 1, 0)[0].data == 0


# FreeBSD kqueue_kevent(): each failing change (or EV_RECEIPT change) takes one slot of the eventlist; the
# first one that finds no slot left ends the call at once with `return (error)`: kevent() fails with that
# change's errno (Python: OSError), the changes before it stay applied, the ones after it are not, and the
# entries already written are not returned (kevent() returns -1). No pending event is collected.


def test_more_failures_than_room_partway_through(kq):
    apply(kq, user(100), trigger(100))  # pending: must not be collected, nor lost
    bad = _closed_fd()
    changes = [
        user(1),  # applied
        user(77, flags=DELETE),  # ENOENT: slot 1
        user(2),  # applied
        timer(5, -1),  # EINVAL: slot 2
        user(3),  # applied
        kevent(bad, READ, ADD),  # EBADF: no slot left, the call fails with it
        user(4),  # not applied
        user(78, flags=DELETE),  # not looked at
    ]
    with pytest.raises(OSError) as ei:
        kq.control(changes, 2, 0)
    assert ei.value.errno == errno.EBADF
    assert [i for i in (1, 2, 3, 4) if _exists(kq, i)] == [1, 2, 3]
    assert [e.ident for e in kq.control(None, 8, 0)] == [100]


def test_more_receipts_and_failures_than_room(kq):
    """Receipts of successes use slots too: the failure that finds none fails the call."""
    changes = [
        user(1, flags=ADD | RECEIPT),  # slot 1
        user(2, flags=ADD | RECEIPT),  # slot 2
        user(3),  # applied, no receipt asked
        user(79, flags=DELETE | RECEIPT),  # ENOENT: no slot left
        user(4, flags=ADD | RECEIPT),  # not applied
    ]
    with pytest.raises(FileNotFoundError):
        kq.control(changes, 2, 0)
    assert [i for i in (1, 2, 3, 4) if _exists(kq, i)] == [1, 2, 3]


def test_receipt_of_a_success_without_room_ends_the_call(kq):
    """A successful change with EV_RECEIPT and no slot left: FreeBSD's `return (error)` with error 0, so
    kevent() returns 0 (its preset return value), whatever was written; the change itself is applied, the
    ones after it are not, and nothing pending is collected."""
    apply(kq, user(100), trigger(100))
    changes = [
        user(1, flags=ADD | RECEIPT),  # slot 1
        user(77, flags=DELETE),  # ENOENT: slot 2
        user(2, flags=ADD | RECEIPT),  # applied; no slot for its receipt: the call ends, returning 0
        user(3),  # not applied
    ]
    assert kq.control(changes, 2, 0) == []
    assert [i for i in (1, 2, 3) if _exists(kq, i)] == [1, 2]
    assert [e.ident for e in kq.control(None, 8, 0)] == [100]


@pytest.mark.parametrize("flags", [ENABLE, DISABLE, 0, DELETE, ENABLE | CLEAR])
@pytest.mark.parametrize("filt", [USER, TIMER])
def test_enoent_without_add(kq, filt, flags):
    ch = kevent(3, filt, flags, 0, 10, 0)
    got = kq.control([ch], 1, 0)
    assert len(got) == 1 and got[0].flags == ERROR and got[0].data == errno.ENOENT
    with pytest.raises(FileNotFoundError):
        kq.control([ch], 0)
    assert kq._stats()[0] == 0


def test_receipt_echoes_every_change_and_collects_nothing(kq):
    apply(kq, user(1))
    apply(kq, trigger(1))  # pending
    got = kq.control([user(2, flags=ADD | RECEIPT, udata=2), user(3, flags=ADD | RECEIPT, udata=3)], 8, 0)
    assert [(e.ident, e.filter, e.flags, e.data, e.udata) for e in got] == [
        (2, USER, ERROR, 0, 2),
        (3, USER, ERROR, 0, 3),
    ]
    got = kq.control(None, 8, 0)  # the pending event is still there
    assert [e.ident for e in got] == [1]


def test_receipt_carries_errno_of_failing_change(kq):
    got = kq.control([user(9, flags=DELETE | RECEIPT), user(4, flags=ADD | RECEIPT)], 8, 0)
    assert [(e.ident, e.flags, e.data) for e in got] == [(9, ERROR, errno.ENOENT), (4, ERROR, 0)]


def test_receipt_on_some_changes_only(kq):
    apply(kq, user(1))
    got = kq.control([user(2, flags=ADD | RECEIPT), trigger(1)], 8, 0)
    # an echo was written, so no pending event is collected in this call (FreeBSD)
    assert [(e.ident, e.flags, e.data) for e in got] == [(2, ERROR, 0)]
    assert [e.ident for e in kq.control(None, 8, 0)] == [1]


def test_receipt_is_sticky(kq):
    got = kq.control([user(1, flags=ADD | CLEAR | RECEIPT)], 1, 0)
    assert [(e.flags, e.data) for e in got] == [(ERROR, 0)]
    got = kq.control([trigger(1)], 4, 0)
    assert len(got) == 1 and got[0].flags == CLEAR | RECEIPT and got[0].data == 0


def test_re_add_replaces_udata_fflags_data(kq):
    # timer: udata, period and unit are replaced (not ORed)
    apply(kq, timer(1, 10, fflags=SECONDS, udata=1))
    t0 = time.monotonic()
    apply(kq, timer(1, 20_000, fflags=USECONDS, udata=2))
    got = kq.control(None, 1, 1)
    assert time.monotonic() - t0 >= 0.02 - EPS
    assert [(e.ident, e.udata) for e in got] == [(1, 2)]
    assert kq._stats()[0] == 1
    # user: udata replaced by every change (also one without EV_ADD), data too
    apply(kq, user(2, flags=ADD, udata=1, data=1))
    apply(kq, user(2, flags=ADD, udata=2, data=2))
    apply(kq, user(2, flags=0, udata=3, data=3))
    apply(kq, user(2, flags=ENABLE, udata=4, data=4), trigger(2, udata=5, data=5))
    got = kq.control(None, 4, 0)
    assert [(e.ident, e.udata, e.data) for e in got if e.ident == 2] == [(2, 5, 5)]


def test_re_add_does_not_duplicate(kq):
    for _ in range(3):
        apply(kq, user(1), timer(2, 10_000))
    assert kq._stats()[0] == 2


@pytest.mark.parametrize("extra", [0, ADD])
def test_enable_and_disable_together_is_einval(kq, extra):
    apply(kq, user(1))
    for ident in (1, 2):
        ch = user(ident, flags=extra | ENABLE | DISABLE)
        got = kq.control([ch], 1, 0)
        assert len(got) == 1 and got[0].flags == ERROR and got[0].data == errno.EINVAL
        with pytest.raises(OSError) as ei:
            kq.control([ch], 0)
        assert ei.value.errno == errno.EINVAL
    assert kq._stats()[0] == 1


@pytest.mark.parametrize("filt", [-100, 5, 1, -20, -32768, 32767])
def test_unknown_filter_is_einval(kq, filt):
    ch = kevent(1, filt, ADD)
    got = kq.control([ch], 1, 0)
    assert len(got) == 1
    assert (got[0].filter, got[0].flags, got[0].data) == (filt, ERROR, errno.EINVAL)
    with pytest.raises(OSError) as ei:
        kq.control([ch], 0)
    assert ei.value.errno == errno.EINVAL
    assert kq._stats()[0] == 0


def _ident_for(filt, tmpfile):
    return {
        kqrs.KQ_FILTER_VNODE: tmpfile.fileno(),
        kqrs.KQ_FILTER_PROC: os.getpid(),
        kqrs.KQ_FILTER_SIGNAL: signal.SIGUSR1,
        kqrs.KQ_FILTER_AIO: 0,
    }[filt]


@pytest.mark.parametrize(
    "name", ["KQ_FILTER_VNODE", "KQ_FILTER_PROC", "KQ_FILTER_SIGNAL", "KQ_FILTER_AIO", "KQ_FILTER_NETDEV"]
)
def test_filters_not_built_fail_loudly(kq, name):
    filt = getattr(kqrs, name)
    if _kqrs._filter_supported(filt):
        pytest.skip(f"{name} is built now; its own tests cover it")
    fflags = kqrs.KQ_NOTE_EXIT if name == "KQ_FILTER_PROC" else kqrs.KQ_NOTE_WRITE if name == "KQ_FILTER_VNODE" else 0
    with tempfile.TemporaryFile() as f:
        ident = _ident_for(filt, f) if name != "KQ_FILTER_NETDEV" else 1
        ch = kevent(ident, filt, ADD, fflags)
        got = kq.control([ch], 1, 0)
        assert len(got) == 1
        assert (got[0].ident, got[0].filter, got[0].flags) == (ident, filt, ERROR)
        assert got[0].data == errno.EOPNOTSUPP
        with pytest.raises(OSError) as ei:
            kq.control([ch], 0)
        assert ei.value.errno == errno.EOPNOTSUPP
        assert kq._stats()[0] == 0
        assert kq.control(None, 1, 0) == []


# --- enable / disable / oneshot / dispatch (generic) ------------------------------------------------


def test_add_disabled_never_fires_until_enabled(kq):
    apply(kq, user(1, flags=ADD | CLEAR | DISABLE), trigger(1))
    assert kq.control(None, 1, 0.03) == []
    got = kq.control([user(1, flags=ENABLE)], 1, 0)
    assert [e.ident for e in got] == [1]


def test_delete_drops_pending(kq):
    apply(kq, user(1), trigger(1), user(1, flags=DELETE))
    assert kq.control(None, 1, 0.02) == []


def test_dispatch_flag_stays_until_delete(kq):
    apply(kq, user(1, flags=ADD | CLEAR | DISPATCH))
    for _ in range(3):
        got = kq.control([trigger(1, flags=ENABLE)], 1, 0)
        assert len(got) == 1 and got[0].flags == CLEAR | DISPATCH
        apply(kq, trigger(1))  # disabled now: not reported
        assert kq.control(None, 1, 0) == []
    apply(kq, user(1, flags=DELETE))
    assert kq._stats()[0] == 0


# --- timeouts and absorbed wake-ups ------------------------------------------------------------------


@pytest.mark.parametrize("timeout", [0.001, 0.01, 0.05])
def test_timeout_never_returns_empty_early(kq, timeout):
    apply(kq, user(1))
    t0 = time.monotonic()
    assert kq.control(None, 4, timeout) == []
    assert time.monotonic() - t0 >= timeout - EPS


def test_zero_timeout_polls(kq):
    assert kq.control(None, 4, 0) == []
    apply(kq, user(1), trigger(1))
    assert len(kq.control(None, 4, 0)) == 1


def test_max_events_zero_returns_at_once_ignoring_timeout(kq):
    apply(kq, user(1), trigger(1))
    t0 = time.monotonic()
    assert kq.control(None, 0, 5) == []
    assert time.monotonic() - t0 < 4
    assert len(kq.control(None, 1, 0)) == 1  # still pending


def test_wakeup_that_yields_nothing_is_absorbed(kq):
    """Two waiters, one EV_CLEAR event: one gets it; the other keeps waiting until its own timeout."""
    apply(kq, user(1))
    results = {}

    def waiter(i):
        t0 = time.monotonic()
        r = kq.control(None, 1, 0.3)
        results[i] = (r, time.monotonic() - t0)

    ts = [start_thread(waiter, i) for i in range(2)]
    time.sleep(0.05)
    apply(kq, trigger(1))
    for t in ts:
        t.join(5)
    assert not any(t.is_alive() for t in ts)
    got = [r for r, _ in results.values() if r]
    empty = [el for r, el in results.values() if not r]
    assert len(got) == 1 and [e.ident for e in got[0]] == [1]
    assert len(empty) == 1 and empty[0] >= 0.3 - EPS


def test_without_timeout_never_returns_empty(kq):
    apply(kq, user(1))
    results = []

    def waiter():
        try:
            results.append(kq.control(None, 1))
        except (OSError, ValueError) as e:
            results.append(e)

    ts = [start_thread(waiter) for _ in range(2)]
    try:
        time.sleep(0.05)
        apply(kq, trigger(1))
        time.sleep(0.2)
        assert len(results) == 1  # exactly one woke with the event; the other absorbed the wake-up
        assert [e.ident for e in results[0]] == [1]
        apply(kq, trigger(1))
        for t in ts:
            t.join(5)
        assert len(results) == 2
        assert [e.ident for e in results[1]] == [1]
    finally:
        kq.close()  # wakes any thread left
        for t in ts:
            t.join(5)


# --- several kqueues, threads, close ------------------------------------------------------------------


def test_two_kqueues_same_user_ident_and_timer_are_independent(kq):
    with kqrs.kqueue() as kq2:
        apply(kq, user(1), timer(2, 5))
        apply(kq2, user(1), timer(2, 10_000))
        got = kq.control([trigger(1)], 4, 0.5)
        assert 1 in [e.ident for e in got]
        assert kq2.control(None, 4, 0.03) == []  # neither its user knote nor its 10 s timer
        apply(kq, timer(2, 0, DELETE), user(1, flags=DELETE))
        assert kq2._stats()[0] == 2
        got = kq2.control([trigger(1)], 4, 0)
        assert [e.ident for e in got] == [1]


def test_close_wakes_every_blocked_thread(kq):
    outcome = {}

    def waiter(i):
        try:
            outcome[i] = kq.control(None, 1)
        except (ValueError, OSError) as e:
            outcome[i] = e
        except BaseException as e:  # anything else is a failure, but must not be lost
            outcome[i] = ("unexpected", e)

    ts = [start_thread(waiter, i) for i in range(3)]
    time.sleep(0.1)
    assert not outcome  # all blocked
    closer = start_thread(kq.close)  # close() itself must not hang either
    closer.join(5)
    for t in ts:
        t.join(5)
    assert not closer.is_alive()
    assert not any(t.is_alive() for t in ts), "a thread blocked in control() did not wake on close()"
    assert len(outcome) == 3
    for r in outcome.values():
        assert r == [] or isinstance(r, (ValueError, OSError)), r
    assert kq.closed
    with pytest.raises(ValueError, match=CLOSED_MSG):
        kq.control(None, 1, 0)


def test_change_from_another_thread_takes_effect_at_once(kq):
    def later():
        time.sleep(0.05)
        kq.control([timer(1, 10, flags=ADD | ONESHOT, udata=3)], 0)

    with Watchdog(kq):
        t = start_thread(later)
        t0 = time.monotonic()
        got = kq.control(None, 1)
        t.join(5)
    assert time.monotonic() - t0 < 4
    assert [(e.ident, e.filter, e.udata) for e in got] == [(1, TIMER, 3)]


def test_gil_released_while_blocking(kq):
    stamps = []
    stop = threading.Event()

    def spin():
        while not stop.is_set():
            stamps.append(time.monotonic())
            time.sleep(0.001)

    t = start_thread(spin)
    try:
        time.sleep(0.01)
        t0 = time.monotonic()
        assert kq.control(None, 1, 0.3) == []
        t1 = time.monotonic()
    finally:
        stop.set()
        t.join(5)
    during = [s for s in stamps if t0 + 0.05 < s < t1 - 0.05]
    assert len(during) >= 5, "another Python thread made no progress while control() blocked"


def test_kqueue_fd_is_pollable(kq):
    p = select.poll()
    p.register(kq.fileno(), select.POLLIN)
    apply(kq, user(1))
    assert p.poll(0) == []
    apply(kq, trigger(1))
    assert p.poll(1000) == [(kq.fileno(), select.POLLIN)]
    assert len(kq.control(None, 4, 0)) == 1
    assert p.poll(0) == []


# --- fds, exec, fork ------------------------------------------------------------------------------


def _fds():
    """Open fds (not counting the one listdir used while listing)."""
    out = set()
    for x in os.listdir("/proc/self/fd"):
        try:
            os.fstat(int(x))
        except OSError:
            continue
        out.add(int(x))
    return out


def test_kqueue_fd_is_close_on_exec(kq):
    assert os.get_inheritable(kq.fileno()) is False
    assert fcntl.fcntl(kq.fileno(), fcntl.F_GETFD) & fcntl.FD_CLOEXEC


def test_every_kqrs_fd_is_close_on_exec_and_not_seen_by_a_child():
    before = _fds()
    q = kqrs.kqueue()
    try:
        with tempfile.TemporaryFile() as f:
            q.control([timer(1, 10_000), user(2), kevent(f.fileno(), READ, ADD)], 0)
            new = sorted(_fds() - before - {f.fileno()})
            assert q.fileno() in new
            for fd in new:
                assert fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC, f"fd {fd} lacks FD_CLOEXEC"
            code = (
                "import os, sys\n"
                "for fd in map(int, sys.argv[1:]):\n"
                "    try:\n"
                "        t = os.readlink('/proc/self/fd/%d' % fd)\n"
                "    except OSError:\n"
                "        continue\n"
                "    if t.startswith('anon_inode:'):\n"
                "        print(fd, t)\n"
            )
            r = subprocess.run(
                [sys.executable, "-c", code, *map(str, new)],
                close_fds=False,
                capture_output=True,
                text=True,
                timeout=10,
            )
            assert r.returncode == 0, r.stderr
            assert r.stdout == "", f"kqrs fds leaked into the child: {r.stdout}"
    finally:
        q.close()


def _wait_child(pid, limit=5.0):
    end = time.monotonic() + limit
    while time.monotonic() < end:
        wpid, status = os.waitpid(pid, os.WNOHANG)
        if wpid == pid:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    pytest.fail("child hung")


def _child_checks(kq):
    """Runs in the forked child; returns a bit mask of failures."""
    code = 0
    if not kq.closed:
        code |= 1
    try:
        kq.control(None, 1, 0)
        code |= 2
    except ValueError:
        pass
    try:
        kq.fileno()
        code |= 4
    except ValueError:
        pass
    with kqrs.kqueue() as k2:
        k2.control([user(1)], 0)
        if [e.ident for e in k2.control([trigger(1)], 1, 0)] != [1]:
            code |= 8
        k2.control([timer(2, 1, ADD | ONESHOT)], 0)
        if [e.ident for e in k2.control(None, 1, 2)] != [2]:
            code |= 16
    return code


def test_fork_child_sees_closed_kqueue_and_parent_keeps_working(kq):
    apply(kq, user(1))
    pid = os.fork()
    if pid == 0:  # child
        code = 64
        try:
            code = _child_checks(kq)
            kq.close()  # closing in the child must not touch the parent's queue
        finally:
            os._exit(code)
    assert _wait_child(pid) == 0
    assert not kq.closed
    got = kq.control([trigger(1)], 4, 0)
    assert [e.ident for e in got] == [1]
    apply(kq, timer(2, 1, ADD | ONESHOT))
    assert [e.ident for e in kq.control(None, 4, 1)] == [2]


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_fork_while_another_thread_is_inside_control(kq):
    apply(kq, user(1))
    result = []
    t = start_thread(lambda: result.append(kq.control(None, 1, 4)))
    time.sleep(0.05)
    pid = os.fork()
    if pid == 0:
        code = 64
        try:
            code = _child_checks(kq)
        finally:
            os._exit(code)
    try:
        assert _wait_child(pid) == 0
        apply(kq, trigger(1))
        t.join(5)
        assert [e.ident for e in result[0]] == [1]
    finally:
        kq.close()
        t.join(5)


# --- signals -------------------------------------------------------------------------------------


@pytest.fixture
def restore_signals():
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGALRM)}
    yield
    signal.setitimer(signal.ITIMER_REAL, 0)
    for s, h in saved.items():
        signal.signal(s, h)


def test_sigint_from_a_thread_interrupts_blocking_control(kq, restore_signals):
    signal.signal(signal.SIGINT, signal.default_int_handler)
    with Watchdog(kq):
        killer = threading.Timer(0.1, os.kill, (os.getpid(), signal.SIGINT))
        killer.start()
        t0 = time.monotonic()
        try:
            with pytest.raises(KeyboardInterrupt):
                kq.control(None, 1)
        finally:
            killer.cancel()
            killer.join(5)
    assert time.monotonic() - t0 < 4


def test_sigalrm_handler_that_raises_interrupts_control(kq, restore_signals):
    class Boom(Exception):
        pass

    def handler(signum, frame):
        raise Boom

    signal.signal(signal.SIGALRM, handler)
    with Watchdog(kq):
        signal.setitimer(signal.ITIMER_REAL, 0.1)
        t0 = time.monotonic()
        with pytest.raises(Boom):
            kq.control(None, 1, 5)
    assert time.monotonic() - t0 < 4


@pytest.mark.parametrize("timeout", [None, 30])
def test_signal_at_a_slice_boundary_of_a_long_wait_still_interrupts(kq, restore_signals, timeout):
    """A wait longer than a second goes in one-second slices (to notice an os.close() of the kqueue fd).
    A signal that lands between two slices interrupts no epoll_wait: its handler must still run at once,
    not when the whole wait is over (CPython's test_selectors test_select_interrupt_exc: alarm(1))."""

    class Boom(Exception):
        pass

    def handler(signum, frame):
        raise Boom

    signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, 1.0)  # the end of the first slice
    t0 = time.monotonic()
    with pytest.raises(Boom):
        kq.control(None, 1, timeout)
    assert time.monotonic() - t0 < 2.5


def test_signal_handler_that_does_not_raise_lets_control_wait_out_its_timeout(kq, restore_signals):
    """PEP 475: EINTR is retried with the time left; the total wait is at least the timeout."""
    calls = []
    signal.signal(signal.SIGALRM, lambda s, f: calls.append(s))
    signal.setitimer(signal.ITIMER_REAL, 0.05, 0.05)
    t0 = time.monotonic()
    got = kq.control(None, 1, 0.3)
    elapsed = time.monotonic() - t0
    signal.setitimer(signal.ITIMER_REAL, 0)
    assert got == []
    assert elapsed >= 0.3 - EPS
    assert len(calls) >= 2  # the handlers really ran during the wait


def test_signal_during_wait_then_event_is_still_reported(kq, restore_signals):
    calls = []
    signal.signal(signal.SIGALRM, lambda s, f: calls.append(s))
    apply(kq, timer(1, 150, ADD | ONESHOT))
    signal.setitimer(signal.ITIMER_REAL, 0.03, 0.03)
    got = kq.control(None, 1, 2)
    signal.setitimer(signal.ITIMER_REAL, 0)
    assert [e.ident for e in got] == [1]
    assert calls


# --- the Python object ------------------------------------------------------------------------------


def test_context_manager_closes():
    with kqrs.kqueue() as q:
        assert isinstance(q, kqrs.kqueue)
        assert not q.closed
        fd = q.fileno()
    assert q.closed
    assert fd not in _fds() or not os.readlink(f"/proc/self/fd/{fd}").endswith("[eventpoll]")
    with pytest.raises(RuntimeError), kqrs.kqueue() as q2:
        raise RuntimeError
    assert q2.closed


def test_context_manager_returns_the_same_object():
    q = kqrs.kqueue()
    with q as q2:
        assert q2 is q
    assert q.closed


def test_fromfd_gives_the_same_queue(kq):
    kq2 = kqrs.kqueue.fromfd(kq.fileno())
    assert kq2.fileno() == kq.fileno()
    apply(kq, user(1))
    got = kq.control([], 4, 0) + kq2.control([trigger(1)], 4, 0)
    assert [e.ident for e in got] == [1]
    apply(kq2, user(2), trigger(2))
    assert [e.ident for e in kq.control(None, 4, 0)] == [2]
    assert kq._stats()[0] == kq2._stats()[0] == 2


def test_closed_fileno_close_semantics():
    q = kqrs.kqueue()
    fd = q.fileno()
    assert isinstance(fd, int) and fd > 0
    assert q.closed is False
    q.close()
    assert q.closed is True
    q.close()  # twice is fine
    with pytest.raises(ValueError, match=CLOSED_MSG):
        q.fileno()
    with pytest.raises(ValueError, match=CLOSED_MSG):
        q.control(None, 4)
    with pytest.raises(ValueError, match=CLOSED_MSG):
        q.control([user(1)], 0, 0)
    assert q.closed is True


def test_kqueue_takes_no_arguments():
    with pytest.raises(TypeError, match=r"^kqueue\(\) takes no positional arguments$"):
        kqrs.kqueue(1)
    with pytest.raises(TypeError, match=r"^kqueue\(\) takes no keyword arguments$"):
        kqrs.kqueue(a=1)


def test_fromfd_argument_errors():
    with pytest.raises(TypeError):
        kqrs.kqueue.fromfd(1.5)
    with pytest.raises(OverflowError, match="^Python int too large to convert to C int$"):
        kqrs.kqueue.fromfd(2**40)


def test_bad_max_events(kq):
    with pytest.raises(ValueError, match=r"^Length of eventlist must be 0 or positive, got -1$"):
        kq.control(None, -1)
    with pytest.raises(ValueError, match=r"^Length of eventlist must be 0 or positive, got -2147483648$"):
        kq.control(None, -(2**31))
    with pytest.raises(TypeError, match=r"^'float' object cannot be interpreted as an integer$"):
        kq.control(None, 1.0)
    with pytest.raises(TypeError, match=r"^'str' object cannot be interpreted as an integer$"):
        kq.control(None, "1")
    with pytest.raises(OverflowError, match="^Python int too large to convert to C int$"):
        kq.control(None, 2**31)


@pytest.mark.parametrize(
    "timeout,name",
    [
        ("1", "str"),
        (float("nan"), "float"),
        (1e300, "float"),
        (2**70, "int"),
        (-(2**40), "int"),
        (b"", "bytes"),
        ([], "list"),
    ],
)
def test_bad_timeout_type(kq, timeout, name):
    with pytest.raises(TypeError, match=rf"^timeout argument must be a number or None, got {name}$"):
        kq.control(None, 1, timeout)


@pytest.mark.parametrize("timeout", [-1, -0.5, -1e-12, -(2**30)])
def test_negative_timeout(kq, timeout):
    with pytest.raises(ValueError, match=r"^timeout must be positive or None$"):
        kq.control(None, 1, timeout)


@pytest.mark.parametrize("timeout", [0, 0.0, -0.0, 1e-10, False])
def test_zero_like_timeouts_are_accepted(kq, timeout):
    assert kq.control(None, 1, timeout) == []


def test_timeout_accepts_index_objects(kq):
    class Zero:
        def __index__(self):
            return 0

    assert kq.control(None, 1, Zero()) == []


def test_bad_changelist(kq):
    with pytest.raises(TypeError, match=r"^changelist is not iterable$"):
        kq.control(1, 1, 0)
    with pytest.raises(TypeError, match=r"^changelist must be an iterable of select.kevent objects$"):
        kq.control([1], 1, 0)
    with pytest.raises(TypeError, match=r"^changelist must be an iterable of select.kevent objects$"):
        kq.control([user(1), None], 1, 0)
    assert kq._stats()[0] == 0  # nothing was applied


def test_changelist_any_iterable(kq):
    assert kq.control((user(1),), 0) == []
    assert kq.control(iter([user(2)]), 0) == []
    assert kq.control((user(i) for i in (3, 4)), 0) == []
    assert kq.control([], 0) == []
    assert kq._stats()[0] == 4


def test_check_order(kq):
    # max_events before timeout before changelist
    with pytest.raises(ValueError, match="^Length of eventlist"):
        kq.control(1, -1, "x")
    with pytest.raises(TypeError, match="^timeout argument"):
        kq.control(1, 1, "x")
    q = kqrs.kqueue()
    q.close()
    # closed comes before every value check (but after max_events' type)
    with pytest.raises(ValueError, match=CLOSED_MSG):
        q.control(1, -1, "x")


def test_control_arity_messages_match_cpython(kq):
    with pytest.raises(TypeError, match=r"^control expected at least 2 arguments, got 1$"):
        kq.control(None)
    with pytest.raises(TypeError, match=r"^control expected at most 3 arguments, got 4$"):
        kq.control(None, 1, 0, 0)
    with pytest.raises(
        TypeError, match=r"^(kqueue\.)?control\(\) .*keyword argument"
    ):  # wording: PyO3's (docs/design.md)
        kq.control(None, 1, timeout=0)


def test_control_arity_errors_are_type_errors(kq):
    with pytest.raises(TypeError):
        kq.control(None)
    with pytest.raises(TypeError):
        kq.control(None, 1, 0, 0)
    with pytest.raises(TypeError):
        kq.control(None, 1, timeout=0)


def test_constants_module_matches_the_extension():
    """kqrs's KQ_* names are pure Python (import kqrs loads no extension); each must be the extension's."""
    from kqrs import _constants

    ext = {n: getattr(_kqrs, n) for n in dir(_kqrs) if n.startswith("KQ_")}
    assert {n: getattr(_constants, n) for n in _constants.__all__} == ext
    assert {n: getattr(kqrs, n) for n in ext} == ext == kqrs.CONSTANTS


def test_stub_constants_are_the_extensions():
    """_kqrs.pyi must stay written (type checkers read it): its KQ_* names, in __all__ and as annotated
    ints, are exactly the extension's, and each of those is an int."""
    import ast
    from pathlib import Path

    tree = ast.parse((Path(kqrs.__file__).parent / "_kqrs.pyi").read_text())
    annotated, listed = {}, set()
    for node in tree.body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            annotated[node.target.id] = ast.unparse(node.annotation)
        elif isinstance(node, ast.Assign) and [ast.unparse(t) for t in node.targets] == ["__all__"]:
            listed = {e.value for e in node.value.elts if isinstance(e, ast.Constant)}
    ext = {n: getattr(_kqrs, n) for n in dir(_kqrs) if n.startswith("KQ_")}
    assert {n: t for n, t in annotated.items() if n.startswith("KQ_")} == dict.fromkeys(ext, "int")
    assert {n for n in listed if n.startswith("KQ_")} == set(ext)
    assert all(type(v) is int for v in ext.values())


_RS_PREFIX = {"KQ_FILTER_": "EVFILT_", "KQ_EV_": "EV_", "KQ_NOTE_": "NOTE_"}


def test_extension_constants_are_consts_rs():
    """rust/src/consts.rs is the one source of the values: every KQ_* name of the extension is the
    consts.rs constant of the same name (KQ_FILTER_ -> EVFILT_, KQ_EV_ -> EV_, KQ_NOTE_ -> NOTE_), with its
    value; _constants.py, the enums and the stubs are held to the extension by the tests around this one."""
    import re
    from pathlib import Path

    src = Path(__file__).resolve().parent.parent / "rust" / "src" / "consts.rs"
    if not src.exists():
        pytest.skip("no rust/src/consts.rs beside the tests (an installed-wheel run)")
    rs = {
        m.group(1): int(m.group(2).replace("_", ""), 0)
        for m in re.finditer(r"^pub const (\w+): [iu]\d+ = (-?(?:0x[0-9A-Fa-f_]+|[0-9_]+));", src.read_text(), re.M)
    }
    for name in (n for n in dir(_kqrs) if n.startswith("KQ_")):
        prefix = next(p for p in _RS_PREFIX if name.startswith(p))
        rs_name = _RS_PREFIX[prefix] + name[len(prefix) :]
        assert rs.get(rs_name) == getattr(_kqrs, name), (name, rs_name)


def test_lazy_names_are_the_type_checking_imports():
    """__init__.py's _LAZY is the one list of the names it loads on first use; the imports it writes out
    for type checkers under TYPE_CHECKING must name the same things from the same modules."""
    import ast
    from pathlib import Path

    tree = ast.parse(Path(kqrs.__file__).read_text())
    block = next(n for n in tree.body if isinstance(n, ast.If) and ast.unparse(n.test) == "TYPE_CHECKING")
    imported = {
        a.asname or a.name: node.module.lstrip(".") if node.module else None
        for node in block.body
        if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module
        for a in node.names
    }
    assert imported == kqrs._LAZY
    assert set(kqrs._LAZY) <= set(kqrs.__all__)


def test_import_kqrs_loads_no_extension():
    code = "import sys; import kqrs; print(sorted(m for m in sys.modules if m.startswith('kqrs')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert out.stdout.strip() == "['kqrs', 'kqrs._constants']", out.stderr


def test_the_extension_brings_no_libgcc_s():
    """The unwinder Rust's panics need is linked into the extension: zig does it for the wheels, build.rs
    for a native build (libgcc_eh.a), so loading kqrs maps no libgcc_s.so, whose mappings every fork()
    would copy and tear down. (The manylinux2014 wheels do bring glibc's libdl/libpthread stubs.)"""
    code = (
        "import kqrs; before = open('/proc/self/maps').read(); kqrs.kqueue().close(); "
        "after = open('/proc/self/maps').read(); "
        "print(sorted({l.split()[-1].rsplit('/', 1)[-1] for l in after.splitlines() if '.so' in l} - "
        "{l.split()[-1].rsplit('/', 1)[-1] for l in before.splitlines() if '.so' in l}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    new = ast.literal_eval(out.stdout)
    assert any(n.startswith("_kqrs.") for n in new), new
    assert not [n for n in new if n.startswith("libgcc_s")], new


def test_the_extension_is_an_attribute_before_first_use():
    code = "import kqrs; print(kqrs._kqrs.KQ_EV_ADD, kqrs.kqueue().closed)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert out.stdout.strip() == "1 False", out.stderr


def test_the_benchmarks_epoll_ctl_floor_does_each_call_and_fails_loudly() -> None:
    """`_kqrs._epoll_ctl_cycle` (the floor side of benches' changes rows): every fd added then removed, and a
    failure stops it with the OSError of the call that failed, leaving what came before it as it was."""
    a, b = socket.socketpair()
    ep = select.epoll()
    try:
        b.send(b"x")
        _kqrs._epoll_ctl_cycle(ep.fileno(), [a.fileno(), b.fileno()], select.EPOLLIN)
        assert ep.poll(0) == []  # both removed again
        ep.register(a.fileno(), select.EPOLLIN)
        with pytest.raises(FileExistsError):
            _kqrs._epoll_ctl_cycle(ep.fileno(), [b.fileno(), a.fileno()], select.EPOLLIN)
        with pytest.raises(FileExistsError):  # b went in before a failed, and stayed
            ep.register(b.fileno(), select.EPOLLIN)
        with pytest.raises(OSError) as e:
            _kqrs._epoll_ctl_cycle(-1, [a.fileno()], select.EPOLLIN)
        assert e.value.errno == errno.EBADF
    finally:
        ep.close()
        a.close()
        b.close()
