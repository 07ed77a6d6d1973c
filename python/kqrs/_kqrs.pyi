"""Type stubs for the compiled core of kqrs (hand-written; checked with mypy.stubtest)."""

from collections.abc import Coroutine, Iterable
from selectors import SelectorKey
from types import GenericAlias, TracebackType
from typing import Any, Generic, Protocol, TypeVar, final

from typing_extensions import Self, disjoint_base

__all__ = [
    "kqueue",
    "kevent",
    "_Selector",
    "EventQueue",
    "_has_epoll_pwait2",
    "_epoll_ctl_cycle",
    "_has_wipeonfork",
    "_filter_supported",
    "_proc_support",
    "_owned_fd_count",
    "_heap",
    "_signal_reassert",
    "_signal_hooked",
    "build_info",
    "KQ_FILTER_READ",
    "KQ_FILTER_WRITE",
    "KQ_FILTER_AIO",
    "KQ_FILTER_VNODE",
    "KQ_FILTER_PROC",
    "KQ_FILTER_SIGNAL",
    "KQ_FILTER_TIMER",
    "KQ_FILTER_NETDEV",
    "KQ_FILTER_USER",
    "KQ_FILTER_PROCDESC",
    "KQ_EV_ADD",
    "KQ_EV_DELETE",
    "KQ_EV_ENABLE",
    "KQ_EV_DISABLE",
    "KQ_EV_ONESHOT",
    "KQ_EV_CLEAR",
    "KQ_EV_RECEIPT",
    "KQ_EV_DISPATCH",
    "KQ_EV_SYSFLAGS",
    "KQ_EV_FLAG1",
    "KQ_EV_EOF",
    "KQ_EV_ERROR",
    "KQ_NOTE_LOWAT",
    "KQ_NOTE_DELETE",
    "KQ_NOTE_WRITE",
    "KQ_NOTE_EXTEND",
    "KQ_NOTE_ATTRIB",
    "KQ_NOTE_LINK",
    "KQ_NOTE_RENAME",
    "KQ_NOTE_REVOKE",
    "KQ_NOTE_TRUNCATE",
    "KQ_NOTE_OPEN",
    "KQ_NOTE_CLOSE",
    "KQ_NOTE_CLOSE_WRITE",
    "KQ_NOTE_READ",
    "KQ_NOTE_EXIT",
    "KQ_NOTE_FORK",
    "KQ_NOTE_EXEC",
    "KQ_NOTE_PCTRLMASK",
    "KQ_NOTE_PDATAMASK",
    "KQ_NOTE_TRACK",
    "KQ_NOTE_TRACKERR",
    "KQ_NOTE_CHILD",
    "KQ_NOTE_EXITSTATUS",
    "KQ_NOTE_LINKUP",
    "KQ_NOTE_LINKDOWN",
    "KQ_NOTE_LINKINV",
    "KQ_NOTE_TRIGGER",
    "KQ_NOTE_FFNOP",
    "KQ_NOTE_FFAND",
    "KQ_NOTE_FFOR",
    "KQ_NOTE_FFCOPY",
    "KQ_NOTE_FFCTRLMASK",
    "KQ_NOTE_FFLAGSMASK",
    "KQ_NOTE_SECONDS",
    "KQ_NOTE_USECONDS",
    "KQ_NOTE_NSECONDS",
    "KQ_NOTE_ABSOLUTE",
]

class _HasFileno(Protocol):
    def fileno(self) -> int: ...

_FdLike = int | _HasFileno

@final
class kevent:
    ident: int
    filter: int
    flags: int
    fflags: int
    data: int
    udata: int
    def __new__(
        cls,
        ident: int | _HasFileno,
        filter: int = ...,
        flags: int = ...,
        fflags: int = ...,
        data: int = ...,
        udata: int = ...,
    ) -> Self: ...
    def __lt__(self, other: kevent, /) -> bool: ...
    def __le__(self, other: kevent, /) -> bool: ...
    def __gt__(self, other: kevent, /) -> bool: ...
    def __ge__(self, other: kevent, /) -> bool: ...
    def __eq__(self, other: object, /) -> bool: ...
    def __ne__(self, other: object, /) -> bool: ...
    def __hash__(self) -> int: ...

@final
class kqueue:
    def __init__(self) -> None: ...
    @classmethod
    def fromfd(cls, fd: int) -> kqueue: ...
    @property
    def closed(self) -> bool: ...
    def fileno(self) -> int: ...
    def close(self) -> None: ...
    def control(
        self, changelist: Iterable[kevent] | None, max_events: int, timeout: float | None = None, /
    ) -> list[kevent]: ...
    def __enter__(self) -> Self: ...
    def __exit__(self, *args: type[BaseException] | BaseException | TracebackType | None) -> None: ...
    def _stats(self) -> tuple[int, int, int, int, int, int]: ...

