"""Steering input: what `response.steer` accepts, what the client owes, where queued input goes."""

from __future__ import annotations

import pytest

from responsa.errors import InvalidRequest
from responsa.steering import Steer, parse_steer, required_input, with_steering


def test_parse_steer_accepts_text_and_user_messages() -> None:
    assert parse_steer({"type": "response.steer", "previous_response_id": "resp_1", "input": "hi"}) == \
        ("resp_1", "hi")
    message = [{"type": "message", "role": "user",
                "content": [{"type": "input_text", "text": "look"},
                            {"type": "input_image", "image_url": "https://example.com/a.png"}]}]
    assert parse_steer({"previous_response_id": "resp_1", "input": message}) == ("resp_1", message)


@pytest.mark.parametrize(("event", "param"), [
    ({"input": "x"}, "previous_response_id"),
    ({"previous_response_id": "resp_1"}, "input"),
    ({"previous_response_id": "resp_1", "input": []}, "input"),
    ({"previous_response_id": "resp_1", "input": [{"role": "assistant", "content": "x"}]}, "input[0]"),
    ({"previous_response_id": "resp_1", "input": [{"type": "function_call_output", "call_id": "c", "output": "o"}]},
     "input[0]"),
    ({"previous_response_id": "resp_1", "input": [{"role": "user", "content": [{"type": "refusal",
                                                                              "refusal": "no"}]}]},
     "input[0].content[0].type"),
    ({"previous_response_id": "resp_1", "input": [{"role": "user", "content": "x", "phase": "y"}]},
     "input[0].phase"),
    ({"previous_response_id": "resp_1", "input": "x", "stream_id": "a"}, "stream_id"),
    ({"previous_response_id": "resp_1", "input": [{"role": "user", "content": [{"type": "input_image"}]}]},
     "input[0].content[0]"),
])
def test_parse_steer_refuses(event: dict, param: str) -> None:
    with pytest.raises(InvalidRequest) as e:
        parse_steer(event)
    assert e.value.param == param


def test_required_input_stubs() -> None:
    output = [{"type": "message", "id": "msg_1"},
              {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "f", "arguments": "{}"},
              {"type": "custom_tool_call", "id": "ctc_1", "call_id": "call_2", "name": "p", "input": ""},
              {"type": "computer_call", "id": "cu_1", "call_id": "call_3"},
              {"type": "mcp_approval_request", "id": "mcpr_1", "name": "t", "server_label": "s", "arguments": "{}"}]
    assert required_input(output) == [
        {"type": "function_call_output", "call_id": "call_1", "name": "f"},
        {"type": "custom_tool_call_output", "call_id": "call_2"},
        {"type": "computer_call_output", "call_id": "call_3"},
        {"type": "mcp_approval_response", "approval_request_id": "mcpr_1"}]
    assert required_input(output[:1]) == []


def test_queued_input_follows_the_answers_to_the_parents_calls() -> None:
    steers = [Steer("steer_1", "resp_1", "first"), Steer("steer_2", "resp_1", [{"role": "user", "content": "2nd"}])]
    answer = {"type": "function_call_output", "call_id": "c", "output": "ok"}
    assert with_steering([answer, {"role": "user", "content": "mine"}], steers) == [
        answer, {"type": "message", "role": "user", "content": "first"}, {"role": "user", "content": "2nd"},
        {"role": "user", "content": "mine"}]
    assert with_steering("plain", steers[:1]) == [{"type": "message", "role": "user", "content": "first"},
                                                  {"type": "message", "role": "user", "content": "plain"}]
    assert with_steering(None, steers[:1]) == [{"type": "message", "role": "user", "content": "first"}]
    assert with_steering(5, steers) == 5  # left for the request's own checks to refuse
