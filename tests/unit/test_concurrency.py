"""The closable channel: bounded, and one close ends every consumer after draining."""

from __future__ import annotations

import asyncio

import pytest

from regcleaner.concurrency import Channel, ChannelClosed


def test_close_ends_every_consumer_after_the_queued_items() -> None:
    async def go() -> tuple[list[list[int]], int]:
        channel: Channel[int] = Channel(2)
        seen: list[list[int]] = [[], [], []]
        most = 0

        async def consume(mine: list[int]) -> None:
            while (item := await channel.get()) is not None:
                mine.append(item)

        async def produce() -> None:
            nonlocal most
            for item in range(10):
                await channel.put(item)
                most = max(most, len(channel))
            await channel.close()

        async with asyncio.TaskGroup() as group:
            for mine in seen:
                group.create_task(consume(mine))
            group.create_task(produce())
        return seen, most

    seen, most = asyncio.run(go())
    assert sorted(item for mine in seen for item in mine) == list(range(10))
    assert most <= 2


def test_put_after_close_is_refused_and_waiting_putters_are_released() -> None:
    async def go() -> None:
        channel: Channel[int] = Channel(1)
        await channel.put(1)
        blocked = asyncio.create_task(channel.put(2))
        await asyncio.sleep(0)
        assert not blocked.done()
        await channel.close()
        with pytest.raises(ChannelClosed):
            await blocked
        with pytest.raises(ChannelClosed):
            await channel.put(3)
        assert await channel.get() == 1
        assert await channel.get() is None

    asyncio.run(go())


def test_feed_puts_every_item_then_closes_even_when_cancelled() -> None:
    async def scenario() -> tuple[list[int], bool]:
        channel: Channel[int] = Channel(2)
        got: list[int] = []

        async def consume() -> None:
            while (item := await channel.get()) is not None:
                got.append(item)

        async with asyncio.TaskGroup() as group:
            group.create_task(channel.feed(range(5)))
            group.create_task(consume())
        stalled: Channel[int] = Channel(1)
        feeding = asyncio.create_task(stalled.feed(range(3)))  # blocks on the second put
        await asyncio.sleep(0)
        feeding.cancel()
        with pytest.raises(asyncio.CancelledError):
            await feeding
        return got, stalled.closed

    got, closed = asyncio.run(scenario())
    assert got == [0, 1, 2, 3, 4]
    assert closed, "a cancelled feed still closes the channel"
