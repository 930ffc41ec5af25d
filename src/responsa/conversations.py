"""Conversations: the `/conversations` use cases, and a conversation as a response's context.

`conversation` on create makes a conversation's items the response's context (prepare.py).
The response holds the conversation while it runs: it is stored as in progress (leased, like
a background run) when it starts, and its end appends its input and output to the
conversation, if it ended `completed` or `incomplete`, in the same store write that stores
that end (store/__init__.py, `save_response`). Until then another response on the
conversation, or a change to its items, is refused with `conversation_locked`, as the hosted
API answers; its process dying frees the conversation when its lease runs out.

A long conversation stays cheap to continue: this process keeps the items it last read of
each conversation with their state (revision, next position) and asks the store only for
what was appended since, and the history key it hands to the caches of chat rendering and
media resolution continues the previous state's (`chat.Continued`), so each turn looks only
at what is new.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

from . import checks as c
from .chat import Continued
from .config import Settings
from .errors import InvalidRequest, NotFound, not_found
from .ids import new_id
from .items import normalize_input
from .media import Media
from .protocol import metadata
from .reasoning import ReasoningVault
from .run import ResponseRun
from .store import ConversationRecord, Store, duplicate_item

MAX_ITEMS = 20  # items per create call, as the hosted API allows
CACHE_SIZE = 512  # conversations whose items this process keeps between turns


@dataclass
class _Cached:
    owner: str
    revision: int
    next_position: int
    items: list[dict]
    ids: set[str]
    types: set[str]


@dataclass(frozen=True)
class Context:
    """A conversation as a response's context: its items at one state."""

    id: str
    items: list[dict]
    key: Hashable | None  # names `items` for the history caches
    state: tuple[int, int]  # (revision, next position) the items were read at
    ids: set[str]
    types: set[str]  # the item types it holds (a superset: kept as it grows)

    @property
    def plain_key(self) -> Hashable | None:
        """The key of these items alone, without the earlier state it continues."""
        return self.key.key if isinstance(self.key, Continued) else self.key

    def types_with(self, input_items: Sequence[dict]) -> set[str]:
        """The item types of the conversation and this input, without looking at every item of
        a long conversation (steps that scan for a rare type can skip it)."""
        return self.types | {i["type"] for i in input_items}

    def check_input(self, input_items: Sequence[dict]) -> None:
        """The hosted API refuses input items whose id the conversation (or the input) already has."""
        seen: set[str] = set()
        for n, item in enumerate(input_items):
            item_id = item.get("id")
            if item_id is None:
                continue
            if item_id in self.ids or item_id in seen:
                raise duplicate_item(item_id, f"input[{n}]")
            seen.add(item_id)


