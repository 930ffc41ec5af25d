"""Following a background run's stored events (jobs.Jobs.follow), in process against a store that
plays the races a real one can: the run's end and its terminal event are two writes."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from responsa.feed import Feed
from responsa.jobs import Jobs
from responsa.run import LiveRuns
from responsa.store import ResponseRecord

pytestmark = pytest.mark.anyio


def event(seq: int, kind: str) -> tuple[int, bytes]:
    return seq, orjson.dumps({"type": kind, "sequence_number": seq})


class RacingStore:
    """Events appear when the test says; the record is already `completed`."""

    def __init__(self, events: list[tuple[int, bytes]], late: list[tuple[int, bytes]], *, after_reads: int) -> None:
        self.events = events
        self.late = late  # appended once `after_reads` event reads have been answered
        self.after_reads = after_reads
        self.reads = 0

    def on_notify(self, callback: Any) -> None:
        pass

    async def load_events(self, rid: str, after: int) -> list[tuple[int, bytes]]:
        rows = [e for e in self.events if e[0] > after]
        self.reads += 1
        if self.reads == self.after_reads:
            self.events = self.events + self.late
        return rows

    async def get_record(self, rid: str, owner: str) -> ResponseRecord:
        return ResponseRecord(id=rid, owner=owner, created_at=0, expires_at=2**31 - 1, status="completed", body={},
                              background=True)


async def drain(feed: Feed) -> list[str]:
    seen: list[str] = []
    while (batch := await feed.get(5)) is not None:
        seen.extend(e["type"] for e in batch)
    return seen


async def test_a_terminal_event_that_lands_after_the_record_is_still_sent() -> None:
    # Read 1 answers the delta; read 2 finds nothing new; the run is already `completed`; its
    # terminal event is written just then (before the follower's next look at the events).
    store = RacingStore([event(0, "response.output_text.delta")], [event(1, "response.completed")], after_reads=2)
    jobs = Jobs(store, None, LiveRuns(), max_runs=1, lease_seconds=30)  # type: ignore[arg-type]
    seen = await asyncio.wait_for(drain(jobs.follow("resp_1", "owner", None)), 10)
    assert seen == ["response.output_text.delta", "response.completed"]


async def test_a_replay_after_the_terminal_event_ends_at_once() -> None:
    store = RacingStore([event(0, "response.output_text.delta"), event(1, "response.completed")], [],
                        after_reads=0)
    jobs = Jobs(store, None, LiveRuns(), max_runs=1, lease_seconds=30)  # type: ignore[arg-type]
    loop = asyncio.get_running_loop()
    started = loop.time()
    seen = await asyncio.wait_for(drain(jobs.follow("resp_1", "owner", 1)), 10)
    assert seen == [] and loop.time() - started < 1  # no wait for an event that already came
