"""kqrs.kevent / kqrs.kqueue argument handling, errors and constants, against CPython's select module on
FreeBSD (messages and rules: CPython 3.11/3.13 Modules/selectmodule.c)."""

from __future__ import annotations

import itertools
import operator
import os
import selectors
import socket
import subprocess
import sys
import textwrap
import time
from decimal import Decimal

import pytest

import kqrs
from kqrs import kevent, kqueue


@pytest.fixture
def devnull():
    fd = os.open(os.devnull, os.O_RDONLY)
    yield fd
    os.close(fd)


class Fileno:
    def __init__(self, value):
        self.value = value

    def fileno(self):
        return self.value


class Index:
    def __init__(self, value):
        self.value = value

    def __index__(self):
        return self.value


def fields(ev):
    return (ev.ident, ev.filter, ev.flags, ev.fflags, ev.data, ev.udata)


# --------------------------------------------------------------------------------------------------------
# kevent(): defaults and ident
# --------------------------------------------------------------------------------------------------------


def test_kevent_defaults(devnull):
    ev = kevent(devnull)
    assert fields(ev) == (devnull, kqrs.KQ_FILTER_READ, kqrs.KQ_EV_ADD, 0, 0, 0)
    assert fields(kevent(ident=7)) == (7, kqrs.KQ_FILTER_READ, kqrs.KQ_EV_ADD, 0, 0, 0)


def test_kevent_all_positional_and_keyword():
    assert fields(kevent(1, 2, 3, 4, 5, 6)) == (1, 2, 3, 4, 5, 6)
    ev = kevent(udata=6, data=5, fflags=4, flags=3, filter=2, ident=1)
    assert fields(ev) == (1, 2, 3, 4, 5, 6)
    # test_kqueue's "bignum" values and issue 11973.
    big = 0x7FFF
    assert fields(kevent(big, 1, 2, 3, big, big)) == (big, 1, 2, 3, big, big)
    ev = kevent(2, 1, 0xFFFF, 0xFFFFFFFF, 0, 0)
    assert (ev.flags, ev.fflags) == (0xFFFF, 0xFFFFFFFF)


def test_kevent_arity_types():
    with pytest.raises(TypeError):
        kevent()
    with pytest.raises(TypeError):
        kevent(1, 2, 3, 4, 5, 6, 7)
    with pytest.raises(TypeError):
        kevent(1, bogus=1)


def test_kevent_arity_messages():
    with pytest.raises(TypeError, match=r"^kevent\(\) missing required argument 'ident' \(pos 1\)$"):
        kevent()
    with pytest.raises(TypeError, match=r"^kevent\(\) takes at most 6 arguments \(7 given\)$"):
        kevent(1, 2, 3, 4, 5, 6, 7)


def test_ident_int_range():
    assert kevent(0).ident == 0
    assert kevent(2**64 - 1).ident == 2**64 - 1
    assert kevent(True).ident == 1
    with pytest.raises(OverflowError, match=r"^can't convert negative value to size_t$"):
        kevent(-1)
    with pytest.raises(OverflowError, match=r"^Python int too large to convert to C size_t$"):
        kevent(2**64)


def test_ident_from_fileno(devnull):
    assert kevent(Fileno(devnull)).ident == devnull
    a, b = socket.socketpair()
    try:
        assert kevent(a).ident == a.fileno()
    finally:
        a.close()
        b.close()
    with open(os.devnull) as f:
        assert kevent(f).ident == f.fileno()


def test_ident_fileno_errors():
    with pytest.raises(TypeError, match=r"^argument must be an int, or have a fileno\(\) method\.$"):
        kevent(1.0)
    with pytest.raises(TypeError, match=r"^argument must be an int, or have a fileno\(\) method\.$"):
        kevent(Index(3))  # __index__ alone is not enough for ident
    with pytest.raises(TypeError, match=r"^argument must be an int, or have a fileno\(\) method\.$"):
        kevent("3")
    with pytest.raises(TypeError, match=r"^fileno\(\) returned a non-integer$"):
        kevent(Fileno("3"))
    with pytest.raises(OverflowError, match=r"^Python int too large to convert to C int$"):
        kevent(Fileno(2**31))
    with pytest.raises(ValueError, match=r"^file descriptor cannot be a negative integer \(-1\)$"):
        kevent(Fileno(-1))


