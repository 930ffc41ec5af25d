"""A small HTTP/1.1 client for talking to one model engine: pooled keep-alive connections.

Every response costs one round trip to the engine, so this client is on the hot path of
every request. aiohttp's client spent about 150 microseconds of CPU per request here
(profiled with py-spy: request object construction, header handling, payload classes);
this one does what an engine connection needs and no more: POST/GET with a body, the
response status and headers, the body whole or as it arrives (chunked or sized, parsed by
httptools, which uvicorn already brings), timeouts, TLS, and dropping the connection when
a caller stops reading (which is how engines learn to stop generating).
"""

from __future__ import annotations

import asyncio
import collections
import ssl
import time
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import httptools

from ..idlewait import IdleWaiter

KEEPALIVE_IDLE = 4.0  # seconds; engines behind uvicorn (vLLM, SGLang) close idle ones at 5
MAX_IDLE_CONNECTIONS = 64
HIGH_WATER = 1 << 20  # pause reading when this much body is buffered
# A response head (status line and headers) still unfinished after this many bytes is refused:
# engines send well under 1 KiB, and the parser itself sets no limit.
MAX_HEAD = 64 * 1024


class HTTPError(Exception):
    """The connection failed, timed out or the peer spoke broken HTTP."""


class _Connection(asyncio.Protocol):
    """One TCP (or TLS) connection, one response in flight at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.status = 0
        self.headers: dict[str, str] = {}
        self.chunks: collections.deque[bytes] = collections.deque()
        self.buffered = 0
        self.headers_done = False
        self.complete = False
        self.closed = False
        self.error: Exception | None = None
        self.keep_alive = True
        self.received_any = False
        self.head_size = 0  # bytes received while the head was incomplete
        self.idle_since = 0.0
        self._paused = False
        # The read timeout: one timer per connection, not one per chunk (a token, when streaming).
        self._idle = IdleWaiter()

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.received_any = True
        if not self.headers_done:
            self.head_size += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(HTTPError("unexpected protocol upgrade"))
        except httptools.HttpParserError as e:
            self._fail(HTTPError(f"malformed HTTP response: {e}"))
        if not self.headers_done and self.head_size > MAX_HEAD and self.error is None:
            self._fail(HTTPError(f"the engine's response headers exceed {MAX_HEAD // 1024} KiB"))
        self._wake()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._idle.cancel()
        if not self.complete:
            if self.headers_done and "content-length" not in self.headers \
                    and "chunked" not in self.headers.get("transfer-encoding", ""):
                self.complete = True  # a body delimited by the connection closing ends here
            elif self.error is None:
                self.error = HTTPError("the engine closed the connection" + (f": {exc}" if exc else ""))
        self._wake()

    # httptools callbacks
    def on_status(self, status: bytes) -> None:
        self.status = self.parser.get_status_code()

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self.headers_done = True
        self.keep_alive = self.parser.should_keep_alive()

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)
        self.buffered += len(body)
        if self.buffered > HIGH_WATER and not self._paused and self.transport is not None:
            self.transport.pause_reading()
            self._paused = True

    def on_message_complete(self) -> None:
        self.complete = True

    # plumbing
    def _fail(self, error: Exception) -> None:
        self.error = error
        if self.transport is not None:
            self.transport.abort()

    def _wake(self) -> None:
        self._idle.wake()

    async def wait(self, seconds: float) -> None:
        """Until more data, the end, or an error arrives; HTTPError after `seconds` without any."""
        if not await self._idle.wait(seconds):
            raise HTTPError(f"no data from the engine for {seconds:g} seconds")

    def take(self) -> bytes:
        data = b"".join(self.chunks)
        self.chunks.clear()
        self.buffered = 0
        if self._paused and self.transport is not None:
            self.transport.resume_reading()
            self._paused = False
        return data

    def reset(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.status = 0
        self.headers = {}
        self.chunks.clear()
        self.buffered = 0
        self.headers_done = self.complete = self.received_any = False
        self.head_size = 0
        self.keep_alive = True

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()


class Response:
    """A response being received. Read it whole (`read`) or as it comes (`iter_chunks`);
    `close()` drops the connection unless the body was read to the end."""

    def __init__(self, pool: Pool, conn: _Connection, read_timeout: float) -> None:
        self._pool = pool
        self._conn = conn
        self._timeout = read_timeout
        self.status = conn.status
        self.headers = conn.headers
        self._released = False

    async def next_chunk(self) -> bytes:
        """What has arrived since the last call (waiting until something has), or b"" at the end
        (a plain coroutine: cheaper per token than a step of an async generator)."""
        conn = self._conn
        while True:
            if conn.chunks:
                return conn.take()
            if conn.complete:
                return b""
            if conn.error is not None:
                raise conn.error
            await conn.wait(self._timeout)

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        while chunk := await self.next_chunk():
            yield chunk

    async def read(self, limit: int | None = None) -> bytes:
        parts = []
        size = 0
        async for chunk in self.iter_chunks():
            parts.append(chunk)
            size += len(chunk)
            if limit is not None and size >= limit:
                break
        return b"".join(parts)

    def close(self) -> None:
        if self._released:
            return
        self._released = True
        conn = self._conn
        if conn.complete and conn.keep_alive and not conn.closed and conn.error is None:
            self._pool.put(conn)
        else:
            conn.abort()


class Pool:
    """Keep-alive connections to one origin."""

    def __init__(self, base_url: str, *, connect_timeout: float = 10, read_timeout: float,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {base_url}")
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.ssl = (ssl_context or ssl.create_default_context()) if parts.scheme == "https" else None
        self.base_path = parts.path.rstrip("/")
        host = f"[{self.host}]" if ":" in self.host else self.host
        default_port = self.port == (443 if self.ssl else 80)
        self.host_header = (host if default_port else f"{host}:{self.port}").encode()
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self._idle: list[_Connection] = []

    def put(self, conn: _Connection) -> None:
        if len(self._idle) >= MAX_IDLE_CONNECTIONS:
            conn.abort()
            return
        conn.idle_since = time.monotonic()
        conn.reset()
        self._idle.append(conn)

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, conn = await loop.create_connection(
                    _Connection, self.host, self.port, ssl=self.ssl,
                    server_hostname=self.host if self.ssl else None)
        except TimeoutError:
            raise HTTPError(f"cannot connect to {self.host}:{self.port} in {self.connect_timeout:g}s") from None
        except OSError as e:
            raise HTTPError(f"cannot connect to {self.host}:{self.port}: {e}") from e
        return conn

    def _reuse(self) -> _Connection | None:
        now = time.monotonic()
        while self._idle:
            conn = self._idle.pop()
            if not conn.closed and now - conn.idle_since < KEEPALIVE_IDLE:
                return conn
            conn.abort()
        return None

    async def request(self, method: str, path: str, headers: dict[str, str], body: bytes = b"") -> Response:
        """Send a request; returns once the response's status and headers have arrived."""
        head = [f"{method} {self.base_path}{path} HTTP/1.1\r\n".encode(), b"Host: ", self.host_header,
                b"\r\nContent-Length: ", str(len(body)).encode(), b"\r\n"]
        for name, value in headers.items():
            head.append(f"{name}: {value}\r\n".encode("latin-1"))
        head.append(b"\r\n")
        payload = b"".join(head) + body
        for attempt in (0, 1):
            # The retry takes a new connection: the other idle ones may be closing too.
            conn = self._reuse() if attempt == 0 else None
            reused = conn is not None
            if conn is None:
                conn = await self._connect()
            assert conn.transport is not None
            conn.transport.write(payload)
            try:
                while not conn.headers_done:
                    if conn.error is not None:
                        raise conn.error
                    await conn.wait(self.read_timeout)
            except HTTPError:
                conn.abort()
                # A pooled connection the engine closed meanwhile: retry once on a new one,
                # only when not a byte of an answer came back (the engine never saw it).
                if reused and not conn.received_any and attempt == 0:
                    continue
                raise
            except BaseException:
                conn.abort()
                raise
            return Response(self, conn, self.read_timeout)
        raise HTTPError("unreachable")  # pragma: no cover

    def close(self) -> None:
        for conn in self._idle:
            conn.abort()
        self._idle.clear()
