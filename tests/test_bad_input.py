"""Bad input (issue 8): every row of docs/bad-input.md, and after each one the same kqueue still works.

Each row gets the error type and errno that CPython's select.kqueue (argument parsing) or BSD's kevent(2)
(change processing) gives. A change that fails is an EV_ERROR entry (data = errno) while the eventlist has
room, else control() raises OSError with that errno (FileNotFoundError for ENOENT, ProcessLookupError for
ESRCH, ...), and the changes after it are not applied. After every error, `assert_usable(kq)` adds,
triggers, collects and deletes a USER knote on the same kqueue.

Also here: no Rust panic can reach the interpreter (weird inputs, re-entrancy, a seeded fuzz in a child
process), and hostile process-connector datagrams (truncated, malformed, floods) sent from user space.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import resource
import signal
import socket
import struct
import subprocess
import sys
import textwrap
import threading
import time
from decimal import Decimal
from fractions import Fraction

import pytest

import kqrs
from kqrs import _kqrs, kevent

from kqhelpers import (
    ABSOLUTE,
    ADD,
    AIO,
    CLEAR,
    DELETE,
    DISABLE,
    DISPATCH,
    ENABLE,
    EOF,
    ERROR,
    LOWAT,
    NETDEV,
    NOTE_EXIT,
    NOTE_FORK,
    NSECONDS,
    ONESHOT,
    PROC,
    PROCDESC,
    READ,
    RECEIPT,
    SECONDS,
    SIGNAL,
    SYSFLAGS,
    TIMER,
    TRIGGER,
    USER,
    VNODE,
    WRITE,
)

FS, LIO = -9, -10

HAVE_SIGNAL = _kqrs._filter_supported(SIGNAL)
HAVE_VNODE = _kqrs._filter_supported(VNODE)
needs_signal = pytest.mark.skipif(not HAVE_SIGNAL, reason="EVFILT_SIGNAL is not built yet")
needs_vnode = pytest.mark.skipif(not HAVE_VNODE, reason="EVFILT_VNODE is not built yet")

CLOSED_MSG = "I/O operation on closed kqueue object"
PROBE = 0xB0B0_0000_0001  # the USER ident assert_usable() uses
INT_MAX = 2**31 - 1
LONG_MS = 10**9  # a timer period (ms) that never expires during a test

pytestmark = pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")


# --- helpers ---------------------------------------------------------------------------------------------


@pytest.fixture
def pipe():
    r, w = os.pipe()
    yield r, w
    for fd in (r, w):
        try:
            os.close(fd)
        except OSError:
            pass


def fields(e):
    return (e.ident, e.filter, e.flags, e.fflags, e.data, e.udata)


def knotes(kq) -> int:
    return kq._stats()[0]


def assert_usable(kq) -> None:
    """The kqueue still works: a USER knote is added, triggered, collected once and deleted."""
    before = knotes(kq)
    room = before + 64  # whatever else is pending fits too
    got = kq.control([kevent(PROBE, USER, ADD | CLEAR, 0, 0, 77), kevent(PROBE, USER, 0, TRIGGER, 5, 77)], room, 0)
    mine = [fields(e) for e in got if (e.ident, e.filter) == (PROBE, USER)]
    assert mine == [(PROBE, USER, CLEAR, 0, 5, 77)]
    assert kq.control([kevent(PROBE, USER, DELETE)], 0) == []
    assert [(e.flags, e.data) for e in kq.control([kevent(PROBE, USER, DELETE)], 1, 0)] == [(ERROR, errno.ENOENT)]
    assert knotes(kq) == before


def oserror_type(code: int) -> type:
    """The OSError subclass CPython raises for errno `code`."""
    return type(OSError(code, "x"))


def closed_fd_number() -> int:
    """An fd number that is not open now and that nothing will open meanwhile: high above the lowest free
    ones, which the engine may take for a kqueue's timer source or inotify instance on the next change."""
    import fcntl
    import resource

    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    src = os.open(os.devnull, os.O_RDONLY)
    fd = fcntl.fcntl(src, fcntl.F_DUPFD, max(64, soft // 2))
    os.close(src)
    os.close(fd)
    return fd


def rss_kb() -> int:
    with open("/proc/self/status") as f:
        return next(int(ln.split()[1]) for ln in f if ln.startswith("VmRSS:"))


def run_python(code: str, timeout: float = 60, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, **(env_extra or {}))
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=timeout, env=env
    )


def check_change_error(kq, change, code: int) -> None:
    """`change` fails with `code`: an EV_ERROR entry with room, OSError(code) without; nothing is left
    behind and the kqueue still works."""
    before = knotes(kq)
    got = kq.control([change], 4, 0)
    assert [(e.ident, e.filter, e.flags, e.data, e.udata) for e in got] == [
        (change.ident, change.filter, ERROR, code, change.udata)
    ], errno.errorcode.get(got[0].data) if got else got
    assert knotes(kq) == before
    with pytest.raises(OSError) as ei:
        kq.control([change], 0)
    assert ei.value.errno == code
    assert type(ei.value) is oserror_type(code)
    assert knotes(kq) == before
    assert_usable(kq)


# --- rows: kevent() construction (CPython's argument parsing) --------------------------------------------


class Fileno:
    def __init__(self, v):
        self.v = v

    def fileno(self):
        return self.v


class RaisingFileno:
    def fileno(self):
        raise RuntimeError("fileno failed")


class Index:
    def __init__(self, v):
        self.v = v

    def __index__(self):
        return self.v


def _closed_socket():
    s = socket.socket()
    s.close()
    return s


KEVENT_ROWS = [
    # id, kwargs, exception, message regex
    ("ident-float", dict(ident=1.5), TypeError, r"^argument must be an int, or have a fileno\(\) method\.$"),
    ("ident-str", dict(ident="3"), TypeError, r"^argument must be an int, or have a fileno\(\) method\.$"),
    ("ident-None", dict(ident=None), TypeError, r"^argument must be an int, or have a fileno\(\) method\.$"),
    ("ident-index-only", dict(ident=Index(3)), TypeError, r"^argument must be an int, or have a fileno"),
    ("ident-negative", dict(ident=-1), OverflowError, r"^can't convert negative value to size_t$"),
    ("ident-2**64", dict(ident=2**64), OverflowError, r"^Python int too large to convert to C size_t$"),
    (
        "ident-fileno-negative",
        dict(ident=Fileno(-1)),
        ValueError,
        r"^file descriptor cannot be a negative integer \(-1\)$",
    ),
    ("ident-fileno-str", dict(ident=Fileno("3")), TypeError, r"^fileno\(\) returned a non-integer$"),
    ("ident-fileno-huge", dict(ident=Fileno(2**31)), OverflowError, r"^Python int too large to convert to C int$"),
    ("ident-fileno-raises", dict(ident=RaisingFileno()), RuntimeError, r"^fileno failed$"),
    ("ident-closed-socket", dict(ident=_closed_socket()), ValueError, r"negative integer \(-1\)"),
    ("filter-too-big", dict(ident=1, filter=2**15), OverflowError, r"^signed short integer is greater than maximum$"),
    (
        "filter-too-small",
        dict(ident=1, filter=-(2**15) - 1),
        OverflowError,
        r"^signed short integer is less than minimum$",
    ),
    ("filter-float", dict(ident=1, filter=-1.0), TypeError, r"^'float' object cannot be interpreted as an integer$"),
    ("flags-str", dict(ident=1, flags="1"), TypeError, r"^'str' object cannot be interpreted as an integer$"),
    ("fflags-None", dict(ident=1, fflags=None), TypeError, r"^'NoneType' object cannot be interpreted as an integer$"),
    ("data-2**63", dict(ident=1, data=2**63), OverflowError, r"^int too big to convert$"),
    ("data-float", dict(ident=1, data=1.0), TypeError, r"^'float' object cannot be interpreted as an integer$"),
    ("udata-float", dict(ident=1, udata=1.0), TypeError, r"^kevent\(\) argument 6 must be int, not float$"),
    ("udata-None", dict(ident=1, udata=None), TypeError, r"^kevent\(\) argument 6 must be int, not None$"),
    ("udata-str", dict(ident=1, udata="x"), TypeError, r"^kevent\(\) argument 6 must be int, not str$"),
    ("udata-object", dict(ident=1, udata=object()), TypeError, r"^kevent\(\) argument 6 must be int, not object$"),
    ("udata-index-only", dict(ident=1, udata=Index(1)), TypeError, r"^kevent\(\) argument 6 must be int, not Index$"),
]


@pytest.mark.parametrize("kwargs, exc, msg", [r[1:] for r in KEVENT_ROWS], ids=[r[0] for r in KEVENT_ROWS])
def test_kevent_construction_errors(kq, kwargs, exc, msg):
    with pytest.raises(exc, match=msg):
        kevent(**kwargs)
    assert_usable(kq)


@pytest.mark.parametrize(
    "kwargs, want",
    [
        (dict(flags=-1), ("flags", 0xFFFF)),  # unsigned short: masked, no range check
        (dict(flags=2**100 + 3), ("flags", 3)),
        (dict(fflags=-1), ("fflags", 0xFFFFFFFF)),
        (dict(fflags=2**32 + 1), ("fflags", 1)),
        (dict(udata=-1), ("udata", 2**64 - 1)),
        (dict(udata=2**64), ("udata", 0)),
        (dict(udata=2**200 + 9), ("udata", 9)),
        (dict(data=-(2**63)), ("data", -(2**63))),
        (dict(ident=True), ("ident", 1)),
    ],
    ids=lambda v: repr(v),
)
def test_kevent_values_that_wrap_instead_of_failing(kwargs, want):
    ev = kevent(**{"ident": 1, **kwargs})
    assert getattr(ev, want[0]) == want[1]


# --- rows: idents -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("ident", [2**31, 2**32, 2**63, 2**64 - 1], ids=hex)
@pytest.mark.parametrize("filt", [READ, WRITE], ids=["READ", "WRITE"])
@pytest.mark.parametrize("flags", [ADD, DELETE, ENABLE, DISABLE, 0], ids=["ADD", "DELETE", "ENABLE", "DISABLE", "0"])
def test_fd_ident_above_int_max_is_ebadf(kq, ident, filt, flags):
    """BSD: an fd filter's ident above INT_MAX is EBADF (checked before the knote lookup)."""
    check_change_error(kq, kevent(ident, filt, flags, 0, 0, 3), errno.EBADF)


def test_fd_ident_is_not_truncated_to_32_bits(kq, pipe):
    r, w = pipe
    check_change_error(kq, kevent(2**32 + r, READ, ADD), errno.EBADF)
    os.write(w, b"x")
    assert kq.control(None, 4, 0) == []  # nothing was registered on fd r


@pytest.mark.parametrize("filt", [READ, WRITE], ids=["READ", "WRITE"])
@pytest.mark.parametrize(
    "flags",
    [ADD, ADD | DISABLE, DELETE, ENABLE, DISABLE, 0],
    ids=["ADD", "ADD|DISABLE", "DELETE", "ENABLE", "DISABLE", "0"],
)
def test_fd_that_is_not_open_is_ebadf(kq, filt, flags):
    check_change_error(kq, kevent(closed_fd_number(), filt, flags, 0, 0, 9), errno.EBADF)


_HUGE_FD_SNIPPET = r"""
import json, resource, kqrs
from kqrs import kevent
# A hard cap, so that a runaway allocation fails here instead of eating the machine's memory.
resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))
def rss():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmRSS:"))
kq = kqrs.kqueue()
base = rss()
res = []
for ident in (10**6 + 7, 2**24, 2**31 - 1):
    for filt in (kqrs.KQ_FILTER_READ, kqrs.KQ_FILTER_WRITE):
        for flags in (kqrs.KQ_EV_ADD, kqrs.KQ_EV_ADD | kqrs.KQ_EV_DISABLE):
            got = kq.control([kevent(ident, filt, flags)], 1, 0)
            res.append([ident, filt, flags, [(e.flags, e.data) for e in got], rss() - base])
print(json.dumps({"res": res, "knotes": kq._stats()[0]}))
"""


def test_fd_not_open_with_a_large_number_is_ebadf_without_allocating():
    p = run_python(_HUGE_FD_SNIPPET)
    assert p.returncode == 0, p.stderr[-2000:]
    out = json.loads(p.stdout)
    for ident, filt, flags, got, grown_kb in out["res"]:
        assert got == [[ERROR, errno.EBADF]], (ident, filt, flags, got)
        assert grown_kb < 8 * 1024, f"fd {ident}: RSS grew by {grown_kb} kB"
    assert out["knotes"] == 0


@pytest.mark.parametrize("ident", [0, 1, 2**32 - 1, 2**63, 2**64 - 1], ids=hex)
def test_user_and_timer_take_any_ident(kq, ident):
    got = kq.control(
        [kevent(ident, USER, ADD | CLEAR, TRIGGER, 0, 1), kevent(ident, TIMER, ADD | ONESHOT, 0, 0, 2)], 4, 0.5
    )
    while len(got) < 2:
        more = kq.control(None, 4, 0.5)
        assert more, got
        got += more
    assert sorted(fields(e) for e in got) == sorted(
        [(ident, USER, CLEAR, 0, 0, 1), (ident, TIMER, ONESHOT | CLEAR, 0, 1, 2)]
    )
    assert knotes(kq) == 1  # the one-shot timer is gone
    assert_usable(kq)


@pytest.mark.parametrize("ident", [2**64 - 1, 2**32, 2**31, 0], ids=hex)
def test_proc_ident_that_is_no_process_is_esrch(kq, ident):
    check_change_error(kq, kevent(ident, PROC, ADD, NOTE_EXIT), errno.ESRCH)


def test_proc_ident_is_not_truncated_to_a_pid(kq):
    """2**32 + getpid() is no process (a 32-bit truncation would watch this very process)."""
    check_change_error(kq, kevent(2**32 + os.getpid(), PROC, ADD, NOTE_EXIT), errno.ESRCH)


def test_procdesc_ident_errors(kq, pipe):
    r, _ = pipe
    check_change_error(kq, kevent(r, PROCDESC, ADD, NOTE_EXIT), errno.EINVAL)  # not a pidfd
    check_change_error(kq, kevent(closed_fd_number(), PROCDESC, ADD, NOTE_EXIT), errno.EBADF)
    check_change_error(kq, kevent(2**40, PROCDESC, ADD, NOTE_EXIT), errno.EBADF)


def test_procdesc_ident_is_not_truncated_to_32_bits(kq):
    pidfd = os.pidfd_open(os.getpid())
    try:
        check_change_error(kq, kevent(2**32 + pidfd, PROCDESC, ADD, NOTE_EXIT), errno.EBADF)
    finally:
        os.close(pidfd)


@needs_signal
@pytest.mark.parametrize("ident", [0, 65, 2**31, 2**32 + signal.SIGUSR1, 2**64 - 1], ids=hex)
def test_signal_ident_that_is_no_signal_is_einval(kq, ident):
    check_change_error(kq, kevent(ident, SIGNAL, ADD), errno.EINVAL)


@needs_vnode
def test_vnode_ident_errors(kq, pipe):
    r, _ = pipe
    check_change_error(kq, kevent(r, VNODE, ADD, kqrs.KQ_NOTE_WRITE), errno.EINVAL)  # a pipe
    a, b = socket.socketpair()
    with a, b:
        check_change_error(kq, kevent(a.fileno(), VNODE, ADD, kqrs.KQ_NOTE_WRITE), errno.EINVAL)  # a socket
    check_change_error(kq, kevent(closed_fd_number(), VNODE, ADD, kqrs.KQ_NOTE_WRITE), errno.EBADF)
    check_change_error(kq, kevent(2**31, VNODE, ADD, kqrs.KQ_NOTE_WRITE), errno.EBADF)


def test_kqueue_watching_itself_is_einval(kq):
    check_change_error(kq, kevent(kq.fileno(), READ, ADD), errno.EINVAL)
    check_change_error(kq, kevent(kq.fileno(), WRITE, ADD), errno.EINVAL)


# --- rows: filters ----------------------------------------------------------------------------------------

UNKNOWN_FILTERS = [0, 1, 2, 32767, -11 - 1, -14, -100, -32768]
NOT_BUILT = {AIO: "AIO", NETDEV: "NETDEV", FS: "FS", LIO: "LIO"}
if not HAVE_SIGNAL:
    NOT_BUILT[SIGNAL] = "SIGNAL"
if not HAVE_VNODE:
    NOT_BUILT[VNODE] = "VNODE"


@pytest.mark.parametrize("filt", UNKNOWN_FILTERS)
@pytest.mark.parametrize("flags", [ADD, DELETE, 0], ids=["ADD", "DELETE", "0"])
def test_unknown_filter_is_einval(kq, filt, flags):
    if filt == -12 and _kqrs._filter_supported(-12):
        pytest.skip("-12 is a filter in this build")
    check_change_error(kq, kevent(1, filt, flags), errno.EINVAL)


@pytest.mark.parametrize("filt", list(NOT_BUILT), ids=list(NOT_BUILT.values()))
def test_known_filter_not_built_is_eopnotsupp(kq, filt):
    check_change_error(kq, kevent(1, filt, ADD), errno.EOPNOTSUPP)


# --- rows: flags ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bit", [0x100, 0x200, 0x400, 0x800], ids=hex)
@pytest.mark.parametrize("filt", [USER, TIMER, READ], ids=["USER", "TIMER", "READ"])
def test_unknown_flag_bits_are_einval(kq, pipe, bit, filt):
    """0x100-0x800 are no flag of libkqueue's (FreeBSD: FORCEONESHOT, KEEPUDATA): refused, not ignored."""
    ident = pipe[0] if filt == READ else 1
    check_change_error(kq, kevent(ident, filt, ADD | bit, 0, LONG_MS if filt == TIMER else 0), errno.EINVAL)


def test_all_flag_bits_is_einval(kq):
    check_change_error(kq, kevent(1, USER, 0xFFFF), errno.EINVAL)


def test_output_only_flags_on_input_are_ignored(kq):
    """BSD clears EV_SYSFLAGS (EOF, ERROR, FLAG1, DROP) from a change: the knote is added, its events do
    not carry them."""
    got = kq.control([kevent(1, USER, ADD | CLEAR | SYSFLAGS, TRIGGER, 0, 4)], 4, 0)
    assert [fields(e) for e in got] == [(1, USER, CLEAR, 0, 0, 4)]
    assert knotes(kq) == 1
    assert_usable(kq)


@pytest.mark.parametrize("extra", [0, ADD, ADD | ONESHOT, DELETE], ids=["alone", "ADD", "ADD|ONESHOT", "DELETE"])
def test_enable_and_disable_together_is_einval_and_changes_nothing(kq, extra):
    kq.control([kevent(1, USER, ADD | CLEAR, 0, 0, 5)], 0)
    check_change_error(kq, kevent(1, USER, ENABLE | DISABLE | extra, TRIGGER, 9, 6), errno.EINVAL)
    check_change_error(kq, kevent(2, USER, ENABLE | DISABLE | extra, TRIGGER, 9, 6), errno.EINVAL)
    # knote 1 is as it was: enabled, untriggered, data 0, udata 5
    assert kq.control(None, 4, 0) == []
    got = kq.control([kevent(1, USER, 0, TRIGGER, 0, 5)], 4, 0)
    assert [fields(e) for e in got] == [(1, USER, CLEAR, 0, 0, 5)]


def test_add_and_delete_together(kq):
    # a new knote: created and deleted at once (no error, nothing left, no event)
    assert kq.control([kevent(1, USER, ADD | DELETE, TRIGGER)], 4, 0) == []
    assert knotes(kq) == 0
    # an existing one: deleted
    kq.control([kevent(1, USER, ADD | CLEAR, TRIGGER)], 0)
    assert kq.control([kevent(1, USER, ADD | DELETE)], 4, 0) == []
    assert knotes(kq) == 0
    # DELETE wins over ENABLE
    kq.control([kevent(1, USER, ADD | CLEAR | DISABLE, TRIGGER)], 0)
    assert kq.control([kevent(1, USER, DELETE | ENABLE)], 4, 0) == []
    assert knotes(kq) == 0
    assert_usable(kq)


def test_oneshot_dispatch_and_clear_together(kq):
    got = kq.control([kevent(1, USER, ADD | ONESHOT | DISPATCH | CLEAR, TRIGGER, 3, 8)], 4, 0)
    assert [fields(e) for e in got] == [(1, USER, ONESHOT | DISPATCH | CLEAR, 0, 3, 8)]
    assert knotes(kq) == 0  # one-shot wins: deleted after its report
    assert_usable(kq)


@pytest.mark.parametrize("flags", [0, DELETE, ENABLE, DISABLE, ONESHOT, CLEAR, RECEIPT | DELETE])
@pytest.mark.parametrize("filt", [USER, TIMER, PROC], ids=["USER", "TIMER", "PROC"])
def test_change_without_add_to_a_missing_knote_is_enoent(kq, filt, flags):
    ident = os.getpid() if filt == PROC else 12345
    check_change_error(kq, kevent(ident, filt, flags, TRIGGER if filt == USER else 0), errno.ENOENT)


@pytest.mark.parametrize("flags", [DELETE, ENABLE, DISABLE, 0])
def test_change_without_add_to_an_open_fd_without_knote_is_enoent(kq, pipe, flags):
    check_change_error(kq, kevent(pipe[0], READ, flags), errno.ENOENT)


# --- rows: fflags and data out of range ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "filt, fflags, data",
    [
        (TIMER, SECONDS | NSECONDS, 1),  # two units
        (TIMER, 0x10, 1),  # not a timer bit (FreeBSD's NOTE_ABSTIME is libkqueue's 8)
        (TIMER, 0x8000_0000, 1),
        (TIMER, 0, -1),  # negative period
        (TIMER, 0, -(2**63)),
        (TIMER, ABSOLUTE | SECONDS, -1),
        (READ, 0x2, 0),  # READ knows NOTE_LOWAT only
        (WRITE, 0x8000_0000, 0),
        (PROC, 0x8, 0),  # not a PROC note bit
        (PROC, 0x0800_0000, 0),
    ],
    ids=lambda v: hex(v) if isinstance(v, int) else str(v),
)
def test_fflags_or_data_out_of_range_is_einval(kq, pipe, filt, fflags, data):
    ident = {READ: pipe[0], WRITE: pipe[1], PROC: os.getpid()}.get(filt, 1)
    check_change_error(kq, kevent(ident, filt, ADD, fflags, data, 11), errno.EINVAL)


