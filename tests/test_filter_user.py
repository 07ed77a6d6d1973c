"""EVFILT_USER: every line of semantics.md's user section.

Reference: FreeBSD filt_userattach / filt_usertouch. fflags low 24 bits (NOTE_FFLAGSMASK) are combined by the
control bits of each change (NOTE_FFNOP keep, NOTE_FFAND, NOTE_FFOR, NOTE_FFCOPY); data is replaced by every
change; the reported fflags never carry control bits or NOTE_TRIGGER.
"""

from __future__ import annotations

import errno
import os
import threading
import time

import pytest

import kqrs
from kqrs import kevent

from kqhelpers import (
    ADD,
    CLEAR,
    DELETE,
    DISABLE,
    DISPATCH,
    ENABLE,
    ERROR,
    FFAND,
    FFCOPY,
    FFCTRLMASK,
    FFLAGSMASK,
    FFNOP,
    FFOR,
    ONESHOT,
    TRIGGER,
    USER,
    apply,
)


def user(ident, flags=ADD | CLEAR, fflags=0, data=0, udata=0):
    return kevent(ident, USER, flags, fflags, data, udata)


def trigger(ident, fflags=0, data=0, udata=0, flags=0):
    return kevent(ident, USER, flags, TRIGGER | fflags, data, udata)


def events(kq, n=16, timeout=0):
    return kq.control(None, n, timeout)


def test_trigger_fires(kq):
    apply(kq, user(1, udata=5))
    assert events(kq, timeout=0.02) == []
    got = kq.control([trigger(1, udata=5)], 4, 0)  # changes are applied before collection
    assert len(got) == 1
    ev = got[0]
    assert (ev.ident, ev.filter, ev.flags, ev.fflags, ev.data, ev.udata) == (1, USER, CLEAR, 0, 0, 5)
    assert events(kq, timeout=0.02) == []


def test_trigger_with_ev_add_on_existing_knote_fires(kq):
    apply(kq, user(1))
    apply(kq, trigger(1, flags=ADD))
    assert [e.ident for e in events(kq)] == [1]


def test_untriggered_knote_is_never_reported(kq):
    apply(kq, user(1), user(2, ADD))  # with and without EV_CLEAR
    assert events(kq, timeout=0.05) == []


def test_triggers_coalesce_into_one_event(kq):
    apply(kq, user(1))
    apply(kq, trigger(1), trigger(1), trigger(1))
    for _ in range(3):
        apply(kq, trigger(1))
    got = events(kq)
    assert len(got) == 1 and got[0].ident == 1
    assert events(kq, timeout=0.02) == []


def test_many_knotes_each_reported_once(kq):
    apply(kq, *[user(i) for i in range(10)])
    apply(kq, *[trigger(i) for i in range(10)], *[trigger(i) for i in range(10)])
    got = events(kq, 32)
    assert sorted(e.ident for e in got) == list(range(10))


# --- fflags --------------------------------------------------------------------------------------


def test_fflags_combination_exact_values(kq):
    apply(kq, user(1, fflags=0x0F))

    def fire(fflags):
        got = kq.control([trigger(1, fflags)], 4, 0)
        assert len(got) == 1
        return got[0].fflags

    assert fire(FFNOP) == 0x0F  # keep
    assert fire(FFNOP | 0xF0) == 0x0F  # FFNOP ignores the value bits
    assert fire(FFOR | 0xF0) == 0xFF
    assert fire(FFAND | 0x3C) == 0x3C
    assert fire(FFOR | 0x800000) == 0x80003C
    assert fire(FFCOPY | 0xABCDEF) == 0xABCDEF
    assert fire(FFAND | 0) == 0
    assert fire(FFCOPY | FFLAGSMASK) == FFLAGSMASK  # NOTE_TRIGGER (bit 24) never shows
    assert fire(FFAND | 0x123456) == 0x123456
    assert fire(FFNOP) == 0x123456  # sfflags persist across reports, even with EV_CLEAR


