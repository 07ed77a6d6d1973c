"""kqrs for asyncio.

Everything here rides on one fact: a kqueue's fd is pollable (readable exactly while an event is pending).
So these helpers work inside *any* asyncio loop (the default epoll one included) through
``loop.add_reader(kq.fileno(), ...)``, and :func:`new_event_loop` gives a loop whose selector is itself a
kqrs kqueue (:class:`kqrs.KqueueSelector`, whose hot paths run in the Rust engine, without touching the
``select`` module).

- ``await wait_process(pid)``: the decoded exit status of any visible process (not only children, and
  without reaping it), ``await wait_readable(fd)`` / ``await wait_writable(fd)``;
- ``async for ev in events(kq)``: a KQueue's events;
- ``async with watch(path) as w: async for ev in w``: changes to a file or directory;
- ``new_event_loop()``, ``EventLoopPolicy``, ``run(main())`` and ``KqueueSelector``.

The one-shot helpers share one kqueue per event loop, opened by the first waiter and closed with the last
one. Cancelling a waiter removes its knote at once; nothing here starts a thread.
"""

from __future__ import annotations

import asyncio
import collections
import subprocess
import sys
import weakref
from collections.abc import Callable, Coroutine
from types import TracebackType
from typing import IO, Any, TypeVar

from . import _selector
from ._api import (
    Event,
    ExitStatus,
    FdLike,
    Handle,
    KQueue,
    PathLike,
    VnodeNote,
)

__all__ = [
    "wait_process",
    "wait_readable",
    "wait_writable",
    "events",
    "EventStream",
    "watch",
    "FileWatch",
    "KqueueSelector",
    "new_event_loop",
    "EventLoopPolicy",
    "run",
]

_T = TypeVar("_T")


# --- one shared KQueue per loop for the one-shot helpers ---------------------------------------------------


class _Hub:
    """A KQueue registered with one loop; each handle's data is the callback to run with its events."""

    _hubs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Hub] = weakref.WeakKeyDictionary()

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.kq = KQueue()
        self.users = 0
        loop.add_reader(self.kq.fileno(), self._ready)

    @classmethod
    def acquire(cls) -> _Hub:
        loop = asyncio.get_running_loop()
        hub = cls._hubs.get(loop)
        if hub is None or hub.kq.closed:
            hub = cls._hubs[loop] = _Hub(loop)
        hub.users += 1
        return hub

    def release(self) -> None:
        self.users -= 1
        if self.users == 0:
            if self._hubs.get(self.loop) is self:
                del self._hubs[self.loop]
            if not self.kq.closed:
                if not self.loop.is_closed():
                    self.loop.remove_reader(self.kq.fileno())
                self.kq.close()

    def _ready(self) -> None:
        try:
            evs = self.kq.poll(256)
        except ValueError:  # closed (e.g. in a forked child)
            return
        for ev in evs:
            callback: Callable[[Event], None] = ev.data
            callback(ev)


async def _one_event(register: Callable[[KQueue, Callable[[Event], None]], Handle]) -> Event:
    hub = _Hub.acquire()
    try:
        fut: asyncio.Future[Event] = hub.loop.create_future()

        def deliver(ev: Event) -> None:
            if not fut.done():
                fut.set_result(ev)

        handle = register(hub.kq, deliver)
        try:
            return await fut
        finally:
            handle.remove()  # no-op once a one-shot report removed it; removes the knote on cancellation
    finally:
        hub.release()


async def wait_process(target: int | subprocess.Popen[Any] | None = None, *, pidfd: int | None = None) -> ExitStatus:
    """Wait for a process to exit and return its decoded status (``exit_code``, ``signal``,
    ``returncode``). ``target`` is a pid (any process this user can see, children or not) or a
    ``subprocess.Popen``; or pass ``pidfd=``. Nothing is reaped: ``Popen.wait()`` / ``os.waitpid`` still
    collect the child afterwards. Raises ``ProcessLookupError`` (a KQueueError) if there is no such process.
    """

    def register(kq: KQueue, deliver: Callable[[Event], None]) -> Handle:
        return kq.process(target, pidfd=pidfd, data=deliver)

    ev = await _one_event(register)
    assert ev.exit_status is not None
    return ev.exit_status


async def wait_readable(fd: FdLike) -> Event:
    """Wait until ``fd`` is readable; the event's ``value`` is the number of bytes readable (connections
    waiting, for a listening socket) and ``eof`` tells whether the writer/peer is gone.

    One waiter per fd per loop: a second concurrent waiter on the same fd gets a KQueueExistsError.
    """
    return await _one_event(lambda kq, deliver: kq.readable(fd, oneshot=True, data=deliver))


async def wait_writable(fd: FdLike) -> Event:
    """Wait until ``fd`` is writable; ``value`` is the free buffer space, ``eof`` tells whether the
    reader/peer is gone."""
    return await _one_event(lambda kq, deliver: kq.writable(fd, oneshot=True, data=deliver))


# --- readiness of a KQueue's fd ----------------------------------------------------------------------------


