"""``kqrs.EventQueue``: a multi-producer multi-consumer FIFO of Python objects that is also an fd.

The queue is the Rust class ``kqrs._kqrs.EventQueue`` (put/get, blocking with the GIL released and one
waiter woken per item, ``fileno()``, ``close()``, see its docstrings and docs/api.md). This module holds
what its ``async_get()`` / ``async_put()`` methods run: coroutines that wait on the queue's fds through the
running loop's ``add_reader`` (any loop: the default epoll one or kqrs's own).
"""

from __future__ import annotations

import collections
import sys
from queue import Empty, Full
from typing import TYPE_CHECKING, Any, TypeVar

from ._kqrs import EventQueue

if TYPE_CHECKING:
    import asyncio

__all__ = ["EventQueue", "Empty", "Full"]

_T = TypeVar("_T")
_NOTHING: Any = object()


class _LoopWaiters:
    """The coroutines of one event loop waiting on one queue: for an item (a reader on ``fileno()``) or for
    room (a reader on ``_space_fileno()``). Only ever touched from the loop's own thread.

    Readers are level-triggered: while items remain and getters wait, the callback runs again on the next
    loop iteration, so a woken getter that was cancelled before it took its item costs nobody an item.
    A reader is removed one iteration after its last waiter left (not at once: a consumer that awaits
    again right away keeps it, and no epoll_ctl is spent per item).
    """

    __slots__ = ("q", "loop", "getters", "putters", "items_fd", "space_fd", "unwatch_pending")

    def __init__(self, q: EventQueue[Any], loop: asyncio.AbstractEventLoop) -> None:
        self.q = q
        self.loop = loop
        self.getters: collections.deque[asyncio.Future[None]] = collections.deque()
        self.putters: collections.deque[asyncio.Future[None]] = collections.deque()
        self.items_fd = -1
        self.space_fd = -1
        self.unwatch_pending = False

    def wait_items(self) -> asyncio.Future[None]:
        fut = self.loop.create_future()
        self.getters.append(fut)
        if self.items_fd < 0:
            fd = self.q.fileno()
            self.loop.add_reader(fd, self._on_items)
            self.items_fd = fd
        return fut

    def wait_space(self) -> asyncio.Future[None]:
        fut = self.loop.create_future()
        self.putters.append(fut)
        if self.space_fd < 0:
            fd = self.q._space_fileno()
            self.loop.add_reader(fd, self._on_space)
            self.space_fd = fd
        return fut

    @staticmethod
    def _wake(waiters: collections.deque[asyncio.Future[None]], n: int) -> None:
        while n > 0 and waiters:
            fut = waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                n -= 1

    def _on_items(self) -> None:
        q = self.q
        self._wake(self.getters, len(self.getters) if q.closed else q.qsize())
        if not self.getters:
            self._schedule_unwatch()

    def _on_space(self) -> None:
        q = self.q
        room = len(self.putters) if q.closed or q.maxsize <= 0 else q.maxsize - q.qsize()
        self._wake(self.putters, room)
        if not self.putters:
            self._schedule_unwatch()

    def leave(self, fut: asyncio.Future[None]) -> None:
        """A waiter gives up (cancelled)."""
        for waiters in (self.getters, self.putters):
            try:
                waiters.remove(fut)
            except ValueError:
                continue
            if not waiters:
                self._schedule_unwatch()
            return

    def _schedule_unwatch(self) -> None:
        if not self.unwatch_pending and not self.loop.is_closed():
            self.unwatch_pending = True
            self.loop.call_soon(self._unwatch)

    def _unwatch(self) -> None:
        self.unwatch_pending = False
        if not self.getters and self.items_fd >= 0:
            self.loop.remove_reader(self.items_fd)
            self.items_fd = -1
        if not self.putters and self.space_fd >= 0:
            self.loop.remove_reader(self.space_fd)
            self.space_fd = -1
        if self.items_fd < 0 and self.space_fd < 0:
            loops = self.q._loops
            if loops.get(self.loop) is self:
                del loops[self.loop]


def _waiters(q: EventQueue[Any]) -> _LoopWaiters:
    asyncio = sys.modules["asyncio"]  # a coroutine is running: asyncio is imported
    loop = asyncio.get_running_loop()
    loops = q._loops
    w: _LoopWaiters | None = loops.get(loop)
    if w is None:
        for other in [lp for lp in loops if lp.is_closed()]:
            del loops[other]
        w = loops[loop] = _LoopWaiters(q, loop)
    return w


async def _async_get(q: EventQueue[_T]) -> _T:
    """``EventQueue.async_get()``."""
    item: _T = q._try_get(_NOTHING)
    if item is not _NOTHING:
        return item
    w = _waiters(q)
    while True:
        fut = w.wait_items()
        try:
            await fut
        except BaseException:
            w.leave(fut)
            raise
        item = q._try_get(_NOTHING)
        if item is not _NOTHING:
            return item


async def _async_put(q: EventQueue[_T], item: _T) -> None:
    """``EventQueue.async_put(item)``."""
    try:
        q.put_nowait(item)
        return
    except Full:
        pass
    w = _waiters(q)
    while True:
        fut = w.wait_space()
        try:
            await fut
        except BaseException:
            w.leave(fut)
            raise
        try:
            q.put_nowait(item)
            return
        except Full:
            pass