def test_bad_fflags_on_modify_leave_the_knote_as_it_was(kq):
    kq.control([kevent(1, USER, ADD | CLEAR, 0x5, 1, 2), kevent(2, TIMER, ADD, 0, LONG_MS, 3)], 0)
    check_change_error(kq, kevent(1, USER, ENABLE | DISABLE, kqrs.KQ_NOTE_FFCOPY | 0x7 | TRIGGER, 9, 9), errno.EINVAL)
    check_change_error(kq, kevent(2, TIMER, ADD, 0, -1, 9), errno.EINVAL)
    assert knotes(kq) == 2
    got = kq.control([kevent(1, USER, 0, TRIGGER, 1, 2)], 4, 0)
    assert [fields(e) for e in got] == [(1, USER, CLEAR, 0x5, 1, 2)]


@pytest.mark.parametrize(
    "fflags, data",
    [
        (SECONDS, 2**63 - 1),
        (0, 2**63 - 1),
        (NSECONDS, 2**63 - 1),
        (ABSOLUTE | SECONDS, 2**63 - 1),
        (ABSOLUTE | NSECONDS, 2**63 - 1),
    ],
    ids=["s", "ms", "ns", "abs-s", "abs-ns"],
)
def test_huge_timer_values_saturate_and_never_fire(kq, fflags, data):
    assert kq.control([kevent(1, TIMER, ADD, fflags, data, 1)], 4, 0) == []
    assert kq.control(None, 4, 0.05) == []
    assert knotes(kq) == 1
    assert_usable(kq)


