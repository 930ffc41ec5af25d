"""The turn loop: a backend turn, then tool calls, then the next turn, until an answer.

No HTTP and no database here: the loop sees the `Backend` and `Tool` protocols and writes
everything it produces through `ResponseEvents`. It raises `APIError`s and lets the
service decide whether they become an HTTP error or a `failed` response.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace

from .arguments import ArgumentsRepair, InvalidArguments, check_arguments, closing
from .backends import (
    NO_OPTIONS,
    Backend,
    ModelOptions,
    ReasoningDelta,
    ReasoningSummaryDelta,
    RefusalDelta,
    TextDelta,
    ToolCallDelta,
    TurnEnd,
    TurnRequest,
    TurnStart,
    Usage,
    merge_usage,
    usage_json,
)
from .errors import InvalidRequest
from .events import ResponseEvents
from .ids import call_id as new_call_id
from .tools import Outcome, Tool, ToolCall, ToolContext, ToolSet, chat_tool_choice

MAX_TURNS = 16


@dataclass
class RunSpec:
    """One response's run: what to ask, of whom, with which tools."""

    backend: Backend
    model: str  # the engine's own model name
    history: Sequence[dict]  # the conversation before this response's output
    toolset: ToolSet
    tool_ctx: ToolContext
    options: ModelOptions = NO_OPTIONS
    tool_choice: str | dict = "auto"
    parallel_tool_calls: bool = True
    max_tool_calls: int | None = None
    max_output_tokens: int | None = None
    generate: bool = True  # False: no turn at all (a warm-up); the response completes empty
    # (key, n): history[:n] is an earlier chain that never changes (see chat.to_messages)
    history_prefix: tuple[object, int] | None = None
    usage: list[Usage | None] = field(default_factory=list)
    # Before the first turn: (spec, history, events) -> a compacted history, or None to keep it
    # (compaction.AutoCompaction, for `context_management`).
    compaction: Callable[[RunSpec, list[dict], ResponseEvents], Awaitable[list[dict] | None]] | None = None

    def total_usage(self) -> dict:
        return usage_json(merge_usage(self.usage))


@dataclass
class _Call:
    call_id: str
    name: str = ""
    arguments: list[str] = field(default_factory=list)
    index: int | None = None  # output index once a streamed function_call item is open
    repair: ArgumentsRepair = field(default_factory=ArgumentsRepair)


async def run(spec: RunSpec, events: ResponseEvents) -> None:
    """Produce the response's output and finish it (completed / incomplete / failed)."""
    ctx = spec.tool_ctx
    if not spec.generate:
        events.completed(spec.total_usage())
        return
    await spec.toolset.prepare(ctx)
    await events.flush()
    server_calls = 0
    history = list(spec.history)
    if spec.compaction is not None:
        history = await spec.compaction(spec, history, events) or history
    for turn in range(MAX_TURNS):
        budget_left = spec.max_tool_calls is None or server_calls < spec.max_tool_calls
        last_turn = turn == MAX_TURNS - 1
        offer_tools = budget_left and not last_turn
        functions: list[dict] = []
        choice: str | dict | None = None
        if offer_tools and spec.toolset.tools:
            requested = spec.tool_choice if turn == 0 else after_first_turn(spec.tool_choice)
            choice, allowed = chat_tool_choice(requested, spec.toolset)
            functions = spec.toolset.functions(allowed)
            if not functions:
                choice = None
        max_tokens = None
        if spec.max_output_tokens is not None:
            used = sum(u.output_tokens for u in spec.usage if u is not None)
            max_tokens = spec.max_output_tokens - used
            if max_tokens <= 0:
                events.incomplete("max_output_tokens", spec.total_usage())
                return
        request = TurnRequest(
            model=spec.model, items=conversation(history, events.output, ctx.model_notes),
            tools=functions, tool_choice=choice if functions else None,
            parallel_tool_calls=spec.parallel_tool_calls if functions else None,
            options=spec.options, max_output_tokens=max_tokens,
            prefix=spec.history_prefix if len(history) == len(spec.history) else None,
        )
        finish, calls = await _turn(spec, request, events, history)
        events.close_open_items("incomplete" if finish == "length" else "completed")
        if finish == "length" or finish == "content_filter":
            for call in calls:
                if call.index is not None:
                    events.function_call_done(call.index, status="incomplete")
            events.incomplete("max_output_tokens" if finish == "length" else "content_filter",
                              spec.total_usage())
            return
        if not calls:
            events.completed(spec.total_usage())
            return
        stop = False
        for call in calls:
            tool = spec.toolset.owner(call.name)
            arguments = _settle(events, call, tool)
            if call.index is not None:
                events.function_call_done(call.index)
                stop = True
            elif tool is None:
                # A name the model invented: hand it to the client like any function call.
                events.function_call(call.call_id, call.name, arguments)
                stop = True
            elif not tool.client_side and (not offer_tools or (spec.max_tool_calls is not None
                                                               and server_calls >= spec.max_tool_calls)):
                # Past max_tool_calls further calls are ignored, as the hosted API does; the
                # next turn offers no tools, so the model answers with what it has. A call made
                # on a turn that offered no tools (the last one) is not run either: no model
                # would ever see its output.
                continue
            else:
                outcome = await tool.invoke(ToolCall(call.call_id, call.name, arguments), ctx)
                if outcome is Outcome.STOP:
                    stop = True
                else:
                    server_calls += 1
            await events.flush()
        if stop:
            events.completed(spec.total_usage())
            return
    events.completed(spec.total_usage())


