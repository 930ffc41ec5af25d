"""Any OpenAI-compatible Chat Completions engine: vLLM, SGLang, llama.cpp, Ollama, TGI, OpenAI, Azure."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import orjson

from .. import tracecontext
from ..chat import ChatOptions, messages_json, to_messages
from ..config import BackendConfig
from ..errors import APIError, InvalidRequest, NotFound, RateLimited, UpstreamError
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
from .http import HTTPError, Pool, Response
from .tokenize import EngineTokenizer

log = logging.getLogger("responsa.upstream")


class ChatCompletionsBackend:
    """Talks to `{base_url}/chat/completions` over pooled keep-alive connections."""

    def __init__(self, config: BackendConfig) -> None:
        assert config.base_url
        self.name = config.name
        self.config = config
        self.url = config.base_url.rstrip("/") + "/chat/completions"
        self.headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if config.api_key:
            if config.auth == "api-key":
                self.headers["api-key"] = config.api_key
            else:
                self.headers["Authorization"] = f"Bearer {config.api_key}"
        self.chat_options = ChatOptions(reasoning_input=config.reasoning_input or default_reasoning_input(self.url))
        self.max_tokens_field = str(config.options.get(
            "max_tokens_field", "max_completion_tokens" if "api.openai.com" in self.url else "max_tokens"))
        self.send_images = bool(config.options.get("images", True))
        # Hosted OpenAI / Azure OpenAI read `file` parts; most self-hosted engines take text only.
        hosted = "api.openai.com" in self.url or ".openai.azure.com" in self.url
        self.send_files = config.options.get("files", "pass" if hosted else "text") == "pass"
        self.pool = Pool(config.base_url, connect_timeout=10, read_timeout=config.timeout)
        # Hosted APIs have no tokenize endpoint: they are not asked (their counts are estimates).
        self.tokenizer = None if hosted or not config.options.get("tokenize", True) else \
            EngineTokenizer(config.base_url, self.headers)

    async def aclose(self) -> None:
        self.pool.close()
        if self.tokenizer is not None:
            self.tokenizer.close()

    async def count_tokens(self, req: TurnRequest) -> int | None:
        """The prompt tokens of this turn by the engine's own tokenizer, if it serves one."""
        if self.tokenizer is None:
            return None
        return await self.tokenizer.count(self.body(req))

    async def ready(self) -> bool:
        return True

    def accepts_images(self, model: str) -> bool:
        return self.send_images

    async def start(self) -> None:
        return None

    def accepts_files(self, model: str) -> bool:
        return self.send_files

    async def models(self) -> list[str]:
        try:
            async with asyncio.timeout(5):
                resp = await self.pool.request("GET", "/models", self.headers)
                try:
                    if resp.status != 200:
                        return []
                    data = orjson.loads(await resp.read())
                finally:
                    resp.close()
            models = data.get("data", [])
            return [m["id"] for m in models if isinstance(m, dict) and isinstance(m.get("id"), str)]
        except (HTTPError, TimeoutError, ValueError, AttributeError):
            return []

    def body(self, req: TurnRequest, *, messages: bool = True) -> dict[str, Any]:
        body: dict[str, Any] = {"model": req.model}
        if messages:
            body["messages"] = to_messages(req.items, req.options.instructions, self.chat_options, req.prefix)
        if req.tools:
            body["tools"] = list(req.tools)
            if req.tool_choice is not None:
                body["tool_choice"] = req.tool_choice
            if req.parallel_tool_calls is False:
                body["parallel_tool_calls"] = False
        if req.options.response_format is not None:
            body["response_format"] = req.options.response_format
        if req.options.temperature is not None:
            body["temperature"] = req.options.temperature
        if req.options.top_p is not None:
            body["top_p"] = req.options.top_p
        if req.max_output_tokens is not None:
            body[self.max_tokens_field] = req.max_output_tokens
        if req.options.reasoning_effort is not None:
            body["reasoning_effort"] = req.options.reasoning_effort
        if req.options.user is not None:
            body["user"] = req.options.user
        if req.options.stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        return body

    def payload(self, req: TurnRequest) -> bytes:
        """The request as JSON. With a cached history prefix, its messages are spliced in as the
        JSON made for them once (chat.messages_json), not serialised again."""
        if req.prefix is None:
            return orjson.dumps(self.body(req))
        head = orjson.dumps(self.body(req, messages=False))
        messages = messages_json(req.items, req.options.instructions, self.chat_options, req.prefix)
        return b"".join((head[:-1], b',"messages":', *messages, b"}"))

    async def turn(self, req: TurnRequest) -> AsyncIterator[TurnEvent]:
        payload = self.payload(req)
        try:
            # + the turn's `traceparent` when traces are on
            resp = await self.pool.request("POST", "/chat/completions", tracecontext.outgoing(self.headers), payload)
        except HTTPError as e:
            raise UpstreamError(f"The model engine did not answer: {e}", code="server_error") from e
        try:
            if resp.status != 200:
                raise upstream_error(resp.status, await resp.read(limit=64 * 1024))
            yield TurnStart()
            if req.options.stream:
                # Parsed by plain functions, read by one generator: with thousands of slow
                # streams every layer of async generator a token passes through costs CPU
                # (benchmarks/many_streams.py).
                stream = _ChunkStream()
                async for line in _sse_lines(resp):
                    for event in stream.line(line):
                        yield event
                    if stream.done:
                        break
                yield stream.end()
            else:
                for event in _complete(_parse_json(await resp.read())):
                    yield event
        except HTTPError as e:
            raise UpstreamError(f"The connection to the model engine failed: {e}", code="server_error") from e
        finally:
            # Unless the body was read to the end this drops the connection, which is how
            # engines learn to stop generating.
            resp.close()