@pytest.mark.parametrize("data", [-5, 0, 2**63 - 1])
def test_lowat_values_are_accepted(kq, pipe, data):
    r, w = pipe
    assert kq.control([kevent(r, READ, ADD, LOWAT, data, 1)], 4, 0) == []
    os.write(w, b"abc")
    got = kq.control(None, 4, 0)
    want = [] if data > 3 else [(r, READ, 0, 0, 3, 1)]
    assert [fields(e) for e in got] == want
    os.close(w)  # EOF fires whatever the low-water mark
    got = kq.control(None, 4, 0)
    assert [fields(e) for e in got] == [(r, READ, EOF, 0, 3, 1)]
    assert_usable(kq)


# --- rows: no room for the error entry ------------------------------------------------------------------


def _bad_changes(pipe):
    return {
        "EINVAL": (kevent(1, 0, ADD), errno.EINVAL),
        "ENOENT": (kevent(1, USER, DELETE), errno.ENOENT),
        "EBADF": (kevent(closed_fd_number(), READ, ADD), errno.EBADF),
        "ESRCH": (kevent(2**32 + 1, PROC, ADD, NOTE_EXIT), errno.ESRCH),
        "EOPNOTSUPP": (kevent(1, AIO, ADD), errno.EOPNOTSUPP),
    }


@pytest.mark.parametrize("name", ["EINVAL", "ENOENT", "EBADF", "ESRCH", "EOPNOTSUPP"])
def test_failing_change_without_room_raises_and_stops(kq, pipe, name):
    bad, code = _bad_changes(pipe)[name]
    with pytest.raises(OSError) as ei:
        kq.control([kevent(1001, USER, ADD), bad, kevent(1002, USER, ADD)], 0)
    assert ei.value.errno == code and type(ei.value) is oserror_type(code)
    # the change before it was applied, the one after it was not
    assert kq.control([kevent(1001, USER, DELETE)], 0) == []
    assert [(e.flags, e.data) for e in kq.control([kevent(1002, USER, DELETE)], 1, 0)] == [(ERROR, errno.ENOENT)]
    assert_usable(kq)


def test_second_failure_once_the_room_is_used_up_raises(kq, pipe):
    b1, _ = _bad_changes(pipe)["EINVAL"]
    b2, _ = _bad_changes(pipe)["ENOENT"]
    with pytest.raises(FileNotFoundError):
        kq.control([b1, kevent(1001, USER, ADD), b2, kevent(1002, USER, ADD)], 1, 0)
    assert kq.control([kevent(1001, USER, DELETE)], 0) == []
    assert [(e.flags, e.data) for e in kq.control([kevent(1002, USER, DELETE)], 1, 0)] == [(ERROR, errno.ENOENT)]
    assert_usable(kq)


# --- rows: a closed kqueue --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call",
    [
        lambda q: q.control(None, 1, 0),
        lambda q: q.control(None, 0),
        lambda q: q.control([kevent(1, USER, ADD)], 0),
        lambda q: q.control([kevent(1, USER, ADD)], 4, None),
        lambda q: q.fileno(),
        lambda q: q.__enter__(),
    ],
    ids=["poll", "no-room", "change", "change-and-wait", "fileno", "enter"],
)
def test_closed_kqueue_raises_valueerror(call):
    q = kqrs.kqueue()
    q.close()
    assert q.closed
    with pytest.raises(ValueError, match=f"^{CLOSED_MSG}$"):
        call(q)
    q.close()  # closing again is fine
    assert q.closed
    with kqrs.kqueue() as other:  # others are unaffected
        assert_usable(other)


def test_closed_check_comes_before_argument_checks():
    """CPython: max_events is converted first (a TypeError wins), then the closed check, then the rest."""
    q = kqrs.kqueue()
    q.close()
    with pytest.raises(TypeError):
        q.control(None, "1")
    with pytest.raises(ValueError, match=CLOSED_MSG):
        q.control(None, -1)
    with pytest.raises(ValueError, match=CLOSED_MSG):
        q.control(None, 1, "bad timeout")
    with pytest.raises(ValueError, match=CLOSED_MSG):
        q.control(42, 1)  # a changelist that is not iterable


def test_kqueue_closed_while_its_changelist_is_read():
    q = kqrs.kqueue()

    def changes():
        yield kevent(1, USER, ADD)
        q.close()
        yield kevent(2, USER, ADD)

    with pytest.raises(ValueError, match=CLOSED_MSG):
        q.control(changes(), 4, 0)
    assert q.closed


