"""Node clients against the live server: openai-node, the Vercel AI SDK (`@ai-sdk/openai` and
`@ai-sdk/open-responses`). Each runs a real script from tests/clients/node through the
recording proxy; everything the server answered is validated, and what the engine saw checked."""

from __future__ import annotations

import json

import pytest
from clientkit import run_node
from harness import check_events, types_of
from recorder import RecordingProxy

pytestmark = pytest.mark.node

WEATHER_CALL = {"name": "get_weather", "arguments": {"city": "Paris"}}


def tool_result_sent(messages: list[dict]) -> dict:
    """The JSON the client's tool returned, as the engine got it."""
    tool = [m for m in messages if m["role"] == "tool"]
    assert len(tool) == 1, messages
    return json.loads(tool[0]["content"])


# ---- openai-node -----------------------------------------------------------------------------

def test_openai_node_text(proxy: RecordingProxy, script) -> None:
    script.add({"content": "Hello from the engine."})
    out = run_node("openai_node.mjs", "text", proxy)
    assert out["output_text"] == "Hello from the engine." and out["status"] == "completed"
    (post,) = proxy.posts()
    assert post.headers["user-agent"].startswith("OpenAI/JS")
    assert post.body == {"model": "gpt-4.1", "input": "Say hello"}
    assert proxy.validate() == 1


def test_openai_node_stream_and_helper(proxy: RecordingProxy, script) -> None:
    script.add({"content": "one two three"}, {"content": "four five"})
    out = run_node("openai_node.mjs", "stream", proxy)
    check_events(out["events"])  # as the SDK parsed them
    assert types_of(out["events"])[-1] == "response.completed"
    assert "".join(e["delta"] for e in out["events"] if e["type"] == "response.output_text.delta") == \
        "one two three"
    assert out["helper_text"] == out["helper_final"] == "four five"
    helper = proxy.posts()[1]
    assert helper.headers.get("x-stainless-helper-method") == "stream"
    assert helper.headers["accept"] == "application/json" and helper.streamed
    assert proxy.validate() == 2


def test_openai_node_function_call_round_trip(proxy: RecordingProxy, script) -> None:
    script.add({"tool_calls": [WEATHER_CALL]}, {"content": "Chained: 21C."}, {"content": "Stateless: 21C."})
    out = run_node("openai_node.mjs", "tools", proxy)
    assert out["call"]["name"] == "get_weather" and out["call"]["arguments"] == {"city": "Paris"}
    assert out["chained"] == "Chained: 21C." and out["stateless"] == "Stateless: 21C."
    first, chained, stateless = script.requests
    assert first["tools"][0]["function"]["strict"] is True
    for sent in (chained, stateless):
        assert tool_result_sent(sent["messages"]) == {"temp_c": 21}
        assert sent["messages"][1]["tool_calls"][0]["id"] == out["call"]["call_id"]
    assert proxy.validate() == 3


def test_openai_node_retrieve_with_include(proxy: RecordingProxy, script) -> None:
    script.add({"content": "kept"})
    out = run_node("openai_node.mjs", "retrieve", proxy)
    assert out == {"id": out["id"], "output_text": "kept", "same": True}
    get = next(x for x in proxy.exchanges if x.method == "GET")
    assert get.status == 200
    assert proxy.validate() == 2


# ---- Vercel AI SDK: @ai-sdk/openai -----------------------------------------------------------

def test_ai_sdk_text_and_item_reference_turn(proxy: RecordingProxy, script) -> None:
    script.add({"reasoning": "Greet them.", "content": "Hello there."}, {"content": "Hello again."})
    out = run_node("ai_sdk.mjs", "text", proxy)
    assert out["first"]["text"] == "Hello there." and out["first"]["finishReason"] == "stop"
    assert out["second"]["text"] == "Hello again."
    assert out["first"]["responseId"].startswith("resp_")
    first, second = proxy.posts()
    assert first.headers["accept"] == "*/*"
    assert first.body["input"][0] == {"role": "developer", "content": "Be brief."}
    # The second turn refers to the first one's reasoning and message by id only, without
    # previous_response_id: the server resolves them against the caller's stored items.
    refs = [i for i in second.body["input"] if i.get("type") == "item_reference"]
    stored = first.final()["output"]
    assert [r["id"] for r in refs] == [item["id"] for item in stored]
    assert "previous_response_id" not in second.body
    assert script.requests[1]["messages"] == [
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hello"},
        {"role": "assistant", "content": "Hello there.", "reasoning_content": "Greet them."},
        {"role": "user", "content": "Again"}]
    assert proxy.validate() == 2


def test_ai_sdk_stream(proxy: RecordingProxy, script) -> None:
    script.add({"reasoning": "Count up.", "content": "one two three"})
    out = run_node("ai_sdk.mjs", "stream", proxy)
    assert out["text"] == "one two three" and "".join(out["deltas"]) == "one two three"
    assert out["finishReason"] == "stop"
    check_events(out["raw"])  # the raw chunks the SDK parsed are the server's events
    assert proxy.validate() == 1


