"""EVFILT_TIMER: every line of semantics.md's timer section, plus "control() with a timeout never returns []
before the timeout has passed".

Constants are libkqueue's (NOTE_SECONDS=1, USECONDS=2, NSECONDS=4, ABSOLUTE=8; the default unit is ms).
Relative timers run on CLOCK_MONOTONIC (time.monotonic), absolute ones on CLOCK_REALTIME (time.time).
"""

from __future__ import annotations

import errno
import time

import pytest

import kqrs
from kqrs import kevent

from kqhelpers import (
    ABSOLUTE,
    ADD,
    CLEAR,
    DELETE,
    DISABLE,
    DISPATCH,
    ENABLE,
    ERROR,
    NSECONDS,
    ONESHOT,
    SECONDS,
    TIMER,
    USECONDS,
    apply,
    errno_of_add,
)

# Slack for comparing a float clock reading with a deadline computed from another float reading.
EPS = 1e-6


def timer(ident, data, flags=ADD, fflags=0, udata=0):
    return kevent(ident, TIMER, flags, fflags, data, udata)


def wait_one(kq, timeout=1.0):
    """The next event (one), waiting at most `timeout` s; fails if there is none."""
    evs = kq.control(None, 1, timeout)
    assert len(evs) == 1, f"no timer event within {timeout} s"
    return evs[0]


# --- ident, units ------------------------------------------------------------------------------------


@pytest.mark.parametrize("ident", [0, 1, 2**31, 2**40, 2**64 - 1])
def test_ident_is_any_number(kq, ident):
    apply(kq, timer(ident, 1, udata=77))
    ev = wait_one(kq)
    assert ev.ident == ident
    assert ev.filter == TIMER
    assert ev.udata == 77
    assert ev.fflags == 0
    assert ev.data >= 1
    apply(kq, timer(ident, 0, DELETE))
    assert kq._stats()[0] == 0


def test_distinct_idents_are_distinct_timers(kq):
    apply(kq, timer(2**40, 10), timer(2**40 + 1, 10_000))
    assert kq._stats()[0] == 2
    ev = wait_one(kq)
    assert ev.ident == 2**40
    # the 10 s one never shows up in the next short wait, only the 10 ms one
    for ev in kq.control(None, 4, 0.05):
        assert ev.ident == 2**40


@pytest.mark.parametrize(
    "fflags,data,seconds",
    [
        (0, 30, 0.030),  # default unit: ms
        (USECONDS, 30_000, 0.030),
        (NSECONDS, 30_000_000, 0.030),
    ],
    ids=["ms", "us", "ns"],
)
def test_units_first_expiry_not_before_period(kq, fflags, data, seconds):
    t0 = time.monotonic()
    apply(kq, timer(5, data, fflags=fflags))
    ev = wait_one(kq, 1.0)  # a wrong unit (e.g. us read as ms = 30 s) would time out here
    elapsed = time.monotonic() - t0
    assert elapsed >= seconds - EPS
    assert ev.ident == 5 and ev.fflags == 0 and ev.data >= 1


def test_unit_seconds(kq):
    t0 = time.monotonic()
    apply(kq, timer(5, 1, fflags=SECONDS))
    assert kq.control(None, 1, 0.2) == []  # 1 s, not 1 ms
    ev = wait_one(kq, 1.5)
    assert time.monotonic() - t0 >= 1.0 - EPS
    assert ev.ident == 5 and ev.data == 1


def test_relative_timer_events_carry_ev_clear(kq):
    """FreeBSD sets EV_CLEAR on a relative timer, and it shows in the returned flags."""
    apply(kq, timer(1, 5, udata=9))
    ev = wait_one(kq)
    assert ev.flags == CLEAR
    assert ev.fflags == 0
    apply(kq, timer(1, 0, DELETE), timer(2, 5, ADD | ONESHOT))
    ev = wait_one(kq)
    assert ev.ident == 2
    assert ev.flags == ONESHOT | CLEAR


