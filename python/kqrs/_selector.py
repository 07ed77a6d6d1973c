"""``kqrs.KqueueSelector``: ``selectors.KqueueSelector`` with its hot paths in the Rust engine.

register, unregister, modify, get_key and select run in ``_kqrs._Selector`` (no kevent objects, no Python
frame); this class adds what is not hot. ``kqrs.install()`` makes it ``selectors.KqueueSelector`` and
``selectors.DefaultSelector``.
"""

import selectors
from collections.abc import Iterator, Mapping
from typing import Any

from ._kqrs import _Selector


class _SelectorMapping(Mapping[Any, selectors.SelectorKey]):
    """Mapping of file objects to selector keys (CPython's ``selectors._SelectorMapping``)."""

    def __init__(self, selector: "KqueueSelector") -> None:
        self._selector = selector

    def __len__(self) -> int:
        return len(self._selector._fd_to_key)

    def __getitem__(self, fileobj: Any) -> selectors.SelectorKey:
        try:
            fd = self._selector._fileobj_lookup(fileobj)
            return self._selector._fd_to_key[fd]
        except KeyError:
            raise KeyError(f"{fileobj!r} is not registered") from None

    def __iter__(self) -> Iterator[int]:
        return iter(self._selector._fd_to_key)


class KqueueSelector(_Selector, selectors.BaseSelector):
    """Kqueue-based selector on kqrs: ``selectors.KqueueSelector``'s behaviour, Rust's speed."""

    def __new__(cls, *, merge: bool = False) -> "KqueueSelector":
        """``merge=True``: a READ and a WRITE event for one file in one ``select()`` make one entry, as
        from every other selector (``kqrs.asyncio``'s loop uses that); by default each kevent is an entry
        of its own, as from CPython's ``selectors.KqueueSelector``."""
        return super().__new__(cls, merge=merge)

    def get_map(self) -> "Mapping[Any, selectors.SelectorKey] | None":  # type: ignore[override]
        if self._closed:
            return None
        m: _SelectorMapping | None = self.__dict__.get("_map")
        if m is None:
            m = self.__dict__["_map"] = _SelectorMapping(self)
        return m

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{len(self._fd_to_key)} registered"
        return f"<kqrs.KqueueSelector {state}>"
