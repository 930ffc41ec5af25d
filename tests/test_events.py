"""Pure tests of the stream-event grammar (events.py): order, numbering, copies, finish states.

Every stream built here is checked with `harness.check_events`, which validates each event
against the official SDK's `ResponseStreamEvent` union and the Open Responses schema.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from harness import check_events, new_response, recording_events, types_of

from responsa.events import ResponseEvents, empty_usage

CREATED = ["response.created", "response.in_progress"]
TEXT_ITEM = ["response.output_item.added", "response.content_part.added"]
TEXT_DONE = ["response.output_text.done", "response.content_part.done", "response.output_item.done"]


def recorded(dialect: str = "openai", first: int = 0) -> tuple[ResponseEvents, list[dict]]:
    return recording_events(dialect, first)


def drained(events: ResponseEvents, seen: list[dict]) -> list[dict]:
    asyncio.run(events.flush())
    return seen


def stream(build: Callable[[ResponseEvents], None], dialect: str = "openai") -> list[dict]:
    """created + in_progress, then `build`, everything flushed and validated."""
    events, seen = recorded(dialect)
    events.created()
    events.in_progress()
    build(events)
    out = drained(events, seen)
    check_events(out, complete=events.response["status"] != "cancelled")
    return out


def test_plain_text_follows_the_canonical_order_and_numbering() -> None:
    def build(ev: ResponseEvents) -> None:
        for piece in ("Hel", "lo", "!"):
            ev.text_delta(piece)
        ev.completed(empty_usage())

    out = stream(build)
    assert types_of(out) == [*CREATED, *TEXT_ITEM, *["response.output_text.delta"] * 3, *TEXT_DONE,
                             "response.completed"]
    assert [e["sequence_number"] for e in out] == list(range(len(out)))
    assert [e["delta"] for e in out if e["type"] == "response.output_text.delta"] == ["Hel", "lo", "!"]
    item = out[-1]["response"]["output"][0]
    assert item["status"] == "completed" and item["role"] == "assistant"
    assert item["content"] == [{"type": "output_text", "text": "Hello!", "annotations": [], "logprobs": []}]
    text_done = out[types_of(out).index("response.output_text.done")]
    assert text_done["text"] == "Hello!" and text_done["item_id"] == item["id"]
    assert out[-1]["response"]["status"] == "completed"
    assert isinstance(out[-1]["response"]["completed_at"], int)


def test_events_hold_copies_of_what_they_show() -> None:
    out = stream(lambda ev: (ev.text_delta("a"), ev.text_delta("b"), ev.completed(empty_usage())))
    created, added = out[0], out[2]
    assert created["response"]["output"] == [] and created["response"]["status"] == "in_progress"
    assert out[1]["response"]["status"] == "in_progress"
    assert added["item"]["content"] == [] and added["item"]["status"] == "in_progress"
    part_added = out[3]
    assert part_added["part"]["text"] == ""
    done = out[types_of(out).index("response.output_item.done")]
    assert done["item"]["content"][0]["text"] == "ab"
    # The response snapshots do not share their output list with the live response.
    assert out[-1]["response"]["output"] is not out[0]["response"]["output"]


def test_refusal_is_a_message_with_a_refusal_part() -> None:
    out = stream(lambda ev: (ev.refusal_delta("No"), ev.refusal_delta("."), ev.completed(empty_usage())))
    assert types_of(out) == [*CREATED, *TEXT_ITEM, "response.refusal.delta", "response.refusal.delta",
                             "response.refusal.done", "response.content_part.done", "response.output_item.done",
                             "response.completed"]
    assert out[3]["part"] == {"type": "refusal", "refusal": ""}
    assert out[-1]["response"]["output"][0]["content"] == [{"type": "refusal", "refusal": "No."}]


def test_switching_from_text_to_refusal_starts_a_new_message() -> None:
    out = stream(lambda ev: (ev.text_delta("Sure"), ev.refusal_delta("no"), ev.completed(empty_usage())))
    output = out[-1]["response"]["output"]
    assert [p["type"] for item in output for p in item["content"]] == ["output_text", "refusal"]
    assert [e["output_index"] for e in out if e["type"] == "response.output_item.added"] == [0, 1]


def test_raw_reasoning_then_text() -> None:
    def build(ev: ResponseEvents) -> None:
        ev.reasoning_delta("think ")
        ev.reasoning_delta("hard")
        ev.text_delta("42")
        ev.completed(empty_usage())

    out = stream(build)
    assert types_of(out) == [
        *CREATED, "response.output_item.added", "response.content_part.added",
        "response.reasoning_text.delta", "response.reasoning_text.delta", "response.reasoning_text.done",
        "response.content_part.done", "response.output_item.done",
        *TEXT_ITEM, "response.output_text.delta", *TEXT_DONE, "response.completed"]
    reasoning, message = out[-1]["response"]["output"]
    assert reasoning["type"] == "reasoning" and reasoning["status"] == "completed"
    assert reasoning["content"] == [{"type": "reasoning_text", "text": "think hard"}]
    assert reasoning["summary"] == []
    assert message["content"][0]["text"] == "42"
    assert out[2]["item"] == {"id": reasoning["id"], "type": "reasoning", "summary": [], "content": [],
                              "status": "in_progress"}


def test_open_responses_dialect_names_raw_reasoning_events_its_way() -> None:
    events, seen = recorded("open-responses")
    events.created()
    events.reasoning_delta("x")
    events.completed(empty_usage())
    names = types_of(drained(events, seen))
    assert "response.reasoning.delta" in names and "response.reasoning.done" in names
    assert not any(n.startswith("response.reasoning_text") for n in names)


def test_summary_and_raw_reasoning_parts_alternate_within_one_item() -> None:
    def build(ev: ResponseEvents) -> None:
        ev.reasoning_summary_delta("plan")
        ev.reasoning_delta("raw")
        ev.reasoning_summary_delta("more")
        ev.text_delta("answer")
        ev.completed(empty_usage())

    out = stream(build)
    assert types_of(out)[2:16] == [
        "response.output_item.added",
        "response.reasoning_summary_part.added", "response.reasoning_summary_text.delta",
        "response.reasoning_summary_text.done", "response.reasoning_summary_part.done",
        "response.content_part.added", "response.reasoning_text.delta",
        "response.reasoning_text.done", "response.content_part.done",
        "response.reasoning_summary_part.added", "response.reasoning_summary_text.delta",
        "response.reasoning_summary_text.done", "response.reasoning_summary_part.done",
        "response.output_item.done"]
    assert [e["summary_index"] for e in out if e["type"] == "response.reasoning_summary_part.added"] == [0, 1]
    reasoning = out[-1]["response"]["output"][0]
    assert reasoning["summary"] == [{"type": "summary_text", "text": "plan"},
                                    {"type": "summary_text", "text": "more"}]
    assert reasoning["content"] == [{"type": "reasoning_text", "text": "raw"}]


def test_reasoning_after_text_closes_the_message_and_opens_a_new_item() -> None:
    out = stream(lambda ev: (ev.text_delta("a"), ev.reasoning_delta("r"), ev.text_delta("b"),
                             ev.completed(empty_usage())))
    assert [i["type"] for i in out[-1]["response"]["output"]] == ["message", "reasoning", "message"]


def test_a_whole_reasoning_item_is_announced_part_by_part() -> None:
    item = {"id": "rs_given", "type": "reasoning", "status": "completed",
            "summary": [{"type": "summary_text", "text": "s1"}, {"type": "summary_text", "text": "s2"}],
            "content": [{"type": "reasoning_text", "text": "c1"}], "encrypted_content": "secret"}
    out = stream(lambda ev: (ev.reasoning_item(item), ev.completed(empty_usage())))
    added = out[2]
    assert added["item"] == {"id": "rs_given", "type": "reasoning", "status": "completed", "summary": [],
                             "content": []}
    summary_deltas = [e["delta"] for e in out if e["type"] == "response.reasoning_summary_text.delta"]
    assert summary_deltas == ["s1", "s2"]
    assert [e["text"] for e in out if e["type"] == "response.reasoning_text.done"] == ["c1"]
    done = out[types_of(out).index("response.output_item.done")]
    assert done["item"] == item
    assert out[-1]["response"]["output"] == [item]


def test_a_reasoning_item_without_content_is_announced_without_it() -> None:
    item = {"id": "rs_1", "type": "reasoning", "summary": [{"type": "summary_text", "text": "s"}]}
    out = stream(lambda ev: (ev.reasoning_item(item), ev.completed(empty_usage())))
    assert "content" not in out[2]["item"]
    assert "response.content_part.added" not in types_of(out)


def test_streamed_function_call() -> None:
    def build(ev: ResponseEvents) -> None:
        index = ev.function_call_start("call_1", "get_weather")
        ev.function_call_delta(index, '{"city":')
        ev.function_call_delta(index, '"Paris"}')
        ev.function_call_done(index)
        ev.completed(empty_usage())

    out = stream(build)
    assert types_of(out) == [*CREATED, "response.output_item.added", "response.function_call_arguments.delta",
                             "response.function_call_arguments.delta", "response.function_call_arguments.done",
                             "response.output_item.done", "response.completed"]
    assert out[2]["item"]["arguments"] == "" and out[2]["item"]["status"] == "in_progress"
    assert out[5]["arguments"] == '{"city":"Paris"}' and out[5]["name"] == "get_weather"
    call = out[-1]["response"]["output"][0]
    assert call["type"] == "function_call" and call["id"].startswith("fc_")
    assert (call["call_id"], call["name"], call["status"]) == ("call_1", "get_weather", "completed")


def test_parallel_function_calls_take_consecutive_indexes() -> None:
    def build(ev: ResponseEvents) -> None:
        ev.function_call("call_a", "f", "{}")
        ev.function_call("call_b", "g", "")
        ev.completed(empty_usage())

    out = stream(build)
    assert [e["output_index"] for e in out if e["type"] == "response.output_item.added"] == [0, 1]
    # An empty argument string gets no delta event, but still a done event.
    assert [e["output_index"] for e in out if e["type"] == "response.function_call_arguments.delta"] == [0]
    assert [e["output_index"] for e in out if e["type"] == "response.function_call_arguments.done"] == [0, 1]


def test_custom_tool_call() -> None:
    out = stream(lambda ev: (ev.custom_tool_call("call_c", "shell", "ls -l"), ev.completed(empty_usage())))
    assert types_of(out) == [*CREATED, "response.output_item.added", "response.custom_tool_call_input.delta",
                             "response.custom_tool_call_input.done", "response.output_item.done",
                             "response.completed"]
    assert out[2]["item"]["input"] == "" and out[2]["item"]["id"].startswith("ctc_")
    assert out[4]["input"] == "ls -l"
    assert out[-1]["response"]["output"][0] == {
        "id": out[2]["item"]["id"], "type": "custom_tool_call", "status": "completed", "call_id": "call_c",
        "name": "shell", "input": "ls -l"}


def test_text_then_a_call_closes_the_message_first() -> None:
    out = stream(lambda ev: (ev.text_delta("calling"), ev.function_call("c", "f", "{}"),
                             ev.completed(empty_usage())))
    names = types_of(out)
    assert names.index("response.output_item.done") < names.index("response.function_call_arguments.delta")


def test_incomplete_closes_open_items_as_incomplete() -> None:
    def build(ev: ResponseEvents) -> None:
        ev.reasoning_summary_delta("half")
        ev.text_delta("cut")
        ev.incomplete("max_output_tokens", empty_usage())

    out = stream(build)
    assert out[-1]["type"] == "response.incomplete"
    response = out[-1]["response"]
    assert response["status"] == "incomplete"
    assert response["incomplete_details"] == {"reason": "max_output_tokens"}
    assert response["completed_at"] is None
    assert [i["status"] for i in response["output"]] == ["completed", "incomplete"]
    assert response["output"][1]["content"][0]["text"] == "cut"


def test_open_reasoning_is_closed_with_the_finish_status() -> None:
    out = stream(lambda ev: (ev.reasoning_delta("r"), ev.incomplete("content_filter", empty_usage())))
    assert out[-1]["response"]["output"][0]["status"] == "incomplete"
    assert out[-1]["response"]["output"][0]["content"] == [{"type": "reasoning_text", "text": "r"}]


def test_failed_carries_the_error_and_no_error_event() -> None:
    out = stream(lambda ev: (ev.text_delta("par"), ev.failed("server_error", "engine died")))
    assert "error" not in types_of(out)
    response = out[-1]["response"]
    assert out[-1]["type"] == "response.failed" and response["status"] == "failed"
    assert response["error"] == {"code": "server_error", "message": "engine died"}
    assert response["output"][0]["status"] == "incomplete"


def test_cancelled_closes_items_but_emits_no_terminal_event() -> None:
    events, seen = recorded()
    events.created()
    events.text_delta("x")
    events.cancelled()
    out = drained(events, seen)
    assert out[-1]["type"] == "response.output_item.done"
    assert out[-1]["item"]["status"] == "incomplete"
    assert events.done and events.response["status"] == "cancelled"
    check_events(out, complete=False)


@pytest.mark.parametrize("finish", ["completed", "incomplete", "failed", "cancelled"])
def test_done_after_each_finish(finish: str) -> None:
    events, _ = recorded()
    events.created()
    assert not events.done
    {"completed": lambda: events.completed(empty_usage()),
     "incomplete": lambda: events.incomplete("max_output_tokens", empty_usage()),
     "failed": lambda: events.failed("server_error", "x"),
     "cancelled": lambda: events.cancelled()}[finish]()
    assert events.done


def test_background_lifecycle_starts_with_created_then_queued() -> None:
    events, seen = recorded()
    events.response["status"] = "queued"
    events.created()
    events.queued()
    events.in_progress()
    events.completed(empty_usage())
    out = drained(events, seen)
    assert types_of(out) == ["response.created", "response.queued", "response.in_progress", "response.completed"]
    assert [e["response"]["status"] for e in out] == ["queued", "queued", "in_progress", "completed"]
    check_events(out)


def test_numbering_continues_from_the_first_sequence_number() -> None:
    events, seen = recorded(first=7)
    events.in_progress()
    events.text_delta("x")
    events.completed(empty_usage())
    out = drained(events, seen)
    assert [e["sequence_number"] for e in out] == list(range(7, 7 + len(out)))
    check_events(out, first=7)


def build_everything(ev: ResponseEvents) -> None:
    ev.created()
    ev.in_progress()
    ev.reasoning_summary_delta("s")
    ev.reasoning_delta("r")
    ev.text_delta("t")
    ev.refusal_delta("no")
    index = ev.function_call_start("c1", "f")
    ev.function_call_delta(index, "{}")
    ev.function_call_done(index)
    ev.custom_tool_call("c2", "g", "in")
    ev.reasoning_item({"id": "rs_x", "type": "reasoning", "summary": [{"type": "summary_text", "text": "a"}],
                       "content": [{"type": "reasoning_text", "text": "b"}]})
    ev.incomplete("max_output_tokens", empty_usage())


def test_without_a_listener_no_events_are_built_but_numbering_is_the_same() -> None:
    quiet = ResponseEvents(new_response())
    build_everything(quiet)
    assert quiet.pending == [] and not quiet.live
    live, seen = recorded()
    build_everything(live)
    out = drained(live, seen)
    check_events(out)
    assert quiet.seq == live.seq == len(out)
    strip = [{k: v for k, v in i.items() if k != "id"} for i in quiet.output]
    assert strip == [{k: v for k, v in i.items() if k != "id"} for i in live.output]


def test_flush_hands_pending_events_over_in_batches() -> None:
    batches: list[list[dict]] = []

    async def sink(batch: list[dict]) -> None:
        batches.append(batch)

    async def go() -> None:
        events = ResponseEvents(new_response(), sink)
        await events.flush()  # nothing pending: the sink is not called
        events.created()
        await events.flush()
        events.text_delta("a")
        events.text_delta("b")
        await events.flush()
        assert events.pending == []

    asyncio.run(go())
    assert [types_of(b) for b in batches] == [
        ["response.created"],
        ["response.output_item.added", "response.content_part.added", "response.output_text.delta",
         "response.output_text.delta"]]


def test_item_done_hooks_change_the_item_before_its_done_event() -> None:
    events, seen = recorded()
    events.item_done_hooks.append(lambda item: item.setdefault("encrypted_content", "sealed")
                                  if item["type"] == "reasoning" else None)
    events.created()
    events.reasoning_delta("r")
    events.text_delta("t")
    events.completed(empty_usage())
    out = drained(events, seen)
    check_events(out)
    added, done = out[1], out[types_of(out).index("response.output_item.done")]
    assert "encrypted_content" not in added["item"]
    assert done["item"]["encrypted_content"] == "sealed"
    assert "encrypted_content" not in out[-1]["response"]["output"][1]


def test_accepted_calls_back_once() -> None:
    calls: list[int] = []
    events = ResponseEvents(new_response())
    events.accepted()  # nobody waiting: nothing happens
    events.on_accepted = lambda: calls.append(1)
    events.accepted()
    events.accepted()
    assert calls == [1]


def test_generic_items_and_their_events() -> None:
    def build(ev: ResponseEvents) -> None:
        ev.text_delta("open")
        index = ev.add_item({"id": "ig_1", "type": "image_generation_call", "status": "in_progress",
                             "result": None})
        ev.item_event("response.image_generation_call.in_progress", index)
        ev.item_event("response.image_generation_call.generating", index)
        ev.output[index].update(status="completed", result="aGk=")
        ev.item_event("response.image_generation_call.completed", index)
        ev.done_item(index)
        ev.completed(empty_usage())

    out = stream(build)
    # Adding an item closes the open message first.
    assert types_of(out)[2:9] == [*TEXT_ITEM, "response.output_text.delta", *TEXT_DONE,
                                  "response.output_item.added"]
    generating = out[types_of(out).index("response.image_generation_call.generating")]
    assert generating["item_id"] == "ig_1" and generating["output_index"] == 1
    assert out[-1]["response"]["output"][1]["result"] == "aGk="