# --- NOTE_ABSOLUTE ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fflags,scale",
    [(ABSOLUTE, 1_000), (ABSOLUTE | USECONDS, 1_000_000), (ABSOLUTE | NSECONDS, 1_000_000_000)],
    ids=["ms", "us", "ns"],
)
def test_absolute_fires_at_or_after_deadline(kq, fflags, scale):
    deadline = int((time.time() + 0.05) * scale)
    apply(kq, timer(3, deadline, fflags=fflags))
    ev = wait_one(kq, 1.0)
    now = time.time()
    assert now >= deadline / scale - EPS
    assert ev.ident == 3
    assert ev.data == 1
    assert ev.fflags == 0
    # No EV_CLEAR is implied for an absolute timer (FreeBSD): it fired once and stays active.
    assert ev.flags & CLEAR == 0


@pytest.mark.parametrize(
    "fflags,scale",
    [(ABSOLUTE, 1_000), (ABSOLUTE | SECONDS, 1), (ABSOLUTE | USECONDS, 10**6), (ABSOLUTE | NSECONDS, 10**9)],
    ids=["ms", "s", "us", "ns"],
)
def test_absolute_deadline_in_the_past_fires_at_once(kq, fflags, scale):
    past = int((time.time() - 10) * scale)
    apply(kq, timer(4, past, fflags=fflags))
    ev = wait_one(kq, 1.0)
    assert ev.ident == 4 and ev.data == 1


def test_absolute_deadline_zero_fires_at_once(kq):
    apply(kq, timer(4, 0, fflags=ABSOLUTE))
    assert wait_one(kq, 1.0).ident == 4


def test_absolute_future_deadline_in_seconds_does_not_fire_early(kq):
    apply(kq, timer(4, int(time.time()) + 100, fflags=ABSOLUTE | SECONDS))
    assert kq.control(None, 1, 0.05) == []


def test_absolute_without_clear_is_reported_on_every_call_until_deleted(kq):
    apply(kq, timer(4, int((time.time() - 1) * 1000), fflags=ABSOLUTE))
    for _ in range(3):
        ev = wait_one(kq, 1.0)
        assert (ev.ident, ev.data) == (4, 1)
    apply(kq, timer(4, 0, DELETE))
    assert kq.control(None, 1, 0.02) == []


def test_absolute_with_clear_is_reported_once(kq):
    apply(kq, timer(4, int((time.time() - 1) * 1000), ADD | CLEAR, fflags=ABSOLUTE))
    ev = wait_one(kq)
    assert ev.flags == CLEAR and ev.data == 1
    assert kq.control(None, 1, 0.05) == []


# --- NOTE_ABSOLUTE when the realtime clock is stepped ------------------------------------------------
#
# CLOCK_REALTIME cannot be namespaced: these tests step this machine's real clock by a few seconds (root,
# CAP_SYS_TIME) and put it back at once, to where it would have been (the monotonic time that passed).

CAP_SYS_TIME = 25


def _effective_caps() -> int:
    with open("/proc/self/status") as f:
        return next(int(ln.split()[1], 16) for ln in f if ln.startswith("CapEff:"))


@pytest.fixture
def step_clock():
    """step_clock(seconds) moves CLOCK_REALTIME by that much; the clock is restored after the test."""
    if not _effective_caps() >> CAP_SYS_TIME & 1:
        pytest.skip("stepping the realtime clock needs CAP_SYS_TIME")
    r0, m0 = time.clock_gettime_ns(time.CLOCK_REALTIME), time.monotonic_ns()
    offset = 0

    def step(seconds: float) -> None:
        nonlocal offset
        offset += int(seconds * 1e9)
        time.clock_settime_ns(time.CLOCK_REALTIME, r0 + (time.monotonic_ns() - m0) + offset)

    try:
        yield step
    finally:
        time.clock_settime_ns(time.CLOCK_REALTIME, r0 + (time.monotonic_ns() - m0))


def test_absolute_fires_at_once_when_the_clock_is_stepped_past_its_deadline(kq, step_clock):
    deadline_ms = int((time.time() + 5) * 1000)
    apply(kq, timer(6, deadline_ms, fflags=ABSOLUTE, udata=6))
    assert kq.control(None, 1, 0.1) == []
    step_clock(+10)
    t0 = time.monotonic()
    ev = wait_one(kq, 1.0)
    assert time.monotonic() - t0 < 0.5, "the timer waited for its old monotonic instant"
    assert (ev.ident, ev.data, ev.udata) == (6, 1, 6)
    assert time.time() * 1000 >= deadline_ms


