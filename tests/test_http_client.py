"""The engine HTTP client (backends/http.py) against real loopback peers written here.

Each peer is an asyncio server whose every byte the test decides: bodies sized or chunked (cut
at odd places), keep-alive, peers that close mid-body or answer with endless headers. Every
test runs under a deadline far below the client's own timeouts, so a hang fails instead of
stalling the suite.
"""

from __future__ import annotations

import asyncio
import itertools
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

import pytest

from responsa.backends import http
from responsa.backends.http import HTTPError, Pool

pytestmark = pytest.mark.anyio

T = TypeVar("T")
DEADLINE = 5.0  # seconds; no test here needs more than a fraction of it
Handler = Callable[["Peer", asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[None]]

READ_TIMEOUT = 30.0  # the engines' read timeout here (Settings.upstream_timeout in the server)


class Peer:
    """A raw HTTP/1.1 peer on a free loopback port; connection n (from 0) is served by `handler`."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.requests: list[bytes] = []  # each request's head and body, as received
        self.closed_by_client = asyncio.Event()  # a connection ended by the client (EOF or reset)
        self.request_seen = asyncio.Event()
        self.server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []
        self._pools: list[Pool] = []

    async def __aenter__(self) -> Peer:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        for pool in self._pools:
            pool.close()
        assert self.server is not None
        self.server.close()
        for writer in self._writers:
            writer.transport.abort()

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    def pool(self, path: str = "", **options: float) -> Pool:
        pool = Pool(self.url + path, **{"read_timeout": READ_TIMEOUT, **options})
        self._pools.append(pool)
        return pool

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        n = self.connections
        self.connections += 1
        self._writers.append(writer)
        try:
            await self.handler(self, reader, writer, n)
        except (ConnectionError, asyncio.IncompleteReadError):
            self.closed_by_client.set()
        finally:
            writer.close()

    async def read_request(self, reader: asyncio.StreamReader) -> bytes:
        """One request (head and Content-Length body); b"" when the client closed instead."""
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            self.closed_by_client.set()
            return b""
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        request = head + await reader.readexactly(length)
        self.requests.append(request)
        self.request_seen.set()
        return request

    async def wait_closed_by_client(self, reader: asyncio.StreamReader) -> None:
        """Until the client drops this connection."""
        try:
            while await reader.read(65536):
                pass
        except ConnectionError:
            pass
        self.closed_by_client.set()


def sized(body: bytes, status: str = "200 OK", extra: bytes = b"") -> bytes:
    return (f"HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\n".encode()
            + extra + b"\r\n" + body)


def chunked_head(extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n" + extra + b"\r\n"


def chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def serve_each(answer: Callable[[bytes], bytes]) -> Handler:
    """Answer every request on every connection with `answer(request)`, keeping connections open."""
    async def handler(peer: Peer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        while request := await peer.read_request(reader):
            writer.write(answer(request))
            await writer.drain()

    return handler


def connection_lost(conn: http._Connection) -> asyncio.Event:
    """Set once the client's side of `conn` has seen the connection end."""
    lost = asyncio.Event()
    original = conn.connection_lost

    def hook(exc: Exception | None) -> None:
        original(exc)
        lost.set()

    conn.connection_lost = hook  # type: ignore[method-assign]
    return lost


async def collect(chunks: AsyncIterator[bytes]) -> bytes:
    return b"".join([c async for c in chunks])


async def within(awaitable: Awaitable[T]) -> T:
    """The client's own read timeout is 600 s: a hang must fail the test instead."""
    async with asyncio.timeout(DEADLINE):
        return await awaitable


# ---- bodies -----------------------------------------------------------------------------------

async def test_a_sized_body_and_what_was_sent() -> None:
    async with Peer(serve_each(lambda _: sized(b"hello", extra=b"X-Thing: Yes\r\n"))) as peer:
        pool = peer.pool("/v1/")
        resp = await within(pool.request("POST", "/chat/completions", {"Authorization": "Bearer k"}, b'{"a":1}'))
        assert isinstance(resp, http.Response)
        assert resp.status == 200
        assert resp.headers["x-thing"] == "Yes" and resp.headers["content-type"] == "text/plain"
        assert await resp.read() == b"hello"
        resp.close()
        head, body = peer.requests[0].split(b"\r\n\r\n", 1)
        lines = head.split(b"\r\n")
        assert lines[0] == b"POST /v1/chat/completions HTTP/1.1"
        port = peer.url.rsplit(":", 1)[1]
        assert f"Host: 127.0.0.1:{port}".encode() in lines
        assert b"Content-Length: 7" in lines and b"Authorization: Bearer k" in lines
        assert body == b'{"a":1}'


async def test_a_chunked_body_cut_at_odd_places() -> None:
    pieces = [b"data: one\n\n", b"x" * 300, b"", b"\xe2\x82\xac tail"]
    wire = chunked_head() + b"".join(chunk(p) for p in pieces if p) + b"0\r\n\r\n"

    async def handler(peer: Peer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await peer.read_request(reader)
        # Cuts inside the status line, a header, a chunk-size line, a CRLF and a multi-byte character.
        for cut in _cuts(wire, (5, 20, 31, 47, 48, 49, 60, 355, 358, len(wire) - 6, len(wire) - 2)):
            writer.write(cut)
            await writer.drain()
            await asyncio.sleep(0)  # let each piece go out as a segment of its own
        await peer.wait_closed_by_client(reader)

    async with Peer(handler) as peer:
        pool = peer.pool()
        resp = await within(pool.request("GET", "/stream", {}))
        assert resp.status == 200
        assert await within(collect(resp.iter_chunks())) == b"".join(pieces)
        resp.close()


def _cuts(data: bytes, at: tuple[int, ...]) -> list[bytes]:
    return [data[a:b] for a, b in itertools.pairwise([0, *at, len(data)])]


class FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.paused = self.aborted = False
        self.written = b""

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False

    def abort(self) -> None:
        self.aborted = True

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += bytes(data)


def fed_byte_by_byte(wire: bytes) -> http._Connection:
    conn = http._Connection()
    conn.connection_made(FakeTransport())
    for i in range(len(wire)):
        conn.data_received(wire[i:i + 1])
    return conn


def test_every_byte_boundary_parses_alike() -> None:
    body = b'data: {"x": "\xc3\xa9"}\n\n' * 3
    sizes = [1, 7, 16, len(body) - 24]
    parts, start = [], 0
    for size in sizes:
        parts.append(body[start:start + size])
        start += size
    wire = chunked_head(b"X-A: 1\r\n") + b"".join(chunk(p) for p in parts) + b"0\r\nTrailer-X: t\r\n\r\n"
    conn = fed_byte_by_byte(wire)
    assert conn.complete and conn.error is None and conn.keep_alive
    assert conn.headers["x-a"] == "1" and conn.status == 200
    assert conn.take() == body
    sized_conn = fed_byte_by_byte(sized(body))
    assert sized_conn.complete and sized_conn.take() == body


def test_a_large_unread_body_pauses_reading_until_taken() -> None:
    conn = http._Connection()
    transport = FakeTransport()
    conn.connection_made(transport)
    conn.data_received(sized(b"x" * (http.HIGH_WATER + 10)))
    assert transport.paused
    assert len(conn.take()) == http.HIGH_WATER + 10
    assert not transport.paused


async def test_a_body_without_length_ends_when_the_peer_closes() -> None:
    async def handler(peer: Peer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await peer.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\n\r\nuntil the end")
        await writer.drain()

    async with Peer(handler) as peer:
        pool = peer.pool()
        resp = await within(pool.request("GET", "/", {}))
        assert await within(resp.read()) == b"until the end"
        resp.close()
        assert pool._idle == []  # the connection is gone with its body


async def test_a_204_and_an_empty_sized_body_leave_the_connection_reusable() -> None:
    answers = iter([b"HTTP/1.1 204 No Content\r\n\r\n", sized(b""), sized(b"third")])
    async with Peer(serve_each(lambda _: next(answers))) as peer:
        pool = peer.pool()
        for status, body in ((204, b""), (200, b""), (200, b"third")):
            resp = await within(pool.request("GET", "/", {}))
            assert (resp.status, await within(resp.read())) == (status, body)
            resp.close()
        assert peer.connections == 1


async def test_read_with_a_limit_stops_early() -> None:
    body = b"".join(chunk(b"%04d" % i) for i in range(100))

    async def handler(peer: Peer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await peer.read_request(reader)
        writer.write(chunked_head() + body)  # never finished: the client must not wait for the end
        await peer.wait_closed_by_client(reader)

    async with Peer(handler) as peer:
        pool = peer.pool()
        resp = await within(pool.request("GET", "/", {}))
        assert len(await within(resp.read(limit=8))) >= 8
        resp.close()
        await within(peer.closed_by_client.wait())


# ---- keep-alive -------------------------------------------------------------------------------

async def test_keep_alive_reuses_one_connection() -> None:
    async with Peer(serve_each(lambda req: sized(req.split(b" ")[1]))) as peer:
        pool = peer.pool()
        for path in ("/a", "/b", "/c"):
            resp = await within(pool.request("POST", path, {}, b"body"))
            assert await within(resp.read()) == path.encode()
            resp.close()
        assert peer.connections == 1 and len(peer.requests) == 3


async def test_connection_close_and_http_1_0_are_not_reused() -> None:
    answers = iter([sized(b"1", extra=b"Connection: close\r\n"),
                    b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n2", sized(b"3")])

    async def handler(peer: Peer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await peer.read_request(reader)
        writer.write(next(answers))
        await writer.drain()
        await peer.wait_closed_by_client(reader)

    async with Peer(handler) as peer:
        pool = peer.pool()
        for expected in (b"1", b"2", b"3"):
            resp = await within(pool.request("GET", "/", {}))
            assert await within(resp.read()) == expected
            resp.close()
        assert peer.connections == 3


async def test_a_body_not_read_to_the_end_drops_the_connection() -> None:
    async def handler(peer: Peer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        while await peer.read_request(reader):
            writer.write(chunked_head() + chunk(b"first part"))  # and more to come, never sent
            await writer.drain()
        await peer.wait_closed_by_client(reader)

    async with Peer(handler) as peer:
        pool = peer.pool()
        resp = await within(pool.request("GET", "/", {}))
        assert await within(anext(resp.iter_chunks())) == b"first part"
        resp.close()  # how an engine learns to stop generating
        await within(peer.closed_by_client.wait())
        assert pool._idle == []


async def test_an_idle_connection_past_its_keep_alive_is_not_reused() -> None:
    async with Peer(serve_each(lambda _: sized(b"ok"))) as peer:
        pool = peer.pool()
        resp = await within(pool.request("GET", "/", {}))
        await within(resp.read())
        resp.close()
        (conn,) = pool._idle
        conn.idle_since -= http.KEEPALIVE_IDLE  # as if it had been idle that long
        resp = await within(pool.request("GET", "/", {}))
        await within(resp.read())
        resp.close()
        assert peer.connections == 2 and conn.closed


async def test_an_idle_connection_the_peer_closed_is_replaced() -> None:
    async def handler(peer: Peer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await peer.read_request(reader)
        writer.write(sized(b"ok"))
        await writer.drain()
        if n > 0:
            await peer.wait_closed_by_client(reader)
        # The first connection is closed right after its answer, as an engine does at idle time.

    async with Peer(handler) as peer:
        pool = peer.pool()
        resp = await within(pool.request("GET", "/", {}))
        await within(resp.read())
        resp.close()
        (conn,) = pool._idle
        if not conn.closed:
            await within(connection_lost(conn).wait())  # until the client has seen the close
        resp = await within(pool.request("GET", "/", {}))
        assert await within(resp.read()) == b"ok"
        resp.close()
        assert peer.connections == 2


async def test_a_reused_connection_closed_before_any_answer_is_retried_on_a_new_one() -> None:
    # The race the retry exists for: the engine closes an idle connection just as a request
    # goes out on it. Here every first-generation connection closes on its second request.
    async def handler(peer: Peer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        served = 0
        while await peer.read_request(reader):
            if n < 2 and served == 1:
                return  # closed without a byte of an answer
            writer.write(sized(b"conn %d" % n))
            await writer.drain()
            served += 1

    async with Peer(handler) as peer:
        pool = peer.pool()
        # Two connections in the pool, both about to be closed by the engine.
        first, second = await within(asyncio.gather(pool.request("GET", "/", {}), pool.request("GET", "/", {})))
        for resp in (first, second):
            await within(resp.read())
            resp.close()
        assert len(pool._idle) == 2
        resp = await within(pool.request("POST", "/chat/completions", {}, b"{}"))
        assert await within(resp.read()) == b"conn 2"
        resp.close()
        assert peer.connections == 3


async def test_a_peer_that_answers_part_of_a_response_then_closes_is_not_retried() -> None:
    async def handler(peer: Peer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        served = 0
        while await peer.read_request(reader):
            if served == 1:
                writer.write(b"HTTP/1.1 200 OK\r\nContent-")  # the engine saw this request
                await writer.drain()
                return
            writer.write(sized(b"ok"))
            await writer.drain()
            served += 1

    async with Peer(handler) as peer:
        pool = peer.pool()
        resp = await within(pool.request("GET", "/", {}))
        await within(resp.read())
        resp.close()
        with pytest.raises(HTTPError, match="closed the connection"):
            await within(pool.request("POST", "/", {}, b"{}"))
        assert len(peer.requests) == 2  # sent once, not again


async def test_a_new_connection_closed_before_an_answer_is_an_error() -> None:
    async def handler(peer: Peer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await peer.read_request(reader)

    async with Peer(handler) as peer:
        pool = peer.pool()
        with pytest.raises(HTTPError, match="the engine closed the connection"):
            await within(pool.request("GET", "/", {}))
        assert peer.connections == 1


def test_the_pool_keeps_a_bounded_number_of_idle_connections(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http, "MAX_IDLE_CONNECTIONS", 2)
    pool = Pool("http://127.0.0.1:9", read_timeout=READ_TIMEOUT)
    conns = []
    for _ in range(3):
        conn = http._Connection()
        conn.connection_made(FakeTransport())
        conns.append(conn)
        pool.put(conn)
    assert pool._idle == conns[:2]
    assert conns[2].closed and not conns[0].closed
    pool.close()
    assert pool._idle == [] and conns[0].closed


# ---- failures ---------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["sized", "chunked"])
async def test_a_peer_closing_mid_body_is_a_clear_error(kind: str) -> None:
    async def handler(peer: Peer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await peer.read_request(reader)
        if kind == "sized":
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten b")
        else:
            writer.write(chunked_head() + chunk(b"only ten b") + b"20\r\nhalf")
        await writer.drain()

    async with Peer(handler) as peer:
        pool = peer.pool()
        resp = await within(pool.request("GET", "/", {}))
        received = []
        with pytest.raises(HTTPError, match="the engine closed the connection"):
            async for piece in resp.iter_chunks():
                received.append(piece)
        assert b"".join(received).startswith(b"only ten b")
        resp.close()
        assert pool._idle == []


async def test_oversized_headers_are_a_clear_error() -> None:
    async def handler(peer: Peer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await peer.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\n")
        line = b"X-Padding: " + b"a" * 1000 + b"\r\n"
        while True:  # headers without end, as fast as the client takes them
            writer.write(line * 64)
            await writer.drain()

    async with Peer(handler) as peer:
        pool = peer.pool()
        with pytest.raises(HTTPError, match="headers"):
            await within(pool.request("GET", "/", {}))
        await within(peer.closed_by_client.wait())


async def test_one_oversized_header_line_is_a_clear_error() -> None:
    async def handler(peer: Peer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await peer.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nX-Huge: ")
        while True:
            writer.write(b"a" * 65536)
            await writer.drain()

    async with Peer(handler) as peer:
        pool = peer.pool()
        with pytest.raises(HTTPError, match="headers"):
            await within(pool.request("GET", "/", {}))


async def test_large_but_reasonable_headers_are_accepted() -> None:
    extra = b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 200) for i in range(40))  # about 8 KiB
    async with Peer(serve_each(lambda _: sized(b"ok", extra=extra))) as peer:
        pool = peer.pool()
        resp = await within(pool.request("GET", "/", {}))
        assert resp.headers["x-h39"] == "v" * 200 and await within(resp.read()) == b"ok"
        resp.close()


async def test_a_malformed_response_is_a_clear_error() -> None:
    async with Peer(serve_each(lambda _: b"SMTP ready\r\n\r\n")) as peer:
        pool = peer.pool()
        with pytest.raises(HTTPError, match="malformed HTTP response"):
            await within(pool.request("GET", "/", {}))


async def test_silence_after_the_headers_times_out() -> None:
    async def handler(peer: Peer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await peer.read_request(reader)
        writer.write(chunked_head())
        await peer.wait_closed_by_client(reader)

    async with Peer(handler) as peer:
        pool = peer.pool(read_timeout=0.2)
        resp = await within(pool.request("GET", "/", {}))
        with pytest.raises(HTTPError, match=r"no data from the engine for 0\.2 seconds"):
            await within(resp.read())
        resp.close()
        await within(peer.closed_by_client.wait())


async def test_cancelling_a_request_waiting_for_its_answer_drops_the_connection() -> None:
    async def handler(peer: Peer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await peer.read_request(reader)
        await peer.wait_closed_by_client(reader)

    async with Peer(handler) as peer:
        pool = peer.pool()
        task = asyncio.create_task(pool.request("GET", "/", {}))
        await within(peer.request_seen.wait())
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await within(peer.closed_by_client.wait())
        assert pool._idle == []


async def test_nobody_listening_is_a_clear_error() -> None:
    with socket.socket() as s:  # bound but not listening: connections are refused, and no one else can bind it
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        pool = Pool(f"http://127.0.0.1:{port}", read_timeout=READ_TIMEOUT)
        with pytest.raises(HTTPError, match=f"cannot connect to 127.0.0.1:{port}"):
            await within(pool.request("GET", "/", {}))


def test_urls() -> None:
    with pytest.raises(ValueError, match="not an http"):
        Pool("ftp://example.com", read_timeout=READ_TIMEOUT)
    with pytest.raises(ValueError, match="not an http"):
        Pool("http://", read_timeout=READ_TIMEOUT)
    assert Pool("http://example.com/v1/", read_timeout=READ_TIMEOUT).host_header == b"example.com"
    assert Pool("http://example.com/v1/", read_timeout=READ_TIMEOUT).base_path == "/v1"
    assert Pool("https://example.com:8443", read_timeout=READ_TIMEOUT).host_header == b"example.com:8443"
    secure = Pool("https://example.com", read_timeout=READ_TIMEOUT)
    assert (secure.port, secure.host_header, secure.ssl is not None) == (443, b"example.com", True)
    v6 = Pool("http://[::1]:8000/v1", read_timeout=READ_TIMEOUT)
    assert (v6.host, v6.port, v6.host_header) == ("::1", 8000, b"[::1]:8000")