def test_kqueue_closed_by_the_timeout_or_max_events_conversion():
    q = kqrs.kqueue()

    class Closing:
        def __index__(self):
            q.close()
            return 1

    with pytest.raises(ValueError, match=CLOSED_MSG):
        q.control(None, Closing(), 0)  # max_events is converted before the closed check
    q = kqrs.kqueue()
    with pytest.raises(ValueError, match=CLOSED_MSG):
        q.control([kevent(1, USER, ADD)], 1, Closing())  # the timeout is converted after it
    assert q.closed


@pytest.mark.parametrize(
    "arg, exc",
    [(-2, OSError), (2**31, OverflowError), (1.5, TypeError), ("3", TypeError), (None, TypeError)],
    ids=["-2", "2**31", "float", "str", "None"],
)
def test_fromfd_bad_argument(arg, exc):
    with pytest.raises(exc):
        kqrs.kqueue.fromfd(arg)
    with kqrs.kqueue() as q:
        assert_usable(q)


def test_fromfd_of_the_lowest_free_fd_number_is_ebadf():
    with pytest.raises(OSError) as ei:
        kqrs.kqueue.fromfd(closed_fd_number())
    assert ei.value.errno == errno.EBADF


def test_fromfd_of_an_fd_that_is_not_open_or_not_a_kqueue(pipe):
    with pytest.raises(OSError) as ei:
        kqrs.kqueue.fromfd(resource.getrlimit(resource.RLIMIT_NOFILE)[0] + 1)  # beyond the limit: never open
    assert ei.value.errno == errno.EBADF
    r, _ = pipe
    with pytest.raises(OSError) as ei:
        kqrs.kqueue.fromfd(r)
    assert ei.value.errno == errno.EINVAL
    os.fstat(r)  # the fd was not taken (nor closed) on failure


def test_fromfd_of_a_closed_kqueues_number():
    q = kqrs.kqueue()
    fd = q.fileno()
    q.close()
    with pytest.raises(OSError) as ei:
        kqrs.kqueue.fromfd(fd)  # not open any more (or another file: then EINVAL)
    assert ei.value.errno in (errno.EBADF, errno.EINVAL)


# --- rows: an fd closed (or its number reused) after it was added --------------------------------------------


@pytest.mark.parametrize(
    "flags",
    [DISABLE, ENABLE, 0, DELETE],
    ids=["DISABLE", "ENABLE", "0", "DELETE"],
)
def test_change_on_a_watched_fd_closed_since_is_ebadf(kq, flags):
    """BSD removes an fd's knotes when it is closed; any later change on that number is EBADF (the fd is
    not open), every time."""
    r, w = os.pipe()
    kq.control([kevent(r, READ, ADD, 0, 0, 1)], 0)
    os.close(r)
    os.close(w)
    codes = [[(e.flags, e.data) for e in kq.control([kevent(r, READ, flags, 0, 0, 2)], 1, 0)] for _ in range(3)]
    assert codes == [[(ERROR, errno.EBADF)]] * 3
    with pytest.raises(OSError) as ei:
        kq.control([kevent(r, READ, flags, 0, 0, 2)], 0)
    assert ei.value.errno == errno.EBADF
    assert_usable(kq)


def _reuse_number(fd, end=0):
    """A new pipe whose read end (`end` 0) or write end (1) gets the number `fd` (closed by the caller):
    (read, write)."""
    ends = list(os.pipe())
    if ends[end] != fd:
        if ends[1 - end] == fd:
            ends[1 - end] = os.dup(fd)
            os.close(fd)
        os.dup2(ends[end], fd)
        os.close(ends[end])
        ends[end] = fd
    return ends[0], ends[1]


@pytest.mark.parametrize("how", ["enabled", "added-disabled", "disabled-later", "dispatched"])
@pytest.mark.parametrize("flags", [ENABLE, DISABLE, 0], ids=["ENABLE", "DISABLE", "0"])
def test_reused_fd_number_has_no_knote(kq, how, flags):
    """semantics.md: a new file that gets the number of a closed, watched fd starts clean: a change
    without EV_ADD is ENOENT, and nothing is ever reported for the new file. Also when the old file's knote
    was disabled, and so had no epoll registration to check the file against (kqrs keeps its identity)."""
    r, w = os.pipe()
    if how == "added-disabled":
        kq.control([kevent(r, READ, ADD | DISABLE, 0, 0, 1)], 0)
    elif how == "disabled-later":
        kq.control([kevent(r, READ, ADD, 0, 0, 1), kevent(r, READ, DISABLE, 0, 0, 1)], 0)
    elif how == "dispatched":
        kq.control([kevent(r, READ, ADD | DISPATCH, 0, 0, 1)], 0)
        os.write(w, b"x")
        assert [(e.ident, e.data) for e in kq.control(None, 4, 1)] == [(r, 1)]
    else:
        kq.control([kevent(r, READ, ADD, 0, 0, 1)], 0)
    os.close(r)
    os.close(w)
    r2, w2 = _reuse_number(r)
    try:
        got = kq.control([kevent(r2, READ, flags, 0, 0, 1), kevent(r2, READ, ENABLE, 0, 0, 1)], 4, 0)
        os.write(w2, b"abc")
        got += kq.control(None, 4, 0.05)
        assert [(e.ident, e.flags, e.data) for e in got] == [(r2, ERROR, errno.ENOENT)] * 2
        assert knotes(kq) == 0
    finally:
        os.close(r2)
        os.close(w2)


@pytest.mark.parametrize("how", ["enabled", "disabled"])
def test_disabled_knote_of_a_still_open_fd_is_kept(kq, how):
    """The identity check must not lose a knote whose fd still names its file: disable, enable, report."""
    r, w = os.pipe()
    try:
        kq.control([kevent(r, READ, ADD | (DISABLE if how == "disabled" else 0), 0, 0, 1)], 0)
        kq.control([kevent(r, READ, DISABLE, 0, 0, 2)], 0)
        os.write(w, b"abc")
        assert kq.control(None, 4, 0) == []
        assert kq.control([kevent(r, READ, ENABLE, 0, 0, 3)], 4, 0)[0].data == 3
        assert knotes(kq) == 1
    finally:
        os.close(r)
        os.close(w)


F_GETPIPE_SZ = 1032


@pytest.mark.parametrize("how", ["added-disabled", "disabled-later", "dispatched"])
def test_other_filter_added_on_a_reused_number_sheds_the_old_files_disabled_knote(kq, how):
    """Found by test_stateful.py's PipeSocketMachine (strict, long): a WRITE knote on a pipe reported data 0.
    The socket that had the number before had a disabled READ knote, so no epoll registration, and the
    EV_ADD of WRITE on the pipe that got the number was an epoll ADD, which any file accepts: the socket's
    knote stayed, and with it the entry's cached kind (a socket: SO_SNDBUF, which a pipe has not, so no
    count). BSD removed that knote at close(); the pipe starts clean and its WRITE reports its free space."""
    a, b = socket.socketpair()
    fd = a.fileno()
    if how == "added-disabled":
        kq.control([kevent(fd, READ, ADD | DISABLE, 0, 0, 1)], 0)
    else:
        kq.control([kevent(fd, READ, ADD | (DISPATCH if how == "dispatched" else 0), 0, 0, 1)], 0)
        b.send(b"x")
        assert [(e.ident, e.data) for e in kq.control(None, 4, 0)] == [(fd, 1)]  # (kqrs learns: a socket)
        if how == "disabled-later":
            kq.control([kevent(fd, READ, DISABLE, 0, 0, 1)], 0)
    a.close()
    b.close()
    r, w = _reuse_number(fd, 1)
    try:
        got = kq.control([kevent(w, WRITE, ADD | ONESHOT, 0, 0, 2)], 4, 0)
        assert [fields(e) for e in got] == [(w, WRITE, ONESHOT, 0, fcntl.fcntl(w, F_GETPIPE_SZ), 2)]
        assert knotes(kq) == 0  # the one-shot went with its report; the socket's READ knote was never there
        got = kq.control([kevent(w, READ, RECEIPT, 0, 0, 3)], 1, 0)
        assert [(e.ident, e.filter, e.flags, e.data) for e in got] == [(w, READ, ERROR, errno.ENOENT)]
    finally:
        os.close(r)
        os.close(w)


@pytest.mark.parametrize("how", ["added-disabled", "disabled-later", "dispatched"])
def test_new_files_knote_survives_being_disabled_beside_the_old_files_disabled_one(kq, how):
    """Found by test_stateful.py's PipeSocketMachine (strict, long): a live READ knote was dropped (a probe
    got ENOENT). The pipe that had the number before left a disabled WRITE knote, and with it its file
    identity in the entry (kept for disabled knotes, which have no registration to check); the new file's
    READ knote was added beside it (an epoll ADD, which checks nothing), and once that one was disabled too,
    the next change compared the new file with the old identity and dropped the live knote as stale."""
    r0, w0 = os.pipe()
    if how == "added-disabled":
        kq.control([kevent(w0, WRITE, ADD | DISABLE, 0, 0, 1)], 0)
    else:
        kq.control([kevent(w0, WRITE, ADD | (DISPATCH if how == "dispatched" else 0), 0, 0, 1)], 0)
        assert [e.ident for e in kq.control(None, 4, 0)] == [w0]
        if how == "disabled-later":
            kq.control([kevent(w0, WRITE, DISABLE, 0, 0, 1)], 0)
    os.close(r0)
    os.close(w0)
    r, w = _reuse_number(w0, 0)
    try:
        kq.control([kevent(r, READ, ADD, 0, 0, 2)], 0)
        got = kq.control([kevent(r, WRITE, RECEIPT, 0, 0, 3)], 1, 0)
        assert [(e.ident, e.filter, e.flags, e.data) for e in got] == [(r, WRITE, ERROR, errno.ENOENT)]
        kq.control([kevent(r, READ, DISABLE, 0, 0, 4)], 0)
        got = kq.control([kevent(r, READ, RECEIPT, 0, 0, 5)], 1, 0)
        assert [(e.ident, e.filter, e.flags, e.data) for e in got] == [(r, READ, ERROR, 0)]
        os.write(w, b"abc")
        got = kq.control([kevent(r, READ, ENABLE, 0, 0, 6)], 4, 0)
        assert [(e.ident, e.filter, e.data, e.udata) for e in got] == [(r, READ, 3, 6)]
        assert knotes(kq) == 1
    finally:
        os.close(r)
        os.close(w)


