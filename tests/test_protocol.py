"""Pure tests of the create request (protocol.py): defaults, the echo, and each 400 with its `param`."""

from __future__ import annotations

from typing import Any

import pytest
from harness import check_response

from responsa.errors import InvalidRequest
from responsa.protocol import INCLUDABLE, CreateRequest, parse_create


def parse(**body: Any) -> CreateRequest:
    return parse_create({"model": "m", **body})


def rejected(body: Any) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as info:
        parse_create(body)
    assert info.value.status == 400 and info.value.type == "invalid_request_error"
    return info.value


def test_defaults() -> None:
    req = parse_create({"model": "m"})
    assert req.input == [] and req.raw == {"model": "m"}
    assert (req.store, req.background, req.stream) == (True, False, False)
    assert req.tools == [] and req.tool_choice == "auto" and req.parallel_tool_calls is True
    assert req.include == () and req.metadata == {} and req.truncation == "disabled"
    assert req.text_format == {"type": "text"} and req.verbosity == "medium"
    assert req.service_tier == "default" and req.reasoning is None
    assert req.presence_penalty == 0.0 and req.frequency_penalty == 0.0


def test_a_string_input_is_one_user_message() -> None:
    (item,) = parse(input="hello").input
    assert item["type"] == "message" and item["role"] == "user" and item["status"] == "completed"
    assert item["content"] == [{"type": "input_text", "text": "hello"}]
    assert item["id"].startswith("msg_")


def test_null_values_count_as_absent() -> None:
    keys = ["instructions", "previous_response_id", "store", "background", "stream", "include", "tools",
            "tool_choice", "max_output_tokens", "temperature", "top_p", "reasoning", "metadata", "text",
            "truncation", "service_tier", "user", "prompt", "conversation"]
    req = parse(**dict.fromkeys(keys))
    defaults = parse()
    assert req.echo() == defaults.echo()


def test_conversation_is_an_id_or_an_object_with_one() -> None:
    assert parse(conversation="conv_1").conversation == parse(conversation={"id": "conv_1"}).conversation == "conv_1"
    assert parse().conversation is None


def test_unknown_keys_are_tolerated() -> None:
    assert parse(client_specific={"x": 1}, extra_body=True).model == "m"


def test_echo_of_the_defaults() -> None:
    assert parse().echo() == {
        "instructions": None, "metadata": {}, "temperature": 1.0, "top_p": 1.0, "presence_penalty": 0.0,
        "frequency_penalty": 0.0, "top_logprobs": 0, "tool_choice": "auto", "tools": [],
        "parallel_tool_calls": True, "max_output_tokens": None, "max_tool_calls": None,
        "previous_response_id": None, "reasoning": {"effort": None, "summary": None},
        "text": {"format": {"type": "text"}, "verbosity": "medium"}, "truncation": "disabled", "store": True,
        "background": False, "service_tier": "default", "user": None, "safety_identifier": None,
        "prompt_cache_key": None, "prompt_cache_retention": None}


FULL = {
    "instructions": "be brief", "previous_response_id": "resp_1", "store": True, "background": True,
    "stream": True, "include": ["reasoning.encrypted_content", "reasoning.encrypted_content"],
    "tools": [{"type": "function", "name": "f", "parameters": {"type": "object", "properties": {}}},
              {"type": "custom", "name": "g"}, {"type": "web_search"}],
    "tool_choice": {"type": "function", "name": "f"}, "parallel_tool_calls": False, "max_tool_calls": 3,
    "max_output_tokens": 100.0, "temperature": 0.5, "top_p": 0.9, "top_logprobs": 2,
    "presence_penalty": 1, "frequency_penalty": -1,
    "reasoning": {"effort": "low", "generate_summary": "concise"}, "truncation": "auto",
    "metadata": {"k": "v"}, "user": "u", "safety_identifier": "s", "prompt_cache_key": "p",
    "prompt_cache_retention": "24h", "service_tier": "flex",
    "text": {"format": {"type": "json_schema", "name": "out", "schema": {"type": "object"}, "strict": True},
             "verbosity": "low"},
}


