"""The Pythonic face of kqrs: ``KQueue``, handles, decoded events and typed errors.

Built on the low-level ``kqrs.kqueue`` / ``kqrs.kevent`` (``select.kqueue``'s interface). A ``KQueue`` hands
out one *handle* per registration; the handle carries the user's ``data`` (any Python object) and knows how
to modify, disable, enable and remove its knote. The kernel only ever sees a small integer ``udata`` that
this module maps back to the handle: no object address goes into the kqueue.
"""

from __future__ import annotations

import enum
import errno as _errno
import itertools
import os
import signal as _signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import TracebackType
from typing import IO, Any, Protocol, TypeVar, Union

from . import _kqrs
from ._kqrs import kevent, kqueue

__all__ = [
    "KQueue",
    "Event",
    "ExitStatus",
    "Filter",
    "Flag",
    "VnodeNote",
    "ProcNote",
    "UserNote",
    "TimerNote",
    "KQueueError",
    "KQueueExistsError",
    "KQueueNotFoundError",
    "KQueuePermissionError",
    "KQueueProcessLookupError",
    "Handle",
    "FdHandle",
    "TimerHandle",
    "UserHandle",
    "ProcessHandle",
    "SignalHandle",
    "FileHandle",
]


# --- enums ------------------------------------------------------------------------------------------------


class Filter(enum.IntEnum):
    """A kqueue filter (the ``filter`` field of a kevent); values are those of ``kqrs.KQ_FILTER_*``."""

    READ = _kqrs.KQ_FILTER_READ
    WRITE = _kqrs.KQ_FILTER_WRITE
    AIO = _kqrs.KQ_FILTER_AIO
    VNODE = _kqrs.KQ_FILTER_VNODE
    PROC = _kqrs.KQ_FILTER_PROC
    SIGNAL = _kqrs.KQ_FILTER_SIGNAL
    TIMER = _kqrs.KQ_FILTER_TIMER
    NETDEV = _kqrs.KQ_FILTER_NETDEV
    USER = _kqrs.KQ_FILTER_USER
    PROCDESC = _kqrs.KQ_FILTER_PROCDESC

    @property
    def supported(self) -> bool:
        """Whether this build and this machine's kernel provide the filter (what ``kqrs doctor`` reports)."""
        return _kqrs._filter_supported(int(self))


class Flag(enum.IntFlag):
    """The ``flags`` field of a kevent (``kqrs.KQ_EV_*``)."""

    ADD = _kqrs.KQ_EV_ADD
    DELETE = _kqrs.KQ_EV_DELETE
    ENABLE = _kqrs.KQ_EV_ENABLE
    DISABLE = _kqrs.KQ_EV_DISABLE
    ONESHOT = _kqrs.KQ_EV_ONESHOT
    CLEAR = _kqrs.KQ_EV_CLEAR
    RECEIPT = _kqrs.KQ_EV_RECEIPT
    DISPATCH = _kqrs.KQ_EV_DISPATCH
    FLAG1 = _kqrs.KQ_EV_FLAG1
    ERROR = _kqrs.KQ_EV_ERROR
    EOF = _kqrs.KQ_EV_EOF


class VnodeNote(enum.IntFlag):
    """EVFILT_VNODE notes: what happened to a file or directory.

    OPEN, CLOSE, CLOSE_WRITE and READ (FreeBSD 11's: someone opened, closed or read it) are opt-in: they
    are never part of the default notes, and a knote that does not ask for them is never woken by them.
    """

    DELETE = _kqrs.KQ_NOTE_DELETE
    WRITE = _kqrs.KQ_NOTE_WRITE
    EXTEND = _kqrs.KQ_NOTE_EXTEND
    ATTRIB = _kqrs.KQ_NOTE_ATTRIB
    LINK = _kqrs.KQ_NOTE_LINK
    RENAME = _kqrs.KQ_NOTE_RENAME
    REVOKE = _kqrs.KQ_NOTE_REVOKE
    TRUNCATE = _kqrs.KQ_NOTE_TRUNCATE
    OPEN = _kqrs.KQ_NOTE_OPEN
    CLOSE = _kqrs.KQ_NOTE_CLOSE
    CLOSE_WRITE = _kqrs.KQ_NOTE_CLOSE_WRITE
    READ = _kqrs.KQ_NOTE_READ


class ProcNote(enum.IntFlag):
    """EVFILT_PROC notes (EVFILT_PROCDESC uses EXIT only)."""

    EXIT = _kqrs.KQ_NOTE_EXIT
    FORK = _kqrs.KQ_NOTE_FORK
    EXEC = _kqrs.KQ_NOTE_EXEC
    TRACK = _kqrs.KQ_NOTE_TRACK
    TRACKERR = _kqrs.KQ_NOTE_TRACKERR
    CHILD = _kqrs.KQ_NOTE_CHILD


class UserNote(enum.IntFlag):
    """EVFILT_USER control bits. The low 24 bits (``FFLAGSMASK``) are the application's own flags."""

    FFNOP = _kqrs.KQ_NOTE_FFNOP
    FFAND = _kqrs.KQ_NOTE_FFAND
    FFOR = _kqrs.KQ_NOTE_FFOR
    FFCOPY = _kqrs.KQ_NOTE_FFCOPY
    TRIGGER = _kqrs.KQ_NOTE_TRIGGER
    FFLAGSMASK = _kqrs.KQ_NOTE_FFLAGSMASK


