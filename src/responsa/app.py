"""Composition root: builds the store, backends, service and routes; renders errors once."""

from __future__ import annotations

import contextlib
import gc
import glob
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any, cast

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route
from starlette.routing import Router as Routes

from .admin import AdminEndpoints
from .backends import Backend
from .computer import ComputerKind
from .config import ConfigError, Settings
from .context import ContextService
from .conversation_endpoints import ConversationEndpoints
from .conversations import Conversations
from .drain import Drain
from .endpoints import Auth, Endpoints, JSONResponse, error_response
from .errors import APIError, ServiceUnavailable
from .fetcher import Fetcher
from .files import FilesEndpoints
from .images import ImageGenerationKind
from .jobs import Jobs
from .keys import KeyRing
from .logs import AccessLog, RequestInfo, current, request_id
from .mcp import MCPKind
from .media import Media
from .namespaces import NamespaceKind
from .netguard import Guard
from .prepare import Preparer
from .quotas import Quotas
from .reasoning import ReasoningVault
from .router import Router
from .run import DeferredWrites, LiveRuns
from .searchproviders import search_provider
from .service import ResponsesService
from .store import open_store
from .tools import ToolKind, register_tool_kinds, unregister_tool_kinds
from .toolsearch import ToolSearchKind
from .usage import Accounting, UsageMeter
from .vectors.service import VectorStores
from .vectors.tool import FileSearchKind
from .websearch import WebSearchKind
from .websocket import ResponsesSocket

if TYPE_CHECKING:
    from .metrics import Metrics
    from .tracing import Tracing

log = logging.getLogger("responsa")
access_log = logging.getLogger("responsa.access")

# Both URL forms: OpenAI's /v1, Azure's /openai/v1 (api-version accepted and ignored) and the
# older Azure /openai form that `AzureOpenAI(azure_endpoint=...)` uses for /responses.
PREFIXES = ("/v1", "/openai/v1", "/openai")


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, APIError)
    return error_response(exc)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    kinds = {404: ("not_found_error", "Unknown path: " + request.url.path),
             405: ("invalid_request_error", f"Method {request.method} is not allowed on {request.url.path}.")}
    kind, message = kinds.get(exc.status_code, ("invalid_request_error", str(exc.detail)))
    body = {"error": {"message": message, "type": kind, "param": None, "code": None}}
    return JSONResponse(body, status_code=exc.status_code, headers=getattr(exc, "headers", None))


async def _internal_error(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    body = {"error": {"message": "The server had an internal error.", "type": "server_error", "param": None,
                      "code": "server_error"}}
    return JSONResponse(body, status_code=500)


class RequestIds:
    """ASGI wrapper: an `x-request-id` on every answer (the client's own, when it sends a usable
    one), one access-log line and, with metrics on, one count per request.

    It also takes `POST .../responses`, the one route every model call goes through, straight
    to its handler: Starlette's router, mounts and middleware layers cost about a tenth of a
    plain request's CPU. The handler is the same one the router would call, and errors are
    rendered the same way."""

    def __init__(self, app: Any, access: AccessLog | None, create_response: Any = None, *,
                 metrics: Metrics | None = None, drain: Drain | None = None, tracing: Tracing | None = None) -> None:
        self.app = app
        self.tracing = tracing
        self.access = access
        self.create_response = create_response
        self.metrics = metrics
        self.drain = drain  # cli.py runs its stop on SIGTERM
        self.hot_paths = frozenset(f"{prefix}/responses" for prefix in PREFIXES)

    async def _direct(self, scope: dict, receive: Any, send: Any) -> None:
        try:
            if self.drain is not None and self.drain.draining:
                raise ServiceUnavailable("The server is shutting down; retry.", headers={"retry-after": "1",
                                                                                         "connection": "close"})
            response = await self.create_response(Request(scope, receive))
        except APIError as e:
            response = error_response(e)
        except Exception as e:
            response = await _internal_error(Request(scope, receive), e)
        await response(scope, receive, send)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        info = RequestInfo(request_id(scope["headers"]))
        current.set(info)
        started = time.perf_counter()
        status = 0
        header = (b"x-request-id", info.id.encode())

        async def send_with_id(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), header, *(info.headers or ())]
            await send(message)

        hot = False
        traced = self.tracing.start_request(scope, info.id) if self.tracing is not None else None
        try:
            if self.create_response is not None and scope["method"] == "POST" and scope["path"] in self.hot_paths:
                hot = True
                await self._direct(scope, receive, send_with_id)
            else:
                await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            if self.metrics is not None or self.access is not None or traced is not None:
                matched = scope.get("route")  # set by Starlette's router: the innermost route (or mount) matched
                route = "/responses" if hot else matched.path if isinstance(matched, Route) else None
                if traced is not None:
                    self.tracing.end_request(*traced, route, status, info.model)  # type: ignore[union-attr]
                if self.metrics is not None:
                    self.metrics.request(route or "unmatched", scope["method"], status, info.model, elapsed)
                if self.access is not None:
                    self.access.add((scope.get("client") or ("-",))[0], scope["method"], scope["path"], status,
                                    elapsed * 1000, info, route)