@pytest.mark.xfail(
    strict=True,
    reason="Linux gap: an fd closed while a dup() keeps its file open leaves the epoll registration on the "
    "old file; nothing tells kqrs the number changed until a change touches it, short of one syscall per "
    "report (docs/design.md, Known gaps)",
)
def test_dup_kept_file_whose_number_is_reused_reports_nothing_for_the_new_file(kq):
    """BSD: close() removes the fd's knotes, even when a dup() keeps the file open; the new file under the
    number was never added, so nothing is reported for either."""
    r, w = os.pipe()
    keep = os.dup(r)
    try:
        kq.control([kevent(r, READ, ADD, 0, 0, 1)], 0)
        os.close(r)
        r2, w2 = _reuse_number(r)
        try:
            os.write(w2, b"new file")
            os.write(w, b"old")  # the old file (still open through `keep`) becomes readable
            got = kq.control(None, 4, 0.05)
            assert [(e.ident, e.data) for e in got] == []
        finally:
            os.close(r2)
            os.close(w2)
    finally:
        os.close(keep)
        os.close(w)


# --- rows: max_events -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "n, exc, msg",
    [
        (-1, ValueError, r"^Length of eventlist must be 0 or positive, got -1$"),
        (-(2**31), ValueError, r"^Length of eventlist must be 0 or positive, got -2147483648$"),
        (Index(-3), ValueError, r"got -3$"),
        (2**31, OverflowError, r"^Python int too large to convert to C int$"),
        (-(2**31) - 1, OverflowError, r"^Python int too large to convert to C int$"),
        (2**64, OverflowError, r"^Python int too large to convert to C int$"),
        (1.0, TypeError, r"^'float' object cannot be interpreted as an integer$"),
        ("1", TypeError, r"^'str' object cannot be interpreted as an integer$"),
        (None, TypeError, r"^'NoneType' object cannot be interpreted as an integer$"),
        (Decimal(1), TypeError, r"^'decimal.Decimal' object cannot be interpreted as an integer$|Decimal"),
    ],
    ids=["-1", "-2**31", "index-3", "2**31", "-2**31-1", "2**64", "float", "str", "None", "Decimal"],
)
def test_bad_max_events(kq, n, exc, msg):
    with pytest.raises(exc, match=msg):
        kq.control([kevent(1, USER, ADD)], n, 0)
    assert knotes(kq) == 0  # nothing was applied
    assert_usable(kq)


@pytest.mark.parametrize("n", [True, Index(2)], ids=["True", "index"])
def test_max_events_index_objects_are_accepted(kq, n):
    got = kq.control([kevent(1, USER, ADD | CLEAR, TRIGGER), kevent(2, USER, ADD | CLEAR, TRIGGER)], n, 0)
    assert len(got) == int(n)


_MAXEV_SNIPPET = r"""
import json, threading, time, kqrs
from kqrs import kevent
U, ADD, CLEAR, T = kqrs.KQ_FILTER_USER, kqrs.KQ_EV_ADD, kqrs.KQ_EV_CLEAR, kqrs.KQ_NOTE_TRIGGER
BIG = 2**31 - 1
def hwm():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmHWM:"))
kq = kqrs.kqueue()
kq.control(None, 1, 0)
base = hwm()
res = {}
res["empty"] = len(kq.control(None, BIG, 0))
res["empty_wait"] = len(kq.control(None, BIG, 0.01))
res["zero_room"] = len(kq.control([kevent(i, U, ADD | CLEAR, T) for i in range(100)], 0))
res["pending"] = len(kq.control(None, BIG, 0))
res["with_changes"] = len(kq.control([kevent(i, U, 0, T) for i in range(100)] + [kevent(i, U, ADD | CLEAR, T) for i in range(100, 150)], BIG, 0))
res["errors"] = len(kq.control([kevent(10**6 + i, U, kqrs.KQ_EV_DELETE) for i in range(50)], BIG, 0))
res["hwm_growth_kb"] = hwm() - base
print(json.dumps(res))
"""


def test_enormous_max_events_does_not_allocate_and_still_works():
    """max_events = 2**31-1 must not allocate room for 2**31 events (64 GiB here): RSS stays flat and the
    calls return what is pending."""
    p = run_python(_MAXEV_SNIPPET, env_extra={"MALLOC_ARENA_MAX": "1"})
    assert p.returncode == 0, p.stderr[-2000:]
    res = json.loads(p.stdout)
    assert res == {
        "empty": 0,
        "empty_wait": 0,
        "zero_room": 0,
        "pending": 100,
        "with_changes": 150,
        "errors": 50,
        "hwm_growth_kb": res["hwm_growth_kb"],
    }
    assert res["hwm_growth_kb"] < 32 * 1024, res


def test_large_max_events_reports_knotes_added_while_waiting(kq):
    """A thread blocked with room for 1000 events gets all 300 knotes another thread adds and triggers in
    one call (BSD fills the eventlist up to max_events)."""
    got: list = []
    t = threading.Thread(target=lambda: got.extend(kq.control(None, 1000, 5)))
    t.start()
    time.sleep(0.1)
    kq.control([kevent(i, USER, ADD | CLEAR, TRIGGER) for i in range(300)], 0)
    t.join(5)
    assert not t.is_alive()
    assert len(got) == 300


# --- rows: timeouts -----------------------------------------------------------------------------------------


class Floaty:
    def __float__(self):
        return 0.0


@pytest.mark.parametrize(
    "timeout, exc, msg",
    [
        (-1, ValueError, r"^timeout must be positive or None$"),
        (-0.5, ValueError, r"^timeout must be positive or None$"),
        (-1e-12, ValueError, r"^timeout must be positive or None$"),
        (Index(-1), ValueError, r"^timeout must be positive or None$"),
        (float("nan"), TypeError, r"^timeout argument must be a number or None, got float$"),
        (float("inf"), TypeError, r"^timeout argument must be a number or None, got float$"),
        (float("-inf"), TypeError, r"^timeout argument must be a number or None, got float$"),
        (1e300, TypeError, r"^timeout argument must be a number or None, got float$"),
        (-1e300, TypeError, r"^timeout argument must be a number or None, got float$"),
        (2**63, TypeError, r"^timeout argument must be a number or None, got int$"),
        (2**62, TypeError, r"^timeout argument must be a number or None, got int$"),  # *1e9 overflows
        (Index(2**70), TypeError, r"^timeout argument must be a number or None, got Index$"),
        ("1", TypeError, r"^timeout argument must be a number or None, got str$"),
        (b"1", TypeError, r"^timeout argument must be a number or None, got bytes$"),
        (1j, TypeError, r"^timeout argument must be a number or None, got complex$"),
        (Decimal("0.1"), TypeError, r"^timeout argument must be a number or None, got Decimal$"),
        (Fraction(1, 3), TypeError, r"^timeout argument must be a number or None, got Fraction$"),
        (Floaty(), TypeError, r"^timeout argument must be a number or None, got Floaty$"),
        ([], TypeError, r"^timeout argument must be a number or None, got list$"),
    ],
    ids=lambda v: repr(v)[:20],
)
def test_bad_timeout(kq, timeout, exc, msg):
    for n in (0, 4):
        with pytest.raises(exc, match=msg):
            kq.control([kevent(1, USER, ADD)], n, timeout)
    assert knotes(kq) == 0  # the changelist was not applied
    assert_usable(kq)


@pytest.mark.parametrize("timeout", [0, 0.0, -0.0, 1e-12, Index(0), False], ids=repr)
def test_zero_like_timeouts_poll(kq, timeout):
    t0 = time.monotonic()
    assert kq.control(None, 4, timeout) == []
    assert time.monotonic() - t0 < 1


@pytest.mark.parametrize("timeout", [9.2e9, 10**9, Index(10**9), 2**31 + 0.5], ids=repr)
def test_huge_valid_timeout_waits_for_an_event(kq, timeout):
    kq.control([kevent(1, USER, ADD | CLEAR)], 0)
    t = threading.Timer(0.05, lambda: kq.control([kevent(1, USER, 0, TRIGGER)], 0))
    t.start()
    try:
        got = kq.control(None, 4, timeout)
    finally:
        t.join()
    assert [fields(e) for e in got] == [(1, USER, CLEAR, 0, 0, 0)]


def test_timeout_does_not_return_early(kq):
    t0 = time.monotonic()
    assert kq.control(None, 4, 0.05) == []
    assert time.monotonic() - t0 >= 0.05


# --- rows: changelists ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "changelist", [1, 1.5, object(), kevent(1, USER, ADD), True], ids=["int", "float", "object", "kevent", "bool"]
)
def test_changelist_not_iterable(kq, changelist):
    for n in (0, 4):
        with pytest.raises(TypeError, match=r"^changelist is not iterable$"):
            kq.control(changelist, n, 0)
    assert_usable(kq)


