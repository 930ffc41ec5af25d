"""Use cases: create (plain, streamed or in the background), retrieve, delete, cancel, follow,
list input items.

`create` prepares a `ResponseRun` (prepare.py) and consumes it one of three ways: a plain
request drains it inline, a stream runs it in a producer task whose event batches reach the
edge through a `Feed`, a background request hands it to `Jobs`. The run itself finishes the
response on every way out (run.py); nothing here frames events for a transport.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

import orjson

from .config import Settings
from .errors import APIError, InvalidRequest, not_found
from .events import TERMINAL
from .feed import Feed
from .jobs import Jobs
from .media import Media
from .prepare import LocalChain, Preparer
from .protocol import CreateRequest
from .reasoning import ReasoningVault
from .router import Router
from .run import DeferredWrites, InProgressRecord, LiveRuns, Mode, ResponseRun
from .shapes import ResponseObject
from .store import ResponseQuery, Store
from .usage import Accounting

ACCEPT_GRACE = 2.0  # seconds a stream waits for the engine to accept before starting anyway


class ResponsesService:
    """The Responses API's use cases over one store, router and set of background jobs."""

    def __init__(self, store: Store, router: Router, settings: Settings, *, preparer: Preparer, jobs: Jobs,
                 live: LiveRuns, deferred: DeferredWrites, vault: ReasoningVault, media: Media,
                 instance: str) -> None:
        self.store = store
        self.router = router
        self.settings = settings
        self.preparer = preparer
        self.jobs = jobs
        self.live = live
        self.deferred = deferred
        self.vault = vault
        self.media = media
        self.instance = instance
        self.tasks: set[asyncio.Task] = set()
        self.accounting: Accounting | None = None

    # ---- create -----------------------------------------------------------------------------

    async def create(self, req: CreateRequest, owner: str, local: LocalChain | None = None) -> ResponseObject | Feed:
        """The finished Response (plain), or the feed of its events (stream, background stream).
        `local` holds earlier responses only the caller's connection has (see prepare.py)."""
        # Usage and the key's stream / background-run limits (usage.py): counted when the run ends.
        accounting = self.accounting
        ticket = None if accounting is None else \
            await accounting.begin(req.model, stream=req.stream, background=req.background)
        try:
            if req.store or req.background:  # a background run is stored while it runs, store=false or not
                await self.store.check_writable()
            run = await self.preparer.prepare(req, owner, local=local)
            run.deferred = self.deferred
            result: ResponseObject | Feed
            if req.background:
                result = await self.jobs.submit(run)
            elif req.stream:
                result = await self.stream(run)
            else:
                result = await self.complete(run)
        except BaseException:
            if ticket is not None:
                ticket.failed()
            raise
        if ticket is not None:
            await ticket.follow(run, self.live.task(run.id) if req.background or req.stream else None)
        return result

    async def complete(self, run: ResponseRun) -> ResponseObject:
        """A non-streamed response: run inline, stored once at the end. An engine's refusal before
        any output is this request's HTTP error, and nothing is stored."""
        events = run.events
        events.created()
        events.in_progress()
        async with run.lifetime():
            await run.drive(raise_client_errors=True)
        return run.response

    async def stream(self, run: ResponseRun) -> Feed:
        """A streamed response: a producer task runs the loop into a feed.

        The stream starts once the engine has accepted the request: a refusal before that (a
        rate limit, a context overflow, an unknown model) is this request's HTTP error, as for
        a plain request, and nothing is stored."""
        feed = Feed()
        run.listen(feed.put, Mode.STREAM)
        events = run.events
        accepted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        in_progress = run.in_progress_record = InProgressRecord(
            run, self.spawn, instance=self.instance, lease_seconds=self.settings.lease_duration)

        def on_accepted() -> None:
            if not accepted.done():
                accepted.set_result(None)
            in_progress.schedule()

        events.on_accepted = on_accepted

        async def end() -> None:
            feed.close()

        run.on_end = end

        async def produce() -> None:
            try:
                async with run.lifetime():
                    events.created()
                    events.in_progress()
                    await events.flush()
                    await run.drive(raise_client_errors=lambda: not accepted.done())
            except APIError as e:
                if not run.refused:
                    raise
                accepted.set_exception(e)
            finally:
                if not accepted.done():
                    accepted.set_result(None)  # ended before any engine turn (or cancelled)

        feed.producer = self.spawn(produce())
        self.live.add(run, feed.producer)
        # Wait briefly for the engine to accept (it usually answers at once). An engine slow to
        # answer at all gets the stream started anyway, with keep-alives; a refusal after that
        # ends the stream as `response.failed`.
        try:
            await asyncio.wait([accepted], timeout=min(ACCEPT_GRACE, self.settings.keepalive_interval))
            if not accepted.done():
                on_accepted()
            await accepted  # the engine's refusal, if any, becomes this request's HTTP error
        except asyncio.CancelledError:
            feed.abandon()  # the caller went away before it got the feed (a closed WebSocket)
            raise
        return feed

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task:
        """Start a task this service owns (awaited at shutdown)."""
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    async def shutdown(self) -> None:
        tasks = list(self.tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    # ---- read, follow, cancel, delete -----------------------------------------------------------

    async def retrieve(self, rid: str, owner: str, include: tuple[str, ...] = ()) -> dict:
        response = await self.store.get_response(rid, owner)
        if response is None:
            raise not_found("Response", rid)
        if "reasoning.encrypted_content" in include:
            await self.vault.seal_output(response, owner)
        else:
            self.vault.strip_output(response)
        return response

    async def list_responses(self, query: ResponseQuery) -> dict:
        """A page of stored responses as the API's list object (`GET /responses`)."""
        return (await self.list_with_owners(query))[0]

    async def list_with_owners(self, query: ResponseQuery) -> tuple[dict, dict[str, str]]:
        """The list object, and the owner of each response on it (for the admin key's console)."""
        page = await self.store.list_responses(query)
        data = [listed.response for listed in page.responses]
        for response in data:
            self.vault.strip_output(response)
        listing = {"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
                   "last_id": data[-1]["id"] if data else None, "has_more": page.has_more}
        if page.resume is not None:  # a text search that looked through all it may: go on from there
            backwards = query.before is not None and query.after is None
            listing["first_id" if backwards else "last_id"] = page.resume
        return listing, {listed.response["id"]: listed.owner for listed in page.responses}

    async def owner_of(self, rid: str) -> str | None:
        """Who owns a stored response (for the admin key, which reads every owner's)."""
        return await self.store.response_owner(rid)

    async def stored_events(self, rid: str, owner: str, after: int = -1) -> tuple[str, list[dict]]:
        """A response's status and the stream events stored for it after `after` (a background
        run's; other responses keep none), as every replica reads them."""
        record = await self.store.get_record(rid, owner)
        if record is None:
            raise not_found("Response", rid)
        events = await self.store.load_events(rid, after) if record.background else []
        return record.status, [orjson.loads(data) for _seq, data in events]

    async def follow(self, rid: str, owner: str, after: int | None) -> Feed:
        """A background response's stored events after `after`, then live ones until it ends."""
        record = await self.store.get_record(rid, owner)
        if record is None:
            raise not_found("Response", rid)
        if not record.background:
            raise InvalidRequest("Only background responses can be streamed again: create the response "
                                 "with background=true.", param="stream", code="invalid_request")
        return self.jobs.follow(rid, owner, after)

    async def cancel(self, rid: str, owner: str) -> dict:
        await self.jobs.cancel(rid, owner)
        return await self.retrieve(rid, owner)

    async def delete(self, rid: str, owner: str) -> dict:
        """Delete a response; one still running is stopped first, wherever it runs, and stays deleted."""
        live = self.live.get(rid, owner)
        if live is not None:
            live.deleted = True
            self.live.cancel(rid)
            if live.in_progress_record is not None:
                await live.in_progress_record.settle()  # its first write lands before the delete
        record = await self.store.get_record(rid, owner)
        if record is not None and record.status not in TERMINAL:
            # Another replica running it hears of it at once (notify) or at its next lease renewal;
            # its last writes then find the response gone and leave it so.
            await self.store.request_cancel(rid, owner)
            await self.store.notify("cancel", rid)
        if not await self.store.delete_response(rid, owner) and live is None:
            raise not_found("Response", rid)
        return {"id": rid, "object": "response", "deleted": True}

    async def input_items(self, rid: str, owner: str, *, after: str | None, before: str | None, limit: int,
                          order: str, include: tuple[str, ...] = ()) -> dict:
        page = await self.store.list_input_items(rid, owner, after=after, before=before, limit=limit, order=order)
        if page is None:
            raise not_found("Response", rid)
        data = page.items
        if "message.input_image.image_url" in include:
            data = await self.media.include_image_urls(data, owner)
        if "computer_call_output.output.image_url" in include:
            data = await self.media.include_screenshot_urls(data, owner)
        return {"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None, "has_more": page.has_more}

    async def ready(self) -> tuple[bool, bool]:
        """Whether the model and the database are ready (the health endpoint reports both)."""
        return await self.router.ready(), await self.store.ping()

    async def models(self) -> list[str]:
        return await self.router.models()

    def check_model(self, name: str) -> None:
        self.router.resolve(name)