class TimerNote(enum.IntFlag):
    """EVFILT_TIMER units (the default unit is milliseconds) and NOTE_ABSOLUTE."""

    SECONDS = _kqrs.KQ_NOTE_SECONDS
    USECONDS = _kqrs.KQ_NOTE_USECONDS
    NSECONDS = _kqrs.KQ_NOTE_NSECONDS
    ABSOLUTE = _kqrs.KQ_NOTE_ABSOLUTE


_ALL_VNODE = VnodeNote(0)
for _n in VnodeNote:
    _ALL_VNODE |= _n
del _n
# What a file watch asks for by default: every change, none of the opt-in notes about using the file.
_CHANGES_VNODE = _ALL_VNODE & ~(VnodeNote.OPEN | VnodeNote.CLOSE | VnodeNote.CLOSE_WRITE | VnodeNote.READ)

_NOTES: dict[int, type[enum.IntFlag]] = {
    Filter.VNODE: VnodeNote,
    Filter.PROC: ProcNote,
    Filter.PROCDESC: ProcNote,
    Filter.USER: UserNote,
    Filter.TIMER: TimerNote,
}


# --- errors -----------------------------------------------------------------------------------------------


class KQueueError(OSError):
    """A kqueue operation failed. ``errno`` says why; ``filter`` and ``ident`` say which registration.

    ``filter`` and ``ident`` are None for errors of the queue as a whole (a failed wait). Errors whose errno
    has a builtin ``OSError`` subclass are raised as a class deriving from both, so ``except
    ProcessLookupError`` (ESRCH), ``except FileNotFoundError`` (ENOENT), ``except PermissionError`` (EPERM,
    EACCES) and ``except FileExistsError`` (EEXIST) keep working.
    """

    filter: Filter | int | None
    ident: int | None

    def __init__(
        self,
        errno: int,
        strerror: str | None = None,
        *,
        filter: Filter | int | None = None,
        ident: int | None = None,
    ) -> None:
        super().__init__(errno, strerror if strerror is not None else os.strerror(errno))
        self.filter = filter
        self.ident = ident

    def __str__(self) -> str:
        name = _errno.errorcode.get(self.errno or 0, str(self.errno))
        what = ""
        if self.filter is not None:
            f = self.filter.name if isinstance(self.filter, Filter) else str(self.filter)
            what = f" (filter {f}, ident {self.ident})"
        return f"[Errno {self.errno} {name}] {self.strerror}{what}"

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_error, (type(self), self.errno, self.strerror, self.filter, self.ident))


class KQueueNotFoundError(KQueueError, FileNotFoundError):
    """ENOENT: no such registration (or no such file)."""


class KQueueProcessLookupError(KQueueError, ProcessLookupError):
    """ESRCH: no such process."""


class KQueuePermissionError(KQueueError, PermissionError):
    """EPERM / EACCES: not allowed (e.g. NOTE_FORK/EXEC/TRACK without the process connector's privilege)."""


class KQueueExistsError(KQueueError, FileExistsError):
    """EEXIST: this KQueue already has a handle for that ident and filter."""


_ERROR_CLASSES: dict[int, type[KQueueError]] = {
    _errno.ENOENT: KQueueNotFoundError,
    _errno.ESRCH: KQueueProcessLookupError,
    _errno.EPERM: KQueuePermissionError,
    _errno.EACCES: KQueuePermissionError,
    _errno.EEXIST: KQueueExistsError,
}


def _rebuild_error(
    cls: type[KQueueError], errno: int, strerror: str | None, filter: Filter | int | None, ident: int | None
) -> KQueueError:
    return cls(errno, strerror, filter=filter, ident=ident)


def _error(errno: int, filter: int | None = None, ident: int | None = None) -> KQueueError:
    cls = _ERROR_CLASSES.get(errno, KQueueError)
    f: Filter | int | None = filter
    if filter is not None:
        try:
            f = Filter(filter)
        except ValueError:
            pass
    return cls(errno, None, filter=f, ident=ident)


# --- exit statuses and events -----------------------------------------------------------------------------


def _signum(n: int) -> int:
    """``signal.Signals(n)`` when it has a name, else the plain number (real-time signals)."""
    try:
        return _signal.Signals(n)
    except ValueError:
        return n


@dataclass(frozen=True)
class ExitStatus:
    """A process's wait(2) status, decoded. ``status`` is the raw value (``exit(N)`` gives ``N << 8``)."""

    __slots__ = ("status",)
    status: int

    @property
    def exited(self) -> bool:
        """True if the process called exit() (or returned from main)."""
        return os.WIFEXITED(self.status)

    @property
    def exit_code(self) -> int | None:
        """The exit code when the process exited, else None."""
        return os.WEXITSTATUS(self.status) if os.WIFEXITED(self.status) else None

    @property
    def signal(self) -> int | None:
        """The signal that killed the process (a ``signal.Signals`` when it has a name), else None."""
        return _signum(os.WTERMSIG(self.status)) if os.WIFSIGNALED(self.status) else None

    @property
    def core_dumped(self) -> bool:
        return os.WIFSIGNALED(self.status) and os.WCOREDUMP(self.status)

    @property
    def returncode(self) -> int:
        """As ``subprocess.Popen.returncode``: the exit code, or ``-signal`` (``os.waitstatus_to_exitcode``)."""
        return os.waitstatus_to_exitcode(self.status)

    def __repr__(self) -> str:
        if self.exit_code is not None:
            return f"ExitStatus(exit_code={self.exit_code})"
        sig = self.signal
        name = sig.name if isinstance(sig, _signal.Signals) else str(sig)
        core = ", core_dumped=True" if self.core_dumped else ""
        return f"ExitStatus(signal={name}{core})"


