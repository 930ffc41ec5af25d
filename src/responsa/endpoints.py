"""HTTP glue: authenticate, parse, call the service, answer JSON or SSE. Nothing else."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any, TypeVar, get_args

import orjson
from starlette.requests import ClientDisconnect, HTTPConnection, Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from . import checks as c
from .context import ContextService
from .errors import APIError, InvalidRequest, PayloadTooLarge, RequestTimeout, Unauthorized
from .feed import Event, Feed
from .keys import KeyRing
from .logs import note_key, note_model
from .protocol import INCLUDABLE, parse_create
from .quotas import Quotas
from .service import ResponsesService
from .shapes import Status
from .store import ResponseQuery
from .tools import ignored_tool_types

T = TypeVar("T")
ANONYMOUS = "local"
# Request headers that tools may read.
FORWARDED_HEADERS = ("x-ms-oai-image-generation-deployment",)
SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}
KEEPALIVE = b": keep-alive\n\n"


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def error_response(error: APIError) -> Response:
    """An error as the OpenAI envelope, with its status (and `x-should-retry` when it has one)."""
    headers = {**error.headers}
    if error.should_retry is not None:
        headers["x-should-retry"] = "true" if error.should_retry else "false"
    return JSONResponse(error.body(), status_code=error.status, headers=headers)


def owner_for_key(key: str) -> str:
    """The owner id of an API key: a hash, so keys themselves are never stored."""
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def key_name(owner: str) -> str:
    """What logs call a `--api-key` key: never the key, a prefix of its owner id."""
    return "key-" + owner[:8]


class Auth:
    """API keys -> owners: the `--api-key` keys, then those of the store (`responsa keys`).
    Without either, every caller is the one local owner."""

    def __init__(self, keys: Iterable[str], ring: KeyRing | None = None, quotas: Quotas | None = None,
                 admin_keys: Iterable[str] = ()) -> None:
        self.owners = {k: owner_for_key(k) for k in keys}
        self.names = {k: key_name(owner) for k, owner in self.owners.items()}
        self.ring = ring
        self.quotas = quotas  # the limits of store keys
        self.admin_keys = [k.encode() for k in admin_keys]

    def is_admin(self, key: str | None) -> bool:
        """Whether `key` is an `--admin-key` (which reads every owner's responses, and is no API key)."""
        if key is None or not self.admin_keys:
            return False
        sent = key.encode()
        return any([hmac.compare_digest(sent, admin) for admin in self.admin_keys])

    async def __call__(self, request: HTTPConnection) -> str:
        """The caller's owner id, from a request's or a WebSocket handshake's headers."""
        return await self.owner(request_key(request))

    async def reader(self, request: HTTPConnection) -> str | None:
        """Whose responses a listing shows: the caller's, or every owner's (None) for an admin key."""
        key = request_key(request)
        if self.is_admin(key):
            note_key("admin")
            return None
        return await self.owner(key)

    async def owner(self, key: str | None) -> str:
        """The owner id of a key (the one local owner when the server has no keys)."""
        if not self.owners and (self.ring is None or not await self.ring.in_use()):
            return ANONYMOUS
        if key is None:
            raise Unauthorized("You didn't provide an API key. Send it as 'Authorization: Bearer KEY' or "
                               "'api-key: KEY'.", code="missing_api_key")
        owner = self.owners.get(key)
        if owner is not None:
            note_key(self.names[key])
            return owner
        found = await self.ring.find(key) if self.ring is not None else None
        if found is None:
            raise Unauthorized("Incorrect API key provided.")
        note_key(found.name)
        if self.quotas is not None:
            await self.quotas.admit(found)
        return found.owner


def request_key(request: HTTPConnection) -> str | None:
    """The API key a request sends (`api-key`, or `Authorization: Bearer`)."""
    headers = request.headers
    key = headers.get("api-key")
    if key is None:
        auth = headers.get("authorization")
        if auth is not None and auth[:7].lower() == "bearer ":
            key = auth[7:].strip()
    return key


async def read_json(request: Request, limit: int, *, empty: Any = None) -> Any:
    """The JSON body; an empty body is a 400 unless `empty` says what it stands for."""
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise PayloadTooLarge(f"The request body is larger than the limit of {limit} bytes.")
    chunks = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"The request body is larger than the limit of {limit} bytes.")
            chunks.append(chunk)
    except ClientDisconnect:  # gone, or cut off by --request-read-timeout
        raise RequestTimeout("The request body was not received in time.") from None
    raw = b"".join(chunks)
    if not raw and empty is not None:
        return empty
    if not raw:
        raise InvalidRequest("The request body is empty; expected a JSON object.", code="invalid_json")
    return await off_the_loop(_decode, raw, len(raw))