@pytest.mark.parametrize(
    "changelist",
    [
        "abc",
        b"ab",
        [1],
        {1: 2},
        [kevent(1, USER, ADD), None],
        [kevent(1, USER, ADD), kevent(2, TIMER, ADD, 0, LONG_MS), 1],
        (kevent(1, USER, ADD), (kevent(2, USER, ADD),)),
        [kevent(1, USER, ADD), [kevent(2, USER, ADD)]],
    ],
    ids=["str", "bytes", "[int]", "dict", "kevent+None", "two-kevents+int", "nested-tuple", "nested-list"],
)
def test_changelist_with_a_non_kevent_applies_nothing(kq, changelist):
    """CPython converts the whole changelist before kevent(2): a bad item anywhere means no change at all,
    not even the valid ones before it."""
    for n in (0, 4):
        with pytest.raises(TypeError, match=r"^changelist must be an iterable of select\.kevent objects$"):
            kq.control(changelist, n, 0)
    assert knotes(kq) == 0
    for ident, filt in ((1, USER), (2, USER), (2, TIMER)):
        assert [(e.flags, e.data) for e in kq.control([kevent(ident, filt, DELETE)], 1, 0)] == [(ERROR, errno.ENOENT)]
    assert_usable(kq)


def test_changelist_iterator_that_raises_applies_nothing(kq):
    def changes():
        yield kevent(1, USER, ADD)
        yield kevent(2, USER, ADD)
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        kq.control(changes(), 4, 0)
    assert knotes(kq) == 0
    assert_usable(kq)


def test_changelist_iterator_that_yields_a_non_kevent_applies_nothing(kq):
    def changes():
        yield kevent(1, USER, ADD)
        yield "not a kevent"

    with pytest.raises(TypeError, match="iterable of select.kevent"):
        kq.control(changes(), 4, 0)
    assert knotes(kq) == 0
    assert_usable(kq)


def test_changelist_with_len_that_lies(kq):
    class Liar:
        def __len__(self):
            return 10**9

        def __iter__(self):
            return iter([kevent(1, USER, ADD | CLEAR, TRIGGER)] * 3)

    got = kq.control(Liar(), 4, 0)
    assert [fields(e) for e in got] == [(1, USER, CLEAR, 0, 0, 0)]


def test_changelist_iterator_reentering_control(kq):
    """The changelist iterator may call control() on the same kqueue (nothing is locked while it runs)."""

    def changes():
        assert kq.control([kevent(7, USER, ADD | CLEAR)], 0) == []
        yield kevent(7, USER, 0, TRIGGER)

    got = kq.control(changes(), 4, 0)
    assert [fields(e) for e in got] == [(7, USER, CLEAR, 0, 0, 0)]


def test_huge_changelist(kq):
    n = 100_000
    assert kq.control([kevent(i, USER, ADD | CLEAR) for i in range(n)], 0) == []
    assert knotes(kq) == n
    got = kq.control([kevent(i, USER, 0, TRIGGER) for i in range(0, n, 7)], n, 0)
    assert sorted(e.ident for e in got) == list(range(0, n, 7))
    # the 50,001st change fails without room: the 50,000 before it are applied, the 10 after it are not
    with pytest.raises(FileNotFoundError):
        kq.control(
            [kevent(i, USER, DELETE) for i in range(50_000)]
            + [kevent(10**9, USER, DELETE)]
            + [kevent(n + i, USER, ADD) for i in range(10)],
            0,
        )
    assert knotes(kq) == n - 50_000
    assert [(e.flags, e.data) for e in kq.control([kevent(n, USER, DELETE)], 1, 0)] == [(ERROR, errno.ENOENT)]
    assert_usable(kq)


def test_same_kevent_object_many_times(kq):
    ev = kevent(1, USER, ADD | CLEAR, TRIGGER, 0, 3)
    got = kq.control([ev] * 1000, 4, 0)
    assert [fields(e) for e in got] == [(1, USER, CLEAR, 0, 0, 3)]


# --- rows: udata of every kind ----------------------------------------------------------------------------


class MyInt(int):
    pass


UDATA = [
    (0, 0),
    (1, 1),
    (2**63 - 1, 2**63 - 1),
    (2**63, 2**63),
    (2**64 - 1, 2**64 - 1),
    (-1, 2**64 - 1),
    (-(2**63), 2**63),
    (2**64, 0),
    (2**64 + 5, 5),
    (True, 1),
    (False, 0),
    (MyInt(42), 42),
    (signal.SIGTERM, int(signal.SIGTERM)),  # an IntEnum
]


@pytest.mark.parametrize("udata, want", UDATA, ids=[repr(u) for u, _ in UDATA])
def test_udata_round_trips_in_events_and_errors(kq, pipe, udata, want):
    r, w = pipe
    os.write(w, b"z")
    got = kq.control(
        [
            kevent(1, USER, ADD | CLEAR, TRIGGER, 0, udata),
            kevent(2, TIMER, ADD | ONESHOT, 0, 0, udata),
            kevent(r, READ, ADD | ONESHOT, 0, 0, udata),
        ],
        8,
        0.5,
    )
    deadline = time.monotonic() + 2
    while len(got) < 3 and time.monotonic() < deadline:
        got += kq.control(None, 8, 0.1)
    assert sorted((e.ident, e.udata) for e in got) == sorted([(1, want), (2, want), (r, want)])
    assert all(type(e.udata) is int for e in got)
    err = kq.control([kevent(99, USER, DELETE, 0, 0, udata)], 1, 0)
    assert [(e.flags, e.data, e.udata) for e in err] == [(ERROR, errno.ENOENT, want)]
    assert_usable(kq)


def test_udata_can_carry_an_object_id(kq):
    obj = object()
    got = kq.control([kevent(1, USER, ADD | CLEAR, TRIGGER, 0, id(obj))], 4, 0)
    assert got[0].udata == id(obj)


# --- rows: 20,000 fds against the fd limit -----------------------------------------------------------------


@pytest.fixture
def nofile_limit():
    """Raises the soft RLIMIT_NOFILE to (at most) the hard limit, enough for 20,000 fds; restores it."""
    old = resource.getrlimit(resource.RLIMIT_NOFILE)
    soft, hard = old
    base = len(os.listdir("/proc/self/fd"))
    want = 20_000 + base + 64
    new = want if hard == resource.RLIM_INFINITY else min(hard, want)
    if new < 4096:
        pytest.skip(f"hard RLIMIT_NOFILE {hard} is too low")
    resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
    yield new
    resource.setrlimit(resource.RLIMIT_NOFILE, old)


def test_add_20000_fds_up_to_the_fd_limit(nofile_limit):
    """Every free fd slot is used by a pipe end, and every one gets a knote: kqrs needs no extra fd per
    READ/WRITE knote. At the limit, a knote that needs an fd of its own (a timer, a process) fails with
    EMFILE as an EV_ERROR entry, kqueue() fails with EMFILE and leaves nothing behind, and the queue keeps
    working."""
    fds: list[int] = []
    spare: list[int] = []
    dn = os.open(os.devnull, os.O_RDONLY)
    kq = kqrs.kqueue()
    try:
        owned = _kqrs._owned_fd_count()
        spare += [os.dup(dn), os.dup(dn)]  # to free exactly one or two slots later
        try:
            while True:
                r, w = os.pipe()
                fds += [r, w]
        except OSError as e:
            assert e.errno == errno.EMFILE
        try:
            while True:
                spare.append(os.dup(dn))  # the odd slot a pipe could not use
        except OSError as e:
            assert e.errno == errno.EMFILE
        n = len(fds)
        assert n >= min(20_000, nofile_limit - 200), n
        changes = [kevent(fd, READ if i % 2 == 0 else WRITE, ADD, 0, 0, fd) for i, fd in enumerate(fds)]
        assert kq.control(changes, 0) == []  # no room: any failure would raise
        assert knotes(kq) == n
        assert _kqrs._owned_fd_count() == owned
        # the table is full: what needs an fd of its own fails with EMFILE, as an EV_ERROR entry
        got = kq.control([kevent(1, TIMER, ADD, 0, LONG_MS, 5)], 1, 0)
        assert [(e.ident, e.filter, e.flags, e.data, e.udata) for e in got] == [(1, TIMER, ERROR, errno.EMFILE, 5)]
        got = kq.control([kevent(os.getpid(), PROC, ADD, NOTE_EXIT, 0, 6)], 1, 0)
        assert [(e.flags, e.data) for e in got] == [(ERROR, errno.EMFILE)]
        assert knotes(kq) == n
        # kqueue() needs exactly 1 fd: with none free it fails with EMFILE and keeps nothing
        with pytest.raises(OSError) as ei:
            kqrs.kqueue()
        assert ei.value.errno == errno.EMFILE
        assert _kqrs._owned_fd_count() == owned
        # with one free it works; its first timer needs the kqueue's timer source, and fails with EMFILE
        os.close(spare.pop())
        kq2 = kqrs.kqueue()
        assert _kqrs._owned_fd_count() == owned + 1
        with pytest.raises(OSError):
            os.dup(dn)
        got = kq2.control([kevent(1, TIMER, ADD, 0, LONG_MS, 5)], 1, 0)
        assert [(e.ident, e.filter, e.flags, e.data, e.udata) for e in got] == [(1, TIMER, ERROR, errno.EMFILE, 5)]
        assert knotes(kq2) == 0
        kq2.close()
        assert _kqrs._owned_fd_count() == owned
        assert_usable(kq)
        # events: every write end is writable with the whole pipe free, no read end is readable
        got = kq.control(None, n + 16, 0)
        writers = set(fds[1::2])
        assert {e.ident for e in got} == writers and len(got) == len(writers)
        for e in got:
            assert (e.filter, e.flags, e.udata) == (WRITE, 0, e.ident)
            assert e.data == fcntl.fcntl(e.ident, 1032)  # F_GETPIPE_SZ
        # a byte into every 97th pipe: exactly those read ends report 1 byte
        pairs = list(zip(fds[0::2], fds[1::2]))
        written = set()
        for j, (r, w) in enumerate(pairs):
            if j % 97 == 0:
                os.write(w, b"x")
                written.add(r)
        got = [e for e in kq.control(None, n + 16, 0) if e.filter == READ]
        assert {e.ident for e in got} == written and len(got) == len(written)
        assert all((e.flags, e.data, e.udata) == (0, 1, e.ident) for e in got)
    finally:
        kq.close()
        for fd in fds + spare + [dn]:
            os.close(fd)
    with kqrs.kqueue() as q:
        assert_usable(q)


