"""output_from_events: a response's output rebuilt from its stream events (replay.py)."""

from __future__ import annotations

import copy

from responsa.events import ResponseEvents
from responsa.replay import output_from_events


async def _no_sink(batch: list[dict]) -> None:
    """Never called: the test reads the queued events."""


def produce() -> ResponseEvents:
    response = {"id": "resp_r", "object": "response", "status": "in_progress", "output": []}
    events = ResponseEvents(response, _no_sink)
    events.created()
    events.reasoning_summary_delta("Think ")
    events.reasoning_summary_delta("first.")
    events.reasoning_delta("raw thought")
    events.text_delta("Hello, ")
    events.text_delta("world")
    index = events.function_call_start("call_1", "lookup")
    events.function_call_delta(index, '{"q": ')
    events.function_call_delta(index, '"x"}')
    events.function_call_done(index)
    events.custom_tool_call("call_2", "patch", "*** Begin")
    events.completed({"input_tokens": 1, "output_tokens": 2, "total_tokens": 3})
    return events


def test_the_whole_stream_gives_the_final_output() -> None:
    events = produce()
    output, still_open = output_from_events(copy.deepcopy(events.pending))
    assert still_open == []
    assert output == events.response["output"]
    assert [i["type"] for i in output] == ["reasoning", "message", "function_call", "custom_tool_call"]


def test_a_stream_cut_mid_text_keeps_what_was_streamed() -> None:
    events = produce().pending
    cut = [n for n, ev in enumerate(events) if ev["type"] == "response.output_text.delta"][-1] + 1
    output, still_open = output_from_events(copy.deepcopy(events[:cut]))
    assert still_open == [1]
    assert output[0]["summary"] == [{"type": "summary_text", "text": "Think first."}]
    assert output[0]["content"] == [{"type": "reasoning_text", "text": "raw thought"}]
    assert output[1]["status"] == "in_progress"
    assert output[1]["content"][0]["text"] == "Hello, world"


def test_a_stream_cut_mid_call_keeps_its_arguments_so_far() -> None:
    events = produce().pending
    cut = next(n for n, ev in enumerate(events) if ev["type"] == "response.function_call_arguments.delta") + 1
    output, still_open = output_from_events(copy.deepcopy(events[:cut]))
    assert still_open == [2]
    assert output[2]["arguments"] == '{"q": '


def test_unknown_or_malformed_events_change_nothing() -> None:
    produced = produce()
    events = produced.pending
    noise = [{"type": "response.output_text.delta", "output_index": 7, "delta": "x"},
             {"type": "response.something_new", "output_index": 0},
             {"type": "response.output_text.delta", "output_index": 0}]  # no delta, no content_index
    output, still_open = output_from_events(copy.deepcopy(events[:3]) + noise + copy.deepcopy(events[3:]))
    assert still_open == []
    assert output == produced.response["output"]
