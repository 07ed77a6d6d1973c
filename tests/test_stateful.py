"""Property-based, stateful tests (issue 8): Hypothesis state machines drive random changelists against a
plain-Python model of the knote table, and kqrs must agree with the model after every step.

- `KnoteTableMachine`: EVFILT_USER and EVFILT_TIMER knotes (add, modify, enable, disable, delete, trigger,
  collect, close). Timers use periods that never expire during a test, or EV_ONESHOT with period 0, which
  fires at once: nothing fires unless the model says so. Checked after every step: the number of knotes,
  which (ident, filter) pairs are registered (an EV_RECEIPT probe without EV_ADD, which changes nothing),
  whether the kqueue fd polls readable, and every event and EV_ERROR entry a call returns.
- `PipeSocketMachine`: EVFILT_READ / EVFILT_WRITE on real pipes and socketpairs (write, read, add, delete,
  enable, disable, close either end) with level-triggered, EV_ONESHOT and EV_DISPATCH knotes; the reported
  data (bytes readable, space free) and EV_EOF must match the model. (EV_CLEAR on fds is left to
  test_filter_read_write.py: what re-arms an edge differs between pipes and sockets even on FreeBSD.)

The model follows semantics.md (FreeBSD, with kqrs's documented choices: NOTE_TRIGGER honoured on EV_ADD,
EV_DISABLE drops a pending timer expiration). Fixed seed (derandomize) and few examples by default, so CI
stays fast; `KQRS_LONG=1` runs many more examples and longer programs.

Nothing is avoided: every collect uses the room it drew, and every invariant is checked as stated. Bugs a
long run finds become plain tests in the last section (or strict xfails naming them).
"""

from __future__ import annotations

import errno
import fcntl
import os
import select
import socket
import struct
import time
from dataclasses import dataclass, field

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import (  # noqa: E402
    HealthCheck,
    settings,
    strategies as st,  # noqa: E402
)
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule  # noqa: E402

import kqrs  # noqa: E402
from kqrs import kevent  # noqa: E402

from kqhelpers import (  # noqa: E402
    ADD,
    CLEAR,
    DELETE,
    DISABLE,
    DISPATCH,
    ENABLE,
    EOF,
    ERROR,
    FFAND,
    FFCOPY,
    FFCTRLMASK,
    FFLAGSMASK,
    FFOR,
    NSECONDS,
    ONESHOT,
    READ,
    RECEIPT,
    SECONDS,
    TIMER,
    TRIGGER,
    USECONDS,
    USER,
    WRITE,
)

STICKY = ONESHOT | CLEAR | RECEIPT | DISPATCH
INPUT_MASK = ADD | DELETE | ENABLE | DISABLE | ONESHOT | CLEAR | RECEIPT | DISPATCH | 0xF000
TIMER_UNITS = SECONDS | USECONDS | NSECONDS
# A period (in each unit) that never expires during a test: about 11 days.
LONG = {0: 10**9, SECONDS: 10**6, USECONDS: 10**12, NSECONDS: 10**15}

LONG_RUN = os.environ.get("KQRS_LONG") == "1"
IDENTS = range(4)

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def fields(e):
    return (e.ident, e.filter, e.flags, e.fflags, e.data, e.udata)


def polls_readable(fd: int) -> bool:
    return bool(select.select([fd], [], [], 0)[0])


def check_collected(got: list, ready: dict, room: int) -> list:
    """`got` (a control() result) must be min(room, len(ready)) distinct events, each exactly as the model
    has it in `ready` (key -> expected fields). Returns the keys reported."""
    keys = [(e.ident, e.filter) for e in got]
    assert len(keys) == len(set(keys)), f"a knote reported twice in one call: {keys}"
    assert len(got) == min(room, len(ready)), (sorted(fields(e) for e in got), sorted(ready.values()))
    for e in got:
        k = (e.ident, e.filter)
        assert k in ready, f"unexpected event {fields(e)}; model: {sorted(ready.values())}"
        assert fields(e) == ready[k], (fields(e), ready[k])
    return keys


# =========================================================================================================
# USER and TIMER knotes against a model of the knote table
# =========================================================================================================