def test_file_knotes_at_the_fd_limit_need_only_the_first_inotify(nofile_limit, tmp_path):
    """A regular file's READ knote is watched through the kqueue's one inotify instance: once that exists,
    more file knotes need no fd even when the fd table is full."""
    files = []
    for i in range(3):
        f = open(tmp_path / f"f{i}", "wb+")
        f.write(b"abc")
        f.flush()
        f.seek(0)
        files.append(f)
    fds: list[int] = []
    kq = kqrs.kqueue()
    try:
        assert kq.control([kevent(files[0], READ, ADD, 0, 0, 0)], 0) == []
        try:
            while True:
                fds.append(os.dup(files[0].fileno()))
        except OSError as e:
            assert e.errno == errno.EMFILE
        assert kq.control([kevent(f, READ, ADD, 0, 0, i) for i, f in enumerate(files)], 0) == []
        got = kq.control(None, 8, 0)
        assert sorted((e.ident, e.data) for e in got) == sorted((f.fileno(), 3) for f in files)
        assert_usable(kq)
    finally:
        for fd in fds:
            os.close(fd)
        kq.close()
        for f in files:
            f.close()


# --- robustness: no Rust panic reaches the interpreter ------------------------------------------------------


def _not_a_panic(e: BaseException) -> None:
    assert type(e).__name__ != "PanicException", repr(e)
    assert "panicked" not in str(e), repr(e)


def test_signal_handler_reentering_control_while_it_waits(kq):
    """A signal handler that calls control() on the same kqueue while the interrupted control() waits:
    both work (the per-thread output buffer is in use by the outer call)."""
    seen = []

    def handler(signum, frame):
        seen.append(kq.control([kevent(5, USER, ADD | CLEAR, TRIGGER, 0, 50)], 0, 0))
        seen.append(kq.control([kevent(6, USER, ADD | CLEAR, TRIGGER, 0, 60)], 1, 0))

    old = signal.signal(signal.SIGALRM, handler)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.05)
        got = kq.control(None, 8, 2)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    assert seen[0] == [] and len(seen[1]) == 1
    # each triggered knote is reported once, by whichever call came first
    assert sorted(fields(e) for e in seen[1] + got) == [(5, USER, CLEAR, 0, 0, 50), (6, USER, CLEAR, 0, 0, 60)]


def test_weird_inputs_raise_python_exceptions_only(kq, pipe):
    class BadIndex:
        def __index__(self):
            raise ZeroDivisionError("index")

    class IndexReturnsFloat:
        def __index__(self):
            return 1.5

    class BadIter:
        def __iter__(self):
            raise KeyError("iter")

    class BadNext:
        def __iter__(self):
            return self

        def __next__(self):
            raise MemoryError("next")

    calls = [
        (lambda: kq.control(None, BadIndex(), 0), ZeroDivisionError),
        (lambda: kq.control(None, IndexReturnsFloat(), 0), TypeError),
        (lambda: kq.control(None, 1, BadIndex()), TypeError),  # any timeout failure is a TypeError
        (lambda: kq.control(BadIter(), 1, 0), (KeyError, TypeError)),  # see the test below
        (lambda: kq.control(BadNext(), 1, 0), MemoryError),
        (lambda: kq.control(None), TypeError),
        (lambda: kq.control(None, 1, 0, 0), TypeError),
        (lambda: kq.control(changelist=None, max_events=1), TypeError),
        (lambda: kevent(1, BadIndex()), ZeroDivisionError),
        (lambda: kevent(1, udata=BadIndex()), TypeError),
        (lambda: kevent(1, 1, 1, 1, 1, 1, 1), TypeError),
        (lambda: kevent(1, bogus=1), TypeError),
        (lambda: kevent(1, 1, ident=1), TypeError),
        (lambda: kevent(**{"\udcff": 1}), (TypeError, UnicodeEncodeError)),
        (lambda: kqrs.kqueue(1), TypeError),
        (lambda: kqrs.kqueue(x=1), TypeError),
        (lambda: kqrs.kqueue.fromfd(BadIndex()), ZeroDivisionError),
        (lambda: setattr(kevent(1), "filter", BadIndex()), ZeroDivisionError),
        (lambda: setattr(kevent(1), "ident", -1), OverflowError),
        (lambda: setattr(kevent(1), "udata", 2**64), OverflowError),
        (lambda: setattr(kevent(1), "data", 2**63), OverflowError),
        (lambda: setattr(kevent(1), "fflags", 2**64), OverflowError),
        (lambda: delattr(kevent(1), "flags"), TypeError),
        (lambda: kevent(1) < None, TypeError),
        (lambda: hash(kevent(1)), TypeError),
        (lambda: kqrs.kevent.__new__(kqrs.kevent), TypeError),
    ]
    for call, exc in calls:
        try:
            call()
        except BaseException as e:  # noqa: BLE001 - any panic would arrive as a BaseException
            _not_a_panic(e)
            assert isinstance(e, exc), (call, e)
        else:
            raise AssertionError(f"{call} did not raise")
    assert_usable(kq)


def test_changelist_iter_exception_propagates(kq):
    class BadIter:
        def __iter__(self):
            raise KeyError("iter")

    with pytest.raises(KeyError):
        kq.control(BadIter(), 1, 0)


def test_attribute_setters_truncate_with_a_warning():
    ev = kevent(1)
    with pytest.warns(RuntimeWarning):
        ev.filter = 40000
    with pytest.warns(RuntimeWarning):
        ev.flags = -1
    with pytest.warns(RuntimeWarning):
        ev.fflags = 2**33
    assert (ev.filter, ev.flags, ev.fflags) == (40000 - 65536, 0xFFFF, 0)


_FUZZ_SNIPPET = r"""
import errno, json, os, random, sys, kqrs
from kqrs import kevent
SEED, N = int(sys.argv[1]), int(sys.argv[2])
rng = random.Random(SEED)
r, w = os.pipe()
a = os.open(os.devnull, os.O_RDONLY)
FDS = [0, 1, 2, r, w, a, 9999, 2**31, 2**32 + r, 2**64 - 1]
IDENTS = FDS + [os.getpid(), 1, 2**31 - 1 + 2**32, 2**63, rng.getrandbits(64)]
FILTERS = [-1, -2, -3, -4, -5, -6, -7, -8, -9, -10, -11, -12, -13, -14, 0, 1, 2, 32767, -32768]
FLAGBITS = [(0x1, .25), (0x2, .15), (0x4, .2), (0x8, .2), (0x10, .2), (0x20, .3), (0x40, .1), (0x80, .15),
            (0x100, .02), (0x200, .02), (0x1000, .05), (0x2000, .05), (0x4000, .05), (0x8000, .05)]
FFLAGS = [0, 1, 2, 3, 4, 8, 0x10, 0x01000000, 0x40000000, 0x80000000, 0xC0000000, 0x00FFFFFF, 0x20000000,
          0xFFFFFFFF, 0x04000000, 0x02000000]
DATA = [0, 1, -1, 5, 2**63 - 1, -(2**63), 10**9, 3]
def ident_for(filt):
    # Fd filters with a large fd number that is not open hit a known engine bug (a huge allocation):
    # kept out of the fuzz (tests/test_bad_input.py has its own test for it).
    idents = [i for i in IDENTS if not (filt in (-1, -2) and 20000 < i <= 2**31 - 1)]
    return rng.choice(idents)
kqs = [kqrs.kqueue(), kqrs.kqueue()]
counts = {"ok": 0, "errors": {}, "events": 0}
for i in range(N):
    kq = rng.choice(kqs)
    changes = []
    for _ in range(rng.randint(0, 6)):
        filt = rng.choice(FILTERS)
        flags = 0
        for b, p in FLAGBITS:
            if rng.random() < p:
                flags |= b
        if rng.random() < 0.5:
            flags |= 0x1
        changes.append(kevent(ident_for(filt), filt, flags, rng.choice(FFLAGS), rng.choice(DATA), rng.getrandbits(64)))
    n = rng.choice([0, 1, 2, 8, 64, 2**31 - 1])
    try:
        got = kq.control(changes, n, 0)
        counts["ok"] += 1
        counts["events"] += len(got)
        for e in got:
            assert isinstance(e, kqrs.kevent)
    except OSError as e:
        counts["errors"][e.errno] = counts["errors"].get(e.errno, 0) + 1
    if i % 500 == 499:
        # a kqueue is replaced now and then: close with everything still registered
        j = rng.randrange(2)
        kqs[j].close()
        kqs[j] = kqrs.kqueue()
    if i % 97 == 0:
        os.write(w, b"x" * rng.randint(1, 100))
    if i % 193 == 0:
        os.read(r, 1 << 16)
PROBE = 0xF00D_F00D_F00D
for kq in kqs:
    kq.control([kevent(PROBE, kqrs.KQ_FILTER_USER, kqrs.KQ_EV_ADD | kqrs.KQ_EV_CLEAR, kqrs.KQ_NOTE_TRIGGER)], 0)
    assert [e.ident for e in kq.control(None, 2**20, 0) if e.ident == PROBE] == [PROBE]
    kq.close()
print(json.dumps(counts))
"""


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_fuzzed_changelists_never_panic_or_crash(seed):
    """Seeded random changes (every filter id, every flag bit, odd idents, fflags and data, any room) in a
    child process: every call returns events or raises OSError; nothing panics or aborts."""
    n = 20_000 if os.environ.get("KQRS_LONG") else 2_000
    p = subprocess.run(
        [sys.executable, "-c", _FUZZ_SNIPPET, str(seed), str(n)], capture_output=True, text=True, timeout=120
    )
    assert p.returncode == 0, p.stderr[-3000:]
    assert "panicked" not in p.stderr and "PanicException" not in p.stderr, p.stderr[-3000:]
    counts = json.loads(p.stdout)
    assert counts["ok"] + sum(counts["errors"].values()) == n
    assert set(int(k) for k in counts["errors"]) <= {
        errno.EINVAL,
        errno.ENOENT,
        errno.EBADF,
        errno.ESRCH,
        errno.EOPNOTSUPP,
        errno.EPERM,
        errno.ELOOP,
        errno.EPIPE,
        errno.ENXIO,
        errno.ENOSYS,  # EVFILT_LIBKQUEUE's NOTE_FILE_POLL_INTERVAL: libkqueue's knob kqrs has no use for
    }, counts


