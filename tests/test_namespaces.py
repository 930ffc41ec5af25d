"""`namespace` tools through the official SDK against the live server and a scripted engine.

The engine (Chat Completions) knows no namespaces: each member reaches it as a function named
`<namespace>__<name>`, and its calls come back to the client as the hosted API returns them,
with the member's own `name` and the `namespace` field set.
"""

from __future__ import annotations

import json

import openai
import pytest
from harness import check_events, check_response, types_of, wire
from openai import AzureOpenAI, OpenAI

from responsa.chat import namespaced_function_name

ORDERS = {"type": "function", "name": "list_open_orders", "description": "List open orders for a customer.",
          "parameters": {"type": "object", "properties": {"customer_id": {"type": "string"}},
                         "required": ["customer_id"], "additionalProperties": False},
          "strict": True}
NOTE = {"type": "custom", "name": "add_note", "description": "Attach a free-form note to the customer."}
CRM = {"type": "namespace", "name": "crm", "description": "CRM tools for customers and orders.",
       "tools": [ORDERS, NOTE]}
WEATHER = {"type": "function", "name": "get_weather", "parameters": {"type": "object", "properties": {}}}


def offered(request: dict) -> dict[str, dict]:
    return {t["function"]["name"]: t["function"] for t in request.get("tools", [])}


def test_members_reach_the_engine_and_calls_carry_the_namespace(client: OpenAI, script) -> None:
    script.add({"tool_calls": [{"name": "crm__list_open_orders", "arguments": {"customer_id": "c1"}}]},
               {"content": "Order 7 is open."})
    r = client.responses.create(model="m", input="orders of c1?", tools=[CRM, WEATHER])
    check_response(r)
    fns = offered(script.requests[-1])
    assert set(fns) == {"crm__list_open_orders", "crm__add_note", "get_weather"}
    assert fns["crm__list_open_orders"]["parameters"] == ORDERS["parameters"] and fns["crm__list_open_orders"]["strict"]
    assert fns["crm__list_open_orders"]["description"].startswith("List open orders for a customer.")
    assert "CRM tools for customers and orders." in fns["crm__add_note"]["description"]
    (item,) = r.output
    assert item.type == "function_call" and item.name == "list_open_orders" and item.namespace == "crm"
    assert item.arguments == '{"customer_id": "c1"}' and item.status == "completed"
    echoed = wire(r)["tools"][0]
    assert echoed["type"] == "namespace" and echoed["name"] == "crm" and [t["name"] for t in echoed["tools"]] == \
        ["list_open_orders", "add_note"]
    assert client.responses.retrieve(r.id).output[0].namespace == "crm"

    # The output goes back by call_id; the engine sees its own call under the name it used.
    r2 = client.responses.create(model="m", previous_response_id=r.id, tools=[CRM, WEATHER], input=[
        {"type": "function_call_output", "call_id": item.call_id, "output": '[{"order": 7}]'}])
    assert r2.output_text == "Order 7 is open."
    messages = script.requests[-1]["messages"]
    assert messages[-2]["tool_calls"] == [{"id": item.call_id, "type": "function", "function": {
        "name": "crm__list_open_orders", "arguments": item.arguments}}]
    assert messages[-1] == {"role": "tool", "tool_call_id": item.call_id, "content": '[{"order": 7}]'}


def test_custom_tool_in_a_namespace(client: OpenAI, script) -> None:
    script.add({"tool_calls": [{"name": "crm__add_note", "arguments": {"input": "VIP customer"}}]})
    r = client.responses.create(model="m", input="note it", tools=[CRM])
    check_response(r)
    (item,) = r.output
    assert item.type == "custom_tool_call" and item.name == "add_note" and item.namespace == "crm"
    assert item.input == "VIP customer"