@dataclass
class MKnote:
    filter: int
    flags: int  # sticky flags (a timer's include EV_CLEAR)
    fflags: int  # USER: stored fflags (low 24 bits); TIMER: unit
    data: int
    udata: int
    enabled: bool
    triggered: bool = False  # USER
    pending: int = 0  # TIMER: expirations not yet reported


class ModelQueue:
    """The knote table of one kqueue, for USER and TIMER, as kqrs should keep it."""

    def __init__(self):
        self.knotes: dict[tuple[int, int], MKnote] = {}

    # -- changes ------------------------------------------------------------------------------------------

    def apply_one(self, ch) -> int:
        """One change; returns its errno (0 = fine)."""
        flags, key = ch.flags, (ch.ident, ch.filter)
        if flags & ~(INPUT_MASK | EOF | ERROR):
            return errno.EINVAL
        if flags & ENABLE and flags & DISABLE:
            return errno.EINVAL
        k = self.knotes.get(key)
        if k is not None:
            if not flags & DELETE:
                if ch.filter == USER:  # every change touches a USER knote (filt_usertouch)
                    v = ch.fflags & FFLAGSMASK
                    ctrl = ch.fflags & FFCTRLMASK
                    if ctrl == FFAND:
                        k.fflags &= v
                    elif ctrl == FFOR:
                        k.fflags |= v
                    elif ctrl == FFCOPY:
                        k.fflags = v
                    k.data, k.udata = ch.data, ch.udata
                    if flags & CLEAR:
                        k.triggered = False
                elif flags & ADD:  # a timer's re-EV_ADD: new period and unit, pending expirations dropped
                    if err := self._timer_invalid(ch):
                        return err
                    k.fflags, k.data, k.udata = ch.fflags, ch.data, ch.udata
                    k.pending = 1 if (k.flags & ONESHOT and ch.data == 0) else 0
                else:
                    k.udata = ch.udata
        else:
            if not flags & ADD:
                return errno.ENOENT
            if ch.filter == USER:
                k = MKnote(USER, flags & STICKY, ch.fflags & FFLAGSMASK, ch.data, ch.udata, not flags & DISABLE)
            else:
                if err := self._timer_invalid(ch):
                    return err
                oneshot_now = flags & ONESHOT and ch.data == 0
                k = MKnote(TIMER, (flags & STICKY) | CLEAR, ch.fflags, ch.data, ch.udata, not flags & DISABLE)
                k.pending = 1 if oneshot_now else 0  # fires at once, also while disabled
            self.knotes[key] = k
        if flags & DELETE:
            del self.knotes[key]
            return 0
        if flags & DISABLE and k.enabled:
            k.enabled = False
            k.pending = 0  # kqrs: EV_DISABLE drops a pending timer expiration
        if flags & ENABLE:
            k.enabled = True
        if ch.filter == USER and ch.fflags & TRIGGER:
            k.triggered = True
        return 0

    @staticmethod
    def _timer_invalid(ch) -> int:
        if ch.fflags & ~TIMER_UNITS or bin(ch.fflags & TIMER_UNITS).count("1") > 1 or ch.data < 0:
            return errno.EINVAL
        return 0

    def apply(self, changes, room: int):
        """kevent()'s change loop: (entries, errno that makes the call fail or 0, whether it collects)."""
        entries = []
        for ch in changes:
            err = self.apply_one(ch)
            if err == 0 and not ch.flags & RECEIPT:
                continue
            if len(entries) >= room:
                # stops here: raises err, or, for a receipt, returns nothing (FreeBSD: 0, whatever was
                # written before)
                return (entries if err else []), err, False
            entries.append((ch.ident, ch.filter, ERROR, err, ch.udata))
        return entries, 0, not entries and room > 0

    # -- collection ---------------------------------------------------------------------------------------

    def ready(self) -> dict:
        out = {}
        for (ident, filt), k in self.knotes.items():
            if not k.enabled:
                continue
            if filt == USER and k.triggered:
                out[(ident, filt)] = (ident, USER, k.flags, k.fflags, k.data, k.udata)
            elif filt == TIMER and k.pending:
                out[(ident, filt)] = (ident, TIMER, k.flags, 0, k.pending, k.udata)
        return out

    def reported(self, key) -> None:
        k = self.knotes[key]
        if k.flags & ONESHOT:
            del self.knotes[key]
            return
        if k.flags & DISPATCH:
            k.enabled = False
        if k.filter == USER:
            if k.flags & CLEAR:
                k.triggered = False
        else:
            k.pending = 0


