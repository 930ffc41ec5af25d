"""One response's life, from a prepared request to its single finish.

A `ResponseRun` holds the live Response, its events and what its loop runs on. Its consumers
(a plain request that drains it, a stream that feeds an edge, a background job that logs its
events, the recovery of a run whose process died) only decide where events go and when to
start; every way out (completion, engine failure, client gone, cancel, shutdown, crash
recovery) goes through `finish`, which closes open items, sets the terminal status, stores
the response once and hands out the last events.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
import logging
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from .errors import APIError, InvalidRequest, NotFound, RateLimited, ServiceUnavailable
from .events import TERMINAL, ResponseEvents, Sink
from .loop import RunSpec, run
from .protocol import CreateRequest
from .shapes import ResponseObject
from .store import ResponseRecord, Store

log = logging.getLogger("responsa.run")

IN_PROGRESS_AFTER = 0.1  # seconds a stored stream runs before its in-progress record is written
INTERRUPTED = ("server_error", "The background run was interrupted: the server running it stopped before it "
                               "finished. Start it again.")
STREAM_INTERRUPTED = ("server_error", "The response was interrupted: the server producing it was stopped (a restart "
                                      "or deploy) before it finished. Start it again.")
OPEN_STATUSES = frozenset({"in_progress", "calling", "generating", "searching", "interpreting"})

# The codes the SDKs type `response.error.code` with; anything else is reported as server_error
# (the message still says what happened).
RESPONSE_ERROR_CODES = frozenset({
    "server_error", "rate_limit_exceeded", "invalid_prompt", "invalid_image", "invalid_image_format",
    "invalid_base64_image", "invalid_image_url", "image_too_large", "image_too_small", "image_parse_error",
    "image_content_policy_violation", "invalid_image_mode", "image_file_too_large",
    "unsupported_image_media_type", "empty_image_file", "failed_to_download_image", "image_file_not_found",
})


class Mode(enum.Enum):
    """Where a run's events go, which decides how its end is stored."""

    PLAIN = "plain"  # nobody listens; stored once at the end
    STREAM = "stream"  # an edge listens; stored at the end (and in progress once it runs long enough)
    BACKGROUND = "background"  # every event is stored as it goes; the end with the last events
    RECOVERED = "recovered"  # a run whose process died, ended here from what was stored


class Interrupted(Exception):
    """The process running a response stopped before it finished (shutdown or crash)."""


