"""A response's output rebuilt from its stored stream events.

A background run stores its output only when it starts and when it ends, but every event as
it goes. When the process running it dies, the replica that ends the run rebuilds what the
stream already showed (items added, text streamed) so that the stored response and its
terminal event agree with what followers saw.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable

# Deltas that grow a string field of the item itself (not of a content or summary part).
_ITEM_DELTAS = {
    "response.function_call_arguments.delta": "arguments",
    "response.custom_tool_call_input.delta": "input",
    "response.mcp_call_arguments.delta": "arguments",
}


def output_from_events(events: Iterable[dict]) -> tuple[list[dict], list[int]]:
    """The output items as the events left them, and the indexes of items never done."""
    output: list[dict] = []
    still_open: set[int] = set()
    for ev in events:
        kind = ev.get("type", "")
        index = ev.get("output_index")
        try:
            if kind == "response.output_item.added" and index == len(output):
                output.append(copy.deepcopy(ev["item"]))
                still_open.add(index)
            elif kind == "response.output_item.done" and isinstance(index, int) and index < len(output):
                output[index] = copy.deepcopy(ev["item"])
                still_open.discard(index)
            elif isinstance(index, int) and index < len(output):
                _apply(output[index], kind, ev)
        except (KeyError, IndexError, TypeError):
            continue  # an event of a shape this replay does not know changes nothing
    return output, sorted(still_open)


def _apply(item: dict, kind: str, ev: dict) -> None:
    if kind == "response.content_part.added":
        item.setdefault("content", []).append(dict(ev["part"]))
    elif kind == "response.content_part.done":
        item["content"][ev["content_index"]] = dict(ev["part"])
    elif kind == "response.reasoning_summary_part.added":
        item.setdefault("summary", []).append(dict(ev["part"]))
    elif kind == "response.reasoning_summary_part.done":
        item["summary"][ev["summary_index"]] = dict(ev["part"])
    elif kind in _ITEM_DELTAS:
        field = _ITEM_DELTAS[kind]
        item[field] = (item.get(field) or "") + ev["delta"]
    elif kind.endswith(".delta") and "summary_index" in ev:
        part = item["summary"][ev["summary_index"]]
        part["text"] = part.get("text", "") + ev["delta"]
    elif kind.endswith(".delta") and "content_index" in ev:
        part = item["content"][ev["content_index"]]
        field = "refusal" if kind == "response.refusal.delta" else "text"
        part[field] = part.get(field, "") + ev["delta"]