class _ChunkStream:
    """The state of one streamed completion, fed its SSE lines one at a time."""

    __slots__ = ("done", "finish", "usage")

    def __init__(self) -> None:
        self.finish: str | None = None
        self.usage: Usage | None = None
        self.done = False  # `data: [DONE]` seen

    def line(self, line: bytes) -> list[TurnEvent]:
        if not line.startswith(b"data:"):
            if line.startswith(b"{") and b'"error"' in line:
                raise UpstreamError(f"The model engine failed: {_error_text(line)}")
            return []
        data = line[5:].strip()
        if data == b"[DONE]":
            self.done = True
            return []
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError as e:
            raise UpstreamError("The model engine sent a malformed stream chunk.") from e
        if not isinstance(chunk, dict):
            raise UpstreamError("The model engine sent a malformed stream chunk.")
        if chunk.get("error"):
            raise UpstreamError(f"The model engine failed mid-stream: {_error_text(data)}")
        if chunk.get("usage"):
            self.usage = parse_usage(chunk["usage"])
        events: list[TurnEvent] = []
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict):
                raise UpstreamError("The model engine sent a malformed stream chunk.")
            delta = choice.get("delta")
            if delta:
                events += _delta_events(delta)
            if choice.get("finish_reason"):
                self.finish = choice["finish_reason"]
        return events

    def end(self) -> TurnEnd:
        if self.finish is None and not self.done:
            raise UpstreamError("The model engine closed the stream before finishing.")
        return TurnEnd(self.finish or "stop", self.usage)


async def _sse_lines(resp: Response) -> AsyncIterator[bytes]:
    """Non-empty lines of an SSE body, read in whatever chunks arrive (not line by line)."""
    pending = b""
    while chunk := await resp.next_chunk():
        pending += chunk
        if b"\n" not in chunk:
            continue
        *lines, pending = pending.split(b"\n")
        for line in lines:
            line = line.strip()
            if line:
                yield line
    if pending.strip():
        yield pending.strip()


def _delta_events(delta: dict) -> list[TurnEvent]:
    out: list[TurnEvent] = []
    reasoning = delta.get("reasoning_content") or delta.get("reasoning")
    if isinstance(reasoning, str) and reasoning:
        out.append(ReasoningDelta(reasoning))
    details = delta.get("reasoning_details")
    if isinstance(details, list):
        out.extend(_reasoning_details(details, text_given=isinstance(reasoning, str) and bool(reasoning)))
    content = delta.get("content")
    if isinstance(content, str) and content:
        out.append(TextDelta(content))
    refusal = delta.get("refusal")
    if isinstance(refusal, str) and refusal:
        out.append(RefusalDelta(refusal))
    for i, call in enumerate(delta.get("tool_calls") or ()):
        if not isinstance(call, dict):
            raise UpstreamError("The model engine sent a malformed tool call.")
        fn = call.get("function") or {}
        out.append(ToolCallDelta(index=call.get("index", i), call_id=call.get("id"), name=fn.get("name"),
                                 arguments=fn.get("arguments") or ""))
    return out


