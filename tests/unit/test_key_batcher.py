"""KeyBatcher: how direct removal on an object store shares DeleteObjects requests.

A scripted store records each request; the real store behind it in production is S3
(tests/integration/test_direct_s3.py measures requests per manifest against moto)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, cast

import pytest

from regcleaner.concurrency import StopRequested, StopScope
from regcleaner.errors import StorageError
from regcleaner.removers.direct import MAX_KEYS, KeyBatcher
from regcleaner.storage.base import ByteStore


class ScriptedStore:
    """Answers delete_many after ``delay_s``; a key in ``refuse`` stays, with a reason."""

    def __init__(self, delay_s: float = 0.01, refuse: frozenset[str] = frozenset()) -> None:
        self.delay_s = delay_s
        self.refuse = refuse
        self.requests: list[list[str]] = []
        self.fail_with: Exception | None = None
        self.asked = asyncio.Event()

    async def delete_many(
        self, keys: Sequence[str], *, directories: Sequence[str] = ()
    ) -> list[str | None]:
        self.requests.append(list(keys))
        self.asked.set()
        await asyncio.sleep(self.delay_s)
        if self.fail_with is not None:
            raise self.fail_with
        return ["AccessDenied" if key in self.refuse else None for key in keys]


async def with_batcher(
    store: ScriptedStore, body: Callable[[KeyBatcher], Awaitable[Any]], **options: Any
) -> Any:
    batcher = KeyBatcher(cast(ByteStore, store), **options)
    async with asyncio.TaskGroup() as group:
        group.create_task(batcher.run())
        try:
            return await body(batcher)
        finally:
            batcher.close()


async def repository(batcher: KeyBatcher, name: str, waves: int, per_wave: int) -> list[int]:
    """Remove ``waves`` waves one after the other, as the engine does; the request
    number (in the store's log) that carried each wave."""
    with batcher.participant():
        carried = []
        for wave in range(waves):
            keys = [f"{name}/w{wave}/k{i}" for i in range(per_wave)]
            assert await batcher.delete(keys, []) == [None] * per_wave
            carried.append(wave)
        return carried


def test_waves_of_many_repositories_share_requests() -> None:
    store = ScriptedStore()

    async def body(batcher: KeyBatcher) -> None:
        async with asyncio.TaskGroup() as group:
            for n in range(20):
                group.create_task(repository(batcher, f"r{n}", waves=3, per_wave=5))
            await asyncio.sleep(0)
            batcher.no_more_participants()

    # A long idle and hold: only "everyone has keys queued" can release a request.
    asyncio.run(with_batcher(store, body, places=64, idle_s=30, max_hold_s=30))
    assert [len(r) for r in store.requests] == [100, 100, 100]
    for number, keys in enumerate(store.requests):
        assert {k.split("/")[1] for k in keys} == {f"w{number}"}, "waves went in order"


def test_a_wave_waits_for_its_own_request_before_the_next() -> None:
    store = ScriptedStore()

    async def body(batcher: KeyBatcher) -> None:
        batcher.no_more_participants()
        await repository(batcher, "alone", waves=4, per_wave=3)

    asyncio.run(with_batcher(store, body, places=64, idle_s=30, max_hold_s=30))
    assert [[k.split("/")[1] for k in r] for r in store.requests] == [
        ["w0"] * 3, ["w1"] * 3, ["w2"] * 3, ["w3"] * 3
    ]  # fmt: skip


def test_a_lone_repository_is_not_held_longer_than_the_idle_time() -> None:
    store = ScriptedStore()

    async def body(batcher: KeyBatcher) -> float:
        loop = asyncio.get_running_loop()
        started = loop.time()
        await repository(batcher, "lone", waves=1, per_wave=2)
        return loop.time() - started

    # More repositories could still come (no no_more_participants), so the request
    # waits for the idle time, then goes.
    elapsed = asyncio.run(with_batcher(store, body, places=64, idle_s=0.05, max_hold_s=30))
    assert len(store.requests) == 1
    assert elapsed >= 0.05


def test_keys_in_flight_are_waited_for_but_not_past_the_hold() -> None:
    store = ScriptedStore()

    async def body(batcher: KeyBatcher) -> None:
        batcher.no_more_participants()
        with batcher.participant():
            # Inside, but busy elsewhere: its keys never come; the other's go at the hold.
            await repository(batcher, "other", waves=1, per_wave=2)

    asyncio.run(with_batcher(store, body, places=64, idle_s=30, max_hold_s=0.05))
    assert len(store.requests) == 1


def test_all_places_taken_sends_without_waiting_for_more() -> None:
    store = ScriptedStore()

    async def body(batcher: KeyBatcher) -> None:
        async with asyncio.TaskGroup() as group:
            for n in range(4):
                group.create_task(repository(batcher, f"r{n}", waves=2, per_wave=2))

    # Four places, four participants: nobody can join, so no idle wait (it would hang
    # the test for 30 s otherwise).
    asyncio.run(asyncio.wait_for(
        with_batcher(store, body, places=4, idle_s=30, max_hold_s=30), timeout=10
    ))  # fmt: skip
    assert [len(r) for r in store.requests] == [8, 8]


def test_requests_carry_at_most_a_thousand_keys_and_answers_go_to_their_caller() -> None:
    store = ScriptedStore(refuse=frozenset({"big/w0/k1500"}))

    async def body(batcher: KeyBatcher) -> list[str | None]:
        batcher.no_more_participants()
        with batcher.participant():
            return await batcher.delete([f"big/w0/k{i}" for i in range(2500)], [])

    results = asyncio.run(with_batcher(store, body, places=64, idle_s=30, max_hold_s=30))
    assert [len(r) for r in store.requests] == [MAX_KEYS, MAX_KEYS, 500]
    assert [i for i, r in enumerate(results) if r is not None] == [1500]
    assert results[1500] == "AccessDenied"


def test_a_failed_request_fails_every_caller_in_it() -> None:
    store = ScriptedStore()
    store.fail_with = RuntimeError("connection reset")

    async def one(batcher: KeyBatcher, name: str) -> BaseException | None:
        with batcher.participant():
            try:
                await batcher.delete([f"{name}/k"], [])
            except StorageError as exc:  # whatever the store raised, as a storage error
                return exc
        return None

    async def body(batcher: KeyBatcher) -> list[BaseException | None]:
        tasks = [asyncio.create_task(one(batcher, f"r{n}")) for n in range(3)]
        await asyncio.sleep(0)
        batcher.no_more_participants()
        return list(await asyncio.gather(*tasks))

    errors = asyncio.run(with_batcher(store, body, places=64, idle_s=30, max_hold_s=30))
    assert len(store.requests) == 1
    assert [str(e) for e in errors] == ["deleting keys failed: connection reset"] * 3


def test_a_cancelled_participant_does_not_hold_the_others() -> None:
    store = ScriptedStore(delay_s=0.01)

    async def body(batcher: KeyBatcher) -> None:
        victim = asyncio.create_task(repository(batcher, "victim", waves=5, per_wave=1))
        survivor = asyncio.create_task(repository(batcher, "survivor", waves=3, per_wave=1))
        await asyncio.sleep(0)
        batcher.no_more_participants()
        await store.asked.wait()
        victim.cancel()
        with pytest.raises(asyncio.CancelledError):
            await victim
        assert await survivor == [0, 1, 2]

    asyncio.run(asyncio.wait_for(
        with_batcher(store, body, places=64, idle_s=30, max_hold_s=30), timeout=10
    ))  # fmt: skip


def test_keys_of_a_caller_cancelled_before_they_went_are_never_sent() -> None:
    store = ScriptedStore(delay_s=0.05)

    async def body(batcher: KeyBatcher) -> None:
        batcher.no_more_participants()
        first = asyncio.create_task(repository(batcher, "first", waves=1, per_wave=1))
        await store.asked.wait()  # the one slot is taken by first's request
        late = asyncio.create_task(repository(batcher, "late", waves=1, per_wave=1))
        await asyncio.sleep(0)  # late queues its key behind the request in flight
        late.cancel()  # a stop's deadline: late's digests are reported abandoned
        with pytest.raises(asyncio.CancelledError):
            await late
        assert await first == [0]

    asyncio.run(with_batcher(store, body, places=64, in_flight=1, idle_s=30, max_hold_s=30))
    assert store.requests == [["first/w0/k0"]], "an abandoned caller's key was sent"


# -- a stop sends nothing more -----------------------------------------------------------------


def test_keys_queued_behind_a_request_in_flight_are_not_sent_after_a_stop() -> None:
    """One request in flight (the only slot); another caller's keys wait for the slot.
    A stop: the one in flight finishes, the waiting keys never reach the store."""
    store = ScriptedStore(delay_s=0.2)
    scope = StopScope(grace_s=30)

    async def body(batcher: KeyBatcher) -> tuple[list[str | None], BaseException | None]:
        first = asyncio.create_task(batcher.delete(["a/1"], []))
        await store.asked.wait()  # the first request is in flight
        queued = asyncio.create_task(batcher.delete(["b/1", "b/2"], []))
        await asyncio.sleep(0.01)
        scope.request_stop("SIGTERM")
        done = await first
        try:
            await queued
        except StopRequested as exc:
            return done, exc
        return done, None

    done, refused = asyncio.run(
        with_batcher(store, body, places=64, in_flight=1, idle_s=0, stop=scope)
    )
    assert done == [None]
    assert isinstance(refused, StopRequested)
    assert store.requests == [["a/1"]]


def test_keys_held_for_company_are_refused_at_once_at_a_stop() -> None:
    store = ScriptedStore()
    scope = StopScope()

    async def body(batcher: KeyBatcher) -> float:
        with batcher.participant(), batcher.participant():  # another caller is expected
            loop = asyncio.get_running_loop()
            loop.call_later(0.05, scope.request_stop, "SIGTERM")
            started = loop.time()
            with pytest.raises(StopRequested):
                await batcher.delete(["a/1"], [])
            return loop.time() - started

    waited = asyncio.run(with_batcher(store, body, places=64, idle_s=30, max_hold_s=30, stop=scope))
    assert waited < 1  # not the 30 s hold
    assert store.requests == []


def test_nothing_is_queued_after_a_stop() -> None:
    store = ScriptedStore()
    scope = StopScope()
    scope.request_stop("SIGTERM")

    async def body(batcher: KeyBatcher) -> None:
        with pytest.raises(StopRequested):
            await batcher.delete(["a/1"], [])

    asyncio.run(with_batcher(store, body, places=64, stop=scope))
    assert store.requests == []


def test_work_under_way_is_finished_after_a_stop() -> None:
    """The second step of a wave whose first step went (``under_way``) is sent after a
    stop, at once: a stopped run removes whole manifests or none of one."""
    store = ScriptedStore()
    scope = StopScope()

    async def body(batcher: KeyBatcher) -> list[str | None]:
        scope.request_stop("SIGTERM")
        with batcher.participant(), batcher.participant():  # no company would come now
            return await batcher.delete(["a/link"], [], under_way=True)

    got = asyncio.run(with_batcher(store, body, places=64, idle_s=30, max_hold_s=30, stop=scope))
    assert got == [None]
    assert store.requests == [["a/link"]]


def test_a_call_part_of_which_went_is_sent_whole_after_a_stop() -> None:
    """More keys than one request carries: once the first request went, a stop does not
    keep the rest back (that would leave a wave half removed)."""
    store = ScriptedStore(delay_s=0.1)
    scope = StopScope()
    keys = [f"a/k{i}" for i in range(MAX_KEYS + 5)]

    async def body(batcher: KeyBatcher) -> list[str | None]:
        call = asyncio.create_task(batcher.delete(keys, []))
        await store.asked.wait()  # the first 1,000 keys are in flight
        scope.request_stop("SIGTERM")
        return await call

    got = asyncio.run(with_batcher(store, body, places=64, in_flight=1, stop=scope))
    assert got == [None] * len(keys)
    assert [len(r) for r in store.requests] == [MAX_KEYS, 5]