def test_fflags_change_without_trigger_then_trigger(kq):
    apply(kq, user(1, fflags=0x1))
    apply(kq, user(1, flags=0, fflags=FFOR | 0x2))  # no NOTE_TRIGGER: nothing fires
    assert events(kq, timeout=0.02) == []
    apply(kq, user(1, flags=0, fflags=FFOR | 0x4))
    got = kq.control([trigger(1)], 4, 0)
    assert [e.fflags for e in got] == [0x7]


@pytest.mark.parametrize("ctrl", [FFNOP, FFAND, FFOR, FFCOPY])
def test_reported_fflags_never_carry_control_bits_or_trigger(kq, ctrl):
    apply(kq, user(1, fflags=FFLAGSMASK))
    got = kq.control([trigger(1, ctrl | FFLAGSMASK)], 4, 0)
    assert len(got) == 1
    assert got[0].fflags & ~FFLAGSMASK == 0
    assert got[0].fflags & TRIGGER == 0
    assert got[0].fflags & FFCTRLMASK == 0
    assert got[0].fflags == FFLAGSMASK


def test_initial_fflags_control_bits_are_not_reported(kq):
    apply(kq, user(1, fflags=FFCOPY | 0x55))
    got = kq.control([trigger(1)], 4, 0)
    assert len(got) == 1
    assert got[0].fflags & ~FFLAGSMASK == 0


# --- data ------------------------------------------------------------------------------------------


def test_data_replaced_by_each_change(kq):
    apply(kq, user(1, flags=ADD, data=11))  # level-triggered: reported until deleted
    got = kq.control([trigger(1, data=5)], 4, 0)
    assert [e.data for e in got] == [5]
    apply(kq, user(1, flags=0, data=42))  # a change without NOTE_TRIGGER still replaces data
    assert [e.data for e in events(kq)] == [42]
    apply(kq, user(1, flags=0, data=-7))
    assert [e.data for e in events(kq)] == [-7]
    apply(kq, user(1, flags=ADD, data=2**63 - 1))
    assert [e.data for e in events(kq)] == [2**63 - 1]


def test_data_of_trigger_is_reported(kq):
    apply(kq, user(1, data=3))
    got = kq.control([trigger(1, data=99)], 4, 0)
    assert [e.data for e in got] == [99]


# --- level vs clear --------------------------------------------------------------------------------


def test_without_clear_a_triggered_event_is_reported_on_every_call(kq):
    apply(kq, user(1, flags=ADD, udata=8))
    apply(kq, trigger(1, udata=8))
    for _ in range(4):
        got = events(kq, 4, 0.5)
        assert len(got) == 1
        assert (got[0].ident, got[0].flags, got[0].udata) == (1, 0, 8)
    apply(kq, user(1, flags=DELETE))
    assert events(kq, timeout=0.02) == []


def test_with_clear_a_triggered_event_is_reported_once(kq):
    apply(kq, user(1))
    apply(kq, trigger(1))
    got = events(kq)
    assert len(got) == 1 and got[0].flags == CLEAR
    assert events(kq, timeout=0.05) == []
    # and it can be triggered again
    apply(kq, trigger(1))
    assert len(events(kq)) == 1


def test_level_triggered_event_reported_once_per_call(kq):
    apply(kq, user(1, flags=ADD), user(2, flags=ADD))
    apply(kq, trigger(1), trigger(2))
    got = events(kq, 16)
    assert sorted(e.ident for e in got) == [1, 2]


def test_oneshot_user_is_deleted_after_report(kq):
    apply(kq, user(1, flags=ADD | ONESHOT))
    apply(kq, trigger(1))
    got = events(kq)
    assert len(got) == 1 and got[0].flags == ONESHOT
    assert kq._stats()[0] == 0
    with pytest.raises(FileNotFoundError):
        kq.control([trigger(1)], 0)


# --- threads ---------------------------------------------------------------------------------------


def test_trigger_from_another_thread_wakes_blocked_control(kq):
    apply(kq, user(1))

    def later():
        time.sleep(0.05)
        kq.control([trigger(1, data=6)], 0)

    t = threading.Thread(target=later)
    t0 = time.monotonic()
    t.start()
    try:
        got = kq.control(None, 1, 5)
    finally:
        t.join(5)
    assert time.monotonic() - t0 < 5
    assert [(e.ident, e.data) for e in got] == [(1, 6)]


