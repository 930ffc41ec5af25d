"""The WebSocket transport of /responses: one connection, many responses (docs/api.md).

The handshake is authenticated like any request: a bad key gets the HTTP 401 error envelope
before the upgrade. Then the client sends events, and each answer is one JSON message:

* `response.create` (the create body, plus `stream_id` and `generate`) goes through the same
  service call as `POST /responses` with `stream: true`, and each event of its feed goes out
  as a message (with the request's `stream_id`, if it gave one). Requests of one `stream_id`
  (a lane; no `stream_id` is a lane too) run one after another, lanes side by side.
* `response.steer` queues user input for a response running here (steering.py).

A request refused before its response exists gets an `error` event in the hosted shape,
`{"type": "error", "status": 400, "error": {...}}`, and the connection stays open. store=false
responses (and stored ones continuing them) are held in a bounded per-connection cache
(chaincache.py). A slow reader holds its lane's feed and so the engine (feed.py); a client that
goes away stops its responses as a disconnected HTTP stream does.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field

import orjson
from starlette.routing import BaseRoute, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from . import checks as c
from .chaincache import CachedChain, ChainCache
from .endpoints import FORWARDED_HEADERS, Auth, error_response
from .errors import APIError, InvalidRequest, RateLimited
from .feed import Event, Feed
from .ids import random_hex
from .logs import RequestInfo, current
from .protocol import parse_create
from .service import ResponsesService
from .steering import Steer, as_items, parse_steer, required_input, steer_id, with_steering

log = logging.getLogger("responsa.websocket")

LANES = 16  # lanes (stream_id values) with work at once on one connection
QUEUED = 16  # response.create events waiting in one lane
STEERS = 8  # steering submissions queued for one response
WAITING = 64  # responses whose queued steering waits for the client's tool output
RECENT = 256  # ids of responses that ended here: a late steer is told "completed", not "unknown"
ENVELOPE = frozenset({"type", "stream_id", "generate", "stream"})  # not create parameters
TERMINAL_EVENTS = frozenset({"response.completed", "response.incomplete", "response.failed"})
QUIET = 60.0  # seconds a lane waits on a silent feed before looking again (pings keep the socket)

Access = Callable[[str, str, str, int, float], None]


def error_event(error: APIError) -> Event:
    """A request's error as the hosted WebSocket `error` event."""
    return {"type": "error", "status": error.status,
            "error": {"type": error.type, "code": error.code, "message": error.message, "param": error.param}}


class ResponsesSocket:
    """The /responses WebSocket endpoint of one app."""

    def __init__(self, service: ResponsesService, auth: Auth, *, idle_timeout: float,
                 access: Access | None = None) -> None:
        self.service = service
        self.auth = auth
        self.idle_timeout = idle_timeout
        self.access = access

    def routes(self) -> list[BaseRoute]:
        return [WebSocketRoute("/responses", self.connect)]

    async def connect(self, websocket: WebSocket) -> None:
        started = time.perf_counter()
        request_id = "req_" + random_hex(16)
        # What the handshake learns (the key, who its responses are counted for) holds for the connection.
        current.set(RequestInfo(request_id))
        try:
            owner = await self.auth(websocket)
        except APIError as e:
            await refuse(websocket, e, request_id)
            self.log(websocket, e.status, started)
            return
        await websocket.accept(headers=[(b"x-request-id", request_id.encode())])
        self.log(websocket, 101, started)
        await Connection(self, websocket, owner).serve()

    def log(self, websocket: WebSocket, status: int, started: float) -> None:
        if self.access is not None:
            client = websocket.client.host if websocket.client else "-"
            self.access(client, "WS", websocket.url.path, status, (time.perf_counter() - started) * 1000)


async def refuse(websocket: WebSocket, error: APIError, request_id: str) -> None:
    """Answer the handshake with the error's HTTP status and envelope instead of upgrading."""
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        response = error_response(error)
        response.headers["x-request-id"] = request_id
        await websocket.send_denial_response(response)
    else:  # a server without the denial extension can only say 403
        await websocket.close(code=1008, reason=error.message[:120])