async def _readable(kq: KQueue) -> None:
    """Wait until ``kq`` has an event pending, or is closed."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[None] = loop.create_future()
    fd = kq.fileno()

    def done() -> None:
        if not fut.done():
            fut.set_result(None)

    def closed() -> None:
        # may run in another thread (whoever closed the KQueue)
        try:
            loop.call_soon_threadsafe(done)
        except RuntimeError:  # the loop is closed
            pass

    loop.add_reader(fd, done)
    kq._add_close_callback(closed)
    try:
        await fut
    finally:
        kq._remove_close_callback(closed)
        loop.remove_reader(fd)


class EventStream:
    """``async for ev in events(kq)``: a KQueue's events, as they come. Ends when the KQueue is closed or
    holds no handle any more. Cancelling the task that iterates leaves nothing registered with the loop."""

    def __init__(self, kq: KQueue, max_events: int = 64) -> None:
        self._kq = kq
        self._max = max_events
        self._pending: collections.deque[Event] = collections.deque()

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> Event:
        while True:
            if self._pending:
                return self._pending.popleft()
            if self._kq.closed or not self._kq.handles:
                raise StopAsyncIteration
            try:
                self._pending.extend(self._kq.poll(self._max))
            except ValueError:
                raise StopAsyncIteration from None
            if not self._pending:
                await _readable(self._kq)


def events(kq: KQueue, *, max_events: int = 64) -> EventStream:
    """An async iterator over ``kq``'s events (see :class:`EventStream`)."""
    return EventStream(kq, max_events)


# --- file watching ----------------------------------------------------------------------------------------


class FileWatch:
    """Changes to one file or directory, as an async iterator of :class:`~kqrs.Event` (``ev.notes`` is a
    :class:`~kqrs.VnodeNote`). Use it as an async context manager: leaving it (or :meth:`aclose`) removes
    the knote and closes the fd it opened. The watch starts when it is created, so changes made right after
    ``watch()`` returns are seen."""

    def __init__(self, target: PathLike | int | IO[Any], notes: VnodeNote | int | None = None) -> None:
        self._hub = _Hub.acquire()
        self._queue: collections.deque[Event] = collections.deque()
        self._waiter: asyncio.Future[None] | None = None
        try:
            self.handle = self._hub.kq.file(target, notes, data=self._deliver)
        except BaseException:
            self._hub.release()
            raise
        self._closed = False

    def _deliver(self, ev: Event) -> None:
        self._queue.append(ev)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    @property
    def closed(self) -> bool:
        return self._closed

    def __aiter__(self) -> FileWatch:
        return self

    async def __anext__(self) -> Event:
        while not self._queue:
            if self._closed or not self.handle.active:
                raise StopAsyncIteration
            self._waiter = self._hub.loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._queue.popleft()

    async def aclose(self) -> None:
        self.close()

    def close(self) -> None:
        """Remove the knote (closing the fd the watch opened); pending iteration ends."""
        if self._closed:
            return
        self._closed = True
        try:
            self.handle.remove()
        finally:
            self._hub.release()
            if self._waiter is not None and not self._waiter.done():
                self._waiter.set_result(None)

    async def __aenter__(self) -> FileWatch:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def watch(target: PathLike | int | IO[Any], notes: VnodeNote | int | None = None) -> FileWatch:
    """Watch a file or directory (by path, fd or file object) from a coroutine: see :class:`FileWatch`."""
    return FileWatch(target, notes)


# --- a selector and event loop on kqrs ---------------------------------------------------------------------


class KqueueSelector(_selector.KqueueSelector):
    """:class:`kqrs.KqueueSelector` whose ``select()`` gives one ``(key, events)`` entry per ready file (a
    READ and a WRITE event for one fd are merged), as the selectors asyncio usually runs on do."""

    def __new__(cls, *, merge: bool = True) -> KqueueSelector:
        return super().__new__(cls, merge=merge)  # type: ignore[return-value]


def new_event_loop() -> asyncio.AbstractEventLoop:
    """A new ``asyncio.SelectorEventLoop`` whose selector is a kqrs :class:`KqueueSelector`."""
    return asyncio.SelectorEventLoop(KqueueSelector())


class EventLoopPolicy(asyncio.DefaultEventLoopPolicy):
    """The default policy, with loops made by :func:`new_event_loop`:
    ``asyncio.set_event_loop_policy(kqrs.asyncio.EventLoopPolicy())``."""

    def new_event_loop(self) -> asyncio.AbstractEventLoop:
        return new_event_loop()


def run(main: Coroutine[Any, Any, _T], *, debug: bool | None = None) -> _T:
    """``asyncio.run(main)`` on a kqrs loop (:func:`new_event_loop`)."""
    if sys.version_info >= (3, 11):
        with asyncio.Runner(debug=debug, loop_factory=new_event_loop) as runner:
            return runner.run(main)
    loop = new_event_loop()  # pragma: no cover - Python < 3.11
    try:
        asyncio.set_event_loop(loop)
        if debug is not None:
            loop.set_debug(debug)
        return loop.run_until_complete(main)
    finally:
        try:
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            asyncio.set_event_loop(None)
            loop.close()
