"""Compaction (`POST /responses/compact`, `context_management`) and input-token counts
(`POST /responses/input_tokens`), driven with the official SDK against the live server and
the scripted engine, which records exactly what the engine was sent."""

from __future__ import annotations

import base64

import openai
import pytest
from harness import check_events, check_response, types_of
from openai import AzureOpenAI, OpenAI
from openai.types.responses import InputTokenCountResponse, ResponseCompactionItem
from openai.types.responses.response_usage import ResponseUsage

from responsa.compaction import PROMPT, SUMMARY_HEADER

SUMMARY = "The user is planning a trip to Lisbon in May and asked about trams; tram 28 was recommended."
HISTORY = [
    {"role": "user", "content": "I am going to Lisbon in May."},
    {"role": "assistant", "content": "Lovely! A long and detailed answer about Lisbon in May. " * 20},
    {"role": "user", "content": "Which tram should I take?"},
    {"role": "assistant", "content": "Tram 28, through Alfama and Graca. " * 10},
]


def wire_messages(body: dict) -> list[tuple[str, str]]:
    """(role, text) of each message the engine was sent."""
    out = []
    for m in body["messages"]:
        content = m.get("content")
        text = content if isinstance(content, str) else " ".join(p.get("text", "") for p in content or ())
        out.append((m["role"], text or ""))
    return out


def compact(client: OpenAI, script, **kwargs):
    script.add({"content": SUMMARY, "usage": {"prompt_tokens": 321, "completion_tokens": 17}})
    return client.responses.compact(**kwargs)


def check_compacted(result, user_texts: list[str]) -> ResponseCompactionItem:
    assert result.object == "response.compaction" and result.id and result.created_at
    *users, item = result.output
    assert [u.role for u in users] == ["user"] * len(user_texts)  # as the hosted API returns them
    assert [u.content[0]["text"] if isinstance(u.content[0], dict) else u.content[0].text for u in users] == \
        user_texts
    assert all(u.id and u.type == "message" for u in users)
    compaction = ResponseCompactionItem.model_validate(item.model_dump())
    assert compaction.type == "compaction" and compaction.id.startswith("cmp_") and compaction.encrypted_content
    assert SUMMARY not in compaction.encrypted_content and "Lisbon" not in str(base64.b64decode(
        compaction.encrypted_content + "==", altchars=b"-_"))
    ResponseUsage.model_validate(result.usage.model_dump())
    assert result.usage.input_tokens == 321 and result.usage.output_tokens == 17
    return compaction


# ---- POST /responses/compact --------------------------------------------------------------------

def test_compact_returns_user_messages_then_a_sealed_summary(client: OpenAI, script) -> None:
    result = compact(client, script, model="m", input=HISTORY, instructions="You are a travel guide.")
    check_compacted(result, ["I am going to Lisbon in May.", "Which tram should I take?"])
    (sent,) = script.requests
    messages = wire_messages(sent)
    assert messages[0] == ("system", "You are a travel guide.")
    assert [r for r, _ in messages[1:-1]] == ["user", "assistant", "user", "assistant"]
    assert messages[-1] == ("user", PROMPT)  # the summary is asked for after the whole conversation
    assert sent["max_tokens"] and not sent.get("tools")


def test_compact_on_the_azure_path(azure_client: AzureOpenAI, script) -> None:
    result = compact(azure_client, script, model="m", input=HISTORY)  # type: ignore[arg-type]
    check_compacted(result, ["I am going to Lisbon in May.", "Which tram should I take?"])


def test_a_compacted_conversation_continues_with_the_summary(client: OpenAI, script) -> None:
    """As Codex drives it: compact the whole history, then send the returned items as the new
    history (store=false, the whole history every turn)."""
    result = compact(client, script, model="m", input=HISTORY)
    history = [item.model_dump(exclude_none=True, warnings=False) for item in result.output]
    script.add({"content": "Take tram 28 early in the morning."})
    answer = client.responses.create(model="m", store=False,
                                     input=[*history, {"role": "user", "content": "When is it least crowded?"}])
    assert answer.output_text == "Take tram 28 early in the morning."
    messages = wire_messages(script.requests[-1])
    assert messages == [("user", "I am going to Lisbon in May."), ("user", "Which tram should I take?"),
                        ("user", SUMMARY_HEADER + SUMMARY), ("user", "When is it least crowded?")]
    # And again: a second compaction sees the first summary, and replaces it.
    second = compact(client, script, model="m", input=[*history, *[
        {"role": "user", "content": "When is it least crowded?"},
        {"role": "assistant", "content": "Take tram 28 early in the morning."}]])
    assert ("user", SUMMARY_HEADER + SUMMARY) in wire_messages(script.requests[-1])
    history = [item.model_dump(exclude_none=True, warnings=False) for item in second.output]
    assert len(history) == 4
    client.responses.create(model="m", store=False, input=[*history, {"role": "user", "content": "Thanks!"}])
    summaries = [t for _r, t in wire_messages(script.requests[-1]) if t.startswith(SUMMARY_HEADER)]
    assert len(summaries) == 1


