"""The `POST /responses` request: parsed, checked, and the Response object's echo of it."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from . import checks as c
from .errors import InvalidRequest
from .items import normalize_input
from .shapes import ResponseEcho
from .tools import check_tool_choice, check_tools

INCLUDABLE = (
    "file_search_call.results", "web_search_call.results", "web_search_call.action.sources",
    "message.input_image.image_url", "computer_call_output.output.image_url",
    "code_interpreter_call.outputs", "reasoning.encrypted_content", "message.output_text.logprobs",
)
SERVICE_TIERS = ("auto", "default", "flex", "scale", "priority", "fast", "ultrafast")
EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh", "max")
VERBOSITY = ("low", "medium", "high")
_SCHEMA_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


@dataclass(frozen=True)
class CreateRequest:
    """A checked create request, frozen: its parameters exist here once. `input` holds normalised
    items (item references unresolved)."""

    model: str
    input: list[dict]
    instructions: str | None = None
    previous_response_id: str | None = None
    conversation: str | None = None  # its id
    store: bool = True
    background: bool = False
    stream: bool = False
    include: tuple[str, ...] = ()
    tools: list[dict] = field(default_factory=list)
    tool_choice: str | dict = "auto"
    parallel_tool_calls: bool = True
    max_tool_calls: int | None = None
    max_output_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_logprobs: int | None = None
    text_format: dict = field(default_factory=lambda: {"type": "text"})
    verbosity: str = "medium"
    reasoning: dict | None = None
    truncation: str = "disabled"
    metadata: dict[str, str] = field(default_factory=dict)
    user: str | None = None
    safety_identifier: str | None = None
    prompt_cache_key: str | None = None
    prompt_cache_retention: str | None = None
    service_tier: str = "default"
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    stream_options: dict | None = None
    generate: bool = True  # False: a WebSocket warm-up that prepares the context and produces no output
    # `context_management` compaction: None (off), or its `compact_threshold` (0: the default).
    compact_threshold: int | None = None
    # Request headers that tools may read (for example Azure's image deployment header).
    headers: dict[str, str] = field(default_factory=dict)
    raw: dict | None = None  # the body as sent (kept to restart queued background runs)

    def echo(self) -> ResponseEcho:
        """The request fields a Response object repeats, with effective defaults filled in."""
        return {
            "instructions": self.instructions,
            "metadata": self.metadata,
            "temperature": 1.0 if self.temperature is None else self.temperature,
            "top_p": 1.0 if self.top_p is None else self.top_p,
            "presence_penalty": self.presence_penalty,
            "frequency_penalty": self.frequency_penalty,
            "top_logprobs": self.top_logprobs or 0,
            "tool_choice": self.tool_choice,
            "tools": self.tools,
            "parallel_tool_calls": self.parallel_tool_calls,
            "max_output_tokens": self.max_output_tokens,
            "max_tool_calls": self.max_tool_calls,
            "previous_response_id": self.previous_response_id,
            "reasoning": self.reasoning or {"effort": None, "summary": None},
            "text": {"format": self.text_format, "verbosity": self.verbosity},
            "truncation": self.truncation,
            "store": self.store,
            "background": self.background,
            "service_tier": self.service_tier,
            "user": self.user,
            "safety_identifier": self.safety_identifier,
            "prompt_cache_key": self.prompt_cache_key,
            "prompt_cache_retention": self.prompt_cache_retention,
        }


def parse_create(body: Any, headers: Mapping[str, str] | None = None) -> CreateRequest:
    """Check a decoded JSON body. Unknown top-level keys are tolerated (clients send their own).

    Only the keys the client sent are looked at (the request's defaults cover the rest): a
    typical request sends three or four of the thirty-odd parameters."""
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.", code="invalid_type")
    for key, value in body.items():
        # Every value is echoed, stored or (in a background run's request) kept whole, unknown keys too.
        if type(value) is dict or type(value) is list:
            c.nesting(value, key)
    model = c.string(body, "model", "model", required=True, allow_empty=False)
    assert model is not None
    fields: dict[str, Any] = {"model": model, "input": normalize_input(body.get("input")), "raw": body,
                              "headers": dict(headers or {})}
    for key in body:
        check = _FIELDS.get(key)
        if check is not None and body[key] is not None:
            check(body, fields)
    if fields.get("conversation") is not None:
        _check_conversation_use(fields)
    if "tool_choice" in body:
        fields["tool_choice"] = check_tool_choice(body["tool_choice"], fields.get("tools", []))
    if "text" in body or "verbosity" in body:
        _text(body, fields)
    return _frozen_request(fields)


_DEFAULTS = {f.name: f.default for f in dataclasses.fields(CreateRequest) if f.default is not dataclasses.MISSING}
_FACTORIES = {f.name: f.default_factory for f in dataclasses.fields(CreateRequest)
              if f.default_factory is not dataclasses.MISSING}


def _frozen_request(values: dict[str, Any]) -> CreateRequest:
    """`CreateRequest(**values)` without the frozen dataclass's __init__, which sets each of its
    thirty-odd fields through object.__setattr__ (5 of a plain request's ~220 us of CPU): the
    defaults and the checked values go into the instance's dict at once. Still frozen after."""
    req = object.__new__(CreateRequest)
    state = req.__dict__
    state.update(_DEFAULTS)
    for name, make in _FACTORIES.items():
        if name not in values:
            state[name] = make()
    state.update(values)
    return req


def _field(name: str, read: Callable[[dict], Any]) -> Callable[[dict, dict[str, Any]], None]:
    """The check of one parameter: `read` takes it from the body, checked, into the request's fields."""

    def check(body: dict, fields: dict[str, Any]) -> None:
        fields[name] = read(body)

    return check


def _unsupported(key: str) -> Any:
    def check(body: dict, fields: dict[str, Any]) -> None:
        raise InvalidRequest(f"'{key}' is not supported by this server yet (see docs/unsupported.md).",
                             param=key, code="unsupported_parameter")

    return check


def _include(body: dict, fields: dict[str, Any]) -> None:
    include = c.string_list(body, "include", "include") or []
    for i, value in enumerate(include):
        if value not in INCLUDABLE:
            raise c.bad_value(f"include[{i}]", value, INCLUDABLE)
    fields["include"] = tuple(dict.fromkeys(include))


def _service_tier(body: dict, fields: dict[str, Any]) -> None:
    tier = c.choice(body, "service_tier", "service_tier", SERVICE_TIERS)
    fields["service_tier"] = "default" if tier in (None, "auto") else tier


# Each create parameter, and the check that reads it into the request.
_FIELDS: dict[str, Any] = {
    "prompt": _unsupported("prompt"),
    "conversation": _field("conversation", lambda b: _conversation(b)),
    "instructions": _field("instructions", lambda b: _instructions(b)),
    "previous_response_id": _field("previous_response_id", lambda b: c.string(
        b, "previous_response_id", "previous_response_id", allow_empty=False)),
    "store": _field("store", lambda b: c.boolean(b, "store", "store", True)),
    "background": _field("background", lambda b: c.boolean(b, "background", "background", False)),
    "stream": _field("stream", lambda b: c.boolean(b, "stream", "stream", False)),
    "stream_options": _field("stream_options", lambda b: c.mapping(b, "stream_options", "stream_options")),
    "include": _include,
    "tools": _field("tools", lambda b: check_tools(c.array(b, "tools", "tools") or [])),
    "parallel_tool_calls": _field("parallel_tool_calls", lambda b: c.boolean(
        b, "parallel_tool_calls", "parallel_tool_calls", True)),
    "max_tool_calls": _field("max_tool_calls", lambda b: c.integer(b, "max_tool_calls", "max_tool_calls",
                                                                          lo=1)),
    "max_output_tokens": _field("max_output_tokens", lambda b: c.integer(
        b, "max_output_tokens", "max_output_tokens", lo=16)),
    "temperature": _field("temperature", lambda b: c.number(b, "temperature", "temperature", 0, 2)),
    "top_p": _field("top_p", lambda b: c.number(b, "top_p", "top_p", 0, 1)),
    "top_logprobs": _field("top_logprobs", lambda b: c.integer(b, "top_logprobs", "top_logprobs", lo=0,
                                                                      hi=20)),
    "presence_penalty": _field("presence_penalty", lambda b: c.number(
        b, "presence_penalty", "presence_penalty", -2, 2) or 0.0),
    "frequency_penalty": _field("frequency_penalty", lambda b: c.number(
        b, "frequency_penalty", "frequency_penalty", -2, 2) or 0.0),
    "reasoning": _field("reasoning", lambda b: _reasoning(b)),
    "truncation": _field("truncation", lambda b: c.choice(b, "truncation", "truncation",
                                                                 ("auto", "disabled")) or "disabled"),
    "metadata": _field("metadata", lambda b: _metadata(b)),
    "user": _field("user", lambda b: c.string(b, "user", "user", max_len=256)),
    "safety_identifier": _field("safety_identifier", lambda b: c.string(
        b, "safety_identifier", "safety_identifier", max_len=128)),
    "prompt_cache_key": _field("prompt_cache_key", lambda b: c.string(b, "prompt_cache_key",
                                                                             "prompt_cache_key")),
    "prompt_cache_retention": _field("prompt_cache_retention", lambda b: c.choice(
        b, "prompt_cache_retention", "prompt_cache_retention", ("in_memory", "24h"))),
    "service_tier": _service_tier,
    "context_management": _field("compact_threshold", lambda b: _context_management(b)),
}


def _conversation(body: dict) -> str:
    """`conversation`: an id, or an object with one."""
    value = body["conversation"]
    if isinstance(value, dict):
        cid = c.string(value, "id", "conversation.id", required=True, allow_empty=False)
    elif isinstance(value, str):
        cid = c.string(body, "conversation", "conversation", allow_empty=False)
    else:
        raise c.wrong_type("conversation", "a string or an object with an 'id'", value)
    assert cid is not None
    return cid


def _check_conversation_use(fields: dict[str, Any]) -> None:
    if fields.get("previous_response_id") is not None:
        raise InvalidRequest("Mutually exclusive parameters: give either 'previous_response_id' or 'conversation', "
                             "not both.", param="conversation", code="mutually_exclusive_parameters")
    if not fields.get("store", True):
        raise InvalidRequest("'conversation' needs 'store' to be true: the response's items are stored in the "
                             "conversation.", param="store", code="invalid_value")


def metadata(body: dict) -> dict[str, str]:
    """A body's `metadata`, checked as for create (conversations take the same)."""
    return _metadata(body)


def _context_management(body: dict) -> int | None:
    entries = c.array(body, "context_management", "context_management") or []
    threshold = None
    for i, entry in enumerate(entries):
        param = f"context_management[{i}]"
        if not isinstance(entry, dict):
            raise c.wrong_type(param, "an object", entry)
        c.choice(entry, "type", f"{param}.type", ("compaction",), required=True)
        if threshold is not None:
            raise InvalidRequest("Invalid 'context_management': give at most one compaction entry.",
                                 param=param, code="invalid_value")
        threshold = c.integer(entry, "compact_threshold", f"{param}.compact_threshold", lo=1) or 0
    return threshold


def _instructions(body: dict) -> str | None:
    value = body.get("instructions")
    if value is None or isinstance(value, str):
        return value
    raise c.wrong_type("instructions", "a string", value)


def _text(body: dict, fields: dict[str, Any]) -> None:
    text = c.mapping(body, "text", "text") or {}
    fmt = c.mapping(text, "format", "text.format")
    if fmt is not None:
        kind = c.choice(fmt, "type", "text.format.type", ("text", "json_object", "json_schema"), required=True)
        if kind == "json_schema":
            name = c.string(fmt, "name", "text.format.name", required=True)
            if not _SCHEMA_NAME.match(name or ""):
                raise InvalidRequest("Invalid 'text.format.name': use 1-64 characters a-z, A-Z, 0-9, _ or -.",
                                     param="text.format.name", code="invalid_value")
            schema = c.mapping(fmt, "schema", "text.format.schema", required=True)
            # `description` is always echoed (null when not given): the Open Responses schema
            # requires the key.
            fields["text_format"] = {"type": "json_schema", "name": name, "schema": schema,
                               "strict": c.boolean(fmt, "strict", "text.format.strict", False),
                               "description": c.string(fmt, "description", "text.format.description")}
        else:
            fields["text_format"] = {"type": kind}
    verbosity = c.choice(text, "verbosity", "text.verbosity", VERBOSITY)
    # openai-python 3.x's responses.parse() sends verbosity at the top level.
    verbosity = verbosity or c.choice(body, "verbosity", "verbosity", VERBOSITY)
    fields["verbosity"] = verbosity or "medium"


def _reasoning(body: dict) -> dict | None:
    value = c.mapping(body, "reasoning", "reasoning")
    if value is None:
        return None
    effort = c.choice(value, "effort", "reasoning.effort", EFFORTS)
    summary = c.choice(value, "summary", "reasoning.summary", ("auto", "concise", "detailed"))
    summary = summary or c.choice(value, "generate_summary", "reasoning.generate_summary",
                                  ("auto", "concise", "detailed"))
    return {"effort": effort, "summary": summary}


def _metadata(body: dict) -> dict[str, str]:
    value = c.mapping(body, "metadata", "metadata")
    if value is None:
        return {}
    if len(value) > 16:
        raise InvalidRequest("Invalid 'metadata': too many properties. Expected at most 16 properties, "
                             f"but got {len(value)} instead.", param="metadata", code="object_above_max_properties")
    for key, v in value.items():
        if len(key) > 64:
            raise InvalidRequest(f"Invalid 'metadata': key '{key[:20]}...' is longer than 64 characters.",
                                 param="metadata", code="invalid_value")
        if not isinstance(v, str):
            raise c.wrong_type(f"metadata.{key}", "a string", v)
        if len(v) > 512:
            raise InvalidRequest(f"Invalid 'metadata.{key}': value is longer than 512 characters.",
                                 param=f"metadata.{key}", code="string_above_max_length")
    return value
