"""A scripted model, for deterministic tests and demos.

A `Script` answers each turn with the next queued `turn` (text, reasoning, tool calls,
errors, delays...) or, when none is queued, echoes the last user message. It is served two
ways: as a `Backend` in process (`kind = "scripted"` in the config file), and as an
OpenAI-compatible Chat Completions HTTP server (`scripted_upstream_app`, or
`python -m responsa.backends.scripted --port 9000`) so that tests exercise the real Chat
Completions backend against an engine whose every answer they control.

A turn is a dict:
    content, reasoning, refusal: text (streamed in `chunks` pieces, default one per word)
    reasoning_field: the engine's name for reasoning, "reasoning_content" (default) or "reasoning"
    summary: a reasoning summary, sent as OpenRouter-style `reasoning_details`
    tool_calls: [{"name", "arguments" (str or dict), "id"?}]
    finish_reason: default "tool_calls" with tool calls, else "stop"
    usage: {"prompt_tokens", "completion_tokens", "cached_tokens", "reasoning_tokens"}
    delay: seconds to wait before each chunk; first_delay: before the first one
    status, error: answer with this HTTP status and error message instead
    garbage: send an unparseable chunk mid-stream; drop: close the stream without finishing
    match: only use this turn when the last user message contains this text
    gate: a name; the answer (headers sent, no chunk yet) waits until `Script.release(name)`
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import re
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

from ..chat import text_of, to_messages
from ..config import BackendConfig
from ..errors import UpstreamError
from . import (
    ReasoningDelta,
    ReasoningSummaryDelta,
    RefusalDelta,
    TextDelta,
    ToolCallDelta,
    TurnEnd,
    TurnEvent,
    TurnRequest,
    TurnStart,
    Usage,
)


class Script:
    """Queued turns plus a record of every request seen."""

    def __init__(self) -> None:
        self.turns: collections.deque[dict] = collections.deque()
        self.requests: list[dict] = []
        self.traceparents: list[str | None] = []  # each request's `traceparent` header (None: none sent)
        # Streams the client (Responsa) abandoned before their end: how engines see a cancel.
        self.aborted = 0
        self.lock = threading.Lock()
        self.gates: dict[str, threading.Event] = {}

    def add(self, *turns: dict) -> None:
        with self.lock:
            self.turns.extend(turns)

    def reset(self) -> None:
        with self.lock:
            self.turns.clear()
            self.requests.clear()
            self.traceparents.clear()
            self.aborted = 0
            for gate in self.gates.values():
                gate.set()  # nothing stays parked on a gate a finished test left closed
            self.gates.clear()

    def gate(self, name: str) -> threading.Event:
        with self.lock:
            return self.gates.setdefault(name, threading.Event())

    def release(self, name: str) -> None:
        """Let the turns waiting on gate `name` answer."""
        self.gate(name).set()

    async def pass_gate(self, turn: dict) -> None:
        if turn.get("gate"):
            await asyncio.to_thread(self.gate(turn["gate"]).wait, 60)

    def next_turn(self, body: dict) -> dict:
        with self.lock:
            self.requests.append(body)
            last_user = _last_user_text(body.get("messages") or [])
            for turn in list(self.turns):
                if "match" not in turn or turn["match"] in last_user:
                    self.turns.remove(turn)
                    return turn
        return {"content": f"Echo: {last_user}" if last_user else "Hello!"}


def _last_user_text(messages: list[dict]) -> str:
    for msg in reversed(messages):
        if msg.get("role") in ("user", "tool"):
            content = msg.get("content")
            if isinstance(content, list):
                return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
            return str(content or "")
    return ""


def _pieces(text: str, chunks: int | None) -> list[str]:
    if not text:
        return []
    if chunks:
        size = max(1, -(-len(text) // chunks))
        return [text[i:i + size] for i in range(0, len(text), size)]
    return re.findall(r"\s*\S+\s*", text) or [text]


def _usage(turn: dict, body: dict) -> dict:
    given = turn.get("usage") or {}
    words_in = sum(len(str(m.get("content") or "").split()) for m in body.get("messages") or [])
    words_out = len(str(turn.get("content") or "").split()) + len(str(turn.get("reasoning") or "").split())
    usage = {"prompt_tokens": given.get("prompt_tokens", words_in),
             "completion_tokens": given.get("completion_tokens", words_out)}
    usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
    usage["prompt_tokens_details"] = {"cached_tokens": given.get("cached_tokens", 0)}
    usage["completion_tokens_details"] = {"reasoning_tokens": given.get("reasoning_tokens", 0)}
    return usage


def _arguments(call: dict) -> str:
    args = call.get("arguments", "{}")
    return args if isinstance(args, str) else json.dumps(args)


def turn_chunks(turn: dict, body: dict) -> list[dict]:
    """The Chat Completions stream chunks (`choices[0].delta` + finish + usage) of a turn."""
    deltas: list[dict] = [{"role": "assistant", "content": ""}]
    for piece in _pieces(turn.get("summary") or "", turn.get("chunks")):
        deltas.append({"reasoning_details": [{"type": "reasoning.summary", "summary": piece, "index": 0}]})
    for piece in _pieces(turn.get("reasoning") or "", turn.get("chunks")):
        deltas.append({turn.get("reasoning_field") or "reasoning_content": piece})
    for piece in _pieces(turn.get("content") or "", turn.get("chunks")):
        deltas.append({"content": piece})
    for piece in _pieces(turn.get("refusal") or "", turn.get("chunks")):
        deltas.append({"refusal": piece})
    for i, call in enumerate(turn.get("tool_calls") or ()):
        args = _arguments(call)
        half = len(args) // 2
        deltas.append({"tool_calls": [{"index": i, "id": call.get("id") or f"call_{i}_{int(time.time()*1e6)}",
                                       "type": "function", "function": {"name": call["name"],
                                                                        "arguments": args[:half]}}]})
        deltas.append({"tool_calls": [{"index": i, "function": {"arguments": args[half:]}}]})
    finish = turn.get("finish_reason") or ("tool_calls" if turn.get("tool_calls") else "stop")
    chunks: list[dict[str, Any]] = [{"choices": [{"index": 0, "delta": d, "finish_reason": None}]} for d in deltas]
    chunks.append({"choices": [{"index": 0, "delta": {}, "finish_reason": finish}]})
    chunks.append({"choices": [], "usage": _usage(turn, body)})
    return chunks


def turn_completion(turn: dict, body: dict) -> dict:
    message: dict[str, Any] = {"role": "assistant", "content": turn.get("content")}
    if turn.get("reasoning"):
        message[turn.get("reasoning_field") or "reasoning_content"] = turn["reasoning"]
    if turn.get("summary"):
        message["reasoning_details"] = [{"type": "reasoning.summary", "summary": turn["summary"], "index": 0}]
    if turn.get("refusal"):
        message["refusal"] = turn["refusal"]
    if turn.get("tool_calls"):
        message["tool_calls"] = [{"id": c.get("id") or f"call_{i}_{int(time.time()*1e6)}", "type": "function",
                                  "function": {"name": c["name"], "arguments": _arguments(c)}}
                                 for i, c in enumerate(turn["tool_calls"])]
    finish = turn.get("finish_reason") or ("tool_calls" if turn.get("tool_calls") else "stop")
    return {"id": "chatcmpl-scripted", "object": "chat.completion", "created": int(time.time()),
            "model": body.get("model"), "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": _usage(turn, body)}


# ---- in-process backend ----------------------------------------------------------------------

class ScriptedBackend:
    """The script as a Backend (no HTTP): `kind = "scripted"` in the config file."""

    def __init__(self, config: BackendConfig | None = None, script: Script | None = None) -> None:
        self.name = config.name if config else "scripted"
        self.script = script or Script()

    async def turn(self, req: TurnRequest) -> AsyncIterator[TurnEvent]:
        body = {"model": req.model, "messages": to_messages(req.items, req.options.instructions),
                "tools": list(req.tools)}
        turn = self.script.next_turn(body)
        if turn.get("status"):
            raise UpstreamError(turn.get("error", "scripted failure"))
        yield TurnStart()
        await self.script.pass_gate(turn)
        for chunk in turn_chunks(turn, body):
            if turn.get("delay"):
                await asyncio.sleep(turn["delay"])
            for choice in chunk["choices"]:
                delta = choice["delta"]
                for detail in delta.get("reasoning_details") or ():
                    yield ReasoningSummaryDelta(detail["summary"])
                if delta.get("reasoning_content") or delta.get("reasoning"):
                    yield ReasoningDelta(delta.get("reasoning_content") or delta["reasoning"])
                if delta.get("content"):
                    yield TextDelta(delta["content"])
                if delta.get("refusal"):
                    yield RefusalDelta(delta["refusal"])
                for call in delta.get("tool_calls") or ():
                    yield ToolCallDelta(call["index"], call.get("id"), call.get("function", {}).get("name"),
                                        call.get("function", {}).get("arguments", ""))
                if choice.get("finish_reason"):
                    u = _usage(turn, body)
                    yield TurnEnd(choice["finish_reason"], Usage(
                        u["prompt_tokens"], u["completion_tokens"],
                        u["prompt_tokens_details"]["cached_tokens"],
                        u["completion_tokens_details"]["reasoning_tokens"]))

    async def models(self) -> list[str]:
        return ["scripted"]

    def accepts_images(self, model: str) -> bool:
        return True

    async def start(self) -> None:
        return None

    def accepts_files(self, model: str) -> bool:
        return False

    async def ready(self) -> bool:
        return True

    async def aclose(self) -> None:
        return None


# ---- as an HTTP Chat Completions engine ----------------------------------------------------------

def scripted_upstream_app(script: Script) -> Any:
    """A Starlette app that serves the script as an OpenAI-compatible Chat Completions API."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response, StreamingResponse
    from starlette.routing import Route

    async def completions(request: Request) -> Response:
        body = await request.json()
        script.traceparents.append(request.headers.get("traceparent"))
        turn = script.next_turn(body)
        if turn.get("first_delay"):
            await asyncio.sleep(turn["first_delay"])
        if turn.get("hang"):
            await asyncio.sleep(3600)
        if turn.get("status"):
            return JSONResponse({"error": {"message": turn.get("error", "scripted failure"), "type": "error"}},
                                status_code=turn["status"])
        if not body.get("stream"):
            if turn.get("garbage"):
                return Response(b"<html>not json</html>", media_type="text/html")
            return JSONResponse(turn_completion(turn, body))

        async def events() -> AsyncIterator[bytes]:
            chunks = turn_chunks(turn, body)
            finished = False
            try:
                await script.pass_gate(turn)
                for n, chunk in enumerate(chunks):
                    if turn.get("delay"):
                        await asyncio.sleep(turn["delay"])
                    if turn.get("garbage") and n == len(chunks) // 2:
                        yield b"data: {this is not json\n\n"
                        finished = True
                        return
                    if turn.get("drop") and n == len(chunks) // 2:
                        finished = True
                        return
                    chunk.update({"id": "chatcmpl-scripted", "object": "chat.completion.chunk",
                                  "created": int(time.time()), "model": body.get("model")})
                    yield b"data: " + json.dumps(chunk).encode() + b"\n\n"
                yield b"data: [DONE]\n\n"
                finished = True
            finally:
                if not finished:
                    script.aborted += 1

        return StreamingResponse(events(), media_type="text/event-stream")

    async def models(request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [{"id": "scripted-model", "object": "model",
                                                         "created": 0, "owned_by": "test"}]})

    return Starlette(routes=[
        Route("/v1/chat/completions", completions, methods=["POST"]),
        Route("/chat/completions", completions, methods=["POST"]),
        Route("/v1/models", models, methods=["GET"]),
    ])


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description="Serve a scripted Chat Completions engine (echoes by default).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    args = parser.parse_args()
    uvicorn.run(scripted_upstream_app(Script()), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()

__all__ = ["Script", "ScriptedBackend", "scripted_upstream_app", "text_of"]
