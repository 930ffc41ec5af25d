"""Event batches on their way from the task producing them to the one edge that frames them.

A streamed response, a followed background run and a WebSocket lane all hand their consumer
a `Feed`: the producer puts batches of stream events, the edge takes them with a timeout and
writes a keep-alive when it hears nothing for a while. Nothing here knows a frame.

A feed is bounded: once `limit` events wait for a consumer that does not take them (a client
reading slowly), `put` waits, so the producer (and the engine stream behind it) slows down to
the client's pace instead of queueing a whole response in memory.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

from .idlewait import IdleWaiter

Event = dict[str, Any]

LIMIT = 512  # events waiting for the consumer before the producer is held


class Feed:
    """One producer's event batches for one consumer; the producer is cancelled if the consumer leaves.

    A slow stream (a token a second, thousands at once) takes one batch per token, so taking
    one is kept cheap: a deque and an IdleWaiter (one timer per feed), not an asyncio.Queue
    and an asyncio.timeout (a timer made and cancelled) for every batch.
    """

    def __init__(self, limit: int = LIMIT) -> None:
        self._batches: deque[list[Event] | None] = deque()
        self._idle = IdleWaiter()  # the consumer, waiting for a batch
        self._ended = False
        self._limit = limit
        self._waiting = 0  # events queued and not yet taken
        self._taken = asyncio.Event()  # set whenever the consumer takes events (or leaves)
        self._abandoned = False
        self.producer: asyncio.Task | None = None

    async def put(self, batch: list[Event]) -> None:
        """A sink for `ResponseEvents`: queue one batch, after waiting while the consumer lags."""
        while self._waiting >= self._limit and not self._abandoned:
            self._taken.clear()
            await self._taken.wait()
        if self._abandoned:
            return  # nobody will read it
        self._waiting += len(batch)
        self._push(batch)

    def close(self) -> None:
        """No more batches: the consumer sees the end once it has taken what is queued."""
        self._push(None)

    def _push(self, batch: list[Event] | None) -> None:
        self._batches.append(batch)
        self._idle.wake()

    async def get(self, idle: float) -> list[Event] | None:
        """Everything queued (at least one event), `[]` after `idle` seconds without any, or
        None at the end. Batches produced meanwhile are merged so that they go out in one write."""
        if self._ended:
            return None
        batches = self._batches
        if not batches and not await self._idle.wait(idle):
            return []
        batch = batches.popleft()
        if batch is None:
            self._end()
            return None
        events = list(batch)
        while batches:
            more = batches.popleft()
            if more is None:
                self._end()
                break
            events.extend(more)
        self._waiting -= len(events)
        self._taken.set()
        return events

    def _end(self) -> None:
        self._ended = True
        self._idle.cancel()

    def abandon(self) -> None:
        """The consumer is gone: stop the producer (which stores what it must on its way out)."""
        self._abandoned = True
        self._taken.set()
        self._idle.cancel()
        if self.producer is not None and not self.producer.done():
            self.producer.cancel()
