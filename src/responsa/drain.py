"""A graceful stop (SIGTERM): what this process holds is finished or handed over, nothing is lost.

The server stops accepting connections (cli.py), then:

1. background runs still queued here are released at once and the other replicas are told
   (`notify("released")`), so one of them starts them now rather than at its next check;
2. streams, background runs and requests in flight go on (their leases renewed) until they
   end or `--drain-timeout` passes;
3. at the deadline, what still runs is interrupted: background runs and streams end `failed`
   ("interrupted"), stored, with a terminal event their clients and followers see;
4. the lifespan then closes the jobs, writes what the database refused (deferred writes) and
   flushes the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from .jobs import Jobs
from .run import LiveRuns, Mode
from .store import Store

log = logging.getLogger("responsa.drain")

RELEASED = "released"  # the notification channel: queued runs another replica should take now
POLL = 0.1  # how often the drain looks at open connections (uvicorn has no event for them)
FINAL_WRITES = 5.0  # seconds interrupted runs get to store their end and send their last events


class Drain:
    """This process's graceful stop, and its side of other replicas' stops."""

    def __init__(self, live: LiveRuns, jobs: Jobs, store: Store) -> None:
        self.live = live
        self.jobs = jobs
        self.store = store
        self.draining = False
        self._tasks: set[asyncio.Task] = set()
        self._again = False
        store.on_notify(self._on_notify)

    def _on_notify(self, channel: str, response_id: str) -> None:
        if channel != RELEASED or self.draining or self.jobs.stopping:
            return
        # Another replica handed back runs it had queued: take them now. One recovery pass takes
        # every released run; a release heard while one runs gets another pass after it.
        self._again = True
        if not self._tasks:
            task = asyncio.get_running_loop().create_task(self._recover())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _recover(self) -> None:
        while self._again and not self.draining:
            self._again = False
            await asyncio.sleep(0)  # let the other notifications of the same release arrive
            log.info("taking over runs another replica released")
            try:
                await self.jobs.recover(take_all=False)
            except Exception as e:
                log.warning("could not take over released runs now (the next check will): %s", e)

    async def begin(self) -> None:
        """Stop taking work and hand back the background runs that have not started."""
        self.draining = True
        self.jobs.draining = True
        queued = [(run, task) for run, task in self.live.entries()
                  if run.mode is Mode.BACKGROUND and not run.started and not task.done()]
        for run, task in queued:
            run.interrupted = True  # its finish releases the lease instead of failing it
            task.cancel()
        if queued:
            await asyncio.gather(*(task for _, task in queued), return_exceptions=True)
            for run, _ in queued:
                with contextlib.suppress(Exception):
                    await self.store.notify(RELEASED, run.id)
            log.info("released %d queued background runs to the other replicas", len(queued))
        running = len(self.live.entries())
        if running:
            log.info("draining: waiting for %d streams and background runs to finish", running)

    async def wait(self, deadline: float, busy: Callable[[], bool]) -> bool:
        """Wait until nothing runs here (no run, and `busy()` false) or the deadline (a
        `time.monotonic()` value); whether everything finished."""
        while True:
            if not self.live.entries() and not busy():
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            tasks = [task for _, task in self.live.entries()]
            if tasks:
                await asyncio.wait(tasks, timeout=min(left, POLL) if busy() else left)
            else:
                await asyncio.sleep(min(left, POLL))

    async def interrupt(self) -> None:
        """The deadline passed: end what still runs `failed` (stored, with its terminal event)
        and close the streams following runs elsewhere (their clients resume on another replica)."""
        entries = [(run, task) for run, task in self.live.entries() if not task.done()]
        for run, task in entries:
            if run.mode in (Mode.BACKGROUND, Mode.STREAM):
                run.interrupted = True
            task.cancel()
        followers = list(self.jobs.followers)
        for task in followers:
            task.cancel()
        tasks = [task for _, task in entries] + followers
        if entries:
            log.warning("drain timeout: ending %d unfinished responses as failed (interrupted)", len(entries))
        if tasks:
            await asyncio.wait(tasks, timeout=FINAL_WRITES)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