def test_ident_converted_after_other_fields():
    # CPython parses filter..udata first: their errors win over a bad ident.
    with pytest.raises(OverflowError, match="signed short integer is greater than maximum"):
        kevent(-1, 2**15)
    with pytest.raises(TypeError, match="argument 6 must be int"):
        kevent(1.5, udata=1.5)


# --------------------------------------------------------------------------------------------------------
# kevent(): filter, flags, fflags, data, udata
# --------------------------------------------------------------------------------------------------------


def test_filter_range():
    assert kevent(1, -(2**15)).filter == -(2**15)
    assert kevent(1, 2**15 - 1).filter == 2**15 - 1
    assert kevent(1, Index(-7)).filter == -7
    with pytest.raises(OverflowError, match=r"^signed short integer is less than minimum$"):
        kevent(1, -(2**15) - 1)
    with pytest.raises(OverflowError, match=r"^signed short integer is greater than maximum$"):
        kevent(1, 2**15)
    with pytest.raises(OverflowError, match=r"^Python int too large to convert to C long$"):
        kevent(1, 2**64)
    with pytest.raises(OverflowError, match=r"^Python int too large to convert to C long$"):
        kevent(1, -(2**64))


@pytest.mark.parametrize("field", ["filter", "flags", "fflags", "data"])
@pytest.mark.parametrize("bad, name", [(1.0, "float"), ("1", "str"), (b"1", "bytes"), (Decimal(1), "Decimal")])
def test_integer_fields_reject_non_integers(field, bad, name):
    with pytest.raises(TypeError, match=rf"^'{name}' object cannot be interpreted as an integer$"):
        kevent(1, **{field: bad})


@pytest.mark.parametrize("field", ["filter", "flags", "fflags", "data", "udata"])
def test_explicit_none_is_typeerror(field):
    with pytest.raises(
        TypeError,
        match=r"^('NoneType' object cannot be interpreted as an integer"
        r"|kevent\(\) argument 6 must be int, not None)$",
    ):
        kevent(1, **{field: None})


def test_flags_wrap_mod_2_16():
    assert kevent(1, flags=-1).flags == 0xFFFF
    assert kevent(1, flags=0x10000).flags == 0
    assert kevent(1, flags=0x12345).flags == 0x2345
    assert kevent(1, flags=2**100).flags == 0
    assert kevent(1, flags=2**100 + 3).flags == 3
    assert kevent(1, flags=-(2**100) - 1).flags == 0xFFFF
    assert kevent(1, flags=Index(0x10001)).flags == 1


def test_fflags_wrap_mod_2_32():
    assert kevent(1, fflags=-1).fflags == 0xFFFFFFFF
    assert kevent(1, fflags=2**32).fflags == 0
    assert kevent(1, fflags=2**32 + 9).fflags == 9
    assert kevent(1, fflags=2**100 + 7).fflags == 7
    assert kevent(1, fflags=-2).fflags == 0xFFFFFFFE


def test_data_range():
    assert kevent(1, data=2**63 - 1).data == 2**63 - 1
    assert kevent(1, data=-(2**63)).data == -(2**63)
    assert kevent(1, data=Index(-5)).data == -5
    with pytest.raises(OverflowError, match=r"^int too big to convert$"):
        kevent(1, data=2**63)
    with pytest.raises(OverflowError, match=r"^int too big to convert$"):
        kevent(1, data=-(2**63) - 1)


def test_udata_must_be_int():
    assert kevent(1, udata=2**64 - 1).udata == 2**64 - 1
    assert kevent(1, udata=-1).udata == 2**64 - 1  # masked mod 2**64
    assert kevent(1, udata=2**64 + 5).udata == 5
    assert kevent(1, udata=True).udata == 1
    for bad, name in [(1.0, "float"), ("x", "str"), (Index(3), "Index")]:
        # The position number is used even when passed by keyword.
        with pytest.raises(TypeError, match=rf"^kevent\(\) argument 6 must be int, not {name}$"):
            kevent(1, udata=bad)
        with pytest.raises(TypeError, match=rf"^kevent\(\) argument 6 must be int, not {name}$"):
            kevent(1, 0, 0, 0, 0, bad)


