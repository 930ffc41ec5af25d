"""From a checked create request to a run ready to start: the context assembled, nothing stored.

The earlier chain (or the conversation, see conversations.py) is loaded in one store round
trip, item references and sealed reasoning are opened, the model is routed, images and files
are resolved for the engine, and the toolset is built and validated. Every failure here is the
request's HTTP error: nothing has been stored. Only a response on a conversation is stored
before it starts (in progress, holding the conversation), as the last step.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from .backends import ModelOptions
from .compaction import AutoCompaction, open_context
from .config import Settings
from .conversations import Context, Conversations
from .errors import InvalidRequest, NotFound, not_found
from .events import TERMINAL
from .fetcher import Fetcher
from .ids import response_id
from .loop import RunSpec
from .media import Media
from .protocol import CreateRequest
from .reasoning import ReasoningVault
from .router import Router
from .run import LiveRuns, ResponseRun
from .shapes import ResponseObject
from .store import ResponseRecord, Store
from .tools import ToolContext, ToolSet, public_tools


class LocalChain(Protocol):
    """Earlier responses the store does not hold (a WebSocket connection's store=false
    responses), and where a request made there leaves its own context."""

    def items(self, rid: str) -> list[dict] | None:
        """Every item up to and including response `rid` (inputs and outputs), if held."""

    def begin(self, rid: str, context: list[dict], rebuildable: bool) -> None:
        """Response `rid` runs on `context`; `rebuildable`: the store alone could rebuild it."""


class Preparer:
    """Builds `ResponseRun`s: everything a response needs before its first event."""

    def __init__(self, store: Store, router: Router, settings: Settings, *, vault: ReasoningVault,
                 media: Media, live: LiveRuns, fetcher: Fetcher, conversations: Conversations) -> None:
        self.store = store
        self.fetcher = fetcher
        self.live = live
        self.router = router
        self.settings = settings
        self.vault = vault
        self.media = media
        self.conversations = conversations

    async def prepare(self, req: CreateRequest, owner: str, rid: str | None = None,
                      created_at: int | None = None, local: LocalChain | None = None) -> ResponseRun:
        history: list[dict] = []
        history_key = None
        earlier = None
        if local is not None and req.previous_response_id:
            earlier = local.items(req.previous_response_id)
        context: Context | None = None
        if req.conversation is not None:
            context = await self.conversations.context(req.conversation, owner)
            history, history_key = context.items, context.key
        elif earlier is not None:
            history, history_key = list(earlier), ("chain", req.previous_response_id)
        elif req.previous_response_id:
            try:
                chain = await self.store.load_chain(req.previous_response_id, owner)
            except NotFound:
                # A stream this process started a moment ago is not stored yet: in progress, not unknown.
                if self.live.get(req.previous_response_id, owner) is None:
                    raise
                raise _in_progress(req.previous_response_id, "in_progress") from None
            last = chain[-1]
            if last.status not in TERMINAL:
                raise _in_progress(last.id, last.status)
            for link in chain:
                history.extend(link.input)
                history.extend(link.output)
            history_key = ("chain", last.id)
        # Sealed reasoning is opened before references resolve: stored items are trusted.
        input_items = await self.vault.open_items(req.input, owner)
        input_items = await self._resolve_references(input_items, owner)
        if context is not None:
            context.check_input(input_items)
        target = self.router.resolve(req.model)
        # What the engine is sent has file ids and URLs resolved; stored items keep them as given.
        sent, history_as_stored = await self.media.resolve(
            [*history, *input_items], owner, target, first_input=len(history), history_key=history_key)
        known_types = context.types_with(input_items) if context is not None else None
        history_length: int | None = len(history)
        if known_types is None or "compaction" in known_types:  # (else nothing to open: skip looking)
            sent, history_length = open_context(self.vault, sent, owner, len(history))  # compaction items
        if context is not None and history_length != len(history):
            history_key = context.plain_key  # compaction items changed it: nothing to continue from
        created_at = created_at or int(time.time())
        rid = rid or response_id()
        response: ResponseObject = {
            **req.echo(), "id": rid, "object": "response", "created_at": created_at, "status": "in_progress",
            "completed_at": None, "error": None, "incomplete_details": None, "model": req.model,
            "output": [], "usage": None, "tools": public_tools(req.tools),
        }
        if context is not None:
            response["conversation"] = {"id": context.id}
        record = ResponseRecord(id=rid, owner=owner, created_at=created_at,
                                expires_at=created_at + self.settings.retention, status="in_progress", body={},
                                background=req.background, previous_response_id=req.previous_response_id,
                                ephemeral=req.background and not req.store)
        ctx = ToolContext(events=None, history=[*history, *input_items],  # type: ignore[arg-type]
                          request_headers=req.headers, input_start=len(history),
                          load_file=self._file_loader(owner), settings=self.settings, fetcher=self.fetcher,
                          accepts_images=target.backend.accepts_images(target.model), history_types=known_types,
                          owner=owner, include=req.include)
        # An earlier chain is sent as stored (nothing in it resolved differently): chat.py may
        # then reuse its rendering, keyed by the chain's last response.
        prefix = (history_key, history_length) if history_key and history_as_stored and history_length else None
        options = ModelOptions(
            instructions=req.instructions, response_format=response_format(req.text_format),
            temperature=req.temperature, top_p=req.top_p, reasoning_effort=(req.reasoning or {}).get("effort"),
            user=req.user, stream=req.stream or req.background, truncation=req.truncation)
        spec = RunSpec(
            backend=target.backend, model=target.model, history=sent, history_prefix=prefix,
            toolset=ToolSet.build(req.tools, ctx), tool_ctx=ctx, options=options, tool_choice=req.tool_choice,
            parallel_tool_calls=req.parallel_tool_calls, max_tool_calls=req.max_tool_calls,
            max_output_tokens=req.max_output_tokens, generate=req.generate,
            compaction=None if req.compact_threshold is None else
            AutoCompaction(self.vault, owner, req.compact_threshold or None))
        await spec.toolset.validate(ctx)  # e.g. an MCP server on a private address: a 400, nothing stored
        run = ResponseRun(store=self.store, request=req, owner=owner, response=response, record=record,
                          input_items=input_items, spec=spec, dialect=self.settings.stream_dialect,
                          unstored_window=self.settings.unstored_background_window)
        if "reasoning.encrypted_content" in req.include:
            self.vault.seal_done_items(run.events, owner)
        if context is not None:
            await self.conversations.begin(run, context)
        if local is not None:
            local.begin(rid, [*history, *input_items], rebuildable=req.store and earlier is None)
        return run

    def _file_loader(self, owner: str) -> Callable[[str], Awaitable[tuple[bytes, str]]]:
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


def _in_progress(rid: str, status: str) -> InvalidRequest:
    return InvalidRequest(f"Previous response with id '{rid}' is still {status}; wait for it to finish.",
                          param="previous_response_id", code="previous_response_in_progress")


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