# --- robustness: hostile process-connector datagrams from user space ----------------------------------------

NETLINK_CONNECTOR = 11
CN_IDX_PROC = CN_VAL_PROC = 1
PROC_EVENT_FORK, PROC_EVENT_EXEC, PROC_EVENT_EXIT = 0x1, 0x2, 0x80000000


def _nlmsg(payload: bytes, length: int | None = None, typ: int = 3, pid: int = 0) -> bytes:
    return struct.pack("=IHHII", 16 + len(payload) if length is None else length, typ, 0, 0, pid) + payload


def _cn(payload: bytes, idx: int = CN_IDX_PROC, val: int = CN_VAL_PROC, length: int | None = None) -> bytes:
    return struct.pack("=IIIIHH", idx, val, 0, 0, len(payload) if length is None else length, 0) + payload


def _proc_event(what: int, *fields: int) -> bytes:
    return struct.pack("=IIQ", what, 0, 0) + struct.pack(f"={len(fields)}i", *fields).ljust(24, b"\0")


def _connector_ports() -> dict[int, int]:
    """This process's NETLINK_CONNECTOR sockets: inode -> port id (as tests/test_filter_proc.py finds them)."""
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            link = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(int(link[8:-1]))
    out = {}
    with open("/proc/net/netlink") as f:
        next(f)
        for line in f:
            p = line.split()
            if int(p[1]) == NETLINK_CONNECTOR and int(p[9]) in inodes:
                out[int(p[9])] = int(p[2])
    return out


@pytest.fixture
def watched_child(connector):
    """A blocked child watched with NOTE_EXIT|NOTE_FORK (so the kqueue has its connector socket); yields
    (kq, pid, port of the kqueue's connector socket). Skips only without CAP_NET_ADMIN (tests/conftest.py)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(w)
            os.read(r, 1)
        finally:
            os._exit(7)
    os.close(r)
    kq = kqrs.kqueue()
    before = set(_connector_ports())
    try:
        assert kq.control([kevent(pid, PROC, ADD, NOTE_EXIT | NOTE_FORK, 0, 42)], 0) == []
        (inode,) = set(_connector_ports()) - before
        yield kq, pid, _connector_ports()[inode]
    finally:
        kq.close()
        os.close(w)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass


MALFORMED = {
    "1-byte": b"\x00",  # (an empty datagram cannot be sent: ENODATA)
    "3-bytes": b"\x01\x02\x03",
    "15-bytes": b"\xff" * 15,
    "nlmsg_len-0": _nlmsg(b"", length=0),
    "nlmsg_len-huge": _nlmsg(_cn(_proc_event(PROC_EVENT_FORK, 1, 1, 2, 2)), length=0xFFFFFFFF),
    "nlmsg_len-past-the-end": _nlmsg(_cn(_proc_event(PROC_EVENT_FORK, 1, 1, 2, 2)), length=4096),
    "nlmsg_len-short-then-garbage": _nlmsg(b"", length=16) + b"\xee" * 100,
    "cn-wrong-id": _nlmsg(_cn(_proc_event(PROC_EVENT_FORK, 1, 1, 2, 2), idx=7, val=9)),
    "cn-len-lies": _nlmsg(_cn(_proc_event(PROC_EVENT_EXIT, 1, 1, 0, 0), length=60000)),
    "cn-only": _nlmsg(_cn(b"")),
    "event-truncated-to-what": _nlmsg(_cn(struct.pack("=I", PROC_EVENT_FORK))),
    "event-truncated-header": _nlmsg(_cn(struct.pack("=IIQ", PROC_EVENT_EXIT, 0, 0))),
    "nlmsg-error-type": _nlmsg(_cn(_proc_event(PROC_EVENT_EXIT, 1, 1, 0, 0)), typ=2),
    "nlmsg-overrun-type": _nlmsg(b"", typ=4),
    "many-then-truncated": b"".join(_nlmsg(_cn(_proc_event(PROC_EVENT_FORK, 1, 1, 2, 2))) for _ in range(50))
    + b"\x40\x00",
    "150-KiB": b"\xff" * (150 * 1024),
}


def _quiet(kq, t: float) -> None:
    got = kq.control(None, 16, t)
    assert got == [], [fields(e) for e in got]


@pytest.mark.parametrize("name", list(MALFORMED))
def test_malformed_connector_datagrams_are_ignored_and_counted(watched_child, name):
    kq, pid, port = watched_child
    forged0 = kq._stats()[5]
    with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_CONNECTOR) as s:
        s.bind((0, 0))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
        # the same datagram with our pid, the target's, and 0 (the kernel's) in nlmsg_pid: never trusted
        sent = 0
        payload = MALFORMED[name]
        for fake in (None, pid, 0):
            data = payload
            if fake is not None and len(payload) >= 16:
                data = payload[:12] + struct.pack("=I", fake) + payload[16:]
            s.sendto(data, (port, 0))  # ECONNREFUSED if no socket had that port id
            sent += 1
    _quiet(kq, 0.05)
    assert knotes(kq) == 1
    assert kq._stats()[5] - forged0 == sent
    os.kill(pid, signal.SIGKILL)
    got = kq.control(None, 4, 5)
    assert [(e.ident, e.fflags, e.flags & EOF, e.data, e.udata) for e in got] == [
        (pid, NOTE_EXIT, EOF, signal.SIGKILL, 42)
    ]


def test_connector_flood_from_user_space(watched_child):
    """Datagrams sent to the kqueue's connector socket until its buffer is full (or 20,000): each one is
    counted as ignored, none creates a knote or an event, and the real exit is still reported."""
    kq, pid, port = watched_child
    forged0 = kq._stats()[5]
    fork = _nlmsg(_cn(_proc_event(PROC_EVENT_FORK, pid, pid, 1, 1)))
    exit_ = _nlmsg(_cn(_proc_event(PROC_EVENT_EXIT, pid, pid, 0, 0)))
    sent = 0
    with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_CONNECTOR) as s:
        s.bind((0, 0))
        s.setblocking(False)
        while sent < 20_000:
            try:
                s.sendto(fork if sent % 2 else exit_, (port, 0))
            except BlockingIOError:
                break
            sent += 1
            if sent % 2000 == 0:
                _quiet(kq, 0)  # drains the socket
    deadline = time.monotonic() + 5
    while kq._stats()[5] - forged0 < sent and time.monotonic() < deadline:
        _quiet(kq, 0.01)
    assert kq._stats()[5] - forged0 == sent
    assert knotes(kq) == 1
    os.kill(pid, signal.SIGKILL)
    got = kq.control(None, 4, 5)
    assert [(e.ident, e.fflags, e.data, e.udata) for e in got] == [(pid, NOTE_EXIT, signal.SIGKILL, 42)]
    assert_usable(kq)


# --- robustness: no unwrap/expect/panic in library code -----------------------------------------------------

RUST_SRC = os.path.join(os.path.dirname(__file__), "..", "rust", "src")


def test_library_code_has_no_unwrap_expect_or_panic():
    """issue 8: no `unwrap` on input or on a syscall result in library code (`unwrap_or*` is fine); no
    explicit panic either. Comment lines are ignored."""
    if not os.path.isdir(RUST_SRC):
        pytest.skip("no Rust sources next to the tests")
    bad = []
    for root, _, files in os.walk(RUST_SRC):
        for name in files:
            if not name.endswith(".rs"):
                continue
            path = os.path.join(root, name)
            with open(path) as f:
                for n, line in enumerate(f, 1):
                    code = line.split("//", 1)[0]
                    for needle in (".unwrap()", ".expect(", "panic!(", "unreachable!(", "todo!(", "unimplemented!("):
                        if needle in code:
                            bad.append(f"{os.path.relpath(path, RUST_SRC)}:{n}: {line.strip()}")
    assert bad == []