def _socket_access(access: AccessLog) -> Callable[[str, str, str, int, float], None]:
    """The WebSocket edge's access lines (a handshake, each `response.create`) in the access log."""

    def add(client: str, method: str, path: str, status: int, ms: float) -> None:
        access.add(client, method, path, status, ms, current.get() or RequestInfo(id="-"), None)

    return add


def unsaved_files(data_dir: str, worker: int | None, workers: int) -> tuple[str, list[str]]:
    """Where this process keeps, at shutdown, finished responses a database outage left unsaved
    (one file per worker: they stop at the same moment), and the other such files it stores at
    start: worker 0 (or a single server) takes those no running worker owns."""
    own = os.path.join(data_dir, "unsaved-responses.jsonl" if worker is None else f"unsaved-responses-{worker}.jsonl")
    if worker not in (None, 0):
        return own, []
    owned = {f"unsaved-responses-{n}.jsonl" for n in range(workers)} if worker is not None else set()
    found = glob.glob(os.path.join(glob.escape(data_dir), "unsaved-responses*.jsonl"))
    return own, sorted(p for p in found if p != own and os.path.basename(p) not in owned)


def create_app(settings: Settings, worker: int | None = None, *, alone: bool = True) -> Any:
    """The ASGI application for these settings (`worker`: its index under `--workers`; `alone`: no
    other process uses the database as it starts, so what a SQLite database has running was left
    by a server that stopped)."""
    metrics = None
    if settings.metrics_port is not None:
        from .metrics import Metrics  # prometheus_client is loaded only when metrics are on

        metrics = Metrics()
    tracing = None
    if settings.traces:
        try:
            from .tracing import Tracing  # the otel extra, loaded only when traces are on
        except ImportError as e:
            raise ConfigError(f"traces need the OpenTelemetry SDK: pip install 'responsa[otel]' ({e})") from e
        tracing = Tracing()
    kinds: list[ToolKind] = [ImageGenerationKind(), ComputerKind()]
    searcher = search_provider(settings)  # None: web_search tools stay accepted and ignored
    if searcher is not None:
        kinds.append(WebSearchKind(searcher))
    else:
        unregister_tool_kinds(*WebSearchKind.types)
    served: list[ToolKind] = [MCPKind(observe=metrics.mcp if metrics else None),
                              *(metrics.tool_kind(k) if metrics else k for k in kinds)]
    if tracing is not None:
        served = [tracing.tool_kind(k) for k in served]
    register_tool_kinds(*served, NamespaceKind(), ToolSearchKind())
    os.makedirs(settings.data_dir, exist_ok=True)
    store = open_store(settings.database_url, settings.data_dir, pool_size=settings.database_pool_size,
                       shared=worker is not None)
    if metrics is not None:
        store = metrics.store(store)
    if tracing is not None:
        store = tracing.store(store)
    router = Router(settings, wrap=_observed_backends(metrics, settings, tracing))
    instance = uuid.uuid4().hex
    vault = ReasoningVault(store, keys=settings.reasoning_key, retention=settings.retention)
    guard = Guard.from_settings(settings)
    fetcher = Fetcher(guard)  # every server-side download of a URL from a request goes through it
    media = Media(store, settings, fetcher)
    live = LiveRuns()
    unsaved, leftovers = unsaved_files(settings.data_dir, worker, settings.workers)
    deferred = DeferredWrites(store, unsaved)
    conversations = Conversations(store, settings, vault=vault, media=media, instance=instance)
    preparer = Preparer(store, router, settings, vault=vault, media=media, live=live, fetcher=fetcher,
                        conversations=conversations)
    jobs = Jobs(store, preparer, live, max_runs=settings.max_background_runs, instance=instance,
                take_all_orphans=settings.database_url is None and alone, lease_seconds=settings.lease_duration)
    service = ResponsesService(store, router, settings, preparer=preparer, jobs=jobs, live=live, deferred=deferred,
                               vault=vault, media=media, instance=instance)
    drain = Drain(live, jobs, store)
    quotas = Quotas(store, minute=settings.limit_minute, day=settings.limit_day, lease_seconds=settings.lease_duration)
    meter = UsageMeter(store, settings.usage_flush_interval)
    service.accounting = Accounting(meter, quotas)
    auth = Auth(settings.api_key, KeyRing(store), quotas, admin_keys=settings.admin_key)
    endpoints = Endpoints(service, auth, max_body_size=settings.max_body_size,
                          keepalive_interval=settings.keepalive_interval, context=ContextService(preparer, vault))
    files = FilesEndpoints(store, auth, max_file_size=settings.max_file_size)
    vectors = VectorStores(store, settings, instance=instance, take_all=settings.database_url is None and alone)
    search_kind = FileSearchKind(vectors)
    register_tool_kinds(metrics.tool_kind(search_kind) if metrics else search_kind)
    conversation_routes = ConversationEndpoints(conversations, auth, max_body_size=settings.max_body_size)

    access = AccessLog(settings.log_format) if settings.access_log and access_log.isEnabledFor(logging.INFO) \
        else None
    socket = ResponsesSocket(service, auth, idle_timeout=settings.websocket_idle_timeout,
                             access=_socket_access(access) if access is not None else None)
    metrics_server = None
    if metrics is not None:
        from .metrics import MetricsServer

        metrics.watch(live, lambda: len(jobs.followers), lambda: drain.draining, lambda: router.backends.values())
        # Under --workers each worker serves its own metrics, on the port plus its index.
        port = (settings.metrics_port or 0) + (worker or 0)
        metrics_server = MetricsServer(metrics, settings.metrics_host or settings.host, port)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await store.open()
        await deferred.restore()  # finished streams a database outage kept from the last shutdown
        for path in leftovers:  # ... by workers of an earlier server (or the earlier single server)
            await DeferredWrites(store, path).restore()
        await vault.start()
        await router.start()
        await jobs.start()
        quotas.start()
        meter.start()
        vectors.start()
        if metrics_server is not None:
            await metrics_server.start()
        # What start-up created lives as long as the process: keep it out of GC passes.
        gc.collect()
        gc.freeze()
        log.info("responsa ready on http://%s:%d (store: %s)%s", settings.host, settings.port,
                 "postgresql" if settings.database_url else os.path.join(settings.data_dir, "responsa.db"),
                 "" if worker is None else f", worker {worker} of {settings.workers}")
        try:
            yield
        finally:
            await drain.close()
            await jobs.stop()
            await vectors.stop()
            await service.shutdown()
            await quotas.close()
            await meter.close()
            await deferred.close()
            await fetcher.aclose()
            if searcher is not None:
                await searcher.aclose()
            await router.aclose()
            await store.close()
            if access is not None:
                access.flush()
            if metrics_server is not None:
                await metrics_server.close()
            if tracing is not None:
                await tracing.close()

    # No trailing-slash redirects (Starlette's default, at every level): their Location is built
    # from the Host header, an open redirect for caches that forward it. Such paths are 404s.
    api = [*endpoints.routes(), *files.routes(), *socket.routes(), *conversation_routes.routes(),
           *AdminEndpoints(store, meter, auth).routes(), *vectors.routes(auth, settings.max_body_size)]
    routes: list[Any] = [Mount(prefix, app=Routes(routes=api, redirect_slashes=False)) for prefix in PREFIXES]
    if settings.console_on:
        from .console import Console  # Jinja2 is loaded only when the console is on

        routes.extend(Console(service, conversations, auth, store, vectors).routes())
    routes.append(Route("/health", endpoints.health, methods=["GET"]))
    routes.append(Route("/health/live", endpoints.live, methods=["GET"]))
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={APIError: _api_error, HTTPException: _http_error, Exception: _internal_error},
    )
    app.router.redirect_slashes = False
    app.state.service = service
    app.state.settings = settings
    return RequestIds(app, access, endpoints.create_response, metrics=metrics, drain=drain, tracing=tracing)


def _observed_backends(metrics: Metrics | None, settings: Settings,
                       tracing: Tracing | None = None) -> Callable[[Backend], Backend] | None:
    """How the router wraps its backends: timed and counted with metrics on; with JSON logs,
    so that access lines carry tokens and the time to the first one; each turn a span with
    traces on."""
    wrap: Callable[[Backend], Backend] | None = None
    if metrics is not None:
        wrap = metrics.backend
    elif settings.log_format == "json":
        from .observed import ObservedBackend

        wrap = lambda backend: cast(Backend, ObservedBackend(backend, None))  # noqa: E731
    if tracing is None:
        return wrap
    inner = wrap
    return lambda backend: tracing.backend(inner(backend) if inner is not None else backend)
