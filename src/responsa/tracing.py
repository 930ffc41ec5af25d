"""OpenTelemetry traces (the `otel` extra): a span per HTTP request, with children for each store
operation, engine turn and server-side tool call (MCP, image generation, ...), exported over
OTLP/HTTP as the standard OTEL_* variables set it up (endpoint, headers, service name, sampler,
batch delays). The trace context goes to engines and MCP servers as `traceparent`
(tracecontext.py), and a client's own `traceparent` makes its trace the parent.

Off unless --traces or an OTLP endpoint variable is set (config.py); off, none of this is
imported and nothing is wrapped. The provider is this server's own (not the global one).
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Callable
from typing import Any, cast

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode

from . import __version__, tracecontext
from .backends import Backend, TurnEnd, TurnRequest
from .store import Store
from .tools import Outcome, ToolCall, ToolContext, ToolKind
from .toolwrap import Invoke, WrappedKind


class Tracing:
    def __init__(self) -> None:
        resource = Resource.create()
        if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
            resource = resource.merge(Resource({"service.name": "responsa"}))
        resource = resource.merge(Resource({"service.version": __version__}))
        self.provider = TracerProvider(resource=resource)
        self.provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        self.tracer = self.provider.get_tracer("responsa", __version__)
        tracecontext.inject = lambda headers: propagate.inject(headers)

    async def close(self) -> None:
        tracecontext.inject = None
        await asyncio.to_thread(self.provider.shutdown)  # sends what is still batched

    # ---- the request span (app.RequestIds) ----------------------------------------------------

    def start_request(self, scope: dict, request_id: str) -> tuple[trace.Span, object]:
        carrier = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]
                   if k in (b"traceparent", b"tracestate")}
        parent = propagate.extract(carrier) if carrier else None
        span = self.tracer.start_span(scope["method"], context=parent, kind=SpanKind.SERVER,
                                      attributes={"http.request.method": scope["method"], "url.path": scope["path"],
                                                  "responsa.request_id": request_id})
        return span, otel_context.attach(trace.set_span_in_context(span))

    @staticmethod
    def end_request(span: trace.Span, token: object, route: str | None, status: int, model: str | None) -> None:
        otel_context.detach(token)  # type: ignore[arg-type]
        if route is not None:
            span.update_name(f"{span.name} {route}")  # type: ignore[attr-defined]
            span.set_attribute("http.route", route)
        span.set_attribute("http.response.status_code", status)
        if model:
            span.set_attribute("gen_ai.request.model", model)
        if status >= 500:
            span.set_status(Status(StatusCode.ERROR))
        span.end()

    # ---- children -----------------------------------------------------------------------------

    def backend(self, backend: Backend) -> Backend:
        return TracedBackend(backend, self.tracer)

    def store(self, store: Store) -> Store:
        return TracedStore(store, self.tracer)

    def tool_kind(self, kind: ToolKind) -> ToolKind:
        """A server-side tool kind whose calls are spans (`tool TYPE`)."""
        tracer = self.tracer

        def around(entry: dict, invoke: Invoke) -> Invoke:
            name = f"tool {entry.get('type')}"

            async def traced_invoke(call: ToolCall, ctx: ToolContext) -> Outcome:
                with tracer.start_as_current_span(name, attributes={"gen_ai.operation.name": "execute_tool",
                                                                    "gen_ai.tool.name": call.name,
                                                                    "gen_ai.tool.call.id": call.call_id}):
                    return await invoke(call, ctx)

            return traced_invoke

        return cast(ToolKind, WrappedKind(kind, around))


class TracedBackend:
    """Each turn is a span (`chat MODEL`, as the GenAI conventions name it), current while the
    engine runs, so the engine's request carries its `traceparent`."""

    def __init__(self, inner: Backend, tracer: trace.Tracer) -> None:
        self.inner = inner
        self.name = inner.name
        self.tracer = tracer

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def turn(self, request: TurnRequest) -> AsyncIterator[Any]:
        span = self.tracer.start_span(f"chat {request.model}", kind=SpanKind.CLIENT,
                                      attributes={"gen_ai.operation.name": "chat",
                                                  "gen_ai.request.model": request.model,
                                                  "responsa.backend": self.name})
        ctx = trace.set_span_in_context(span)
        events = self.inner.turn(request)
        try:
            while True:
                # The span is current only while the engine's code runs, never across a yield.
                token = otel_context.attach(ctx)
                try:
                    ev = await events.__anext__()
                except StopAsyncIteration:
                    break
                finally:
                    otel_context.detach(token)
                if isinstance(ev, TurnEnd) and ev.usage is not None:
                    span.set_attribute("gen_ai.usage.input_tokens", ev.usage.input_tokens)
                    span.set_attribute("gen_ai.usage.output_tokens", ev.usage.output_tokens)
                    span.set_attribute("gen_ai.response.finish_reasons", [ev.finish_reason])
                yield ev
        except BaseException as e:
            if not isinstance(e, GeneratorExit | asyncio.CancelledError):
                span.record_exception(e)
                span.set_status(Status(StatusCode.ERROR, str(e)))
            raise
        finally:
            await events.aclose()  # type: ignore[attr-defined]
            span.end()


class TracedStore:
    """Each store operation made under a request's span (in the request, or in a stream or
    background run it started) is a child span of it; the server's own loops (leases, purges),
    with no span, are not traced."""

    def __init__(self, inner: Store, tracer: trace.Tracer) -> None:
        self.inner = inner
        for name, member in inspect.getmembers(type(inner)):
            if not name.startswith("_") and inspect.iscoroutinefunction(member):
                setattr(self, name, self._traced(name, getattr(inner, name), tracer))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    @staticmethod
    def _traced(name: str, operation: Callable[..., Any], tracer: trace.Tracer) -> Callable[..., Any]:
        span_name = "store " + name

        async def traced(*args: Any, **kwargs: Any) -> Any:
            if not trace.get_current_span().get_span_context().is_valid:
                return await operation(*args, **kwargs)
            with tracer.start_as_current_span(span_name, kind=SpanKind.CLIENT,
                                              attributes={"db.operation.name": name}):
                return await operation(*args, **kwargs)

        return traced