def test_compact_a_stored_chain_and_continue_it(client: OpenAI, script) -> None:
    script.add({"content": "Noted: Lisbon in May."}, {"content": "Tram 28."})
    first = client.responses.create(model="m", input="I am going to Lisbon in May.")
    second = client.responses.create(model="m", previous_response_id=first.id, input="Which tram?")
    result = compact(client, script, model="m", previous_response_id=second.id)
    check_compacted(result, ["I am going to Lisbon in May.", "Which tram?"])
    assert [r for r, _ in wire_messages(script.requests[-1])] == ["user", "assistant", "user", "assistant", "user"]
    # The compaction item starts a new chain: the engine gets the summary, not the turns.
    compaction = result.output[-1].model_dump(exclude_none=True, warnings=False)
    script.add({"content": "Sure."})
    third = client.responses.create(model="m", input=[compaction, {"role": "user", "content": "And in June?"}])
    assert wire_messages(script.requests[-1]) == [("user", SUMMARY_HEADER + SUMMARY), ("user", "And in June?")]
    # It is stored as given, and a turn chained on it still gets the summary.
    items = client.responses.input_items.list(third.id, order="asc").data
    assert items[0].type == "compaction" and items[0].encrypted_content == compaction["encrypted_content"]
    client.responses.create(model="m", previous_response_id=third.id, input="And July?")
    assert wire_messages(script.requests[-1]) == [("user", SUMMARY_HEADER + SUMMARY), ("user", "And in June?"),
                                                  ("assistant", "Sure."), ("user", "And July?")]


@pytest.mark.parametrize("change", ["tamper", "foreign"])
def test_a_bad_compaction_item_is_a_400_naming_it(client: OpenAI, other_client: OpenAI, script, change: str) -> None:
    result = compact(client, script, model="m", input=HISTORY)
    item = result.output[-1].model_dump(exclude_none=True, warnings=False)
    sender = client
    if change == "tamper":
        token = item["encrypted_content"]
        item["encrypted_content"] = token[:20] + ("A" if token[20] != "A" else "B") + token[21:]
    else:
        sender = other_client
    calls = len(script.requests)
    with pytest.raises(openai.BadRequestError) as e:
        sender.responses.create(model="m", input=[{"role": "user", "content": "hi"}, item])
    assert e.value.param == "input[1].encrypted_content" and e.value.code == "invalid_encrypted_content"
    assert "compaction item" in e.value.message
    with pytest.raises(openai.BadRequestError) as e:  # compacting again checks it just the same
        sender.responses.compact(model="m", input=[item, {"role": "user", "content": "hi"}])
    assert e.value.param == "input[0].encrypted_content"
    assert len(script.requests) == calls  # the engine was never asked


def test_a_reasoning_token_does_not_open_as_a_compaction_summary(client: OpenAI, script) -> None:
    script.add({"reasoning": "secret thoughts", "content": "ok"})
    r = client.responses.create(model="m", input="hi", store=False, include=["reasoning.encrypted_content"])
    token = next(i for i in r.output if i.type == "reasoning").encrypted_content
    with pytest.raises(openai.BadRequestError) as e:
        client.responses.create(model="m", input=[{"type": "compaction", "encrypted_content": token}])
    assert e.value.param == "input[0].encrypted_content"


def test_compact_refuses_bad_requests(client: OpenAI, script) -> None:
    with pytest.raises(openai.BadRequestError) as e:
        client.post("/responses/compact", body={"input": "hi"}, cast_to=object)
    assert e.value.param == "model"
    with pytest.raises(openai.BadRequestError) as e:
        client.responses.compact(model="m")
    assert e.value.param == "input"
    with pytest.raises(openai.NotFoundError) as e:
        client.responses.compact(model="m", previous_response_id="resp_unknown")
    assert e.value.param == "previous_response_id"
    assert script.requests == []


def test_an_empty_summary_is_an_error_not_an_empty_item(client: OpenAI, script) -> None:
    script.add({"content": ""})
    with pytest.raises(openai.APIStatusError) as e:
        client.responses.compact(model="m", input=HISTORY)
    assert e.value.status_code == 502 and "empty summary" in e.value.message


# ---- context_management ---------------------------------------------------------------------------

