"""retry.pause: a backoff wait that a stop ends, whether the stop is the run's scope or
(from a caller not yet moved to it) an asyncio.Event."""

from __future__ import annotations

import asyncio
import time

from regcleaner.concurrency import StopScope
from regcleaner.retry import Backoff, pause


def test_pause_sleeps_the_whole_delay_without_a_stop() -> None:
    async def go() -> tuple[bool, bool]:
        return await pause(0.01, None), await pause(0.01, StopScope())

    assert asyncio.run(go()) == (True, True)


def test_a_scope_stop_ends_the_pause_at_once() -> None:
    async def go() -> tuple[bool, float]:
        scope = StopScope()
        asyncio.get_running_loop().call_later(0.05, scope.request_stop, "SIGTERM")
        started = time.monotonic()
        slept = await pause(30, scope)
        return slept, time.monotonic() - started

    slept, waited = asyncio.run(go())
    assert slept is False
    assert waited < 1


def test_an_event_stop_ends_the_pause_at_once() -> None:
    async def go() -> tuple[bool, float, bool]:
        stopping = asyncio.Event()
        asyncio.get_running_loop().call_later(0.05, stopping.set)
        started = time.monotonic()
        slept = await pause(30, stopping)
        return slept, time.monotonic() - started, await pause(30, stopping)

    slept, waited, after = asyncio.run(go())
    assert slept is False
    assert waited < 1
    assert after is False  # already stopped: no wait at all


def test_backoff_is_full_jitter_under_a_cap_and_never_below_retry_after() -> None:
    backoff = Backoff(base_s=0.2, cap_s=20.0, jitter=lambda: 1.0)
    assert [backoff.delay(n) for n in (1, 2, 3)] == [0.2, 0.4, 0.8]
    assert backoff.delay(20) == 20.0
    assert Backoff(jitter=lambda: 0.0).delay(3, retry_after_s=4.0) == 4.0
