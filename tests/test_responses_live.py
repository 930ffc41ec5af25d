"""The core API through the official SDK against the live server and a scripted engine."""

from __future__ import annotations

import httpx
import openai
import pytest
from harness import KEY_A, check_events, check_response, sse_events, types_of, wire
from openai import OpenAI


def test_create_text(client: OpenAI, script) -> None:
    script.add({"content": "Hello from the engine.", "usage": {"prompt_tokens": 12, "completion_tokens": 5,
                                                                "cached_tokens": 4}})
    r = client.responses.create(model="gpt-4.1-nano", input="Say hello", metadata={"k": "v"}, temperature=0.3)
    check_response(r)
    assert r.status == "completed"
    assert r.output_text == "Hello from the engine."
    assert r.model == "gpt-4.1-nano"
    assert r.metadata == {"k": "v"}
    assert r.temperature == 0.3
    assert r.usage.input_tokens == 12 and r.usage.output_tokens == 5 and r.usage.total_tokens == 17
    assert r.usage.input_tokens_details.cached_tokens == 4
    assert r.usage.output_tokens_details.reasoning_tokens == 0
    sent = script.requests[-1]
    assert sent["model"] == "gpt-4.1-nano"
    assert sent["messages"] == [{"role": "user", "content": "Say hello"}]
    assert sent["temperature"] == 0.3
    assert "stream" not in sent


def test_retrieve_matches_create(client: OpenAI) -> None:
    r = client.responses.create(model="m", input="remember me")
    got = client.responses.retrieve(r.id)
    check_response(got)
    assert got.model_dump() == r.model_dump()


def test_instructions_and_roles(client: OpenAI, script) -> None:
    client.responses.create(model="m", instructions="Be brief.", input=[
        {"role": "developer", "content": "dev note"},
        {"type": "message", "role": "system", "content": [{"type": "input_text", "text": "sys"}]},
        {"role": "user", "content": [{"type": "input_text", "text": "a"}, {"type": "input_text", "text": "b"}]},
        {"role": "assistant", "content": "earlier answer"},
        {"role": "user", "content": "q"},
    ])
    assert script.requests[-1]["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "system", "content": "dev note"},
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "a\nb"},
        {"role": "assistant", "content": "earlier answer"},
        {"role": "user", "content": "q"},
    ]


def test_chain_loads_history_but_not_instructions(client: OpenAI, script) -> None:
    script.add({"content": "one"}, {"content": "two"}, {"content": "three"})
    r1 = client.responses.create(model="m", input="first", instructions="only for turn one")
    r2 = client.responses.create(model="m", input="second", previous_response_id=r1.id)
    r3 = client.responses.create(model="m", input="third", previous_response_id=r2.id)
    assert r3.previous_response_id == r2.id
    assert script.requests[-1]["messages"] == [
        {"role": "user", "content": "first"}, {"role": "assistant", "content": "one"},
        {"role": "user", "content": "second"}, {"role": "assistant", "content": "two"},
        {"role": "user", "content": "third"},
    ]
    items = client.responses.input_items.list(r3.id)
    assert [i.content[0].text for i in items.data] == ["third"]


def test_manual_chaining_with_output_items(client: OpenAI, script) -> None:
    script.add({"content": "first answer"}, {"content": "second answer"})
    r1 = client.responses.create(model="m", input="q1")
    history = [{"role": "user", "content": "q1"}, *[o.model_dump(exclude_none=True) for o in r1.output],
               {"role": "user", "content": "q2"}]
    r2 = client.responses.create(model="m", input=history)
    assert r2.output_text == "second answer"
    assert script.requests[-1]["messages"][1] == {"role": "assistant", "content": "first answer"}
    stored = client.responses.input_items.list(r2.id, order="asc").data
    assert stored[1].id == r1.output[0].id


def test_streaming_raw_frames(server, client: OpenAI, script) -> None:
    script.add({"content": "one two three four"})
    with httpx.stream("POST", server.base_url + "/responses", headers={"Authorization": f"Bearer {KEY_A}"},
                      json={"model": "m", "input": "hi", "stream": True}, timeout=30) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        body = resp.read()
    events = sse_events(body)
    check_events(events)
    assert types_of(events) == [
        "response.created", "response.in_progress", "response.output_item.added", "response.content_part.added",
        "response.output_text.delta", "response.output_text.delta", "response.output_text.delta",
        "response.output_text.delta", "response.output_text.done", "response.content_part.done",
        "response.output_item.done", "response.completed"]
    assert events[0]["response"]["status"] == "in_progress"
    final = events[-1]["response"]
    assert final["output"][0]["content"][0]["text"] == "one two three four"
    stored = wire(client.responses.retrieve(final["id"]))
    assert stored["output"] == final["output"] and stored["status"] == "completed"


