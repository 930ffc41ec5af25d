"""The Conversations API and `conversation` on create, through the official SDK against the live server."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest
from harness import KEY_A, check_events, check_response, wait_for, wire
from openai import AzureOpenAI, OpenAI
from openai.types.conversations import Conversation, ConversationDeletedResource, ConversationItemList
from openai.types.conversations.conversation_item import ConversationItem
from pydantic import TypeAdapter

ITEM = TypeAdapter(ConversationItem)


def check_conversation(obj: Any) -> Conversation:
    data = wire(obj)
    assert set(data) == {"id", "object", "created_at", "metadata"}, data
    assert data["id"].startswith("conv_")
    return Conversation.model_validate(data)


def check_items(obj: Any) -> ConversationItemList:
    data = wire(obj)
    assert set(data) == {"object", "data", "first_id", "last_id", "has_more"}, data
    for item in data["data"]:
        ITEM.validate_python(item)
    if data["data"]:
        return ConversationItemList.model_validate(data)
    assert data["first_id"] is None and data["last_id"] is None
    return ConversationItemList.model_construct(**data)


def all_items(client: OpenAI, cid: str) -> list[dict]:
    return [wire(i) for i in client.conversations.items.list(cid, order="asc", limit=100)]


def texts(items: list[dict]) -> list[tuple[str, str]]:
    return [(i["role"], i["content"][0].get("text", "")) for i in items if i["type"] == "message"]


def user(text: str) -> dict:
    return {"role": "user", "content": text}


# ---- the Conversations API --------------------------------------------------------------------

def test_create_retrieve_update_delete(client: OpenAI) -> None:
    conv = client.conversations.create(metadata={"topic": "demo"})
    check_conversation(conv)
    assert conv.metadata == {"topic": "demo"} and conv.object == "conversation"
    got = client.conversations.retrieve(conv.id)
    assert wire(got) == wire(conv)
    updated = client.conversations.update(conv.id, metadata={"topic": "other", "k": "v"})
    check_conversation(updated)
    assert updated.metadata == {"topic": "other", "k": "v"} and updated.created_at == conv.created_at
    assert client.conversations.retrieve(conv.id).metadata == {"topic": "other", "k": "v"}
    assert client.conversations.update(conv.id, metadata=None).metadata == {}
    deleted = client.conversations.delete(conv.id)
    ConversationDeletedResource.model_validate(wire(deleted))
    assert wire(deleted) == {"id": conv.id, "object": "conversation.deleted", "deleted": True}
    for call in (lambda: client.conversations.retrieve(conv.id), lambda: client.conversations.delete(conv.id),
                 lambda: client.conversations.update(conv.id, metadata={}),
                 lambda: client.conversations.items.list(conv.id),
                 lambda: client.conversations.items.create(conv.id, items=[user("x")])):
        with pytest.raises(openai.NotFoundError):
            call()


def test_create_without_a_body(server) -> None:
    r = httpx.post(server.base_url + "/conversations", headers={"Authorization": f"Bearer {KEY_A}"})
    assert r.status_code == 200, r.text
    check_conversation(r.json())
    assert r.json()["metadata"] == {}


def test_items_create_list_retrieve_delete(client: OpenAI) -> None:
    conv = client.conversations.create(items=[user("one"), {"type": "message", "role": "assistant",
                                                             "content": [{"type": "output_text", "text": "two"}]}])
    added = client.conversations.items.create(conv.id, items=[
        user("three"),
        {"type": "function_call", "call_id": "call_1", "name": "f", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "call_1", "output": "42"},
    ])
    check_items(added)
    assert [i.type for i in added.data] == ["message", "function_call", "function_call_output"]
    assert added.first_id == added.data[0].id and added.last_id == added.data[-1].id and not added.has_more
    listed = all_items(client, conv.id)
    assert texts(listed) == [("user", "one"), ("assistant", "two"), ("user", "three")]
    assert [i["type"] for i in listed][-2:] == ["function_call", "function_call_output"]
    one = client.conversations.items.retrieve(listed[0]["id"], conversation_id=conv.id)
    ITEM.validate_python(wire(one))
    assert wire(one) == listed[0]
    after = client.conversations.items.delete(listed[0]["id"], conversation_id=conv.id)
    assert wire(after) == wire(client.conversations.retrieve(conv.id))  # the SDK types this as the Conversation
    with pytest.raises(openai.NotFoundError) as e:
        client.conversations.items.retrieve(listed[0]["id"], conversation_id=conv.id)
    assert e.value.body["code"] == "item_not_found"
    with pytest.raises(openai.NotFoundError):
        client.conversations.items.delete(listed[0]["id"], conversation_id=conv.id)
    assert [i["id"] for i in all_items(client, conv.id)] == [i["id"] for i in listed[1:]]


def test_pagination_in_both_orders(client: OpenAI) -> None:
    conv = client.conversations.create(items=[user(f"m{n}") for n in range(20)])
    client.conversations.items.create(conv.id, items=[user(f"m{n}") for n in range(20, 25)])
    asc = [i.content[0].text for i in client.conversations.items.list(conv.id, order="asc", limit=7)]
    assert asc == [f"m{n}" for n in range(25)]
    desc = [i.content[0].text for i in client.conversations.items.list(conv.id, limit=7)]  # desc by default
    assert desc == asc[::-1]
    first = client.conversations.items.list(conv.id, order="asc", limit=10)
    page = check_items(first)
    assert page.has_more and len(page.data) == 10 and page.last_id == page.data[-1].id
    second = check_items(client.conversations.items.list(conv.id, order="asc", limit=10, after=page.last_id))
    assert [i.content[0].text for i in second.data] == [f"m{n}" for n in range(10, 20)]
    last = check_items(client.conversations.items.list(conv.id, order="desc", limit=10, after=page.data[2].id))
    assert [i.content[0].text for i in last.data] == ["m1", "m0"] and not last.has_more


def test_item_limits_and_bad_input(client: OpenAI) -> None:
    conv = client.conversations.create()
    with pytest.raises(openai.BadRequestError) as e:
        client.conversations.items.create(conv.id, items=[user("x")] * 21)
    assert e.value.body["param"] == "items" and e.value.body["code"] == "array_above_max_length"
    with pytest.raises(openai.BadRequestError) as e:
        client.conversations.create(items=[user("x")] * 21)
    assert e.value.body["param"] == "items"
    with pytest.raises(openai.BadRequestError) as e:
        client.conversations.items.create(conv.id, items=[{"role": "wizard", "content": "x"}])
    assert e.value.body["param"] == "items[0].role"
    with pytest.raises(openai.BadRequestError) as e:
        client.conversations.create(metadata={"k": 1})  # type: ignore[dict-item]
    assert e.value.body["param"] == "metadata.k"
    with pytest.raises(openai.BadRequestError) as e:
        client.conversations.items.list(conv.id, order="sideways")  # type: ignore[arg-type]
    assert e.value.body["param"] == "order"
    with pytest.raises(openai.BadRequestError) as e:
        client.conversations.items.list(conv.id, include=["nothing.at_all"])  # type: ignore[list-item]
    assert e.value.body["param"] == "include[0]"
    with pytest.raises(openai.BadRequestError) as e:
        client.post(f"/conversations/{conv.id}", body={}, cast_to=httpx.Response)
    assert e.value.body["param"] == "metadata" and e.value.body["code"] == "missing_required_parameter"
    assert all_items(client, conv.id) == []


def test_duplicate_ids_are_refused(client: OpenAI, script) -> None:
    conv = client.conversations.create(items=[{"id": "msg_mine", "type": "message", "role": "user",
                                               "content": [{"type": "input_text", "text": "hi"}]}])
    with pytest.raises(openai.BadRequestError) as e:
        client.conversations.items.create(conv.id, items=[user("new"), {"id": "msg_mine", "role": "user",
                                                                          "content": "again"}])
    assert e.value.body["param"] == "items[1]" and e.value.body["code"] == "duplicate_item"
    with pytest.raises(openai.BadRequestError) as e:
        client.responses.create(model="m", conversation=conv.id, input=[
            {"id": "msg_mine", "type": "message", "role": "user", "content": [{"type": "input_text", "text": "x"}]}])
    assert e.value.body["param"] == "input[0]" and e.value.body["code"] == "duplicate_item"
    assert len(all_items(client, conv.id)) == 1
    assert not script.requests


# ---- conversation on create -------------------------------------------------------------------

def test_plain_response_runs_on_the_conversation_and_is_appended(client: OpenAI, script) -> None:
    conv = client.conversations.create(items=[user("my name is Ada")])
    script.add({"content": "Hello Ada."}, {"content": "You are Ada."})
    r1 = client.responses.create(model="m", conversation=conv.id, input="hi")
    check_response(r1)
    assert r1.conversation is not None and r1.conversation.id == conv.id
    assert wire(r1)["conversation"] == {"id": conv.id}
    assert script.requests[-1]["messages"] == [{"role": "user", "content": "my name is Ada"},
                                               {"role": "user", "content": "hi"}]
    r2 = client.responses.create(model="m", conversation={"id": conv.id}, input="who am I?", instructions="Brief.")
    assert script.requests[-1]["messages"] == [
        {"role": "system", "content": "Brief."}, {"role": "user", "content": "my name is Ada"},
        {"role": "user", "content": "hi"}, {"role": "assistant", "content": "Hello Ada."},
        {"role": "user", "content": "who am I?"}]
    items = all_items(client, conv.id)
    assert texts(items) == [("user", "my name is Ada"), ("user", "hi"), ("assistant", "Hello Ada."),
                            ("user", "who am I?"), ("assistant", "You are Ada.")]
    assert items[-1] == wire(r2.output[0]) and items[2] == wire(r1.output[0])
    stored = client.responses.retrieve(r2.id)
    assert wire(stored)["conversation"] == {"id": conv.id} and stored.status == "completed"
    assert [i.content[0].text for i in client.responses.input_items.list(r2.id).data] == ["who am I?"]


def test_streamed_response_is_appended(client: OpenAI, script) -> None:
    conv = client.conversations.create()
    script.add({"content": "streamed answer"})
    events = list(client.responses.create(model="m", conversation=conv.id, input="go", stream=True))
    check_events(events)
    final = events[-1].response
    assert final.status == "completed" and final.conversation.id == conv.id
    assert events[0].response.conversation.id == conv.id
    assert texts(all_items(client, conv.id)) == [("user", "go"), ("assistant", "streamed answer")]
    with client.responses.stream(model="m", conversation=conv.id, input="again") as stream:
        done = stream.get_final_response()
    assert done.output_text == "Echo: again"
    assert script.requests[-1]["messages"][:2] == [{"role": "user", "content": "go"},
                                                   {"role": "assistant", "content": "streamed answer"}]
    assert len(all_items(client, conv.id)) == 4


def test_background_response_is_appended(client: OpenAI, script) -> None:
    conv = client.conversations.create(items=[user("context")])
    script.add({"content": "in the background"})
    r = client.responses.create(model="m", conversation=conv.id, input="go", background=True)
    assert r.status == "queued" and r.conversation.id == conv.id
    done = wait_for(lambda: (x := client.responses.retrieve(r.id)).status == "completed" and x)
    check_response(done)
    assert texts(all_items(client, conv.id)) == [("user", "context"), ("user", "go"),
                                                 ("assistant", "in the background")]
    assert script.requests[-1]["messages"][0] == {"role": "user", "content": "context"}


def test_function_call_round_trip_on_a_conversation(client: OpenAI, script) -> None:
    conv = client.conversations.create()
    tools = [{"type": "function", "name": "get_weather", "parameters": {"type": "object", "properties": {}}}]
    script.add({"tool_calls": [{"name": "get_weather", "arguments": {}, "id": "call_w"}]}, {"content": "Sunny."})
    r1 = client.responses.create(model="m", conversation=conv.id, input="weather?", tools=tools)  # type: ignore[arg-type]
    call = r1.output[0]
    assert call.type == "function_call"
    r2 = client.responses.create(model="m", conversation=conv.id, tools=tools,  # type: ignore[arg-type]
                                 input=[{"type": "function_call_output", "call_id": call.call_id, "output": "21C"}])
    assert r2.output_text == "Sunny."
    messages = script.requests[-1]["messages"]
    assert messages[1]["tool_calls"][0]["id"] == call.call_id
    assert messages[2] == {"role": "tool", "tool_call_id": call.call_id, "content": "21C"}
    assert [i["type"] for i in all_items(client, conv.id)] == ["message", "function_call", "function_call_output",
                                                              "message"]


def test_incomplete_is_appended_failed_is_not(client: OpenAI, script) -> None:
    conv = client.conversations.create()
    script.add({"content": "cut short", "finish_reason": "length"})
    r = client.responses.create(model="m", conversation=conv.id, input="long please")
    assert r.status == "incomplete"
    assert texts(all_items(client, conv.id)) == [("user", "long please"), ("assistant", "cut short")]
    script.add({"content": "half", "drop": True})
    events = list(client.responses.create(model="m", conversation=conv.id, input="fails", stream=True))
    assert events[-1].type == "response.failed"
    assert len(all_items(client, conv.id)) == 2  # a failed response adds nothing, and frees the conversation
    ok = client.responses.create(model="m", conversation=conv.id, input="retry")
    assert ok.status == "completed" and len(all_items(client, conv.id)) == 4


def test_engine_refusal_stores_nothing_and_frees_the_conversation(client: OpenAI, script) -> None:
    conv = client.conversations.create(items=[user("before")])
    script.add({"status": 400, "error": "context too long"})
    with pytest.raises(openai.BadRequestError):
        client.responses.create(model="m", conversation=conv.id, input="refused")
    script.add({"status": 429, "error": "slow down"})
    with pytest.raises(openai.RateLimitError):
        client.responses.create(model="m", conversation=conv.id, input="refused", stream=True)
    assert texts(all_items(client, conv.id)) == [("user", "before")]
    assert client.responses.create(model="m", conversation=conv.id, input="now").status == "completed"


def test_one_response_at_a_time_on_a_conversation(client: OpenAI, script) -> None:
    conv = client.conversations.create(items=[user("start")])
    script.add({"content": "never", "hang": True})
    running = client.responses.create(model="m", conversation=conv.id, input="slow", background=True)
    wait_for(lambda: script.requests)
    for call in (lambda: client.responses.create(model="m", conversation=conv.id, input="second"),
                 lambda: client.responses.create(model="m", conversation=conv.id, input="second", stream=True),
                 lambda: client.conversations.items.create(conv.id, items=[user("meanwhile")]),
                 lambda: client.conversations.items.delete(all_items(client, conv.id)[0]["id"],
                                                           conversation_id=conv.id)):
        with pytest.raises(openai.BadRequestError) as e:
            call()
        assert e.value.body["code"] == "conversation_locked"
    assert e.value.body["message"].startswith("Another request is working on conversation")
    assert client.conversations.update(conv.id, metadata={"still": "editable"}).metadata == {"still": "editable"}
    cancelled = client.responses.cancel(running.id)
    assert cancelled.status == "cancelled"
    assert texts(all_items(client, conv.id)) == [("user", "start")]  # a cancelled response adds nothing
    assert client.responses.create(model="m", conversation=conv.id, input="now").status == "completed"


def test_deleting_the_running_response_frees_the_conversation(client: OpenAI, script) -> None:
    conv = client.conversations.create()
    script.add({"content": "never", "hang": True})
    running = client.responses.create(model="m", conversation=conv.id, input="slow", background=True)
    with pytest.raises(openai.BadRequestError):
        client.conversations.items.create(conv.id, items=[user("meanwhile")])
    client.responses.delete(running.id)
    assert client.conversations.items.create(conv.id, items=[user("meanwhile")]).data[0].content[0].text == "meanwhile"
    assert texts(all_items(client, conv.id)) == [("user", "meanwhile")]


def test_deleting_the_conversation_under_a_running_response(client: OpenAI, script) -> None:
    conv = client.conversations.create(items=[user("gone soon")])
    script.add({"content": " ".join(f"w{n}" for n in range(10)), "delay": 0.1})  # a second of streaming
    stream = client.responses.create(model="m", conversation=conv.id, input="slow", stream=True)
    events = []
    for event in stream:
        events.append(event)
        if event.type == "response.output_text.delta":
            break
    client.conversations.delete(conv.id)  # nine chunks before the response ends
    events += list(stream)
    assert events[-1].type == "response.completed"  # the response is stored; it has nowhere to go
    assert client.responses.retrieve(events[-1].response.id).status == "completed"
    with pytest.raises(openai.NotFoundError):
        client.conversations.items.list(conv.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="m", conversation=conv.id, input="again")


def test_conversation_with_previous_response_id_or_without_store(client: OpenAI, script) -> None:
    conv = client.conversations.create()
    r = client.responses.create(model="m", input="x")
    with pytest.raises(openai.BadRequestError) as e:
        client.responses.create(model="m", input="y", conversation=conv.id, previous_response_id=r.id)
    assert e.value.body["code"] == "mutually_exclusive_parameters" and e.value.body["param"] == "conversation"
    with pytest.raises(openai.BadRequestError) as e:
        client.responses.create(model="m", input="y", conversation=conv.id, store=False)
    assert e.value.body["param"] == "store"
    for bad, param in ((42, "conversation"), ({"name": "x"}, "conversation.id"), ("", "conversation")):
        with pytest.raises(openai.BadRequestError) as e:
            client.responses.create(model="m", input="y", conversation=bad)  # type: ignore[arg-type]
        assert e.value.body["param"] == param
    assert all_items(client, conv.id) == []


def test_counting_input_tokens_on_a_conversation_is_refused(client: OpenAI, script) -> None:
    conv = client.conversations.create(items=[user("hi")])
    with pytest.raises(openai.BadRequestError) as e:
        client.responses.input_tokens.count(model="m", input="x", conversation=conv.id)
    assert (e.value.body["param"], e.value.body["code"]) == ("conversation", "unsupported_parameter")
    assert client.conversations.items.create(conv.id, items=[user("still free")]).data  # nothing held it


def test_unknown_or_deleted_conversation_is_404(client: OpenAI, script) -> None:
    with pytest.raises(openai.NotFoundError) as e:
        client.responses.create(model="m", input="x", conversation="conv_nope")
    assert e.value.body["param"] == "conversation"
    conv = client.conversations.create()
    client.responses.create(model="m", input="x", conversation=conv.id)
    client.conversations.delete(conv.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="m", input="x", conversation=conv.id)
    with pytest.raises(openai.NotFoundError):
        client.conversations.items.list(conv.id)


def test_another_key_sees_nothing(client: OpenAI, other_client: OpenAI, script) -> None:
    conv = client.conversations.create(items=[user("secret")], metadata={"owner": "a"})
    item_id = all_items(client, conv.id)[0]["id"]
    calls = [
        lambda: other_client.conversations.retrieve(conv.id),
        lambda: other_client.conversations.update(conv.id, metadata={"owner": "b"}),
        lambda: other_client.conversations.delete(conv.id),
        lambda: other_client.conversations.items.list(conv.id),
        lambda: other_client.conversations.items.create(conv.id, items=[user("intruder")]),
        lambda: other_client.conversations.items.retrieve(item_id, conversation_id=conv.id),
        lambda: other_client.conversations.items.delete(item_id, conversation_id=conv.id),
        lambda: other_client.responses.create(model="m", input="x", conversation=conv.id),
    ]
    for call in calls:
        with pytest.raises(openai.NotFoundError) as e:
            call()
        assert e.value.body["message"] == f"Conversation with id '{conv.id}' not found."
    assert not script.requests
    assert client.conversations.retrieve(conv.id).metadata == {"owner": "a"}
    assert texts(all_items(client, conv.id)) == [("user", "secret")]


def test_both_url_forms(azure_client: AzureOpenAI, server, script) -> None:
    conv = azure_client.conversations.create(items=[user("via azure")])
    check_conversation(conv)
    r = azure_client.responses.create(model="m", input="hi", conversation=conv.id)
    assert r.conversation.id == conv.id
    headers = {"api-key": KEY_A}
    listed = httpx.get(f"{server.url}/openai/conversations/{conv.id}/items?order=asc&api-version=preview",
                       headers=headers)
    assert listed.status_code == 200
    assert texts(check_items(listed.json()).model_dump()["data"]) == [("user", "via azure"), ("user", "hi"),
                                                                      ("assistant", "Echo: hi")]
    assert httpx.get(f"{server.base_url}/conversations/{conv.id}", headers=headers).json()["id"] == conv.id


def test_include_on_items(client: OpenAI, script) -> None:
    conv = client.conversations.create()
    script.add({"reasoning": "thinking hard", "content": "done"})
    client.responses.create(model="m", conversation=conv.id, input="think")
    plain = all_items(client, conv.id)
    reasoning = next(i for i in plain if i["type"] == "reasoning")
    assert "encrypted_content" not in reasoning
    sealed = [wire(i) for i in client.conversations.items.list(conv.id, include=["reasoning.encrypted_content"])]
    token = next(i for i in sealed if i["type"] == "reasoning")["encrypted_content"]
    assert isinstance(token, str) and token
    one = client.conversations.items.retrieve(reasoning["id"], conversation_id=conv.id,
                                              include=["reasoning.encrypted_content"])
    assert wire(one)["encrypted_content"]


def test_a_conversation_holding_a_compaction_item(client: OpenAI, script) -> None:
    from test_compaction_live import HISTORY, SUMMARY, compact, wire_messages

    from responsa.compaction import SUMMARY_HEADER

    conv = client.conversations.create(items=HISTORY)
    sealed = compact(client, script, model="m", input=HISTORY).output[-1]
    client.conversations.items.create(conv.id, items=[sealed.model_dump(exclude_none=True, warnings=False)])
    script.add({"content": "Early."}, {"content": "You are welcome."})
    client.responses.create(model="m", conversation=conv.id, input="When is it least crowded?")
    summary = [("user", "I am going to Lisbon in May."), ("user", "Which tram should I take?"),
               ("user", SUMMARY_HEADER + SUMMARY)]
    assert wire_messages(script.requests[-1]) == [*summary, ("user", "When is it least crowded?")]
    client.responses.create(model="m", conversation=conv.id, input="Thanks!")
    assert wire_messages(script.requests[-1]) == [*summary, ("user", "When is it least crowded?"),
                                                  ("assistant", "Early."), ("user", "Thanks!")]


def test_over_the_websocket_mode(client: OpenAI, script) -> None:
    from test_websocket_live import connected, finished, until_end

    conv = client.conversations.create(items=[user("my name is Ada")])
    script.add({"content": "Hello Ada."}, {"content": "Still Ada."})
    with connected(client) as conn:
        conn.response.create(model="m", input="hi", conversation=conv.id)
        first = finished(until_end(conn))
        assert wire(first)["conversation"] == {"id": conv.id}
        conn.response.create(model="m", input="again", conversation={"id": conv.id})
        finished(until_end(conn))
    assert script.requests[-1]["messages"][:3] == [{"role": "user", "content": "my name is Ada"},
                                                  {"role": "user", "content": "hi"},
                                                  {"role": "assistant", "content": "Hello Ada."}]
    assert texts(all_items(client, conv.id))[-1] == ("assistant", "Still Ada.")


def test_tools_a_search_loaded_earlier_in_the_conversation_stay_loaded(client: OpenAI, script) -> None:
    from test_toolsearch import CLIENT_SEARCH, WEATHER, offered

    conv = client.conversations.create(items=[
        user("x"),
        {"type": "tool_search_call", "call_id": "s1", "execution": "client", "arguments": {"query": "w"},
         "status": "completed"},
        {"type": "tool_search_output", "call_id": "s1", "execution": "client", "status": "completed",
         "tools": [{**WEATHER, "defer_loading": True}]}])
    script.add({"content": "ok"}, {"content": "still"})
    client.responses.create(model="m", conversation=conv.id, tools=[CLIENT_SEARCH], input="weather?")
    assert offered(script.requests[0]) == {"tool_search", "get_weather"}
    client.responses.create(model="m", conversation=conv.id, tools=[CLIENT_SEARCH], input="again")
    assert offered(script.requests[1]) == {"tool_search", "get_weather"}
    other = client.conversations.create(items=[user("nothing searched")])
    client.responses.create(model="m", conversation=other.id, tools=[CLIENT_SEARCH], input="weather?")
    assert offered(script.requests[2]) == {"tool_search"}