def test_absolute_waits_for_the_clock_when_it_is_stepped_back(kq, step_clock):
    """The deadline is a wall-clock time: stepped back 3 s, the clock reaches it 3 s later than planned, so
    the timer has not fired when its original instant has passed; stepped forward again, it fires at once."""
    deadline_ms = int((time.time() + 0.5) * 1000)
    apply(kq, timer(7, deadline_ms, fflags=ABSOLUTE))
    step_clock(-3)
    assert kq.control(None, 1, 1.0) == [], "fired before the realtime clock reached its deadline"
    assert time.time() * 1000 < deadline_ms
    step_clock(+3)
    t0 = time.monotonic()
    ev = wait_one(kq, 1.0)
    assert time.monotonic() - t0 < 0.5
    assert (ev.ident, ev.data) == (7, 1)


def test_relative_timers_ignore_a_realtime_step(kq, step_clock):
    """Relative timers run on CLOCK_MONOTONIC: a step of the wall clock past their length changes nothing."""
    apply(kq, timer(8, 2000, ADD | ONESHOT))
    step_clock(+10)
    assert kq.control(None, 1, 0.3) == []
    step_clock(-10)
    assert kq.control(None, 1, 0.1) == []
    apply(kq, timer(8, 0, DELETE))


# --- periodic / oneshot / data --------------------------------------------------------------------


def test_periodic_unless_oneshot(kq):
    apply(kq, timer(1, 5))
    for _ in range(4):
        ev = wait_one(kq)
        assert ev.ident == 1 and ev.data >= 1 and ev.flags == CLEAR
    assert kq._stats()[0] == 1


def test_oneshot_fires_once_then_knote_is_gone(kq):
    apply(kq, timer(1, 5, ADD | ONESHOT, udata=3))
    ev = wait_one(kq)
    assert (ev.ident, ev.data, ev.udata) == (1, 1, 3)
    assert ev.flags & ONESHOT
    assert kq.control(None, 1, 0.05) == []
    assert kq._stats()[0] == 0
    with pytest.raises(FileNotFoundError) as ei:
        kq.control([timer(1, 0, DELETE)], 0)
    assert ei.value.errno == errno.ENOENT
    ent = kq.control([timer(1, 0, DELETE)], 1, 0)
    assert len(ent) == 1 and ent[0].flags == ERROR and ent[0].data == errno.ENOENT


def test_data_counts_expirations_since_last_report(kq):
    apply(kq, timer(1, 10))
    time.sleep(0.055)  # 5 periods without calling control()
    ev = wait_one(kq, 0)
    assert ev.data >= 4
    # the count restarts after a report
    t0 = time.monotonic()
    ev = wait_one(kq)
    if time.monotonic() - t0 < 0.015:  # only if we were not descheduled meanwhile
        assert ev.data <= 2


# --- re-EV_ADD ----------------------------------------------------------------------------------------


def test_re_add_changes_period(kq):
    apply(kq, timer(1, 10_000))  # 10 s
    assert kq.control(None, 1, 0.02) == []
    t0 = time.monotonic()
    apply(kq, timer(1, 20))
    ev = wait_one(kq, 1.0)
    assert time.monotonic() - t0 >= 0.020 - EPS
    assert ev.ident == 1
    assert kq._stats()[0] == 1


def test_re_add_drops_pending_expirations(kq):
    apply(kq, timer(1, 5))
    time.sleep(0.03)  # several expirations pending
    apply(kq, timer(1, 10_000))
    assert kq.control(None, 1, 0) == []
    assert kq.control(None, 1, 0.05) == []


def test_re_add_replaces_unit_not_ors_it(kq):
    apply(kq, timer(1, 10, fflags=SECONDS))
    t0 = time.monotonic()
    apply(kq, timer(1, 20_000, fflags=USECONDS))  # SECONDS|USECONDS would be EINVAL or 20000 s
    ev = wait_one(kq, 1.0)
    assert time.monotonic() - t0 >= 0.020 - EPS
    assert ev.ident == 1