def test_ai_sdk_tool_loop(proxy: RecordingProxy, script) -> None:
    script.add({"reasoning": "Need the weather.", "tool_calls": [WEATHER_CALL]}, {"content": "21C in Paris."})
    out = run_node("ai_sdk.mjs", "tools", proxy)
    assert out["text"] == "21C in Paris." and out["steps"] == 2 and out["toolCalls"] == ["Paris"]
    first, second = proxy.posts()
    assert first.body["tools"][0]["parameters"]["$schema"].startswith("http://json-schema.org/")
    assert "strict" not in first.body["tools"][0]
    reasoning_id = first.final()["output"][0]["id"]
    assert {"type": "item_reference", "id": reasoning_id} in second.body["input"]
    messages = script.requests[1]["messages"]
    assert messages[2]["reasoning_content"] == "Need the weather."
    assert tool_result_sent(messages) == {"city": "Paris", "temp_c": 21}
    assert proxy.validate() == 2


def test_ai_sdk_streamed_tool_loop(proxy: RecordingProxy, script) -> None:
    script.add({"reasoning": "Need the weather.", "tool_calls": [WEATHER_CALL]}, {"content": "21C in Paris."})
    out = run_node("ai_sdk.mjs", "stream_tools", proxy)
    assert out["text"] == "21C in Paris." and out["steps"] == 2 and out["toolCalls"] == ["Paris"]
    assert tool_result_sent(script.requests[1]["messages"]) == {"city": "Paris", "temp_c": 21}
    assert all(p.streamed for p in proxy.posts())
    assert proxy.validate() == 2


def test_ai_sdk_conversation(proxy: RecordingProxy, script) -> None:
    script.add({"reasoning": "A greeting.", "content": "Hello Ada."}, {"content": "You are Ada."})
    out = run_node("ai_sdk.mjs", "conversation", proxy)
    assert out["first"]["text"] == "Hello Ada." and out["second"] == "You are Ada."
    first, second = proxy.posts()
    assert first.body["conversation"] == second.body["conversation"] == out["conversation"]
    assert [i.get("content") for i in second.body["input"]] == [[{"type": "input_text", "text": "What is my name?"}]]
    assert script.requests[1]["messages"] == [
        {"role": "user", "content": "My name is Ada."},
        {"role": "assistant", "content": "Hello Ada.", "reasoning_content": "A greeting."},
        {"role": "user", "content": "What is my name?"}]
    assert proxy.validate() == 2


def test_ai_sdk_stateless_tool_loop_carries_encrypted_reasoning(proxy: RecordingProxy, script) -> None:
    script.add({"reasoning": "Need the weather.", "tool_calls": [WEATHER_CALL]}, {"content": "21C in Paris."})
    out = run_node("ai_sdk.mjs", "tools_stateless", proxy)
    assert out["text"] == "21C in Paris." and out["toolCalls"] == ["Paris"]
    first, second = proxy.posts()
    assert first.body["store"] is False and first.body["include"] == ["reasoning.encrypted_content"]
    reasoning = first.json()["output"][0]
    assert reasoning["type"] == "reasoning" and reasoning.get("encrypted_content"), \
        "reasoning items lack encrypted_content (issue 6)"
    echoed = next(i for i in second.body["input"] if i.get("type") == "reasoning")
    assert echoed["encrypted_content"] == reasoning["encrypted_content"]
    assert script.requests[1]["messages"][1]["reasoning_content"] == "Need the weather."
    assert proxy.validate() == 2


# ---- Vercel AI SDK: @ai-sdk/open-responses ---------------------------------------------------

def test_open_responses_text(proxy: RecordingProxy, script) -> None:
    script.add({"reasoning": "Greet them.", "content": "Hello there."})
    out = run_node("open_responses.mjs", "text", proxy)
    assert out["text"] == "Hello there." and out["finishReason"] == "stop"
    assert out["reasoning"] == "Greet them."
    (post,) = proxy.posts()
    assert post.body["instructions"] == "Be brief."
    assert post.body["input"][0]["type"] == "message"
    assert script.requests[0]["messages"][0] == {"role": "system", "content": "Be brief."}
    assert proxy.validate() == 1


def test_open_responses_stream(proxy: RecordingProxy, script) -> None:
    script.add({"reasoning": "Count up.", "content": "one two three"})
    out = run_node("open_responses.mjs", "stream", proxy)
    assert out["text"] == "one two three" and out["finishReason"] == "stop"
    assert out["reasoning"] == "Count up."  # read from response.reasoning_text.delta
    check_events(out["raw"])
    assert proxy.validate() == 1


def test_open_responses_tool_loop(proxy: RecordingProxy, script) -> None:
    script.add({"reasoning": "Need the weather.", "tool_calls": [WEATHER_CALL]}, {"content": "21C in Paris."})
    out = run_node("open_responses.mjs", "tools", proxy)
    assert out["text"] == "21C in Paris." and out["steps"] == 2 and out["toolCalls"] == ["Paris"]
    # This provider drops the reasoning item on the follow-up; the call and its output suffice.
    second = proxy.posts()[1]
    assert [i["type"] for i in second.body["input"]] == ["message", "function_call", "function_call_output"]
    assert tool_result_sent(script.requests[1]["messages"]) == {"city": "Paris", "temp_c": 21}
    assert proxy.validate() == 2
