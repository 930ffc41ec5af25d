"""What real clients put on the wire that a strict server would reject (clients.md §6), each
form on its own, sent raw so the exact shape is under test."""

from __future__ import annotations

import httpx
import pytest
from harness import KEY_A, KEY_B, ServerProcess, check_events, check_response, sse_events

FUNCTION = {"type": "function", "name": "get_weather", "description": "Current weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
USER = {"role": "user", "content": "Weather in Paris?"}


def post(server: ServerProcess, body: dict, key: str = KEY_A, **headers: str) -> httpx.Response:
    return httpx.post(server.base_url + "/responses", json=body, timeout=60,
                      headers={"Authorization": f"Bearer {key}", **headers})


def ok(r: httpx.Response) -> dict:
    assert r.status_code == 200, r.text
    if r.headers["content-type"].startswith("text/event-stream"):
        events = sse_events(r.content)
        check_events(events)
        return events[-1]["response"]
    body = r.json()
    check_response(body)
    return body


def call_history(**call_fields: object) -> list[dict]:
    call = {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": '{"city":"Paris"}',
            **call_fields}
    return [USER, call, {"type": "function_call_output", "call_id": "call_1", "output": "21C"}]


def test_unknown_top_level_keys(clients_server: ServerProcess, script) -> None:
    script.add({"content": "fine"})
    r = ok(post(clients_server, {"model": "m", "input": "hi", "client_metadata": {"session_id": "s"},
                                 "prompt_cache_key": "thread-1", "some_future_field": [1, 2]}))
    assert r["output"][0]["content"][0]["text"] == "fine"


def test_explicit_nulls_and_schema_key_in_tools(clients_server: ServerProcess, script) -> None:
    fn = {**FUNCTION, "strict": None, "description": None,
          "parameters": {"$schema": "http://json-schema.org/draft-07/schema#", **FUNCTION["parameters"]}}
    web = {"type": "web_search", "filters": None, "user_location": None, "search_context_size": "medium"}
    script.add({"content": "fine"})
    r = ok(post(clients_server, {"model": "m", "input": "hi", "tools": [fn, web], "tool_choice": None,
                                 "temperature": None, "max_output_tokens": None, "metadata": None}))
    assert [t["type"] for t in r["tools"]] == ["function", "web_search"]
    (offered,) = script.requests[0]["tools"]
    assert offered["function"]["name"] == "get_weather" and "strict" not in offered["function"]


@pytest.mark.parametrize("fields", [{}, {"id": "fc_client1", "status": "completed"}, {"status": "completed"},
                                    {"id": "fc_client2"}], ids=["bare", "id+status", "status", "id"])
def test_function_call_echoes(fields: dict, clients_server: ServerProcess, script) -> None:
    script.add({"content": "21C it is."})
    r = ok(post(clients_server, {"model": "m", "input": call_history(**fields), "tools": [FUNCTION]}))
    assert r["output"][0]["content"][0]["text"] == "21C it is."
    messages = script.requests[0]["messages"]
    assert messages[1]["tool_calls"][0]["id"] == "call_1"
    assert messages[2] == {"role": "tool", "tool_call_id": "call_1", "content": "21C"}


def test_client_invented_ids_are_kept(clients_server: ServerProcess, script) -> None:
    history = call_history(id="fc_mine", status="completed")
    history[2] = {**history[2], "id": "fco_01a214ea-bc2c-7d42-b7b0-b5f61f6c7b7d"}
    history[0] = {**USER, "id": "msg_01a214ea-ba02-79f1-999e-c5c1dff132d0", "type": "message"}
    r = ok(post(clients_server, {"model": "m", "input": history, "tools": [FUNCTION]}))
    items = httpx.get(f"{clients_server.base_url}/responses/{r['id']}/input_items?order=asc",
                      headers={"Authorization": f"Bearer {KEY_A}"}).json()["data"]
    assert [i["id"] for i in items] == [h["id"] for h in history]


def test_echoed_output_parts_with_logprobs_and_annotations(clients_server: ServerProcess, script) -> None:
    echoed = {"id": "msg_earlier", "type": "message", "role": "assistant", "status": "completed",
              "content": [{"type": "output_text", "text": "It was sunny.", "annotations": [], "logprobs": []}]}
    script.add({"content": "Still sunny."})
    ok(post(clients_server, {"model": "m", "input": [USER, echoed, {"role": "user", "content": "And now?"}]}))
    assert script.requests[0]["messages"][1] == {"role": "assistant", "content": "It was sunny."}


def test_message_forms_and_roles(clients_server: ServerProcess, script) -> None:
    script.add({"content": "ok"})
    ok(post(clients_server, {"model": "m", "input": [
        {"content": "sys prompt", "role": "system", "type": "message"},  # LangChain
        {"role": "developer", "content": "dev prompt"},  # Codex, AI SDK
        {"role": "user", "content": [{"type": "input_text", "text": "typed parts"}]},  # AI SDK, no type
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "typed"}]},
        {"role": "user", "content": "easy"},  # Agents SDK
    ], "stream": False}, accept="application/json"))
    assert script.requests[0]["messages"] == [
        {"role": "system", "content": "sys prompt"}, {"role": "system", "content": "dev prompt"},
        {"role": "user", "content": "typed parts"}, {"role": "user", "content": "typed"},
        {"role": "user", "content": "easy"}]