def test_streamed_arguments_carry_the_namespaced_item(client: OpenAI, script) -> None:
    script.add({"tool_calls": [{"name": "crm__list_open_orders", "arguments": '{"customer_id": "c1"}'}]})
    events = [wire(e) for e in client.responses.create(model="m", input="x", tools=[CRM], stream=True)]
    check_events(events)
    assert types_of(events) == [
        "response.created", "response.in_progress", "response.output_item.added",
        "response.function_call_arguments.delta", "response.function_call_arguments.delta",
        "response.function_call_arguments.done", "response.output_item.done", "response.completed"]
    added, deltas, done_args, done = events[2], events[3:5], events[5], events[6]
    assert added["item"]["name"] == "list_open_orders" and added["item"]["namespace"] == "crm"
    assert {d["item_id"] for d in deltas} == {done_args["item_id"]} == {added["item"]["id"]} == {done["item"]["id"]}
    assert "".join(d["delta"] for d in deltas) == '{"customer_id": "c1"}'
    assert done_args["name"] == "list_open_orders" and done_args["arguments"] == '{"customer_id": "c1"}'
    assert done["item"]["namespace"] == "crm" and events[-1]["response"]["output"][0]["namespace"] == "crm"


def test_stateless_history_with_namespaced_calls(client: OpenAI, script) -> None:
    """Codex's way: no storage, the whole history (its echoed call with `namespace`) every turn."""
    script.add({"content": "Done."})
    call = {"type": "function_call", "call_id": "call_1", "name": "list_open_orders", "namespace": "crm",
            "arguments": '{"customer_id": "c1"}'}
    r = client.responses.create(model="m", store=False, tools=[CRM], input=[
        {"role": "user", "content": "orders?"}, call,
        {"type": "function_call_output", "call_id": "call_1", "output": "[]"}])
    assert r.output_text == "Done."
    assert script.requests[-1]["messages"][1]["tool_calls"][0]["function"]["name"] == "crm__list_open_orders"


def test_tool_choice_names_a_namespaced_tool(client: OpenAI, script) -> None:
    tools = [CRM, WEATHER]
    client.responses.create(model="m", input="x", tools=tools,
                            tool_choice={"type": "function", "name": "list_open_orders"})
    assert script.requests[-1]["tool_choice"] == {"type": "function", "function": {"name": "crm__list_open_orders"}}
    # `namespace` may say which one; a top-level tool of the same name wins without it.
    same_name = {**WEATHER, "name": "list_open_orders"}
    client.responses.create(model="m", input="x", tools=[CRM, same_name],
                            tool_choice={"type": "function", "name": "list_open_orders", "namespace": "crm"})
    assert script.requests[-1]["tool_choice"]["function"]["name"] == "crm__list_open_orders"
    client.responses.create(model="m", input="x", tools=[CRM, same_name],
                            tool_choice={"type": "function", "name": "list_open_orders"})
    assert script.requests[-1]["tool_choice"]["function"]["name"] == "list_open_orders"
    client.responses.create(model="m", input="x", tools=tools, tool_choice={"type": "custom", "name": "add_note"})
    assert script.requests[-1]["tool_choice"]["function"]["name"] == "crm__add_note"
    # allowed_tools may name a whole namespace.
    client.responses.create(model="m", input="x", tools=tools, tool_choice={
        "type": "allowed_tools", "mode": "required", "tools": [{"type": "namespace", "name": "crm"}]})
    assert set(offered(script.requests[-1])) == {"crm__list_open_orders", "crm__add_note"}
    client.responses.create(model="m", input="x", tools=tools, tool_choice={
        "type": "allowed_tools", "mode": "auto", "tools": [{"type": "function"}]})
    assert set(offered(script.requests[-1])) == {"crm__list_open_orders", "get_weather"}
    with pytest.raises(openai.BadRequestError) as e:
        client.responses.create(model="m", input="x", tools=tools,
                                tool_choice={"type": "function", "name": "list_open_orders", "namespace": "erp"})
    assert e.value.param == "tool_choice"


def test_azure_url_form(azure_client: AzureOpenAI, script) -> None:
    script.add({"tool_calls": [{"name": "crm__list_open_orders", "arguments": {"customer_id": "c2"}}]})
    r = azure_client.responses.create(model="my-deployment", input="orders?", tools=[CRM])
    check_response(r)
    assert (r.output[0].name, r.output[0].namespace) == ("list_open_orders", "crm")