def test_re_add_relative_to_absolute_and_back(kq):
    apply(kq, timer(1, 10_000))
    apply(kq, timer(1, int((time.time() - 1) * 1000), fflags=ABSOLUTE))
    ev = wait_one(kq)
    assert ev.ident == 1 and ev.data == 1
    apply(kq, timer(1, 10_000))
    assert kq.control(None, 1, 0.05) == []
    assert kq._stats()[0] == 1


def test_re_add_absolute_with_past_deadline_fires(kq):
    past = int((time.time() - 1) * 1000)
    apply(kq, timer(1, past, ADD | CLEAR, fflags=ABSOLUTE))
    assert wait_one(kq).ident == 1
    apply(kq, timer(1, past, ADD | CLEAR, fflags=ABSOLUTE))  # re-arm with a deadline already passed
    assert wait_one(kq).ident == 1


def test_re_add_oneshot_with_period_zero_fires_at_once(kq):
    apply(kq, timer(1, 10_000, ADD | ONESHOT))
    apply(kq, timer(1, 0, ADD | ONESHOT))
    assert wait_one(kq).ident == 1
    assert kq._stats()[0] == 0


def test_re_add_with_oneshot_keeps_a_periodic_timer_periodic(kq):
    """FreeBSD's kqueue_register changes only udata, and the filter's touch (filt_timertouch) only fflags and
    data, on a re-EV_ADD: the flags of the knote (EV_ONESHOT here) stay those it was added with. (NetBSD and
    macOS copy the flags; libkqueue's own suite calls FreeBSD's behaviour a bug, but FreeBSD is kqrs's
    reference.) So a periodic timer re-added with EV_ADD|EV_ONESHOT keeps firing and is still there."""
    apply(kq, timer(1, 10_000))
    apply(kq, timer(1, 5, ADD | ONESHOT))
    first = wait_one(kq)
    assert first.ident == 1 and not first.flags & ONESHOT
    assert wait_one(kq).ident == 1  # a second expiration: still periodic
    assert kq._stats()[0] == 1
    apply(kq, timer(1, 0, DELETE))  # no ENOENT: the knote is still there


def test_re_add_changes_udata(kq):
    apply(kq, timer(1, 10_000, udata=1))
    apply(kq, timer(1, 5, udata=2))
    assert wait_one(kq).udata == 2


# --- bad and extreme periods ----------------------------------------------------------------------


@pytest.mark.parametrize("fflags", [0, SECONDS, USECONDS, NSECONDS, ABSOLUTE])
def test_negative_period_is_einval(kq, fflags):
    assert errno_of_add(kq, timer(1, -1, fflags=fflags)) == errno.EINVAL
    assert errno_of_add(kq, timer(1, -(2**63), fflags=fflags)) == errno.EINVAL
    assert kq._stats()[0] == 0


def test_negative_period_on_existing_timer_is_einval(kq):
    apply(kq, timer(1, 10_000))
    assert errno_of_add(kq, timer(1, -5)) == errno.EINVAL


@pytest.mark.parametrize(
    "fflags,data",
    [
        (0, 2**62),
        (0, 2**63 - 1),
        (SECONDS, 2**62),
        (SECONDS, 2**63 - 1),
        (USECONDS, 2**63 - 1),
        (NSECONDS, 2**63 - 1),
        (ABSOLUTE, 2**62),
        (ABSOLUTE | SECONDS, 2**63 - 1),
    ],
)
def test_huge_period_is_accepted_and_does_not_fire(kq, fflags, data):
    apply(kq, timer(1, data, fflags=fflags))
    assert kq._stats()[0] == 1
    assert kq.control(None, 1, 0.05) == []


def test_period_zero_fires_at_once(kq):
    apply(kq, timer(1, 0))
    ev = wait_one(kq, 1.0)
    assert ev.ident == 1 and ev.data >= 1
    # FreeBSD: a zero period is one unit; the timer keeps firing
    assert wait_one(kq, 1.0).ident == 1


def test_period_zero_oneshot_fires_at_once_then_gone(kq):
    apply(kq, timer(1, 0, ADD | ONESHOT))
    ev = wait_one(kq, 1.0)
    assert ev.ident == 1 and ev.data == 1
    assert kq._stats()[0] == 0


