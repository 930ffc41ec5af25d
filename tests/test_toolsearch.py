"""`tool_search` and `defer_loading` through the official SDK against the live server.

Deferred tools are not sent to the engine until a search loads them: searched here
(`execution: "server"`, `tool_search_call` + `tool_search_output` items and another turn), or
by the client (`execution: "client"`, the call ends the response and the client sends the
`tool_search_output`). The scripted engine records every request, so each test sees what the
model was offered. Also: the other fields of function tools (`async`, `output_schema`,
`allowed_callers`).
"""

from __future__ import annotations

import openai
import pytest
from harness import check_events, check_response, types_of, wire
from openai import AzureOpenAI, OpenAI

from responsa.tools import FunctionTool, ToolSet
from responsa.toolsearch import search

WEATHER = {"type": "function", "name": "get_weather", "description": "Current weather for a city.",
           "defer_loading": True,
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
ORDERS = {"type": "function", "name": "list_open_orders", "description": "List open orders for a customer.",
          "defer_loading": True,
          "parameters": {"type": "object", "properties": {"customer_id": {"type": "string"}}}}
REFUND = {"type": "function", "name": "refund", "description": "Refund an order.",
          "parameters": {"type": "object", "properties": {"order_id": {"type": "string"}}}}
CRM = {"type": "namespace", "name": "crm", "description": "CRM tools for customers and orders.",
       "tools": [ORDERS, REFUND]}
TIME = {"type": "function", "name": "get_time", "parameters": {"type": "object", "properties": {}}}
SERVER_SEARCH = {"type": "tool_search"}
CLIENT_SEARCH = {"type": "tool_search", "execution": "client", "description": "Find more tools.",
                 "parameters": {"type": "object", "properties": {"query": {"type": "string"}},
                                "required": ["query"]}}


def offered(request: dict) -> set[str]:
    return {t["function"]["name"] for t in request.get("tools", [])}


def search_call(arguments: dict) -> dict:
    return {"tool_calls": [{"name": "tool_search", "arguments": arguments}]}


def test_server_search_loads_a_deferred_function(client: OpenAI, script) -> None:
    tools = [TIME, WEATHER, CRM, SERVER_SEARCH]
    script.add(search_call({"query": "weather in a city"}),
               {"tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}]},
               {"content": "Sunny in Paris."})
    r = client.responses.create(model="m", input="weather in Paris?", tools=tools)
    check_response(r)
    first, second = script.requests
    # Deferred tools are not sent until found; the search function lists what it can find.
    assert offered(first) == {"get_time", "crm__refund", "tool_search"}
    about = next(t["function"] for t in first["tools"] if t["function"]["name"] == "tool_search")
    assert "get_weather: Current weather for a city." in about["description"]
    assert "crm (namespace): CRM tools for customers and orders." in about["description"]
    assert offered(second) == offered(first) | {"get_weather"}
    assert second["messages"][-1] == {"role": "tool", "tool_call_id": second["messages"][-2]["tool_calls"][0]["id"],
                                      "content": "Loaded tools: get_weather."}
    call, found, fc = wire(r)["output"]
    assert call["type"] == "tool_search_call" and call["execution"] == "server" and call["status"] == "completed"
    assert call["arguments"] == {"query": "weather in a city"} and call["id"].startswith("tsc_")
    assert found["type"] == "tool_search_output" and found["call_id"] == call["call_id"]
    assert found["execution"] == "server" and found["tools"] == [wire(r)["tools"][1]]
    assert fc["type"] == "function_call" and fc["name"] == "get_weather"
    assert client.responses.retrieve(r.id).output[1].tools[0].name == "get_weather"

    # The next response of the chain offers what the search loaded, and nothing else deferred.
    r2 = client.responses.create(model="m", previous_response_id=r.id, tools=tools, input=[
        {"type": "function_call_output", "call_id": fc["call_id"], "output": "sunny"}])
    assert r2.output_text == "Sunny in Paris."
    assert offered(script.requests[-1]) == {"get_time", "crm__refund", "tool_search", "get_weather"}


def test_server_search_loads_namespace_members_and_calls_carry_the_namespace(client: OpenAI, script) -> None:
    script.add(search_call({"query": "open orders"}),
               {"tool_calls": [{"name": "crm__list_open_orders", "arguments": {"customer_id": "c1"}}]})
    r = client.responses.create(model="m", input="orders?", tools=[WEATHER, CRM, SERVER_SEARCH])
    check_response(r)
    assert "crm__list_open_orders" not in offered(script.requests[0])
    assert "crm__list_open_orders" in offered(script.requests[1]) and "get_weather" not in offered(script.requests[1])
    _, found, fc = r.output
    assert wire(found)["tools"] == [{**wire(r)["tools"][1], "tools": [wire(r)["tools"][1]["tools"][0]]}]
    assert (fc.name, fc.namespace) == ("list_open_orders", "crm")


def test_server_search_streams_valid_events(client: OpenAI, script) -> None:
    script.add(search_call({"query": "weather"}), {"content": "Found it."})
    events = [wire(e) for e in client.responses.create(model="m", input="x", stream=True,
                                                       tools=[WEATHER, SERVER_SEARCH])]
    check_events(events)
    items = [e["item"]["type"] for e in events if e["type"] == "response.output_item.done"]
    assert items == ["tool_search_call", "tool_search_output", "message"]
    assert types_of(events)[2:7] == ["response.output_item.added", "response.output_item.done",
                                     "response.output_item.added", "response.output_item.done",
                                     "response.output_item.added"]
    # The SDK's stream helper (which checks each item's identity from added to done) takes them too.
    script.add(search_call({"query": "weather"}), {"content": "Found it."})
    with client.responses.stream(model="m", input="x", tools=[WEATHER, SERVER_SEARCH]) as stream:
        final = stream.get_final_response()
    assert [o.type for o in final.output] == ["tool_search_call", "tool_search_output", "message"]
    assert final.output[1].tools[0].name == "get_weather"


def test_a_search_that_finds_nothing_loads_nothing(client: OpenAI, script) -> None:
    script.add(search_call({"query": "spreadsheet"}), {"content": "No such tool."})
    r = client.responses.create(model="m", input="x", tools=[WEATHER, SERVER_SEARCH])
    assert wire(r)["output"][1]["tools"] == []
    assert offered(script.requests[1]) == {"tool_search"}
    assert script.requests[1]["messages"][-1]["content"] == "No tools found."


def test_search_arguments_that_are_not_json_are_kept_as_text(client: OpenAI, script) -> None:
    script.add({"tool_calls": [{"name": "tool_search", "arguments": "weather"}]}, {"content": "ok"},
               {"tool_calls": [{"name": "tool_search", "arguments": '{"query": NaN}'}]}, {"content": "ok"})
    r = client.responses.create(model="m", input="x", tools=[WEATHER, SERVER_SEARCH])
    check_response(r)
    assert wire(r)["output"][0]["arguments"] == "weather"
    assert [t["name"] for t in wire(r)["output"][1]["tools"]] == ["get_weather"]
    r = client.responses.create(model="m", input="x", tools=[WEATHER, SERVER_SEARCH])
    check_response(r)
    assert wire(r)["output"][0]["arguments"] == '{"query": NaN}' and wire(r)["output"][1]["tools"] == []


def test_client_search_round_trip(client: OpenAI, script) -> None:
    """The client searches (Codex does, for its MCP servers): the loaded definitions need not be in `tools`."""
    script.add(search_call({"query": "calculator"}),
               {"tool_calls": [{"name": "mcp__calc__add", "arguments": {"a": 2, "b": 3}}]},
               {"content": "2 + 3 = 5."})
    r = client.responses.create(model="m", input="add 2 and 3", tools=[TIME, CLIENT_SEARCH])
    check_response(r)
    (call,) = wire(r)["output"]
    assert call["type"] == "tool_search_call" and call["execution"] == "client"
    assert call["arguments"] == {"query": "calculator"} and call["status"] == "completed"
    first = script.requests[0]
    search_fn = next(t["function"] for t in first["tools"] if t["function"]["name"] == "tool_search")
    assert search_fn["description"] == "Find more tools." and search_fn["parameters"] == CLIENT_SEARCH["parameters"]

    loaded = {"type": "namespace", "name": "mcp__calc", "description": "Calculator tools.",
              "tools": [{"type": "function", "name": "add", "description": "Add two integers.", "defer_loading": True,
                         "parameters": {"type": "object", "properties": {"a": {"type": "integer"},
                                                                         "b": {"type": "integer"}}}}]}
    r2 = client.responses.create(model="m", previous_response_id=r.id, tools=[TIME, CLIENT_SEARCH], input=[
        {"type": "tool_search_output", "call_id": call["call_id"], "execution": "client", "tools": [loaded]}])
    check_response(r2)
    assert offered(script.requests[1]) == {"get_time", "tool_search", "mcp__calc__add"}
    assert script.requests[1]["messages"][-1]["content"] == "Loaded tools: mcp__calc__add."
    (fc,) = r2.output
    assert (fc.type, fc.name, fc.namespace) == ("function_call", "add", "mcp__calc")
    r3 = client.responses.create(model="m", previous_response_id=r2.id, tools=[TIME, CLIENT_SEARCH], input=[
        {"type": "function_call_output", "call_id": fc.call_id, "output": "5"}])
    assert r3.output_text == "2 + 3 = 5."
    assert "mcp__calc__add" in offered(script.requests[2])
    stored = [wire(i) for i in client.responses.input_items.list(r2.id).data]
    assert stored[0]["type"] == "tool_search_output" and stored[0]["tools"][0]["tools"][0]["name"] == "add"


def test_client_search_without_parameters_takes_paths(azure_client: AzureOpenAI, script) -> None:
    script.add(search_call({"paths": ["crm"]}))
    r = azure_client.responses.create(model="d", input="x", tools=[CRM, {"type": "tool_search",
                                                                        "execution": "client"}])
    assert wire(r)["output"][0]["arguments"] == {"paths": ["crm"]}
    search_fn = next(t["function"] for t in script.requests[0]["tools"] if t["function"]["name"] == "tool_search")
    assert search_fn["parameters"]["required"] == ["paths"]


def test_stateless_client_search_history(client: OpenAI, script) -> None:
    """Codex's way: no storage, the search call and its output echoed in the input every turn."""
    script.add({"content": "ok"})
    r = client.responses.create(model="m", store=False, tools=[CLIENT_SEARCH], input=[
        {"role": "user", "content": "x"},
        {"type": "tool_search_call", "call_id": "s1", "execution": "client", "arguments": {"query": "w"},
         "status": "completed"},
        {"type": "tool_search_output", "call_id": "s1", "execution": "client", "status": "completed",
         "tools": [{**WEATHER, "defer_loading": True}]}])
    assert r.output_text == "ok"
    assert offered(script.requests[0]) == {"tool_search", "get_weather"}
    assert [m["role"] for m in script.requests[0]["messages"]] == ["user", "assistant", "tool"]


def test_tool_choice_forcing_a_deferred_tool_offers_it(client: OpenAI, script) -> None:
    client.responses.create(model="m", input="x", tools=[WEATHER, SERVER_SEARCH],
                            tool_choice={"type": "function", "name": "get_weather"})
    assert offered(script.requests[-1]) == {"get_weather", "tool_search"}
    assert script.requests[-1]["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}


def test_max_tool_calls_counts_server_searches(client: OpenAI, script) -> None:
    script.add(search_call({"query": "weather"}), {"content": "ok"})
    r = client.responses.create(model="m", input="x", tools=[WEATHER, SERVER_SEARCH], max_tool_calls=1)
    assert [o.type for o in r.output] == ["tool_search_call", "tool_search_output", "message"]
    assert "tools" not in script.requests[1]


@pytest.mark.parametrize(("body", "param"), [
    ({"tools": [WEATHER]}, "tools[0]"),  # deferred, and nothing could load it
    ({"tools": [CRM]}, "tools[0]"),
    ({"tools": [{"type": "tool_search", "execution": "elsewhere"}]}, "tools[0].execution"),
    ({"tools": [{"type": "tool_search", "parameters": "query"}]}, "tools[0].parameters"),
    ({"tools": [{**TIME, "defer_loading": "yes"}, SERVER_SEARCH]}, "tools[0].defer_loading"),
    ({"input": [{"type": "tool_search_output", "call_id": "s", "tools": [{"type": "function", "name": "a b"}]}]},
     "input[0].tools[0].name"),
    ({"input": [{"type": "tool_search_output", "call_id": "s", "tools": "all"}]}, "input[0].tools"),
    ({"input": [{"type": "tool_search_output", "call_id": "s"}]}, "input[0].tools"),
    ({"input": [{"type": "tool_search_output", "tools": [{"type": "namespace", "name": "n", "tools": []}]}]},
     "input[0].tools[0].description"),
    ({"input": [{"type": "tool_search_call", "call_id": "s"}]}, "input[0].arguments"),
    ({"input": [{"type": "tool_search_call", "arguments": {}, "execution": "later"}]}, "input[0].execution"),
    ({"tools": [{"type": "web_search", "tools": 3}, {**TIME, "defer_loading": True}]}, "tools[1]"),
])
def test_bad_tool_search_input_is_a_400(client: OpenAI, script, body: dict, param: str) -> None:
    with pytest.raises(openai.BadRequestError) as e:
        client.responses.create(model="m", **{"input": "x", **body})
    assert e.value.param == param
    assert script.requests == []


# ---- the other fields of function tools ----------------------------------------------------------

def test_function_tool_fields_are_echoed_and_honoured(client: OpenAI, script) -> None:
    full = {"type": "function", "name": "lookup", "description": "Look something up.",
            "parameters": {"type": "object", "properties": {}}, "strict": False, "async": True,
            "output_schema": {"type": "object", "properties": {"hits": {"type": "integer"}}},
            "allowed_callers": ["direct", "programmatic"]}
    programmatic = {"type": "function", "name": "batch_only", "parameters": {"type": "object", "properties": {}},
                    "allowed_callers": ["programmatic"]}
    r = client.responses.create(model="m", input="x", tools=[full, programmatic])
    check_response(r)
    echoed = wire(r)["tools"]
    assert echoed[0]["async"] is True and echoed[0]["output_schema"] == full["output_schema"]
    assert echoed[0]["allowed_callers"] == ["direct", "programmatic"]
    assert echoed[1]["allowed_callers"] == ["programmatic"]
    assert wire(client.responses.retrieve(r.id))["tools"] == echoed
    # Only direct calls exist here: a function only programs may call is not offered.
    assert offered(script.requests[-1]) == {"lookup"}
    for bad, param in [({**full, "async": "yes"}, "tools[0].async"),
                       ({**full, "output_schema": "int"}, "tools[0].output_schema"),
                       ({**full, "allowed_callers": "direct"}, "tools[0].allowed_callers"),
                       ({**full, "allowed_callers": ["robot"]}, "tools[0].allowed_callers[0]")]:
        with pytest.raises(openai.BadRequestError) as e:
            client.responses.create(model="m", input="x", tools=[bad])
        assert e.value.param == param


# ---- the search itself (pure) --------------------------------------------------------------------

def test_search_ranks_by_words_found_and_honours_paths_and_limit() -> None:
    tools = [FunctionTool({**WEATHER, "name": f"tool_{n}", "description": text}) for n, text in enumerate([
        "Current weather for a city.", "Weather forecast for the week in a city.", "Exchange rates.",
        "Stock prices in a market."])]
    toolset = ToolSet(tools)
    assert [t.name for t in search(toolset, {"query": "weather forecast"})] == ["tool_1", "tool_0"]
    # "city" is in every schema here (they share WEATHER's parameters): it tells nothing apart.
    assert [t.name for t in search(toolset, {"query": "city"})] == []
    assert [t.name for t in search(toolset, {"query": "weather", "limit": 1})] == ["tool_0"]
    assert [t.name for t in search(toolset, {"paths": ["tool_3"], "query": "rates"})] == ["tool_3", "tool_2"]
    assert [t.name for t in search(toolset, "stock market")] == ["tool_3"]
