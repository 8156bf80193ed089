"""The one stop scope of clean and gc: a stop ends every wait at once, in-flight work gets
the grace (measured from the stop, entered or not), a second signal or the deadline
abandons it, and the deadline moves."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest

from regcleaner.concurrency import StopRequested, StopScope

T = TypeVar("T")


def run(test: Callable[[], Awaitable[T]]) -> T:
    """Run ``test`` with a bound, so that a wait that never ends fails instead of hanging."""

    async def bounded() -> T:
        async with asyncio.timeout(10):
            return await test()

    return asyncio.run(bounded())


def soon(scope: StopScope, after_s: float, stop: Callable[[], object]) -> None:
    """Call ``stop`` ``after_s`` seconds from now on the running loop."""
    del scope
    asyncio.get_running_loop().call_later(after_s, stop)


def test_a_stop_ends_a_queue_for_a_slot_at_once_and_the_slot_is_not_lost() -> None:
    async def go() -> tuple[float, bool]:
        scope = StopScope(grace_s=30)
        slots = asyncio.Semaphore(1)
        await slots.acquire()  # held by an in-flight request
        soon(scope, 0.05, lambda: scope.request_stop("SIGTERM"))
        started = time.monotonic()
        with pytest.raises(StopRequested):
            async with scope.interruptible():
                await slots.acquire()
        waited = time.monotonic() - started
        slots.release()
        return waited, not slots.locked()

    waited, free = run(go)
    assert waited < 1  # not until the holder is done, nor the grace
    assert free  # the interrupted waiter took no slot


def test_an_interruptible_wait_after_the_stop_ends_before_it_waits() -> None:
    async def go() -> list[str]:
        scope = StopScope()
        scope.request_stop("SIGINT")
        ran: list[str] = []
        with pytest.raises(StopRequested, match="SIGINT"):
            async with scope.interruptible():
                ran.append("body")
        return ran

    assert run(go) == []


def test_sleep_sleeps_until_a_stop_ends_it() -> None:
    async def go() -> tuple[bool, bool, float, bool]:
        scope = StopScope()
        full = await scope.sleep(0.01)
        soon(scope, 0.05, scope.request_stop)
        started = time.monotonic()
        cut = await scope.sleep(30)
        waited = time.monotonic() - started
        after = await scope.sleep(30)  # already stopped: at once
        return full, cut, waited, after

    full, cut, waited, after = run(go)
    assert full is True
    assert cut is False
    assert waited < 1
    assert after is False


def test_in_flight_work_gets_the_grace_then_is_abandoned() -> None:
    async def go() -> tuple[float, bool, bool]:
        scope = StopScope(grace_s=0.2)
        finished = False
        started = time.monotonic()
        async with scope:
            soon(scope, 0.05, lambda: scope.request_stop("SIGTERM"))
            await asyncio.sleep(30)  # an in-flight request that never answers
            finished = True
        return time.monotonic() - started, scope.abandoned, finished

    elapsed, abandoned, finished = run(go)
    assert 0.2 <= elapsed < 1.0  # the stop at 0.05 + 0.2 of grace
    assert abandoned
    assert not finished


def test_work_that_ends_within_the_grace_is_not_abandoned() -> None:
    async def go() -> tuple[bool, bool, str | None]:
        scope = StopScope(grace_s=5)
        async with scope:
            scope.request_stop("SIGTERM")
            await asyncio.sleep(0.05)  # in flight, answered within the grace
        return scope.abandoned, scope.stop_requested, scope.reason

    assert run(go) == (False, True, "SIGTERM")


def test_a_stop_before_the_block_gets_the_grace_from_the_stop() -> None:
    """Not none (engine.py used to abandon at once) and not a full grace from the entry
    (gc.py used to): the grace runs from the stop."""

    async def go() -> float:
        scope = StopScope(grace_s=0.6)
        stopped_at = time.monotonic()
        scope.request_stop("SIGTERM")
        await asyncio.sleep(0.3)  # set-up still running when the stop came
        async with scope:
            await asyncio.sleep(30)
        assert scope.abandoned
        return time.monotonic() - stopped_at

    assert 0.6 <= run(go) < 0.85  # 0.3: no grace at all; 0.9: a grace from the entry


def test_a_second_signal_abandons_now_and_a_fatal_stop_is_not_a_signal() -> None:
    async def go() -> tuple[list[bool], float, bool]:
        scope = StopScope(grace_s=30)
        answers: list[bool] = []
        scope.request_stop("fatal: registry mismatch")  # not a signal
        answers.append(scope.signal("SIGTERM"))  # the first signal
        started = time.monotonic()
        async with scope:
            soon(scope, 0.05, lambda: answers.append(scope.signal("SIGTERM")))
            await asyncio.sleep(30)
        return answers, time.monotonic() - started, scope.abandoned

    answers, elapsed, abandoned = run(go)
    assert answers == [True, False]
    assert elapsed < 1
    assert abandoned


def test_the_reason_is_the_first_one_given() -> None:
    scope = StopScope()
    assert scope.request_stop("SIGTERM") is True
    assert scope.request_stop("SIGINT") is False
    assert scope.reason == "SIGTERM"


def test_the_deadline_moves_both_ways_and_bounds_a_block_without_a_stop() -> None:
    """As anyio's move_on_after: a deadline alone cancels the block, and it can move."""

    async def go() -> tuple[float, bool, bool]:
        scope = StopScope()
        assert math.isinf(scope.deadline)
        started = time.monotonic()
        async with scope:
            scope.deadline = scope.now() + 0.05
            scope.deadline = scope.now() + 0.3  # later after all
            await asyncio.sleep(30)
        return time.monotonic() - started, scope.abandoned, scope.stop_requested

    elapsed, abandoned, stopped = run(go)
    assert 0.3 <= elapsed < 1
    assert abandoned
    assert stopped  # past the deadline nothing new starts either