# --------------------------------------------------------------------------------------------------------
# kevent attributes, comparison, hash, repr
# --------------------------------------------------------------------------------------------------------


def test_attributes_readable_and_writable():
    ev = kevent(1)
    values = {
        "ident": 2**64 - 1,
        "filter": -32768,
        "flags": 0xFFFF,
        "fflags": 0xFFFFFFFF,
        "data": -(2**63),
        "udata": 2**64 - 1,
    }
    for name, v in values.items():
        setattr(ev, name, v)
        assert getattr(ev, name) == v
    assert fields(ev) == tuple(values.values())
    # Written values are what control() submits and what comparisons see.
    assert ev == kevent(2**64 - 1, -32768, 0xFFFF, 0xFFFFFFFF, -(2**63), 2**64 - 1)
    ev.ident, ev.filter, ev.flags, ev.fflags, ev.data, ev.udata = 3, -11, 1, 2, 3, 4
    assert fields(ev) == (3, -11, 1, 2, 3, 4)
    for name in values:
        with pytest.raises(TypeError):
            setattr(ev, name, "x")


def test_attributes_used_by_control(kq):
    ev = kevent(0, kqrs.KQ_FILTER_USER, 0)
    ev.ident = 42
    ev.flags = kqrs.KQ_EV_ADD | kqrs.KQ_EV_CLEAR
    ev.udata = 99
    kq.control([ev], 0)
    ev.flags = 0
    ev.fflags = kqrs.KQ_NOTE_TRIGGER
    ev.data = 5
    kq.control([ev], 0)
    [got] = kq.control(None, 4, 0)
    assert fields(got) == (42, kqrs.KQ_FILTER_USER, kqrs.KQ_EV_CLEAR, 0, 5, 99)


def test_attribute_delete_is_typeerror():
    ev = kevent(1)
    with pytest.raises(TypeError, match=r"^can't delete numeric/char attribute$"):
        del ev.flags


def _key(ev):
    u = ev.udata - 2**64 if ev.udata >= 2**63 else ev.udata  # udata compares as intptr_t
    return (ev.ident, ev.filter, ev.flags, ev.fflags, ev.data, u)


OPS = [operator.lt, operator.le, operator.eq, operator.ne, operator.gt, operator.ge]


def test_rich_comparison_order():
    evs = [
        kevent(0),
        kevent(1),
        kevent(2**63),  # ident compares unsigned
        kevent(2**64 - 1),
        kevent(1, -2),
        kevent(1, 5),  # filter signed
        kevent(1, -1, 0),
        kevent(1, -1, 0xFFFF),  # flags unsigned
        kevent(1, -1, 1, 0xFFFFFFFF),  # fflags unsigned
        kevent(1, -1, 1, 0, -(2**63)),  # data signed
        kevent(1, -1, 1, 0, 2**63 - 1),
        kevent(1, -1, 1, 0, 0, 2**63),  # udata as signed: 2**63 is the smallest
        kevent(1, -1, 1, 0, 0, 2**64 - 1),  # -1
        kevent(1, -1, 1, 0, 0, 2**63 - 1),  # largest
        kevent(1, -1, 1, 0, 0, 0),
        kevent(1, -1, 1, 0, 0, 0),  # equal to the previous one
    ]
    for a, b in itertools.product(evs, repeat=2):
        for op in OPS:
            assert op(a, b) is op(_key(a), _key(b)), (op.__name__, fields(a), fields(b))
    # Spot checks that the signedness rules are really in force.
    assert kevent(1, udata=2**63) < kevent(1, udata=0)
    assert kevent(1, udata=2**64 - 1) < kevent(1, udata=0)
    assert kevent(2**63) > kevent(1)
    assert kevent(1, -2) < kevent(1, 1)
    assert kevent(1, data=-1) < kevent(1, data=0)
    ev = kevent(1)
    assert ev == ev and not ev != ev and ev <= ev and ev >= ev  # noqa: SIM202


