"""How many tokens a turn sends the engine: its own tokenizer where it has one, else an estimate.

A backend may offer `count_tokens(TurnRequest) -> int | None` (the embedded engine renders
the prompt and tokenizes it; a Chat Completions engine is asked at its tokenize endpoint,
see backends/tokenize.py). Otherwise, or when it answers None, the count is estimated from
what would be sent, the Chat Completions messages and function definitions:

- text: its UTF-8 bytes / 4, rounded up (about 4 characters a token for English and code,
  about one token a character for CJK scripts);
- each message: 4 more, for the role and the separators a chat template adds;
- each image: 85 tokens at `detail: low`, else 765 (what a 1024x1024 image costs the hosted
  models); each file part: its text as given, or 256 if it is a reference;
- tool calls: their name and arguments as text; function definitions: their JSON as text;
- 3 for the assistant turn the prompt opens.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import orjson

from .backends import Backend, TurnRequest
from .chat import to_messages
from .loop import conversation

if TYPE_CHECKING:
    from .loop import RunSpec

BYTES_PER_TOKEN = 4
MESSAGE_TOKENS = 4
REPLY_TOKENS = 3
IMAGE_TOKENS = {"low": 85}
IMAGE_DEFAULT_TOKENS = 765
FILE_REFERENCE_TOKENS = 256


def text_tokens(text: str) -> int:
    return -(-len(text.encode("utf-8")) // BYTES_PER_TOKEN)


def _content_tokens(content: Any) -> int:
    if content is None:
        return 0
    if isinstance(content, str):
        return text_tokens(content)
    total = 0
    for part in content:
        kind = part.get("type")
        if kind == "text":
            total += text_tokens(part.get("text") or "")
        elif kind == "image_url":
            total += IMAGE_TOKENS.get((part.get("image_url") or {}).get("detail", "auto"), IMAGE_DEFAULT_TOKENS)
        elif kind == "file":
            total += FILE_REFERENCE_TOKENS
    return total


def estimate(request: TurnRequest) -> int:
    """The documented estimate of a turn's prompt tokens (see the module docstring)."""
    total = REPLY_TOKENS
    for m in to_messages(request.items, request.options.instructions):
        total += MESSAGE_TOKENS + _content_tokens(m.get("content"))
        for call in m.get("tool_calls") or ():
            fn = call["function"]
            total += text_tokens(fn["name"]) + text_tokens(fn.get("arguments") or "")
    if request.tools:
        total += text_tokens(orjson.dumps(list(request.tools)).decode())
    return total


def turn_request(spec: RunSpec, history: Sequence[dict], output: Sequence[dict] = ()) -> TurnRequest:
    """The next engine turn of a run, as far as its size goes: conversation, instructions and
    every function the model may be offered (none when `tool_choice` is `none`)."""
    functions = spec.toolset.functions() if spec.tool_choice != "none" else []
    return TurnRequest(model=spec.model, items=conversation(history, output, spec.tool_ctx.model_notes),
                       options=dataclasses.replace(spec.options, stream=False), tools=functions)


async def count(backend: Backend, request: TurnRequest) -> int:
    """A turn's prompt tokens: the backend's own count, or the estimate."""
    counter = getattr(backend, "count_tokens", None)
    if counter is not None:
        n = await counter(request)
        if n is not None:
            return int(n)
    return estimate(request)
