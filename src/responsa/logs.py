"""Request ids, what the access log says about a request, and log lines as JSON.

Every HTTP request gets a `RequestInfo` in a context variable: its id (the client's
`x-request-id` when it sends a usable one), then, as the request is served, the name of its
key (never the key), its model, and the engine's tokens and time to first token. Tasks a
request starts (a stream's producer) inherit it, so their log lines carry the request id too.
"""

from __future__ import annotations

import asyncio
import logging
import re
import sys
import time
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from .ids import random_hex

# What a client-chosen request id may be: short, and nothing a log line or header could trip on.
CLIENT_REQUEST_ID = re.compile(rb"[A-Za-z0-9._~:@/+=-]{1,128}")


@dataclass(slots=True)
class RequestInfo:
    """What the access log and the metrics learn about one request while it is served."""

    id: str
    key: str | None = None  # the key's name
    model: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    first_token: float | None = None  # seconds from the engine call to its first output, first turn
    account: Any = None  # who the request is counted for (quotas.Account), once authenticated
    headers: list[tuple[bytes, bytes]] | None = None  # extra answer headers (the x-ratelimit-* ones)

    def add_usage(self, input_tokens: int, output_tokens: int) -> None:
        self.input_tokens += input_tokens
        self.output_tokens += output_tokens


current: ContextVar[RequestInfo | None] = ContextVar("responsa_request", default=None)


def request_id(headers: list[tuple[bytes, bytes]]) -> str:
    """The client's `x-request-id` if it is a usable one, else a new id."""
    for name, value in headers:
        if name == b"x-request-id":
            if CLIENT_REQUEST_ID.fullmatch(value):
                return value.decode()
            break
    return "req_" + random_hex(16)


def note_key(name: str) -> None:
    info = current.get()
    if info is not None:
        info.key = name


def note_model(model: str) -> None:
    info = current.get()
    if info is not None:
        info.model = model


def _utc(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class JSONFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the request id when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {"time": _utc(record.created), "level": record.levelname.lower(),
                                  "logger": record.name, "message": record.getMessage()}
        info = current.get()
        if info is not None:
            out["request_id"] = info.id
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(out).decode()


def configure(level: str, log_format: str) -> None:
    """The root logger on stderr, as text or as JSON lines."""
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JSONFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(getattr(logging, level.upper()))


class AccessLog:
    """One line per request on stderr, in the format of the other log lines, written in
    batches every 0.2 s: a logging record, a formatted timestamp and a write per request
    were about 6% of a plain request's CPU."""

    def __init__(self, log_format: str = "text") -> None:
        self.json = log_format == "json"
        self.lines: list[str] = []
        self.scheduled = False
        self._second = 0
        self._stamp = ""

    def add(self, client: str, method: str, path: str, status: int, ms: float, info: RequestInfo,
            route: str | None) -> None:
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second = second
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%S" if self.json else "%Y-%m-%d %H:%M:%S",
                                        time.gmtime(second) if self.json else time.localtime(second))
        millis = int((now - second) * 1000)
        if self.json:
            first = info.first_token
            self.lines.append(orjson.dumps({
                "time": f"{self._stamp}.{millis:03d}Z", "level": "info", "logger": "responsa.access",
                "request_id": info.id, "client": client, "method": method, "path": path, "route": route,
                "status": status, "duration_ms": round(ms, 2), "key": info.key, "model": info.model,
                "input_tokens": info.input_tokens, "output_tokens": info.output_tokens,
                "first_token_ms": round(first * 1000, 2) if first is not None else None,
            }).decode() + "\n")
        else:
            self.lines.append(f'{self._stamp},{millis:03d} INFO responsa.access: {client} '
                              f'"{method} {path}" {status} {ms:.1f}ms\n')
        if not self.scheduled:
            self.scheduled = True
            asyncio.get_running_loop().call_later(0.2, self.flush)

    def flush(self) -> None:
        self.scheduled = False
        if self.lines:
            data, self.lines = "".join(self.lines), []
            sys.stderr.write(data)
            sys.stderr.flush()