def _reasoning_details(details: list, *, text_given: bool) -> list[TurnEvent]:
    """OpenRouter-style `reasoning_details`: summaries, and the text when no plain field carried it
    (engines that send both repeat the same text in each)."""
    out: list[TurnEvent] = []
    for detail in details:
        if not isinstance(detail, dict):
            continue
        kind = detail.get("type")
        if kind == "reasoning.summary" and isinstance(detail.get("summary"), str) and detail["summary"]:
            out.append(ReasoningSummaryDelta(detail["summary"]))
        elif kind == "reasoning.text" and isinstance(detail.get("text"), str) and detail["text"] \
                and not text_given:
            out.append(ReasoningDelta(detail["text"]))
    return out


def _complete(data: Any) -> list[TurnEvent]:
    try:
        choice = data["choices"][0]
        message = choice.get("message") or {}
    except (KeyError, IndexError, TypeError) as e:
        raise UpstreamError("The model engine returned a malformed completion.") from e
    events = _delta_events(message)
    return [*events, TurnEnd(choice.get("finish_reason") or "stop", parse_usage(data.get("usage")))]


def parse_usage(raw: Any) -> Usage | None:
    if not isinstance(raw, dict):
        return None
    prompt_details = raw.get("prompt_tokens_details") or {}
    completion_details = raw.get("completion_tokens_details") or {}
    return Usage(
        input_tokens=int(raw.get("prompt_tokens") or 0),
        output_tokens=int(raw.get("completion_tokens") or 0),
        cached_tokens=int(prompt_details.get("cached_tokens") or 0),
        reasoning_tokens=int(completion_details.get("reasoning_tokens") or 0),
    )


def _parse_json(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise UpstreamError("The model engine returned a response that is not JSON.") from e


def _error_text(raw: bytes) -> str:
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw.decode("utf-8", "replace")[:500]
    if isinstance(data, dict):
        err = data.get("error", data)
        if isinstance(err, dict):
            return str(err.get("message") or err.get("detail") or err)[:500]
        return str(err)[:500]
    return str(data)[:500]


# Public APIs known to refuse fields they do not define on a message (a 400 for the whole request).
_STRICT_HOSTS = ("api.openai.com", ".openai.azure.com", ".cognitiveservices.azure.com", ".services.ai.azure.com",
                 "api.deepseek.com", "api.groq.com")
# Host name endings that only resolve inside a network: an engine run there is self-hosted.
_PRIVATE_SUFFIXES = (".local", ".internal", ".lan", ".home.arpa", ".svc", ".cluster.local", ".localdomain")


def default_reasoning_input(url: str) -> str:
    """How earlier reasoning goes back when the backend's config does not say.

    A self-hosted engine (a loopback or private address, a single-label or in-network host
    name: vLLM, SGLang, llama.cpp) gets it back as `reasoning_content`: their chat templates
    render it inside a tool-calling turn, so the model keeps its train of thought and the
    engine's prefix cache stays valid (see docs/reasoning.md for the measurement); engines
    whose templates do not use it ignore the field. A public API gets none, since some
    (OpenAI, Azure OpenAI, DeepSeek, Groq) refuse the whole request over a field they do not
    define."""
    host = (urlsplit(url).hostname or "").lower()
    if any(host == h or (h.startswith(".") and host.endswith(h)) for h in _STRICT_HOSTS):
        return "drop"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        private = "." not in host or host.endswith(_PRIVATE_SUFFIXES) or host == "localhost"
    else:
        private = address.is_private or address.is_loopback or address.is_link_local
    return "reasoning_content" if private else "drop"


def upstream_error(status: int, raw: bytes) -> APIError:
    """An engine's HTTP error as the error this server reports."""
    text = _error_text(raw)
    low = text.lower()
    if status in (400, 413, 422):
        if ("context" in low and ("length" in low or "window" in low)) or "too many tokens" in low:
            return InvalidRequest(f"The input exceeds the model's context window: {text}", param="input",
                                  code="context_length_exceeded")
        return InvalidRequest(f"The model engine rejected the request: {text}", code="invalid_request")
    if status == 404:
        return NotFound(f"The model engine does not know this model: {text}", param="model",
                        code="model_not_found")
    if status == 429:
        return RateLimited(f"The model engine is rate limiting: {text}")
    if status in (401, 403):
        return UpstreamError(f"The model engine rejected this server's credentials ({status}).")
    return UpstreamError(f"The model engine failed with HTTP {status}: {text}")
