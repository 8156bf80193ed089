"""A bounded channel that closes: the producer says "no more" once, and every consumer,
however many, sees the end (``get`` returns None) after draining. No sentinel per
consumer. And what ``clean`` and ``gc`` share around their task groups: the stop
signals, and the one error to report when a group fails."""

from __future__ import annotations

import asyncio
import signal
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Generic, TypeVar

T = TypeVar("T")


class ChannelClosed(Exception):
    """``put`` on a closed channel."""


class Channel(Generic[T]):
    """A bounded FIFO of items; ``close()`` ends every consumer once it is drained."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("a channel holds at least one item")
        self._capacity = capacity
        self._items: deque[T] = deque()
        self._closed = False
        self._changed = asyncio.Condition()

    def __len__(self) -> int:
        return len(self._items)

    @property
    def closed(self) -> bool:
        return self._closed

    async def put(self, item: T) -> None:
        """Wait for room, then add ``item``; raise ChannelClosed if closed."""
        async with self._changed:
            while len(self._items) >= self._capacity and not self._closed:
                await self._changed.wait()
            if self._closed:
                raise ChannelClosed("put on a closed channel")
            self._items.append(item)
            self._changed.notify_all()

    async def close(self) -> None:
        """No more items: consumers finish what is queued, then end."""
        async with self._changed:
            self._closed = True
            self._changed.notify_all()

    async def get(self) -> T | None:
        """The next item, or None once the channel is closed and drained."""
        async with self._changed:
            while not self._items and not self._closed:
                await self._changed.wait()
            if not self._items:
                return None
            item = self._items.popleft()
            self._changed.notify_all()
            return item


@contextmanager
def stop_signals(handler: Callable[[str], None]) -> Iterator[None]:
    """Within the running loop: SIGTERM and SIGINT call ``handler`` with the signal's
    name (where the loop can take signals: the main thread, a platform that has them)."""
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, handler, sig.name)
            installed.append(sig)
        except (NotImplementedError, RuntimeError, ValueError):
            pass  # not the main thread, or no signal support
    try:
        yield
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


def first_error(
    group: BaseExceptionGroup[BaseException],
    preferred: type[BaseException] | tuple[type[BaseException], ...],
    fallback: str,
) -> BaseException:
    """The error to report from a TaskGroup failure: the first ``preferred`` one, else
    the first that is not a cancellation."""
    leaves: list[BaseException] = []

    def walk(error: BaseException) -> None:
        if isinstance(error, BaseExceptionGroup):
            for inner in error.exceptions:
                walk(inner)
        else:
            leaves.append(error)

    walk(group)
    for error in leaves:
        if isinstance(error, preferred):
            return error
    for error in leaves:
        if not isinstance(error, asyncio.CancelledError):
            return error
    return leaves[0] if leaves else RuntimeError(fallback)
