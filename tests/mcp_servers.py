"""Real MCP servers for the tests, built with the official `mcp` SDK and served on loopback.

`MCPTestServer` runs one server in a thread of the test process: Streamable HTTP (`/mcp`) or
only the older SSE transport (`/sse`), optionally requiring `Authorization: Bearer <token>`.
It logs every HTTP request it receives (the JSON-RPC method, its params, the authorization
header and whether it was let in), so a test can prove what reached the server and what
did not (nothing before an approval). `not_mcp_server` and `silent_server` are HTTP servers
that are not MCP servers at all, for the failure tests.
"""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

import uvicorn
from harness import ThreadServer
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ToolAnnotations
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route


def build_server(name: str) -> MCPServer:
    """The tools every test server offers."""
    server = MCPServer(name)

    @server.tool(description="Add two integers.", annotations=ToolAnnotations(read_only_hint=True))
    def add(a: int, b: int) -> int:
        return a + b

    @server.tool(description="Repeat a text back.")
    def echo(text: str) -> str:
        return text

    @server.tool(description="Always fails, with the reason given.")
    def fail(reason: str) -> str:
        raise ToolError(f"failed on purpose: {reason}")

    @server.tool(description="Return `size` bytes of text.")
    def big(size: int) -> str:
        return "0123456789" * (size // 10)

    @server.tool(description="Answer after `seconds` seconds.")
    async def slow(seconds: float) -> str:
        await asyncio.sleep(seconds)
        return "finally"

    @server.tool(name="files.read", description="A tool whose name no function may carry.")
    def files_read(path: str) -> str:
        return f"contents of {path}"

    return server


class RequestLog:
    """What one server received, shared between its thread and the test."""

    def __init__(self) -> None:
        self.entries: list[dict] = []
        self.lock = threading.Lock()

    def add(self, entry: dict) -> None:
        with self.lock:
            self.entries.append(entry)

    def clear(self) -> None:
        with self.lock:
            self.entries.clear()

    def methods(self, *, admitted: bool = True) -> list[str]:
        with self.lock:
            return [e["method"] for e in self.entries if e["method"] and e["admitted"] == admitted]

    def calls(self) -> list[dict]:
        """The `tools/call` requests let in: [{"name", "arguments"}]."""
        with self.lock:
            return [e["params"] for e in self.entries if e["method"] == "tools/call" and e["admitted"]]


def logged(app: Any, log: RequestLog, token: str | None) -> Any:
    """ASGI middleware: log each request's JSON-RPC message; refuse a wrong bearer token with 401."""

    async def asgi(scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        body = b""
        if scope["method"] == "POST":
            more = True
            while more:
                message = await receive()
                body += message.get("body", b"")
                more = message.get("more_body", False)
        method, params = None, None
        try:
            message = json.loads(body) if body else None
            if isinstance(message, dict):
                method, params = message.get("method"), message.get("params")
        except ValueError:
            pass
        admitted = token is None or headers.get("authorization") == f"Bearer {token}"
        log.add({"http": scope["method"], "path": scope["path"], "method": method, "params": params,
                 "authorization": headers.get("authorization"), "admitted": admitted,
                 "traceparent": headers.get("traceparent")})
        if not admitted:
            response = PlainTextResponse("unauthorized", status_code=401,
                                         headers={"WWW-Authenticate": 'Bearer realm="test"'})
            await response(scope, receive, send)
            return
        sent = False

        async def replay() -> dict:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await app(scope, replay if scope["method"] == "POST" else receive, send)

    return asgi


class LoopbackServer(ThreadServer):
    """An ASGI app on a free loopback port, with its lifespan run and a short shutdown."""

    def __init__(self, app: Any) -> None:
        super().__init__(app)
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on",
                                timeout_graceful_shutdown=1)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)


class MCPTestServer(LoopbackServer):
    """A real MCP server: `transport` "streamable" (at /mcp) or "sse" (only SSE, at /sse)."""

    def __init__(self, name: str, *, transport: str = "streamable", token: str | None = None) -> None:
        self.mcp = build_server(name)
        self.log = RequestLog()
        self.transport = transport
        app = self.mcp.streamable_http_app() if transport == "streamable" else self.mcp.sse_app()
        super().__init__(logged(app, self.log, token))

    @property
    def mcp_url(self) -> str:
        return self.url + ("/mcp" if self.transport == "streamable" else "/sse")


def not_mcp_server() -> LoopbackServer:
    """An HTTP server that answers everything with a web page: an MCP protocol error."""

    async def page(request: Any) -> PlainTextResponse:
        return PlainTextResponse("<html>not an MCP server</html>", media_type="text/html")

    return LoopbackServer(Starlette(routes=[Route("/mcp", page, methods=["GET", "POST", "DELETE"])]))


def silent_server() -> LoopbackServer:
    """An HTTP server that accepts requests and never answers (until it shuts down)."""

    async def hang(request: Any) -> PlainTextResponse:
        await asyncio.sleep(3600)
        return PlainTextResponse("too late")

    return LoopbackServer(Starlette(routes=[Route("/mcp", hang, methods=["GET", "POST", "DELETE"])]))
