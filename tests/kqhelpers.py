"""Helpers the test files share: import what a file needs, ``from kqhelpers import ADD, USER, apply``.

The short names of the KQ_* constants the tests write kevents with: filters and EV_* flags by their bare
name (READ, ADD, ...); every note as NOTE_* (NOTE_READ and NOTE_WRITE would otherwise be the filters), and
EVFILT_USER's and EVFILT_TIMER's notes and NOTE_LOWAT by their bare name too, as the tests spell them.
"""

from __future__ import annotations

import os

import pytest

import kqrs

# filters
READ = kqrs.KQ_FILTER_READ
WRITE = kqrs.KQ_FILTER_WRITE
AIO = kqrs.KQ_FILTER_AIO
VNODE = kqrs.KQ_FILTER_VNODE
PROC = kqrs.KQ_FILTER_PROC
SIGNAL = kqrs.KQ_FILTER_SIGNAL
TIMER = kqrs.KQ_FILTER_TIMER
NETDEV = kqrs.KQ_FILTER_NETDEV
USER = kqrs.KQ_FILTER_USER
PROCDESC = kqrs.KQ_FILTER_PROCDESC

# flags
ADD = kqrs.KQ_EV_ADD
DELETE = kqrs.KQ_EV_DELETE
ENABLE = kqrs.KQ_EV_ENABLE
DISABLE = kqrs.KQ_EV_DISABLE
ONESHOT = kqrs.KQ_EV_ONESHOT
CLEAR = kqrs.KQ_EV_CLEAR
RECEIPT = kqrs.KQ_EV_RECEIPT
DISPATCH = kqrs.KQ_EV_DISPATCH
SYSFLAGS = kqrs.KQ_EV_SYSFLAGS
FLAG1 = kqrs.KQ_EV_FLAG1
EOF = kqrs.KQ_EV_EOF
ERROR = kqrs.KQ_EV_ERROR

# notes: EVFILT_VNODE
NOTE_DELETE = kqrs.KQ_NOTE_DELETE
NOTE_WRITE = kqrs.KQ_NOTE_WRITE
NOTE_EXTEND = kqrs.KQ_NOTE_EXTEND
NOTE_ATTRIB = kqrs.KQ_NOTE_ATTRIB
NOTE_LINK = kqrs.KQ_NOTE_LINK
NOTE_RENAME = kqrs.KQ_NOTE_RENAME
NOTE_REVOKE = kqrs.KQ_NOTE_REVOKE
NOTE_TRUNCATE = kqrs.KQ_NOTE_TRUNCATE
NOTE_OPEN = kqrs.KQ_NOTE_OPEN
NOTE_CLOSE = kqrs.KQ_NOTE_CLOSE
NOTE_CLOSE_WRITE = kqrs.KQ_NOTE_CLOSE_WRITE
NOTE_READ = kqrs.KQ_NOTE_READ
# notes: EVFILT_PROC
NOTE_EXIT = kqrs.KQ_NOTE_EXIT
NOTE_FORK = kqrs.KQ_NOTE_FORK
NOTE_EXEC = kqrs.KQ_NOTE_EXEC
NOTE_TRACK = kqrs.KQ_NOTE_TRACK
NOTE_TRACKERR = kqrs.KQ_NOTE_TRACKERR
NOTE_CHILD = kqrs.KQ_NOTE_CHILD
NOTE_EXITSTATUS = kqrs.KQ_NOTE_EXITSTATUS
NOTE_PCTRLMASK = kqrs.KQ_NOTE_PCTRLMASK
NOTE_PDATAMASK = kqrs.KQ_NOTE_PDATAMASK
# notes: EVFILT_USER
NOTE_TRIGGER = TRIGGER = kqrs.KQ_NOTE_TRIGGER
NOTE_FFNOP = FFNOP = kqrs.KQ_NOTE_FFNOP
NOTE_FFAND = FFAND = kqrs.KQ_NOTE_FFAND
NOTE_FFOR = FFOR = kqrs.KQ_NOTE_FFOR
NOTE_FFCOPY = FFCOPY = kqrs.KQ_NOTE_FFCOPY
NOTE_FFCTRLMASK = FFCTRLMASK = kqrs.KQ_NOTE_FFCTRLMASK
NOTE_FFLAGSMASK = FFLAGSMASK = kqrs.KQ_NOTE_FFLAGSMASK
# notes: EVFILT_TIMER
NOTE_SECONDS = SECONDS = kqrs.KQ_NOTE_SECONDS
NOTE_USECONDS = USECONDS = kqrs.KQ_NOTE_USECONDS
NOTE_NSECONDS = NSECONDS = kqrs.KQ_NOTE_NSECONDS
NOTE_ABSOLUTE = ABSOLUTE = kqrs.KQ_NOTE_ABSOLUTE
# notes: EVFILT_READ / EVFILT_WRITE
NOTE_LOWAT = LOWAT = kqrs.KQ_NOTE_LOWAT


def apply(kq, *changes):
    """Applies `changes` to `kq`, which must answer none of them (no error)."""
    assert kq.control(list(changes), 0) == []


def errno_of(kq, change):
    """The errno of the EV_ERROR entry `change` is answered with."""
    [ev] = kq.control([change], 1, 0)
    assert ev.flags & ERROR
    return ev.data


def errno_of_add(kq, change):
    """The errno of a change: both as the EV_ERROR entry (room) and as the raised OSError (no room)."""
    ent = kq.control([change], 4, 0)
    assert len(ent) == 1, ent
    assert ent[0].flags == ERROR
    assert (ent[0].ident, ent[0].filter) == (change.ident, change.filter)
    with pytest.raises(OSError) as ei:
        kq.control([change], 0)
    assert ei.value.errno == ent[0].data
    return ent[0].data


def open_fds() -> set[int]:
    """This process's open fds (not counting the one listdir used to list them)."""
    fds = set()
    for n in os.listdir("/proc/self/fd"):
        try:
            os.fstat(int(n))
        except OSError:
            continue
        fds.add(int(n))
    return fds
