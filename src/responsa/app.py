"""Composition root: builds the store, backends, service and routes; renders errors once."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import glob
import logging
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route
from starlette.routing import Router as Routes

from .computer import ComputerKind
from .config import Settings
from .endpoints import Auth, Endpoints, JSONResponse
from .errors import APIError
from .fetcher import Fetcher
from .files import FilesEndpoints
from .ids import random_hex
from .images import ImageGenerationKind
from .jobs import Jobs
from .mcp import MCPKind
from .media import Media
from .netguard import Guard
from .prepare import Preparer
from .reasoning import ReasoningVault
from .router import Router
from .run import DeferredWrites, LiveRuns
from .service import ResponsesService
from .store import open_store
from .tools import register_tool_kinds

log = logging.getLogger("responsa")
access_log = logging.getLogger("responsa.access")

# Both URL forms: OpenAI's /v1, Azure's /openai/v1 (api-version accepted and ignored) and the
# older Azure /openai form that `AzureOpenAI(azure_endpoint=...)` uses for /responses.
PREFIXES = ("/v1", "/openai/v1", "/openai")


def error_response(error: APIError) -> Response:
    headers = {**error.headers}
    if error.should_retry is not None:
        headers["x-should-retry"] = "true" if error.should_retry else "false"
    return JSONResponse(error.body(), status_code=error.status, headers=headers)


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


class AccessLog:
    """One line per request on stderr, in the format of the other log lines, written in
    batches every 0.2 s: a logging record, a formatted timestamp and a write per request
    were about 6% of a plain request's CPU."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.scheduled = False
        self._second = 0
        self._stamp = ""

    def add(self, client: str, method: str, path: str, status: int, ms: float) -> None:
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second, self._stamp = second, time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))
        self.lines.append(f'{self._stamp},{int((now - second) * 1000):03d} INFO responsa.access: {client} '
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


class RequestIds:
    """ASGI wrapper: an `x-request-id` on every answer, and one access-log line per request.

    It also takes `POST .../responses`, the one route every model call goes through, straight
    to its handler: Starlette's router, mounts and middleware layers cost about a tenth of a
    plain request's CPU. The handler is the same one the router would call, and errors are
    rendered the same way."""

    def __init__(self, app: Any, access: AccessLog | None, create_response: Any = None) -> None:
        self.app = app
        self.access = access
        self.create_response = create_response
        self.hot_paths = frozenset(f"{prefix}/responses" for prefix in PREFIXES)

    async def _direct(self, scope: dict, receive: Any, send: Any) -> None:
        try:
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
        request_id = "req_" + random_hex(16)
        started = time.perf_counter()
        status = 0

        async def send_with_id(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            if self.create_response is not None and scope["method"] == "POST" and scope["path"] in self.hot_paths:
                await self._direct(scope, receive, send_with_id)
            else:
                await self.app(scope, receive, send_with_id)
        finally:
            if self.access is not None:
                self.access.add((scope.get("client") or ("-",))[0], scope["method"], scope["path"], status,
                                (time.perf_counter() - started) * 1000)


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
    register_tool_kinds(MCPKind(), ImageGenerationKind(), ComputerKind())
    os.makedirs(settings.data_dir, exist_ok=True)
    store = open_store(settings.database_url, settings.data_dir, pool_size=settings.database_pool_size,
                       shared=worker is not None)
    router = Router(settings)
    instance = uuid.uuid4().hex
    vault = ReasoningVault(store, keys=settings.reasoning_key, retention=settings.retention)
    guard = Guard.from_settings(settings)
    fetcher = Fetcher(guard)  # every server-side download of a URL from a request goes through it
    media = Media(store, settings, fetcher)
    live = LiveRuns()
    unsaved, leftovers = unsaved_files(settings.data_dir, worker, settings.workers)
    deferred = DeferredWrites(store, unsaved)
    preparer = Preparer(store, router, settings, vault=vault, media=media, live=live, fetcher=fetcher)
    jobs = Jobs(store, preparer, live, max_runs=settings.max_background_runs, instance=instance,
                take_all_orphans=settings.database_url is None and alone, lease_seconds=settings.lease_duration)
    service = ResponsesService(store, router, settings, preparer=preparer, jobs=jobs, live=live, deferred=deferred,
                               vault=vault, media=media, instance=instance)
    auth = Auth(settings.api_key)
    endpoints = Endpoints(service, auth, max_body_size=settings.max_body_size,
                          keepalive_interval=settings.keepalive_interval)
    files = FilesEndpoints(store, auth, max_file_size=settings.max_file_size)

    access = AccessLog() if settings.access_log and access_log.isEnabledFor(logging.INFO) else None

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await store.open()
        await deferred.restore()  # finished streams a database outage kept from the last shutdown
        for path in leftovers:  # ... by workers of an earlier server (or the earlier single server)
            await DeferredWrites(store, path).restore()
        await vault.start()
        await router.start()
        await jobs.start()
        # What start-up created lives as long as the process: keep it out of GC passes.
        gc.collect()
        gc.freeze()
        log.info("responsa ready on http://%s:%d (store: %s)%s", settings.host, settings.port,
                 "postgresql" if settings.database_url else os.path.join(settings.data_dir, "responsa.db"),
                 "" if worker is None else f", worker {worker} of {settings.workers}")
        try:
            yield
        finally:
            await jobs.stop()
            await service.shutdown()
            await deferred.close()
            await fetcher.aclose()
            await router.aclose()
            await store.close()
            if access is not None:
                access.flush()

    # No trailing-slash redirects (Starlette's default, at every level): their Location is built
    # from the Host header, an open redirect for caches that forward it. Such paths are 404s.
    routes: list[Any] = [Mount(prefix, app=Routes(routes=[*endpoints.routes(), *files.routes()],
                                                  redirect_slashes=False)) for prefix in PREFIXES]
    routes.append(Route("/health", endpoints.health, methods=["GET"]))
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={APIError: _api_error, HTTPException: _http_error, Exception: _internal_error},
    )
    app.router.redirect_slashes = False
    app.state.service = service
    app.state.settings = settings
    return RequestIds(app, access, endpoints.create_response)
