"""Steering over a WebSocket connection: user input queued for a response while it runs.

`response.steer` names a response running on the connection and carries user messages. They
are queued (`response.steer.accepted`) and applied when that response ends: a response that
completed without waiting for the client gets an automatic successor that continues it with
the queued input and its own settings; one that stopped for client tool output or an approval
keeps the input queued (`response.steer.pending`, with stubs of what the client must supply)
until the client continues it, and the input then joins that request's input. Input that can
no longer be applied comes back in `response.steer.failed`. Nothing here knows a socket.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from . import checks as c
from .errors import InvalidRequest
from .ids import new_id
from .items import normalize_input

STEER_PARTS = frozenset({"input_text", "input_image", "input_file"})
MESSAGE_KEYS = frozenset({"type", "role", "content", "id", "status"})
# Items that answer a parent's calls: steering input goes after them, because engines take
# tool results only straight after the assistant's calls.
ANSWERS = frozenset({"function_call_output", "custom_tool_call_output", "computer_call_output",
                     "mcp_approval_response"})


@dataclass
class Steer:
    """One accepted steering submission."""

    id: str
    previous_response_id: str
    input: str | list  # as the client sent it (returned as is if it cannot be applied)

    def wire(self) -> dict:
        return {"id": self.id, "previous_response_id": self.previous_response_id}

    def failed_wire(self) -> dict:
        return {"id": self.id, "previous_response_id": self.previous_response_id, "input": self.input}


def parse_steer(event: dict) -> tuple[str, str | list]:
    """A `response.steer` event's target and input, checked: user messages only, with text,
    image or file parts."""
    for key in event:
        if key not in ("type", "previous_response_id", "input"):
            raise InvalidRequest(f"Unknown parameter '{key}': response.steer takes only 'previous_response_id' "
                                 "and 'input'.", param=key, code="unknown_parameter")
    target = c.string(event, "previous_response_id", "previous_response_id", required=True, allow_empty=False)
    assert target is not None
    value = event.get("input")
    if value is None:
        raise c.missing("input")
    if isinstance(value, list):
        if not value:
            raise InvalidRequest("Invalid 'input': give a string or a non-empty array of user messages.",
                                 param="input", code="empty_array")
        for n, item in enumerate(value):
            _check_message(item, f"input[{n}]")
    normalize_input(value)  # the parts themselves, as for any input
    return target, value


def _check_message(item: Any, param: str) -> None:
    if not isinstance(item, dict):
        raise c.wrong_type(param, "a message object", item)
    if item.get("type", "message") != "message" or item.get("role") != "user":
        raise InvalidRequest(f"Invalid '{param}': steering takes only messages with role 'user'.",
                             param=param, code="invalid_value")
    for key in item:
        if key not in MESSAGE_KEYS:
            raise InvalidRequest(f"Unknown parameter '{param}.{key}': a steering message has only 'type', "
                                 "'role' and 'content'.", param=f"{param}.{key}", code="unknown_parameter")
    content = item.get("content")
    if isinstance(content, list):
        for k, part in enumerate(content):
            kind = part.get("type") if isinstance(part, dict) else None
            if kind not in STEER_PARTS:
                raise c.bad_value(f"{param}.content[{k}].type", kind, sorted(STEER_PARTS))


def steer_id() -> str:
    return new_id("steer")


def as_items(value: str | list) -> list:
    """Steering input as a list of input items (a string is one user message)."""
    if isinstance(value, str):
        return [{"type": "message", "role": "user", "content": value}]
    return list(value)


def required_input(output: list[dict]) -> list[dict]:
    """Stubs of what the client owes a response that stopped for it: tool outputs, approvals."""
    stubs: list[dict] = []
    for item in output:
        kind = item.get("type")
        if kind == "function_call":
            stubs.append({"type": "function_call_output", "call_id": item["call_id"], "name": item["name"]})
        elif kind == "custom_tool_call":
            stubs.append({"type": "custom_tool_call_output", "call_id": item["call_id"]})
        elif kind == "computer_call":
            stubs.append({"type": "computer_call_output", "call_id": item["call_id"]})
        elif kind == "mcp_approval_request":
            stubs.append({"type": "mcp_approval_response", "approval_request_id": item["id"]})
    return stubs


def with_steering(value: Any, steers: list[Steer]) -> Any:
    """A continuation's `input` with queued steering input joined in submission order: after
    the items answering the parent's calls, before the rest. An `input` of the wrong type is
    left for the request's own checks to refuse."""
    if value is not None and not isinstance(value, str | list):
        return value
    items = as_items(value) if value is not None else []
    answers = 0
    while answers < len(items) and isinstance(items[answers], dict) and items[answers].get("type") in ANSWERS:
        answers += 1
    queued = [item for steer in steers for item in as_items(steer.input)]
    return [*items[:answers], *queued, *items[answers:]]
