"""Use cases: create, stream, retrieve, delete, list input items.

`create` loads the earlier chain in one store round trip, resolves item references,
routes the model, builds the toolset and runs the loop: inline for a plain request, as a
producer task feeding an SSE stream, or as a background job (jobs.py). Whatever happens
(a failing engine, a client that disconnects, a bug), the stored response ends in a
terminal status: the finishing code runs in `finally` blocks.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import orjson

from .config import Settings
from .errors import APIError, InvalidRequest, NotFound, RateLimited, ServiceUnavailable, not_found
from .events import TERMINAL, ResponseEvents
from .ids import response_id
from .loop import RunSpec, run
from .protocol import CreateRequest
from .router import Router
from .store import ResponseRecord, Store
from .tools import ToolContext, ToolSet, public_tools

log = logging.getLogger("responsa.service")


@dataclass
class Prepared:
    """A checked request with everything loaded, ready to run."""

    request: CreateRequest
    owner: str
    response: dict  # the live Response object
    record: ResponseRecord
    input_items: list[dict]  # as stored for `GET /responses/{id}/input_items`
    spec: RunSpec

    def save_record(self, *, lease_owner: str | None = None, lease_until: int | None = None) -> ResponseRecord:
        """The record as it stands now (status and body taken from the live response)."""
        r = self.record
        r.status = self.response["status"]
        r.body = {k: v for k, v in self.response.items() if k != "output"}
        r.lease_owner, r.lease_until = lease_owner, lease_until
        return r


def sse_frames(batch: list[dict]) -> bytes:
    """Stream events as SSE: `event:` + `data:` + a blank line each."""
    return b"".join(b"event: " + ev["type"].encode() + b"\ndata: " + orjson.dumps(ev) + b"\n\n" for ev in batch)


KEEPALIVE = b": keep-alive\n\n"
ACCEPT_GRACE = 2.0  # seconds a stream waits for the engine to accept before starting anyway
IN_PROGRESS_AFTER = 0.1  # seconds a stored stream runs before its in-progress record is written


class ResponsesService:
    def __init__(self, store: Store, router: Router, settings: Settings, *, instance: str = "") -> None:
        self.store = store
        self.router = router
        self.settings = settings
        self.instance = instance
        self.tasks: set[asyncio.Task] = set()
        # Hooks set by the composition root for optional parts (reasoning vault, media).
        self.reasoning_vault: Any = None
        self.media: Any = None
        self.jobs: Any = None

    # ---- create -----------------------------------------------------------------------------

    async def prepare(self, req: CreateRequest, owner: str, rid: str | None = None,
                      created_at: int | None = None) -> Prepared:
        history: list[dict] = []
        history_key = None
        if req.previous_response_id:
            chain = await self.store.load_chain(req.previous_response_id, owner)
            last = chain[-1]
            if last.status not in TERMINAL:
                raise InvalidRequest(
                    f"Previous response with id '{last.id}' is still {last.status}; wait for it to finish.",
                    param="previous_response_id", code="previous_response_in_progress")
            for link in chain:
                history.extend(link.input)
                history.extend(link.output)
            history_key = ("chain", last.id)
        input_items = req.input
        if self.reasoning_vault is not None:  # before references resolve: stored items are trusted
            input_items = await self.reasoning_vault.open_items(input_items, owner)
        input_items = await self._resolve_references(input_items, owner)
        target = self.router.resolve(req.model)
        # What the engine is sent has file ids and URLs resolved; stored items keep them as given.
        sent = [*history, *input_items]
        if self.media is not None:
            sent = await self.media.resolve(sent, owner, target, first_input=len(history), history_key=history_key)
        elif not target.backend.accepts_images(target.model) and _has_images(sent):
            raise InvalidRequest(f"The model '{req.model}' does not accept image input.", param="input",
                                 code="unsupported_image_input")
        created_at = created_at or int(time.time())
        rid = rid or response_id()
        response: dict[str, Any] = {
            "id": rid, "object": "response", "created_at": created_at, "status": "in_progress",
            "completed_at": None, "error": None, "incomplete_details": None, "model": req.model,
            "output": [], "usage": None, **req.echo(),
        }
        response["tools"] = public_tools(req.tools)
        record = ResponseRecord(id=rid, owner=owner, created_at=created_at,
                                expires_at=created_at + self.settings.retention, status="in_progress", body={},
                                background=req.background, previous_response_id=req.previous_response_id)
        ctx = ToolContext(events=None, history=[*history, *input_items],  # type: ignore[arg-type]
                          request_headers=req.headers, input_start=len(history),
                          load_file=self._file_loader(owner), settings=self.settings,
                          accepts_images=target.backend.accepts_images(target.model))
        # An earlier chain is sent as stored (nothing in it resolved differently): chat.py may
        # then reuse its rendering, keyed by the chain's last response.
        prefix = (history_key, len(history)) if history_key and all(
            a is b for a, b in zip(sent, history, strict=False)) else None
        spec = RunSpec(
            backend=target.backend, model=target.model, history=sent, history_prefix=prefix,
            toolset=ToolSet.build(req.tools, ctx), tool_ctx=ctx, instructions=req.instructions,
            tool_choice=req.tool_choice, parallel_tool_calls=req.parallel_tool_calls,
            max_tool_calls=req.max_tool_calls, max_output_tokens=req.max_output_tokens,
            temperature=req.temperature, top_p=req.top_p, response_format=response_format(req.text_format),
            reasoning_effort=(req.reasoning or {}).get("effort"), user=req.user, truncation=req.truncation,
            stream=req.stream or req.background,
        )
        await spec.toolset.validate(ctx)  # e.g. an MCP server on a private address: a 400, nothing stored
        return Prepared(req, owner, response, record, input_items, spec)

    def _file_loader(self, owner: str) -> Callable[[str], Any]:
        async def load(file_id: str) -> tuple[bytes, str]:
            record = await self.store.get_file(file_id, owner)
            data = await self.store.file_content(file_id, owner) if record else None
            if record is None or data is None:
                raise not_found("File", file_id)
            return data, record.mime_type

        return load

    async def _resolve_references(self, items: list[dict], owner: str) -> list[dict]:
        refs = [i["id"] for i in items if i["type"] == "item_reference"]
        if not refs:
            return items
        found = await self.store.find_items(owner, refs)
        out = []
        for n, item in enumerate(items):
            if item["type"] == "item_reference":
                stored = found.get(item["id"])
                if stored is None:
                    raise NotFound(f"Item with id '{item['id']}' not found.", param=f"input[{n}]",
                                   code="item_not_found")
                out.append(stored)
            else:
                out.append(item)
        return out

    def make_events(self, p: Prepared, sink: Any, first_sequence_number: int = 0) -> ResponseEvents:
        events = ResponseEvents(p.response, sink, dialect=self.settings.stream_dialect,
                                first_sequence_number=first_sequence_number)
        if self.reasoning_vault is not None:
            self.reasoning_vault.attach(events, p)
        p.spec.tool_ctx.events = events
        return events

    async def create(self, req: CreateRequest, owner: str) -> dict | AsyncIterator[bytes]:
        p = await self.prepare(req, owner)
        if req.background:
            return await self.jobs.submit(p)
        if req.stream:
            return await self.stream(p)
        return await self.complete(p)

    async def complete(self, p: Prepared) -> dict:
        """A non-streamed response: run inline, store once at the end."""
        events = self.make_events(p, None)
        events.created()
        events.in_progress()
        try:
            await self.drive(p, events, raise_client_errors=True)
        except APIError:
            raise  # the client's own mistake, before any output: an HTTP error, nothing stored
        except BaseException:
            if not events.done:  # cancelled (server shutdown): stored as such
                events.cancelled()
            if p.request.store:
                await self.store.save_response(p.save_record(), p.response["output"], p.input_items)
            raise
        if p.request.store:
            await self.store.save_response(p.save_record(), p.response["output"], p.input_items, wait=False)
        return p.response

    async def drive(self, p: Prepared, events: ResponseEvents, *,
                    raise_client_errors: bool | Callable[[], bool] = False) -> None:
        """Run the loop; turn engine failures into a `failed` response. A client error (the
        engine refusing this request) is raised instead while `raise_client_errors` holds and
        nothing was produced yet."""
        try:
            await run(p.spec, events)
        except APIError as e:
            client_error = isinstance(e, InvalidRequest | NotFound | RateLimited)
            raising = raise_client_errors() if callable(raise_client_errors) else raise_client_errors
            if raising and client_error and not events.output:
                raise
            if p.request.store:
                log.warning("response %s failed: %s", p.response["id"], e.message)
            else:  # store=false: the logs get the kind of failure, nothing about the response
                log.warning("a store=false response failed: %s", e.code or "server_error")
            events.failed(response_error_code(e), e.message, p.spec.total_usage())
        except asyncio.CancelledError:
            events.cancelled(p.spec.total_usage())
            raise
        except Exception:
            log.exception("response %s failed with an internal error",
                          p.response["id"] if p.request.store else "(store=false)")
            events.failed("server_error", "The server failed while producing this response.",
                          p.spec.total_usage())
        close_items(events)

    async def stream(self, p: Prepared) -> AsyncIterator[bytes]:
        """A streamed response: a producer task runs the loop, the SSE body follows a queue.

        The stream starts once the engine has accepted the request: a refusal before that (a
        rate limit, a context overflow, an unknown model) is this request's HTTP error, as
        for a plain request, and nothing is stored."""
        queue: asyncio.Queue[list[dict] | None] = asyncio.Queue()

        async def sink(batch: list[dict]) -> None:
            queue.put_nowait(batch)

        events = self.make_events(p, sink)
        accepted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        in_progress = _InProgressRecord(self, p)

        def on_accepted() -> None:
            if not accepted.done():
                accepted.set_result(None)
            in_progress.schedule()

        events.on_accepted = on_accepted

        async def produce() -> None:
            refused = False
            try:
                events.created()
                events.in_progress()
                await events.flush()
                await self.drive(p, events, raise_client_errors=lambda: not accepted.done())
            except APIError as e:
                refused = True
                accepted.set_exception(e)
            finally:
                if not refused:
                    if not accepted.done():
                        accepted.set_result(None)  # ended before any engine turn (or cancelled)
                    await self._finish_stream(p, events, queue, in_progress)

        task = self.spawn(produce())
        # Wait briefly for the engine to accept (it usually answers at once). An engine slow
        # to answer at all gets the stream started anyway, with keep-alives; a refusal after
        # that ends the stream as `response.failed`.
        await asyncio.wait([accepted], timeout=min(ACCEPT_GRACE, self.settings.keepalive_interval))
        if not accepted.done():
            on_accepted()
        await accepted  # the engine's refusal, if any, becomes this request's HTTP error
        return self._sse(queue, task)

    async def _finish_stream(self, p: Prepared, events: ResponseEvents, queue: asyncio.Queue,
                             in_progress: _InProgressRecord) -> None:
        if not events.done:
            events.cancelled(p.spec.total_usage())
            close_items(events)
        try:
            if p.request.store:
                written = await in_progress.settle()
                await self._save_final(p, None if written else p.input_items)
        finally:
            if events.pending and events.response["status"] != "cancelled":
                await events.flush()
            queue.put_nowait(None)

    async def _save_final(self, p: Prepared, input_items: list[dict] | None) -> None:
        """Store a finished stream. If the database is down the client still gets its end;
        the write is retried in the background, since this process keeps renewing the
        response's lease and nothing else would ever finish it."""
        record, output = p.save_record(), list(p.response["output"])
        try:
            # wait=False: a store that can (SQLite) lets the terminal event out before its commit,
            # which lands before anything the client sends next is read.
            await self.store.save_response(record, output, input_items, wait=False)
        except ServiceUnavailable:
            self.spawn(self._retry_save(record, output, input_items))

    async def _retry_save(self, record: ResponseRecord, output: list[dict], input_items: list[dict] | None) -> None:
        for attempt in range(1000):
            await asyncio.sleep(min(30.0, 0.5 * 2 ** attempt))
            try:
                await self.store.save_response(record, output, input_items)
                log.info("response %s stored after the database came back", record.id)
                return
            except ServiceUnavailable:
                continue

    async def _sse(self, queue: asyncio.Queue, task: asyncio.Task) -> AsyncIterator[bytes]:
        interval = self.settings.keepalive_interval
        try:
            while True:
                if queue.empty():
                    try:
                        async with asyncio.timeout(interval):
                            batch = await queue.get()
                    except TimeoutError:
                        yield KEEPALIVE
                        continue
                else:
                    batch = queue.get_nowait()
                if batch is None:
                    return
                # Everything produced meanwhile goes out in one write.
                events = list(batch)
                ended = False
                while not queue.empty():
                    more = queue.get_nowait()
                    if more is None:
                        ended = True
                        break
                    events.extend(more)
                yield sse_frames(events)
                if ended:
                    return
        finally:
            if not task.done():
                task.cancel()  # the client went away: stop the engine; produce() stores the end

    def spawn(self, coro: Any) -> asyncio.Task:
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

    # ---- read and delete -----------------------------------------------------------------------

    async def retrieve(self, rid: str, owner: str, include: tuple[str, ...] = ()) -> dict:
        response = await self.store.get_response(rid, owner)
        if response is None:
            raise not_found("Response", rid)
        if self.reasoning_vault is not None and "reasoning.encrypted_content" in include:
            await self.reasoning_vault.seal_output(response, owner)
        elif self.reasoning_vault is not None:
            self.reasoning_vault.strip_output(response)
        return response

    async def delete(self, rid: str, owner: str) -> dict:
        if not await self.store.delete_response(rid, owner):
            raise not_found("Response", rid)
        return {"id": rid, "object": "response", "deleted": True}

    async def input_items(self, rid: str, owner: str, *, after: str | None, before: str | None, limit: int,
                          order: str, include: tuple[str, ...] = ()) -> dict:
        page = await self.store.list_input_items(rid, owner, after=after, before=before, limit=limit, order=order)
        if page is None:
            raise not_found("Response", rid)
        data = page.items
        if self.media is not None and "message.input_image.image_url" in include:
            data = await self.media.include_image_urls(data, owner)
        if self.media is not None and "computer_call_output.output.image_url" in include:
            data = await self.media.include_screenshot_urls(data, owner)
        return {"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None, "has_more": page.has_more}


# The codes the SDKs type `response.error.code` with; anything else is reported as server_error
# (the message still says what happened).
RESPONSE_ERROR_CODES = frozenset({
    "server_error", "rate_limit_exceeded", "invalid_prompt", "invalid_image", "invalid_image_format",
    "invalid_base64_image", "invalid_image_url", "image_too_large", "image_too_small", "image_parse_error",
    "image_content_policy_violation", "invalid_image_mode", "image_file_too_large",
    "unsupported_image_media_type", "empty_image_file", "failed_to_download_image", "image_file_not_found",
})


def response_error_code(error: APIError) -> str:
    """A failed response's `error.code`: the error's own code when typed clients know it."""
    if error.code in RESPONSE_ERROR_CODES:
        return error.code
    if isinstance(error, InvalidRequest):
        return "invalid_prompt"
    if isinstance(error, RateLimited):
        return "rate_limit_exceeded"
    return "server_error"


class _InProgressRecord:
    """A stored stream's in-progress record (leased, for recovery after a crash; readable
    while it streams). Written once the stream has run for IN_PROGRESS_AFTER: most streams end
    sooner, and then one write stores them whole instead of two."""

    def __init__(self, service: ResponsesService, p: Prepared) -> None:
        self.service, self.p = service, p
        self.timer: asyncio.TimerHandle | None = None
        self.task: asyncio.Task | None = None

    def schedule(self) -> None:
        if self.p.request.store and self.timer is None and self.task is None:
            self.timer = asyncio.get_running_loop().call_later(IN_PROGRESS_AFTER, self._write)

    def _write(self) -> None:
        self.timer = None
        service, p = self.service, self.p
        lease = int(time.time()) + service.settings.lease_duration
        self.task = service.spawn(service.store.save_response(
            p.save_record(lease_owner=service.instance, lease_until=lease), [], p.input_items))

    async def settle(self) -> bool:
        """Before the final write: whether the in-progress record (with the input) is stored."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.task is None:
            return False
        await asyncio.wait([self.task])  # the final write must land after this one
        return self.task.exception() is None


def close_items(events: ResponseEvents) -> None:
    """Items still open when a response ends are marked incomplete."""
    for item in events.output:
        if item.get("status") in ("in_progress", "calling", "generating", "searching", "interpreting"):
            item["status"] = "incomplete" if item.get("type") in ("message", "function_call", "reasoning") \
                else "failed"


def _has_images(items: list[dict]) -> bool:
    for item in items:
        content = item.get("content") if item.get("type") == "message" else item.get("output")
        if isinstance(content, list) and any(p.get("type") == "input_image" for p in content):
            return True
        if item.get("type") == "computer_call_output":
            return True
    return False


def response_format(fmt: dict) -> dict | None:
    """`text.format` as Chat Completions' `response_format`."""
    kind = fmt.get("type")
    if kind == "json_schema":
        schema: dict[str, Any] = {"name": fmt["name"], "schema": fmt["schema"], "strict": bool(fmt.get("strict"))}
        if fmt.get("description"):
            schema["description"] = fmt["description"]
        return {"type": "json_schema", "json_schema": schema}
    if kind == "json_object":
        return {"type": "json_object"}
    return None
