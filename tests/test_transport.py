"""Writes sent in pairs (transport.py): one send for a response's headers and body."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest

from responsa.transport import CoalescingTransport

pytestmark = pytest.mark.anyio


class Recorder:
    """The real transport's side: what was written, in order, and whether it was closed."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False
        self.aborted = False

    def write(self, data: bytes) -> None:
        assert not self.closed
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = self.closed = True

    def get_write_buffer_size(self) -> int:
        return 0

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 1234) if name == "peername" else default


def pair() -> tuple[Recorder, Any]:
    real = Recorder()
    return real, CoalescingTransport(real, asyncio.get_running_loop())  # type: ignore[arg-type]


async def test_a_response_head_leaves_with_its_body(anyio_backend: str) -> None:
    real, t = pair()
    t.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
    t.write(b"ok")
    assert real.writes == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"]
    await asyncio.sleep(0)
    assert len(real.writes) == 1
    t.write(b"more")  # not a head (the protocol did not say a response was complete): at once
    assert real.writes[-1] == b"more"
    t.head_next = True  # as the protocol does when a response is complete
    t.write(b"HTTP/1.1 200 OK\r\n\r\n")
    t.write(b"next")
    assert real.writes[-1] == b"HTTP/1.1 200 OK\r\n\r\nnext" and len(real.writes) == 3


async def test_a_head_alone_leaves_at_the_end_of_the_turn_and_the_events_at_once(anyio_backend: str) -> None:
    real, t = pair()
    t.write(b"head")  # a stream whose first event is still to come
    assert real.writes == [] and t.get_write_buffer_size() == 4
    await asyncio.sleep(0)
    assert real.writes == [b"head"]
    t.write(b"event 1")
    t.write(b"event 2")
    assert real.writes == [b"head", b"event 1", b"event 2"]


async def test_closing_sends_what_is_held_first_and_aborting_drops_it(anyio_backend: str) -> None:
    real, t = pair()
    t.write(b"last words")
    t.close()
    assert real.writes == [b"last words"] and real.closed
    await asyncio.sleep(0)
    assert real.writes == [b"last words"]

    real, t = pair()
    t.write(b"never sent")
    t.abort()
    await asyncio.sleep(0)
    assert real.writes == [] and real.aborted


async def test_everything_else_is_the_real_transport(anyio_backend: str) -> None:
    _, t = pair()
    assert t.get_extra_info("peername") == ("127.0.0.1", 1234)
    assert t.is_closing() is False


def test_a_response_that_closes_the_connection_arrives_whole(server) -> None:
    """HTTP/1.0: the server closes the connection after the response, which the held write precedes."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"GET /health HTTP/1.0\r\nHost: x\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b'"status":"ok"' in body
