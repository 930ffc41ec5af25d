"""What each engine turn tells the operator: time to first output, tokens, errors.

With metrics on they go to Prometheus (metrics.py); in any case tokens and the time to the
first output are noted on the request's `RequestInfo` for its access line. Kept apart from
metrics.py so that JSON logs without metrics never load the Prometheus client.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from .backends import (
    Backend,
    ReasoningDelta,
    ReasoningSummaryDelta,
    RefusalDelta,
    TextDelta,
    ToolCallDelta,
    TurnEnd,
    TurnEvent,
    TurnRequest,
)
from .errors import APIError
from .logs import current

if TYPE_CHECKING:
    from .metrics import Metrics

OUTPUT = (TextDelta, ToolCallDelta, ReasoningDelta, ReasoningSummaryDelta, RefusalDelta)


class ObservedBackend:
    """A backend whose turns are timed and counted (with metrics on) and noted on the access line."""

    def __init__(self, inner: Backend, metrics: Metrics | None) -> None:
        self.inner = inner
        self.name = inner.name
        self.metrics = metrics
        self._children: dict[str, tuple[Any, Any, Any]] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def _for(self, model: str) -> tuple[Any, Any, Any]:
        children = self._children.get(model)
        if children is None:
            assert self.metrics is not None
            m, label = self.metrics, self.metrics.models(model)
            children = self._children[model] = (m.first_token.labels(self.name, label),
                                                m.tokens.labels(self.name, label, "input"),
                                                m.tokens.labels(self.name, label, "output"))
        return children

    async def turn(self, request: TurnRequest) -> AsyncIterator[TurnEvent]:
        started = time.perf_counter()
        waiting = True
        info = current.get()
        metrics = self.metrics
        try:
            async with contextlib.aclosing(self.inner.turn(request)) as events:  # type: ignore[type-var]
                async for ev in events:
                    if waiting and isinstance(ev, OUTPUT):
                        waiting = False
                        seconds = time.perf_counter() - started
                        if metrics is not None:
                            self._for(request.model)[0].observe(seconds)
                        if info is not None and info.first_token is None:
                            info.first_token = seconds
                    elif isinstance(ev, TurnEnd) and ev.usage is not None:
                        usage = ev.usage
                        if metrics is not None:
                            children = self._for(request.model)
                            children[1].inc(usage.input_tokens)
                            children[2].inc(usage.output_tokens)
                            label = metrics.models(request.model)
                            if usage.cached_tokens:
                                metrics.tokens.labels(self.name, label, "cached").inc(usage.cached_tokens)
                            if usage.reasoning_tokens:
                                metrics.tokens.labels(self.name, label, "reasoning").inc(usage.reasoning_tokens)
                        if info is not None:
                            info.add_usage(usage.input_tokens, usage.output_tokens)
                    yield ev
        except APIError as e:
            if metrics is not None:
                metrics.engine_errors.labels(self.name, e.code or type(e).__name__).inc()
            raise
        except Exception:
            if metrics is not None:
                metrics.engine_errors.labels(self.name, "internal").inc()
            raise
