"""An engine's own token counting, found by asking the endpoints engines are known to serve.

Engines expose their tokenizer in different places, none of them under the OpenAI `/v1`
prefix:

- vLLM (and engines copying its API): `POST /tokenize` with the chat `messages` and `tools`,
  answering `{"count": N}`: the chat template applied, exact.
- llama.cpp's `llama-server`: `POST /apply-template` renders the messages with the model's
  template, then `POST /tokenize` `{"content": prompt}` answers `{"tokens": [...]}`: exact.
- llama-cpp-python's server: `POST /extras/tokenize/count` `{"input": text}` answers
  `{"count": N}` for plain text. It has no way to apply the template, so the messages are
  written in ChatML (what most small instruct models use): exact for ChatML models, within
  a few tokens per message for others.

The first to answer is remembered; an engine serving none (hosted OpenAI or Azure, Ollama,
TGI) is asked once and then never again, and callers estimate (tokens.py).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import orjson

from .http import HTTPError, Pool

log = logging.getLogger("responsa.upstream")

TIMEOUT = 10.0
# An answer that says "this endpoint is not here" (as opposed to a failure worth retrying).
ABSENT = frozenset({400, 404, 405, 422, 501})


def root_url(base_url: str) -> str:
    """The engine's origin with the OpenAI `/v1` suffix removed (where tokenize endpoints live)."""
    parts = urlsplit(base_url.rstrip("/"))
    path = parts.path[:-3] if parts.path.endswith("/v1") else parts.path
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


def chatml(messages: list[dict]) -> str:
    """Messages as ChatML text, with the assistant's turn opened at the end."""
    out = []
    for m in messages:
        content = m.get("content")
        if isinstance(content, list):
            content = "\n".join(p.get("text", "") for p in content if isinstance(p, dict))
        text = content or ""
        for call in m.get("tool_calls") or ():
            fn = call.get("function") or {}
            text += f"\n<tool_call>\n{{\"name\": \"{fn.get('name', '')}\", \"arguments\": {fn.get('arguments', '')}}}" \
                    "\n</tool_call>"
        out.append(f"<|im_start|>{m.get('role', 'user')}\n{text}<|im_end|>\n")
    out.append("<|im_start|>assistant\n")
    return "".join(out)


class EngineTokenizer:
    """Counts a Chat Completions body's prompt tokens with the engine's tokenizer, or says None."""

    def __init__(self, base_url: str, headers: dict[str, str]) -> None:
        self.pool = Pool(root_url(base_url), connect_timeout=TIMEOUT, read_timeout=TIMEOUT)
        self.headers = headers
        self.mode: str | None = None  # the endpoint that answered; "none" once none did
        self._probing = asyncio.Lock()

    def close(self) -> None:
        self.pool.close()

    async def count(self, body: dict) -> int | None:
        """The prompt tokens of a chat body (`model`, `messages`, `tools`), or None if unknown."""
        if self.mode == "none":
            return None
        if self.mode is not None:
            try:
                return await _MODES[self.mode](self, body)
            except _FAILURES as e:
                log.warning("the engine's tokenizer failed (%s); estimating instead", e)
                return None
        async with self._probing:
            if self.mode is None:
                for mode in ("vllm", "llama.cpp", "llama-cpp-python"):
                    try:
                        n = await _MODES[mode](self, body)
                    except (HTTPError, TimeoutError) as e:  # unreachable now: estimate, ask again later
                        log.warning("the engine's tokenizer could not be asked (%s); estimating instead", e)
                        return None
                    except (ValueError, KeyError, TypeError):
                        continue  # that path answers something else: not this engine's tokenizer
                    if n is not None:
                        self.mode = mode
                        log.info("counting tokens with the engine's %s tokenize endpoint", mode)
                        return n
                self.mode = "none"
                log.info("the engine serves no tokenize endpoint; token counts are estimates")
                return None
        return await self.count(body)

    async def _post(self, path: str, payload: dict) -> Any:
        """The JSON answer of `path`, or None if the engine does not serve it."""
        async with asyncio.timeout(TIMEOUT):
            resp = await self.pool.request("POST", path, self.headers, orjson.dumps(payload))
            try:
                raw = await resp.read(limit=16 * 1024 * 1024)
            finally:
                resp.close()
        if resp.status in ABSENT:
            return None
        if resp.status != 200:
            raise ValueError(f"HTTP {resp.status}")
        data = orjson.loads(raw)
        return data if isinstance(data, dict) else None

    async def _vllm(self, body: dict) -> int | None:
        payload = {"model": body["model"], "messages": body["messages"], "add_generation_prompt": True}
        if body.get("tools"):
            payload["tools"] = body["tools"]
        data = await self._post("/tokenize", payload)
        return int(data["count"]) if data is not None and isinstance(data.get("count"), int) else None

    async def _llama_cpp(self, body: dict) -> int | None:
        payload = {"messages": body["messages"]}
        if body.get("tools"):
            payload["tools"] = body["tools"]
        data = await self._post("/apply-template", payload)
        if data is None or not isinstance(data.get("prompt"), str):
            return None
        tokens = await self._post("/tokenize", {"content": data["prompt"], "add_special": True})
        return len(tokens["tokens"]) if tokens is not None and isinstance(tokens.get("tokens"), list) else None

    async def _llama_cpp_python(self, body: dict) -> int | None:
        messages = list(body["messages"])
        if body.get("tools"):
            messages.insert(0, {"role": "system", "content": orjson.dumps(body["tools"]).decode()})
        data = await self._post("/extras/tokenize/count", {"model": body["model"], "input": chatml(messages)})
        return int(data["count"]) if data is not None and isinstance(data.get("count"), int) else None


_FAILURES = (HTTPError, TimeoutError, ValueError, KeyError, TypeError)
_MODES = {"vllm": EngineTokenizer._vllm, "llama.cpp": EngineTokenizer._llama_cpp,
          "llama-cpp-python": EngineTokenizer._llama_cpp_python}