class Conversations:
    """The Conversations API over one store, and conversations as responses' contexts."""

    def __init__(self, store: Store, settings: Settings, *, vault: ReasoningVault, media: Media,
                 instance: str) -> None:
        self.store = store
        self.retention = settings.retention
        self.lease_seconds = settings.lease_duration
        self.vault = vault
        self.media = media
        self.instance = instance
        self._cache: collections.OrderedDict[str, _Cached] = collections.OrderedDict()

    # ---- the API ----------------------------------------------------------------------------

    async def create(self, owner: str, items: Any, meta: dict[str, str]) -> dict:
        stored = await self._new_items(items if items is not None else [], owner)
        now = int(time.time())
        record = ConversationRecord(id=new_id("conv"), owner=owner, created_at=now, expires_at=now + self.retention,
                                    metadata=meta)
        await self.store.create_conversation(record, stored)
        return record.wire()

    async def retrieve(self, cid: str, owner: str) -> dict:
        return (await self._record(cid, owner)).wire()

    async def update(self, cid: str, owner: str, meta: dict[str, str]) -> dict:
        record = await self.store.update_conversation(cid, owner, meta, int(time.time()) + self.retention)
        if record is None:
            raise not_found("Conversation", cid)
        return record.wire()

    async def delete(self, cid: str, owner: str) -> dict:
        if not await self.store.delete_conversation(cid, owner):
            raise not_found("Conversation", cid)
        self._cache.pop(cid, None)
        return {"id": cid, "object": "conversation.deleted", "deleted": True}

    async def add_items(self, cid: str, owner: str, items: Any, include: tuple[str, ...]) -> dict:
        stored = await self._new_items(items, owner)
        if not await self.store.add_conversation_items(cid, owner, stored, int(time.time()) + self.retention):
            raise not_found("Conversation", cid)
        return _page(await self._present(stored, owner, include), has_more=False)

    async def list_items(self, cid: str, owner: str, *, after: str | None, limit: int, order: str,
                         include: tuple[str, ...]) -> dict:
        page = await self.store.list_conversation_items(cid, owner, after=after, limit=limit, order=order)
        if page is None:
            raise not_found("Conversation", cid)
        return _page(await self._present(page.items, owner, include), has_more=page.has_more)

    async def item(self, cid: str, owner: str, item_id: str, include: tuple[str, ...]) -> dict:
        await self._record(cid, owner)
        item = await self.store.get_conversation_item(cid, owner, item_id)
        if item is None:
            raise NotFound(f"Item with id '{item_id}' not found.", param="item_id", code="item_not_found")
        return (await self._present([item], owner, include))[0]

    async def delete_item(self, cid: str, owner: str, item_id: str) -> dict:
        """Delete one item; the answer is the conversation (as the SDKs type it)."""
        record = await self._record(cid, owner)
        if not await self.store.delete_conversation_item(cid, owner, item_id):
            raise NotFound(f"Item with id '{item_id}' not found.", param="item_id", code="item_not_found")
        return record.wire()

    async def _record(self, cid: str, owner: str) -> ConversationRecord:
        record = await self.store.get_conversation(cid, owner)
        if record is None:
            raise not_found("Conversation", cid)
        return record

    async def _new_items(self, value: Any, owner: str) -> list[dict]:
        """Items to add, as they are stored (item references and encrypted reasoning opened)."""
        if not isinstance(value, list):
            raise c.wrong_type("items", "an array", value)
        if len(value) > MAX_ITEMS:
            raise InvalidRequest(f"Invalid 'items': array too long. Expected an array with maximum length "
                                 f"{MAX_ITEMS}, but got an array with length {len(value)} instead.", param="items",
                                 code="array_above_max_length")
        items = normalize_input(value, "items")
        try:
            items = await self.vault.open_items(items, owner)
        except InvalidRequest as e:  # the vault names `input[n]`
            raise InvalidRequest(e.message.replace("input[", "items[", 1), param=(e.param or "").replace(
                "input[", "items[", 1), code=e.code) from None
        refs = [i["id"] for i in items if i["type"] == "item_reference"]
        found = await self.store.find_items(owner, refs) if refs else {}
        seen: set[str] = set()
        for n, item in enumerate(items):
            if item["type"] == "item_reference":
                stored = found.get(item["id"])
                if stored is None:
                    raise NotFound(f"Item with id '{item['id']}' not found.", param=f"items[{n}]",
                                   code="item_not_found")
                items[n] = item = stored
            if item["id"] in seen:
                raise duplicate_item(item["id"], f"items[{n}]")
            seen.add(item["id"])
        return items

    async def _present(self, items: list[dict], owner: str, include: tuple[str, ...]) -> list[dict]:
        """Items as a listing shows them (`include` as for a response's input items)."""
        if "message.input_image.image_url" in include:
            items = await self.media.include_image_urls(items, owner)
        if "computer_call_output.output.image_url" in include:
            items = await self.media.include_screenshot_urls(items, owner)
        shown = {"output": [dict(i) for i in items]}  # sealing and stripping change the items
        if "reasoning.encrypted_content" in include:
            await self.vault.seal_output(shown, owner)
        else:
            self.vault.strip_output(shown)
        return shown["output"]

    # ---- as a response's context ---------------------------------------------------------------

    async def context(self, cid: str, owner: str) -> Context:
        """The conversation's items now, read in one store round trip (only what is new since
        this process last read it)."""
        cached = self._cache.get(cid)
        if cached is not None and cached.owner != owner:
            cached = None
        known = (cached.revision, cached.next_position) if cached is not None else None
        state = await self.store.load_conversation(cid, owner, known)
        if state is None:
            raise not_found("Conversation", cid, param="conversation")
        key: Hashable = ("conversation", cid, state.revision, state.next_position)
        if state.delta and cached is not None:
            items, ids, types = cached.items, cached.ids, cached.types
            if state.items:
                key = Continued(key, ("conversation", cid, cached.revision, cached.next_position), len(items))
                items = [*items, *state.items]
                ids.update(i["id"] for i in state.items)  # only ever grows within a revision
                types.update(i["type"] for i in state.items)
        else:
            items, ids, types = state.items, {i["id"] for i in state.items}, {i["type"] for i in state.items}
        if cached is None or state.next_position >= cached.next_position or state.revision != cached.revision:
            self._cache[cid] = _Cached(owner, state.revision, state.next_position, items, ids, types)
            self._cache.move_to_end(cid)
            if len(self._cache) > CACHE_SIZE:
                self._cache.popitem(last=False)
        # An empty history needs no cache entry (a conversation's first turn renders nothing).
        return Context(cid, items, key if items else None, (state.revision, state.next_position), ids, types)

    async def begin(self, run: ResponseRun, context: Context) -> None:
        """Hold the conversation for `run`: the response is stored as in progress, leased to this
        process, with its input (written now, not again)."""
        run.record.conversation_id = context.id
        record = run.save_record(lease_owner=self.instance, lease_until=int(time.time()) + self.lease_seconds)
        await self.store.begin_conversation_response(record, run.input_items or [], context.state)
        run.input_items = None


def parse_metadata(body: dict, *, required: bool = False) -> dict[str, str]:
    """`metadata` of a conversation body (null clears it)."""
    if required and "metadata" not in body:
        raise c.missing("metadata")
    return metadata(body)


def _page(items: list[dict], *, has_more: bool) -> dict:
    return {"object": "list", "data": items, "first_id": items[0]["id"] if items else None,
            "last_id": items[-1]["id"] if items else None, "has_more": has_more}
