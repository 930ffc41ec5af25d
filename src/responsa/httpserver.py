"""uvicorn's HTTP protocol with the read deadlines it lacks.

uvicorn closes a kept-alive connection that stays silent between requests, but not one that
is silent from the start, and nothing bounds how long a request may take to arrive: a client
that sends half its headers or half its body holds a connection (and a task waiting on
`receive()`) for ever. This subclass adds two timers and changes nothing else:

- a connection that sends no request within the keep-alive timeout of being opened is
  closed, as a kept-alive one is;
- a request whose headers and body are not all in within `--request-read-timeout` of its
  first byte is answered 408 if nothing was sent yet, and its connection closed.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

TIMEOUT_BODY = (b'{"error":{"message":"The request was not received in time.","type":"invalid_request_error",'
                b'"param":null,"code":"request_timeout"}}')


def guarded_protocol(read_timeout: float, base: type[HttpToolsProtocol] = HttpToolsProtocol) -> type[HttpToolsProtocol]:
    """The protocol class for uvicorn's `http=` setting (`base`, with this request read deadline)."""

    class GuardedHttpToolsProtocol(base):  # type: ignore[valid-type,misc]
        _read_deadline: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:
            super().connection_made(transport)
            # Silent from the start: as idle as a kept-alive connection between requests.
            self.timeout_keep_alive_task = self.loop.call_later(self.timeout_keep_alive,
                                                                self.timeout_keep_alive_handler)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._cancel_deadline()
            self._read_deadline = self.loop.call_later(read_timeout, self._read_timed_out)

        def on_message_complete(self) -> None:
            self._cancel_deadline()
            super().on_message_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            self._cancel_deadline()
            super().connection_lost(exc)

        def _cancel_deadline(self) -> None:
            if self._read_deadline is not None:
                self._read_deadline.cancel()
                self._read_deadline = None

        def _read_timed_out(self) -> None:
            self._read_deadline = None
            if self.transport.is_closing():
                return
            cycle: Any = self.cycle
            if cycle is None or not cycle.response_started:
                self.transport.write(b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
                                     b"connection: close\r\ncontent-length: " + str(len(TIMEOUT_BODY)).encode()
                                     + b"\r\n\r\n" + TIMEOUT_BODY)
                if cycle is not None:  # what the handler sends next goes nowhere; it reads a disconnect
                    cycle.response_complete = cycle.disconnected = True
                    cycle.message_event.set()
            self.transport.close()

    return GuardedHttpToolsProtocol
