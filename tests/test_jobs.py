"""Following a background run's stored events (jobs.Jobs.follow), in process against a store that
plays the races a real one can: the run's end and its terminal event are two writes. And
cancelling a run here: once, however many signals ask, so the write of its end is never cut."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import orjson
import pytest

from responsa.feed import Feed
from responsa.jobs import Jobs
from responsa.run import LiveRuns, Mode
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


class EndingRun:
    """A run's task as `Jobs` holds it: cancelled, it writes its end, which the test holds in flight."""

    def __init__(self, live: LiveRuns) -> None:
        self.run = SimpleNamespace(id="resp_1", owner="owner", stored=True, mode=Mode.BACKGROUND, interrupted=False)
        self.writing = asyncio.Event()
        self.written = asyncio.Event()
        self.stored: list[str] = []
        self.task = asyncio.get_running_loop().create_task(self._body())
        live.add(self.run, self.task)  # type: ignore[arg-type]

    async def _body(self) -> None:
        try:
            await asyncio.sleep(3600)  # the engine, streaming
        except asyncio.CancelledError:
            self.writing.set()
            await self.written.wait()  # the write of its end, on the wire
            self.stored.append("cancelled")
            raise


async def test_a_run_is_cancelled_once_and_its_end_is_stored() -> None:
    """The replica's notice, the next lease renewal and another cancel may all reach the run while
    it stores its end; the first cancel alone acts (a second cut that write: the response stayed
    `in_progress` under a lease its process kept renewing, and a cancel through another replica
    answered `in_progress` after waiting 30 s)."""
    live = LiveRuns()
    ending = EndingRun(live)
    await asyncio.sleep(0)
    assert live.cancel("resp_1")
    await asyncio.wait_for(ending.writing.wait(), 10)
    assert live.cancel("resp_1") and live.cancel("resp_1")  # still here, already ending
    ending.written.set()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(ending.task, 10)
    assert ending.stored == ["cancelled"]
    assert not live.cancel("resp_1")  # gone once ended


async def test_shutdown_lets_a_run_being_cancelled_store_its_end() -> None:
    live = LiveRuns()
    jobs = Jobs(RacingStore([], [], after_reads=0), None, live, max_runs=1, lease_seconds=30)  # type: ignore[arg-type]
    ending = EndingRun(live)
    await asyncio.sleep(0)
    assert live.cancel("resp_1")
    await asyncio.wait_for(ending.writing.wait(), 10)
    stopping = asyncio.get_running_loop().create_task(jobs.stop())
    for _ in range(5):
        await asyncio.sleep(0)
    assert not stopping.done()  # it waits for the run
    ending.written.set()
    await asyncio.wait_for(stopping, 10)
    assert ending.stored == ["cancelled"]
    assert ending.run.interrupted is False  # cancelled by its owner, it stays cancelled