@dataclass
class Active:
    """A response running on this connection."""

    lane: Lane
    body: dict  # its create parameters: what an automatic successor inherits
    background: bool
    steers: list[Steer] = field(default_factory=list)


class Lane:
    """The responses of one `stream_id`, run one after another by a task that lives while
    there is work."""

    def __init__(self, conn: Connection, stream_id: str | None) -> None:
        self.conn = conn
        self.stream_id = stream_id
        self.queue: deque[dict] = deque()
        self.task: asyncio.Task | None = None

    def start(self) -> None:
        if self.task is None:
            self.task = asyncio.get_running_loop().create_task(self.work())
            self.conn.tasks.add(self.task)
            self.task.add_done_callback(self.conn.tasks.discard)

    async def work(self) -> None:
        conn = self.conn
        try:
            while self.queue:
                event: dict | None = self.queue.popleft()
                committing: list[Steer] | None = None
                while event is not None:  # a response, then any successor its steering asks for
                    event, committing = await conn.create(event, self, committing)
        except WebSocketDisconnect:
            pass  # the reader sees the disconnect too, and ends the connection
        except Exception:
            log.exception("a WebSocket lane failed")
            await conn.close(1011, "internal error")
        finally:
            self.task = None
            if conn.lanes.get(self.stream_id) is self:
                del conn.lanes[self.stream_id]


