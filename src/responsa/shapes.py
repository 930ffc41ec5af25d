"""Typed shapes of what the API emits, so that a misspelt field is a type error.

TypedDicts cost nothing at run time (the objects stay plain dicts, serialised by orjson as
they are). Output items and stream events vary by type and are checked against the SDK's
models and the Open Responses schema in the tests; `Item` and `Event` name them here.
"""

from __future__ import annotations

from typing import Any, Literal, NotRequired, TypedDict

Item = dict[str, Any]  # one input or output item (`type` decides its fields)
Event = dict[str, Any]  # one stream event (`type`, `sequence_number`, then its own fields)

Status = Literal["queued", "in_progress", "completed", "incomplete", "failed", "cancelled"]


class ResponseError(TypedDict):
    code: str
    message: str


class IncompleteDetails(TypedDict):
    reason: str


class ResponseEcho(TypedDict):
    """The create parameters a Response repeats, with effective defaults filled in."""

    instructions: str | None
    metadata: dict[str, str]
    temperature: float
    top_p: float
    presence_penalty: float
    frequency_penalty: float
    top_logprobs: int
    tool_choice: str | dict[str, Any]
    tools: list[dict[str, Any]]
    parallel_tool_calls: bool
    max_output_tokens: int | None
    max_tool_calls: int | None
    previous_response_id: str | None
    reasoning: dict[str, Any]
    text: dict[str, Any]
    truncation: str
    store: bool
    background: bool
    service_tier: str
    user: str | None
    safety_identifier: str | None
    prompt_cache_key: str | None
    prompt_cache_retention: str | None


class ResponseObject(ResponseEcho):
    """The Response object (`object: "response"`) as this server builds it."""

    id: str
    object: Literal["response"]
    created_at: int
    status: Status
    completed_at: int | None
    error: ResponseError | None
    incomplete_details: IncompleteDetails | None
    model: str
    output: list[Item]
    usage: dict[str, Any] | None
    conversation: NotRequired[dict[str, str]]  # {"id": ...} of the conversation it runs on