def test_stream_helper_and_stored_equals_streamed(client: OpenAI, script) -> None:
    script.add({"content": "streamed text here"}, {"content": "streamed text here"})
    with client.responses.stream(model="m", input="x") as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert "".join(deltas) == "streamed text here" == final.output_text
    plain = client.responses.create(model="m", input="x")
    a = client.responses.retrieve(final.id).model_dump()
    b = client.responses.retrieve(plain.id).model_dump()
    for key in ("id", "created_at", "completed_at"):
        a.pop(key), b.pop(key)
    a["output"][0].pop("id"), b["output"][0].pop("id")
    assert a == b


@pytest.mark.anyio
async def test_async_client_stream(async_client, script) -> None:
    script.add({"content": "async hello"})
    async with async_client:  # closed on this test's event loop (see test_async_azure_client)
        stream = await async_client.responses.create(model="m", input="x", stream=True)
        events = [wire(e) async for e in stream]
    check_events(events)
    assert events[-1]["response"]["output"][0]["content"][0]["text"] == "async hello"


def test_azure_client_both_url_forms(server, azure_client, script) -> None:
    script.add({"content": "from azure"})
    r = azure_client.responses.create(model="my-deployment", input="hi")
    assert r.output_text == "from azure"
    assert azure_client.responses.retrieve(r.id).id == r.id
    old_style = openai.AzureOpenAI(azure_endpoint=server.url, api_version="2025-04-01-preview", api_key=KEY_A,
                                   max_retries=0)
    assert old_style.responses.retrieve(r.id).output_text == "from azure"
    bearer = OpenAI(base_url=server.url + "/openai/v1/", api_key=KEY_A, max_retries=0)
    assert bearer.responses.retrieve(r.id).id == r.id


def test_function_calling_round_trip(client: OpenAI, script) -> None:
    tools = [{"type": "function", "name": "get_weather", "description": "Weather for a city",
              "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
              "strict": True}]
    script.add({"tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}},
                               {"name": "get_weather", "arguments": {"city": "Rome"}}]},
               {"content": "Paris is sunny, Rome is rainy."})
    r = client.responses.create(model="m", input="weather?", tools=tools)
    check_response(r)
    calls = [o for o in r.output if o.type == "function_call"]
    assert [c.name for c in calls] == ["get_weather", "get_weather"]
    assert [c.arguments for c in calls] == ['{"city": "Paris"}', '{"city": "Rome"}']
    assert all(c.id.startswith("fc_") and c.status == "completed" for c in calls)
    sent = script.requests[-1]
    assert sent["tools"][0]["function"]["name"] == "get_weather" and sent["tools"][0]["function"]["strict"]
    outputs = [{"type": "function_call_output", "call_id": c.call_id, "output": f"weather {i}"}
               for i, c in enumerate(calls)]
    r2 = client.responses.create(model="m", input=outputs, tools=tools, previous_response_id=r.id)
    assert r2.output_text == "Paris is sunny, Rome is rainy."
    messages = script.requests[-1]["messages"]
    assert messages[1]["role"] == "assistant" and len(messages[1]["tool_calls"]) == 2
    assert messages[2] == {"role": "tool", "tool_call_id": calls[0].call_id, "content": "weather 0"}
    assert messages[3] == {"role": "tool", "tool_call_id": calls[1].call_id, "content": "weather 1"}


def test_function_call_stream_events(client: OpenAI, script) -> None:
    tools = [{"type": "function", "name": "f", "parameters": {"type": "object", "properties": {}}}]
    script.add({"tool_calls": [{"name": "f", "arguments": '{"a": 1}'}]})
    events = [wire(e) for e in client.responses.create(model="m", input="x", tools=tools, stream=True)]
    check_events(events)
    assert types_of(events) == [
        "response.created", "response.in_progress", "response.output_item.added",
        "response.function_call_arguments.delta", "response.function_call_arguments.delta",
        "response.function_call_arguments.done", "response.output_item.done", "response.completed"]
    assert events[5]["arguments"] == '{"a": 1}' and events[5]["name"] == "f"