@disjoint_base
class _Selector:
    """The Rust half of :class:`kqrs.KqueueSelector` (a ``selectors`` selector on a kqrs kqueue)."""

    def __new__(cls, *, merge: bool = False) -> Self: ...
    @property
    def _fd_to_key(self) -> dict[int, SelectorKey]: ...
    @property
    def _closed(self) -> bool: ...
    def _fileobj_lookup(self, fileobj: _FdLike) -> int: ...
    def fileno(self) -> int: ...
    def register(self, fileobj: _FdLike, events: int, data: Any = None) -> SelectorKey: ...
    def unregister(self, fileobj: _FdLike) -> SelectorKey: ...
    def modify(self, fileobj: _FdLike, events: int, data: Any = None) -> SelectorKey: ...
    def select(self, timeout: float | None = None) -> list[tuple[SelectorKey, int]]: ...
    def close(self) -> None: ...
    def get_key(self, fileobj: _FdLike) -> SelectorKey: ...
    def __enter__(self) -> Self: ...
    def __exit__(self, *args: object) -> None: ...

_T = TypeVar("_T")

@disjoint_base
class EventQueue(Generic[_T]):
    """A thread-safe FIFO of Python objects whose ``fileno()`` is readable exactly while it holds items."""

    def __new__(cls, maxsize: int = 0) -> Self: ...
    def __class_getitem__(cls, item: Any) -> GenericAlias: ...
    def put(self, item: _T, block: bool = True, timeout: float | None = None) -> None: ...
    def put_nowait(self, item: _T) -> None: ...
    def get(self, block: bool = True, timeout: float | None = None) -> _T: ...
    def get_nowait(self) -> _T: ...
    def get_many(self, max_items: int | None = None, block: bool = True, timeout: float | None = None) -> list[_T]: ...
    def _try_get(self, default: Any) -> Any: ...
    def async_get(self) -> Coroutine[Any, Any, _T]: ...
    def async_put(self, item: _T) -> Coroutine[Any, Any, None]: ...
    @property
    def _loops(self) -> dict[Any, Any]: ...
    def qsize(self) -> int: ...
    def __len__(self) -> int: ...
    def empty(self) -> bool: ...
    def full(self) -> bool: ...
    @property
    def maxsize(self) -> int: ...
    @property
    def closed(self) -> bool: ...
    def fileno(self) -> int: ...
    def _space_fileno(self) -> int: ...
    def close(self) -> None: ...
    def _stats(self) -> tuple[int, int, int]: ...
    def __enter__(self) -> Self: ...
    def __exit__(self, *args: object) -> None: ...

def _has_epoll_pwait2() -> bool: ...
def _epoll_ctl_cycle(epfd: int, fds: list[int], events: int, /) -> None: ...
def _has_wipeonfork() -> bool: ...
def _filter_supported(filter: int) -> bool: ...
def _proc_support() -> tuple[bool, bool, int]: ...
def _owned_fd_count() -> int: ...
def _heap() -> tuple[int, int]: ...
def _signal_reassert(signum: int) -> None: ...
def _signal_hooked(signum: int) -> bool: ...
def build_info() -> dict[str, str | bool]:
    """How this extension was built: version, target, glibc, python_abi, free_threaded, profile,
    debug_assertions, rustc."""

KQ_EV_ADD: int
KQ_EV_CLEAR: int
KQ_EV_DELETE: int
KQ_EV_DISABLE: int
KQ_EV_DISPATCH: int
KQ_EV_ENABLE: int
KQ_EV_EOF: int
KQ_EV_ERROR: int
KQ_EV_FLAG1: int
KQ_EV_ONESHOT: int
KQ_EV_RECEIPT: int
KQ_EV_SYSFLAGS: int
KQ_FILTER_AIO: int
KQ_FILTER_NETDEV: int
KQ_FILTER_PROC: int
KQ_FILTER_PROCDESC: int
KQ_FILTER_READ: int
KQ_FILTER_SIGNAL: int
KQ_FILTER_TIMER: int
KQ_FILTER_USER: int
KQ_FILTER_VNODE: int
KQ_FILTER_WRITE: int
KQ_NOTE_ABSOLUTE: int
KQ_NOTE_ATTRIB: int
KQ_NOTE_CHILD: int
KQ_NOTE_CLOSE: int
KQ_NOTE_CLOSE_WRITE: int
KQ_NOTE_DELETE: int
KQ_NOTE_EXEC: int
KQ_NOTE_EXIT: int
KQ_NOTE_EXITSTATUS: int
KQ_NOTE_EXTEND: int
KQ_NOTE_FFAND: int
KQ_NOTE_FFCOPY: int
KQ_NOTE_FFCTRLMASK: int
KQ_NOTE_FFLAGSMASK: int
KQ_NOTE_FFNOP: int
KQ_NOTE_FFOR: int
KQ_NOTE_FORK: int
KQ_NOTE_LINK: int
KQ_NOTE_LINKDOWN: int
KQ_NOTE_LINKINV: int
KQ_NOTE_LINKUP: int
KQ_NOTE_LOWAT: int
KQ_NOTE_NSECONDS: int
KQ_NOTE_OPEN: int
KQ_NOTE_PCTRLMASK: int
KQ_NOTE_PDATAMASK: int
KQ_NOTE_READ: int
KQ_NOTE_RENAME: int
KQ_NOTE_REVOKE: int
KQ_NOTE_SECONDS: int
KQ_NOTE_TRACK: int
KQ_NOTE_TRACKERR: int
KQ_NOTE_TRIGGER: int
KQ_NOTE_TRUNCATE: int
KQ_NOTE_USECONDS: int
KQ_NOTE_WRITE: int
