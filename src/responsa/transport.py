"""The HTTP/1.1 protocol the server runs: uvicorn's, with a response's head sent with its body.

uvicorn writes a response's status line and headers, then its body, each with its own
`transport.write`, and the event loop sends each at once: two send() calls, two TCP segments
and two wake-ups of the client for a response that fits in one. Here the head is held back
until the next write, and both leave in one send(): a whole plain response in one system call,
a stream's head with its first event. A head that nothing follows in the same turn of the
event loop (a stream whose first event is still to come) is sent at the end of that turn.
Every other write goes out at once, as before, and closing a connection sends what is held.

(Holding every write to the end of the turn merged more of a stream's events, but sent the
end of each response after the commits queued in that turn, and cost a callback per write:
+0.1 ms per response at one client.)
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class CoalescingTransport:
    """A transport that holds a response's head until the next write (see the module docstring)."""

    __slots__ = ("_held", "_loop", "_scheduled", "_transport", "head_next")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None
        self._scheduled = False
        self.head_next = True  # the next write starts a response (the protocol says so)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        held = self._held
        if held is not None:
            self._held = None
            self._transport.write(held + data)
        elif self.head_next:
            self.head_next = False
            self._held = bytes(data)
            if not self._scheduled:
                self._scheduled = True
                self._loop.call_soon(self._end_of_turn)
        else:
            self._transport.write(data)

    def writelines(self, lines: Any) -> None:
        for data in lines:
            self.write(data)

    def _end_of_turn(self) -> None:
        self._scheduled = False
        self._flush()

    def _flush(self) -> None:
        held, self._held = self._held, None
        if held is not None and not self._transport.is_closing():
            self._transport.write(held)

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def write_eof(self) -> None:
        self._flush()
        self._transport.write_eof()

    def abort(self) -> None:
        self._held = None
        self._transport.abort()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def pause_reading(self) -> None:
        self._transport.pause_reading()

    def resume_reading(self) -> None:
        self._transport.resume_reading()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + (len(self._held) if self._held is not None else 0)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class CoalescingHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol on a CoalescingTransport."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        coalescing: Any = CoalescingTransport(transport, asyncio.get_running_loop())
        super().connection_made(coalescing)

    def on_response_complete(self) -> None:
        self.transport.head_next = True  # type: ignore[attr-defined]
        super().on_response_complete()
