"""``kqrs.EventQueue``: a multi-producer multi-consumer queue whose non-empty state is a kqueue event."""

from __future__ import annotations

import collections
import threading
import time
from typing import Any

from ._kqrs import KQ_EV_ADD, KQ_EV_CLEAR, KQ_FILTER_USER, KQ_NOTE_TRIGGER, kevent, kqueue

_IDENT = 1


class Empty(Exception):
    """Raised by :meth:`EventQueue.get_nowait` (and by :meth:`EventQueue.get` on timeout)."""


class EventQueue:
    """A thread-safe FIFO of Python objects, ``put`` / ``get`` / ``get_nowait`` / ``close`` / ``len``.

    While it holds items, its :meth:`fileno` (a kqueue fd) is readable, so one thread can wait on sockets,
    timers, processes and queued items in a single ``control()`` call: register
    ``kevent(q.fileno(), KQ_FILTER_READ)`` in your kqueue. Each item is delivered to exactly one ``get``,
    whatever the number of consumer threads.
    """

    def __init__(self) -> None:
        self._items: collections.deque[Any] = collections.deque()
        self._lock = threading.Lock()
        self._closed = False
        self._kq = kqueue()
        # Level-triggered USER knote: triggered while the queue is non-empty, cleared when it empties.
        self._kq.control([kevent(_IDENT, KQ_FILTER_USER, KQ_EV_ADD)], 0)
        self._trigger = [kevent(_IDENT, KQ_FILTER_USER, 0, KQ_NOTE_TRIGGER)]
        self._untrigger = [kevent(_IDENT, KQ_FILTER_USER, KQ_EV_CLEAR)]

    def fileno(self) -> int:
        """A kqueue fd, readable exactly while the queue holds items."""
        return self._kq.fileno()

    def put(self, item: Any) -> None:
        with self._lock:
            if self._closed:
                raise ValueError("put() on a closed EventQueue")
            self._items.append(item)
            if len(self._items) == 1:
                self._kq.control(self._trigger, 0)

    def _pop(self) -> tuple[bool, Any]:
        with self._lock:
            if not self._items:
                if self._closed:
                    raise ValueError("get() on a closed EventQueue")
                return False, None
            item = self._items.popleft()
            if not self._items:
                self._kq.control(self._untrigger, 0)
            return True, item

    def get_nowait(self) -> Any:
        ok, item = self._pop()
        if not ok:
            raise Empty
        return item

    def get(self, timeout: float | None = None) -> Any:
        """The oldest item, waiting up to ``timeout`` seconds (None: forever) for one; raises Empty."""
        deadline = None if timeout is None else time.monotonic() + max(timeout, 0.0)
        while True:
            ok, item = self._pop()
            if ok:
                return item
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise Empty
            try:
                self._kq.control(None, 1, left)
            except ValueError:
                # closed while we waited
                raise ValueError("get() on a closed EventQueue") from None

    def close(self) -> None:
        """Closes the queue: waiting and later ``get``/``put`` calls raise ValueError."""
        with self._lock:
            self._closed = True
            self._items.clear()
        self._kq.close()

    @property
    def closed(self) -> bool:
        return self._closed

    def __len__(self) -> int:
        return len(self._items)

    def __enter__(self) -> EventQueue:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