def test_trigger_from_another_thread_wakes_control_without_timeout(kq):
    apply(kq, user(1))
    # a watchdog that turns a hang into a failure
    apply(kq, user(999))
    wd = threading.Timer(4, lambda: kq.control([trigger(999)], 0))
    wd.start()
    t = threading.Timer(0.05, lambda: kq.control([trigger(1)], 0))
    t.start()
    try:
        got = kq.control(None, 1)
    finally:
        wd.cancel()
        t.join(5)
        wd.join(5)
    assert [e.ident for e in got] == [1]


# --- enable / disable / dispatch --------------------------------------------------------------------


def test_enable_and_trigger_in_one_change_rearms_dispatch_knote(kq):
    apply(kq, user(1, flags=ADD | CLEAR | DISPATCH))
    got = kq.control([trigger(1)], 4, 0)
    assert len(got) == 1 and got[0].flags == CLEAR | DISPATCH
    # now disabled: nothing pending, and a plain EV_ENABLE has nothing to report
    assert events(kq, timeout=0.02) == []
    apply(kq, user(1, flags=ENABLE))
    assert events(kq, timeout=0.02) == []
    apply(kq, user(1, flags=DISABLE))
    got = kq.control([trigger(1, flags=ENABLE)], 4, 0)
    assert len(got) == 1
    assert got[0].ident == 1 and got[0].flags == CLEAR | DISPATCH
    assert events(kq, timeout=0.02) == []


def test_dispatch_is_durable_across_disable_enable_cycles(kq):
    """FreeBSD: EV_DISPATCH stays part of the knote; each delivery disables it, and each EV_ENABLE re-arms
    it for the next trigger, whatever EV_DISABLE / EV_ENABLE came in between."""
    apply(kq, user(1, flags=ADD | CLEAR | DISPATCH, udata=3))
    for cycle in range(4):
        apply(kq, trigger(1, udata=3))
        got = events(kq)
        assert [(e.ident, e.flags, e.udata) for e in got] == [(1, CLEAR | DISPATCH, 3)], cycle
        apply(kq, trigger(1, udata=3))
        assert events(kq, timeout=0.01) == []  # disabled by the delivery
        apply(kq, user(1, flags=DISABLE, udata=3))
        apply(kq, user(1, flags=ENABLE, udata=3))
        got = events(kq)  # the trigger while disabled, after EV_ENABLE
        assert [(e.ident, e.flags) for e in got] == [(1, CLEAR | DISPATCH)], cycle
        apply(kq, user(1, flags=ENABLE, udata=3))


def test_dispatch_is_durable_when_modified_without_it(kq):
    apply(kq, user(1, flags=ADD | CLEAR | DISPATCH))
    apply(kq, user(1, flags=ADD | CLEAR, fflags=FFOR | 0x1))  # re-add without EV_DISPATCH: flags stay
    apply(kq, trigger(1))
    assert [e.flags for e in events(kq)] == [CLEAR | DISPATCH]
    apply(kq, trigger(1))
    assert events(kq, timeout=0.01) == []


def test_fflags_above_the_mask_are_ignored(kq):
    """FreeBSD's filt_usertouch masks the value with NOTE_FFLAGSMASK: bits 25-29 are ignored, never an
    error; FFCOPY with all 32 bits set stores (and triggers) exactly NOTE_FFLAGSMASK."""
    apply(kq, user(1, fflags=0x3E00_0000 | 0x5))
    got = kq.control([trigger(1, 0x3E00_0000)], 4, 0)
    assert [e.fflags for e in got] == [0x5]
    got = kq.control([kevent(1, USER, 0, 0xFFFF_FFFF)], 4, 0)
    assert [e.fflags for e in got] == [FFLAGSMASK]
    got = kq.control([trigger(1, FFAND | 0x3E00_0000 | 0x30)], 4, 0)
    assert [e.fflags for e in got] == [0x30]