@pytest.mark.parametrize("other", [None, 1, "ev", 1.0, (1, -1, 1, 0, 0, 0), object()])
def test_comparison_with_non_kevent(other):
    ev = kevent(1)
    assert (ev == other) is False
    assert (ev != other) is True
    assert (other == ev) is False
    assert (other != ev) is True
    for op in (operator.lt, operator.le, operator.gt, operator.ge):
        with pytest.raises(TypeError, match="not supported between instances of"):
            op(ev, other)
        with pytest.raises(TypeError, match="not supported between instances of"):
            op(other, ev)


def test_hash_raises_typeerror():
    with pytest.raises(TypeError, match="unhashable type"):
        hash(kevent(1))
    with pytest.raises(TypeError):
        {kevent(1)}


def test_repr_fields_in_hex():
    r = repr(kevent(5, -1, 1, 0, 0, 0))
    assert r.startswith("<") and r.endswith(">")
    assert r.endswith("kevent ident=5 filter=-1 flags=0x1 fflags=0x0 data=0x0 udata=0x0>"), r
    r = repr(kevent(1234, -11, 0x8031, 0xABCDEF, -1, 0x1F))
    assert "ident=1234 filter=-11 flags=0x8031 fflags=0xabcdef data=0xffffffffffffffff udata=0x1f>" in r, r
    r = repr(kevent(2**64 - 1, 2, 0xFFFF, 0xFFFFFFFF, 2**63 - 1, 2**64 - 1))
    assert (
        "ident=18446744073709551615 filter=2 flags=0xffff fflags=0xffffffff data=0x7fffffffffffffff "
        "udata=0xffffffffffffffff>" in r
    ), r


def test_kevent_not_subclassable():
    with pytest.raises(TypeError):
        type("Sub", (kevent,), {})


# --------------------------------------------------------------------------------------------------------
# kqueue() and control()
# --------------------------------------------------------------------------------------------------------


def test_kqueue_rejects_arguments():
    with pytest.raises(TypeError, match=r"^kqueue\(\) takes no positional arguments$"):
        kqueue(1)
    with pytest.raises(TypeError, match=r"^kqueue\(\) takes no keyword arguments$"):
        kqueue(flags=1)


def test_kqueue_basics(kq):
    fd = kq.fileno()
    assert isinstance(fd, int) and fd > 0
    assert kq.closed is False
    assert os.get_inheritable(fd) is False
    kq.close()
    assert kq.closed is True
    kq.close()  # twice is fine
    with pytest.raises(ValueError, match=r"^I/O operation on closed kqueue object$"):
        kq.fileno()
    with pytest.raises(ValueError, match=r"^I/O operation on closed kqueue object$"):
        kq.control(None, 4)
    # Closed is checked before max_events and timeout.
    with pytest.raises(ValueError, match=r"^I/O operation on closed kqueue object$"):
        kq.control(None, -1, "x")


def test_control_arity_types(kq):
    with pytest.raises(TypeError):
        kq.control()
    with pytest.raises(TypeError):
        kq.control([])
    with pytest.raises(TypeError):
        kq.control([], 1, None, 4)
    with pytest.raises(TypeError):
        kq.control([], 1, timeout=0)
    with pytest.raises(TypeError):
        kq.control(changelist=[], max_events=1)
    assert kq.control([], 1, 0) == []
    assert kq.control(None, 0) == []


def test_control_arity_messages(kq):
    with pytest.raises(TypeError, match=r"^control expected at least 2 arguments, got 1$"):
        kq.control([])
    with pytest.raises(TypeError, match=r"^control expected at most 3 arguments, got 4$"):
        kq.control([], 1, None, 4)
    with pytest.raises(
        TypeError, match=r"^(kqueue\.)?control\(\) .*keyword argument"
    ):  # wording: PyO3's (docs/design.md)
        kq.control([], 1, timeout=0)


def test_control_max_events(kq):
    for n in (-1, -(2**31)):
        with pytest.raises(ValueError, match=rf"^Length of eventlist must be 0 or positive, got {n}$"):
            kq.control(None, n)
    # max_events is checked before the timeout and the changelist.
    with pytest.raises(ValueError, match=r"^Length of eventlist must be 0 or positive, got -1$"):
        kq.control(5, -1, "x")
    with pytest.raises(TypeError, match=r"^'float' object cannot be interpreted as an integer$"):
        kq.control(None, 1.0)
    with pytest.raises(OverflowError):
        kq.control(None, 2**31)
    assert kq.control(None, Index(0)) == []


