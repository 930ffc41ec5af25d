"""Generated bodies, ids and uploads against live servers on SQLite and PostgreSQL: never a 5xx.

Hypothesis draws request-shaped JSON (known keys with arbitrary values, item and tool entries
with arbitrary insides, huge integers, deep nesting, U+0000 and malformed URLs among the
strings) and throws it at `POST /responses`, the id routes and `POST /files`. Whatever is
refused must be refused as a 4xx; whatever runs must end with a terminal event when streamed.
The runs are derandomized (the same examples every time) and bounded, so the test cannot flake
and takes a few seconds per store. URLs are IP literals only: no DNS, no traffic off loopback.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from harness import KEY_A, ServerProcess
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

AUTH = {"Authorization": f"Bearer {KEY_A}"}
FUZZ = settings(derandomize=True, database=None, deadline=None, max_examples=200,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                       HealthCheck.data_too_large, HealthCheck.large_base_example])

# Values that broke the server at one time or another, among ordinary ones.
NASTY = [
    "", "\x00", "a\x00b", "resp_\x00", "msg_\x00", "file-\x00", "\u0663\u0666", "\ufffd", "1e400", "{}", "not json",
    "http://[::1", "http://127.0.0.1:99999/", "http://127.0.0.1:port/", "http://127.0.0.1:1/x.png",
    "https://192.0.2.1/doc.pdf", "ftp://127.0.0.1/", "data:image/png;base64,iVBORw0KGgo=", "data:,x",
    "data:text/plain;base64,@@", 0, -1, 2**31, 2**53, 2**63, 2**64, 2**70, -(2**64), 1e20, -1e300, 0.5, True,
    None, [], {},
]
TEXT = st.one_of(st.sampled_from([v for v in NASTY if isinstance(v, str)]), st.text(max_size=12))
INTS = st.one_of(st.sampled_from([v for v in NASTY if type(v) is int]), st.integers(-(2**70), 2**70))
SCALAR = st.one_of(st.sampled_from(NASTY), st.integers(-(2**70), 2**70),
                   st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=12))
KEYS = st.one_of(st.sampled_from([
    "type", "role", "content", "text", "id", "call_id", "name", "arguments", "output", "status", "image_url",
    "file_id", "file_url", "file_data", "filename", "detail", "server_label", "server_url", "tools",
    "input_schema", "description", "annotations", "approval_request_id", "approve", "action", "actions",
    "summary", "encrypted_content", "parameters", "strict", "format", "schema", "error", "result", "model",
    "input", "previous_response_id", "max_output_tokens", "max_tool_calls", "metadata", "tool_choice",
]), st.text(max_size=6))


def nested(depth: int) -> Any:
    value: Any = "leaf"
    for n in range(depth):
        value = [value] if n % 2 else {"a": value}
    return value


GARBAGE = st.one_of(
    st.sampled_from(NASTY),
    st.sampled_from([2**53, 2**64, 2**70, 1e20, -(2**63) - 1]),
    st.sampled_from([98, 99, 100, 101, 260, 400]).map(nested),  # about this server's limit, and orjson's
    SCALAR,
    st.recursive(SCALAR, lambda kids: st.lists(kids, max_size=3) | st.dictionaries(KEYS, kids, max_size=3),
                 max_leaves=8),
)

# ---- well-formed requests: the mutations below then break one or two places inside them ----------

SCHEMA = st.just({"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]})
PART = st.one_of(
    st.builds(lambda t: {"type": "input_text", "text": t}, st.text(max_size=8)),
    st.just({"type": "input_image", "image_url": "data:image/png;base64,iVBORw0KGgo="}),
    st.just({"type": "input_image", "image_url": "https://192.0.2.1/cat.png", "detail": "low"}),
    st.just({"type": "input_file", "file_data": "data:text/plain;base64,aGk=", "filename": "a.txt"}),
)
ITEM = st.one_of(
    st.builds(lambda role, parts: {"role": role, "content": parts},
              st.sampled_from(["user", "assistant", "system", "developer"]), st.lists(PART, min_size=1, max_size=2)),
    st.builds(lambda t: {"type": "message", "role": "user", "content": t}, st.text(max_size=8)),
    st.just({"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"}),
    st.just({"type": "function_call_output", "call_id": "c1", "output": "ok"}),
    st.just({"type": "reasoning", "summary": [{"type": "summary_text", "text": "hm"}]}),
    st.just({"type": "mcp_list_tools", "server_label": "s", "tools": [{"name": "t", "input_schema": {}}]}),
    st.just({"type": "mcp_call", "server_label": "s", "name": "t", "arguments": "{}", "output": "3"}),
    st.just({"type": "mcp_approval_request", "id": "mcpr_1", "server_label": "s", "name": "t", "arguments": "{}"}),
    st.just({"type": "computer_call", "call_id": "cu1", "action": {"type": "click", "x": 1, "y": 2}}),
    st.just({"type": "computer_call_output", "call_id": "cu1",
             "output": {"type": "computer_screenshot", "image_url": "data:image/png;base64,iVBORw0KGgo="}}),
    st.just({"type": "image_generation_call", "id": "ig_1", "status": "completed", "result": None}),
    st.just({"type": "web_search_call", "status": "completed", "action": {"type": "search", "query": "q"}}),
)
TOOL = st.one_of(
    st.builds(lambda schema: {"type": "function", "name": "f", "parameters": schema}, SCHEMA),
    st.just({"type": "custom", "name": "c"}),
    st.just({"type": "computer_use_preview", "display_width": 800, "display_height": 600, "environment": "linux"}),
    st.just({"type": "web_search"}),
    st.just({"type": "mcp", "server_label": "s", "server_url": "http://127.0.0.1:1/mcp", "require_approval": "never"}),
)
BODY = st.fixed_dictionaries({"model": st.just("m"), "input": st.text(max_size=8) | st.lists(ITEM, max_size=3)},
                             optional={
    "instructions": st.text(max_size=8), "tools": st.lists(TOOL, max_size=2, unique_by=lambda t: t["type"]),
    "tool_choice": st.sampled_from(["auto", "none", "required"]),
    "text": st.builds(lambda schema: {"format": {"type": "json_schema", "name": "n", "schema": schema}}, SCHEMA),
    "max_output_tokens": st.integers(16, 4096), "max_tool_calls": st.integers(1, 8),
    "temperature": st.floats(0, 2), "top_p": st.floats(0, 1), "metadata": st.just({"k": "v"}),
    "store": st.booleans(), "background": st.booleans(),
    "stream": st.booleans(), "include": st.just(["reasoning.encrypted_content"]),
    "reasoning": st.just({"effort": "low"}), "truncation": st.sampled_from(["auto", "disabled"]),
    "user": st.text(max_size=8), "client_extras": st.just({"a": [1, 2]}),
})


def slots(value: Any) -> list[tuple[Any, Any]]:
    """Every (object or array, key or index) in a JSON value, plus a new-key slot per object."""
    found: list[tuple[Any, Any]] = []
    stack = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            found += [(node, key) for key in node] + [(node, None)]
            stack.extend(node.values())
        elif isinstance(node, list):
            found += [(node, i) for i in range(len(node))] or [(node, None)]
            stack.extend(node)
    return found


@st.composite
def requests(draw: st.DrawFn) -> dict:
    """A well-formed body with one or two places (a value, or a new key) replaced by garbage."""
    body = copy.deepcopy(draw(BODY))  # st.just() hands out one shared object: never mutate it
    for _ in range(draw(st.integers(1, 2))):
        node, key = draw(st.sampled_from(slots(body)))
        value = draw(GARBAGE)
        if isinstance(node, list) and key is None:
            node.append(value)
        else:
            node[draw(KEYS) if key is None else key] = value
    if body.get("background") and body.get("store") is False:
        body["store"] = True  # keep some background runs valid: they are stored and replayed
    return body


TERMINAL = ("response.completed", "response.failed", "response.incomplete")


@pytest.fixture
def http(either: ServerProcess) -> Iterator[httpx.Client]:
    """One keep-alive client (a new httpx client per request would cost more than the request)."""
    with httpx.Client(base_url=either.base_url, headers=AUTH, timeout=30) as client:
        yield client


def send(http: httpx.Client, method: str, path: str, **kw: Any) -> httpx.Response:
    resp = http.request(method, path, **kw)  # relative to the client's base URL (.../v1/)
    assert resp.status_code < 500, f"{method} {path} -> {resp.status_code}: {resp.text[:500]}"
    return resp


@settings(FUZZ, max_examples=1000)
@given(body=requests())
def test_create_never_answers_5xx(http: httpx.Client, body: dict) -> None:
    # The stdlib encoder writes integers of any size (orjson, like httpx's, stops at 64 bits).
    resp = send(http, "POST", "/responses", content=json.dumps(body).encode(),
                headers={"Content-Type": "application/json"})
    if resp.headers["content-type"].startswith("text/event-stream"):
        kinds = [line[7:] for line in resp.text.splitlines() if line.startswith("event: ")]
        assert kinds and (kinds[-1] in TERMINAL or (body.get("background") and kinds[-1] == "response.queued")), kinds


@settings(FUZZ, max_examples=150)
@given(ident=TEXT, cursor=TEXT, number=TEXT | INTS.map(str), order=TEXT)
def test_id_routes_never_answer_5xx(http: httpx.Client, ident: str, cursor: str, number: str, order: str) -> None:
    rid = quote(ident, safe="")
    send(http, "GET", f"/responses/{rid}")
    send(http, "GET", f"/responses/{rid}", params={"stream": "true", "starting_after": number})
    send(http, "GET", f"/responses/{rid}/input_items", params={"after": cursor, "before": cursor,
                                                                  "limit": number, "order": order})
    send(http, "POST", f"/responses/{rid}/cancel")
    send(http, "DELETE", f"/responses/{rid}")
    send(http, "GET", f"/files/{rid}")
    send(http, "GET", f"/files/{rid}/content")
    send(http, "DELETE", f"/files/{rid}")
    send(http, "GET", "/files", params={"after": cursor, "limit": number, "order": order, "purpose": ident})
    send(http, "GET", f"/models/{rid}")


FIELD = st.one_of(TEXT, st.binary(max_size=8).map(lambda b: b.decode("latin-1")))


@FUZZ
@given(filename=FIELD, content_type=FIELD, purpose=st.sampled_from(["user_data", "vision"]) | TEXT,
       anchor=st.none() | st.just("created_at") | TEXT, seconds=st.none() | INTS.map(str) | TEXT)
def test_uploads_never_answer_5xx(http: httpx.Client, filename: str, content_type: str, purpose: str,
                                  anchor: str | None, seconds: str | None) -> None:
    def field(name: str, value: str) -> bytes:
        return (f'--XX\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n').encode() + value.encode() + b"\r\n"

    body = field("purpose", purpose)
    if anchor is not None:
        body += field("expires_after[anchor]", anchor)
    if seconds is not None:
        body += field("expires_after[seconds]", seconds)
    body += (b'--XX\r\nContent-Disposition: form-data; name="file"; filename="' + filename.encode() +
             b'"\r\nContent-Type: ' + content_type.encode() + b"\r\n\r\nhello\r\n--XX--\r\n")
    resp = send(http, "POST", "/files", content=body, headers={"Content-Type": "multipart/form-data; boundary=XX"})
    if resp.status_code == 200:
        file_id = resp.json()["id"]
        send(http, "GET", f"/files/{file_id}/content")
        send(http, "DELETE", f"/files/{file_id}")
