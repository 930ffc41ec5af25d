"""A recording pass-through proxy between an out-of-process client and the live server.

Clients like Codex or the Vercel AI SDK run as subprocesses, so the test cannot see their
traffic through an SDK object. They are pointed at this proxy instead: it forwards every
request to the server unchanged, streams the answer back as it comes, and keeps both, so a
test can assert what the client sent and validate everything the server answered.
"""

from __future__ import annotations

import json
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
from harness import ThreadServer, check_events, check_response, sse_events
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

HOP_BY_HOP = {"host", "content-length", "transfer-encoding", "connection", "content-encoding", "keep-alive"}


@dataclass
class Exchange:
    """One request as the client sent it and the server's answer as the client got it."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any
    status: int = 0
    response_headers: dict[str, str] = field(default_factory=dict)
    response_body: bytes = b""
    finished: bool = False
    query: str = ""  # as sent, still percent-encoded

    @property
    def streamed(self) -> bool:
        return self.response_headers.get("content-type", "").startswith("text/event-stream")

    def events(self) -> list[dict]:
        return sse_events(self.response_body)

    def json(self) -> Any:
        return json.loads(self.response_body)

    def final(self) -> dict:
        """The Response object the client ended up with (streamed or not)."""
        return self.events()[-1]["response"] if self.streamed else self.json()


class RecordingProxy(ThreadServer):
    """Forwards everything to `target`, recording each exchange."""

    def __init__(self, target: str) -> None:
        self.target = target.rstrip("/")
        self.exchanges: list[Exchange] = []
        self.lock = threading.Lock()
        super().__init__(Starlette(routes=[Route("/{path:path}", self._forward,
                                                 methods=["GET", "POST", "DELETE", "PUT", "PATCH"])]))

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    def reset(self) -> None:
        with self.lock:
            self.exchanges.clear()

    def posts(self, suffix: str = "/responses") -> list[Exchange]:
        """The finished POSTs to a path ending in `suffix`, in order."""
        with self.lock:
            return [x for x in self.exchanges
                    if x.method == "POST" and x.path.endswith(suffix) and x.finished]

    async def _forward(self, request: Request) -> Response:
        raw = await request.body()
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = raw
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        exchange = Exchange(request.method, request.url.path, dict(request.headers), body,
                            query=request.url.query)
        with self.lock:
            self.exchanges.append(exchange)
        client = httpx.AsyncClient(timeout=httpx.Timeout(120, connect=10))
        upstream = await client.send(client.build_request(
            request.method, self.target + request.url.path, params=request.query_params.multi_items(),
            headers=headers, content=raw), stream=True)
        exchange.status = upstream.status_code
        exchange.response_headers = {k.lower(): v for k, v in upstream.headers.items()}
        out_headers = {k: v for k, v in upstream.headers.items() if k.lower() not in HOP_BY_HOP}

        async def relay() -> AsyncIterator[bytes]:
            chunks = []
            try:
                async for chunk in upstream.aiter_bytes():
                    chunks.append(chunk)
                    yield chunk
            finally:
                exchange.response_body = b"".join(chunks)
                exchange.finished = True
                await upstream.aclose()
                await client.aclose()

        return StreamingResponse(relay(), status_code=upstream.status_code, headers=out_headers)

    def validate(self) -> int:
        """Check every Response and stream the server sent; return how many were checked."""
        checked = 0
        with self.lock:
            exchanges = list(self.exchanges)
        for x in exchanges:
            is_create = x.method == "POST" and x.path.endswith("/responses")
            is_get = x.method == "GET" and "/responses/" in x.path and not x.path.endswith("/input_items")
            if not (is_create or is_get):
                continue
            assert x.finished, f"{x.method} {x.path} never finished"
            assert x.status == 200, f"{x.method} {x.path} -> {x.status}: {x.response_body[:2000]!r}"
            if x.streamed:
                check_events(x.events())
            else:
                check_response(x.json())
            checked += 1
        return checked
