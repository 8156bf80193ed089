"""Every retry decision of regcleaner, in one place.

- A registry answer to a manifest DELETE maps to an ``Action`` (``classify``): 2xx done,
  404 already gone, 405 stops the run, 401 stops the run (after the client's one token
  refresh), 403 fails the repository, 408/425/429/5xx and no answer at all retry.
- How long to wait (``Backoff``): full jitter, exponential from a base to a cap, never
  shorter than the server's Retry-After.
- A stop interrupts any wait (``pause``, through the run's ``StopScope``): after
  SIGTERM nothing is retried.

S3 requests are retried by botocore's standard mode (throttling and 5xx on a whole
request); the per-key errors of a DeleteObjects answer use ``Backoff`` and ``pause`` too.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

from regcleaner.concurrency import StopScope

RETRYABLE_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
# After this many digests in a row failed with no HTTP answer at all, the registry is
# taken to be down and the run stops instead of failing every remaining digest slowly.
MAX_CONSECUTIVE_TRANSPORT_FAILURES = 25


class Action(Enum):
    """What to do with a registry answer to a DELETE."""

    DONE = "done"
    GONE = "gone"
    RETRY = "retry"
    FAIL = "fail"
    FORBIDDEN = "forbidden"
    UNAUTHORIZED = "unauthorized"
    DISABLED = "disabled"


def classify(status: int) -> Action:
    """Map an HTTP status of a manifest DELETE to what regcleaner does next."""
    if status in (200, 202, 204):
        return Action.DONE
    if status == 404:
        return Action.GONE
    if status == 405:
        return Action.DISABLED
    if status == 401:
        return Action.UNAUTHORIZED
    if status == 403:
        return Action.FORBIDDEN
    if status in RETRYABLE_STATUSES or status >= 500:
        return Action.RETRY
    return Action.FAIL


@dataclass(frozen=True, slots=True)
class Backoff:
    """Full-jitter exponential backoff, never below the server's Retry-After."""

    base_s: float = 0.5
    cap_s: float = 30.0
    jitter: Callable[[], float] = field(default=random.random, compare=False)

    def delay(self, attempt: int, retry_after_s: float | None = None) -> float:
        """Seconds to wait before attempt ``attempt + 1`` (``attempt`` counts from 1)."""
        ceiling = min(self.cap_s, self.base_s * 2.0 ** (attempt - 1))
        delay = ceiling * self.jitter()
        if retry_after_s is not None:
            delay = max(delay, retry_after_s)
        return delay


async def pause(delay_s: float, stop: StopScope | asyncio.Event | None) -> bool:
    """Wait ``delay_s`` seconds; False (as soon as it comes) if a stop ends the wait.
    ``stop`` is the run's scope (or, from a caller not yet moved to it, an Event)."""
    if isinstance(stop, StopScope):
        return await stop.sleep(delay_s)
    if stop is None:
        await asyncio.sleep(delay_s)
        return True
    if stop.is_set():
        return False
    try:
        async with asyncio.timeout(delay_s):
            await stop.wait()
    except TimeoutError:
        return True
    return False