class ResponseRun:
    """One response from preparation to its single finish."""

    def __init__(self, *, store: Store, request: CreateRequest | None, owner: str, response: ResponseObject,
                 record: ResponseRecord, input_items: list[dict] | None, spec: RunSpec | None,
                 unstored_window: int, dialect: str = "openai", first_sequence_number: int = 0) -> None:
        self.store = store
        self.request = request
        self.owner = owner
        self.response = response
        self.record = record
        self.input_items = input_items  # stored with the first write; None once written
        self.spec = spec
        self.mode = Mode.PLAIN
        self.events = ResponseEvents(response, None, dialect=dialect, first_sequence_number=first_sequence_number)
        if spec is not None:
            spec.tool_ctx.events = self.events
        self.refused = False  # the engine refused the request up front: an HTTP error, nothing stored
        self.started = False  # a background run that left the queue
        # The process is stopping (not a cancel): a background run ends `failed` so that it can be
        # started again, or, if it never left the queue, is handed back for another process.
        self.interrupted = False
        self.lease_owner: str | None = None
        self.deleted = False  # deleted by its owner while it ran: nothing more is stored
        # Called after the last events went out (a stream closes its feed, a background run notifies).
        self.on_end: Callable[[], Awaitable[None]] | None = None
        # Writes that finish needs: a stored stream's in-progress record, a background run's retries.
        self.in_progress_record: InProgressRecord | None = None
        self.retry_writes: Callable[[Callable[[], Awaitable[None]]], Awaitable[None]] | None = None
        self.deferred: DeferredWrites | None = None  # where a stream's refused final write goes
        # An ephemeral (background, store=false) response is kept this long after it ends.
        self.unstored_window = unstored_window

    @property
    def id(self) -> str:
        return str(self.response["id"])

    @property
    def stored(self) -> bool:
        return self.request is None or self.request.store

    def listen(self, sink: Sink, mode: Mode) -> None:
        """Send this run's events to `sink` from now on."""
        self.mode = mode
        self.events.sink = sink
        self.events.live = True

    def usage(self) -> dict | None:
        return self.spec.total_usage() if self.spec is not None else self.response.get("usage")

    def save_record(self, *, lease_owner: str | None = None, lease_until: int | None = None) -> ResponseRecord:
        """The record as it stands now (status and body taken from the live response)."""
        r = self.record
        r.status = self.response["status"]
        r.body = {k: v for k, v in self.response.items() if k != "output"}
        r.lease_owner, r.lease_until = lease_owner, lease_until
        if r.ephemeral and r.status in TERMINAL:
            r.expires_at = min(r.expires_at, int(time.time()) + self.unstored_window)
        return r

    def recover_items(self, still_open: list[int]) -> None:
        """A run rebuilt from stored events: items its stream left open are closed and announced
        done, so that what followers saw ends as the stored response does."""
        close_items(self.events)
        for index in still_open:
            self.events.done_item(index)

    # ---- running ---------------------------------------------------------------------------

    async def drive(self, *, raise_client_errors: bool | Callable[[], bool] = False) -> None:
        """Run the loop; engine failures become a `failed` response. A client error (the engine
        refusing this request) is raised instead while `raise_client_errors` holds and nothing
        was produced yet: the run is then `refused` and `finish` stores nothing."""
        assert self.spec is not None
        events = self.events
        try:
            await run(self.spec, events)
        except APIError as e:
            client_error = isinstance(e, InvalidRequest | NotFound | RateLimited)
            raising = raise_client_errors() if callable(raise_client_errors) else raise_client_errors
            if raising and client_error and not events.output:
                self.refused = True
                raise
            if self.stored:
                log.warning("response %s failed: %s", self.id, e.message)
            else:  # store=false: the logs get the kind of failure, nothing about the response
                log.warning("a store=false response failed: %s", e.code or "server_error")
            events.failed(response_error_code(e), e.message, self.usage())
        except asyncio.CancelledError:
            events.cancelled(self.usage())
            raise
        except Exception:
            log.exception("response %s failed with an internal error", self.id if self.stored else "(store=false)")
            events.failed("server_error", "The server failed while producing this response.", self.usage())

    def lifetime(self) -> Lifetime:
        """`async with run.lifetime():` whatever happens inside, the run is finished on the way out
        (unless it was refused)."""
        return Lifetime(self)

    # ---- the one way out -----------------------------------------------------------------------

    async def finish(self, cause: BaseException | None = None) -> None:
        """Close open items, set the terminal status if the loop did not, store once, send the
        last events. `cause` is why the run stopped early (None: it ran to its end)."""
        events = self.events
        if self.interrupted:
            if self.mode is Mode.BACKGROUND and not self.started:
                assert self.lease_owner is not None
                await self.store.release_run(self.id, self.lease_owner)
                return
            # A stream cut at shutdown also ends failed, and its client hears so. Events already
            # numbered go out before the end: dropping them left a gap in the stored stream.
            cause = Interrupted()
        close_items(events)  # before the terminal event, whose snapshot shows them
        if not events.done or isinstance(cause, Interrupted):
            self._end(cause)
        try:
            if self.deleted:  # deleted by its owner while it ran: nothing more is stored
                return
            if self.mode is Mode.BACKGROUND or self.mode is Mode.RECOVERED:
                await self._store_with_events()
            else:
                await self._store_direct(cause)
        finally:
            if self.on_end is not None:
                await self.on_end()
            # What points back at the run (its in-progress record, the callbacks) is let go, so that
            # a finished run is freed by reference counting and never waits for a GC pass.
            self.in_progress_record = self.on_end = self.retry_writes = None
            self.events.on_accepted = None

    def _end(self, cause: BaseException | None) -> None:
        events, usage = self.events, self.usage()
        if isinstance(cause, Interrupted):
            events.failed(*(STREAM_INTERRUPTED if self.mode is Mode.STREAM else INTERRUPTED), usage)
        elif cause is None or isinstance(cause, asyncio.CancelledError):
            events.cancelled(usage)
        elif isinstance(cause, ServiceUnavailable):
            events.failed(cause.code or "server_error", cause.message, usage)
        else:
            log.error("response %s ended by an internal error", self.id, exc_info=cause)
            events.failed("server_error", "The server failed while running this response.", usage)

    async def _store_direct(self, cause: BaseException | None) -> None:
        """A plain or streamed response: one write of the whole response, then the last events."""
        events = self.events
        try:
            if self.stored:
                if self.mode is Mode.PLAIN:
                    # wait=False: a store that can (SQLite) answers before its commit, which lands
                    # before anything the client sends next is read.
                    await self.store.save_response(self.save_record(), self.response["output"], self.input_items,
                                                   wait=cause is not None)
                else:
                    written = self.in_progress_record is not None and await self.in_progress_record.settle()
                    await self._save_stream(None if written else self.input_items)
        finally:
            if events.pending and self.response["status"] != "cancelled":
                await events.flush()

    async def _save_stream(self, input_items: list[dict] | None) -> None:
        """Store a finished stream. If the database is down the client still gets its end; the
        write is retried in the background, since this process keeps renewing the response's
        lease and nothing else would ever finish it."""
        record, output = self.save_record(), list(self.response["output"])
        try:
            await self.store.save_response(record, output, input_items, wait=False, create=input_items is not None)
        except ServiceUnavailable:
            assert self.deferred is not None
            self.deferred.add(record, output, input_items)

    async def _store_with_events(self) -> None:
        """A background (or recovered) run: the end, then its last events (idempotent appends),
        each write waiting out a database outage while the process runs."""
        events, store = self.events, self.store

        async def save() -> None:
            await store.save_response(self.save_record(), self.response["output"], create=False)

        async def retrying(write: Callable[[], Awaitable[None]]) -> None:
            if self.retry_writes is None:
                await write()
            else:
                await self.retry_writes(write)

        await retrying(save)
        if events.sink is not None:
            await retrying(lambda: events.flush(force=True))  # force: a sink may hold refused batches