class Connection:
    """One client's socket: reads its events, runs its lanes, holds what only it may continue."""

    def __init__(self, edge: ResponsesSocket, websocket: WebSocket, owner: str) -> None:
        self.edge = edge
        self.ws = websocket
        self.owner = owner
        self.service = edge.service
        self.chains = ChainCache()
        self.lanes: dict[str | None, Lane] = {}
        self.tasks: set[asyncio.Task] = set()
        self.active: dict[str, Active] = {}
        self.waiting: OrderedDict[str, list[Steer]] = OrderedDict()
        self.recent: OrderedDict[str, None] = OrderedDict()
        headers = websocket.headers
        self.headers = {name: headers[name] for name in FORWARDED_HEADERS if name in headers}
        self.client = websocket.client.host if websocket.client else "-"
        self.path = websocket.url.path
        self.seq = 0  # numbers the events that belong to no response's stream (steering, errors)
        self.last_activity = time.monotonic()
        self.closed = False

    # ---- reading -----------------------------------------------------------------------------

    async def serve(self) -> None:
        try:
            await self.read()
        except WebSocketDisconnect:
            pass
        finally:
            tasks = list(self.tasks)
            for task in tasks:
                task.cancel()  # each lane abandons its feed: the run ends as a disconnected stream's
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)

    async def read(self) -> None:
        idle = self.edge.idle_timeout
        while True:
            wait = idle if self.lanes else max(0.0, self.last_activity + idle - time.monotonic())
            try:
                async with asyncio.timeout(wait):
                    message = await self.ws.receive()
            except TimeoutError:
                if not self.lanes and time.monotonic() - self.last_activity >= idle:
                    await self.close(1000, "idle timeout")
                    return
                continue
            if message["type"] == "websocket.disconnect":
                return
            self.last_activity = time.monotonic()
            data = message.get("text")
            await self.dispatch(data if data is not None else message.get("bytes") or b"")

    async def dispatch(self, data: str | bytes) -> None:
        try:
            event = orjson.loads(data)
        except orjson.JSONDecodeError as e:
            await self.send_error(InvalidRequest(f"We could not parse the JSON of your event ({e.msg} at position "
                                                 f"{e.pos}).", code="invalid_json"))
            return
        if not isinstance(event, dict):
            await self.send_error(c.wrong_type("event", "a JSON object", event))
            return
        kind = event.get("type")
        if kind == "response.create":
            await self.submit(event)
        elif kind == "response.steer":
            await self.steer(event)
        else:
            await self.send_error(InvalidRequest(
                f"Unknown client event type {kind!r}: expected 'response.create' or 'response.steer'.",
                param="type", code="invalid_value"))

    async def submit(self, event: dict) -> None:
        """Queue a `response.create` on its lane."""
        stream_id = event.get("stream_id")
        if stream_id is not None and not isinstance(stream_id, str):
            await self.send_error(c.wrong_type("stream_id", "a string", stream_id))
            return
        lane = self.lanes.get(stream_id)
        if lane is None:
            if len(self.lanes) >= LANES:
                await self.send_error(RateLimited(
                    f"Too many streams at once: at most {LANES} stream_id values can have work on one "
                    "connection. Wait for one to finish, or open another connection.", param="stream_id",
                    code="too_many_streams"), stream_id)
                return
            lane = self.lanes[stream_id] = Lane(self, stream_id)
        if len(lane.queue) >= QUEUED:
            await self.send_error(RateLimited(
                f"Too many requests queued: at most {QUEUED} response.create events can wait on one stream. "
                "Wait for the responses in flight to finish.", code="too_many_queued_requests"), stream_id)
            return
        lane.queue.append(event)
        lane.start()

    # ---- one response ------------------------------------------------------------------------

    async def create(self, event: dict, lane: Lane,
                     committing: list[Steer] | None) -> tuple[dict | None, list[Steer] | None]:
        """Run one `response.create` to its end; return the automatic successor that queued
        steering asks for, if any (with the steering it commits)."""
        started = time.perf_counter()
        body = {k: v for k, v in event.items() if k not in ENVELOPE}
        prev = body.get("previous_response_id")
        prev = prev if isinstance(prev, str) else None
        if committing is None and prev is not None and prev in self.waiting:
            committing = self.waiting.pop(prev)  # steering queued for this parent joins its continuation
            body["input"] = with_steering(body.get("input"), committing)
        chain: CachedChain | None = None
        try:
            req = dataclasses.replace(parse_create(body, self.headers), stream=True,
                                      generate=bool(c.boolean(event, "generate", "generate", True)))
            # A background run must be restartable from the store alone: it continues stored responses only.
            info = current.get()
            if info is not None and info.account is not None and info.account.record is not None \
                    and self.service.accounting is not None:  # each response.create is a request of the key
                await self.service.accounting.quotas.admit(info.account.record)
            chain = None if req.background else self.chains.request()
            result = await self.service.create(req, self.owner, local=chain)
        except Exception as e:
            if not isinstance(e, APIError):
                log.exception("response.create failed with an internal error")
                e = APIError("The server had an internal error.", code="server_error")
            if chain is not None:
                chain.finish(None)
            self.failed_continuation(prev)
            await self.send_error(e, lane.stream_id)
            await self.steering_failed(committing or [], "successor_creation_failed", e.message, lane.stream_id)
            self.log(None, e.status, started)
            return None, None
        assert isinstance(result, Feed)
        rid, final = await self.relay(result, lane, body, req.background)
        self.last_activity = time.monotonic()
        self.log(rid, 200, started)
        if chain is not None:
            chain.finish(final)
        if final is not None and final.get("status") == "failed":
            self.failed_continuation(prev)
        active = self.active.pop(rid, None) if rid is not None else None
        if rid is not None:
            self.recent[rid] = None
            while len(self.recent) > RECENT:
                self.recent.popitem(last=False)
        if rid is not None and active is not None and active.steers:
            return await self.apply_steering(rid, active, final)
        return None, None

    async def relay(self, feed: Feed, lane: Lane, body: dict, background: bool) -> tuple[str | None, dict | None]:
        """Send a response's events as they come; its id and its final Response (None if it
        ended without a terminal event, e.g. deleted while it ran)."""
        rid: str | None = None
        final: dict | None = None
        stream_id = lane.stream_id
        try:
            while True:
                events = await feed.get(QUIET)
                if events is None:
                    break
                for ev in events:
                    kind = ev["type"]
                    if kind == "response.created":
                        rid = ev["response"]["id"]
                        self.active[rid] = Active(lane, body, background)
                    elif kind in TERMINAL_EVENTS:
                        final = ev["response"]
                    await self.send(ev, stream_id)
        finally:
            feed.abandon()  # the client went away (or the feed ended): stop the producer if it still runs
        return rid, final

    def failed_continuation(self, prev: str | None) -> None:
        # As the hosted API does: after a failed continuation the cached response is not used again.
        if prev is not None:
            self.chains.evict(prev)

    # ---- steering ----------------------------------------------------------------------------

    async def steer(self, event: dict) -> None:
        try:
            target, value = parse_steer(event)
        except APIError as e:
            target_id = event.get("previous_response_id")
            await self.send({"type": "response.steer.failed", "sequence_number": self.next_seq(),
                             "error": {"type": "invalid_request_error", "code": "invalid_input", "message": e.message},
                             "steer": {"previous_response_id": target_id if isinstance(target_id, str) else "",
                                       "input": event.get("input")}}, None)
            return
        active = self.active.get(target)
        refusal = None
        if active is None:
            refusal = ("response_already_completed", f"Response '{target}' has ended; steering applies only to a "
                       "response that is running.") if target in self.recent else \
                ("response_not_found", f"No response with id '{target}' is running on this connection.")
        elif active.background:
            refusal = ("steering_not_supported", "Background responses cannot be steered.")
        elif len(active.steers) >= STEERS:
            refusal = ("too_many_pending_steers", f"At most {STEERS} steering submissions can wait for one "
                       "response.")
        if refusal is not None:
            stream_id = active.lane.stream_id if active is not None else None
            await self.send({"type": "response.steer.failed", "sequence_number": self.next_seq(),
                             "error": {"type": "invalid_request_error", "code": refusal[0], "message": refusal[1]},
                             "steer": {"previous_response_id": target, "input": value}}, stream_id)
            return
        assert active is not None
        steer = Steer(steer_id(), target, value)
        active.steers.append(steer)
        await self.send({"type": "response.steer.accepted", "sequence_number": self.next_seq(),
                         "steer": steer.wire()}, active.lane.stream_id)

    async def apply_steering(self, rid: str, active: Active,
                             final: dict | None) -> tuple[dict | None, list[Steer] | None]:
        """A steered response ended: continue it with the queued input, keep the input for the
        client's continuation, or hand it back."""
        steers, stream_id = active.steers, active.lane.stream_id
        status = final.get("status") if final is not None else None
        if final is None or status not in ("completed", "incomplete"):
            await self.steering_failed(steers, "response_not_active", f"Response '{rid}' ended "
                                       f"{status or 'cancelled'}; its steering input was not applied.", stream_id)
            return None, None
        owed = required_input(final.get("output") or []) if status == "completed" else []
        if owed:
            for steer in steers:
                await self.send({"type": "response.steer.pending", "sequence_number": self.next_seq(),
                                 "steer": steer.wire(), "reason": "waiting_for_required_input",
                                 "required_input": owed}, stream_id)
            self.waiting[rid] = steers
            while len(self.waiting) > WAITING:
                _, dropped = self.waiting.popitem(last=False)
                await self.steering_failed(dropped, "response_not_active", "Too many responses wait for tool "
                                           "output with steering queued; the oldest one's input was dropped.")
            return None, None
        successor = {**active.body, "type": "response.create", "previous_response_id": rid,
                     "input": [item for steer in steers for item in as_items(steer.input)]}
        return successor, steers

    async def steering_failed(self, steers: list[Steer], code: str, message: str,
                              stream_id: str | None = None) -> None:
        for steer in steers:
            await self.send({"type": "response.steer.failed", "sequence_number": self.next_seq(),
                             "error": {"type": "invalid_request_error", "code": code, "message": message},
                             "steer": steer.failed_wire()}, stream_id)

    # ---- writing -----------------------------------------------------------------------------

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq - 1

    async def send(self, event: Event, stream_id: str | None) -> None:
        if stream_id is not None:
            event = {**event, "stream_id": stream_id}
        await self.ws.send_text(orjson.dumps(event).decode())

    async def send_error(self, error: APIError, stream_id: str | None = None) -> None:
        await self.send(error_event(error), stream_id)

    async def close(self, code: int, reason: str) -> None:
        if not self.closed:
            self.closed = True
            try:
                await self.ws.close(code, reason)
            except (WebSocketDisconnect, RuntimeError):
                pass  # already gone

    def log(self, rid: str | None, status: int, started: float) -> None:
        if self.edge.access is not None:
            self.edge.access(self.client, "WS", f"{self.path} response.create {rid or '-'}", status,
                             (time.perf_counter() - started) * 1000)
