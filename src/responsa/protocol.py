"""The `POST /responses` request: parsed, checked, and the Response object's echo of it."""

from __future__ import annotations

import re
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


@dataclass
class CreateRequest:
    """A checked create request. `input` holds normalised items (item references unresolved)."""

    model: str
    input: list[dict]
    instructions: str | None = None
    previous_response_id: str | None = None
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


def parse_create(body: Any) -> CreateRequest:
    """Check a decoded JSON body. Unknown top-level keys are tolerated (clients send their own).

    Only the keys the client sent are looked at (the request's defaults cover the rest): a
    typical request sends three or four of the thirty-odd parameters."""
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.", code="invalid_type")
    model = c.string(body, "model", "model", required=True, allow_empty=False)
    assert model is not None
    req = CreateRequest(model=model, input=normalize_input(body.get("input")), raw=body)
    for key in body:
        check = _FIELDS.get(key)
        if check is not None and body[key] is not None:
            check(body, req)
    if "tool_choice" in body:
        req.tool_choice = check_tool_choice(body["tool_choice"], req.tools)
    if "text" in body or "verbosity" in body:
        _text(body, req)
    return req


def _unsupported(key: str) -> Any:
    def check(body: dict, req: CreateRequest) -> None:
        raise InvalidRequest(f"'{key}' is not supported by this server yet (see docs/unsupported.md).",
                             param=key, code="unsupported_parameter")

    return check


def _include(body: dict, req: CreateRequest) -> None:
    include = c.string_list(body, "include", "include") or []
    for i, value in enumerate(include):
        if value not in INCLUDABLE:
            raise c.bad_value(f"include[{i}]", value, INCLUDABLE)
    req.include = tuple(dict.fromkeys(include))


def _service_tier(body: dict, req: CreateRequest) -> None:
    tier = c.choice(body, "service_tier", "service_tier", SERVICE_TIERS)
    req.service_tier = "default" if tier in (None, "auto") else tier


# Each create parameter, and the check that reads it into the request.
_FIELDS: dict[str, Any] = {
    "prompt": _unsupported("prompt"),
    "conversation": _unsupported("conversation"),
    "instructions": lambda b, r: setattr(r, "instructions", _instructions(b)),
    "previous_response_id": lambda b, r: setattr(r, "previous_response_id", c.string(
        b, "previous_response_id", "previous_response_id", allow_empty=False)),
    "store": lambda b, r: setattr(r, "store", c.boolean(b, "store", "store", True)),
    "background": lambda b, r: setattr(r, "background", c.boolean(b, "background", "background", False)),
    "stream": lambda b, r: setattr(r, "stream", c.boolean(b, "stream", "stream", False)),
    "stream_options": lambda b, r: setattr(r, "stream_options", c.mapping(b, "stream_options", "stream_options")),
    "include": _include,
    "tools": lambda b, r: setattr(r, "tools", check_tools(c.array(b, "tools", "tools") or [])),
    "parallel_tool_calls": lambda b, r: setattr(r, "parallel_tool_calls", c.boolean(
        b, "parallel_tool_calls", "parallel_tool_calls", True)),
    "max_tool_calls": lambda b, r: setattr(r, "max_tool_calls", c.integer(b, "max_tool_calls", "max_tool_calls",
                                                                          lo=1)),
    "max_output_tokens": lambda b, r: setattr(r, "max_output_tokens", c.integer(
        b, "max_output_tokens", "max_output_tokens", lo=16)),
    "temperature": lambda b, r: setattr(r, "temperature", c.number(b, "temperature", "temperature", 0, 2)),
    "top_p": lambda b, r: setattr(r, "top_p", c.number(b, "top_p", "top_p", 0, 1)),
    "top_logprobs": lambda b, r: setattr(r, "top_logprobs", c.integer(b, "top_logprobs", "top_logprobs", lo=0,
                                                                      hi=20)),
    "presence_penalty": lambda b, r: setattr(r, "presence_penalty", c.number(
        b, "presence_penalty", "presence_penalty", -2, 2) or 0.0),
    "frequency_penalty": lambda b, r: setattr(r, "frequency_penalty", c.number(
        b, "frequency_penalty", "frequency_penalty", -2, 2) or 0.0),
    "reasoning": lambda b, r: setattr(r, "reasoning", _reasoning(b)),
    "truncation": lambda b, r: setattr(r, "truncation", c.choice(b, "truncation", "truncation",
                                                                 ("auto", "disabled")) or "disabled"),
    "metadata": lambda b, r: setattr(r, "metadata", _metadata(b)),
    "user": lambda b, r: setattr(r, "user", c.string(b, "user", "user", max_len=256)),
    "safety_identifier": lambda b, r: setattr(r, "safety_identifier", c.string(
        b, "safety_identifier", "safety_identifier", max_len=128)),
    "prompt_cache_key": lambda b, r: setattr(r, "prompt_cache_key", c.string(b, "prompt_cache_key",
                                                                             "prompt_cache_key")),
    "prompt_cache_retention": lambda b, r: setattr(r, "prompt_cache_retention", c.choice(
        b, "prompt_cache_retention", "prompt_cache_retention", ("in_memory", "24h"))),
    "service_tier": _service_tier,
    "context_management": lambda b, r: setattr(r, "compact_threshold", _context_management(b)),
}


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


def _text(body: dict, req: CreateRequest) -> None:
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
            req.text_format = {"type": "json_schema", "name": name, "schema": schema,
                               "strict": c.boolean(fmt, "strict", "text.format.strict", False),
                               "description": c.string(fmt, "description", "text.format.description")}
        else:
            req.text_format = {"type": kind}
    verbosity = c.choice(text, "verbosity", "text.verbosity", VERBOSITY)
    # openai-python 3.x's responses.parse() sends verbosity at the top level.
    verbosity = verbosity or c.choice(body, "verbosity", "verbosity", VERBOSITY)
    req.verbosity = verbosity or "medium"


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