@pytest.mark.parametrize("accept", ["text/event-stream", "*/*", "application/json"])
def test_accept_header_never_decides_the_format(accept: str, clients_server: ServerProcess, script) -> None:
    script.add({"content": "plain"}, {"content": "streamed"})
    plain = post(clients_server, {"model": "m", "input": "hi"}, accept=accept)
    assert plain.headers["content-type"].startswith("application/json")
    assert ok(plain)["status"] == "completed"
    streamed = post(clients_server, {"model": "m", "input": "hi", "stream": True}, accept=accept)
    assert streamed.headers["content-type"].startswith("text/event-stream")
    assert ok(streamed)["status"] == "completed"


def test_tool_types_the_server_cannot_run_are_accepted_not_offered(clients_server: ServerProcess, script) -> None:
    tools = [
        FUNCTION,
        {"type": "custom", "name": "apply_patch", "description": "Patch files",
         "format": {"type": "grammar", "syntax": "lark", "definition": "start: /.+/"}},
        {"type": "web_search", "external_web_access": False, "search_content_types": ["text", "image"]},
        {"type": "tool_search", "execution": "client", "description": "Find deferred tools",
         "parameters": {"type": "object", "properties": {"query": {"type": "string"}}}},
        {"type": "namespace", "name": "multi_agent_v1", "description": "Sub-agents",
         "tools": [{"type": "function", "name": "spawn_agent", "parameters": {"type": "object"}}]},
        {"type": "web_search_preview"},
        {"type": "code_interpreter", "container": {"type": "auto"}},
    ]
    script.add({"content": "fine"}, {"content": "streamed"})
    r = post(clients_server, {"model": "m", "input": "hi", "tools": tools})
    body = ok(r)
    assert r.headers["x-responsa-ignored-tools"] == "code_interpreter,web_search,web_search_preview"
    assert [t["type"] for t in body["tools"]] == [t["type"] for t in tools]
    # tool_search and namespace tools are offered (test_toolsearch.py, test_namespaces.py).
    assert [t["function"]["name"] for t in script.requests[0]["tools"]] == \
        ["get_weather", "apply_patch", "tool_search", "multi_agent_v1__spawn_agent"]
    streamed = post(clients_server, {"model": "m", "input": "hi", "tools": tools, "stream": True})
    assert streamed.headers["x-responsa-ignored-tools"] == r.headers["x-responsa-ignored-tools"]
    assert ok(streamed)["status"] == "completed"
    # With nothing left to offer, the engine gets no tools and no tool_choice at all.
    script.add({"content": "no tools"})
    hosted = [t for t in tools if t["type"] not in ("function", "custom", "tool_search", "namespace")]
    ok(post(clients_server, {"model": "m", "input": "hi", "tools": hosted, "tool_choice": "auto"}))
    assert "tools" not in script.requests[-1] and "tool_choice" not in script.requests[-1]
    # Forcing a tool the server does not run cannot be honoured: that is a clear 400.
    forced = post(clients_server, {"model": "m", "input": "hi", "tools": tools,
                                   "tool_choice": {"type": "web_search"}})
    assert forced.status_code == 400 and forced.json()["error"]["param"] == "tool_choice"


def test_item_references_resolve_without_previous_response_id(clients_server: ServerProcess, script) -> None:
    script.add({"reasoning": "Think first.", "content": "Hello there."}, {"content": "Hello again."})
    first = ok(post(clients_server, {"model": "m", "input": "Say hello"}))
    reasoning, message = first["output"]
    refs = [{"type": "item_reference", "id": reasoning["id"]}, {"type": "item_reference", "id": message["id"]}]
    second = ok(post(clients_server, {"model": "m", "input": [
        {"role": "user", "content": "Say hello"}, *refs, {"role": "user", "content": "Again"}]}))
    assert second["previous_response_id"] is None
    assert script.requests[1]["messages"] == [
        {"role": "user", "content": "Say hello"},
        {"role": "assistant", "content": "Hello there.", "reasoning_content": "Think first."},
        {"role": "user", "content": "Again"}]
    # Another key's items are not found, with the input index named.
    foreign = post(clients_server, {"model": "m", "input": [refs[1]]}, key=KEY_B)
    assert foreign.status_code == 404 and foreign.json()["error"]["param"] == "input[0]"


def test_reasoning_echoed_by_id_without_content(clients_server: ServerProcess, script) -> None:
    """LangChain and the Agents SDK resend stored reasoning as `{id, summary: []}` only."""
    script.add({"reasoning": "Check the weather.", "tool_calls": [{"name": "get_weather",
                                                                  "arguments": {"city": "Paris"}}]},
               {"content": "21C."})
    first = ok(post(clients_server, {"model": "m", "input": [USER], "tools": [FUNCTION]}))
    reasoning, call = first["output"]
    echo = {"type": "reasoning", "id": reasoning["id"], "summary": [], "content": None}
    ok(post(clients_server, {"model": "m", "tools": [FUNCTION], "input": [
        USER, echo, call, {"type": "function_call_output", "call_id": call["call_id"], "output": "21C"}]}))
    assert script.requests[1]["messages"][1]["reasoning_content"] == "Check the weather."