@dataclass(frozen=True)
class Event:
    """One reported event, decoded. Immutable.

    - ``handle``: the handle whose knote fired (for processes followed with ``track=True``, the handle of
      the process the whole tree was registered through; ``ident`` then names the descendant).
    - ``filter`` (:class:`Filter`), ``ident`` (fd, pid, signal number, timer/user id), ``flags``
      (:class:`Flag`; ``EOF``, ``ONESHOT``, ``CLEAR``... as the kernel reported them).
    - ``fflags``: the raw filter flags; ``notes`` decodes them (:class:`VnodeNote`, :class:`ProcNote`,
      :class:`UserNote`, :class:`TimerNote`).
    - ``value``: the kevent's ``data`` field: bytes readable (READ), free space (WRITE), expirations since
      the last report (TIMER), deliveries since the last report (SIGNAL), the wait status (PROC exit),
      the parent's pid (PROC with ``ProcNote.CHILD``), the value of the trigger (USER).
    - ``data``: the Python object attached to the handle.
    - ``exit_status``: for a process exit, the decoded status (also as ``exit_code``, ``signal``,
      ``returncode``); None otherwise.
    """

    __slots__ = ("handle", "filter", "ident", "flags", "fflags", "value", "data", "exit_status")
    handle: Handle
    filter: Filter
    ident: int
    flags: Flag
    fflags: int
    value: int
    data: Any
    exit_status: ExitStatus | None

    @property
    def notes(self) -> int:
        """``fflags`` as the filter's note type (e.g. ``VnodeNote.WRITE | VnodeNote.EXTEND``)."""
        cls = _NOTES.get(self.filter)
        return cls(self.fflags) if cls is not None else self.fflags

    @property
    def eof(self) -> bool:
        """``Flag.EOF`` is set: the peer or writer went away, or the process exited."""
        return bool(self.flags & Flag.EOF)

    @property
    def exit_code(self) -> int | None:
        """A process exit: its exit code, or None if it was killed by a signal. None for other events."""
        return self.exit_status.exit_code if self.exit_status is not None else None

    @property
    def signal(self) -> int | None:
        """The signal of this event: the one that killed the process (process exit), or the one delivered
        (``Filter.SIGNAL``). A ``signal.Signals`` when the number has a name; None otherwise."""
        if self.exit_status is not None:
            return self.exit_status.signal
        if self.filter == Filter.SIGNAL:
            return _signum(self.ident)
        return None

    @property
    def returncode(self) -> int | None:
        """A process exit as ``subprocess.Popen.returncode`` (exit code or ``-signal``); None otherwise."""
        return self.exit_status.returncode if self.exit_status is not None else None

    @property
    def parent_pid(self) -> int | None:
        """For the first event of a tracked child (``ProcNote.CHILD``): its parent's pid."""
        if self.filter == Filter.PROC and self.fflags & ProcNote.CHILD:
            return self.value
        return None

    def __repr__(self) -> str:
        f = self.filter.name if isinstance(self.filter, Filter) else str(self.filter)
        parts = [f"filter={f}", f"ident={self.ident}", f"flags={self.flags!r}"]
        if self.fflags:
            parts.append(f"notes={self.notes!r}")
        parts.append(f"value={self.value}")
        if self.exit_status is not None:
            parts.append(f"exit_status={self.exit_status!r}")
        if self.data is not None:
            parts.append(f"data={self.data!r}")
        return f"Event({', '.join(parts)})"


# --- handles ----------------------------------------------------------------------------------------------


class _HasFileno(Protocol):
    def fileno(self) -> int: ...


FdLike = Union[int, _HasFileno]
PathLike = Union[str, bytes, "os.PathLike[str]", "os.PathLike[bytes]"]
Seconds = Union[float, timedelta]

_UNSET: Any = object()
_H = TypeVar("_H", bound="Handle")
_ACTIVE, _DISABLED, _REMOVED = "active", "disabled", "removed"


def _fd_of(obj: FdLike) -> int:
    if isinstance(obj, int):
        fd = obj
    else:
        fd = obj.fileno()
        if not isinstance(fd, int):
            raise TypeError("fileno() returned a non-integer")
    if fd < 0:
        raise ValueError(f"file descriptor cannot be a negative integer ({fd})")
    return fd


