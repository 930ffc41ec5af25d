"""Prometheus metrics (`--metrics-port`), kept off the API's port and off its hot path.

Nothing here runs unless metrics are on. The composition root then wraps what it builds:
each backend (time to first token, tokens, engine errors), the store (latency of every
operation, outages), the server-side tool kinds (call latency, MCP listings), and counts every
HTTP request at the edge (`RequestIds`). What is a state rather than an event (queued and
running background runs, live streams, queue depths) is read when Prometheus scrapes.
Each metric object with its labels is looked up once and cached, so a request pays a dict
lookup and a few additions.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, cast

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .backends import Backend
from .errors import ServiceUnavailable
from .observed import ObservedBackend
from .run import LiveRuns, Mode
from .store import Store
from .tools import Outcome, ToolCall, ToolContext, ToolKind
from .toolwrap import Invoke, WrappedKind

log = logging.getLogger("responsa.metrics")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Requests last from milliseconds (a retrieve) to minutes (a long stream).
REQUEST_BUCKETS = (.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
FIRST_TOKEN_BUCKETS = (.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60)
TOOL_BUCKETS = (.01, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120)
STORE_BUCKETS = (.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 5)
OTHER = "other"


class Labels:
    """Label values taken from requests (model names), capped so that a client sending random
    names cannot grow the series without bound: past `limit` names, new ones count as `other`."""

    def __init__(self, limit: int = 100) -> None:
        self.limit = limit
        self.seen: set[str] = set()

    def __call__(self, value: str | None) -> str:
        if value is None:
            return ""
        if value in self.seen:
            return value
        if len(self.seen) >= self.limit:
            return OTHER
        self.seen.add(value)
        return value


class Metrics:
    """Every metric of one server process, in a registry of its own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.models = Labels()
        self.requests = Counter("responsa_http_requests", "HTTP requests answered, by route, method, status "
                                "and model.", ("route", "method", "status", "model"), registry=r)
        self.request_seconds = Histogram("responsa_http_request_duration_seconds", "Time from a request's "
                                         "arrival to the end of its answer (the whole stream for SSE).",
                                         ("route", "method", "status", "model"), buckets=REQUEST_BUCKETS,
                                         registry=r)
        self.first_token = Histogram("responsa_engine_time_to_first_token_seconds", "Time from an engine turn's "
                                     "start to its first output (text, reasoning, refusal or tool call).",
                                     ("backend", "model"), buckets=FIRST_TOKEN_BUCKETS, registry=r)
        self.tokens = Counter("responsa_engine_tokens", "Tokens the engines reported, by kind (input, output, "
                              "cached, reasoning).", ("backend", "model", "kind"), registry=r)
        self.engine_errors = Counter("responsa_engine_errors", "Engine turns that failed, by kind (the error "
                                     "code, or internal).", ("backend", "kind"), registry=r)
        self.tool_seconds = Histogram("responsa_tool_call_duration_seconds", "Server-side tool calls (MCP, "
                                      "image generation, ...), by tool type.", ("type",), buckets=TOOL_BUCKETS,
                                      registry=r)
        self.mcp_list_seconds = Histogram("responsa_mcp_list_tools_duration_seconds", "Listing an MCP server's "
                                          "tools (a chain that listed them already reuses that listing).",
                                          buckets=TOOL_BUCKETS, registry=r)
        self.store_seconds = Histogram("responsa_store_operation_duration_seconds", "Store operations, by "
                                       "operation.", ("operation",), buckets=STORE_BUCKETS, registry=r)
        self.store_unavailable = Counter("responsa_store_unavailable", "Store operations refused because the "
                                         "database was unavailable (an outage, a full disk).", ("operation",),
                                         registry=r)
        self._requests: dict[tuple[str, str, int, str | None], tuple[Any, Any]] = {}
        self.store_up = True
        self._state: StateCollector | None = None

    # ---- the edge -----------------------------------------------------------------------------

    def request(self, route: str, method: str, status: int, model: str | None, seconds: float) -> None:
        key = (route, method, status, model)
        pair = self._requests.get(key)
        if pair is None:
            labels = (route, method, str(status), self.models(model))
            pair = self._requests[key] = (self.requests.labels(*labels), self.request_seconds.labels(*labels))
        pair[0].inc()
        pair[1].observe(seconds)

    # ---- what the composition root wraps --------------------------------------------------------

    def backend(self, backend: Backend) -> Backend:
        return cast(Backend, ObservedBackend(backend, self))

    def store(self, store: Store) -> Store:
        return cast(Store, MeteredStore(store, self))

    def tool_kind(self, kind: ToolKind) -> ToolKind:
        """A server-side tool kind whose calls are timed. (MCP times its own round trips, through
        `mcp`: an approved call runs before the first turn, not in `invoke`.)"""

        def around(entry: dict, invoke: Invoke) -> Invoke:
            calls = self.tool_seconds.labels(str(entry.get("type")))

            async def timed_invoke(call: ToolCall, ctx: ToolContext) -> Outcome:
                started = time.perf_counter()
                try:
                    return await invoke(call, ctx)
                finally:
                    calls.observe(time.perf_counter() - started)

            return timed_invoke

        return cast(ToolKind, WrappedKind(kind, around))

    def mcp(self, operation: str, seconds: float) -> None:
        """One round trip to an MCP server: a tool listing or a call."""
        if operation == "list_tools":
            self.mcp_list_seconds.observe(seconds)
        else:
            self.tool_seconds.labels("mcp").observe(seconds)

    def watch(self, live: LiveRuns, followers: Callable[[], int], draining: Callable[[], bool],
              backends: Callable[[], Iterable[Backend]]) -> None:
        """Report this process's state at each scrape."""
        self._state = StateCollector(self, live, followers, draining, backends)
        self.registry.register(self._state)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class StateCollector(Collector):
    """Gauges read at scrape time from the live structures of this process."""

    def __init__(self, metrics: Metrics, live: LiveRuns, followers: Callable[[], int],
                 draining: Callable[[], bool], backends: Callable[[], Iterable[Backend]]) -> None:
        self.metrics, self.live, self.followers = metrics, live, followers
        self.draining, self.backends = draining, backends

    def collect(self) -> Iterator[Metric]:
        queued = running = streams = 0
        for run, _task in self.live.entries():
            if run.mode is Mode.BACKGROUND:
                if run.started:
                    running += 1
                else:
                    queued += 1
            elif run.mode is Mode.STREAM:
                streams += 1
        runs = GaugeMetricFamily("responsa_background_runs", "Background runs held by this process, by state.",
                                 labels=("state",))
        runs.add_metric(("queued",), queued)
        runs.add_metric(("in_progress",), running)
        yield runs
        yield GaugeMetricFamily("responsa_background_queue_depth", "Background runs waiting here for a slot "
                                "(--max-background-runs).", value=queued)
        yield GaugeMetricFamily("responsa_live_streams", "Streamed responses being produced by this process.",
                                value=streams)
        yield GaugeMetricFamily("responsa_stream_followers", "Streams following a background run "
                                "(GET /responses/{id}?stream=true) open on this process.", value=self.followers())
        depth = GaugeMetricFamily("responsa_engine_queue_depth", "Requests waiting for a busy embedded model.",
                                  labels=("backend",))
        for backend in self.backends():
            waiting = getattr(backend, "waiting", None)
            if isinstance(waiting, int):
                depth.add_metric((backend.name,), waiting)
        yield depth
        yield GaugeMetricFamily("responsa_store_up", "1 while the store's last operation succeeded, 0 while the "
                                "database is unavailable.", value=1 if self.metrics.store_up else 0)
        yield GaugeMetricFamily("responsa_draining", "1 once a SIGTERM started the drain.",
                                value=1 if self.draining() else 0)


