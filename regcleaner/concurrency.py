"""A bounded channel that closes: the producer says "no more" once, and every consumer,
however many, sees the end (``get`` returns None) after draining. No sentinel per
consumer."""

from __future__ import annotations

import asyncio
from collections import deque
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