def test_period_zero_in_seconds_fires_at_once_as_oneshot(kq):
    apply(kq, timer(1, 0, ADD | ONESHOT, fflags=SECONDS))
    assert wait_one(kq, 0.5).ident == 1


# --- enable / disable / dispatch --------------------------------------------------------------------


def test_disable_stops_delivery_and_drops_pending(kq):
    apply(kq, timer(1, 5))
    time.sleep(0.03)  # expirations pending
    apply(kq, timer(1, 0, DISABLE))
    assert kq.control(None, 1, 0) == []
    assert kq.control(None, 1, 0.05) == []
    assert kq._stats()[0] == 1


def test_enable_rearms(kq):
    apply(kq, timer(1, 5))
    apply(kq, timer(1, 0, DISABLE))
    assert kq.control(None, 1, 0.03) == []
    apply(kq, timer(1, 0, ENABLE))
    ev = wait_one(kq, 1.0)
    assert ev.ident == 1 and ev.data >= 1 and ev.flags == CLEAR


def test_add_disabled_never_fires_until_enabled(kq):
    apply(kq, timer(1, 5, ADD | DISABLE))
    assert kq.control(None, 1, 0.05) == []
    apply(kq, timer(1, 0, ENABLE))
    assert wait_one(kq).ident == 1


def test_dispatch(kq):
    apply(kq, timer(1, 5, ADD | DISPATCH, udata=4))
    ev = wait_one(kq)
    assert ev.flags == DISPATCH | CLEAR
    assert ev.udata == 4
    # disabled after the report
    assert kq.control(None, 1, 0.05) == []
    apply(kq, timer(1, 0, ENABLE))
    ev = wait_one(kq)
    assert ev.ident == 1
    assert ev.flags == DISPATCH | CLEAR  # the flag stays set until EV_DELETE
    assert kq.control(None, 1, 0.05) == []
    apply(kq, timer(1, 0, DELETE))
    assert kq._stats()[0] == 0


def test_delete_drops_pending(kq):
    apply(kq, timer(1, 5))
    time.sleep(0.03)
    apply(kq, timer(1, 0, DELETE))
    assert kq.control(None, 1, 0.02) == []
    assert kq._stats()[0] == 0


# --- fflags validation --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fflags",
    [
        SECONDS | USECONDS,
        SECONDS | NSECONDS,
        USECONDS | NSECONDS,
        SECONDS | USECONDS | NSECONDS,
        ABSOLUTE | SECONDS | NSECONDS,
    ],
)
def test_more_than_one_unit_is_einval(kq, fflags):
    assert errno_of_add(kq, timer(1, 10, fflags=fflags)) == errno.EINVAL
    assert kq._stats()[0] == 0


@pytest.mark.parametrize("fflags", [0x10, 0x100, 0x8000_0000, kqrs.KQ_NOTE_TRIGGER])
def test_unknown_fflags_is_einval(kq, fflags):
    assert errno_of_add(kq, timer(1, 10, fflags=fflags)) == errno.EINVAL
    assert kq._stats()[0] == 0


# --- control() timeouts ---------------------------------------------------------------------------


@pytest.mark.parametrize("timeout", [0.001, 0.01, 0.05, 0.0123])
def test_control_never_returns_empty_before_timeout(kq, timeout):
    for _ in range(4):
        t0 = time.monotonic()
        assert kq.control(None, 1, timeout) == []
        assert time.monotonic() - t0 >= timeout - EPS


def test_control_never_returns_empty_before_timeout_with_knotes(kq):
    # a far timer and a disabled fast one: neither may shorten the wait
    apply(kq, timer(1, 10_000), timer(2, 1, ADD | DISABLE))
    for timeout in (0.001, 0.01, 0.05):
        t0 = time.monotonic()
        assert kq.control(None, 4, timeout) == []
        assert time.monotonic() - t0 >= timeout - EPS


def test_control_with_dispatch_timer_waits_full_timeout(kq):
    """A timer reported once with EV_DISPATCH keeps expiring while disabled; those wake-ups are absorbed."""
    apply(kq, timer(1, 1, ADD | DISPATCH))
    assert wait_one(kq).ident == 1
    t0 = time.monotonic()
    assert kq.control(None, 1, 0.05) == []
    assert time.monotonic() - t0 >= 0.05 - EPS
