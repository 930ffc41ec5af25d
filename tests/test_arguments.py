"""Function call arguments: the lossless repair and the check (pure), then what a client sees
through the live server when an engine's arguments need mending or cannot be used."""

from __future__ import annotations

import json

import pytest
from harness import check_events, check_response, types_of, wire
from openai import OpenAI

from responsa.arguments import ArgumentsRepair, InvalidArguments, check_arguments, closing, repair_arguments

WEATHER = {"type": "object", "properties": {"city": {"type": "string"}, "unit": {"type": "string",
           "enum": ["celsius", "fahrenheit"]}}, "required": ["city", "unit"], "additionalProperties": False}


def tools(strict: bool | None = True) -> list[dict]:
    return [{"type": "function", "name": "get_weather", "parameters": WEATHER, "strict": strict}]


# ---- the repair ---------------------------------------------------------------------------------

@pytest.mark.parametrize("text", [
    '{"city": "Paris", "unit": "celsius"}',
    '{"a": [1, {"b": "}]{[\\"\\\\"}], "c": null}',
    ' \n{"a":\t1}',  # whitespace outside strings is JSON's own
    "[1, 2]",
    '"a string"',
    "",
])
def test_valid_arguments_are_left_alone(text: str) -> None:
    assert repair_arguments(text) == text


@pytest.mark.parametrize(("text", "repaired"), [
    ('{"city": "Paris\nFrance"}', '{"city": "Paris\\nFrance"}'),
    ('{"s": "a\tb\rc\x00d\x1fe\x08f\x0c"}', '{"s": "a\\tb\\rc\\u0000d\\u001fe\\bf\\f"}'),
    ('{"city": "Paris"}\nThe weather in Paris is sunny.', '{"city": "Paris"}'),
    ('{"a": "}"} {"b": 2}', '{"a": "}"}'),
    ('{"a": 1}\n', '{"a": 1}'),
    ('[{"a": 1}]]]', '[{"a": 1}]'),
    ('{"q": "say \\"hi\\"\nplease"} trailing', '{"q": "say \\"hi\\"\\nplease"}'),
])
def test_lossless_repairs(text: str, repaired: str) -> None:
    assert repair_arguments(text) == repaired
    json.loads(repaired)


@pytest.mark.parametrize("text", ['{"city": "Paris', '{"city": Paris}', "Sure! {}", '{"a": 1,}', "}{"])
def test_what_cannot_be_mended_stays_as_it_was(text: str) -> None:
    assert repair_arguments(text) == text


@pytest.mark.parametrize("text", [
    '{"q": "say \\"hi\\"\nplease", "n": [1, {"x": "]"}]}\nDone.',
    '{"a": "\\\\"}\n{"b": 1}',
    '{"s": "\x01\\\x02"}',
])
def test_pieces_repair_as_the_whole_does(text: str) -> None:
    whole = repair_arguments(text)
    for cut in range(len(text) + 1):
        for cut2 in range(cut, len(text) + 1):
            repair = ArgumentsRepair()
            got = repair.feed(text[:cut]) + repair.feed(text[cut:cut2]) + repair.feed(text[cut2:])
            assert got == whole, (cut, cut2)


def test_closing() -> None:
    assert closing("") == "{}" and closing(" \n") == "{}"
    assert closing("{}") == "" and closing('{"a') == ""


# ---- the check ----------------------------------------------------------------------------------

def test_check_accepts_json_and_schema_valid_arguments() -> None:
    check_arguments("f", '{"x": [1, "y"]}')
    check_arguments("get_weather", '{"city": "Oslo", "unit": "celsius"}', WEATHER)


@pytest.mark.parametrize("text", ['{"city": "Paris', "Sure!", '{"a": NaN}', '{"a": "\n"}', ""])
def test_check_refuses_what_is_not_json(text: str) -> None:
    with pytest.raises(InvalidArguments, match="arguments for function 'f' are not valid JSON"):
        check_arguments("f", text)


def test_check_refuses_schema_violations_naming_the_place() -> None:
    with pytest.raises(InvalidArguments, match=r"function 'get_weather' do not match its strict schema: "
                                               r"'kelvin' is not one of .* \(at \$\.unit\)"):
        check_arguments("get_weather", '{"city": "Oslo", "unit": "kelvin"}', WEATHER)
    with pytest.raises(InvalidArguments, match=r"'unit' is a required property"):
        check_arguments("get_weather", '{"city": "Oslo"}', WEATHER)


def test_check_follows_refs() -> None:
    schema = {"type": "object", "properties": {"p": {"$ref": "#/$defs/P"}}, "required": ["p"],
              "$defs": {"P": {"type": "integer"}}}
    check_arguments("f", '{"p": 3}', schema)
    with pytest.raises(InvalidArguments, match=r"at \$\.p"):
        check_arguments("f", '{"p": "3"}', schema)


def test_a_schema_that_cannot_be_used_is_said_so() -> None:
    with pytest.raises(InvalidArguments, match="the schema cannot be checked"):
        check_arguments("f", '{"a": "x"}', {"type": "object", "properties": {"a": {"pattern": "("}}})


# ---- through the server -------------------------------------------------------------------------

def _calls(r) -> list:
    return [o for o in r.output if o.type == "function_call"]


def _streamed(client: OpenAI, **kwargs) -> tuple[list[dict], dict]:
    events = [wire(e) for e in client.responses.create(model="m", input="weather?", stream=True, **kwargs)]
    check_events(events)
    deltas = "".join(e["delta"] for e in events if e["type"] == "response.function_call_arguments.delta")
    done = [e for e in events if e["type"] == "response.function_call_arguments.done"]
    item = next(o for o in events[-1]["response"]["output"] if o["type"] == "function_call")
    # What was streamed, the done event and the final item always say the same thing.
    assert len(done) == 1 and done[0]["arguments"] == deltas == item["arguments"]
    return events, item


