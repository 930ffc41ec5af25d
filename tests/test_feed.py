"""The feed between a producer and its edge: merging, the end, and backpressure."""

from __future__ import annotations

import asyncio

import pytest

from responsa.feed import Feed

pytestmark = pytest.mark.anyio


def events(n: int, start: int = 0) -> list[dict]:
    return [{"type": "e", "sequence_number": i} for i in range(start, start + n)]


async def test_batches_are_merged_and_the_end_is_seen_after_them() -> None:
    feed = Feed()
    await feed.put(events(2))
    await feed.put(events(1, 2))
    feed.close()
    assert [e["sequence_number"] for e in await feed.get(1) or []] == [0, 1, 2]
    assert await feed.get(1) is None
    assert await feed.get(1) is None


async def test_a_silent_producer_gives_an_empty_batch() -> None:
    assert await Feed().get(0.01) == []


async def test_a_lagging_consumer_holds_the_producer() -> None:
    feed = Feed(limit=4)
    await feed.put(events(4))
    blocked = asyncio.ensure_future(feed.put(events(1, 4)))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert not blocked.done()  # four events wait: the fifth batch waits for the consumer
    assert len(await feed.get(1) or []) == 4
    await asyncio.wait_for(blocked, 1)
    assert [e["sequence_number"] for e in await feed.get(1) or []] == [4]


async def test_a_consumer_that_leaves_releases_the_producer_and_drops_the_rest() -> None:
    feed = Feed(limit=2)
    await feed.put(events(2))
    blocked = asyncio.ensure_future(feed.put(events(3, 2)))
    await asyncio.sleep(0)
    assert not blocked.done()
    feed.abandon()
    await asyncio.wait_for(blocked, 1)
    await feed.put(events(5, 5))  # nobody reads any more: never waits
    feed.close()


async def test_abandon_cancels_the_producer() -> None:
    feed = Feed()
    feed.producer = asyncio.ensure_future(asyncio.sleep(3600))
    feed.abandon()
    with pytest.raises(asyncio.CancelledError):
        await feed.producer


async def test_the_idle_wait_counts_from_each_get() -> None:
    """One timer per feed, re-armed when it fires early: a consumer fed at 0.15 s and waiting
    again hears `[]` 0.3 s after that second wait began, never at the first wait's deadline."""
    feed = Feed()
    loop = asyncio.get_running_loop()
    waiting = asyncio.ensure_future(feed.get(0.3))
    await asyncio.sleep(0.15)
    await feed.put(events(1))
    assert [e["sequence_number"] for e in await waiting or []] == [0]
    began = loop.time()
    assert await feed.get(0.3) == []
    assert loop.time() - began >= 0.29  # not woken at 0.3 s after the first wait (0.15 s in)
    waiting = asyncio.ensure_future(feed.get(0.3))  # arms the timer 0.3 s out
    await asyncio.sleep(0.01)
    await feed.put(events(1, 1))
    assert len(await waiting or []) == 1
    began = loop.time()
    assert await feed.get(0.05) == []  # shorter than the timer left armed: its own deadline
    assert 0.04 <= loop.time() - began < 0.2