@pytest.mark.parametrize(
    "timeout, name",
    [
        ("1", "str"),
        (b"1", "bytes"),
        (Decimal(1), "Decimal"),
        (float("nan"), "float"),
        (1e300, "float"),
        (float("inf"), "float"),
        (-1e300, "float"),
        (2**62, "int"),
        (2**64, "int"),
        (-(2**64), "int"),
        ([], "list"),
        (1j, "complex"),
    ],
)
def test_control_timeout_typeerror(kq, timeout, name):
    with pytest.raises(TypeError, match=rf"^timeout argument must be a number or None, got {name}$"):
        kq.control(None, 0, timeout)


@pytest.mark.parametrize("timeout", [-1, -0.5, -1e-12, -1e-9, Index(-1), -1e9])
def test_control_timeout_negative(kq, timeout):
    with pytest.raises(ValueError, match=r"^timeout must be positive or None$"):
        kq.control(None, 0, timeout)


@pytest.mark.parametrize("timeout", [0, 0.0, -0.0, 1e-12, Index(0), False, 0.001])
def test_control_timeout_accepted(kq, timeout):
    assert kq.control(None, 1, timeout) == []


@pytest.mark.parametrize("args", [(), (None,)])
def test_control_timeout_none_is_infinite(kq, args):
    # Something pending, so "wait forever" returns at once.
    kq.control([kevent(1, kqrs.KQ_FILTER_USER, kqrs.KQ_EV_ADD | kqrs.KQ_EV_CLEAR, kqrs.KQ_NOTE_TRIGGER)], 0)
    [e] = kq.control(None, 1, *args)
    assert fields(e) == (1, kqrs.KQ_FILTER_USER, kqrs.KQ_EV_CLEAR, 0, 0, 0)


def test_control_timeout_check_before_changelist(kq):
    with pytest.raises(TypeError, match="timeout argument must be a number or None"):
        kq.control(5, 0, "x")


def test_control_timeout_waits(kq):
    start = time.monotonic()
    assert kq.control(None, 1, 0.05) == []
    assert time.monotonic() - start >= 0.05
    # max_events == 0 returns at once, whatever the timeout.
    start = time.monotonic()
    assert kq.control(None, 0, 30) == []
    assert time.monotonic() - start < 5


@pytest.mark.parametrize("bad", [5, 1.5, object(), kevent(1)])
def test_changelist_not_iterable(kq, bad):
    with pytest.raises(TypeError, match=r"^changelist is not iterable$"):
        kq.control(bad, 0)


@pytest.mark.parametrize("bad", [[1], [None], ["x"], [kevent(1), 3], (x for x in [object()])])
def test_changelist_item_not_kevent(kq, bad):
    with pytest.raises(TypeError, match=r"^changelist must be an iterable of select\.kevent objects$"):
        kq.control(bad, 0)


def test_changelist_any_iterable(kq):
    def ev(i):
        return kevent(i, kqrs.KQ_FILTER_USER, kqrs.KQ_EV_ADD)

    class BadList:
        """test_kqueue.test_issue30058: __len__ lies, __iter__ is what counts."""

        def __len__(self):
            return 0

        def __iter__(self):
            for _ in range(100):
                yield ev(1)

    class Iterable:
        def __iter__(self):
            return iter([ev(2), ev(3)])

    assert kq.control([ev(0)], 0) == []
    assert kq.control((ev(0), ev(4)), 0) == []
    assert kq.control(BadList(), 0) == []
    assert kq.control(iter([ev(5)]), 0) == []
    assert kq.control((ev(i) for i in (6, 7)), 0) == []
    assert kq.control(Iterable(), 0) == []
    assert kq.control([], 0) == []
    assert kq.control((), 0) == []
    assert kq._stats()[0] == 8  # idents 0..7, each once