def test_every_parameter_is_read_and_echoed() -> None:
    req = parse_create({"model": "m", **FULL})
    echo = req.echo()
    assert req.stream and req.background and req.include == ("reasoning.encrypted_content",)
    assert req.previous_response_id == "resp_1"
    assert echo["max_output_tokens"] == 100 and isinstance(echo["max_output_tokens"], int)
    assert echo["reasoning"] == {"effort": "low", "summary": "concise"}
    assert echo["text"] == {"format": {"type": "json_schema", "name": "out", "schema": {"type": "object"},
                                       "strict": True, "description": None}, "verbosity": "low"}
    assert echo["tool_choice"] == {"type": "function", "name": "f"}
    assert [t["type"] for t in echo["tools"]] == ["function", "custom", "web_search"]
    assert (echo["temperature"], echo["top_p"], echo["top_logprobs"]) == (0.5, 0.9, 2)
    assert (echo["presence_penalty"], echo["frequency_penalty"]) == (1.0, -1.0)
    assert (echo["truncation"], echo["service_tier"], echo["max_tool_calls"]) == ("auto", "flex", 3)
    assert (echo["user"], echo["safety_identifier"], echo["prompt_cache_key"],
            echo["prompt_cache_retention"]) == ("u", "s", "p", "24h")


@pytest.mark.parametrize("body", [{}, FULL, {"text": {"format": {"type": "json_object"}}},
                                  {"reasoning": {"effort": "high", "summary": "auto"}},
                                  {"tool_choice": "required", "tools": FULL["tools"]}])
def test_a_response_echoing_the_request_validates_against_the_sdk(body: dict) -> None:
    req = parse_create({"model": "m", **body})
    check_response({"id": "resp_x", "object": "response", "created_at": 1, "status": "completed",
                    "completed_at": 2, "error": None, "incomplete_details": None, "model": "m", "output": [],
                    "usage": None, **req.echo()})


def test_service_tier_auto_is_echoed_as_default() -> None:
    assert parse(service_tier="auto").service_tier == "default"


def test_verbosity_at_the_top_level() -> None:
    assert parse(verbosity="high").verbosity == "high"
    assert parse(text={"verbosity": "low"}, verbosity="high").verbosity == "low"


@pytest.mark.parametrize(("body", "param", "code"), [
    ([], None, "invalid_type"),
    ("text", None, "invalid_type"),
    ({}, "model", "missing_required_parameter"),
    ({"model": None}, "model", "missing_required_parameter"),
    ({"model": ""}, "model", "empty_string"),
    ({"model": 4}, "model", "invalid_type"),
])
def test_the_body_and_model(body: Any, param: str | None, code: str) -> None:
    error = rejected(body)
    assert (error.param, error.code) == (param, code)