def test_trigger_while_disabled_is_reported_after_enable(kq):
    apply(kq, user(1, flags=ADD | CLEAR | DISABLE))
    apply(kq, trigger(1, data=4))
    assert events(kq, timeout=0.03) == []
    apply(kq, user(1, flags=ENABLE, data=4))
    got = events(kq)
    assert [(e.ident, e.data) for e in got] == [(1, 4)]


def test_disable_drops_pending_event(kq):
    apply(kq, user(1))
    apply(kq, trigger(1))
    apply(kq, user(1, flags=DISABLE))
    assert events(kq, timeout=0.03) == []


def test_dispatch_without_clear_stays_triggered_until_reenabled(kq):
    apply(kq, user(1, flags=ADD | DISPATCH))
    apply(kq, trigger(1))
    assert len(events(kq)) == 1
    assert events(kq, timeout=0.02) == []
    apply(kq, user(1, flags=ENABLE))  # still triggered (no EV_CLEAR): reported again
    got = events(kq)
    assert len(got) == 1 and got[0].flags == DISPATCH


# --- independence, scale, deletion ------------------------------------------------------------------


def test_same_ident_in_two_kqueues_is_independent(kq):
    with kqrs.kqueue() as kq2:
        apply(kq, user(7, fflags=0x1, udata=1))
        apply(kq2, user(7, fflags=0x2, udata=2))
        got = kq.control([trigger(7, FFOR | 0x10, udata=1)], 4, 0)
        assert [(e.ident, e.fflags, e.udata) for e in got] == [(7, 0x11, 1)]
        assert kq2.control(None, 4, 0.02) == []
        got = kq2.control([trigger(7, udata=2)], 4, 0)
        assert [(e.ident, e.fflags, e.udata) for e in got] == [(7, 0x2, 2)]
        apply(kq, user(7, flags=DELETE))
        got = kq2.control([trigger(7, udata=2)], 4, 0)
        assert [e.ident for e in got] == [7]
        assert kq2._stats()[0] == 1


def _fd_count():
    return len(os.listdir("/proc/self/fd"))


def test_100k_user_knotes_cost_no_fds(kq):
    n = 100_000
    before = _fd_count()
    apply(kq, user(0))  # the kqueue's timer source (its kick) comes with its first USER knote: one per kqueue
    assert _fd_count() == before + 1
    apply(kq, *[user(i) for i in range(1, n)])
    assert _fd_count() == before + 1
    assert kq._stats()[0] == n
    apply(kq, *[trigger(i) for i in range(n)])
    got = []
    for _ in range(n):
        batch = kq.control(None, 4096, 0)
        if not batch:
            break
        got += batch
    idents = [e.ident for e in got]
    assert len(idents) == n  # each exactly once
    assert set(idents) == set(range(n))
    assert {(e.filter, e.flags) for e in got} == {(USER, CLEAR)}
    assert kq.control(None, 16, 0) == []
    assert _fd_count() == before + 1


def test_delete_removes(kq):
    apply(kq, user(1))
    apply(kq, trigger(1))
    apply(kq, user(1, flags=DELETE))
    assert kq._stats()[0] == 0
    assert events(kq, timeout=0.02) == []  # the pending trigger went with it
    with pytest.raises(FileNotFoundError) as ei:
        kq.control([trigger(1)], 0)
    assert ei.value.errno == errno.ENOENT
    with pytest.raises(FileNotFoundError):
        kq.control([user(1, flags=DELETE)], 0)


def test_trigger_of_unknown_ident_without_add_is_enoent(kq):
    apply(kq, user(1))
    got = kq.control([trigger(2, udata=3)], 4, 0)
    assert len(got) == 1
    e = got[0]
    assert (e.ident, e.filter, e.flags, e.data, e.udata) == (2, USER, ERROR, errno.ENOENT, 3)
    with pytest.raises(FileNotFoundError) as ei:
        kq.control([trigger(2)], 0)
    assert ei.value.errno == errno.ENOENT
    assert kq._stats()[0] == 1


@pytest.mark.parametrize("flags", [0, ENABLE, DISABLE, DELETE])
def test_change_of_unknown_user_knote_without_add_is_enoent(kq, flags):
    with pytest.raises(FileNotFoundError):
        kq.control([user(5, flags=flags)], 0)
