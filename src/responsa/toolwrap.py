"""A tool kind whose server-side calls go through a wrapper: metrics time them (metrics.py),
traces make each one a span (tracing.py).

The kind's tools keep their own class (a kind may look for its tools among a run's), so each
built tool's `invoke` is replaced on the instance. Client-side tools (functions, computer use)
are never invoked here and are left as they are.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from .tools import Outcome, Tool, ToolCall, ToolContext, ToolKind

Invoke = Callable[[ToolCall, ToolContext], Awaitable[Outcome]]
# (the tools[] entry, the tool's own invoke) -> what runs in its place
Around = Callable[[dict, Invoke], Invoke]


class WrappedKind:
    def __init__(self, inner: ToolKind, around: Around) -> None:
        self.inner = inner
        self.types = inner.types
        self.around = around

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def check(self, entry: dict, param: str) -> dict:
        return self.inner.check(entry, param)

    def public(self, entry: dict) -> dict:
        return self.inner.public(entry)

    def check_history(self, history: Any, tools: Any, new_from: int) -> None:
        self.inner.check_history(history, tools, new_from)

    def build(self, entry: dict, ctx: ToolContext) -> Tool | list[Tool]:
        built = self.inner.build(entry, ctx)
        if isinstance(built, list):
            return [self._wrap(t, entry) for t in built]
        return self._wrap(built, entry)

    def _wrap(self, tool: Tool, entry: dict) -> Tool:
        if not tool.client_side:
            setattr(tool, "invoke", self.around(entry, tool.invoke))  # noqa: B010 (an instance attribute over the method)
        return tool