def _decode(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise InvalidRequest(f"We could not parse the JSON body of your request ({e.msg} at position {e.pos}).",
                             code="invalid_json") from e


LARGE_BODY = 256 * 1024  # bytes past which decoding and checking a body runs in a worker thread


async def off_the_loop(fn: Callable[..., T], arg: Any, size: int) -> T:
    """`fn(arg)`, in a worker thread when the body is large: checking 100k items takes a fraction of a
    second, which would stall every other request; the thread yields the GIL to the loop meanwhile."""
    if size <= LARGE_BODY:
        return fn(arg)
    return await asyncio.to_thread(fn, arg)


def query_include(request: Request) -> tuple[str, ...]:
    values = request.query_params.getlist("include[]") + request.query_params.getlist("include")
    for i, value in enumerate(values):
        if value not in INCLUDABLE:
            raise c.bad_value(f"include[{i}]", value, INCLUDABLE)
    return tuple(values)


def query_bool(request: Request, name: str) -> bool:
    value = request.query_params.get(name)
    if value is None:
        return False
    if value.lower() in ("true", "1"):
        return True
    if value.lower() in ("false", "0"):
        return False
    raise InvalidRequest(f"Invalid value for '{name}': expected true or false.", param=name, code="invalid_value")


def query_int(request: Request, name: str, lo: int, hi: int = c.MAX_STORED_INT,
              default: int | None = None) -> int | None:
    value = request.query_params.get(name)
    if value is None:
        return default
    try:
        if not value.isascii() or "_" in value:  # int() also reads other scripts' digits, and 1_000
            raise ValueError(value)
        number = int(value)
    except ValueError:
        raise InvalidRequest(f"Invalid value for '{name}': expected an integer.", param=name,
                             code="invalid_type") from None
    if not lo <= number <= hi:
        raise InvalidRequest(f"Invalid value for '{name}': expected an integer between {lo} and {hi}, got {number}.",
                             param=name, code="invalid_value")
    return number


STATUSES: tuple[str, ...] = get_args(Status)  # what a listing may filter by
MAX_FILTER = 512  # characters of a listing's text, model or metadata filter


def listing_query(request: Request, owner: str | None, default_limit: int = 20) -> ResponseQuery:
    """A response listing's query parameters: limit, order, after, before, model, status,
    created_after, created_before, metadata[KEY]=VALUE, search. Empty values count as absent
    (the console's filter form sends every field)."""
    params = request.query_params

    def text(name: str) -> str | None:
        value = params.get(name) or None
        if value is not None and len(value) > MAX_FILTER:
            raise InvalidRequest(f"Invalid '{name}': at most {MAX_FILTER} characters.", param=name,
                                 code="string_above_max_length")
        return value

    order = params.get("order") or "desc"
    if order not in ("asc", "desc"):
        raise c.bad_value("order", order, ("asc", "desc"))
    status = text("status")
    if status is not None and status not in STATUSES:
        raise c.bad_value("status", status, STATUSES)
    metadata = []
    for name, value in params.multi_items():
        if name.startswith("metadata[") and name.endswith("]") and value:
            metadata.append((name[9:-1], value))
            text(name)
    if len(metadata) > 16:
        raise InvalidRequest("Invalid 'metadata': at most 16 filters.", param="metadata", code="invalid_value")
    limit = query_int(request, "limit", lo=1, hi=100, default=default_limit)
    assert limit is not None
    return ResponseQuery(owner=owner, limit=limit, order=order, after=text("after"), before=text("before"),
                         model=text("model"), status=status, metadata=tuple(metadata), text=text("search"),
                         created_after=query_int(request, "created_after", lo=0) if params.get("created_after")
                         else None,
                         created_before=query_int(request, "created_before", lo=0) if params.get("created_before")
                         else None)


class EventStream(Response):
    """A Server-Sent Events response that stops its producer when the client disconnects.

    Leaner than Starlette's StreamingResponse (no task group per request): a waiter on
    `receive()` cancels the sending task if the client goes away mid-stream, which closes
    the body iterator and so stops the engine.
    """

    media_type = "text/event-stream"

    def __init__(self, body: AsyncIterator[bytes], headers: dict[str, str] | None = None) -> None:
        self.body_iterator = body
        self.status_code = 200
        self.background = None
        self.init_headers({**SSE_HEADERS, **(headers or {})})

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        task = asyncio.current_task()
        assert task is not None
        disconnected = False

        def on_disconnect(waiter: asyncio.Future) -> None:
            nonlocal disconnected
            if not waiter.cancelled():
                disconnected = True
                task.cancel()

        watcher = asyncio.ensure_future(_wait_disconnect(receive))
        watcher.add_done_callback(on_disconnect)
        body = self.body_iterator
        try:
            async for chunk in body:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except asyncio.CancelledError:
            if not disconnected:
                raise
            task.uncancel()
            return
        finally:
            watcher.cancel()
            await body.aclose()  # type: ignore[attr-defined]
        await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _wait_disconnect(receive: Any) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


def sse_frames(batch: list[Event]) -> bytes:
    """Stream events as SSE: `event:` + `data:` + a blank line each."""
    return b"".join(b"event: " + ev["type"].encode() + b"\ndata: " + orjson.dumps(ev) + b"\n\n" for ev in batch)


async def sse_body(feed: Feed, keepalive_interval: float) -> AsyncIterator[bytes]:
    """A feed as an SSE body: what is queued in one write, a comment when nothing comes for a while."""
    try:
        while True:
            events = await feed.get(keepalive_interval)
            if events is None:
                return
            yield sse_frames(events) if events else KEEPALIVE
    finally:
        feed.abandon()  # the client went away (or the feed ended): stop the producer if it still runs


class Endpoints:
    """The API's routes, bound to one service."""

    def __init__(self, service: ResponsesService, auth: Auth, *, max_body_size: int,
                 keepalive_interval: float, context: ContextService) -> None:
        self.service = service
        self.context = context
        self.auth = auth
        self.max_body_size = max_body_size
        self.keepalive_interval = keepalive_interval

    def sse(self, feed: Feed, headers: dict[str, str] | None = None) -> Response:
        return EventStream(sse_body(feed, self.keepalive_interval), headers)

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/responses", self.create_response, methods=["POST"]),
            Route("/responses", self.list_responses, methods=["GET"]),
            Route("/responses/compact", self.compact, methods=["POST"]),
            Route("/responses/input_tokens", self.input_tokens, methods=["POST"]),
            Route("/responses/{response_id}", self.get_response, methods=["GET"]),
            Route("/responses/{response_id}", self.delete_response, methods=["DELETE"]),
            Route("/responses/{response_id}/cancel", self.cancel_response, methods=["POST"]),
            Route("/responses/{response_id}/input_items", self.list_input_items, methods=["GET"]),
            Route("/models", self.list_models, methods=["GET"]),
            Route("/models/{model:path}", self.get_model, methods=["GET"]),
            Route("/health", self.health, methods=["GET"]),
            Route("/health/live", self.live, methods=["GET"]),
        ]

    async def create_response(self, request: Request) -> Response:
        owner = await self.auth(request)
        body = await read_json(request, self.max_body_size)
        headers = request.headers
        forwarded = {name: headers[name] for name in FORWARDED_HEADERS if name in headers}
        size = int(headers.get("content-length") or 0)
        req = await off_the_loop(lambda b: parse_create(b, forwarded), body, size)
        note_model(req.model)
        result = await self.service.create(req, owner)
        extra = {}
        ignored = ignored_tool_types(req.tools)
        if ignored:
            extra["x-responsa-ignored-tools"] = ",".join(ignored)
        if isinstance(result, Feed):
            return self.sse(result, extra)
        return JSONResponse(result, headers=extra)

    async def list_responses(self, request: Request) -> Response:
        """`GET /responses`, an extension: the caller's stored responses, newest first (every owner's
        for the admin key), in the list shape of the API's other listings."""
        owner = await self.auth.reader(request)
        return JSONResponse(await self.service.list_responses(listing_query(request, owner)))

    async def compact(self, request: Request) -> Response:
        owner = await self.auth(request)
        return JSONResponse(await self.context.compact(await read_json(request, self.max_body_size), owner))

    async def input_tokens(self, request: Request) -> Response:
        owner = await self.auth(request)
        return JSONResponse(await self.context.input_tokens(await read_json(request, self.max_body_size), owner))

    async def get_response(self, request: Request) -> Response:
        owner = await self.auth(request)
        rid = request.path_params["response_id"]
        include = query_include(request)
        if query_bool(request, "stream"):
            after = query_int(request, "starting_after", lo=-1)
            return self.sse(await self.service.follow(rid, owner, after))
        return JSONResponse(await self.service.retrieve(rid, owner, include))

    async def delete_response(self, request: Request) -> Response:
        owner = await self.auth(request)
        return JSONResponse(await self.service.delete(request.path_params["response_id"], owner))

    async def cancel_response(self, request: Request) -> Response:
        owner = await self.auth(request)
        return JSONResponse(await self.service.cancel(request.path_params["response_id"], owner))

    async def list_input_items(self, request: Request) -> Response:
        owner = await self.auth(request)
        include = query_include(request)
        order = request.query_params.get("order", "desc")
        if order not in ("asc", "desc"):
            raise c.bad_value("order", order, ("asc", "desc"))
        limit = query_int(request, "limit", lo=1, hi=100, default=20)
        assert limit is not None
        page = await self.service.input_items(
            request.path_params["response_id"], owner, after=request.query_params.get("after"),
            before=request.query_params.get("before"), limit=limit, order=order, include=include)
        return JSONResponse(page)

    async def list_models(self, request: Request) -> Response:
        await self.auth(request)
        names = await self.service.models()
        return JSONResponse({"object": "list", "data": [_model(n) for n in names]})

    async def get_model(self, request: Request) -> Response:
        await self.auth(request)
        name = request.path_params["model"]
        self.service.check_model(name)
        return JSONResponse(_model(name))

    async def live(self, request: Request) -> Response:
        """Liveness: the process answers. Readiness (`/health`) also needs the model and database."""
        return JSONResponse({"status": "ok"})

    async def health(self, request: Request) -> Response:
        model_ready, database = await self.service.ready()
        ready = model_ready and database
        body = {"status": "ok" if ready else "starting" if database else "unavailable",
                "model_ready": model_ready, "database": database}
        return JSONResponse(body, status_code=200 if ready else 503)


def _model(name: str) -> dict:
    return {"id": name, "object": "model", "created": 0, "owned_by": "responsa"}
