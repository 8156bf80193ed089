"""A bounded channel that closes: the producer says "no more" once, and every consumer,
however many, sees the end (``get`` returns None) after draining. No sentinel per
consumer. And what ``clean`` and ``gc`` share around their task groups: the one stop
scope (``StopScope``: grace, deadline, waits that end at a stop), the stop signals, and
the one error to report when a group fails."""

from __future__ import annotations

import asyncio
import math
import signal
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from contextlib import asynccontextmanager, contextmanager
from types import TracebackType
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

    async def feed(self, items: Iterable[T]) -> None:
        """Put every item in turn, then close: also when a put fails or the feeding task
        is cancelled, so that consumers always end."""
        try:
            for item in items:
                await self.put(item)
        finally:
            await self.close()

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


class StopRequested(Exception):
    """Raised out of ``StopScope.interruptible()``: the wait ended because of a stop."""


class StopScope:
    """One run's stop, shared by everything the run waits on: ``clean`` and ``gc`` alike.

    Modelled on trio's ``CancelScope`` (a movable deadline; the scope catches its own
    cancellation and says so) and anyio's ``move_on_after``, in two steps:

    1. ``request_stop(why)``: nothing new starts. ``stop_requested`` is true at once,
       every wait entered through ``interruptible()`` or ``sleep()`` (a queue for a
       slot, a rate limiter, a backoff) ends now, and the deadline moves to the stop's
       time + ``grace_s`` (never later than it already is). The grace is measured from
       the stop, whether or not the bounded block had been entered yet.
    2. At the deadline, the work inside ``async with scope:`` is cancelled: in-flight
       requests are abandoned. The block ends without an error and ``abandoned`` is
       true (trio's ``cancelled_caught``).

    ``signal(name)`` is the SIGTERM/SIGINT handler's half: the first signal requests the
    stop, a second moves the deadline to now. A stop for another cause (a fatal error)
    is not a signal, so the first signal after it still gets the grace.
    """

    def __init__(self, grace_s: float = 0.0) -> None:
        if grace_s < 0:
            raise ValueError("a grace period cannot be negative")
        self.grace_s = grace_s
        self.reason: str | None = None
        """Why the stop was requested (the first reason given), or None."""
        self.abandoned = False
        """True once the deadline cancelled the bounded block."""
        self.cut_short = False
        """True once ``abandon`` was called (a second signal): no grace was waited out."""
        self._stop_requested = False
        self._followed: asyncio.Event | None = None
        self._signalled = False
        self._deadline = math.inf
        self._block: asyncio.Timeout | None = None
        self._waits: set[_InterruptibleWait] = set()
        self._stopped_event: asyncio.Event | None = None

    # -- state ------------------------------------------------------------------------

    @staticmethod
    def now() -> float:
        """The clock deadlines are measured on: the running loop's, else monotonic time
        (which is the default loop's clock too)."""
        try:
            return asyncio.get_running_loop().time()
        except RuntimeError:
            return time.monotonic()

    @property
    def stop_requested(self) -> bool:
        """True once a stop was requested (or the deadline passed): start nothing new.
        Check it right before starting anything, after every wait."""
        if self._stop_requested:
            return True
        if self._followed is not None and self._followed.is_set():
            self.request_stop()
            return True
        return False

    @property
    def deadline(self) -> float:
        """When the bounded block is cancelled, on ``now()``'s clock; ``math.inf``: never."""
        return self._deadline

    @deadline.setter
    def deadline(self, when: float) -> None:
        """Move the deadline, earlier or later (as trio's ``CancelScope.deadline``)."""
        self._deadline = when
        if self._block is not None and not self._block.expired():
            self._block.reschedule(None if math.isinf(when) else when)

    @property
    def signalled(self) -> bool:
        """True once ``signal`` was called."""
        return self._signalled

    async def wait_stopped(self) -> None:
        """Return once a stop is requested."""
        if self.stop_requested:
            return
        if self._stopped_event is None:
            self._stopped_event = asyncio.Event()
        await self._stopped_event.wait()

    # -- stopping ---------------------------------------------------------------------

    def request_stop(self, why: str | None = None) -> bool:
        """Start nothing new; end every interruptible wait; in-flight work has until
        now + ``grace_s``. True for the first request, False if already stopping."""
        if why is not None and self.reason is None:
            self.reason = why
        if self._stop_requested:
            return False
        self._stop_requested = True
        self.deadline = min(self._deadline, self.now() + self.grace_s)
        waits, self._waits = self._waits, set()
        for wait in waits:
            wait.interrupt()  # that wait ends with StopRequested
        if self._stopped_event is not None:
            self._stopped_event.set()
        return True

    def abandon(self, why: str | None = None) -> None:
        """Stop, and cancel in-flight work now instead of after the grace."""
        self.request_stop(why)
        self.cut_short = True
        self.deadline = min(self._deadline, self.now())

    def signal(self, name: str) -> bool:
        """A stop signal arrived: True for the first (the stop with its grace), False
        for a repeated one (in-flight work is abandoned now)."""
        if self._signalled:
            self.abandon(name)
            return False
        self._signalled = True
        self.request_stop(name)
        return True

    # -- the bounded block ------------------------------------------------------------

    async def __aenter__(self) -> StopScope:
        if self._block is not None:
            raise RuntimeError("a stop scope bounds one block at a time")
        self._block = asyncio.timeout_at(None if math.isinf(self._deadline) else self._deadline)
        await self._block.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool:
        block, self._block = self._block, None
        assert block is not None
        try:
            await block.__aexit__(exc_type, exc, traceback)
        except TimeoutError:
            if not block.expired():
                raise  # a timeout of the work's own, not the deadline
            self.abandoned = True
            self.request_stop()  # past the deadline nothing new starts either
            return True
        return False

    # -- waits that end at a stop -----------------------------------------------------

    def interruptible(self) -> _InterruptibleWait:
        """A wait that a stop ends: ``StopRequested`` comes out of the block, at once if
        the stop came first. For waits only (a slot, a rate limiter, a backoff), never
        around a request whose outcome matters: a stop does not abandon in-flight work."""
        return _InterruptibleWait(self)

    async def sleep(self, delay_s: float) -> bool:
        """Sleep ``delay_s`` seconds; False (as soon as it comes) if a stop ends it."""
        try:
            async with self.interruptible():
                await asyncio.sleep(delay_s)
        except StopRequested:
            return False
        return True

    @asynccontextmanager
    async def following(self, event: asyncio.Event) -> AsyncIterator[None]:
        """While inside, setting ``event`` requests the stop (for a caller that still
        signals its stop with an Event): ``stop_requested`` sees it at once, and a
        watcher ends the interruptible waits."""
        self._followed = event

        async def watch() -> None:
            await event.wait()
            self.request_stop()

        watcher = asyncio.get_running_loop().create_task(watch())
        try:
            yield
        finally:
            if event.is_set():
                self.request_stop()  # set at the very end, before the watcher ran
            self._followed = None
            watcher.cancel()
            await asyncio.wait([watcher])