udatas = st.sampled_from([0, 1, 7, 2**63, 2**64 - 1])
user_fflags = st.builds(
    lambda ctrl, low, trig, bad: ctrl | low | trig | bad,
    st.sampled_from([0, FFAND, FFOR, FFCOPY]),
    st.sampled_from([0, 0x1, 0x3, 0x10, 0xFFFFFF]),
    st.sampled_from([0, TRIGGER]),
    st.sampled_from([0] * 15 + [0x0200_0000]),  # now and then a bit above the mask: ignored (filt_usertouch)
)
flag_sets = st.builds(
    lambda base, extra: base | extra,
    st.sampled_from([ADD] * 5 + [0, 0, DELETE, ENABLE, ENABLE, DISABLE, ADD | DISABLE, ADD | ENABLE, ADD | DELETE]),
    st.sampled_from(
        [0] * 8
        + [ONESHOT, CLEAR, CLEAR, DISPATCH, RECEIPT, ONESHOT | CLEAR, DISPATCH | CLEAR]
        + [ENABLE | DISABLE, 0x100]
    ),
)


class KnoteTableMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.kq = kqrs.kqueue()
        self.model = ModelQueue()

    def teardown(self):
        self.kq.close()

    # -- helpers --------------------------------------------------------------------------------------------

    def _timer_change(self, data, ident, flags, unit, udata):
        """A TIMER change whose period never expires unless the model says so (EV_ONESHOT with 0)."""
        k = self.model.knotes.get((ident, TIMER))
        oneshot = (k.flags if k is not None and flags & ADD else flags) & ONESHOT
        choices = [LONG[unit], -1] + ([0, 0] if oneshot else [])
        period = data.draw(st.sampled_from(choices), label="period")
        fflags = unit if data.draw(st.integers(0, 9), label="bad-unit") else SECONDS | NSECONDS
        if k is not None and k.enabled and flags & ADD and period == 0:
            # A re-armed zero one-shot timer fires within microseconds; an EV_DISABLE in the same change
            # reads (drops) its expiration only if it already fired: a race, not a semantic. Leave it out.
            flags &= ~DISABLE
        return kevent(ident, TIMER, flags, fflags, period, udata)

    def _user_change(self, ident, flags, fflags, data, udata):
        k = self.model.knotes.get((ident, USER))
        if k is not None and flags & CLEAR and fflags & TRIGGER and not flags & DELETE:
            # EV_CLEAR and NOTE_TRIGGER in one change to an existing knote: FreeBSD's filt_usertouch lets
            # the clear cancel the trigger, kqrs triggers after the clear. Not a question for this machine.
            fflags &= ~TRIGGER
        return kevent(ident, USER, flags, fflags, data, udata)

    def _run(self, changes, room):
        """Applies `changes` to kqrs and to the model; compares entries, errors and collected events."""
        entries, err, collects = self.model.apply(changes, room)
        if err and len(entries) >= room:
            with pytest.raises(OSError) as ei:
                self.kq.control(changes, room, 0)
            assert ei.value.errno == err, (errno.errorcode.get(ei.value.errno), errno.errorcode.get(err))
            return
        ready = self.model.ready() if collects else {}
        got = self.kq.control(changes, room, 0)
        if not collects:
            assert [(e.ident, e.filter, e.flags, e.data, e.udata) for e in got] == entries
            return
        for key in check_collected(got, ready, room):
            self.model.reported(key)

    def _settle(self, changes):
        # A zero one-shot timer armed by these changes fires within microseconds: let it, so that the next
        # poll sees what the model expects.
        if any(c.filter == TIMER and c.data == 0 for c in changes):
            time.sleep(0.002)

    # -- rules ------------------------------------------------------------------------------------------------

    def _ident(self, data, filt) -> int:
        """Mostly an ident that has a knote (so that most changes do something), sometimes any."""
        have = sorted(i for (i, f) in self.model.knotes if f == filt)
        if have and data.draw(st.integers(0, 9), label="existing?") < 7:
            return data.draw(st.sampled_from(have), label="ident")
        return data.draw(st.sampled_from(IDENTS), label="ident")

    @initialize(
        sticky=st.lists(
            st.sampled_from([0, CLEAR, ONESHOT, DISPATCH, DISPATCH | CLEAR, RECEIPT]), min_size=2, max_size=4
        ),
        oneshot_timers=st.integers(0, 2),
    )
    def some_knotes(self, sticky, oneshot_timers):
        changes = [kevent(i, USER, ADD | f, 0x1 * i, i, i) for i, f in enumerate(sticky)]
        changes += [kevent(i, TIMER, ADD | ONESHOT, 0, 0, i) for i in range(oneshot_timers)]
        changes += [kevent(3, TIMER, ADD, SECONDS, LONG[SECONDS], 3)]
        self._run(changes, 0)
        self._settle(changes)

    @rule(
        data=st.data(),
        n=st.integers(1, 3),
        room=st.sampled_from([0, 1, 2, 8]),
    )
    def user_changes(self, data, n, room):
        changes = []
        for _ in range(n):
            ch = self._user_change(
                self._ident(data, USER),
                data.draw(flag_sets, label="flags"),
                data.draw(user_fflags, label="fflags"),
                data.draw(st.integers(-3, 3), label="data"),
                data.draw(udatas, label="udata"),
            )
            changes.append(ch)
        self._run(changes, room)

    @rule(
        data=st.data(),
        flags=flag_sets,
        unit=st.sampled_from([0, SECONDS, USECONDS, NSECONDS]),
        udata=udatas,
        receipt=st.booleans(),
    )
    def timer_change(self, data, flags, unit, udata, receipt):
        ident = self._ident(data, TIMER)
        ch = self._timer_change(data, ident, flags | (RECEIPT if receipt else 0), unit, udata)
        # Room 0: a failure raises. With EV_RECEIPT and room, the entry comes back and nothing is collected
        # in the same call (a zero timer armed by it may not have fired yet).
        self._run([ch], 8 if receipt else 0)
        self._settle([ch])

    @rule(data=st.data(), fflags=user_fflags, value=st.integers(-3, 3), udata=udatas, room=st.sampled_from([0, 0, 2]))
    def trigger(self, data, fflags, value, udata, room):
        ident = self._ident(data, USER)
        self._run([self._user_change(ident, 0, (fflags & ~0x0200_0000) | TRIGGER, value, udata)], room)

    @rule(data=st.data(), filt=st.sampled_from([USER, TIMER]), on=st.booleans(), udata=udatas)
    def enable_or_disable(self, data, filt, on, udata):
        ident = self._ident(data, filt)
        k = self.model.knotes.get((ident, filt))
        value = k.data if (k is not None and filt == USER) else 0
        self._run([kevent(ident, filt, ENABLE if on else DISABLE, 0, value, udata)], 0)

    @rule(data=st.data(), filt=st.sampled_from([USER, TIMER]))
    def delete(self, data, filt):
        self._run([kevent(self._ident(data, filt), filt, DELETE)], 0)

    @rule(room=st.sampled_from([1, 2, 3, 16]))
    def collect(self, room):
        ready = self.model.ready()
        got = self.kq.control(None, room, 0)
        for key in check_collected(got, ready, room):
            self.model.reported(key)

    @rule()
    def close_and_reopen(self):
        old = self.kq
        old.close()
        assert old.closed
        with pytest.raises(ValueError):
            old.control(None, 1, 0)
        self.kq = kqrs.kqueue()
        self.model = ModelQueue()

    # -- invariants -----------------------------------------------------------------------------------------

    @invariant()
    def knote_count_agrees(self):
        assert self.kq._stats()[0] == len(self.model.knotes)

    @invariant()
    def registered_knotes_agree(self):
        """An EV_RECEIPT change without EV_ADD on every (ident, filter): ENOENT exactly where the model has
        no knote. It changes nothing (same data and udata, FFNOP, no trigger) and collects nothing."""
        probes, want = [], []
        for filt in (USER, TIMER):
            for ident in IDENTS:
                k = self.model.knotes.get((ident, filt))
                data = k.data if (k is not None and filt == USER) else 0
                udata = k.udata if k is not None else 0
                probes.append(kevent(ident, filt, RECEIPT, 0, data, udata))
                want.append((ident, filt, ERROR, 0 if k is not None else errno.ENOENT))
        got = self.kq.control(probes, len(probes), 0)
        assert [(e.ident, e.filter, e.flags, e.data) for e in got] == want

    @invariant()
    def kqueue_fd_readable_exactly_when_something_is_pending(self):
        assert polls_readable(self.kq.fileno()) == bool(self.model.ready()), sorted(self.model.ready().values())