class Lifetime:
    """The context of `ResponseRun.lifetime` (a class: cheaper per request than a generator-based
    context manager)."""

    __slots__ = ("run",)

    def __init__(self, run: ResponseRun) -> None:
        self.run = run

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: object) -> None:
        run = self.run
        if error is None:
            await run.finish(None)
        elif not run.refused:
            await run.finish(error)
        elif run.record.conversation_id is not None:
            # Stored in progress to hold its conversation (conversations.py): a refusal stores nothing.
            await run.store.delete_response(run.id, run.owner)
        # the exception, if any, goes on


class DeferredWrites:
    """Finished streams the database refused (an outage): the client has its end already, so the
    write is tried again every RETRY_EVERY seconds at most until the database answers, and on a
    clean shutdown kept in a file in the data dir, which the next start stores first."""

    RETRY_EVERY = 1.0

    def __init__(self, store: Store, path: str) -> None:
        self.store = store
        self.path = path
        self.pending: dict[str, tuple[ResponseRecord, list[dict], list[dict] | None]] = {}
        self._task: asyncio.Task | None = None

    def add(self, record: ResponseRecord, output: list[dict], input_items: list[dict] | None) -> None:
        log.warning("response %s could not be stored (database unavailable); retrying", record.id)
        self.pending[record.id] = (record, output, input_items)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._retry())

    async def _retry(self) -> None:
        delay = 0.1
        while self.pending:
            await asyncio.sleep(delay)
            delay = min(self.RETRY_EVERY, delay * 2)
            if await self._write_all():
                return

    async def _write_all(self) -> bool:
        """Write what is pending, oldest first; False as soon as the database refuses."""
        for rid, (record, output, input_items) in list(self.pending.items()):
            try:
                await self.store.save_response(record, output, input_items, create=input_items is not None)
            except ServiceUnavailable:
                return False
            self.pending.pop(rid, None)
            log.info("response %s stored after the database came back", rid)
        return True

    async def restore(self) -> None:
        """At start: store what a previous run of this process kept in its file."""
        try:
            with open(self.path, "rb") as f:
                lines = f.read().splitlines()
        except FileNotFoundError:
            return
        for line in lines:
            data = orjson.loads(line)
            self.pending[data["record"]["id"]] = (ResponseRecord(**data["record"]), data["output"], data["input"])
        if await self._write_all():
            os.unlink(self.path)
            log.info("stored %d responses kept from before the last shutdown", len(lines))
        else:
            raise ServiceUnavailable("The database is unavailable: responses kept from before the last shutdown "
                                     f"({self.path}) cannot be stored.")

    async def close(self) -> None:
        """At shutdown: one last try, then what is still pending goes to the file."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if not self.pending or await self._write_all():
            return
        with open(self.path + ".tmp", "wb") as f:
            for record, output, input_items in self.pending.values():
                f.write(orjson.dumps({"record": dataclasses.asdict(record), "output": output,
                                      "input": input_items}) + b"\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(self.path + ".tmp", self.path)
        log.warning("%d finished responses could not be stored (database unavailable); kept in %s and stored "
                    "at the next start", len(self.pending), self.path)


class InProgressRecord:
    """A stored stream's in-progress record (leased, for recovery after a crash; readable while
    it streams). Written once the stream has run for IN_PROGRESS_AFTER: most streams end sooner,
    and then one write stores them whole instead of two."""

    def __init__(self, run: ResponseRun, spawn: Callable[[Any], asyncio.Task], *, instance: str,
                 lease_seconds: int) -> None:
        self.run, self.spawn = run, spawn
        self.instance, self.lease_seconds = instance, lease_seconds
        self.timer: asyncio.TimerHandle | None = None
        self.task: asyncio.Task | None = None

    def schedule(self) -> None:
        if self.run.stored and self.timer is None and self.task is None:
            self.timer = asyncio.get_running_loop().call_later(IN_PROGRESS_AFTER, self._write)

    def _write(self) -> None:
        self.timer = None
        run = self.run
        record = run.save_record(lease_owner=self.instance, lease_until=int(time.time()) + self.lease_seconds)
        self.task = self.spawn(run.store.save_response(record, [], run.input_items))

    async def settle(self) -> bool:
        """Before the final write: whether the in-progress record (with the input) is stored."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.task is None:
            return False
        await asyncio.wait([self.task])  # the final write must land after this one
        return self.task.exception() is None


