"""Any OpenAI-compatible Chat Completions engine: vLLM, SGLang, llama.cpp, Ollama, TGI, OpenAI, Azure."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson

from ..chat import ChatOptions, to_messages
from ..config import BackendConfig
from ..errors import APIError, InvalidRequest, NotFound, RateLimited, UpstreamError
from . import (
    ReasoningDelta,
    RefusalDelta,
    TextDelta,
    ToolCallDelta,
    TurnEnd,
    TurnEvent,
    TurnRequest,
    Usage,
)

log = logging.getLogger("responsa.upstream")


class ChatCompletionsBackend:
    """Talks to `{base_url}/chat/completions` over pooled keep-alive connections."""

    def __init__(self, config: BackendConfig) -> None:
        assert config.base_url
        self.name = config.name
        self.config = config
        self.url = config.base_url.rstrip("/") + "/chat/completions"
        self.models_url = config.base_url.rstrip("/") + "/models"
        self.headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if config.api_key:
            if config.auth == "api-key":
                self.headers["api-key"] = config.api_key
            else:
                self.headers["Authorization"] = f"Bearer {config.api_key}"
        self.chat_options = ChatOptions(reasoning_input=config.reasoning_input)
        self.max_tokens_field = str(config.options.get(
            "max_tokens_field", "max_completion_tokens" if "api.openai.com" in self.url else "max_tokens"))
        self.send_images = bool(config.options.get("images", True))
        # Hosted OpenAI / Azure OpenAI read `file` parts; most self-hosted engines take text only.
        hosted = "api.openai.com" in self.url or ".openai.azure.com" in self.url
        self.send_files = config.options.get("files", "pass" if hosted else "text") == "pass"
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=60, ttl_dns_cache=300),
                timeout=aiohttp.ClientTimeout(total=None, connect=10, sock_read=self.config.timeout),
                json_serialize=lambda o: orjson.dumps(o).decode(),
                skip_auto_headers=("User-Agent",),
            )
        return self._session

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def ready(self) -> bool:
        return True

    def accepts_images(self, model: str) -> bool:
        return self.send_images

    def accepts_files(self, model: str) -> bool:
        return self.send_files

    async def models(self) -> list[str]:
        try:
            async with self._client().get(self.models_url, headers=self.headers,
                                          timeout=aiohttp.ClientTimeout(total=5)) as resp:
                if resp.status != 200:
                    return []
                data = orjson.loads(await resp.read())
            return [m["id"] for m in data.get("data", []) if isinstance(m, dict) and isinstance(m.get("id"), str)]
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError, AttributeError):
            return []

    def body(self, req: TurnRequest) -> dict[str, Any]:
        body: dict[str, Any] = {"model": req.model,
                                "messages": to_messages(req.items, req.instructions, self.chat_options)}
        if req.tools:
            body["tools"] = list(req.tools)
            if req.tool_choice is not None:
                body["tool_choice"] = req.tool_choice
            if req.parallel_tool_calls is False:
                body["parallel_tool_calls"] = False
        if req.response_format is not None:
            body["response_format"] = req.response_format
        if req.temperature is not None:
            body["temperature"] = req.temperature
        if req.top_p is not None:
            body["top_p"] = req.top_p
        if req.max_output_tokens is not None:
            body[self.max_tokens_field] = req.max_output_tokens
        if req.reasoning_effort is not None:
            body["reasoning_effort"] = req.reasoning_effort
        if req.user is not None:
            body["user"] = req.user
        if req.stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        return body

    async def turn(self, req: TurnRequest) -> AsyncIterator[TurnEvent]:
        payload = orjson.dumps(self.body(req))
        try:
            resp = await self._client().post(self.url, data=payload, headers=self.headers)
        except asyncio.TimeoutError as e:
            raise UpstreamError("The model engine did not answer in time.", code="server_error") from e
        except aiohttp.ClientError as e:
            raise UpstreamError(f"Cannot reach the model engine: {e}", code="server_error") from e
        try:
            if resp.status != 200:
                raise upstream_error(resp.status, await _read_limited(resp))
            if req.stream:
                async for event in self._stream(resp):
                    yield event
            else:
                for event in _complete(await _read_json(resp)):
                    yield event
        except asyncio.TimeoutError as e:
            raise UpstreamError("The model engine stopped sending (read timeout).", code="server_error") from e
        except aiohttp.ClientError as e:
            raise UpstreamError(f"The connection to the model engine failed: {e}", code="server_error") from e
        finally:
            # Closing mid-stream drops the connection, which is how engines learn to stop.
            if not resp.closed and not resp.content.at_eof():
                resp.close()
            else:
                resp.release()

    async def _stream(self, resp: aiohttp.ClientResponse) -> AsyncIterator[TurnEvent]:
        finish: str | None = None
        usage: Usage | None = None
        async for raw in resp.content:
            line = raw.strip()
            if not line.startswith(b"data:"):
                if line.startswith(b"{") and b'"error"' in line:
                    raise UpstreamError(f"The model engine failed: {_error_text(line)}")
                continue
            data = line[5:].strip()
            if data == b"[DONE]":
                break
            try:
                chunk = orjson.loads(data)
            except orjson.JSONDecodeError as e:
                raise UpstreamError("The model engine sent a malformed stream chunk.") from e
            if not isinstance(chunk, dict):
                raise UpstreamError("The model engine sent a malformed stream chunk.")
            if chunk.get("error"):
                raise UpstreamError(f"The model engine failed mid-stream: {_error_text(data)}")
            if chunk.get("usage"):
                usage = parse_usage(chunk["usage"])
            for choice in chunk.get("choices") or ():
                if not isinstance(choice, dict):
                    raise UpstreamError("The model engine sent a malformed stream chunk.")
                delta = choice.get("delta") or {}
                for event in _delta_events(delta):
                    yield event
                if choice.get("finish_reason"):
                    finish = choice["finish_reason"]
        else:
            if finish is None:
                raise UpstreamError("The model engine closed the stream before finishing.")
        yield TurnEnd(finish or "stop", usage)


def _delta_events(delta: dict) -> list[TurnEvent]:
    out: list[TurnEvent] = []
    reasoning = delta.get("reasoning_content") or delta.get("reasoning")
    if isinstance(reasoning, str) and reasoning:
        out.append(ReasoningDelta(reasoning))
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


async def _read_limited(resp: aiohttp.ClientResponse, limit: int = 64 * 1024) -> bytes:
    try:
        return (await resp.content.read(limit)) or b""
    except (aiohttp.ClientError, asyncio.TimeoutError):
        return b""


async def _read_json(resp: aiohttp.ClientResponse) -> Any:
    raw = await resp.read()
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


def upstream_error(status: int, raw: bytes) -> APIError:
    """An engine's HTTP error as the error this server reports."""
    text = _error_text(raw)
    low = text.lower()
    if status in (400, 413, 422):
        if "context" in low and ("length" in low or "window" in low) or "too many tokens" in low:
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
