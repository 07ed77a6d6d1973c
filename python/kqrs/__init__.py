"""kqrs: BSD kqueue for Linux.

``kqrs.kqueue`` and ``kqrs.kevent`` behave like CPython's ``select.kqueue`` / ``select.kevent`` on FreeBSD,
and every ``KQ_*`` constant is here. ``kqrs.install()`` puts them into the ``select`` module, so that
``selectors.KqueueSelector`` (imported afterwards) and asyncio run on kqrs unchanged.
"""

# `import kqrs` imports only the KQ_* constants (pure Python): the extension is loaded on first use of
# kqueue, kevent or anything else, and every module a process loads is copied by each of its fork()s. No
# `from __future__`, no typing at run time (TYPE_CHECKING is spelled out for type checkers; the names it
# imports `as` themselves are those re-exported, since __all__ is built at run time).
from . import _constants
from ._constants import *  # noqa: F403

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from . import _kqrs as _kqrs
    from ._api import (
        Event as Event,
        ExitStatus as ExitStatus,
        FdHandle as FdHandle,
        FileHandle as FileHandle,
        Filter as Filter,
        Flag as Flag,
        Handle as Handle,
        KQueue as KQueue,
        KQueueError as KQueueError,
        KQueueExistsError as KQueueExistsError,
        KQueueNotFoundError as KQueueNotFoundError,
        KQueuePermissionError as KQueuePermissionError,
        KQueueProcessLookupError as KQueueProcessLookupError,
        ProcessHandle as ProcessHandle,
        ProcNote as ProcNote,
        SignalHandle as SignalHandle,
        TimerHandle as TimerHandle,
        TimerNote as TimerNote,
        UserHandle as UserHandle,
        UserNote as UserNote,
        VnodeNote as VnodeNote,
    )
    from ._kqrs import kevent as kevent, kqueue as kqueue
    from ._queue import Empty as Empty, EventQueue as EventQueue, Full as Full
    from ._selector import KqueueSelector as KqueueSelector

# The high-level API and EventQueue are imported on first use: a plain `import kqrs` stays small, which
# keeps fork() of a process that imported it as cheap as without (fork copies every imported module).
# The one list of those names, each with the module that defines it; __all__ is made from it, and a test
# (tests/test_kqueue.py::test_lazy_names_are_the_type_checking_imports) holds the TYPE_CHECKING imports
# above, which type checkers need written out, to it.
_LAZY = {
    "kqueue": "_kqrs",
    "kevent": "_kqrs",
    "KqueueSelector": "_selector",
    "EventQueue": "_queue",
    "Empty": "_queue",
    "Full": "_queue",
    "KQueue": "_api",
    "Event": "_api",
    "ExitStatus": "_api",
    "Filter": "_api",
    "Flag": "_api",
    "VnodeNote": "_api",
    "ProcNote": "_api",
    "UserNote": "_api",
    "TimerNote": "_api",
    "KQueueError": "_api",
    "KQueueExistsError": "_api",
    "KQueueNotFoundError": "_api",
    "KQueuePermissionError": "_api",
    "KQueueProcessLookupError": "_api",
    "Handle": "_api",
    "FdHandle": "_api",
    "TimerHandle": "_api",
    "UserHandle": "_api",
    "ProcessHandle": "_api",
    "SignalHandle": "_api",
    "FileHandle": "_api",
}


def _submodule(mod: str) -> "Any":
    # __import__, not importlib.import_module: the importlib package (and warnings, which it imports) would
    # be two more modules in every process that touches kqrs, copied by each fork().
    import sys

    full = f"{__name__}.{mod}"
    __import__(full)
    return sys.modules[full]


def __getattr__(name: str) -> "Any":
    if name == "_kqrs":  # the extension itself, as an attribute (kqrs._kqrs.X) before anything loaded it
        return _submodule("_kqrs")
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module 'kqrs' has no attribute {name!r}")

    module = _submodule(mod)
    value = getattr(module, name)
    if mod == "_kqrs":  # both at once: the next access to either is a plain global
        globals().update(kqueue=module.kqueue, kevent=module.kevent)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [*_LAZY, "install", "uninstall", "CONSTANTS"]
__version__ = "0.1.0"

#: Every KQ_* name this build exports, with its value.
CONSTANTS: dict[str, int] = {n: getattr(_constants, n) for n in _constants.__all__}
__all__ += sorted(CONSTANTS)


def _hook_signal_module() -> None:
    """Keeps EVFILT_SIGNAL counting when the application calls signal.signal(). The extension calls this
    once, when the first EVFILT_SIGNAL knote is added.

    kqrs counts a watched signal with its own handler placed in front of the application's disposition.
    signal.signal() replaces the OS-level handler; this wrapper calls the original and then lets kqrs put
    its handler back in front of the new disposition (a no-op for signals no knote watches). The Python
    handler, SIG_IGN or SIG_DFL the application set is then what each delivery is handed to.
    """
    import signal as _signal

    from . import _kqrs

    original = _signal.signal
    if getattr(original, "__kqrs_wrapped__", False):
        return

    def signal(signalnum, handler):  # type: ignore[no-untyped-def]  # noqa: ANN001, ANN202
        old = original(signalnum, handler)
        _kqrs._signal_reassert(int(signalnum))
        return old

    signal.__doc__ = original.__doc__
    signal.__wrapped__ = original  # type: ignore[attr-defined]
    signal.__kqrs_wrapped__ = True  # type: ignore[attr-defined]
    _signal.signal = signal


_saved: "dict[str, object] | None" = None
_MISSING = object()


def install() -> None:
    """Make ``select.kqueue``, ``select.kevent`` and the ``KQ_*`` constants those of kqrs, and
    ``selectors.KqueueSelector`` and ``selectors.DefaultSelector`` :class:`kqrs.KqueueSelector`.

    ``selectors`` is imported (or reloaded, if it was imported before) so that it sees kqueue; asyncio's
    default loop then runs on kqrs.
    """
    global _saved
    if _saved is not None:
        return
    import select as _select

    from . import _kqrs

    names = {"kqueue": _kqrs.kqueue, "kevent": _kqrs.kevent, **CONSTANTS}
    _saved = {n: getattr(_select, n, _MISSING) for n in names}
    for n, v in names.items():
        setattr(_select, n, v)
    _reload_selectors()
    import selectors

    from ._selector import KqueueSelector

    setattr(selectors, "KqueueSelector", KqueueSelector)  # noqa: B010
    setattr(selectors, "DefaultSelector", KqueueSelector)  # noqa: B010


def uninstall() -> None:
    """Undo :func:`install`."""
    global _saved
    if _saved is None:
        return
    import select as _select

    for n, v in _saved.items():
        if v is _MISSING:
            delattr(_select, n)
        else:
            setattr(_select, n, v)
    _saved = None
    _reload_selectors()


def _reload_selectors() -> None:
    import sys as _sys

    mod = _sys.modules.get("selectors")
    if mod is not None:
        import importlib

        # reload() re-runs the module in its old namespace: a KqueueSelector defined before would survive
        mod.__dict__.pop("KqueueSelector", None)
        importlib.reload(mod)