def test_control_oserror_from_change(kq):
    # With no room, a failing change raises OSError from its errno (ENOENT -> FileNotFoundError).
    with pytest.raises(FileNotFoundError):
        kq.control([kevent(1, kqrs.KQ_FILTER_USER, kqrs.KQ_EV_DELETE)], 0)
    # With room it is an EV_ERROR entry.
    [e] = kq.control([kevent(1, kqrs.KQ_FILTER_USER, kqrs.KQ_EV_DELETE, udata=3)], 1, 0)
    assert fields(e) == (1, kqrs.KQ_FILTER_USER, kqrs.KQ_EV_ERROR, 0, 2, 3)  # ENOENT = 2


def test_socketpair_exact_data(kq):
    """test_kqueue.testPair."""
    a, b = socket.socketpair()
    try:
        a.send(b"foo")
        flags = kqrs.KQ_EV_ADD | kqrs.KQ_EV_ENABLE
        r = kq.control([kevent(a, kqrs.KQ_FILTER_READ, flags), kevent(b, kqrs.KQ_FILTER_READ, flags)], 1, 1)
        assert len(r) == 1
        assert fields(r[0]) == (b.fileno(), kqrs.KQ_FILTER_READ, 0, 0, 3, 0)
        assert b.recv(r[0].data) == b"foo"
    finally:
        a.close()
        b.close()


# --------------------------------------------------------------------------------------------------------
# Constants
# --------------------------------------------------------------------------------------------------------

# Every KQ_* name CPython exports on FreeBSD 13/14, with its value (identical in libkqueue).
CPYTHON_FREEBSD = {
    "KQ_FILTER_READ": -1,
    "KQ_FILTER_WRITE": -2,
    "KQ_FILTER_AIO": -3,
    "KQ_FILTER_VNODE": -4,
    "KQ_FILTER_PROC": -5,
    "KQ_FILTER_SIGNAL": -6,
    "KQ_FILTER_TIMER": -7,
    "KQ_EV_ADD": 0x1,
    "KQ_EV_DELETE": 0x2,
    "KQ_EV_ENABLE": 0x4,
    "KQ_EV_DISABLE": 0x8,
    "KQ_EV_ONESHOT": 0x10,
    "KQ_EV_CLEAR": 0x20,
    "KQ_EV_SYSFLAGS": 0xF000,
    "KQ_EV_FLAG1": 0x2000,
    "KQ_EV_EOF": 0x8000,
    "KQ_EV_ERROR": 0x4000,
    "KQ_NOTE_LOWAT": 0x1,
    "KQ_NOTE_DELETE": 0x1,
    "KQ_NOTE_WRITE": 0x2,
    "KQ_NOTE_EXTEND": 0x4,
    "KQ_NOTE_ATTRIB": 0x8,
    "KQ_NOTE_LINK": 0x10,
    "KQ_NOTE_RENAME": 0x20,
    "KQ_NOTE_REVOKE": 0x40,
    "KQ_NOTE_EXIT": 0x80000000,
    "KQ_NOTE_FORK": 0x40000000,
    "KQ_NOTE_EXEC": 0x20000000,
    "KQ_NOTE_PCTRLMASK": 0xF0000000,
    "KQ_NOTE_PDATAMASK": 0x000FFFFF,
    "KQ_NOTE_TRACK": 0x1,
    "KQ_NOTE_TRACKERR": 0x2,
    "KQ_NOTE_CHILD": 0x4,
}

# Beyond CPython: libkqueue's values.
KQRS_EXTRA = {
    "KQ_FILTER_USER": -11,
    "KQ_EV_RECEIPT": 0x40,
    "KQ_EV_DISPATCH": 0x80,
    "KQ_NOTE_TRIGGER": 0x01000000,
    "KQ_NOTE_FFNOP": 0,
    "KQ_NOTE_FFAND": 0x40000000,
    "KQ_NOTE_FFOR": 0x80000000,
    "KQ_NOTE_FFCOPY": 0xC0000000,
    "KQ_NOTE_FFCTRLMASK": 0xC0000000,
    "KQ_NOTE_FFLAGSMASK": 0x00FFFFFF,
    "KQ_NOTE_SECONDS": 1,
    "KQ_NOTE_USECONDS": 2,
    "KQ_NOTE_NSECONDS": 4,
    "KQ_NOTE_ABSOLUTE": 8,
    "KQ_NOTE_TRUNCATE": 0x80,
    # FreeBSD's opt-in vnode notes: its values, but NOTE_OPEN's (0x80) is libkqueue's NOTE_TRUNCATE.
    "KQ_NOTE_OPEN": 0x800,
    "KQ_NOTE_CLOSE": 0x100,
    "KQ_NOTE_CLOSE_WRITE": 0x200,
    "KQ_NOTE_READ": 0x400,
}


