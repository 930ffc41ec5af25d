"""Live-test harness: the real server as a subprocess, a scripted engine, and validators.

`ServerProcess` starts `python -m responsa serve` on a free loopback port with its own data
dir and waits for `/health`. `ScriptedEngine` serves a `Script` as an OpenAI-compatible
Chat Completions API from a thread of the test process, so tests queue the engine's
answers and read what it was sent. `check_response` / `check_events` validate everything
the server emits against the official SDK's models and the Open Responses schema.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import httpx
import jsonschema
import uvicorn
from openai.types.responses import Response as SDKResponse
from openai.types.responses import ResponseStreamEvent
from pydantic import TypeAdapter

from responsa.backends.scripted import Script, scripted_upstream_app
from responsa.events import ResponseEvents
from responsa.ids import response_id
from responsa.protocol import parse_create

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "tests" / "spec" / "openresponses-openapi-2026-04-24.json"  # vendored, see its README
KEY_A = "key-a-secret"
KEY_B = "key-b-secret"
T = TypeVar("T")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class ThreadServer:
    """An ASGI app served by uvicorn on a free loopback port from a background thread."""

    def __init__(self, app: Any, port: int | None = None, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = port or free_port(host)
        config = uvicorn.Config(app, host=host, port=self.port, log_level="warning", lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> ThreadServer:
        self.thread.start()
        deadline = time.time() + 10
        while not self.server.started:
            if time.time() > deadline:
                raise RuntimeError("test server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=5)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


class ScriptedEngine(ThreadServer):
    """A Chat Completions engine whose answers the test scripts (see backends/scripted.py)."""

    def __init__(self) -> None:
        self.script = Script()
        super().__init__(scripted_upstream_app(self.script))

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    @property
    def requests(self) -> list[dict]:
        return self.script.requests


class ServerProcess:
    """`responsa serve` in a subprocess, on a free port."""

    def __init__(self, data_dir: str | Path, *args: str, env: dict[str, str] | None = None,
                 port: int | None = None, wrapper: Sequence[str] = ()) -> None:
        self.data_dir = Path(data_dir)
        self.wrapper = list(wrapper)  # a command that runs the server command given as its last arguments
        self.port = port or free_port()
        self.args = list(args)
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        for name in [k for k in self.env if k.startswith("RESPONSA_")]:
            if env is None or name not in env:
                del self.env[name]
        self.proc: subprocess.Popen | None = None
        self.log_path = self.data_dir / f"server-{self.port}.log"

    def start(self, timeout: float = 60, wait_ready: bool = True) -> ServerProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        cmd = [*self.wrapper, sys.executable, "-m", "responsa", "serve", "--port", str(self.port), "--data-dir",
               str(self.data_dir), *self.args]
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=self.env,
                                     start_new_session=True)
        deadline = time.time() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            try:
                r = httpx.get(self.url + "/health", timeout=1)
                if r.status_code == 200 or (not wait_ready and r.status_code == 503):
                    return self
            except httpx.HTTPError:
                pass
            if time.time() > deadline:
                self.stop()
                raise RuntimeError(f"server did not become healthy:\n{self.log()}")
            time.sleep(0.05)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return self.url + "/v1"


# ---- validation ------------------------------------------------------------------------------

_EVENT_ADAPTER: TypeAdapter = TypeAdapter(ResponseStreamEvent)
_spec: dict | None = None


def _openresponses() -> dict:
    global _spec
    if _spec is None:
        _spec = json.loads(SPEC.read_text())
    return _spec


def _schema(name: str) -> dict:
    spec = _openresponses()
    return {"$ref": f"#/components/schemas/{name}", "components": spec["components"]}


def _open_item_types() -> set[str]:
    spec = _openresponses()["components"]["schemas"]
    types = set()
    for ref in spec["ItemField"]["oneOf"]:
        target = spec[ref["$ref"].rsplit("/", 1)[1]]
        types.update(target["properties"]["type"].get("enum", []))
    return types


def _for_open_schema(response: dict) -> dict:
    """The response with what the Open Responses schema does not model left out (its item
    union knows messages, function calls and outputs, reasoning; its tools only functions)."""
    known = _open_item_types()
    out = dict(response)
    out["output"] = [_open_item(i) for i in response.get("output", []) if i.get("type") in known]
    out["tools"] = [t for t in response.get("tools", []) if t.get("type") == "function"]
    if isinstance(out.get("tool_choice"), dict) and out["tool_choice"].get("type") not in ("function",
                                                                                          "allowed_tools"):
        out["tool_choice"] = "auto"
    fmt = (out.get("text") or {}).get("format")
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        # Its JsonSchemaResponseFormat types the echoed `schema` as null only (a generator gap).
        out["text"] = {**out["text"], "format": {**fmt, "schema": None}}
    return out


# The annotations the Open Responses schema models (file_search's file_citation is not among them).
OPEN_ANNOTATIONS = ("url_citation",)


def _open_item(item: dict) -> dict:
    """A message without the annotations the Open Responses schema does not model."""
    annotations = [a for p in item.get("content") or [] for a in p.get("annotations") or []]
    if item.get("type") != "message" or all(a.get("type") in OPEN_ANNOTATIONS for a in annotations):
        return item
    parts = [{**p, "annotations": [a for a in p["annotations"] if a.get("type") in OPEN_ANNOTATIONS]}
             if p.get("annotations") else p for p in item["content"]]
    return {**item, "content": parts}


def _sdk_view(data: dict) -> dict:
    """`data` as the 3.x SDK models accept it. `mcp_call.error` is a string (as 1.x, 2.x and npm
    type it; 3.x types an object but parses a string too, responses-wire.md 4.2): shown to the
    strict model as a tool-execution error."""
    def item(i: Any) -> Any:
        if isinstance(i, dict) and i.get("type") == "mcp_call" and isinstance(i.get("error"), str):
            return {**i, "error": {"type": "mcp_tool_execution_error", "content": i["error"]}}
        return i

    out = dict(data)
    if "output" in out:
        out["output"] = [item(i) for i in out["output"]]
    if "item" in out:
        out["item"] = item(out["item"])
    if isinstance(out.get("response"), dict):
        out["response"] = _sdk_view(out["response"])
    return out


def check_response(data: dict | Any) -> SDKResponse:
    """Validate a Response body against the SDK model and the Open Responses schema."""
    if not isinstance(data, dict):
        data = wire(data)
    parsed = SDKResponse.model_validate(_sdk_view(data))
    jsonschema.validate(_for_open_schema(data), _schema("ResponseResource"))
    for key in ("id", "object", "created_at", "status", "model", "output", "parallel_tool_calls", "tool_choice",
                "tools", "error", "incomplete_details", "instructions", "metadata", "temperature", "top_p"):
        assert key in data, f"Response lacks {key!r}"
    for item in data["output"]:
        assert "id" in item, f"output item without id: {item}"
        if item["type"] == "message":
            assert isinstance(item["content"], list)
            for part in item["content"]:
                if part["type"] == "output_text":
                    assert part["annotations"] == [] or isinstance(part["annotations"], list)
    return parsed


_OPEN_EVENT_SCHEMAS: dict[str, str] | None = None


def _open_event_schemas() -> dict[str, str]:
    global _OPEN_EVENT_SCHEMAS
    if _OPEN_EVENT_SCHEMAS is None:
        schemas = _openresponses()["components"]["schemas"]
        _OPEN_EVENT_SCHEMAS = {}
        for name, schema in schemas.items():
            if name.endswith("StreamingEvent") and "type" in schema.get("properties", {}):
                for t in schema["properties"]["type"].get("enum", []):
                    _OPEN_EVENT_SCHEMAS[t] = name
    return _OPEN_EVENT_SCHEMAS


def wire(obj: Any) -> dict:
    """What the server sent, from an SDK object (fields the SDK merely defaulted left out)."""
    # by_alias: SDK fields named after Python keywords (`schema_`) go back to their wire names.
    # warnings=False: the stream helper's parsed snapshots (ParsedResponse...) are subclasses
    # of the declared types, which pydantic reports while dumping them as they are.
    if isinstance(obj, dict):
        return obj
    return obj.model_dump(mode="json", exclude_unset=True, by_alias=True, warnings=False)


def check_events(events: Sequence[Any], *, first: int = 0, complete: bool = True) -> None:
    """Validate a stream: each event against both schemas, and the grammar the SDK helpers need."""
    assert events, "no events"
    events = [wire(e) for e in events]
    open_schemas = _open_event_schemas()
    for n, ev in enumerate(events):
        assert ev["sequence_number"] == first + n, f"sequence gap at {n}: {ev['sequence_number']}"
        _EVENT_ADAPTER.validate_python(_sdk_view(ev))
        name = open_schemas.get(ev["type"])
        if name is not None:
            if "response" in ev:
                ev = {**ev, "response": _for_open_schema(ev["response"])}
            if ev["type"].startswith("response.output_item.") and ev["item"]["type"] not in _open_item_types():
                continue
            if "item" in ev:
                ev = {**ev, "item": _open_item(ev["item"])}
            if "part" in ev and ev["part"].get("annotations"):
                ev = {**ev, "part": _open_item({"type": "message", "content": [ev["part"]]})["content"][0]}
            if ev.get("annotation", {}).get("type", "url_citation") not in OPEN_ANNOTATIONS:
                continue
            jsonschema.validate(ev, _schema(name))
    if first == 0:
        assert events[0]["type"] == "response.created", events[0]["type"]
        assert events[0]["response"]["output"] == []
    rid = {e["response"]["id"] for e in events if "response" in e}
    assert len(rid) == 1, f"lifecycle events name several responses: {rid}"
    added: dict[int, dict] = {}
    done: set[int] = set()
    for ev in events:
        t = ev["type"]
        if t == "response.output_item.added":
            idx = ev["output_index"]
            assert idx == len(added), f"item added at {idx}, expected {len(added)}"
            added[idx] = ev["item"]
            if ev["item"]["type"] == "message":
                assert ev["item"]["content"] == []
            if ev["item"]["type"] == "function_call":
                assert ev["item"]["arguments"] == ""
        elif t == "response.output_item.done":
            assert ev["output_index"] in added
            assert ev["item"]["id"] == added[ev["output_index"]]["id"]
            done.add(ev["output_index"])
        elif "output_index" in ev:
            assert ev["output_index"] in added, f"{t} before its item was added"
    if complete:
        last = events[-1]
        assert last["type"] in ("response.completed", "response.failed", "response.incomplete"), last["type"]
        assert len(last["response"]["output"]) == len(added) or first != 0
        assert done == set(added), "items added but never done"
        check_response(last["response"])


# ---- in-process helpers (no server) ------------------------------------------------------------

def new_response(**body: Any) -> dict:
    """A fresh in-progress Response, echoing a create request as the service builds it."""
    req = parse_create({"model": "test-model", "input": "hi", **body})
    return {"id": response_id(), "object": "response", "created_at": 1700000000, "status": "in_progress",
            "completed_at": None, "error": None, "incomplete_details": None, "model": req.model,
            "output": [], "usage": None, **req.echo()}


def recording_events(dialect: str = "openai", first: int = 0, **body: Any) -> tuple[ResponseEvents, list[dict]]:
    """`ResponseEvents` for a new response, and the list its sink appends every flushed event to."""
    seen: list[dict] = []

    async def sink(batch: list[dict]) -> None:
        seen.extend(batch)

    return ResponseEvents(new_response(**body), sink, dialect=dialect, first_sequence_number=first), seen


def sse_events(body: str | bytes) -> list[dict]:
    """Parse an SSE body strictly: `event:` + `data:` lines, each frame ended by a blank line."""
    text = body.decode() if isinstance(body, bytes) else body
    events = []
    assert text.endswith("\n\n"), "the last frame must end with a blank line"
    for frame in text.split("\n\n"):
        if not frame.strip():
            continue
        lines = frame.split("\n")
        if all(line.startswith(":") for line in lines):
            continue  # keep-alive comment
        fields = dict(line.split(": ", 1) for line in lines if not line.startswith(":"))
        assert set(fields) == {"event", "data"}, frame
        data = json.loads(fields["data"])
        assert data["type"] == fields["event"]
        events.append(data)
    return events


def wait_for(predicate: Any, timeout: float = 10, interval: float = 0.02) -> Any:
    deadline = time.time() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.time() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(interval)


def types_of(events: Iterable[Any]) -> list[str]:
    return [e["type"] if isinstance(e, dict) else e.type for e in events]


def run_closing(main: Awaitable[T], *clients: Any) -> T:
    """`asyncio.run(main)`, with each `AsyncOpenAI` client in `clients` closed on that same loop.

    A client left open is closed by the SDK's finalizer on whichever loop is running when the
    garbage collector reaches it: a later async test's. Its sockets belong to this closed loop,
    so that close raises `Event loop is closed` inside the later, unrelated test."""
    async def run() -> T:
        try:
            return await main
        finally:
            for client in clients:
                await client.close()
    return asyncio.run(run())
