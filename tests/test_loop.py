"""The turn loop (loop.py) in process: `run(spec, events)` with a backend and tools written here.

Only `run()` and `RunSpec` are used, and a RunSpec is built in one place (`make_spec`), so a
change to how runs are set up touches one helper. Every stream is validated with
`check_events` (the SDK's event models and the Open Responses schema).
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any

import pytest
from harness import check_events, recording_events, types_of

from responsa import loop
from responsa.backends import (
    ModelOptions,
    ReasoningDelta,
    RefusalDelta,
    TextDelta,
    ToolCallDelta,
    TurnEnd,
    TurnEvent,
    TurnRequest,
    TurnStart,
    Usage,
)
from responsa.config import Settings
from responsa.errors import InvalidRequest, UpstreamError
from responsa.events import ResponseEvents
from responsa.loop import RunSpec, conversation, run, truncate_oldest
from responsa.tools import CustomTool, FunctionTool, Outcome, Tool, ToolCall, ToolContext, ToolSet

Turn = Sequence[TurnEvent | Exception] | Exception


class Engine:
    """A Backend answering each turn with the next listed one: its events (an exception among
    them is raised there), or an error to raise at once."""

    name = "test-engine"

    def __init__(self, *turns: Turn, repeat: Turn | None = None) -> None:
        self.turns: collections.deque[Turn] = collections.deque(turns)
        self.repeat = repeat  # answered once the listed turns are used up
        self.requests: list[TurnRequest] = []

    async def turn(self, request: TurnRequest) -> AsyncIterator[TurnEvent]:
        self.requests.append(request)
        turn = self.turns.popleft() if self.turns else self.repeat
        assert turn is not None, "the engine was asked for more turns than the test listed"
        if isinstance(turn, Exception):
            raise turn
        for event in turn:
            if isinstance(event, Exception):
                raise event
            yield event

    async def models(self) -> list[str]:
        return ["engine-model"]

    def accepts_images(self, model: str) -> bool:
        return True

    def accepts_files(self, model: str) -> bool:
        return False

    async def ready(self) -> bool:
        return True

    async def aclose(self) -> None:
        return None


class ServerTool(Tool):
    """A tool run here (as MCP tools are): each call becomes a completed `mcp_call` item."""

    def __init__(self, name: str = "lookup", label: str = "srv") -> None:
        self.name = name
        self.entry = {"type": "mcp", "server_label": label}
        self.calls: list[ToolCall] = []
        self.prepared = 0

    def functions(self) -> list[dict]:
        return [{"type": "function", "function": {"name": self.name, "parameters": {"type": "object"}}}]

    async def prepare(self, ctx: ToolContext) -> None:
        self.prepared += 1

    async def invoke(self, call: ToolCall, ctx: ToolContext) -> Outcome:
        self.calls.append(call)
        ctx.events.add_item({"id": f"mcp_{len(self.calls)}", "type": "mcp_call", "server_label": "srv",
                             "name": call.name, "arguments": call.arguments, "output": "found",
                             "error": None, "status": "completed"})
        ctx.events.done_item(len(ctx.events.output) - 1)
        return Outcome.CONTINUE


def function(name: str = "get_weather") -> FunctionTool:
    return FunctionTool({"type": "function", "name": name, "parameters": {"type": "object", "properties": {}}})


def user(text: str) -> dict:
    return {"id": "msg_in", "type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}


def text(*pieces: str, finish: str = "stop", usage: Usage | None = None) -> list[TurnEvent]:
    return [TurnStart(), *(TextDelta(p) for p in pieces), TurnEnd(finish, usage)]


def calls(*named: tuple[str, str], usage: Usage | None = None) -> list[TurnEvent]:
    """A turn calling each (name, arguments), in parallel."""
    out: list[TurnEvent] = [TurnStart()]
    for i, (name, arguments) in enumerate(named):
        out.append(ToolCallDelta(index=i, call_id=f"call_{i}", name=name, arguments=arguments))
    return [*out, TurnEnd("tool_calls", usage)]


def make_spec(backend: Engine, events: ResponseEvents, tools: Iterable[Tool] = (),
              history: Sequence[dict] | None = None, **options: Any) -> RunSpec:
    """The one place a RunSpec is built (the service builds it in its own way)."""
    history = [user("hi")] if history is None else list(history)
    ctx = ToolContext(events=events, history=history, settings=Settings())
    model_fields = {f.name for f in dataclasses.fields(ModelOptions)}
    model_options = ModelOptions(**{k: v for k, v in options.items() if k in model_fields})
    return RunSpec(backend=backend, model="engine-model", history=history, toolset=ToolSet(list(tools)),
                   tool_ctx=ctx, options=model_options,
                   **{k: v for k, v in options.items() if k not in model_fields})


class Run:
    """One finished run: the spec, the events object, every event emitted, the output."""

    def __init__(self, spec: RunSpec, events: ResponseEvents, seen: list[dict]) -> None:
        self.spec, self.events, self.seen = spec, events, seen

    @property
    def output(self) -> list[dict]:
        return self.events.output

    @property
    def status(self) -> str:
        return self.events.response["status"]


def run_loop(backend: Engine, tools: Iterable[Tool] = (), *, complete: bool = True, **options: Any) -> Run:
    """Run the loop to its end the way the service does: created, in_progress, run, flush."""
    events, seen = recording_events()
    spec = make_spec(backend, events, tools, **options)

    async def go() -> None:
        events.created()
        events.in_progress()
        try:
            await run(spec, events)
        finally:
            await events.flush()

    asyncio.run(go())
    check_events(seen, complete=complete)
    return Run(spec, events, seen)


# ---- answers ------------------------------------------------------------------------------------

def test_text_completes_with_usage() -> None:
    engine = Engine(text("Hel", "lo", usage=Usage(input_tokens=5, output_tokens=2, cached_tokens=1)))
    r = run_loop(engine, instructions="be brief")
    assert r.status == "completed"
    assert r.output[0]["content"][0]["text"] == "Hello"
    assert r.events.response["usage"] == {
        "input_tokens": 5, "input_tokens_details": {"cached_tokens": 1, "cache_write_tokens": 0},
        "output_tokens": 2, "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 7}
    (request,) = engine.requests
    assert request.model == "engine-model" and request.options.instructions == "be brief"
    assert list(request.items) == [user("hi")]
    assert (list(request.tools), request.tool_choice, request.parallel_tool_calls) == ([], None, None)


def test_request_options_reach_the_backend() -> None:
    engine = Engine(text("ok"))
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}
    run_loop(engine, temperature=0.3, top_p=0.5, max_output_tokens=100, reasoning_effort="low", user="u1",
             response_format=fmt, truncation="auto", stream=False, history_prefix=("chain", 1))
    (request,) = engine.requests
    options = request.options
    assert (options.temperature, options.top_p, request.max_output_tokens) == (0.3, 0.5, 100)
    assert (options.reasoning_effort, options.user, options.truncation) == ("low", "u1", "auto")
    assert options.response_format == fmt and options.stream is False
    assert request.prefix == ("chain", 1)


def test_reasoning_refusal_and_text_in_one_turn() -> None:
    engine = Engine([TurnStart(), ReasoningDelta("hmm"), TextDelta("I "), RefusalDelta("can't"),
                     TurnEnd("stop")])
    r = run_loop(engine)
    assert [i["type"] for i in r.output] == ["reasoning", "message", "message"]
    assert r.output[2]["content"] == [{"type": "refusal", "refusal": "can't"}]


def test_the_engine_accepting_the_turn_is_reported_once() -> None:
    accepted: list[int] = []
    engine = Engine(calls(("lookup", "{}")), text("done"))
    events, _ = recording_events()
    events.on_accepted = lambda: accepted.append(1)
    spec = make_spec(engine, events, [ServerTool()])
    asyncio.run(run(spec, events))
    assert accepted == [1]


def test_a_turn_cut_by_length_is_incomplete() -> None:
    r = run_loop(Engine(text("cut sh", finish="length")))
    assert r.status == "incomplete"
    assert r.events.response["incomplete_details"] == {"reason": "max_output_tokens"}
    assert r.output[0]["status"] == "incomplete"


def test_a_filtered_turn_is_incomplete_for_content_filter() -> None:
    r = run_loop(Engine(text("", finish="content_filter")))
    assert r.status == "incomplete" and r.events.response["incomplete_details"] == {"reason": "content_filter"}


def test_an_engine_error_is_raised_for_the_service_to_render() -> None:
    with pytest.raises(UpstreamError, match="engine down"):
        run_loop(Engine(UpstreamError("engine down")), complete=False)


# ---- client tools -------------------------------------------------------------------------------

def test_a_client_function_call_is_streamed_and_ends_the_response() -> None:
    engine = Engine([TurnStart(), ToolCallDelta(index=0, call_id="call_w", name="get_weather"),
                     ToolCallDelta(index=0, arguments='{"city":'), ToolCallDelta(index=0, arguments='"Paris"}'),
                     TurnEnd("tool_calls")])
    r = run_loop(engine, [function()])
    assert r.status == "completed" and len(engine.requests) == 1
    (call,) = r.output
    assert (call["type"], call["call_id"], call["name"]) == ("function_call", "call_w", "get_weather")
    assert call["arguments"] == '{"city":"Paris"}' and call["status"] == "completed"
    deltas = [e["delta"] for e in r.seen if e["type"] == "response.function_call_arguments.delta"]
    assert deltas == ['{"city":', '"Paris"}']
    (request,) = engine.requests
    assert request.tool_choice == "auto" and request.parallel_tool_calls is True
    assert [t["function"]["name"] for t in request.tools] == ["get_weather"]


def test_arguments_before_the_whole_name_are_kept() -> None:
    # Some engines split the name; arguments may come before it is complete.
    engine = Engine([TurnStart(), ToolCallDelta(index=0, call_id="c", name="get_"),
                     ToolCallDelta(index=0, name="weather", arguments='{"a":'),
                     ToolCallDelta(index=0, arguments="1}"), TurnEnd("tool_calls")])
    r = run_loop(engine, [function()])
    assert r.output[0]["name"] == "get_weather" and r.output[0]["arguments"] == '{"a":1}'


def test_parallel_calls_come_out_in_index_order() -> None:
    engine = Engine([TurnStart(), ToolCallDelta(index=1, call_id="c1", name="b", arguments="{}"),
                     ToolCallDelta(index=0, call_id="c0", name="a", arguments="{}"), TurnEnd("tool_calls")])
    r = run_loop(engine, [function("a"), function("b")], parallel_tool_calls=False)
    # Client functions are opened as they stream: b first, then a.
    assert [i["name"] for i in r.output] == ["b", "a"]
    assert engine.requests[0].parallel_tool_calls is False


def test_a_call_id_is_made_up_when_the_engine_sends_none() -> None:
    r = run_loop(Engine([TurnStart(), ToolCallDelta(index=0, name="get_weather", arguments="{}"),
                         TurnEnd("tool_calls")]), [function()])
    assert r.output[0]["call_id"].startswith("call_")


def test_an_invented_function_is_handed_to_the_client() -> None:
    r = run_loop(Engine(calls(("made_up", '{"x":1}'))), [function()])
    assert r.status == "completed"
    assert (r.output[0]["name"], r.output[0]["arguments"]) == ("made_up", '{"x":1}')


def test_a_custom_tool_call_takes_its_input_from_the_arguments() -> None:
    tool = CustomTool({"type": "custom", "name": "shell"})
    r = run_loop(Engine(calls(("shell", '{"input": "ls -l"}'))), [tool])
    assert r.output[0]["type"] == "custom_tool_call" and r.output[0]["input"] == "ls -l"


def test_a_call_cut_by_length_is_incomplete() -> None:
    engine = Engine([TurnStart(), ToolCallDelta(index=0, call_id="c", name="get_weather", arguments='{"ci'),
                     TurnEnd("length")])
    r = run_loop(engine, [function()])
    assert r.status == "incomplete" and r.output[0]["status"] == "incomplete"


# ---- server tools and turns ---------------------------------------------------------------------

def test_a_server_tool_runs_and_the_model_answers_in_a_second_turn() -> None:
    tool = ServerTool()
    engine = Engine(calls(("lookup", '{"q":1}'), usage=Usage(10, 3)), text("found it", usage=Usage(20, 4)))
    r = run_loop(engine, [tool])
    assert tool.prepared == 1 and [c.arguments for c in tool.calls] == ['{"q":1}']
    assert [i["type"] for i in r.output] == ["mcp_call", "message"]
    assert r.status == "completed"
    usage = r.events.response["usage"]
    assert (usage["input_tokens"], usage["output_tokens"]) == (30, 7)
    second = engine.requests[1]
    assert [i["type"] for i in second.items] == ["message", "mcp_call"]


def test_a_forced_choice_is_honoured_once_then_the_model_may_answer() -> None:
    engine = Engine(calls(("lookup", "{}")), text("ok"))
    run_loop(engine, [ServerTool()], tool_choice="required")
    assert [r.tool_choice for r in engine.requests] == ["required", "auto"]


def test_a_named_choice_is_sent_as_the_chat_completions_form() -> None:
    engine = Engine(calls(("lookup", "{}")), text("ok"))
    run_loop(engine, [ServerTool(), function()], tool_choice={"type": "mcp", "server_label": "srv"})
    assert engine.requests[0].tool_choice == {"type": "function", "function": {"name": "lookup"}}
    assert engine.requests[1].tool_choice == "auto"


def test_allowed_tools_restrict_every_turn() -> None:
    engine = Engine(calls(("lookup", "{}")), text("ok"))
    choice = {"type": "allowed_tools", "mode": "auto", "tools": [{"type": "mcp", "server_label": "srv"}]}
    run_loop(engine, [ServerTool(), function()], tool_choice=choice)
    offered = [[t["function"]["name"] for t in r.tools] for r in engine.requests]
    assert offered == [["lookup"], ["lookup"]]


def test_max_tool_calls_ignores_extra_calls_and_then_offers_no_tools() -> None:
    tool = ServerTool()
    engine = Engine(calls(("lookup", '{"n":1}'), ("lookup", '{"n":2}')), text("enough"))
    r = run_loop(engine, [tool], max_tool_calls=1)
    assert [c.arguments for c in tool.calls] == ['{"n":1}']
    assert [i["type"] for i in r.output] == ["mcp_call", "message"]
    assert list(engine.requests[1].tools) == [] and engine.requests[1].tool_choice is None


def test_client_calls_do_not_count_against_max_tool_calls() -> None:
    engine = Engine(calls(("get_weather", "{}"), ("get_weather", "{}")))
    r = run_loop(engine, [function()], max_tool_calls=1)
    assert [i["type"] for i in r.output] == ["function_call", "function_call"]


def test_max_output_tokens_is_a_budget_over_all_turns() -> None:
    engine = Engine(calls(("lookup", "{}"), usage=Usage(5, 10)), text("short", usage=Usage(5, 4)))
    r = run_loop(engine, [ServerTool()], max_output_tokens=16)
    assert [req.max_output_tokens for req in engine.requests] == [16, 6]
    assert r.status == "completed"


def test_a_spent_budget_ends_the_response_incomplete_without_another_turn() -> None:
    engine = Engine(calls(("lookup", "{}"), usage=Usage(5, 16)))
    r = run_loop(engine, [ServerTool()], max_output_tokens=16)
    assert len(engine.requests) == 1
    assert r.status == "incomplete" and r.events.response["incomplete_details"] == {"reason": "max_output_tokens"}


def test_the_last_allowed_turn_offers_no_tools() -> None:
    tool = ServerTool()
    engine = Engine(repeat=calls(("lookup", "{}")))
    r = run_loop(engine, [tool])
    assert len(engine.requests) == loop.MAX_TURNS
    assert all(req.tools for req in engine.requests[:-1]) and list(engine.requests[-1].tools) == []
    assert r.status == "completed"


def test_a_call_on_the_last_turn_which_offered_no_tools_is_not_run() -> None:
    tool = ServerTool()
    run_loop(Engine(repeat=calls(("lookup", "{}"))), [tool])
    assert len(tool.calls) == loop.MAX_TURNS - 1


def test_a_client_call_beside_a_server_call_ends_the_response() -> None:
    tool = ServerTool()
    engine = Engine(calls(("lookup", "{}"), ("get_weather", "{}")))
    r = run_loop(engine, [tool, function()])
    assert len(engine.requests) == 1 and len(tool.calls) == 1
    assert sorted(i["type"] for i in r.output) == ["function_call", "mcp_call"]


def test_a_tool_may_change_its_functions_when_prepared() -> None:
    class Listing(ServerTool):
        async def prepare(self, ctx: ToolContext) -> None:
            self.name = "listed_later"

    engine = Engine(calls(("listed_later", "{}")), text("ok"))
    tool = Listing(name="placeholder")
    r = run_loop(engine, [tool])
    assert [t["function"]["name"] for t in engine.requests[0].tools] == ["listed_later"]
    assert len(tool.calls) == 1 and r.output[-1]["type"] == "message"


def test_model_notes_reach_the_engine_but_not_the_output() -> None:
    note = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "(note)"}]}

    class Noting(ServerTool):
        async def invoke(self, call: ToolCall, ctx: ToolContext) -> Outcome:
            outcome = await super().invoke(call, ctx)
            ctx.model_notes.append((len(ctx.events.output), note))
            return outcome

    engine = Engine(calls(("lookup", "{}")), text("ok"))
    r = run_loop(engine, [Noting()])
    assert engine.requests[1].items[-1] == note
    assert note not in r.output


# ---- context overflow ---------------------------------------------------------------------------

def overflow() -> InvalidRequest:
    return InvalidRequest("too long", param="input", code="context_length_exceeded")


def long_history() -> list[dict]:
    items = []
    for n in range(4):
        items += [user(f"q{n}"), {"type": "function_call", "call_id": f"c{n}", "name": "f", "arguments": "{}"},
                  {"type": "function_call_output", "call_id": f"c{n}", "output": "r"}]
    return items


def test_truncation_auto_drops_the_oldest_turns_and_retries() -> None:
    engine = Engine(overflow(), text("fits"))
    history = long_history()
    r = run_loop(engine, history=history, truncation="auto", history_prefix=("chain", len(history)))
    assert r.status == "completed"
    first, second = engine.requests
    assert len(first.items) == 12 and first.prefix == ("chain", 12)
    assert second.prefix is None  # the cached prefix no longer matches what is sent
    assert second.items[0]["type"] == "message" and len(second.items) == 9


def test_without_truncation_an_overflow_is_the_request_error() -> None:
    with pytest.raises(InvalidRequest) as info:
        run_loop(Engine(overflow()), history=long_history(), complete=False)
    assert info.value.code == "context_length_exceeded"


def test_an_overflow_in_a_later_turn_is_retried_with_the_output_kept() -> None:
    engine = Engine(calls(("lookup", "{}")), overflow(), text("ok"))
    r = run_loop(engine, [ServerTool()], history=long_history(), truncation="auto")
    assert len(engine.requests) == 3 and r.status == "completed"
    assert [i["type"] for i in engine.requests[2].items][-1] == "mcp_call"
    assert len(engine.requests[2].items) < len(engine.requests[1].items)


def test_an_overflow_after_part_of_a_turn_was_streamed_is_not_retried() -> None:
    engine = Engine([TurnStart(), TextDelta("par"), overflow()], text("never asked"))
    with pytest.raises(InvalidRequest):
        run_loop(engine, history=long_history(), truncation="auto", complete=False)
    assert len(engine.requests) == 1


def test_an_overflow_with_nothing_left_to_drop_is_raised() -> None:
    engine = Engine(repeat=overflow())
    with pytest.raises(InvalidRequest):
        run_loop(engine, history=[user("one huge message")], truncation="auto", complete=False)
    assert len(engine.requests) == 1


def test_truncate_oldest_keeps_calls_with_their_outputs() -> None:
    history = long_history()
    assert truncate_oldest(history)
    assert history[0] == user("q1") and len(history) == 9
    single = [user("only")]
    assert not truncate_oldest(single) and single == [user("only")]
    # No user message to cut at: everything but the last item goes.
    calls_only = [{"type": "function_call", "call_id": str(n)} for n in range(5)]
    assert truncate_oldest(calls_only) and calls_only == [{"type": "function_call", "call_id": "4"}]


def test_conversation_places_model_notes_before_their_output_index() -> None:
    history = [user("h")]
    output = [{"id": "a"}, {"id": "b"}]
    notes = [(0, {"id": "n0"}), (1, {"id": "n1"}), (5, {"id": "late"})]
    assert [i.get("id") for i in conversation(history, output, notes)] == ["msg_in", "n0", "a", "n1", "b", "late"]
    assert conversation(history, output) == [*history, *output]


def test_the_stream_has_the_canonical_shape() -> None:
    r = run_loop(Engine(calls(("lookup", "{}")), text("a", "b")), [ServerTool()])
    assert types_of(r.seen)[:3] == ["response.created", "response.in_progress", "response.output_item.added"]
    assert types_of(r.seen)[-1] == "response.completed"