# ---- wrappers ---------------------------------------------------------------------------------------

class MeteredStore:
    """A store whose every operation is timed, and whose outages are counted."""

    def __init__(self, inner: Store, metrics: Metrics) -> None:
        self.inner = inner
        self.metrics = metrics
        for name, member in inspect.getmembers(Store):
            if not name.startswith("_") and inspect.iscoroutinefunction(member) and hasattr(inner, name):
                setattr(self, name, self._timed(name, getattr(inner, name)))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def _timed(self, name: str, operation: Callable[..., Any]) -> Callable[..., Any]:
        seconds = self.metrics.store_seconds.labels(name)
        refused = self.metrics.store_unavailable.labels(name)
        metrics = self.metrics

        async def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                result = await operation(*args, **kwargs)
            except ServiceUnavailable:
                refused.inc()
                metrics.store_up = False
                raise
            seconds.observe(time.perf_counter() - started)
            if name == "ping":
                metrics.store_up = bool(result)
            elif not metrics.store_up:
                metrics.store_up = True
            return result

        return timed


# ---- the scrape endpoint ------------------------------------------------------------------------------

class MetricsServer:
    """`GET /metrics` on a port of its own: a minimal HTTP/1.1 server on the event loop, one
    request per connection (Prometheus scrapes a few times a minute)."""

    def __init__(self, metrics: Metrics, host: str, port: int) -> None:
        self.metrics, self.host, self.port = metrics, host, port
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        try:
            self._server = await asyncio.start_server(self._serve, self.host, self.port)
        except OSError as e:
            raise RuntimeError(f"cannot serve metrics on {self.host}:{self.port} (--metrics-port): {e}") from e
        log.info("metrics on http://%s:%d/metrics", self.host, self.port)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(10):
                head = await reader.readuntil(b"\r\n\r\n")
            parts = head.split(b"\r\n", 1)[0].split(b" ")
            method, path = (parts[0], parts[1].split(b"?", 1)[0]) if len(parts) == 3 else (b"", b"")
            if method not in (b"GET", b"HEAD"):
                status, body, kind = "405 Method Not Allowed", b"GET /metrics only\n", "text/plain"
            elif path == b"/metrics":
                status, body, kind = "200 OK", self.metrics.exposition(), CONTENT_TYPE
            else:
                status, body, kind = "404 Not Found", b"GET /metrics only\n", "text/plain"
            writer.write(f"HTTP/1.1 {status}\r\ncontent-type: {kind}\r\ncontent-length: {len(body)}\r\n"
                         "connection: close\r\n\r\n".encode() + (body if method != b"HEAD" else b""))
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        finally:
            writer.close()