# A raw newline inside a string and chatter after the object: the repair's two cases at once.
SLOPPY = '{"city": "Paris\nFrance", "unit": "celsius"}\nI called the function.'
MENDED = '{"city": "Paris\\nFrance", "unit": "celsius"}'


def test_mended_arguments(client: OpenAI, script) -> None:
    script.add({"tool_calls": [{"name": "get_weather", "arguments": SLOPPY}]})
    r = client.responses.create(model="m", input="weather?", tools=tools())
    check_response(r)
    assert r.status == "completed" and [c.arguments for c in _calls(r)] == [MENDED]
    assert json.loads(_calls(r)[0].arguments)["city"] == "Paris\nFrance"
    assert client.responses.retrieve(r.id).output[0].arguments == MENDED


def test_mended_arguments_streamed(client: OpenAI, script) -> None:
    script.add({"tool_calls": [{"name": "get_weather", "arguments": SLOPPY}]})
    events, item = _streamed(client, tools=tools())
    assert events[-1]["type"] == "response.completed" and item["arguments"] == MENDED
    assert item["status"] == "completed"


def test_no_arguments_become_an_empty_object(client: OpenAI, script) -> None:
    script.add({"tool_calls": [{"name": "ping", "arguments": ""}]},
               {"tool_calls": [{"name": "ping", "arguments": ""}]})
    ping = [{"type": "function", "name": "ping", "parameters": {"type": "object", "properties": {}}}]
    r = client.responses.create(model="m", input="ping", tools=ping)
    assert r.status == "completed" and _calls(r)[0].arguments == "{}"
    _, item = _streamed(client, tools=ping)
    assert item["arguments"] == "{}"


@pytest.mark.parametrize("strict", [True, False, None])
def test_arguments_that_are_not_json_fail_the_response(client: OpenAI, script, strict: bool | None) -> None:
    script.add({"tool_calls": [{"name": "get_weather", "arguments": '{"city": "Paris'}]})
    r = client.responses.create(model="m", input="weather?", tools=tools(strict))
    check_response(r)
    assert r.status == "failed" and r.error.code == "server_error"
    assert "arguments for function 'get_weather' are not valid JSON" in r.error.message
    assert _calls(r)[0].status == "incomplete"  # never a completed call the client would run
    assert client.responses.retrieve(r.id).status == "failed"


def test_arguments_that_are_not_json_fail_the_stream(client: OpenAI, script) -> None:
    script.add({"tool_calls": [{"name": "get_weather", "arguments": '{"city": "Paris'}]})
    events, item = _streamed(client, tools=tools())
    assert types_of(events)[-3:] == ["response.function_call_arguments.done", "response.output_item.done",
                                     "response.failed"]
    assert events[-2]["item"]["status"] == "incomplete" and item["status"] == "incomplete"
    assert "'get_weather' are not valid JSON" in events[-1]["response"]["error"]["message"]


def test_strict_arguments_must_match_the_schema(client: OpenAI, script) -> None:
    wrong = '{"city": "Paris", "unit": "kelvin"}'
    script.add({"tool_calls": [{"name": "get_weather", "arguments": wrong}]})
    r = client.responses.create(model="m", input="weather?", tools=tools(True))
    assert r.status == "failed" and r.error.code == "server_error"
    assert r.error.message.startswith("The model's arguments for function 'get_weather' do not match its strict "
                                      "schema: 'kelvin' is not one of ['celsius', 'fahrenheit'] (at $.unit)")
    script.add({"tool_calls": [{"name": "get_weather", "arguments": wrong}]})
    events, item = _streamed(client, tools=tools(True))
    assert events[-1]["type"] == "response.failed" and item["status"] == "incomplete"
    # Without strict, JSON that misses the schema is the client's to judge, as with hosted models.
    script.add({"tool_calls": [{"name": "get_weather", "arguments": wrong}]})
    r = client.responses.create(model="m", input="weather?", tools=tools(False))
    assert r.status == "completed" and _calls(r)[0].arguments == wrong


def test_strict_pydantic_tool_parses(client: OpenAI, script) -> None:
    import openai
    from pydantic import BaseModel

    class GetWeather(BaseModel):
        city: str

    script.add({"tool_calls": [{"name": "GetWeather", "arguments": '{"city": "Oslo\n"} ok'}]})
    r = client.responses.parse(model="m", input="weather?", tools=[openai.pydantic_function_tool(GetWeather)])
    assert r.output[0].parsed_arguments == GetWeather(city="Oslo\n")


def test_a_later_call_that_cannot_be_used_fails_the_response(client: OpenAI, script) -> None:
    script.add({"tool_calls": [{"name": "get_weather", "arguments": '{"city": "Oslo", "unit": "celsius"}'},
                               {"name": "get_weather", "arguments": "Paris"}]})
    events = [wire(e) for e in client.responses.create(model="m", input="weather?", tools=tools(), stream=True)]
    check_events(events)
    final = events[-1]["response"]
    assert final["status"] == "failed"
    assert [o["status"] for o in final["output"]] == ["completed", "incomplete"]


def test_an_invented_function_needs_json_arguments_too(client: OpenAI, script) -> None:
    script.add({"tool_calls": [{"name": "nowhere", "arguments": '{"a": 1} extra'}]},
               {"tool_calls": [{"name": "nowhere", "arguments": "{oops"}]})
    r = client.responses.create(model="m", input="x", tools=tools())
    assert r.status == "completed" and _calls(r)[0].arguments == '{"a": 1}'
    r = client.responses.create(model="m", input="x", tools=tools())
    assert r.status == "failed" and "function 'nowhere'" in r.error.message