# =========================================================================================================
# READ and WRITE on real pipes and socketpairs
# =========================================================================================================

F_GETPIPE_SZ = 1032
SIOCOUTQ = 0x5411
MAX_BUFFERED = 8192  # stays far below what makes a pipe or socket unwritable


@dataclass
class Chan:
    kind: str  # "pipe" or "sock"
    ends: list  # [fd0, fd1]: pipe = [read end, write end]; sock = [a, b]
    open: list = field(default_factory=lambda: [True, True])
    buffered: list = field(default_factory=lambda: [0, 0])  # bytes waiting to be read at ends[i]
    keep: object = None  # socket objects, kept alive

    def filters(self, i: int) -> list[int]:
        if self.kind == "pipe":
            return [READ] if i == 0 else [WRITE]
        return [READ, WRITE]


@dataclass
class MFd:
    flags: int
    udata: int
    enabled: bool


class PipeSocketMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.kq = kqrs.kqueue()
        self.chans: list[Chan] = []
        self.knotes: dict[tuple[int, int], MFd] = {}

    def teardown(self):
        self.kq.close()
        for c in self.chans:
            for i in (0, 1):
                if c.open[i]:
                    os.close(c.ends[i])
            c.keep = None

    # -- the model ---------------------------------------------------------------------------------------------

    def _where(self, fd):
        for c in self.chans:
            for i in (0, 1):
                if c.ends[i] == fd and c.open[i]:
                    return c, i
        raise KeyError(fd)

    def _open_fds(self):
        return [(c, i) for c in self.chans for i in (0, 1) if c.open[i]]

    def _expected(self, c: Chan, i: int, filt: int, k: MFd):
        """The event knote (fd c.ends[i], filt) reports now, or None."""
        fd, peer_open = c.ends[i], c.open[1 - i]
        if filt == READ:
            eof = not peer_open
            if c.buffered[i] == 0 and not eof:
                return None
            return (fd, READ, k.flags | (EOF if eof else 0), 0, c.buffered[i], k.udata)
        eof = not peer_open
        if c.kind == "pipe":
            space = fcntl.fcntl(fd, F_GETPIPE_SZ) - c.buffered[1 - i]
        else:
            sndbuf = c.keep[i].getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
            outq = struct.unpack("i", fcntl.ioctl(fd, SIOCOUTQ, b"\0\0\0\0"))[0]
            space = sndbuf - outq
        return (fd, WRITE, k.flags | (EOF if eof else 0), 0, space, k.udata)

    def _ready(self) -> dict:
        out = {}
        for (fd, filt), k in self.knotes.items():
            if k.enabled:
                c, i = self._where(fd)
                ev = self._expected(c, i, filt, k)
                if ev is not None:
                    out[(fd, filt)] = ev
        return out

    def _reported(self, key):
        k = self.knotes[key]
        if k.flags & ONESHOT:
            del self.knotes[key]
        elif k.flags & DISPATCH:
            k.enabled = False

    def _apply_model(self, ch) -> int:
        key = (ch.ident, ch.filter)
        k = self.knotes.get(key)
        if ch.flags & ENABLE and ch.flags & DISABLE:
            return errno.EINVAL
        if k is None:
            if not ch.flags & ADD:
                return errno.ENOENT
            k = self.knotes[key] = MFd(ch.flags & STICKY, ch.udata, not ch.flags & DISABLE)
        else:
            k.udata = ch.udata
        if ch.flags & DELETE:
            del self.knotes[key]
            return 0
        if ch.flags & DISABLE:
            k.enabled = False
        if ch.flags & ENABLE:
            k.enabled = True
        return 0

    def _change(self, ch, room):
        """One change, to kqrs and to the model: its entry (with room) or OSError (without)."""
        err = self._apply_model(ch)
        receipt = ch.flags & RECEIPT
        if err and room == 0:
            with pytest.raises(OSError) as ei:
                self.kq.control([ch], 0)
            assert ei.value.errno == err
            return
        if receipt and not err and room == 0:
            assert self.kq.control([ch], 0) == []  # no room for the receipt: nothing, and no error
            return
        if err or receipt:
            got = self.kq.control([ch], room, 0)
            assert [(e.ident, e.filter, e.flags, e.data, e.udata) for e in got] == [
                (ch.ident, ch.filter, ERROR, err, ch.udata)
            ]
            return
        ready = self._ready() if room else {}
        got = self.kq.control([ch], room, 0)
        for key in check_collected(got, ready, room) if room else []:
            self._reported(key)
        if not room:
            assert got == []

    # -- rules ----------------------------------------------------------------------------------------------

    @initialize(
        flags=st.lists(
            st.sampled_from([ADD, ADD, ADD | ONESHOT, ADD | DISPATCH, ADD | DISABLE]), min_size=6, max_size=6
        )
    )
    def a_pipe_and_a_socketpair(self, flags):
        self.new_channel("pipe")
        self.new_channel("sock")
        ends = [(c, i, f) for c in self.chans for i in (0, 1) for f in c.filters(i)]
        for (c, i, filt), fl in zip(ends, flags):
            self._change(kevent(c.ends[i], filt, fl, 0, 0, c.ends[i]), 0)

    @precondition(lambda self: sum(any(c.open) for c in self.chans) < 3)
    @rule(kind=st.sampled_from(["pipe", "sock"]))
    def new_channel(self, kind):
        self.chans = [c for c in self.chans if any(c.open)]
        if kind == "pipe":
            r, w = os.pipe()
            c = Chan("pipe", [r, w])
        else:
            a, b = socket.socketpair()
            c = Chan("sock", [a.fileno(), b.fileno()], keep=[a, b])
        self.chans.append(c)

    @precondition(lambda self: self._open_fds())
    @rule(
        data=st.data(),
        flags=st.sampled_from(
            [ADD, ADD, ADD | ONESHOT, ADD | DISPATCH, ADD | DISABLE, ADD | ONESHOT | DISABLE, ADD | ENABLE]
        ),
        receipt=st.sampled_from([0, 0, 0, RECEIPT]),
        udata=udatas,
        room=st.sampled_from([0, 0, 1, 4]),
    )
    def add(self, data, flags, receipt, udata, room):
        c, i = data.draw(st.sampled_from(self._open_fds()), label="fd")
        filt = data.draw(st.sampled_from(c.filters(i)), label="filter")
        self._change(kevent(c.ends[i], filt, flags | receipt, 0, 0, udata), room)

    @precondition(lambda self: self._open_fds())
    @rule(
        data=st.data(),
        flags=st.sampled_from([DELETE, ENABLE, DISABLE, 0, ENABLE | DISABLE]),
        room=st.sampled_from([0, 1, 4]),
    )
    def modify(self, data, flags, room):
        c, i = data.draw(st.sampled_from(self._open_fds()), label="fd")
        filt = data.draw(st.sampled_from(c.filters(i)), label="filter")
        k = self.knotes.get((c.ends[i], filt))
        udata = data.draw(udatas, label="udata") if k is None else k.udata
        self._change(kevent(c.ends[i], filt, flags, 0, 0, udata), room)

    @precondition(lambda self: any(c.open[0] and c.open[1] for c in self.chans))
    @rule(data=st.data(), n=st.sampled_from([1, 3, 100, 1000, 4096]))
    def write(self, data, n):
        pairs = [(c, i) for c in self.chans for i in (0, 1) if c.open[0] and c.open[1] and (c.kind == "sock" or i == 1)]
        c, i = data.draw(st.sampled_from(pairs), label="writer")
        reader = 1 - i
        n = min(n, MAX_BUFFERED - c.buffered[reader])
        if n <= 0:
            return
        assert os.write(c.ends[i], b"k" * n) == n
        c.buffered[reader] += n

    @precondition(lambda self: any(c.open[i] and c.buffered[i] for c in self.chans for i in (0, 1)))
    @rule(data=st.data(), n=st.sampled_from([1, 2, 50, 5000, 10**6]))
    def read(self, data, n):
        c, i = data.draw(
            st.sampled_from([(c, i) for c in self.chans for i in (0, 1) if c.open[i] and c.buffered[i]]), label="reader"
        )
        got = os.read(c.ends[i], min(n, c.buffered[i]))
        assert len(got) == min(n, c.buffered[i])
        c.buffered[i] -= len(got)

    @precondition(lambda self: self._open_fds())
    @rule(data=st.data())
    def close_end(self, data):
        c, i = data.draw(st.sampled_from(self._open_fds()), label="end")
        fd = c.ends[i]
        for key in [key for key in self.knotes if key[0] == fd]:
            del self.knotes[key]  # BSD: closing an fd removes its knotes
        if c.kind == "sock":
            c.keep[i].close()
            c.buffered[i] = 0  # what was sent to it is gone; what it sent stays readable at the peer
        else:
            os.close(fd)  # a pipe keeps its bytes until both ends are closed
        c.open[i] = False

    @rule(room=st.sampled_from([1, 2, 3, 16]))
    def collect(self, room):
        ready = self._ready()
        got = self.kq.control(None, room, 0)
        for key in check_collected(got, ready, room):
            self._reported(key)

    # -- invariants -------------------------------------------------------------------------------------------

    @invariant()
    def registered_knotes_agree(self):
        probes, want = [], []
        for c, i in self._open_fds():
            for filt in c.filters(i):
                k = self.knotes.get((c.ends[i], filt))
                probes.append(kevent(c.ends[i], filt, RECEIPT, 0, 0, k.udata if k else 0))
                want.append((c.ends[i], filt, ERROR, 0 if k else errno.ENOENT))
        if probes:
            got = self.kq.control(probes, len(probes), 0)
            assert [(e.ident, e.filter, e.flags, e.data) for e in got] == want

    @invariant()
    def kqueue_fd_readable_exactly_when_something_is_pending(self):
        ready = self._ready()
        readable = polls_readable(self.kq.fileno())
        assert readable == bool(ready), sorted(ready.values())