def _identity(fd: int) -> tuple[int, int] | None:
    try:
        st = os.fstat(fd)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def _nanoseconds(interval: Seconds, what: str) -> int:
    if isinstance(interval, timedelta):
        ns = (interval // timedelta(microseconds=1)) * 1000
    elif isinstance(interval, (int, float)) and not isinstance(interval, bool):
        if interval != interval:  # NaN
            raise ValueError(f"{what} must be a number of seconds, got NaN")
        ns = round(interval * 1_000_000_000)
    else:
        raise TypeError(f"{what} must be seconds (float) or a timedelta, not {type(interval).__name__}")
    if ns < 0:
        raise ValueError(f"{what} must not be negative")
    return ns


class Handle:
    """One registration in a :class:`KQueue` (a knote). Created by the KQueue's methods, never directly.

    ``data`` is the caller's object, reported with every event (assignable at any time). ``disable()``
    stops delivery (a pending event is dropped), ``enable()`` re-arms, ``remove()`` deletes the knote
    (idempotent). A handle is also a context manager that removes itself on exit.
    """

    def __init__(self, kq: KQueue, filter: Filter, ident: int, flags: int, fflags: int, kdata: int, data: Any) -> None:
        self._kq = kq
        self.filter = filter
        self.ident = ident
        self.data = data
        self._flags = flags & (Flag.ONESHOT | Flag.CLEAR | Flag.DISPATCH)
        self._fflags = fflags
        self._kdata = kdata
        self._udata = 0
        self._state = _ACTIVE
        self._identity: tuple[int, int] | None = None

    @property
    def kqueue(self) -> KQueue:
        return self._kq

    @property
    def active(self) -> bool:
        """False once the handle was removed (by ``remove()``, a one-shot report, a process exit, or
        closing the KQueue)."""
        return self._state != _REMOVED

    @property
    def enabled(self) -> bool:
        """True while events are delivered (not disabled, not removed; a ``dispatch`` handle disables itself
        after each event)."""
        return self._state == _ACTIVE

    def _kevent(self, flags: int) -> kevent:
        return kevent(self.ident, self.filter, flags | self._flags, self._fflags, self._kdata, self._udata)

    def _change(self, flags: int) -> None:
        if self._state == _REMOVED:
            raise ValueError(f"{self!r} was removed")
        self._kq._control(self._kevent(flags), self)

    def disable(self) -> None:
        """Stop reporting events (a pending one is dropped) until :meth:`enable`."""
        self._change(Flag.DISABLE)
        self._state = _DISABLED

    def enable(self) -> None:
        """Report events again; a condition that arose while disabled is reported now."""
        self._change(Flag.ENABLE)
        self._state = _ACTIVE

    def remove(self) -> None:
        """Delete the knote. Removing twice, or after a one-shot report, is harmless."""
        self._kq._remove(self)

    def _apply_modify(self) -> None:
        # EV_ADD on an existing knote replaces fflags/data/udata (and keeps it disabled if it was)
        flags = Flag.ADD | (Flag.DISABLE if self._state == _DISABLED else 0)
        self._change(flags)

    def _closed(self) -> None:
        """Hook run once the knote is gone (FileHandle closes the fd it opened)."""

    def __enter__(self) -> Handle:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.remove()

    def _describe(self) -> str:
        return f"ident={self.ident}"

    def __repr__(self) -> str:
        extra = f" data={self.data!r}" if self.data is not None else ""
        return f"<{type(self).__name__} {self._describe()} {self._state}{extra}>"


class FdHandle(Handle):
    """A READ or WRITE registration (``KQueue.readable`` / ``KQueue.writable``)."""

    def __init__(
        self, kq: KQueue, filter: Filter, fd: int, source: object, flags: int, low_water: int | None, data: Any
    ) -> None:
        fflags = _kqrs.KQ_NOTE_LOWAT if low_water is not None else 0
        super().__init__(kq, filter, fd, flags, fflags, low_water or 0, data)
        self.source = source

    @property
    def fd(self) -> int:
        return self.ident

    @property
    def low_water(self) -> int | None:
        return self._kdata if self._fflags & _kqrs.KQ_NOTE_LOWAT else None

    def modify(self, *, low_water: int | None = _UNSET, data: Any = _UNSET) -> None:
        """Change the low-water mark (None: any byte) and/or the attached data."""
        if low_water is not _UNSET:
            if low_water is None:
                self._fflags, self._kdata = 0, 0
            else:
                self._fflags, self._kdata = _kqrs.KQ_NOTE_LOWAT, int(low_water)
            self._apply_modify()
        if data is not _UNSET:
            self.data = data

    def _describe(self) -> str:
        return f"{self.filter.name} fd={self.ident}"


class TimerHandle(Handle):
    """A timer (``KQueue.timer`` / ``KQueue.timer_at``). Events report expirations since the last one in
    ``value``."""

    @property
    def interval(self) -> float:
        """The period (or, for ``timer_at``, the deadline as a Unix time) in seconds."""
        return self._kdata / 1e9

    @property
    def repeat(self) -> bool:
        return not self._flags & Flag.ONESHOT

    def modify(self, interval: Seconds | None = None, *, repeat: bool | None = None, data: Any = _UNSET) -> None:
        """Restart the timer with a new period and/or repeat mode (and/or change the attached data)."""
        if self._fflags & TimerNote.ABSOLUTE and interval is not None:
            raise ValueError("modify a timer_at() handle by removing it and adding a new one")
        if interval is not None or repeat is not None:
            if interval is not None:
                self._kdata = _nanoseconds(interval, "interval")
            if repeat is not None and repeat != self.repeat:
                # a knote's ONESHOT flag is fixed when it is added (BSD): delete it and add it anew
                self._flags = (self._flags & ~int(Flag.ONESHOT)) | (0 if repeat else Flag.ONESHOT)
                if self._state == _REMOVED:
                    raise ValueError(f"{self!r} was removed")
                self._kq._readd(self)
            else:
                self._apply_modify()
        if data is not _UNSET:
            self.data = data

    def _describe(self) -> str:
        if self._fflags & TimerNote.ABSOLUTE:
            return f"TIMER at={self._kdata / 1e9:.3f}"
        return f"TIMER interval={self.interval:g}s{'' if self.repeat else ' once'}"


class UserHandle(Handle):
    """A user event (``KQueue.user``): fired by :meth:`trigger`, from any thread."""

    def trigger(self, fflags: int = 0, op: UserNote = UserNote.FFOR) -> None:
        """Fire the event. ``fflags`` (low 24 bits) are combined into the knote's flags with ``op``
        (``FFOR`` (default), ``FFAND``, ``FFCOPY`` or ``FFNOP``). Triggers before a report coalesce."""
        if fflags & ~int(UserNote.FFLAGSMASK) or fflags < 0:
            raise ValueError("fflags must fit in the low 24 bits (UserNote.FFLAGSMASK)")
        if op not in (UserNote.FFNOP, UserNote.FFAND, UserNote.FFOR, UserNote.FFCOPY):
            raise ValueError("op must be UserNote.FFNOP, FFAND, FFOR or FFCOPY")
        if self._state == _REMOVED:
            raise ValueError(f"{self!r} was removed")
        ev = kevent(self.ident, self.filter, self._flags, _kqrs.KQ_NOTE_TRIGGER | op | fflags, 0, self._udata)
        self._kq._control(ev, self)

    def modify(self, *, data: Any = _UNSET) -> None:
        if data is not _UNSET:
            self.data = data

    def _kevent(self, flags: int) -> kevent:
        # never re-send fflags: a plain change (fflags 0 = FFNOP) keeps the accumulated ones
        return kevent(self.ident, self.filter, flags | self._flags, 0, 0, self._udata)

    def _describe(self) -> str:
        return f"USER ident={self.ident}"


class ProcessHandle(Handle):
    """A process (``KQueue.process``). Removed automatically once its exit has been reported."""

    def __init__(
        self,
        kq: KQueue,
        filter: Filter,
        ident: int,
        fflags: int,
        data: Any,
        popen: subprocess.Popen[Any] | None,
        pid: int | None,
    ) -> None:
        super().__init__(kq, filter, ident, Flag.CLEAR, fflags, 0, data)
        self.popen = popen
        self.pid = pid
        #: pids of descendants followed through ``track=True`` that have not exited yet
        self.children: set[int] = set()
        #: True once the process's own exit was reported (the handle lives on while tracked children do)
        self.exited = False

    @property
    def pidfd(self) -> int | None:
        return self.ident if self.filter == Filter.PROCDESC else None

    @property
    def notes(self) -> ProcNote:
        return ProcNote(self._fflags)

    def modify(
        self,
        *,
        exit: bool | None = None,
        fork: bool | None = None,
        exec: bool | None = None,
        track: bool | None = None,
        data: Any = _UNSET,
    ) -> None:
        """Change which notes are watched (None: unchanged) and/or the attached data."""
        want = ProcNote(self._fflags)
        for note, on in ((ProcNote.EXIT, exit), (ProcNote.FORK, fork), (ProcNote.EXEC, exec), (ProcNote.TRACK, track)):
            if on is not None:
                want = (want | note) if on else ProcNote(want & ~int(note))
        if want != self._fflags:
            if self.filter == Filter.PROCDESC and want & ~int(ProcNote.EXIT):
                raise ValueError("a pidfd can only be watched for exit")
            self._fflags = int(want)
            self._apply_modify()
        if data is not _UNSET:
            self.data = data

    def _closed(self) -> None:
        # knotes attached to tracked descendants share our udata; delete them with us
        for pid in list(self.children):
            try:
                self._kq._kq.control([kevent(pid, Filter.PROC, Flag.DELETE)], 0)
            except (OSError, ValueError):
                pass
        self.children.clear()

    def _describe(self) -> str:
        if self.filter == Filter.PROCDESC:
            return f"PROCDESC pidfd={self.ident}"
        return f"PROC pid={self.ident} notes={ProcNote(self._fflags)!r}"


class SignalHandle(Handle):
    """A signal (``KQueue.signal``): ``value`` counts deliveries since the last report."""

    @property
    def signum(self) -> int:
        return _signum(self.ident)

    def modify(self, *, data: Any = _UNSET) -> None:
        if data is not _UNSET:
            self.data = data

    def _describe(self) -> str:
        s = self.signum
        return f"SIGNAL {s.name if isinstance(s, _signal.Signals) else s}"


class FileHandle(Handle):
    """A file or directory (``KQueue.file``). When the KQueue opened the path, the fd is closed on removal."""

    def __init__(
        self, kq: KQueue, fd: int, path: str | bytes | None, owns_fd: bool, flags: int, notes: int, data: Any
    ) -> None:
        super().__init__(kq, Filter.VNODE, fd, flags, notes, 0, data)
        self.path = path
        self.owns_fd = owns_fd

    @property
    def fd(self) -> int:
        return self.ident

    @property
    def notes(self) -> VnodeNote:
        return VnodeNote(self._fflags)

    def modify(self, notes: VnodeNote | int | None = None, *, data: Any = _UNSET) -> None:
        """Change which notes are watched and/or the attached data."""
        if notes is not None:
            if not notes or notes & ~int(_ALL_VNODE):
                raise ValueError(f"notes must be a non-empty combination of VnodeNote, got {notes!r}")
            self._fflags = int(notes)
            self._apply_modify()
        if data is not _UNSET:
            self.data = data

    def _closed(self) -> None:
        if self.owns_fd:
            self.owns_fd = False
            try:
                os.close(self.ident)
            except OSError:
                pass

    def _describe(self) -> str:
        where = f" path={self.path!r}" if self.path is not None else ""
        return f"VNODE fd={self.ident}{where} notes={VnodeNote(self._fflags)!r}"


# --- the queue --------------------------------------------------------------------------------------------


class KQueue:
    """A kqueue with methods that say what they watch.

    ::

        with kqrs.KQueue() as kq:
            kq.readable(sock, data="client")
            kq.timer(0.5)
            for ev in kq.wait(timeout=1.0):
                ...

    Iterating over a KQueue yields events as they come, and stops once the KQueue is closed or holds no
    handle any more (for instance once every watched process has exited). The KQueue's :meth:`fileno` is
    pollable: it reads as readable exactly while an event is pending, so it can sit in another kqueue,
    in ``select``/``poll``, or in an asyncio loop (``loop.add_reader``; see ``kqrs.asyncio``).

    Safe to use from several threads: handles can be added, triggered and removed while another thread
    waits. After ``fork()`` the child's copy reads as closed (kqueues are not inherited).
    """

    def __init__(self) -> None:
        self._kq = kqueue()
        self._lock = threading.RLock()
        self._by_udata: dict[int, Handle] = {}
        self._by_key: dict[tuple[int, int], Handle] = {}
        self._ids = itertools.count(1)
        self._close_callbacks: list[Callable[[], None]] = []

    # -- the queue as a whole

    @property
    def raw(self) -> kqueue:
        """The underlying low-level ``kqrs.kqueue`` (``select.kqueue`` interface)."""
        return self._kq

    @property
    def closed(self) -> bool:
        return self._kq.closed

    def fileno(self) -> int:
        """The kqueue fd: readable exactly while an event is pending."""
        return self._kq.fileno()

    @property
    def handles(self) -> list[Handle]:
        """The handles that are still registered."""
        with self._lock:
            return list(self._by_udata.values())

    def close(self) -> None:
        """Close the queue: every handle is removed (files the KQueue opened are closed); threads blocked in
        :meth:`wait` wake up with ValueError. Closing twice is harmless."""
        with self._lock:
            handles = list(self._by_udata.values())
            self._by_udata.clear()
            self._by_key.clear()
            callbacks, self._close_callbacks = self._close_callbacks, []
        self._kq.close()
        for h in handles:
            h._state = _REMOVED
            h._closed()
        for cb in callbacks:
            cb()

    def _add_close_callback(self, cb: Callable[[], None]) -> None:
        with self._lock:
            if self._kq.closed:
                cb()
            else:
                self._close_callbacks.append(cb)

    def _remove_close_callback(self, cb: Callable[[], None]) -> None:
        with self._lock:
            try:
                self._close_callbacks.remove(cb)
            except ValueError:
                pass

    def __enter__(self) -> KQueue:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        if self.closed:
            return "<KQueue closed>"
        return f"<KQueue fd={self._kq.fileno()} handles={len(self._by_udata)}>"

    def wait(self, timeout: Seconds | None = None, max_events: int = 64) -> list[Event]:
        """Wait up to ``timeout`` seconds (None: until an event) and return up to ``max_events`` events.

        Returns an empty list only once the timeout has passed. Raises ValueError if the KQueue is closed
        (also when it is closed by another thread during the wait), KQueueError if the kernel call fails.
        """
        if max_events < 1:
            raise ValueError(f"max_events must be at least 1, got {max_events}")
        secs = None if timeout is None else _nanoseconds(timeout, "timeout") / 1e9
        deadline = None if secs is None else time.monotonic() + secs
        while True:
            try:
                raw = self._kq.control(None, max_events, secs)
            except OSError as e:
                raise _error(e.errno or _errno.EIO) from None
            events = [ev for ev in map(self._decode, raw) if ev is not None]
            if events or not raw:
                return events
            # everything reported belonged to handles removed meanwhile: wait for the time that is left
            if deadline is not None:
                secs = max(0.0, deadline - time.monotonic())
                if secs == 0.0:
                    return []

    def poll(self, max_events: int = 64) -> list[Event]:
        """The events pending right now, without waiting (``wait(0, max_events)``)."""
        return self.wait(0, max_events)

    def __iter__(self) -> Iterator[Event]:
        """Events as they come, until the KQueue is closed or has no handle left."""
        while True:
            with self._lock:
                if self._kq.closed or not self._by_udata:
                    return
            try:
                events = self.wait()
            except ValueError:
                if self._kq.closed:
                    return
                raise
            yield from events

    # -- registrations

    def readable(
        self,
        fd: FdLike,
        *,
        data: Any = None,
        low_water: int | None = None,
        edge: bool = False,
        oneshot: bool = False,
        dispatch: bool = False,
        enabled: bool = True,
    ) -> FdHandle:
        """Watch ``fd`` (an int or anything with ``fileno()``) for reading.

        Events report the bytes readable in ``value`` (a listening socket: connections waiting; a regular
        file: bytes to its end) and ``Flag.EOF`` when the writer/peer is gone. ``low_water``: report only
        once that many bytes are readable. ``edge``: report each change once (EV_CLEAR) instead of while
        readable; ``oneshot``: report once, then remove; ``dispatch``: disable after each report.
        """
        return self._fd_handle(Filter.READ, fd, data, low_water, edge, oneshot, dispatch, enabled)

    def writable(
        self,
        fd: FdLike,
        *,
        data: Any = None,
        low_water: int | None = None,
        edge: bool = False,
        oneshot: bool = False,
        dispatch: bool = False,
        enabled: bool = True,
    ) -> FdHandle:
        """Watch ``fd`` for writing; events report the free buffer space in ``value``, and ``Flag.EOF`` once
        the reader/peer is gone. Options as :meth:`readable`."""
        return self._fd_handle(Filter.WRITE, fd, data, low_water, edge, oneshot, dispatch, enabled)

    def _fd_handle(
        self,
        filter: Filter,
        source: FdLike,
        data: Any,
        low_water: int | None,
        edge: bool,
        oneshot: bool,
        dispatch: bool,
        enabled: bool,
    ) -> FdHandle:
        fd = _fd_of(source)
        if low_water is not None and low_water < 0:
            raise ValueError("low_water must not be negative")
        flags = _style(edge, oneshot, dispatch)
        h = FdHandle(self, filter, fd, source, flags, low_water, data)
        h._identity = _identity(fd)
        return self._register(h, enabled)

    def timer(self, interval: Seconds, *, repeat: bool = True, data: Any = None, enabled: bool = True) -> TimerHandle:
        """A timer firing every ``interval`` (seconds as a float, or a timedelta; nanosecond precision), or
        once with ``repeat=False`` (then removed). ``value`` of each event = expirations since the last
        report (more than 1 when reports fell behind). An interval of 0 fires at once."""
        ns = _nanoseconds(interval, "interval")
        flags = Flag.CLEAR | (0 if repeat else Flag.ONESHOT)
        h = TimerHandle(self, Filter.TIMER, self._new_ident(), flags, TimerNote.NSECONDS, ns, data)
        return self._register(h, enabled)

    def timer_at(self, when: datetime | float, *, data: Any = None, enabled: bool = True) -> TimerHandle:
        """A one-shot timer firing at the wall-clock time ``when`` (a datetime, naive meaning local time,
        or a Unix time in seconds); a time in the past fires at once."""
        ts = when.timestamp() if isinstance(when, datetime) else float(when)
        ns = max(0, round(ts * 1_000_000_000))
        h = TimerHandle(
            self,
            Filter.TIMER,
            self._new_ident(),
            Flag.CLEAR | Flag.ONESHOT,
            TimerNote.NSECONDS | TimerNote.ABSOLUTE,
            ns,
            data,
        )
        return self._register(h, enabled)

    def user(self, *, data: Any = None, edge: bool = True, enabled: bool = True) -> UserHandle:
        """A user event, fired by ``handle.trigger()`` from any thread. With ``edge`` (default) each
        trigger is reported once; with ``edge=False`` a triggered event stays pending until disabled or
        removed. The event's ``notes`` carry the flags accumulated by the triggers."""
        h = UserHandle(self, Filter.USER, self._new_ident(), Flag.CLEAR if edge else 0, 0, 0, data)
        return self._register(h, enabled)

    def process(
        self,
        target: int | subprocess.Popen[Any] | None = None,
        *,
        pidfd: int | None = None,
        exit: bool = True,
        fork: bool = False,
        exec: bool = False,
        track: bool = False,
        data: Any = None,
    ) -> ProcessHandle:
        """Watch a process: by pid (any process you can see, not only children), by ``subprocess.Popen``,
        or by ``pidfd=`` (``os.pidfd_open``; immune to pid reuse; exit only).

        ``exit``: report its exit (``exit_status`` / ``exit_code`` / ``signal``; ``Flag.EOF``), after which
        the handle is removed. kqrs never reaps: ``waitpid()`` / ``Popen.wait()`` still get the status.
        ``fork`` / ``exec``: report those (``ProcNote.FORK`` / ``EXEC``). ``track``: follow every descendant
        too: each one's first event carries ``ProcNote.CHILD`` and ``parent_pid``, its events come with
        its own pid as ``ident`` and this handle as ``handle``. fork/exec/track need the kernel's process
        connector (root or CAP_NET_ADMIN); without it they fail with KQueuePermissionError or EOPNOTSUPP.
        """
        notes = ProcNote(0)
        for note, on in ((ProcNote.EXIT, exit), (ProcNote.FORK, fork), (ProcNote.EXEC, exec), (ProcNote.TRACK, track)):
            if on:
                notes |= note
        if not notes:
            raise ValueError("nothing to watch: exit, fork, exec and track are all False")
        if (target is None) == (pidfd is None):
            raise TypeError("process() takes a pid or a subprocess.Popen, or pidfd=, exactly one of them")
        if pidfd is not None:
            if notes & ~int(ProcNote.EXIT):
                raise ValueError("a pidfd can only be watched for exit")
            fd = _fd_of(pidfd)
            h = ProcessHandle(self, Filter.PROCDESC, fd, int(notes), data, None, None)
            h._identity = _identity(fd)
            return self._register(h, True)
        popen: subprocess.Popen[Any] | None = None
        if isinstance(target, subprocess.Popen):
            popen = target
            pid = popen.pid
            if popen.returncode is not None:
                # already reaped by Popen: its pid may name another process by now
                raise _error(_errno.ESRCH, Filter.PROC, pid)
        elif isinstance(target, int) and not isinstance(target, bool):
            pid = target
        else:
            raise TypeError(f"process() takes a pid or a subprocess.Popen, not {type(target).__name__}")
        if pid <= 0:
            raise ValueError(f"pid must be positive, got {pid}")
        h = ProcessHandle(self, Filter.PROC, pid, int(notes), data, popen, pid)
        return self._register(h, True)

    def signal(self, signum: int, *, data: Any = None, enabled: bool = True) -> SignalHandle:
        """Count deliveries of signal ``signum`` (``value`` = deliveries since the last report).

        The application's disposition is kept: its Python (or C) handler still runs, and a signal set to
        ``SIG_IGN`` is counted and still ignored. A signal left at ``SIG_DFL`` is counted instead of
        terminating the process while a knote watches it (FreeBSD would terminate; code written for it
        sets ``SIG_IGN`` first), except fault signals (SEGV, BUS, FPE, ILL, TRAP, SYS), which still kill.
        SIGKILL, SIGSTOP and numbers outside 1..64 fail with EINVAL.
        """
        if isinstance(signum, bool) or not isinstance(signum, int):
            raise TypeError(f"signum must be an int, not {type(signum).__name__}")
        h = SignalHandle(self, Filter.SIGNAL, int(signum), Flag.CLEAR, 0, 0, data)
        return self._register(h, enabled)

    def file(
        self,
        target: PathLike | int | IO[Any],
        notes: VnodeNote | int | None = None,
        *,
        data: Any = None,
        edge: bool = True,
        oneshot: bool = False,
        follow_symlinks: bool = True,
        enabled: bool = True,
    ) -> FileHandle:
        """Watch a file or directory for changes: by path (the KQueue opens it, and closes it when the
        handle is removed) or by an open fd / file object (left open).

        ``notes`` (default: every change) selects what is reported: WRITE (contents, or a directory's
        entries), EXTEND (grew), TRUNCATE (shrank), ATTRIB, LINK (link count), RENAME, DELETE (a name
        removed), REVOKE; and, only when asked for, OPEN, CLOSE, CLOSE_WRITE and READ. Changes before a
        report coalesce into one event; with ``edge`` (default) each is reported once.
        """
        if notes is None:
            notes = _CHANGES_VNODE
        if not notes or notes & ~int(_ALL_VNODE):
            raise ValueError(f"notes must be a non-empty combination of VnodeNote, got {notes!r}")
        flags = _style(edge, oneshot, False)
        path: str | bytes | None = None
        if isinstance(target, (str, bytes, os.PathLike)):
            path = os.fspath(target)
            oflags = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | (0 if follow_symlinks else os.O_NOFOLLOW)
            fd, owns = os.open(path, oflags), True
        else:
            fd, owns = _fd_of(target), False
        try:
            h = FileHandle(self, fd, path, owns, flags, int(notes), data)
            h._identity = _identity(fd)
            return self._register(h, enabled)
        except BaseException:
            if owns:
                os.close(fd)
            raise

    # -- internals

    def _new_ident(self) -> int:
        return next(self._ids)

    def _register(self, h: _H, enabled: bool) -> _H:
        key = (int(h.filter), h.ident)
        with self._lock:
            if self._kq.closed:
                raise ValueError("I/O operation on closed KQueue")
            old = self._by_key.get(key)
            if old is not None:
                if h._identity is not None and h._identity != old._identity:
                    # the old fd was closed and its number reused: its knote is gone (or replaced now)
                    self._forget(old)
                else:
                    raise _error(_errno.EEXIST, h.filter, h.ident)
            h._udata = next(self._ids)
            self._by_udata[h._udata] = h
            self._by_key[key] = h
        flags = Flag.ADD | (0 if enabled else Flag.DISABLE)
        try:
            self._control(h._kevent(flags), h)
        except BaseException:
            with self._lock:
                self._by_udata.pop(h._udata, None)
                if self._by_key.get(key) is h:
                    del self._by_key[key]
            h._state = _REMOVED
            raise
        if not enabled:
            h._state = _DISABLED
        return h

    def _readd(self, h: Handle) -> None:
        """Delete ``h``'s knote and add it again with the handle's current flags (same udata)."""
        try:
            self._kq.control([kevent(h.ident, h.filter, Flag.DELETE, 0, 0, h._udata)], 0)
        except OSError as e:
            if e.errno != _errno.ENOENT:
                raise _error(e.errno or _errno.EIO, h.filter, h.ident) from None
        flags = Flag.ADD | (Flag.DISABLE if h._state == _DISABLED else 0)
        try:
            self._control(h._kevent(flags), h)
        except BaseException:
            self._forget(h)
            raise

    def _control(self, ev: kevent, h: Handle) -> None:
        try:
            self._kq.control([ev], 0)
        except OSError as e:
            raise _error(e.errno or _errno.EIO, h.filter, h.ident) from None

    def _forget(self, h: Handle) -> None:
        """Drop ``h`` from the maps (its knote is already gone) and run its close hook. Lock held or not."""
        with self._lock:
            if self._by_udata.get(h._udata) is h:
                del self._by_udata[h._udata]
            key = (int(h.filter), h.ident)
            if self._by_key.get(key) is h:
                del self._by_key[key]
            if h._state == _REMOVED:
                return
            h._state = _REMOVED
        h._closed()

    def _remove(self, h: Handle) -> None:
        if h._state == _REMOVED:
            return
        if not self._kq.closed:
            try:
                self._kq.control([kevent(h.ident, h.filter, Flag.DELETE, 0, 0, h._udata)], 0)
            except OSError as e:
                # ENOENT: already gone (one-shot reported meanwhile, process exited, fd closed); EBADF: fd closed
                if e.errno not in (_errno.ENOENT, _errno.EBADF):
                    raise _error(e.errno or _errno.EIO, h.filter, h.ident) from None
            except ValueError:
                pass  # closed meanwhile
        self._forget(h)

    def _decode(self, k: kevent) -> Event | None:
        with self._lock:
            h = self._by_udata.get(k.udata)
        if h is None:
            return None  # its handle was removed after the kernel queued the event
        try:
            flt = Filter(k.filter)
        except ValueError:  # pragma: no cover - the engine only reports filters it has
            return None
        status = None
        if flt in (Filter.PROC, Filter.PROCDESC) and k.fflags & ProcNote.EXIT:
            status = ExitStatus(k.data)
        ev = Event(h, flt, k.ident, Flag(k.flags), k.fflags, k.data, h.data, status)
        if isinstance(h, ProcessHandle):
            if k.ident != h.ident:
                if k.fflags & ProcNote.CHILD:
                    h.children.add(k.ident)
                if k.flags & Flag.ONESHOT:
                    h.children.discard(k.ident)
            elif k.flags & Flag.ONESHOT:
                h.exited = True
            if h.exited and not h.children:
                self._forget(h)
        elif k.flags & Flag.ONESHOT:
            self._forget(h)
        elif k.flags & Flag.DISPATCH and h._state == _ACTIVE:
            h._state = _DISABLED
        return ev


def _style(edge: bool, oneshot: bool, dispatch: bool) -> int:
    return (Flag.CLEAR if edge else 0) | (Flag.ONESHOT if oneshot else 0) | (Flag.DISPATCH if dispatch else 0)
