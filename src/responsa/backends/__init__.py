"""The model interface: one turn in, a stream of typed deltas out.

A backend takes the conversation as Responses items (it converts them with `chat.py` in
the form its engine takes) and yields `TurnEvent`s. Streaming and non-streaming share this
path: a backend may ask its engine for one complete answer and yield it as one delta.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class ModelOptions:
    """What every engine turn of one response is asked with: taken from the create request once,
    then passed on by reference (the run, each turn)."""

    instructions: str | None = None
    response_format: dict | None = None  # Chat Completions `response_format`
    temperature: float | None = None
    top_p: float | None = None
    reasoning_effort: str | None = None
    user: str | None = None
    stream: bool = True  # False: the client waits for the whole answer anyway
    truncation: str = "disabled"


NO_OPTIONS = ModelOptions()


@dataclass(frozen=True, slots=True)
class TurnRequest:
    """Everything a backend needs for one model turn."""

    model: str  # the engine's own name for the model
    items: Sequence[dict]  # the whole conversation, Responses items
    options: ModelOptions = NO_OPTIONS
    tools: Sequence[dict] = ()  # Chat Completions function definitions
    tool_choice: str | dict | None = None
    parallel_tool_calls: bool | None = None
    max_output_tokens: int | None = None  # what is left of the response's budget
    # (key, n): items[:n] is an earlier chain that never changes; its rendering may be reused
    prefix: tuple[Any, int] | None = None


@dataclass(frozen=True, slots=True)
class TurnStart:
    """The engine accepted the turn (its answer started, or the prompt fits and generation is
    about to). Until a backend says so, its errors are the request's: a streamed request then
    still gets an HTTP error instead of a stream that fails."""


@dataclass(frozen=True, slots=True)
class TextDelta:
    text: str


@dataclass(frozen=True, slots=True)
class RefusalDelta:
    text: str


@dataclass(frozen=True, slots=True)
class ReasoningDelta:
    text: str


@dataclass(frozen=True, slots=True)
class ReasoningSummaryDelta:
    """Reasoning summary text, only where the engine itself gives one."""

    text: str


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    """Part of a tool call. `index` tells parallel calls apart; `call_id`/`name` come first."""

    index: int
    call_id: str | None = None
    name: str | None = None
    arguments: str = ""


@dataclass(frozen=True, slots=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0


@dataclass(frozen=True, slots=True)
class TurnEnd:
    """The turn's last event. `finish_reason` as in Chat Completions: stop, length,
    tool_calls, content_filter."""

    finish_reason: str
    usage: Usage | None = None


TurnEvent = TurnStart | TextDelta | RefusalDelta | ReasoningDelta | ReasoningSummaryDelta | ToolCallDelta | TurnEnd


class Backend(Protocol):
    """A model engine."""

    name: str

    def turn(self, request: TurnRequest) -> AsyncIterator[TurnEvent]:
        """Run one turn. Raises `errors.APIError` subclasses; cancellation stops the engine."""
        ...

    async def models(self) -> list[str]:
        """Model names this engine serves, if it can tell."""
        ...

    def accepts_images(self, model: str) -> bool:
        """Whether image parts may be sent for this model (False gets a clear 400)."""
        ...

    def accepts_files(self, model: str) -> bool:
        """Whether `input_file` parts may be sent as Chat Completions `file` parts (False: the
        text of PDFs and text files is sent instead, see media.py)."""
        ...

    async def start(self) -> None:
        """Work at server start (the embedded engine loads its model in the background)."""
        ...

    async def ready(self) -> bool:
        """Whether the backend can serve now (the health endpoint reports it)."""
        ...

    async def aclose(self) -> None: ...


def merge_usage(parts: Sequence[Usage | None]) -> Usage:
    """Usage summed over every engine turn of a response."""
    total = Usage()
    for u in parts:
        if u is not None:
            total = Usage(total.input_tokens + u.input_tokens, total.output_tokens + u.output_tokens,
                          total.cached_tokens + u.cached_tokens, total.reasoning_tokens + u.reasoning_tokens)
    return total


def usage_json(u: Usage) -> dict:
    return {
        "input_tokens": u.input_tokens,
        "input_tokens_details": {"cached_tokens": u.cached_tokens, "cache_write_tokens": 0},
        "output_tokens": u.output_tokens,
        "output_tokens_details": {"reasoning_tokens": u.reasoning_tokens},
        "total_tokens": u.input_tokens + u.output_tokens,
    }