# =========================================================================================================

SETTINGS = dict(
    derandomize=True,
    max_examples=1000 if LONG_RUN else 60,
    stateful_step_count=80 if LONG_RUN else 50,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
    print_blob=True,
)

TestKnoteTable = KnoteTableMachine.TestCase
TestKnoteTable.settings = settings(**SETTINGS)
TestPipesAndSockets = PipeSocketMachine.TestCase
TestPipesAndSockets.settings = settings(**SETTINGS)


# =========================================================================================================
# What the machines found, as plain tests
# =========================================================================================================


def test_deferred_report_carries_the_state_at_report_time():
    kq = kqrs.kqueue()
    a, b = socket.socketpair()
    try:
        a.send(b"x")
        kq.control([kevent(b.fileno(), READ, ADD), kevent(b.fileno(), WRITE, ADD)], 0)
        assert len(kq.control(None, 1, 0)) == 1  # the other one is deferred: no room
        a.close()  # the peer goes away before the next call
        got = sorted((e.filter, e.flags, e.data) for e in kq.control(None, 4, 0))
        assert [(f, fl) for f, fl, _ in got] == [(WRITE, EOF), (READ, EOF)]
    finally:
        kq.close()
        b.close()


def test_kqueue_fd_not_readable_after_closing_an_fd_with_a_queued_report():
    kq = kqrs.kqueue()
    a, b = socket.socketpair()
    try:
        a.close()
        kq.control([kevent(b.fileno(), READ, ADD), kevent(b.fileno(), WRITE, ADD)], 0)
        assert len(kq.control(None, 1, 0)) == 1  # the other one is queued: no room
        b.close()
        assert not polls_readable(kq.fileno())
    finally:
        kq.close()


def test_poll_with_little_room_reports_what_is_pending():
    kq = kqrs.kqueue()
    a, b = socket.socketpair()
    try:
        kq.control([kevent(x.fileno(), f, ADD) for x in (a, b) for f in (READ, WRITE)], 0)
        b.send(b"x")
        assert len(kq.control(None, 1, 0)) == 1
        assert len(kq.control(None, 1, 0)) == 1  # a third report is queued for lack of room
        a.close()
        got = kq.control(None, 1, 0)  # b's READ and WRITE (both EOF now) are pending
        assert len(got) == 1 and got[0].ident == b.fileno()
    finally:
        kq.close()
        b.close()