# (body fields, param, code): each bad value gets a 400 naming exactly what was wrong.
BAD: list[tuple[dict, str, str]] = [
    ({"input": 5}, "input", "invalid_type"),
    ({"input": [5]}, "input[0]", "invalid_type"),
    ({"input": [{"content": "x"}]}, "input[0].type", "missing_required_parameter"),
    ({"input": [{"type": "nope"}]}, "input[0].type", "invalid_value"),
    ({"input": [{"role": "boss", "content": "x"}]}, "input[0].role", "invalid_value"),
    ({"input": [{"role": "user"}]}, "input[0].content", "missing_required_parameter"),
    ({"input": [{"role": "user", "content": [{"type": "input_image"}]}]}, "input[0].content[0]", "invalid_value"),
    ({"prompt": {"id": "p"}}, "prompt", "unsupported_parameter"),
    ({"conversation": 5}, "conversation", "invalid_type"),
    ({"conversation": ""}, "conversation", "empty_string"),
    ({"conversation": {"name": "x"}}, "conversation.id", "missing_required_parameter"),
    ({"conversation": "conv_1", "previous_response_id": "resp_1"}, "conversation", "mutually_exclusive_parameters"),
    ({"conversation": "conv_1", "store": False}, "store", "invalid_value"),
    ({"instructions": ["a"]}, "instructions", "invalid_type"),
    ({"previous_response_id": ""}, "previous_response_id", "empty_string"),
    ({"previous_response_id": 1}, "previous_response_id", "invalid_type"),
    ({"store": "yes"}, "store", "invalid_type"),
    ({"background": 1}, "background", "invalid_type"),
    ({"stream": "true"}, "stream", "invalid_type"),
    ({"stream_options": []}, "stream_options", "invalid_type"),
    ({"include": "reasoning.encrypted_content"}, "include", "invalid_type"),
    ({"include": [1]}, "include[0]", "invalid_type"),
    ({"include": [INCLUDABLE[0], "output.everything"]}, "include[1]", "invalid_value"),
    ({"tools": {}}, "tools", "invalid_type"),
    ({"tools": ["f"]}, "tools[0]", "invalid_type"),
    ({"tools": [{}]}, "tools[0].type", "missing_required_parameter"),
    ({"tools": [{"type": "telepathy"}]}, "tools[0].type", "invalid_value"),
    ({"tools": [{"type": "function"}]}, "tools[0].name", "missing_required_parameter"),
    ({"tools": [{"type": "function", "name": "a b"}]}, "tools[0].name", "invalid_value"),
    ({"tools": [{"type": "function", "name": "f", "parameters": []}]}, "tools[0].parameters", "invalid_type"),
    ({"tools": [{"type": "function", "name": "f"}, {"type": "custom", "name": "f"}]}, "tools[1].name",
     "invalid_value"),
    ({"tools": [{"type": "custom", "name": "g", "format": {"type": "grammar", "syntax": "ebnf",
                                                           "definition": "x"}}]},
     "tools[0].format.syntax", "invalid_value"),
    ({"tool_choice": "sometimes"}, "tool_choice", "invalid_value"),
    ({"tool_choice": 1}, "tool_choice", "invalid_type"),
    ({"tool_choice": {}}, "tool_choice.type", "missing_required_parameter"),
    ({"tool_choice": {"type": "function", "name": "missing"}}, "tool_choice", "invalid_value"),
    ({"tool_choice": {"type": "allowed_tools", "mode": "maybe", "tools": []}}, "tool_choice.mode",
     "invalid_value"),
    ({"tool_choice": {"type": "allowed_tools", "mode": "auto", "tools": [1]}}, "tool_choice.tools[0]",
     "invalid_type"),
    ({"tool_choice": {"type": "web_search"}, "tools": [{"type": "web_search"}]}, "tool_choice",
     "unsupported_value"),
    ({"parallel_tool_calls": "no"}, "parallel_tool_calls", "invalid_type"),
    ({"max_tool_calls": 0}, "max_tool_calls", "integer_below_min_value"),
    ({"max_output_tokens": 15}, "max_output_tokens", "integer_below_min_value"),
    ({"max_output_tokens": 16.5}, "max_output_tokens", "invalid_type"),
    ({"max_output_tokens": True}, "max_output_tokens", "invalid_type"),
    ({"temperature": 2.5}, "temperature", "decimal_above_max_value"),
    ({"temperature": -0.1}, "temperature", "decimal_below_min_value"),
    ({"temperature": "hot"}, "temperature", "invalid_type"),
    ({"temperature": False}, "temperature", "invalid_type"),
    ({"top_p": 1.01}, "top_p", "decimal_above_max_value"),
    ({"top_logprobs": 21}, "top_logprobs", "integer_above_max_value"),
    ({"top_logprobs": -1}, "top_logprobs", "integer_below_min_value"),
    ({"presence_penalty": 2.5}, "presence_penalty", "decimal_above_max_value"),
    ({"frequency_penalty": -3}, "frequency_penalty", "decimal_below_min_value"),
    ({"reasoning": "high"}, "reasoning", "invalid_type"),
    ({"reasoning": {"effort": "extreme"}}, "reasoning.effort", "invalid_value"),
    ({"reasoning": {"summary": "long"}}, "reasoning.summary", "invalid_value"),
    ({"reasoning": {"generate_summary": 1}}, "reasoning.generate_summary", "invalid_type"),
    ({"truncation": "middle"}, "truncation", "invalid_value"),
    ({"metadata": []}, "metadata", "invalid_type"),
    ({"metadata": {f"k{i}": "v" for i in range(17)}}, "metadata", "object_above_max_properties"),
    ({"metadata": {"k" * 65: "v"}}, "metadata", "invalid_value"),
    ({"metadata": {"k": 1}}, "metadata.k", "invalid_type"),
    ({"metadata": {"k": "v" * 513}}, "metadata.k", "string_above_max_length"),
    ({"user": "u" * 257}, "user", "string_above_max_length"),
    ({"safety_identifier": "s" * 129}, "safety_identifier", "string_above_max_length"),
    ({"prompt_cache_key": 1}, "prompt_cache_key", "invalid_type"),
    ({"prompt_cache_retention": "forever"}, "prompt_cache_retention", "invalid_value"),
    ({"service_tier": "gold"}, "service_tier", "invalid_value"),
    ({"text": "json"}, "text", "invalid_type"),
    ({"text": {"format": "json"}}, "text.format", "invalid_type"),
    ({"text": {"format": {}}}, "text.format.type", "missing_required_parameter"),
    ({"text": {"format": {"type": "xml"}}}, "text.format.type", "invalid_value"),
    ({"text": {"format": {"type": "json_schema", "schema": {}}}}, "text.format.name",
     "missing_required_parameter"),
    ({"text": {"format": {"type": "json_schema", "name": "a b", "schema": {}}}}, "text.format.name",
     "invalid_value"),
    ({"text": {"format": {"type": "json_schema", "name": "x" * 65, "schema": {}}}}, "text.format.name",
     "invalid_value"),
    ({"text": {"format": {"type": "json_schema", "name": "n"}}}, "text.format.schema",
     "missing_required_parameter"),
    ({"text": {"format": {"type": "json_schema", "name": "n", "schema": {}, "strict": "yes"}}},
     "text.format.strict", "invalid_type"),
    ({"text": {"format": {"type": "json_schema", "name": "n", "schema": []}}}, "text.format.schema",
     "invalid_type"),
    ({"text": {"format": {"type": "json_schema", "name": "n", "schema": {}, "description": 1}}},
     "text.format.description", "invalid_type"),
    ({"text": {"verbosity": "loud"}}, "text.verbosity", "invalid_value"),
    ({"verbosity": "loud"}, "verbosity", "invalid_value"),
]


