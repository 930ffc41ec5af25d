"""The life of a hosted search call's output item (`web_search_call`, `file_search_call`).

The hosted API streams such a call the same way whatever searched: `output_item.added` (status
`in_progress`), `response.<type>.in_progress`, `.searching`, `.completed`, then
`output_item.done`. A call that fails ends `failed` with no event of its own before the done.

What the search found is not in the item (the item shows the action, and sources only when
asked for): the model is told through a model-only note, `hosted_call_output`, which chat.py
renders as the result of the call the item stands for. Notes are never output or stored, so a
later response sees the item's own summary instead (see chat.py).
"""

from __future__ import annotations

from typing import Any

from .events import ResponseEvents
from .tools import ToolContext


class HostedCall:
    """One hosted call's item, from added to done."""

    def __init__(self, events: ResponseEvents, item: dict) -> None:
        self.events = events
        self.item = item
        self.prefix = f"response.{item['type']}"
        item["status"] = "in_progress"
        self.index = events.add_item(item)

    @classmethod
    async def start(cls, events: ResponseEvents, item: dict) -> HostedCall:
        """Add the item and announce the call (`added`, `.in_progress`, then `.searching`)."""
        call = cls(events, item)
        events.item_event(f"{call.prefix}.in_progress", call.index)
        await events.flush()
        item["status"] = "searching"
        events.item_event(f"{call.prefix}.searching", call.index)
        await events.flush()
        return call

    def completed(self, **fields: Any) -> None:
        """The call found what it found: its last fields (new values, never changed in place: events
        already queued hold the old ones), `.completed`, then the item done."""
        self.item.update(fields)
        self.item["status"] = "completed"
        self.events.item_event(f"{self.prefix}.completed", self.index)
        self.events.done_item(self.index)

    def failed(self, **fields: Any) -> None:
        """The call failed (the hosted API has no `.failed` event for it): the item done, `failed`."""
        self.item.update(fields)
        self.item["status"] = "failed"
        self.events.done_item(self.index)

    def tell_model(self, ctx: ToolContext, output: str) -> None:
        """What the model reads as the call's result in the rest of this response."""
        ctx.model_notes.append((self.index, {"type": "hosted_call_output", "id": self.item["id"],
                                             "output": output}))
