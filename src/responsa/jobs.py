"""Background runs: queued, leased, cancellable, and replayable from their stored events.

A background response is stored `queued` with its first two events (`response.created`,
`response.queued`) before the client hears back. A run task then waits for a slot (at most
`--max-background-runs` at once per process), takes the response's lease, runs the same
loop as any response and stores every event with its `sequence_number` before telling
followers (`store.notify`), so a stream resumed with `starting_after` on any replica sees
no gap and no duplicate.

Leases: every process renews the leases of the runs (and live streams) it holds. A
response whose lease ran out belongs to a process that died: at start-up and then
periodically, the others take it over. A queued run that never started is started again
(when its request could be stored: requests carrying secrets are not); anything that was
already running is finished as `failed`, with a terminal event that resumed streams see.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import cast

import orjson

from .errors import InvalidRequest, ServiceUnavailable, not_found
from .events import TERMINAL
from .feed import Event, Feed
from .prepare import Preparer
from .protocol import parse_create
from .replay import output_from_events
from .run import Interrupted, LiveRuns, Mode, ResponseRun
from .shapes import ResponseObject
from .store import RunClaim, Store
from .store.vector_records import VectorIndex
from .vectors.expiry import purge_expired_stores

log = logging.getLogger("responsa.jobs")

PURGE_BATCH = 5000  # what one store.purge_expired call removes at most
TERMINAL_EVENT_WAIT = 2.0  # seconds a follower waits for a finished run's terminal event
RENEW_EVERY = 5
TERMINAL_EVENTS = frozenset({"response.completed", "response.failed", "response.incomplete"})


@dataclass
class _Watch:
    """Followers of one response, woken whenever its events or status change."""

    waiters: set[asyncio.Event] = field(default_factory=set)


class Hub:
    """In-process wake-ups for stream followers and running tasks, fed by `store.notify`."""

    def __init__(self) -> None:
        self._watches: dict[str, _Watch] = {}
        self.cancel_callbacks: list[Callable[[str], None]] = []

    def deliver(self, channel: str, response_id: str) -> None:
        if channel == "cancel":
            for cb in self.cancel_callbacks:
                cb(response_id)
        watch = self._watches.get(response_id)
        if watch:
            for ev in watch.waiters:
                ev.set()

    @contextlib.contextmanager
    def watch(self, response_id: str) -> Iterator[asyncio.Event]:
        ev = asyncio.Event()
        w = self._watches.setdefault(response_id, _Watch())
        w.waiters.add(ev)
        try:
            yield ev
        finally:
            w.waiters.discard(ev)
            if not w.waiters:
                self._watches.pop(response_id, None)


class Jobs:
    """Runs background responses in this process and recovers orphaned ones."""

    def __init__(self, store: Store, preparer: Preparer, live: LiveRuns, *, max_runs: int, lease_seconds: int,
                 instance: str | None = None, take_all_orphans: bool = False) -> None:
        self.store = store
        self.preparer = preparer
        self.live = live  # this process's runs, streams included (their leases are renewed here too)
        self.lease_seconds = lease_seconds
        # Renew (and look for orphans) several times per lease, so one slow round does not lose it.
        self.renew_every = max(0.5, min(RENEW_EVERY, lease_seconds / 3))
        self.instance = instance or uuid.uuid4().hex
        self.slots = asyncio.Semaphore(max_runs)
        self.hub = Hub()
        self.followers: set[asyncio.Task] = set()
        self.stopping = False
        self.draining = False  # a SIGTERM drain: runs here go on (leases renewed), none is taken over
        # SQLite: one process owns the database, so every unfinished run at start is an orphan.
        self.take_all_orphans = take_all_orphans
        self._maintenance: asyncio.Task | None = None
        store.on_notify(self.hub.deliver)
        self.hub.cancel_callbacks.append(self._cancel_local)

    # ---- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        await self.recover(take_all=self.take_all_orphans)
        self._maintenance = asyncio.get_running_loop().create_task(self._maintain())

    async def stop(self) -> None:
        """Shutdown: runs still going end `failed` (interrupted), queued ones are handed back."""
        self.stopping = True
        if self._maintenance is not None:
            self._maintenance.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._maintenance
        tasks = [*self.followers]
        for task in tasks:
            task.cancel()
        for run, task in self.live.entries():
            if run.mode is Mode.BACKGROUND:
                run.interrupted = not task.cancelling()  # a run being cancelled by its owner stays cancelled
                self.live.cancel(run.id)  # once: one being cancelled is storing its end
                tasks.append(task)
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _maintain(self) -> None:
        last_purge = 0.0
        vector_backlog = False  # chunks of expired vector stores left for the next tick
        while True:
            await asyncio.sleep(self.renew_every)
            try:
                now = int(time.time())
                for rid in await self.store.renew_leases(self.instance, now + self.lease_seconds):
                    self._cancel_local(rid)
                if not self.draining:
                    await self.recover(take_all=False)
                # Hourly, or as often as ephemeral responses expire (they are to be removed, not kept).
                purge_due = time.monotonic() - last_purge > min(3600, self.preparer.settings.unstored_background_window)
                if purge_due or vector_backlog:
                    vector_backlog = await purge_expired_stores(cast(VectorIndex, self.store), now)
                if purge_due:
                    purged = 0
                    while True:  # a store purges in batches: go on while batches come back full
                        batch = await self.store.purge_expired(now)
                        purged += batch
                        if batch < PURGE_BATCH:
                            break
                    last_purge = time.monotonic()
                    if purged:
                        log.info("purged %d expired responses and files", purged)
            except asyncio.CancelledError:
                raise
            except ServiceUnavailable as e:  # a database outage: no traceback every few seconds
                log.warning("background maintenance skipped: %s", e.message)
            except Exception:
                log.exception("background maintenance failed; retrying")

    # ---- submit and run -----------------------------------------------------------------------

    async def submit(self, run: ResponseRun) -> ResponseObject | Feed:
        """Store the queued response with its first events, start the run, answer at once."""
        first: list[Event] = []

        async def collect(batch: list[Event]) -> None:
            first.extend(batch)

        run.listen(collect, Mode.BACKGROUND)
        events = run.events
        run.response["status"] = "queued"
        events.created()
        events.queued()
        await events.flush()
        assert run.request is not None
        record = run.save_record(lease_owner=self.instance, lease_until=int(time.time()) + self.lease_seconds)
        record.run_request = storable_request(run.request.raw)
        # An ephemeral run keeps no input: it is never listed nor continued.
        await self.store.save_response(record, [], run.input_items if run.stored else [])
        run.input_items = None  # written
        await self.store.append_events(run.id, [(e["sequence_number"], orjson.dumps(e)) for e in first])
        snapshot = run.response.copy()
        snapshot["output"] = []
        self._launch(run)
        if run.request.stream:
            return self.follow(run.id, run.owner, after=None)
        return snapshot

    def _launch(self, run: ResponseRun) -> None:
        self.live.add(run, asyncio.get_running_loop().create_task(self._run(run)))

    async def _run(self, run: ResponseRun) -> None:
        rid, store, events = run.id, self.store, run.events

        # Events the database refused (an outage) are kept and sent again with the next batch
        # (appending is idempotent), so the stored stream never has a gap.
        unsaved: list[Event] = []

        async def persist(batch: list[Event]) -> None:
            unsaved.extend(batch)
            await store.append_events(rid, [(e["sequence_number"], orjson.dumps(e)) for e in unsaved])
            unsaved.clear()
            await store.notify("events", rid)

        run.listen(persist, Mode.BACKGROUND)
        run.lease_owner = self.instance
        run.retry_writes = self._stored
        with contextlib.suppress(Exception, asyncio.CancelledError):  # the run stored its own end
            async with run.lifetime(), self.slots:
                if await store.cancel_requested(rid):
                    raise asyncio.CancelledError
                run.started = True
                events.in_progress()
                await store.save_response(run.save_record(lease_owner=self.instance,
                                                          lease_until=int(time.time()) + self.lease_seconds),
                                          run.response["output"], create=False)
                await events.flush()
                await run.drive()

    async def _stored(self, write: Callable[[], Awaitable[None]]) -> None:
        """Retry a write while the database is unavailable (not at shutdown): the end of a run must
        be stored, or it would stay in progress under a lease this process keeps renewing."""
        delay = 0.5
        while True:
            try:
                return await write()
            except ServiceUnavailable:
                if self.stopping:
                    raise
                log.warning("database unavailable; retrying a background run's final write in %.1fs", delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    # ---- cancel ---------------------------------------------------------------------------------

    def _cancel_local(self, rid: str) -> None:
        self.live.cancel(rid)

    async def cancel(self, rid: str, owner: str) -> None:
        """Cancel a background run wherever it runs, and wait (a while) for it to end."""
        record = await self.store.get_record(rid, owner)
        if record is None:
            raise not_found("Response", rid)
        if not record.background:
            raise InvalidRequest("Only responses created with background=true can be cancelled.",
                                 param="response_id", code="invalid_request")
        if record.status not in TERMINAL:
            await self.store.request_cancel(rid, owner)
            self._cancel_local(rid)
            await self.store.notify("cancel", rid)
            await self._wait_terminal(rid, owner, seconds=30)

    async def _wait_terminal(self, rid: str, owner: str, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        with self.hub.watch(rid) as woken:
            while time.monotonic() < deadline:
                record = await self.store.get_record(rid, owner)
                if record is None or record.status in TERMINAL:
                    return
                woken.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(min(1.0, deadline - time.monotonic())):
                        await woken.wait()

    # ---- follow -----------------------------------------------------------------------------------

    def follow(self, rid: str, owner: str, after: int | None) -> Feed:
        """Stored events after `after`, then live ones, until the run ends."""
        feed = Feed()

        async def produce() -> None:
            try:
                await self._follow(rid, owner, after, feed)
            finally:
                feed.close()

        task = feed.producer = asyncio.get_running_loop().create_task(produce())
        self.followers.add(task)
        task.add_done_callback(self.followers.discard)
        return feed

    async def _follow(self, rid: str, owner: str, after: int | None, feed: Feed) -> None:
        last = -1 if after is None else after
        ended_at: float | None = None
        with self.hub.watch(rid) as woken:
            while True:
                woken.clear()
                rows = await self.store.load_events(rid, last)
                if rows:
                    batch = []
                    for seq, data in rows:
                        last = seq
                        event = orjson.loads(data)
                        batch.append(event)
                        if event["type"] in TERMINAL_EVENTS:
                            await feed.put(batch)
                            return
                    await feed.put(batch)
                else:
                    record = await self.store.get_record(rid, owner)
                    if record is None:
                        return
                    if record.status in TERMINAL:
                        # A run's end and its terminal event are two writes: a finished run other
                        # than a cancelled one (which has no terminal event) gets a moment for
                        # the event to land, unless it is stored already (a replay that starts
                        # after it); then the stream ends either way.
                        terminal_at = await self._terminal_event_seq(rid) if ended_at is None else None
                        if terminal_at is not None:
                            if terminal_at <= last:
                                return  # a replay that starts after the run's end
                            continue  # it landed since this loop's read: send it

                        waited = ended_at is not None and time.monotonic() - ended_at > TERMINAL_EVENT_WAIT
                        if record.status == "cancelled" or waited:
                            if not await self.store.load_events(rid, last):
                                return
                            continue
                        if ended_at is None:
                            ended_at = time.monotonic()
                        await asyncio.sleep(0.02)
                        continue
                # Woken by a notification, or poll now and then (another replica without notify).
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(1.0):
                        await woken.wait()

    async def _terminal_event_seq(self, rid: str) -> int | None:
        """The sequence number of the run's stored terminal event, if it has one."""
        rows = await self.store.load_events(rid, -1)
        if rows and orjson.loads(rows[-1][1])["type"] in TERMINAL_EVENTS:
            return int(rows[-1][0])
        return None

    # ---- recovery -----------------------------------------------------------------------------------

    async def recover(self, take_all: bool) -> None:
        """Take over runs and streams whose process died."""
        claims = await self.store.orphaned_runs(int(time.time()), self.instance, take_all=take_all)
        for claim in claims:
            if claim.id in self.live:
                continue  # ours and alive: its lease lapsed while the database was unreachable
            try:
                await self._recover_one(claim)
            except Exception:
                log.exception("could not recover response %s", claim.id)

    async def _recover_one(self, claim: RunClaim) -> None:
        if claim.background and claim.status == "queued" and claim.run_request is not None:
            resumed = await self._resume(claim)
            if resumed:
                return
        response = await self.store.get_response(claim.id, claim.owner)
        record = await self.store.get_record(claim.id, claim.owner)
        if response is None or record is None:
            return
        stored = await self.store.load_events(claim.id, -1)
        next_seq = stored[-1][0] + 1 if stored else 0
        # What followers already saw streamed is the output (the stored one is from the start).
        output, still_open = output_from_events(orjson.loads(data) for _, data in stored)
        if len(output) >= len(response["output"]):
            response["output"] = output
        else:
            still_open = []
        run = ResponseRun(store=self.store, request=None, owner=claim.owner, record=record,
                          response=cast(ResponseObject, response),  # stored as this server built it
                          input_items=None, spec=None, first_sequence_number=next_seq,
                          unstored_window=self.preparer.settings.unstored_background_window)

        async def persist(batch: list[Event]) -> None:
            await self.store.append_events(claim.id, [(e["sequence_number"], orjson.dumps(e)) for e in batch])

        async def notify() -> None:
            await self.store.notify("events", claim.id)

        if claim.background:  # a stream's events were never stored: only a background run's are
            run.listen(persist, Mode.RECOVERED)
        else:
            run.mode = Mode.RECOVERED
        run.on_end = notify
        run.recover_items(still_open)
        await run.finish(Interrupted())
        log.warning("response %s was left %s by a stopped server; marked failed", claim.id, claim.status)

    async def _resume(self, claim: RunClaim) -> bool:
        record = await self.store.get_record(claim.id, claim.owner)
        if record is None or claim.run_request is None:
            return False
        try:
            req = parse_create(claim.run_request)
            run = await self.preparer.prepare(req, claim.owner, rid=claim.id, created_at=record.created_at)
        except Exception as e:
            log.warning("cannot resume queued run %s: %s", claim.id, e)
            return False
        stored = await self.store.load_events(claim.id, -1)
        run.events.seq = stored[-1][0] + 1 if stored else 0
        run.response["status"] = "queued"
        run.input_items = None  # stored when the run was queued
        self._launch(run)
        log.info("resumed queued background response %s", claim.id)
        return True


def storable_request(raw: dict | None) -> dict | None:
    """The request body kept to restart a queued run, or None if it carries secrets."""
    if raw is None:
        return None
    for tool in raw.get("tools") or ():
        if isinstance(tool, dict) and (tool.get("headers") or tool.get("authorization")):
            return None
    return raw