def test_long_names_are_shortened_for_the_engine_and_kept_for_the_client(client: OpenAI, script) -> None:
    ns, name = "n" * 40, "t" * 40
    flat = namespaced_function_name(ns, name)
    script.add({"tool_calls": [{"name": flat, "arguments": {}}]})
    r = client.responses.create(model="m", input="x", tools=[
        {"type": "namespace", "name": ns, "description": "Long.", "tools": [{**WEATHER, "name": name}]}])
    assert set(offered(script.requests[-1])) == {flat} and len(flat) <= 64
    assert (r.output[0].name, r.output[0].namespace) == (name, ns)


@pytest.mark.parametrize(("tool", "param"), [
    ({"type": "namespace", "name": "crm", "tools": [ORDERS]}, "tools[0].description"),
    ({"type": "namespace", "name": "crm", "description": "", "tools": [ORDERS]}, "tools[0].description"),
    ({"type": "namespace", "name": "crm", "description": "d", "tools": []}, "tools[0].tools"),
    ({"type": "namespace", "name": "crm", "description": "d"}, "tools[0].tools"),
    ({"type": "namespace", "name": "c.r.m", "description": "d", "tools": [ORDERS]}, "tools[0].name"),
    ({"type": "namespace", "name": "crm", "description": "d", "tools": [CRM]}, "tools[0].tools[0].type"),
    ({"type": "namespace", "name": "crm", "description": "d", "tools": [{**ORDERS, "name": "a b"}]},
     "tools[0].tools[0].name"),
    ({"type": "namespace", "name": "crm", "description": "d", "tools": [ORDERS, ORDERS]},
     "tools[0].tools[1].name"),
    ({"type": "namespace", "name": "crm", "description": "d", "tools": [{**ORDERS, "allowed_callers": ["me"]}]},
     "tools[0].tools[0].allowed_callers[0]"),
])
def test_bad_namespace_entries_are_400s(client: OpenAI, script, tool: dict, param: str) -> None:
    with pytest.raises(openai.BadRequestError) as e:
        client.responses.create(model="m", input="x", tools=[tool])
    assert e.value.param == param
    assert script.requests == []


def test_a_flattened_name_never_collides(client: OpenAI, script) -> None:
    """A top-level function named like a member's flattened name would be ambiguous: a 400."""
    with pytest.raises(openai.BadRequestError) as e:
        client.responses.create(model="m", input="x", tools=[CRM, {**WEATHER, "name": "crm__list_open_orders"}])
    assert e.value.param == "tools[1].name" and "crm__list_open_orders" in e.value.message
    with pytest.raises(openai.BadRequestError) as e:
        client.responses.create(model="m", input="x", tools=[
            {**CRM, "name": "a__b", "tools": [{**WEATHER, "name": "c"}]},
            {**CRM, "name": "a", "tools": [{**WEATHER, "name": "b__c"}]}])
    assert e.value.param == "tools[1]" and "<namespace>__<name>" in e.value.message
    assert script.requests == []


def test_function_call_input_items_keep_their_namespace(client: OpenAI, script) -> None:
    r = client.responses.create(model="m", tools=[CRM], input=[
        {"role": "user", "content": "x"},
        {"type": "custom_tool_call", "call_id": "c1", "name": "add_note", "namespace": "crm", "input": "hi"},
        {"type": "custom_tool_call_output", "call_id": "c1", "output": "ok"}])
    listed = [wire(i) for i in client.responses.input_items.list(r.id, order="asc").data]
    assert listed[1]["namespace"] == "crm"
    assert json.loads(script.requests[-1]["messages"][1]["tool_calls"][0]["function"]["arguments"]) == \
        {"input": "hi"}
    assert script.requests[-1]["messages"][1]["tool_calls"][0]["function"]["name"] == "crm__add_note"
