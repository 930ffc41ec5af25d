"""The trace context sent with outgoing requests (to engines and MCP servers), as `traceparent`.

Empty unless traces are on: then tracing.py sets `inject`, which adds the current span's
context to a dict of headers. Callers test `inject is None` first, so traces off cost one
attribute read.
"""

from __future__ import annotations

from collections.abc import Callable

inject: Callable[[dict[str, str]], None] | None = None


def outgoing(headers: dict[str, str]) -> dict[str, str]:
    """These headers plus the current trace context (a copy; the same dict when traces are off)."""
    if inject is None:
        return headers
    out = dict(headers)
    inject(out)
    return out