def test_context_management_compacts_a_chain_past_its_threshold(client: OpenAI, script) -> None:
    script.add({"content": "Noted."}, {"content": "Tram 28, " * 100})
    first = client.responses.create(model="m", input="I am going to Lisbon in May.")
    second = client.responses.create(model="m", previous_response_id=first.id, input="Which tram?")
    manage = [{"type": "compaction", "compact_threshold": 200}]
    # Under the threshold nothing happens.
    script.add({"content": "Yes."})
    small = client.responses.create(model="m", input="short", context_management=manage)
    assert [i.type for i in small.output] == ["message"] and len(script.requests) == 3
    script.add({"content": SUMMARY, "usage": {"prompt_tokens": 300, "completion_tokens": 20}},
               {"content": "Early morning.", "usage": {"prompt_tokens": 40, "completion_tokens": 3}})
    with client.responses.stream(model="m", previous_response_id=second.id, input="When is it quiet?",
                                 context_management=manage) as stream:
        events = list(stream)
        final = stream.get_final_response()
    check_events(events)
    assert "response.compaction.compacting" not in types_of(events)  # npm's helper throws on it
    assert [i.type for i in final.output] == ["compaction", "message"]
    item = final.output[0]
    assert item.id.startswith("cmp_") and item.encrypted_content
    assert final.output_text == "Early morning."
    assert final.usage.input_tokens == 340 and final.usage.output_tokens == 23  # both engine turns
    summary_request, answer_request = script.requests[-2:]
    assert wire_messages(summary_request)[-1] == ("user", PROMPT)
    compacted = [("user", "I am going to Lisbon in May."), ("user", "Which tram?"), ("user", "When is it quiet?"),
                 ("user", SUMMARY_HEADER + SUMMARY)]
    assert wire_messages(answer_request) == compacted
    # The stored response, and the next turn of the chain, carry the compacted context on.
    check_response(client.responses.retrieve(final.id))
    script.add({"content": "You're welcome."})
    client.responses.create(model="m", previous_response_id=final.id, input="Thanks!")
    assert wire_messages(script.requests[-1]) == [*compacted, ("assistant", "Early morning."), ("user", "Thanks!")]


def test_context_management_is_checked(client: OpenAI, script) -> None:
    for value, param in (([{"type": "summarize"}], "context_management[0].type"),
                         ([{"type": "compaction", "compact_threshold": 0}], "context_management[0].compact_threshold"),
                         ("compaction", "context_management"),
                         ([{"type": "compaction"}, {"type": "compaction"}], "context_management[1]")):
        with pytest.raises(openai.BadRequestError) as e:
            client.responses.create(model="m", input="hi", context_management=value)  # type: ignore[arg-type]
        assert e.value.param == param
    assert script.requests == []


# ---- POST /responses/input_tokens --------------------------------------------------------------

def test_input_tokens_counts_what_would_be_sent(client: OpenAI, azure_client: AzureOpenAI, script) -> None:
    # The scripted engine has no tokenize endpoint: the documented estimate (docs/api.md).
    count = client.responses.input_tokens.count(model="m", input="hello")
    InputTokenCountResponse.model_validate(count.model_dump())
    assert count.object == "response.input_tokens"
    assert count.input_tokens == 3 + 4 + 2  # reply, one message, "hello" (5 bytes)
    assert azure_client.responses.input_tokens.count(model="m", input="hello").input_tokens == 9
    with_instructions = client.responses.input_tokens.count(model="m", input="hello", instructions="Be brief.")
    assert with_instructions.input_tokens == 9 + 4 + 3
    tool = {"type": "function", "name": "get_weather", "parameters": {"type": "object", "properties": {}}}
    assert client.responses.input_tokens.count(model="m", input="hello", tools=[tool]).input_tokens > 9
    assert client.responses.input_tokens.count(model="m", input="hello", tools=[tool],
                                               tool_choice="none").input_tokens == 9
    image = {"type": "input_image", "image_url": "https://example.com/a.png", "detail": "low"}
    assert client.responses.input_tokens.count(
        model="m", input=[{"role": "user", "content": [image]}]).input_tokens == 3 + 4 + 85
    assert script.requests == []


def test_input_tokens_count_the_chain_and_compaction(client: OpenAI, script) -> None:
    script.add({"content": "A long answer. " * 40})
    first = client.responses.create(model="m", input="Tell me a lot.")
    alone = client.responses.input_tokens.count(model="m", input="More?").input_tokens
    chained = client.responses.input_tokens.count(model="m", input="More?", previous_response_id=first.id)
    assert chained.input_tokens > alone + 100
    compacted = compact(client, script, model="m", previous_response_id=first.id)
    history = [i.model_dump(exclude_none=True, warnings=False) for i in compacted.output]
    after = client.responses.input_tokens.count(model="m", input=[*history, {"role": "user", "content": "More?"}])
    assert after.input_tokens < chained.input_tokens
    with pytest.raises(openai.NotFoundError) as e:
        client.responses.input_tokens.count(model="m", input="x", previous_response_id="resp_nope")
    assert e.value.param == "previous_response_id"
    with pytest.raises(openai.BadRequestError) as e:
        client.responses.input_tokens.count(model="m", input=[{"type": "nonsense"}])  # type: ignore[list-item]
    assert e.value.param == "input[0].type"