@pytest.mark.parametrize("name, value", sorted({**CPYTHON_FREEBSD, **KQRS_EXTRA}.items()))
def test_constant(name, value):
    v = getattr(kqrs, name)
    assert type(v) is int
    assert v == value
    assert kqrs.CONSTANTS[name] == value
    assert name in kqrs.__all__


def test_constants_all_ints():
    assert kqrs.CONSTANTS
    for name, v in kqrs.CONSTANTS.items():
        assert name.startswith("KQ_")
        assert type(v) is int
        assert getattr(kqrs, name) == v


# --------------------------------------------------------------------------------------------------------
# install() / uninstall(), in a subprocess so this process's select module is untouched
# --------------------------------------------------------------------------------------------------------

INSTALL_SCRIPT = textwrap.dedent(
    """
    import select, selectors, socket
    import kqrs

    assert not hasattr(select, "kqueue") and not hasattr(select, "kevent")
    assert not hasattr(selectors, "KqueueSelector")
    before_default = selectors.DefaultSelector
    before_names = {n for n in dir(select) if n.startswith("KQ_")}

    kqrs.install()
    kqrs.install()  # idempotent
    assert select.kqueue is kqrs.kqueue
    assert select.kevent is kqrs.kevent
    for name, value in kqrs.CONSTANTS.items():
        assert getattr(select, name) == value, name
    # selectors was imported before install(): it has been reloaded in place.
    assert hasattr(selectors, "KqueueSelector")
    assert selectors.DefaultSelector is selectors.KqueueSelector

    sel = selectors.DefaultSelector()
    a, b = socket.socketpair()
    sel.register(a, selectors.EVENT_READ | selectors.EVENT_WRITE, "data")
    b.send(b"x")
    ready = sel.select(1)
    # KqueueSelector reports one (key, events) pair per kevent: READ and WRITE separately.
    assert sorted((k.fileobj.fileno(), ev) for k, ev in ready) == [
        (a.fileno(), selectors.EVENT_READ), (a.fileno(), selectors.EVENT_WRITE)], ready
    assert all(k.data == "data" for k, _ in ready)
    sel.close()
    a.close()
    b.close()

    kqrs.uninstall()
    kqrs.uninstall()  # idempotent
    assert not hasattr(select, "kqueue") and not hasattr(select, "kevent")
    assert {n for n in dir(select) if n.startswith("KQ_")} == before_names
    # selectors was reloaded again: a new class object, the same choice as before install().
    assert selectors.DefaultSelector.__name__ == before_default.__name__ == "EpollSelector"
    assert selectors.DefaultSelector is selectors.EpollSelector

    # install() before selectors is first imported works as well.
    import sys
    del sys.modules["selectors"]
    kqrs.install()
    import selectors as s2
    assert s2.DefaultSelector is s2.KqueueSelector
    kqrs.uninstall()
    print("OK")
    """
)


def run_script(script):
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "OK"


def test_install_uninstall_subprocess():
    import select

    run_script(INSTALL_SCRIPT)
    assert not hasattr(select, "kqueue")


def test_uninstall_removes_kqueue_selector_subprocess():
    run_script(
        textwrap.dedent(
            """
        import selectors
        import kqrs
        kqrs.install()
        assert hasattr(selectors, "KqueueSelector")
        kqrs.uninstall()
        assert not hasattr(selectors, "KqueueSelector")
        print("OK")
        """
        )
    )


# --------------------------------------------------------------------------------------------------------
# kqrs.KqueueSelector reports what EpollSelector reports
# --------------------------------------------------------------------------------------------------------


