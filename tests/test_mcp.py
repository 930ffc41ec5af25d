"""Remote MCP tools through the official SDK, against real MCP servers on loopback.

The Responsa server here runs with --allow-private-network (the MCP servers are on
127.0.0.1), a 2-second --mcp-timeout and a 1 KiB --mcp-max-output; one test uses the shared
server, which has no --allow-private-network, to show the refusal.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from harness import KEY_A, ScriptedEngine, ServerProcess, check_events, check_response, free_port, types_of, wire
from mcp_servers import MCPTestServer, not_mcp_server, silent_server
from openai import OpenAI

from responsa.chat import mcp_function_name
from responsa.mcp import Connection, ServerFailure
from responsa.netguard import Guard

TOKEN = "tok-7f3a9c0e-mcp-secret"
# `mcp_call.error` is a string (what openai 1.x/2.x and npm type); 3.x types an object, parses the
# string as it is, and warns when such a response is dumped back (wire()).
pytestmark = pytest.mark.filterwarnings("ignore:Pydantic serializer warnings:UserWarning")


@pytest.fixture(scope="module")
def mcp_server(engine: ScriptedEngine, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path_factory.mktemp("mcp-server"), "--upstream-base-url", engine.base_url,
                         "--api-key", KEY_A, "--allow-private-network", "--mcp-timeout", "2",
                         "--mcp-max-output", "1k")
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture
def client(mcp_server: ServerProcess, script) -> OpenAI:
    return OpenAI(base_url=mcp_server.base_url, api_key=KEY_A, max_retries=0)


def _server(**kwargs) -> Iterator[MCPTestServer]:
    server = MCPTestServer("test", **kwargs).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def open_servers() -> Iterator[MCPTestServer]:
    yield from _server()


@pytest.fixture(scope="module")
def auth_servers() -> Iterator[MCPTestServer]:
    yield from _server(token=TOKEN)


@pytest.fixture(scope="module")
def sse_servers() -> Iterator[MCPTestServer]:
    yield from _server(transport="sse")


@pytest.fixture
def calc(open_servers: MCPTestServer) -> MCPTestServer:
    open_servers.log.clear()
    return open_servers


@pytest.fixture
def locked(auth_servers: MCPTestServer) -> MCPTestServer:
    auth_servers.log.clear()
    return auth_servers


@pytest.fixture
def legacy(sse_servers: MCPTestServer) -> MCPTestServer:
    sse_servers.log.clear()
    return sse_servers


def mcp_tool(server: MCPTestServer, label: str = "calc", **fields) -> dict:
    return {"type": "mcp", "server_label": label, "server_url": server.mcp_url, **fields}


def call(name: str, **arguments) -> dict:
    return {"tool_calls": [{"name": name, "arguments": arguments}]}


def stream(client: OpenAI, **kwargs) -> list[dict]:
    events = [wire(e) for e in client.responses.create(stream=True, **kwargs)]
    check_events(events)
    return events


def message_types(body: dict) -> list[str]:
    return [m["role"] for m in body["messages"]]


# ---- running calls -------------------------------------------------------------------------------

def test_never_approval_runs_the_call_and_continues(client: OpenAI, script, calc: MCPTestServer) -> None:
    script.add(call("mcp__calc__add", a=2, b=3), {"content": "The sum is 5."})
    r = client.responses.create(model="m", input="add 2 and 3",
                                tools=[mcp_tool(calc, require_approval="never")])
    check_response(r)
    assert [o.type for o in r.output] == ["mcp_list_tools", "mcp_call", "message"]
    listing, made, _ = r.output
    assert listing.server_label == "calc" and listing.error is None
    add = next(t for t in listing.tools if t.name == "add")
    assert add.input_schema["required"] == ["a", "b"] and add.description == "Add two integers."
    assert add.annotations == {"readOnlyHint": True}
    assert (made.name, made.server_label, json.loads(made.arguments)) == ("add", "calc", {"a": 2, "b": 3})
    assert (made.output, made.error, made.status, made.approval_request_id) == ("5", None, "completed", None)
    assert r.output_text == "The sum is 5."
    assert [(c["name"], c["arguments"]) for c in calc.log.calls()] == [("add", {"a": 2, "b": 3})]
    first, second = script.requests[-2:]
    offered = {t["function"]["name"]: t["function"] for t in first["tools"]}
    assert offered["mcp__calc__add"]["parameters"]["required"] == ["a", "b"]
    assert second["messages"][-2]["tool_calls"][0]["function"] == {"name": "mcp__calc__add",
                                                                    "arguments": made.arguments}
    assert second["messages"][-1]["role"] == "tool" and second["messages"][-1]["content"] == "5"
    assert wire(client.responses.retrieve(r.id)) == wire(r)


def test_streamed_event_sequence(client: OpenAI, script, calc: MCPTestServer) -> None:
    script.add(call("mcp__calc__add", a=20, b=22), {"content": "answer: 42"})
    events = stream(client, model="m", input="add", tools=[mcp_tool(calc, require_approval="never")])
    assert types_of(events) == [
        "response.created", "response.in_progress",
        "response.output_item.added", "response.mcp_list_tools.in_progress",
        "response.mcp_list_tools.completed", "response.output_item.done",
        "response.output_item.added", "response.mcp_call.in_progress", "response.mcp_call_arguments.delta",
        "response.mcp_call_arguments.done", "response.mcp_call.completed", "response.output_item.done",
        "response.output_item.added", "response.content_part.added", "response.output_text.delta",
        "response.output_text.delta", "response.output_text.done", "response.content_part.done",
        "response.output_item.done", "response.completed"]
    listing_added, call_added = events[2]["item"], events[6]["item"]
    assert listing_added["tools"] == [] and events[5]["item"]["tools"]
    assert call_added["arguments"] == "" and call_added["status"] == "in_progress"
    assert json.loads(events[8]["delta"]) == {"a": 20, "b": 22} == json.loads(events[9]["arguments"])
    done = events[11]["item"]
    assert (done["output"], done["status"]) == ("42", "completed")
    final = events[-1]["response"]
    assert [o["type"] for o in final["output"]] == ["mcp_list_tools", "mcp_call", "message"]
    assert wire(client.responses.retrieve(final["id"]))["output"] == final["output"]


def test_stream_helper_final_response(client: OpenAI, script, calc: MCPTestServer) -> None:
    script.add(call("mcp__calc__echo", text="hi"), {"content": "said hi"})
    tools = [mcp_tool(calc, require_approval="never")]
    with client.responses.stream(model="m", input="echo", tools=tools) as s:
        final = s.get_final_response()
    assert [o.type for o in final.output] == ["mcp_list_tools", "mcp_call", "message"]
    assert final.output[1].output == "hi" and final.output_text == "said hi"


def test_failing_tool_is_an_error_item_and_the_model_continues(client: OpenAI, script,
                                                               calc: MCPTestServer) -> None:
    script.add(call("mcp__calc__fail", reason="disk full"), {"content": "The tool failed."})
    events = stream(client, model="m", input="try", tools=[mcp_tool(calc, require_approval="never")])
    assert "response.mcp_call.failed" in types_of(events)
    assert "response.mcp_call.completed" not in types_of(events)
    final = events[-1]["response"]
    assert final["status"] == "completed"
    failed = final["output"][1]
    assert failed["status"] == "failed" and failed["output"] is None
    assert isinstance(failed["error"], str) and "failed on purpose: disk full" in failed["error"]
    assert final["output"][2]["content"][0]["text"] == "The tool failed."
    assert script.requests[-1]["messages"][-1]["content"] == f"Error: {failed['error']}"
    got = client.responses.retrieve(final["id"])
    assert got.output[1].error == failed["error"]  # the SDK keeps the string as it is


def test_call_timeout_and_output_cap(client: OpenAI, script, calc: MCPTestServer) -> None:
    script.add({"tool_calls": [{"name": "mcp__calc__slow", "arguments": {"seconds": 10}},
                               {"name": "mcp__calc__big", "arguments": {"size": 5000}}]}, {"content": "ok"})
    r = client.responses.create(model="m", input="x", tools=[mcp_tool(calc, require_approval="never")])
    check_response(r)
    slow, big = r.output[1], r.output[2]
    assert slow.status == "failed" and "no answer within 2 seconds" in slow.error
    assert big.status == "completed"
    kept, note = big.output.rsplit("\n", 1)
    assert len(kept.encode()) == 1024 and note == "[output truncated: 5000 bytes, the first 1024 kept]"
    assert r.output_text == "ok"


def test_max_tool_calls_limits_server_side_calls(client: OpenAI, script, calc: MCPTestServer) -> None:
    script.add(call("mcp__calc__add", a=1, b=1), {"content": "two"})
    r = client.responses.create(model="m", input="x", max_tool_calls=1,
                                tools=[mcp_tool(calc, require_approval="never")])
    check_response(r)
    assert [o.type for o in r.output] == ["mcp_list_tools", "mcp_call", "message"]
    assert "tools" in script.requests[-2] and "tools" not in script.requests[-1]
    assert len(calc.log.calls()) == 1


def test_max_tool_calls_ignores_parallel_calls_past_the_cap(client: OpenAI, script, calc: MCPTestServer) -> None:
    script.add({"tool_calls": [{"name": "mcp__calc__add", "arguments": {"a": 1, "b": 1}},
                               {"name": "mcp__calc__add", "arguments": {"a": 2, "b": 2}},
                               {"name": "mcp__calc__add", "arguments": {"a": 3, "b": 3}}]},
               {"content": "done"})
    r = client.responses.create(model="m", input="x", max_tool_calls=2,
                                tools=[mcp_tool(calc, require_approval="never")])
    check_response(r)
    assert [o.type for o in r.output] == ["mcp_list_tools", "mcp_call", "mcp_call", "message"]
    assert len(calc.log.calls()) == 2
    assert "tools" not in script.requests[-1]


def test_engine_refusal_after_a_tool_call_fails_with_a_typed_code(client: OpenAI, script,
                                                                   calc: MCPTestServer) -> None:
    # Once a response has output, an engine refusal can only end it; its code must be one the
    # SDKs' ResponseError type allows, the message keeps the detail.
    script.add(call("mcp__calc__add", a=1, b=2), {"status": 400, "error": "maximum context length exceeded"})
    events = stream(client, model="m", input="x", tools=[mcp_tool(calc, require_approval="never")])
    error = events[-1]["response"]["error"]
    assert events[-1]["type"] == "response.failed"
    assert error["code"] == "invalid_prompt" and "context" in error["message"]


def test_sse_only_server(client: OpenAI, script, legacy: MCPTestServer) -> None:
    script.add(call("mcp__old__add", a=4, b=5), {"content": "nine"})
    r = client.responses.create(model="m", input="x",
                                tools=[mcp_tool(legacy, "old", require_approval="never")])
    check_response(r)
    assert r.output[1].output == "9" and r.output_text == "nine"
    assert ("GET", "/sse") in [(e["http"], e["path"]) for e in legacy.log.entries]
    assert [c["name"] for c in legacy.log.calls()] == ["add"]


def test_background_run(client: OpenAI, script, calc: MCPTestServer) -> None:
    script.add(call("mcp__calc__add", a=3, b=4), {"content": "seven"})
    r = client.responses.create(model="m", input="x", background=True,
                                tools=[mcp_tool(calc, require_approval="never")])
    assert r.status in ("queued", "in_progress")
    with client.responses.retrieve(r.id, stream=True) as events:
        seen = [wire(e) for e in events]
    check_events(seen)
    final = client.responses.retrieve(r.id)
    check_response(final)
    assert final.status == "completed" and final.output[1].output == "7"


# ---- approvals ------------------------------------------------------------------------------------

def _ask_approval(client: OpenAI, script, server: MCPTestServer, **fields) -> openai.types.responses.Response:
    script.add(call("mcp__calc__add", a=2, b=2))
    r = client.responses.create(model="m", input="add 2 and 2", tools=[mcp_tool(server, **fields)])
    check_response(r)
    assert r.status == "completed", r.error
    assert [o.type for o in r.output] == ["mcp_list_tools", "mcp_approval_request"]
    request = r.output[1]
    assert (request.server_label, request.name) == ("calc", "add")
    assert json.loads(request.arguments) == {"a": 2, "b": 2}
    assert server.log.calls() == []  # nothing sent before approval
    return r


def test_approval_round_trip(client: OpenAI, script, calc: MCPTestServer) -> None:
    r1 = _ask_approval(client, script, calc)  # require_approval defaults to "always"
    assert r1.tools[0].require_approval == "always"
    request = r1.output[1]
    script.add({"content": "2 + 2 = 4"})
    approve = {"type": "mcp_approval_response", "approval_request_id": request.id, "approve": True}
    events = stream(client, model="m", previous_response_id=r1.id, tools=[mcp_tool(calc)], input=[approve])
    final = events[-1]["response"]
    assert [o["type"] for o in final["output"]] == ["mcp_call", "message"]  # the listing is reused
    ran = final["output"][0]
    assert (ran["approval_request_id"], ran["name"], ran["output"]) == (request.id, "add", "4")
    assert json.loads(ran["arguments"]) == {"a": 2, "b": 2}
    assert types_of(events)[2:8] == [
        "response.output_item.added", "response.mcp_call.in_progress", "response.mcp_call_arguments.delta",
        "response.mcp_call_arguments.done", "response.mcp_call.completed", "response.output_item.done"]
    assert [(c["name"], c["arguments"]) for c in calc.log.calls()] == [("add", {"a": 2, "b": 2})]
    methods = calc.log.methods()  # (after a call the SDK lists again, to check structured output)
    assert methods[:methods.index("tools/call")].count("tools/list") == 1
    messages = script.requests[-1]["messages"]
    assert messages[-2]["tool_calls"] == [{"id": request.id, "type": "function", "function": {
        "name": "mcp__calc__add", "arguments": request.arguments}}]
    assert messages[-1] == {"role": "tool", "tool_call_id": request.id, "content": "4"}
    items = client.responses.input_items.list(final["id"]).data
    assert [i.type for i in items] == ["mcp_approval_response"]
    # Sending the same approval again runs nothing twice.
    script.add({"content": "still 4"})
    again = client.responses.create(model="m", previous_response_id=final["id"], tools=[mcp_tool(calc)],
                                    input=[approve])
    assert [o.type for o in again.output] == ["message"] and len(calc.log.calls()) == 1


def test_approval_without_storage(client: OpenAI, script, calc: MCPTestServer) -> None:
    """With store=false the client sends the earlier output back as input, approval included."""
    script.add(call("mcp__calc__add", a=6, b=7), {"content": "13"})
    tools = [mcp_tool(calc)]
    r1 = client.responses.create(model="m", input="add", tools=tools, store=False)
    assert [o.type for o in r1.output] == ["mcp_list_tools", "mcp_approval_request"]
    echoed = [o.model_dump(exclude_none=True) for o in r1.output]
    r2 = client.responses.create(model="m", store=False, tools=tools, input=[
        {"role": "user", "content": "add"}, *echoed,
        {"type": "mcp_approval_response", "approval_request_id": r1.output[1].id, "approve": True}])
    check_response(r2)
    assert [o.type for o in r2.output] == ["mcp_call", "message"]
    assert r2.output[0].output == "13" and r2.output[0].approval_request_id == r1.output[1].id
    methods = calc.log.methods()
    assert methods[:methods.index("tools/call")].count("tools/list") == 1


def test_denial_sends_nothing_and_tells_the_model(client: OpenAI, script, calc: MCPTestServer) -> None:
    r1 = _ask_approval(client, script, calc)
    request = r1.output[1]
    script.add({"content": "Understood, I will not add."})
    r2 = client.responses.create(model="m", previous_response_id=r1.id, tools=[mcp_tool(calc)], input=[
        {"type": "mcp_approval_response", "approval_request_id": request.id, "approve": False,
         "reason": "not now"}])
    check_response(r2)
    assert [o.type for o in r2.output] == ["message"]
    assert calc.log.calls() == []
    assert script.requests[-1]["messages"][-1] == {"role": "tool", "tool_call_id": request.id,
                                                   "content": "The user denied this tool call: not now"}


def test_require_approval_per_tool(client: OpenAI, script, calc: MCPTestServer) -> None:
    script.add({"tool_calls": [{"name": "mcp__calc__add", "arguments": {"a": 1, "b": 2}},
                               {"name": "mcp__calc__echo", "arguments": {"text": "secret data"}}]})
    r = client.responses.create(model="m", input="x", tools=[mcp_tool(
        calc, require_approval={"never": {"tool_names": ["add"]}})])
    check_response(r)
    assert [o.type for o in r.output] == ["mcp_list_tools", "mcp_call", "mcp_approval_request"]
    assert r.output[1].output == "3" and r.output[2].name == "echo"
    assert [c["name"] for c in calc.log.calls()] == ["add"]
    script.add(call("mcp__calc__add", a=5, b=5), {"content": "10"})
    read_only = client.responses.create(model="m", input="x", tools=[mcp_tool(
        calc, require_approval={"never": {"read_only": True}})])
    assert [o.type for o in read_only.output] == ["mcp_list_tools", "mcp_call", "message"]


def test_approval_mistakes_are_400s(client: OpenAI, script, calc: MCPTestServer) -> None:
    with pytest.raises(openai.BadRequestError) as e:
        client.responses.create(model="m", tools=[mcp_tool(calc)], input=[
            {"type": "mcp_approval_response", "approval_request_id": "mcpr_nope", "approve": True}])
    assert e.value.body["param"] == "input" and "mcpr_nope" in e.value.body["message"]
    r1 = _ask_approval(client, script, calc)
    approve = {"type": "mcp_approval_response", "approval_request_id": r1.output[1].id, "approve": True}
    with pytest.raises(openai.BadRequestError) as e:  # the follow-up forgot `tools`
        client.responses.create(model="m", previous_response_id=r1.id, input=[approve])
    assert e.value.body["param"] == "tools" and "'calc'" in e.value.body["message"]
    assert calc.log.calls() == []
    deny = {**approve, "approve": False}  # a denial needs no server
    script.add({"content": "fine"})
    r2 = client.responses.create(model="m", previous_response_id=r1.id, input=[deny])
    assert r2.output_text == "fine"


# ---- listing ----------------------------------------------------------------------------------------

@pytest.mark.parametrize(("item", "param"), [
    ({"type": "mcp_list_tools", "server_label": "calc", "tools": "add"}, "input[0].tools"),
    ({"type": "mcp_list_tools", "server_label": "calc", "tools": [{"name": 5}]}, "input[0].tools[0].name"),
    ({"type": "mcp_list_tools", "server_label": "calc", "tools": [{"name": "add", "input_schema": "{}"}]},
     "input[0].tools[0].input_schema"),
    ({"type": "mcp_list_tools", "server_label": "calc"}, "input[0].tools"),
    ({"type": "mcp_call", "server_label": "calc", "name": "add", "arguments": "{}", "output": {"sum": 3}},
     "input[0].output"),
    ({"type": "mcp_call", "server_label": "calc", "name": "add", "arguments": "{}", "approval_request_id": ["x"]},
     "input[0].approval_request_id"),
])
def test_malformed_mcp_echoes_are_400s(client: OpenAI, script, calc: MCPTestServer, item: dict,
                                       param: str) -> None:
    # Accepted, such an echo would be the listing (or call) every later turn of the chain reads.
    with pytest.raises(openai.BadRequestError) as e:
        client.responses.create(model="m", tools=[mcp_tool(calc, require_approval="never")],
                                input=[item, {"role": "user", "content": "go on"}])
    assert e.value.body["param"] == param
    assert script.requests == [] and calc.log.methods() == []


def test_listing_reused_in_a_chain(client: OpenAI, script, calc: MCPTestServer) -> None:
    script.add({"content": "one"}, {"content": "two"}, {"content": "three"})
    tools = [mcp_tool(calc, require_approval="never")]
    r1 = client.responses.create(model="m", input="a", tools=tools)
    r2 = client.responses.create(model="m", input="b", tools=tools, previous_response_id=r1.id)
    assert [o.type for o in r1.output] == ["mcp_list_tools", "message"]
    assert [o.type for o in r2.output] == ["message"]
    assert "mcp__calc__add" in {t["function"]["name"] for t in script.requests[-1]["tools"]}
    assert calc.log.methods().count("tools/list") == 1
    r3 = client.responses.create(model="m", input="c", tools=tools)  # a new conversation lists again
    assert [o.type for o in r3.output] == ["mcp_list_tools", "message"]
    assert calc.log.methods().count("tools/list") == 2


def test_allowed_tools_and_tool_choice(client: OpenAI, script, calc: MCPTestServer) -> None:
    r = client.responses.create(model="m", input="x", tools=[mcp_tool(calc, allowed_tools=["add", "echo"])],
                                tool_choice={"type": "mcp", "server_label": "calc", "name": "echo"})
    assert [t.name for t in r.output[0].tools] == ["add", "echo"]
    sent = script.requests[-1]
    assert {t["function"]["name"] for t in sent["tools"]} == {"mcp__calc__add", "mcp__calc__echo"}
    assert sent["tool_choice"] == {"type": "function", "function": {"name": "mcp__calc__echo"}}
    r = client.responses.create(model="m", input="x",
                                tools=[mcp_tool(calc, allowed_tools={"read_only": True})])
    assert [t.name for t in r.output[0].tools] == ["add"]


def test_function_names_never_collide(client: OpenAI, script, calc: MCPTestServer,
                                      legacy: MCPTestServer) -> None:
    dotted = mcp_function_name("calc", "files.read")
    assert re.fullmatch(r"[A-Za-z0-9_-]{1,64}", dotted)
    script.add(call(dotted, path="/etc/motd"), {"content": "done"})
    r = client.responses.create(model="m", input="x", tools=[
        mcp_tool(calc, require_approval="never"), mcp_tool(legacy, "old", require_approval="never"),
        {"type": "function", "name": "add", "parameters": {"type": "object", "properties": {}}}])
    check_response(r)
    offered = [t["function"]["name"] for t in script.requests[-2]["tools"]]
    assert len(offered) == len(set(offered))
    assert {"add", "mcp__calc__add", "mcp__old__add", dotted} <= set(offered)
    assert r.output[2].name == "files.read" and r.output[2].output == "contents of /etc/motd"


# ---- credentials ----------------------------------------------------------------------------------

def test_bearer_header_is_used_and_never_stored_or_echoed(client: OpenAI, script, locked: MCPTestServer,
                                                           mcp_server: ServerProcess) -> None:
    script.add(call("mcp__calc__add", a=1, b=2), {"content": "3"})
    r = client.responses.create(model="m", input="x", tools=[mcp_tool(
        locked, require_approval="never", headers={"Authorization": f"Bearer {TOKEN}"})])
    check_response(r)
    assert r.output[1].output == "3"
    assert {e["authorization"] for e in locked.log.entries} == {f"Bearer {TOKEN}"}
    assert "headers" not in wire(r)["tools"][0]
    assert "headers" not in wire(client.responses.retrieve(r.id))["tools"][0]
    script.add(call("mcp__calc__echo", text="hello"), {"content": "done"})
    r2 = client.responses.create(model="m", input="y", stream=False, tools=[mcp_tool(
        locked, require_approval="never", authorization=TOKEN)])
    assert r2.output[1].output == "hello" and "authorization" not in wire(r2)["tools"][0]
    stored = b"".join(p.read_bytes() for p in Path(mcp_server.data_dir).rglob("*") if p.is_file())
    assert b"mcp__calc__add" in stored or b"mcp_call" in stored  # the store is where we looked
    assert TOKEN.encode() not in stored
    assert TOKEN not in mcp_server.log()


BAD_VALUES = {
    "trailing newline": f"Bearer {TOKEN}\n",
    "leading space": f" {TOKEN}",
    "trailing tab": f"{TOKEN}\t",
    "NUL": f"{TOKEN}\x00",
    "CR/LF": f"{TOKEN}\r\nX-Injected: 1",
    "non-ASCII": f"{TOKEN}\u00e9",
}


@pytest.mark.parametrize("slip", sorted(BAD_VALUES))
def test_bad_header_values_are_400s_that_never_echo_them(client: OpenAI, script, calc: MCPTestServer,
                                                         mcp_server: ServerProcess, slip: str) -> None:
    """Copy-paste slips in a secret header: a 400 naming the header, the value nowhere."""
    value = BAD_VALUES[slip]
    for fields, param in [({"headers": {"X-Api-Key": value}}, "tools[0].headers.X-Api-Key"),
                          ({"authorization": value.removeprefix("Bearer ")}, "tools[0].authorization")]:
        with pytest.raises(openai.BadRequestError) as e:
            client.responses.create(model="m", input="x", tools=[mcp_tool(calc, **fields)])
        assert e.value.body["param"] == param and e.value.body["code"] == "invalid_value", e.value.body
        assert TOKEN not in json.dumps(e.value.body)
    for stream in (True, False):
        with pytest.raises(openai.BadRequestError):
            client.responses.create(model="m", input="x", stream=stream, background=not stream,
                                    tools=[mcp_tool(calc, headers={"X-Api-Key": value})])
    assert calc.log.entries == [] and not script.requests
    assert TOKEN not in mcp_server.log()


@pytest.mark.parametrize("name", ["X Api Key", "X-Api-Key:", "", f"Authorization: Bearer {TOKEN}", "X-Ke\u00fd"])
def test_bad_header_names_are_400s_that_never_echo_them(client: OpenAI, calc: MCPTestServer, name: str) -> None:
    with pytest.raises(openai.BadRequestError) as e:
        client.responses.create(model="m", input="x", tools=[mcp_tool(calc, headers={name: "v"})])
    assert e.value.body["param"] == "tools[0].headers" and e.value.body["code"] == "invalid_value"
    assert TOKEN not in json.dumps(e.value.body)
    assert calc.log.entries == []


@pytest.mark.anyio
async def test_http_client_errors_never_carry_header_values(calc: MCPTestServer) -> None:
    """Below the request check: whatever the HTTP client says about a header goes nowhere verbatim."""
    for value in [f"{TOKEN}\n", f" {TOKEN}", f"{TOKEN}\u00e9"]:
        connection = Connection(calc.mcp_url, {"X-Api-Key": value}, timeout=5, max_output=1024,
                                guard=Guard(allow_private=True))
        with pytest.raises(ServerFailure) as e:
            await connection.list_tools()
        assert TOKEN not in str(e.value) and "header" in str(e.value), str(e.value)


def test_failure_text_never_carries_header_values() -> None:
    """Whatever a library or the server says, a header value in it is redacted (escaped forms too)."""
    connection = Connection("http://example.com/mcp", {"X-Api-Key": TOKEN, "Authorization": f"Bearer {TOKEN}2"},
                            timeout=5, max_output=1024, guard=Guard())
    for text in [f"server said: bad key {TOKEN}", f"value b'{TOKEN}\\n'", f"got 'Bearer {TOKEN}2'"]:
        described = connection._describe(RuntimeError(text))
        assert TOKEN not in described and "[redacted]" in described, described


def test_wrong_credentials(client: OpenAI, script, locked: MCPTestServer) -> None:
    tools = [mcp_tool(locked, headers={"Authorization": "Bearer wrong"})]
    r = client.responses.create(model="m", input="x", tools=tools)
    check_response(r)
    assert r.status == "failed"
    assert "'calc'" in r.error.message and "401" in r.error.message
    assert [o.type for o in r.output] == ["mcp_list_tools"] and "401" in r.output[0].error
    assert locked.log.methods() == [] and locked.log.methods(admitted=False)
    events = stream(client, model="m", input="x", tools=tools)
    assert types_of(events)[2:6] == ["response.output_item.added", "response.mcp_list_tools.in_progress",
                                     "response.mcp_list_tools.failed", "response.output_item.done"]
    assert events[-1]["type"] == "response.failed"
    assert not script.requests  # the model was never asked


@pytest.mark.parametrize("kind", ["unreachable", "not_mcp", "silent"])
def test_server_failures_name_the_server(client: OpenAI, script, kind: str) -> None:
    server = None
    if kind == "unreachable":
        url, expected = f"http://127.0.0.1:{free_port()}/mcp", "cannot connect"
    else:
        server = (not_mcp_server if kind == "not_mcp" else silent_server)().start()
        url = server.url + "/mcp"
        expected = "protocol error" if kind == "not_mcp" else "no answer within 2 seconds"
    try:
        r = client.responses.create(model="m", input="x", tools=[
            {"type": "mcp", "server_label": "broken", "server_url": url}])
    finally:
        if server is not None:
            server.stop()
    check_response(r)
    assert r.status == "failed" and r.error.code == "server_error"
    assert "MCP server 'broken'" in r.error.message and expected in r.error.message
    assert r.output[0].error == r.error.message
    assert not script.requests


def test_private_address_refused_without_the_flag(server: ServerProcess, script, calc: MCPTestServer) -> None:
    plain = OpenAI(base_url=server.base_url, api_key=KEY_A, max_retries=0)
    with pytest.raises(openai.BadRequestError) as e:
        plain.responses.create(model="m", input="x", tools=[
            {"type": "function", "name": "f"}, mcp_tool(calc)])
    assert e.value.body["param"] == "tools[1].server_url" and e.value.body["code"] == "url_not_allowed"
    assert calc.log.entries == [] and not script.requests


@pytest.mark.parametrize(("tool", "param"), [
    ({"server_url": "http://example.com/mcp"}, "tools[0].server_label"),
    ({"server_label": "a__b", "server_url": "http://example.com/mcp"}, "tools[0].server_label"),
    ({"server_label": "a"}, "tools[0].server_url"),
    ({"server_label": "a", "server_url": "ftp://example.com/"}, "tools[0].server_url"),
    ({"server_label": "a", "connector_id": "connector_gmail"}, "tools[0].connector_id"),
    ({"server_label": "a", "server_url": "http://example.com/mcp", "require_approval": "sometimes"},
     "tools[0].require_approval"),
    ({"server_label": "a", "server_url": "http://example.com/mcp", "allowed_tools": "add"},
     "tools[0].allowed_tools"),
    ({"server_label": "a", "server_url": "http://example.com/mcp", "headers": {"X": 1}},
     "tools[0].headers.X"),
])
def test_bad_tool_entries(client: OpenAI, tool: dict, param: str) -> None:
    with pytest.raises(openai.BadRequestError) as e:
        client.responses.create(model="m", input="x", tools=[{"type": "mcp", **tool}])
    assert e.value.body["param"] == param


def test_labels_and_reserved_names(client: OpenAI) -> None:
    url = "http://example.com/mcp"
    with pytest.raises(openai.BadRequestError) as e:
        client.responses.create(model="m", input="x", tools=[
            {"type": "mcp", "server_label": "a", "server_url": url},
            {"type": "mcp", "server_label": "a", "server_url": url}])
    assert e.value.body["param"] == "tools[1].server_label"
    with pytest.raises(openai.BadRequestError) as e:
        client.responses.create(model="m", input="x", tools=[
            {"type": "mcp", "server_label": "a", "server_url": url},
            {"type": "function", "name": "mcp__a__x"}])
    assert e.value.body["param"] == "tools" and "reserved" in e.value.body["message"]