def test_a_stop_never_moves_the_deadline_later() -> None:
    async def go() -> float:
        scope = StopScope(grace_s=30)
        started = time.monotonic()
        async with scope:
            scope.deadline = scope.now() + 0.1
            scope.request_stop("SIGTERM")
            await asyncio.sleep(30)
        return time.monotonic() - started

    assert run(go) < 1


def test_a_timeout_of_the_work_itself_is_not_taken_for_the_deadline() -> None:
    async def go() -> StopScope:
        scope = StopScope(grace_s=30)

        async def work() -> None:
            async with scope, asyncio.timeout(0.01):
                await asyncio.sleep(30)

        with pytest.raises(TimeoutError):
            await work()
        return scope

    scope = run(go)
    assert not scope.abandoned
    assert not scope.stop_requested


def test_a_wait_inside_the_block_ends_at_the_stop_and_the_block_goes_on() -> None:
    async def go() -> tuple[list[str], bool]:
        scope = StopScope(grace_s=5)
        steps: list[str] = []
        async with scope:
            soon(scope, 0.05, scope.request_stop)
            try:
                async with scope.interruptible():
                    await asyncio.sleep(30)  # a backoff before a retry
            except StopRequested:
                steps.append("retry not sent")
            await asyncio.sleep(0.01)  # the rest of the work, within the grace
            steps.append("finished")
        return steps, scope.abandoned

    assert run(go) == (["retry not sent", "finished"], False)


def test_many_waiters_all_end_at_one_stop() -> None:
    async def go() -> list[str]:
        scope = StopScope()
        gate = asyncio.Event()  # never set
        ended: list[str] = []

        async def waiter(name: str) -> None:
            try:
                async with scope.interruptible():
                    await gate.wait()
            except StopRequested:
                ended.append(name)

        async with asyncio.TaskGroup() as group:
            for n in range(20):
                group.create_task(waiter(f"w{n}"))
            soon(scope, 0.05, scope.request_stop)
        return ended

    assert len(run(go)) == 20


def test_a_repeated_abandon_after_the_deadline_passed_is_harmless() -> None:
    async def go() -> bool:
        scope = StopScope(grace_s=0)
        async with scope:
            scope.signal("SIGTERM")
            loop = asyncio.get_running_loop()
            loop.call_soon(scope.signal, "SIGTERM")  # while the block is expiring
            loop.call_soon(scope.abandon)
            await asyncio.sleep(30)
        return scope.abandoned

    assert run(go)


def test_an_event_set_elsewhere_stops_the_scope_it_follows() -> None:
    """A caller that still signals its stop with an asyncio.Event."""

    async def go() -> tuple[bool, bool, float]:
        scope = StopScope()
        stopping = asyncio.Event()
        async with scope.following(stopping):
            before = scope.stop_requested
            stopping.set()
            at_once = scope.stop_requested  # seen before the watcher runs
            asyncio.get_running_loop().call_later(0.05, stopping.set)
            started = time.monotonic()
            with pytest.raises(StopRequested):
                async with scope.interruptible():
                    await asyncio.sleep(30)
            waited = time.monotonic() - started
        return before, at_once, waited

    before, at_once, waited = run(go)
    assert before is False
    assert at_once is True
    assert waited < 1


def test_following_an_event_that_is_never_set_leaves_nothing_running() -> None:
    async def go() -> int:
        scope = StopScope()
        async with scope.following(asyncio.Event()):
            await asyncio.sleep(0)
        return len(asyncio.all_tasks())

    assert run(go) == 1  # only the test itself


def test_wait_stopped_returns_at_the_stop() -> None:
    async def go() -> bool:
        scope = StopScope()
        soon(scope, 0.05, scope.request_stop)
        await scope.wait_stopped()
        await scope.wait_stopped()  # and at once afterwards
        return scope.stop_requested

    assert run(go)


def test_one_block_at_a_time_and_no_negative_grace() -> None:
    with pytest.raises(ValueError, match="negative"):
        StopScope(grace_s=-1)

    async def go() -> None:
        scope = StopScope()
        async with scope:
            with pytest.raises(RuntimeError, match="one block"):
                async with scope:
                    pass

    run(go)


def test_a_stop_from_inside_the_wait_leaves_no_stray_cancellation() -> None:
    """The task that is waiting requests the stop itself and leaves the block at once:
    no cancellation reaches it later, outside the block."""

    async def go() -> list[str]:
        scope = StopScope()
        steps: list[str] = []
        async with scope.interruptible():
            scope.request_stop("fatal error")
            steps.append("left the block")
        await asyncio.sleep(0.01)  # a stray cancel would land here
        steps.append("not cancelled")
        return steps

    assert run(go) == ["left the block", "not cancelled"]


def test_a_cancellation_from_elsewhere_is_not_taken_for_a_stop() -> None:
    async def go() -> bool:
        scope = StopScope()

        async def waiter() -> None:
            async with scope.interruptible():
                await asyncio.sleep(30)

        task = asyncio.create_task(waiter())
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return scope.stop_requested

    assert run(go) is False