def test_structured_output_maps_to_response_format(client: OpenAI, script) -> None:
    from pydantic import BaseModel

    class City(BaseModel):
        name: str
        population: int

    script.add({"content": '{"name": "Oslo", "population": 700000}'})
    parsed = client.responses.parse(model="m", input="a city", text_format=City)
    assert parsed.output_parsed == City(name="Oslo", population=700000)
    fmt = script.requests[-1]["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["name"] == "City" and fmt["json_schema"]["strict"]


def test_incomplete_on_length(client: OpenAI, script) -> None:
    script.add({"content": "cut off", "finish_reason": "length"})
    r = client.responses.create(model="m", input="x", max_output_tokens=16)
    check_response(r)
    assert r.status == "incomplete" and r.incomplete_details.reason == "max_output_tokens"
    assert r.output[0].status == "incomplete"
    assert script.requests[-1]["max_tokens"] == 16


def test_content_filter_incomplete(client: OpenAI, script) -> None:
    script.add({"content": "bad", "finish_reason": "content_filter"})
    r = client.responses.create(model="m", input="x")
    assert r.status == "incomplete" and r.incomplete_details.reason == "content_filter"


@pytest.mark.parametrize("turn", [{"status": 500, "error": "engine exploded"}, {"garbage": True}])
def test_engine_failure_is_stored_failed(client: OpenAI, script, turn) -> None:
    script.add(turn)
    r = client.responses.create(model="m", input="x", stream=False)
    check_response(r)
    assert r.status == "failed" and r.error.code == "server_error" and r.error.message
    assert client.responses.retrieve(r.id).status == "failed"


@pytest.mark.parametrize("turn", [{"status": 500, "error": "engine exploded"}, {"garbage": True}, {"drop": True}])
def test_engine_failure_streamed(client: OpenAI, script, turn) -> None:
    script.add(turn)
    events = [wire(e) for e in client.responses.create(model="m", input="x", stream=True)]
    check_events(events)
    assert events[-1]["type"] == "response.failed"
    assert events[-1]["response"]["error"]["code"] == "server_error"
    assert client.responses.retrieve(events[-1]["response"]["id"]).status == "failed"


def test_usage_summed_over_turns_is_reported(client: OpenAI, script) -> None:
    script.add({"content": "x", "usage": {"prompt_tokens": 3, "completion_tokens": 2, "reasoning_tokens": 1}})
    r = client.responses.create(model="m", input="x")
    assert r.usage.output_tokens_details.reasoning_tokens == 1


def test_other_key_gets_404_everywhere(client: OpenAI, other_client: OpenAI) -> None:
    r = client.responses.create(model="m", input="mine")
    with pytest.raises(openai.NotFoundError):
        other_client.responses.retrieve(r.id)
    with pytest.raises(openai.NotFoundError):
        other_client.responses.input_items.list(r.id)
    with pytest.raises(openai.NotFoundError):
        other_client.responses.delete(r.id)
    with pytest.raises(openai.NotFoundError) as e:
        other_client.responses.create(model="m", input="x", previous_response_id=r.id)
    assert e.value.body["param"] == "previous_response_id"
    assert client.responses.retrieve(r.id).id == r.id


def test_delete_then_404(client: OpenAI) -> None:
    r = client.responses.create(model="m", input="bye")
    client.responses.delete(r.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(r.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.delete(r.id)


def test_input_items_pagination(client: OpenAI) -> None:
    r = client.responses.create(model="m", input=[{"role": "user", "content": f"m{i}"} for i in range(7)])
    page = client.responses.input_items.list(r.id, limit=3)
    assert [i.content[0].text for i in page.data] == ["m6", "m5", "m4"] and page.has_more
    everything = [i.content[0].text for i in client.responses.input_items.list(r.id, limit=2, order="asc")]
    assert everything == [f"m{i}" for i in range(7)]
    ids = [i.id for i in client.responses.input_items.list(r.id, order="asc", limit=100).data]
    before = client.responses.input_items.list(r.id, order="asc", extra_query={"before": ids[3]}).data
    assert [i.id for i in before] == ids[:3]


def test_models_and_health(server, client: OpenAI) -> None:
    models = [m.id for m in client.models.list()]
    assert "scripted-model" in models
    assert httpx.get(server.url + "/health").json()["status"] == "ok"


def test_store_false_is_not_retrievable(client: OpenAI, script) -> None:
    r = client.responses.create(model="m", input="secret", store=False)
    assert r.status == "completed" and r.store is False
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(r.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="m", input="x", previous_response_id=r.id)


@pytest.mark.anyio
async def test_async_azure_client(server, script) -> None:
    script.add({"content": "async azure"}, {"content": "streamed azure"})
    # Closed before the test's event loop ends: a client left to the garbage collector would
    # close its connections later, on a loop that no longer runs, inside some other test.
    async with openai.AsyncAzureOpenAI(base_url=server.url + "/openai/v1/", api_version="preview",
                                       api_key=KEY_A, max_retries=0) as client:
        r = await client.responses.create(model="deployment", input="hi")
        check_response(r)
        assert r.output_text == "async azure"
        async with client.responses.stream(model="deployment", input="hi", previous_response_id=r.id) as stream:
            events = [wire(e) async for e in stream]
            final = await stream.get_final_response()
        check_events(events)
        assert final.output_text == "streamed azure" and final.previous_response_id == r.id
        assert (await client.responses.retrieve(final.id)).output_text == "streamed azure"
