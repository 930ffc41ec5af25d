"""The stream-event grammar of one response: numbering and the added -> delta -> done order.

`ResponseEvents` owns the Response object while it is produced. The loop and the tools call
its methods (`text_delta`, `function_call_start`, `add_item`, ...); it keeps the output items
and, when someone listens, queues the matching events with `sequence_number`s from 0.
`flush()` hands the queued events to the sink: an SSE stream, a background run's event log,
or nobody (a non-streamed request, which then builds no events at all).

Every event holds copies of what it shows, so it can be serialised later without seeing
later changes. The canonical orders come from `shared/spec/responses-wire.md` §6.3.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from .ids import function_call_id, message_id, new_id, reasoning_id
from .shapes import Event, Item, ResponseObject, Status

Sink = Callable[[list[Event]], Awaitable[None]]
TERMINAL = frozenset({"completed", "incomplete", "failed", "cancelled"})

# Raw reasoning text events: the SDKs' names, or the Open Responses specification's.
REASONING_EVENT_NAMES = {
    "openai": ("response.reasoning_text.delta", "response.reasoning_text.done"),
    "open-responses": ("response.reasoning.delta", "response.reasoning.done"),
}


def empty_usage() -> dict:
    return {"input_tokens": 0, "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
            "output_tokens": 0, "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 0}


class ResponseEvents:
    """Builds one Response and, if anyone listens, its stream events."""

    def __init__(self, response: ResponseObject, sink: Sink | None = None, *, dialect: str = "openai",
                 first_sequence_number: int = 0) -> None:
        self.response = response
        self.output: list[Item] = response["output"]
        self.sink = sink
        self.live = sink is not None
        self.seq = first_sequence_number
        self.pending: list[Event] = []
        self._reasoning_names = REASONING_EVENT_NAMES[dialect]
        # Open items being streamed: index of the message / reasoning item, or None.
        self._message: int | None = None
        self._message_chunks: list[str] = []
        self._message_part: str = "output_text"
        self._reasoning: int | None = None
        # Called once, when an engine first accepts a turn (see backends.TurnStart).
        self.on_accepted: Callable[[], None] | None = None
        # Text of the reasoning item's open content part / summary part (None: none open).
        self._reasoning_chunks: list[str] | None = None
        self._summary_chunks: list[str] | None = None
        # Called with each item just before its `response.output_item.done` (the reasoning
        # vault adds `encrypted_content` there).
        self.item_done_hooks: list[Callable[[dict], None]] = []
        # Called with an assistant message's whole text as it ends: the annotations to add to it
        # (a hosted tool's citations), each announced by `response.output_text.annotation.added`.
        self.annotators: list[Callable[[str], list[dict]]] = []

    # ---- plumbing -------------------------------------------------------------------------

    def emit(self, type_: str, **fields: Any) -> None:
        """Queue one event (callers pass copies of anything they will change later)."""
        if self.live:
            fields["type"] = type_
            fields["sequence_number"] = self.seq
            self.pending.append(fields)
        self.seq += 1

    async def flush(self, *, force: bool = False) -> None:
        """Hand the queued events to the sink (with `force`, even none: a sink that keeps what
        it could not deliver tries again)."""
        if self.pending or force:
            batch, self.pending = self.pending, []
            await self.sink(batch)  # type: ignore[misc]

    def snapshot(self) -> ResponseObject:
        snap = self.response.copy()
        snap["output"] = list(self.output)
        return snap

    def accepted(self) -> None:
        if self.on_accepted is not None:
            callback, self.on_accepted = self.on_accepted, None
            callback()

    # ---- lifecycle ------------------------------------------------------------------------

    def created(self) -> None:
        if self.live:
            self.emit("response.created", response=self.snapshot())
        else:
            self.seq += 1

    def queued(self) -> None:
        self.response["status"] = "queued"
        if self.live:
            self.emit("response.queued", response=self.snapshot())
        else:
            self.seq += 1

    def in_progress(self) -> None:
        self.response["status"] = "in_progress"
        if self.live:
            self.emit("response.in_progress", response=self.snapshot())
        else:
            self.seq += 1

    def _finish(self, status: Status, event: str | None) -> None:
        self.close_open_items("completed" if status == "completed" else "incomplete")
        self.response["status"] = status
        if status == "completed":
            self.response["completed_at"] = int(time.time())
        if event is not None and self.live:
            self.emit(event, response=self.snapshot())
        elif event is not None:
            self.seq += 1

    def completed(self, usage: dict) -> None:
        self.response["usage"] = usage
        self._finish("completed", "response.completed")

    def incomplete(self, reason: str, usage: dict) -> None:
        self.response["usage"] = usage
        self.response["incomplete_details"] = {"reason": reason}
        self._finish("incomplete", "response.incomplete")

    def failed(self, code: str, message: str, usage: dict | None = None) -> None:
        """A failure after the response exists: `response.failed` carrying the error.

        No `error` event precedes it: the SDKs and the Open Responses schema disagree on its
        shape (top-level fields versus a nested `error`, which the SDKs raise on), and the
        terminal event already says everything."""
        self.response["usage"] = usage
        self.response["error"] = {"code": code, "message": message}
        self._finish("failed", "response.failed")

    def cancelled(self, usage: dict | None = None) -> None:
        """Cancelled or abandoned: there is no `response.cancelled` event; streams just end."""
        self.response["usage"] = usage
        self._finish("cancelled", None)

    @property
    def done(self) -> bool:
        return self.response["status"] in TERMINAL

    # ---- generic items (server-side tools use these) ------------------------------------------

    def add_item(self, item: dict) -> int:
        """Append an output item and announce it (`response.output_item.added`)."""
        self.close_open_items()
        index = len(self.output)
        self.output.append(item)
        if self.live:
            self.emit("response.output_item.added", output_index=index, item=_copy_item(item))
        else:
            self.seq += 1
        return index

    def item_event(self, type_: str, index: int, **fields: Any) -> None:
        """An event about an added item (`item_id` and `output_index` filled in)."""
        if self.live:
            self.emit(type_, item_id=self.output[index]["id"], output_index=index, **fields)
        else:
            self.seq += 1

    def done_item(self, index: int) -> None:
        for hook in self.item_done_hooks:
            hook(self.output[index])
        if self.live:
            self.emit("response.output_item.done", output_index=index, item=_copy_item(self.output[index]))
        else:
            self.seq += 1

    def close_open_items(self, status: str = "completed") -> None:
        if self._reasoning is not None:
            self._close_reasoning(status)
        if self._message is not None:
            self._close_message(status)

    # ---- assistant text --------------------------------------------------------------------

    def text_delta(self, text: str) -> None:
        self._message_delta(text, "output_text")

    def refusal_delta(self, text: str) -> None:
        self._message_delta(text, "refusal")

    def _message_delta(self, text: str, part_type: str) -> None:
        if self._reasoning is not None:
            self._close_reasoning("completed")
        if self._message is not None and self._message_part != part_type:
            self._close_message("completed")
        if self._message is None:
            index = self.add_item({"id": message_id(), "type": "message", "role": "assistant",
                                   "status": "in_progress", "content": []})
            self._message, self._message_part, self._message_chunks = index, part_type, []
            part = ({"type": "output_text", "text": "", "annotations": [], "logprobs": []}
                    if part_type == "output_text" else {"type": "refusal", "refusal": ""})
            self.output[index]["content"].append(part)
            self.item_event("response.content_part.added", index, content_index=0, part=dict(part))
        self._message_chunks.append(text)
        if self.live:
            if part_type == "output_text":
                self.item_event("response.output_text.delta", self._message, content_index=0, delta=text,
                                logprobs=[])
            else:
                self.item_event("response.refusal.delta", self._message, content_index=0, delta=text)
        else:
            self.seq += 1

    def _close_message(self, status: str) -> None:
        index = self._message
        assert index is not None
        self._message = None
        item = self.output[index]
        text = "".join(self._message_chunks)
        part = item["content"][0]
        if part["type"] == "output_text":
            part["text"] = text
            for annotate in self.annotators:
                for annotation in annotate(text):
                    part["annotations"].append(annotation)
                    self.item_event("response.output_text.annotation.added", index, content_index=0,
                                    annotation_index=len(part["annotations"]) - 1, annotation=dict(annotation))
            self.item_event("response.output_text.done", index, content_index=0, text=text, logprobs=[])
        else:
            part["refusal"] = text
            self.item_event("response.refusal.done", index, content_index=0, refusal=text)
        self.item_event("response.content_part.done", index, content_index=0, part=dict(part))
        item["status"] = status
        self.done_item(index)

    # ---- reasoning -------------------------------------------------------------------------

    def _open_reasoning(self) -> int:
        if self._message is not None:
            # Reasoning after text starts a new reasoning item; close the message first.
            self._close_message("completed")
        if self._reasoning is None:
            self._reasoning = self.add_item({"id": reasoning_id(), "type": "reasoning", "summary": [],
                                             "content": [], "status": "in_progress"})
            self._reasoning_chunks = self._summary_chunks = None
        return self._reasoning

    def reasoning_delta(self, text: str) -> None:
        """Raw reasoning text (`reasoning_text` content, `response.reasoning_text.delta`)."""
        index = self._open_reasoning()
        content = self.output[index]["content"]
        if self._summary_chunks is not None:
            self._close_summary_part(index)
        if self._reasoning_chunks is None:
            part = {"type": "reasoning_text", "text": ""}
            content.append(part)
            self.item_event("response.content_part.added", index, content_index=len(content) - 1,
                            part=dict(part))
            self._reasoning_chunks = []
        self._reasoning_chunks.append(text)
        self.item_event(self._reasoning_names[0], index, content_index=len(content) - 1, delta=text)

    def reasoning_summary_delta(self, text: str) -> None:
        """Summary text the engine gave (`summary_text`, `response.reasoning_summary_text.delta`)."""
        index = self._open_reasoning()
        summary = self.output[index]["summary"]
        if self._reasoning_chunks is not None:
            self._close_content_part(index)
        if self._summary_chunks is None:
            part = {"type": "summary_text", "text": ""}
            summary.append(part)
            self.item_event("response.reasoning_summary_part.added", index, summary_index=len(summary) - 1,
                            part=dict(part))
            self._summary_chunks = []
        self._summary_chunks.append(text)
        self.item_event("response.reasoning_summary_text.delta", index, summary_index=len(summary) - 1,
                        delta=text)

    def _close_summary_part(self, index: int) -> None:
        summary = self.output[index]["summary"]
        part = summary[-1]
        part["text"] = "".join(self._summary_chunks or ())
        self._summary_chunks = None
        k = len(summary) - 1
        self.item_event("response.reasoning_summary_text.done", index, summary_index=k, text=part["text"])
        self.item_event("response.reasoning_summary_part.done", index, summary_index=k, part=dict(part))

    def _close_content_part(self, index: int) -> None:
        content = self.output[index]["content"]
        part = content[-1]
        part["text"] = "".join(self._reasoning_chunks or ())
        self._reasoning_chunks = None
        k = len(content) - 1
        self.item_event(self._reasoning_names[1], index, content_index=k, text=part["text"])
        self.item_event("response.content_part.done", index, content_index=k, part=dict(part))

    def _close_reasoning(self, status: str) -> None:
        index = self._reasoning
        assert index is not None
        self._reasoning = None
        if self._summary_chunks is not None:
            self._close_summary_part(index)
        if self._reasoning_chunks is not None:
            self._close_content_part(index)
        self.output[index]["status"] = status
        self.done_item(index)

    def reasoning_item(self, item: dict) -> int:
        """A complete reasoning item (for example one with summaries), announced whole."""
        seed = {k: v for k, v in item.items() if k not in ("content", "encrypted_content")}
        seed["summary"] = []
        if isinstance(item.get("content"), list):
            seed["content"] = []  # never `null`: the Open Responses schema wants an array
        index = self.add_item(seed)
        for k, part in enumerate(item.get("summary", [])):
            self.item_event("response.reasoning_summary_part.added", index, summary_index=k,
                            part={"type": "summary_text", "text": ""})
            self.item_event("response.reasoning_summary_text.delta", index, summary_index=k, delta=part["text"])
            self.item_event("response.reasoning_summary_text.done", index, summary_index=k, text=part["text"])
            self.item_event("response.reasoning_summary_part.done", index, summary_index=k, part=dict(part))
        for k, part in enumerate(item.get("content") or []):
            self.item_event("response.content_part.added", index, content_index=k,
                            part={"type": "reasoning_text", "text": ""})
            self.item_event(self._reasoning_names[0], index, content_index=k, delta=part["text"])
            self.item_event(self._reasoning_names[1], index, content_index=k, text=part["text"])
            self.item_event("response.content_part.done", index, content_index=k, part=dict(part))
        self.output[index] = dict(item)
        self.done_item(index)
        return index

    # ---- function calls ----------------------------------------------------------------------

    def function_call_start(self, call_id: str, name: str, namespace: str | None = None) -> int:
        item = {"id": function_call_id(), "type": "function_call", "status": "in_progress",
                "call_id": call_id, "name": name, "arguments": ""}
        if namespace is not None:
            item["namespace"] = namespace
        return self.add_item(item)

    def function_call_delta(self, index: int, delta: str) -> None:
        self.output[index]["arguments"] += delta
        self.item_event("response.function_call_arguments.delta", index, delta=delta)

    def function_call_done(self, index: int, status: str = "completed") -> None:
        item = self.output[index]
        self.item_event("response.function_call_arguments.done", index, arguments=item["arguments"],
                        name=item["name"])
        item["status"] = status
        self.done_item(index)

    def function_call(self, call_id: str, name: str, arguments: str, namespace: str | None = None) -> int:
        index = self.function_call_start(call_id, name, namespace)
        if arguments:
            self.function_call_delta(index, arguments)
        self.function_call_done(index)
        return index

    def custom_tool_call(self, call_id: str, name: str, input_: str, namespace: str | None = None) -> int:
        item = {"id": new_id("ctc"), "type": "custom_tool_call", "status": "in_progress", "call_id": call_id,
                "name": name, "input": ""}
        if namespace is not None:
            item["namespace"] = namespace
        index = self.add_item(item)
        if input_:
            self.item_event("response.custom_tool_call_input.delta", index, delta=input_)
        self.item_event("response.custom_tool_call_input.done", index, input=input_)
        item = self.output[index]
        item["input"] = input_
        item["status"] = "completed"
        self.done_item(index)
        return index


def _copy_item(item: dict) -> dict:
    out = dict(item)
    content = out.get("content")
    if isinstance(content, list):
        out["content"] = [dict(p) for p in content]
    summary = out.get("summary")
    if isinstance(summary, list):
        out["summary"] = [dict(p) for p in summary]
    return out