async def _turn(spec: RunSpec, request: TurnRequest, events: ResponseEvents,
                history: list[dict]) -> tuple[str, list[_Call]]:
    """One backend turn, retried with fewer items if it overflows and truncation is auto."""
    while True:
        calls: dict[int, _Call] = {}
        finish = "stop"
        emitted = events.seq
        try:
            async for ev in spec.backend.turn(request):
                if isinstance(ev, TextDelta):
                    events.text_delta(ev.text)
                elif isinstance(ev, ToolCallDelta):
                    _tool_delta(spec, events, calls, ev)
                elif isinstance(ev, ReasoningDelta):
                    events.reasoning_delta(ev.text)
                elif isinstance(ev, ReasoningSummaryDelta):
                    events.reasoning_summary_delta(ev.text)
                elif isinstance(ev, RefusalDelta):
                    events.refusal_delta(ev.text)
                elif isinstance(ev, TurnStart):
                    events.accepted()
                elif isinstance(ev, TurnEnd):
                    finish = ev.finish_reason
                    spec.usage.append(ev.usage)
                if events.pending:
                    await events.flush()
        except InvalidRequest as e:
            if e.code != "context_length_exceeded" or spec.options.truncation != "auto" or events.seq != emitted:
                raise
            dropped = truncate_oldest(history)
            if not dropped:
                raise
            request = _replace_items(request, conversation(history, events.output, spec.tool_ctx.model_notes))
            continue
        return finish, [calls[i] for i in sorted(calls)]


def _tool_delta(spec: RunSpec, events: ResponseEvents, calls: dict[int, _Call], ev: ToolCallDelta) -> None:
    call = calls.get(ev.index)
    if call is None:
        call = calls[ev.index] = _Call(call_id=ev.call_id or new_call_id())
    if ev.name:
        call.name += ev.name
    text = call.repair.feed(ev.arguments) if ev.arguments else ""
    if text:
        call.arguments.append(text)
    tool = spec.toolset.owner(call.name) if call.name else None
    if call.index is None and tool is not None and tool.streams_arguments:
        # A client function: open its item now and stream the arguments as they come.
        call.index = events.function_call_start(call.call_id, *tool.call_name(call.name))
        if call.arguments:
            events.function_call_delta(call.index, "".join(call.arguments))
    elif call.index is not None and text:
        events.function_call_delta(call.index, text)


def _settle(events: ResponseEvents, call: _Call, tool: Tool | None) -> str:
    """A call's final arguments. One that becomes a `function_call` item must be JSON (and match
    a strict function's schema): otherwise the item ends incomplete and the response fails."""
    arguments = "".join(call.arguments)
    if call.index is None and tool is not None:
        return arguments  # a tool run here, or a custom tool: it reads the arguments itself
    tail = closing(arguments)
    if tail:
        arguments += tail
        call.arguments.append(tail)
        if call.index is not None:
            events.function_call_delta(call.index, tail)
    try:
        check_arguments(call.name, arguments, tool.strict_schema if tool is not None else None)
    except InvalidArguments:
        if call.index is not None:
            events.function_call_done(call.index, status="incomplete")
        raise
    return arguments


def after_first_turn(choice: str | dict) -> str | dict:
    """The tool choice for turns after the first: a forced choice has been honoured, so the model
    may now answer, but `allowed_tools` keeps restricting what it is offered."""
    if isinstance(choice, dict) and choice.get("type") == "allowed_tools":
        return {**choice, "mode": "auto"}
    return choice if choice in ("none", "auto") else "auto"


def conversation(history: Sequence[dict], output: Sequence[dict],
                 notes: Sequence[tuple[int, dict]] = ()) -> list[dict]:
    """What a turn sends: the history, then the output with the model-only notes in their places."""
    items = [*history]
    k = 0
    for i, item in enumerate(output):
        while k < len(notes) and notes[k][0] <= i:
            items.append(notes[k][1])
            k += 1
        items.append(item)
    items.extend(note for _, note in notes[k:])
    return items


def truncate_oldest(history: list[dict]) -> bool:
    """Drop the oldest part of the conversation, keeping tool calls with their outputs.

    Removes about a quarter of the items, then up to the next user message so that no
    tool output loses its call. Returns False when nothing more can go.
    """
    if len(history) <= 1:
        return False
    cut = max(1, len(history) // 4)
    while cut < len(history) - 1 and not (history[cut].get("type") == "message"
                                          and history[cut].get("role") == "user"):
        cut += 1
    if cut >= len(history):
        return False
    del history[:cut]
    return True


def _replace_items(request: TurnRequest, items: list[dict]) -> TurnRequest:
    return replace(request, items=items, prefix=None)  # the prefix was cut: render it all