def _ready_sets(sel_cls, build):
    """Registers what `build()` makes in a selector of `sel_cls` and returns {(name, events)} from one
    select(0) (READ and WRITE entries merged per fd)."""
    fds, keep = build()
    sel = sel_cls()
    try:
        for name, (obj, events) in fds.items():
            sel.register(obj, events, name)
        got: dict[str, int] = {}
        for key, ev in sel.select(0):
            got[key.data] = got.get(key.data, 0) | ev
        return set(got.items())
    finally:
        sel.close()
        for o in keep:
            o.close()


def _selector_cases():
    R, W = selectors.EVENT_READ, selectors.EVENT_WRITE
    fds, keep = {}, []
    a, b = socket.socketpair()
    keep += [a, b]
    b.send(b"xyz")
    fds["socket with data"] = (a, R | W)
    c, d = socket.socketpair()
    keep += [c, d]
    fds["idle socket"] = (c, R)
    e, f = socket.socketpair()
    keep += [e, f]
    f.close()
    fds["peer closed"] = (e, R)
    u1 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u2 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    keep += [u1, u2]
    u1.bind(("127.0.0.1", 0))
    u2.sendto(b"", u1.getsockname())
    fds["zero-length datagram"] = (u1, R)
    r, w = os.pipe()
    os.write(w, b"p")
    rf, wf = os.fdopen(r, "rb"), os.fdopen(w, "wb")
    keep += [rf, wf]
    fds["pipe with data"] = (rf, R)
    fds["pipe write end"] = (wf, W)
    lst = socket.create_server(("127.0.0.1", 0))
    keep.append(lst)
    conn = socket.create_connection(lst.getsockname())
    keep.append(conn)
    fds["listener with a connection waiting"] = (lst, R)
    time.sleep(0.05)  # the datagram and the connection are local: there by now
    return fds, keep


def test_kqrs_selector_reports_what_epoll_selector_reports():
    """Sockets with and without data, a closed peer, a zero-length datagram (readable for a selector,
    though it holds 0 bytes), pipes and a listener: the same (fd, events) from both selectors."""
    epoll = _ready_sets(selectors.EpollSelector, _selector_cases)
    assert ("zero-length datagram", selectors.EVENT_READ) in epoll
    assert _ready_sets(kqrs.KqueueSelector, _selector_cases) == epoll


def test_kqrs_selector_plain_and_keyword_calls_behave_the_same():
    """register/modify/unregister/get_key/select with positional arguments (kqrs's fast path) and with
    keywords (PyO3's full methods) share one selector and one behaviour, errors included."""
    a, b = socket.socketpair()
    c, d = socket.socketpair()
    sel = kqrs.KqueueSelector()
    try:
        k1 = sel.register(a, selectors.EVENT_READ, "a")
        k2 = sel.register(fileobj=c, events=selectors.EVENT_READ, data="c")
        assert (k1.data, k2.data) == ("a", "c")
        with pytest.raises(KeyError):
            sel.register(a, selectors.EVENT_READ)
        with pytest.raises(KeyError):
            sel.register(fileobj=a, events=selectors.EVENT_READ)
        with pytest.raises(ValueError):
            sel.register(b, 0)
        with pytest.raises(TypeError):
            sel.register(b)
        b.send(b"x")
        d.send(b"y")
        assert sorted(k.data for k, _ in sel.select(0)) == ["a", "c"]
        assert sorted(k.data for k, _ in sel.select(timeout=0)) == ["a", "c"]
        assert sel.modify(a, selectors.EVENT_READ, "a2").data == "a2"
        assert sel.modify(c, selectors.EVENT_READ, data="c2").data == "c2"
        assert sel.get_key(a).data == "a2" and sel.get_key(fileobj=c).data == "c2"
        assert sel.unregister(a).data == "a2"
        assert sel.unregister(fileobj=c).data == "c2"
        for call in (lambda: sel.get_key(a), lambda: sel.unregister(a), lambda: sel.get_key(fileobj=a)):
            with pytest.raises(KeyError):
                call()
        with pytest.raises(TypeError):
            sel.select(0, 1)
    finally:
        sel.close()
        for s in (a, b, c, d):
            s.close()
    with pytest.raises(RuntimeError):
        sel.get_key(a)