class LiveRuns:
    """The runs this process is producing (streams and background runs), by response id: what a
    cancel or delete stops here, and what a follow-up request may be told is still in progress."""

    def __init__(self) -> None:
        self._runs: dict[str, tuple[ResponseRun, asyncio.Task]] = {}

    def add(self, run: ResponseRun, task: asyncio.Task) -> None:
        rid = run.id
        self._runs[rid] = (run, task)
        task.add_done_callback(lambda _t: self._runs.pop(rid, None))

    def get(self, rid: str, owner: str) -> ResponseRun | None:
        """The caller's stored run with that id, if this process is producing it."""
        entry = self._runs.get(rid)
        if entry is None or entry[0].owner != owner or not entry[0].stored:
            return None
        return entry[0]

    def task(self, rid: str) -> asyncio.Task | None:
        entry = self._runs.get(rid)
        return entry[1] if entry is not None else None

    def entries(self) -> list[tuple[ResponseRun, asyncio.Task]]:
        return list(self._runs.values())

    def __contains__(self, rid: str) -> bool:
        return rid in self._runs

    def cancel(self, rid: str) -> bool:
        """Stop a run produced here (its finish stores what it must); whether there was one.

        A run is cancelled once. Several signals may ask it (the replica's notice, the next lease
        renewal, another cancel or a delete), and a second one would cut the write of its end:
        the response would stay `in_progress` under a lease this process keeps renewing."""
        entry = self._runs.get(rid)
        if entry is None or entry[1].done():
            return False
        if not entry[1].cancelling():
            entry[1].cancel()
        return True


def close_items(events: ResponseEvents) -> None:
    """Items still open when a response ends: messages, function calls and reasoning become
    `incomplete`; tool calls that were running here become `failed`."""
    for item in events.output:
        if item.get("status") in OPEN_STATUSES:
            item["status"] = "incomplete" if item.get("type") in ("message", "function_call", "reasoning") \
                else "failed"


def response_error_code(error: APIError) -> str:
    """A failed response's `error.code`: the error's own code when typed clients know it."""
    if error.code in RESPONSE_ERROR_CODES:
        return error.code
    if isinstance(error, InvalidRequest):
        return "invalid_prompt"
    if isinstance(error, RateLimited):
        return "rate_limit_exceeded"
    return "server_error"