@pytest.mark.parametrize(("fields", "param", "code"), BAD, ids=[f"{p}-{c}" for _, p, c in BAD])
def test_each_bad_value_is_a_400_naming_its_param(fields: dict, param: str, code: str) -> None:
    error = rejected({"model": "m", **fields})
    assert (error.param, error.code) == (param, code), error.message
    assert error.body() == {"error": {"message": error.message, "type": "invalid_request_error",
                                      "param": param, "code": code}}


def test_messages_quote_the_hosted_wording() -> None:
    assert rejected({"model": "m", "temperature": 3}).message == (
        "Invalid 'temperature': decimal above maximum value. Expected a value <= 2, but got 3 instead.")
    assert rejected({"model": "m", "truncation": "x"}).message == (
        "Invalid value: 'x'. Supported values are: 'auto', and 'disabled'.")
    assert rejected({"model": "m", "store": 1}).message == (
        "Invalid type for 'store': expected a boolean, but got an integer instead.")
    assert rejected({"model": "m"} | {"input": None, "tools": 1}).message == (
        "Invalid type for 'tools': expected an array, but got an integer instead.")


def test_limits_are_inclusive() -> None:
    req = parse(max_output_tokens=16, max_tool_calls=1, temperature=2, top_p=0, top_logprobs=20,
                metadata={f"k{i}": "v" * 512 for i in range(16)}, user="u" * 256)
    assert req.max_output_tokens == 16 and req.temperature == 2.0 and req.top_logprobs == 20