class _InterruptibleWait:
    """``StopScope.interruptible()``: the task inside is cancelled by a stop, and that
    cancellation (only that one: ``Task.uncancel`` counts them) leaves the block as
    ``StopRequested``. Lighter than an ``asyncio.timeout`` (a tenth of its cost): it is on
    the path of every DELETE."""

    __slots__ = ("_cancelled", "_cancelling", "_handle", "_inside", "_scope", "_task")

    def __init__(self, scope: StopScope) -> None:
        self._scope = scope
        self._task: asyncio.Task[object] | None = None
        self._cancelling = 0
        self._inside = False
        self._cancelled = False
        self._handle: asyncio.Handle | None = None

    async def __aenter__(self) -> None:
        scope = self._scope
        if scope.stop_requested:
            raise StopRequested(scope.reason or "stopped")
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("an interruptible wait needs a task")
        self._task = task
        self._cancelling = task.cancelling()
        self._inside = True
        scope._waits.add(self)

    def interrupt(self) -> None:
        """End the wait: cancel its task from the loop (never from within the task,
        whose next await could be past the block)."""
        if self._inside and self._handle is None:
            self._handle = asyncio.get_running_loop().call_soon(self._cancel)

    def _cancel(self) -> None:
        if self._inside and self._task is not None:
            self._cancelled = True
            self._task.cancel()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._inside = False
        self._scope._waits.discard(self)
        if self._handle is not None:
            self._handle.cancel()
        if not self._cancelled:
            return
        assert self._task is not None
        if self._task.uncancel() <= self._cancelling and exc_type is asyncio.CancelledError:
            raise StopRequested(self._scope.reason or "stopped") from None
