"""Input that used to reach a 500 or a cut stream: a 400 (or 404) before anything runs, on both stores.

Raw bodies go through httpx (the SDK would refuse or reshape some of them); the PostgreSQL
cases run against a server on a throwaway database (skipped when PostgreSQL is unreachable).
"""

from __future__ import annotations

import httpx
import openai
import pytest
from harness import KEY_A, ServerProcess, wait_for
from openai import OpenAI

from responsa import checks as c
from responsa.items import MAX_INPUT_ITEMS
from responsa.tools import MAX_TOOLS

AUTH = {"Authorization": f"Bearer {KEY_A}"}


def post(server: ServerProcess, body: object, **kw: object) -> httpx.Response:
    return httpx.post(server.base_url + "/responses", json=body, headers=AUTH, timeout=60, **kw)  # type: ignore[arg-type]


def error(resp: httpx.Response, status: int, param: str | None = None) -> dict:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    err = resp.json()["error"]
    if param is not None:
        assert err["param"] == param, err
    return err


def nested(depth: int) -> dict:
    value: dict = {}
    for _ in range(depth - 1):
        value = {"type": "object", "properties": {"a": value}}
    return value


def file_count(server: ServerProcess) -> int:
    return len(httpx.get(server.base_url + "/files", headers=AUTH).json()["data"])


# ---- numbers and nesting -----------------------------------------------------------------------------

@pytest.mark.parametrize(("extra", "param"), [
    ({"max_output_tokens": 1e20}, "max_output_tokens"),
    ({"max_output_tokens": 2**64}, "max_output_tokens"),
    ({"max_tool_calls": 2**64}, "max_tool_calls"),
    ({"max_tool_calls": 2**53}, "max_tool_calls"),
])
def test_integers_past_what_json_holds_are_400s(either: ServerProcess, script, extra: dict, param: str) -> None:
    err = error(post(either, {"model": "m", "input": "x", **extra}), 400, param)
    assert err["code"] == "integer_above_max_value"
    assert script.requests == [], "the engine must not be paid for a request that cannot be stored"


# Depth counts from a top-level parameter's value (level 1): `tools` -> [0] -> parameters -> ...
DEEP = nested(c.MAX_DEPTH // 2 + 1)  # 2 * (MAX_DEPTH // 2) + 1 levels, 3 more below `tools`


@pytest.mark.parametrize(("extra", "param_prefix"), [
    ({"tools": [{"type": "function", "name": "f", "parameters": DEEP}]}, "tools[0].parameters.properties"),
    ({"text": {"format": {"type": "json_schema", "name": "n", "schema": DEEP}}}, "text.format.schema.properties"),
    ({"input": [{"type": "web_search_call", "status": "completed", "action": DEEP}]}, "input[0].action"),
    ({"background": True, "client_extras": DEEP}, "client_extras.properties"),
    ({"stream": True, "tools": [{"type": "function", "name": "f", "parameters": DEEP}]}, "tools[0].parameters"),
])
def test_json_nested_past_the_serialiser_is_a_400(either: ServerProcess, script, extra: dict,
                                                  param_prefix: str) -> None:
    body = {"model": "m", "input": "x", **extra}
    err = error(post(either, body), 400)
    assert err["param"].startswith(param_prefix) and err["code"] == "invalid_value", err
    assert script.requests == []


def test_nesting_up_to_the_limit_runs_streams_and_is_stored(client: OpenAI, script) -> None:
    ok = nested(c.MAX_DEPTH // 2 - 1)  # `tools`, [0], then 97 levels: 99 in all
    script.add({"content": "fine"})
    events = list(client.responses.create(model="m", input="x", stream=True, tools=[
        {"type": "function", "name": "f", "parameters": ok}]))
    assert events[-1].type == "response.completed"
    stored = client.responses.retrieve(events[-1].response.id)
    assert stored.tools[0].parameters == ok  # type: ignore[union-attr]


# ---- sizes ------------------------------------------------------------------------------------------

def test_input_item_count_is_bounded(server: ServerProcess, script) -> None:
    items = [{"role": "user", "content": "x"}] * (MAX_INPUT_ITEMS + 1)
    err = error(post(server, {"model": "m", "input": items}), 400, "input")
    assert err["code"] == "array_above_max_length" and str(MAX_INPUT_ITEMS) in err["message"]
    assert script.requests == []


def test_tools_and_allowed_tools_are_bounded(server: ServerProcess, script) -> None:
    tools = [{"type": "function", "name": f"f{i}"} for i in range(MAX_TOOLS + 1)]
    err = error(post(server, {"model": "m", "input": "x", "tools": tools}), 400, "tools")
    assert err["code"] == "array_above_max_length"
    choice = {"type": "allowed_tools", "mode": "auto", "tools": [{"type": "function", "name": "f0"}] * 129}
    error(post(server, {"model": "m", "input": "x", "tools": tools[:1], "tool_choice": choice}), 400,
          "tool_choice.tools")


def test_text_longer_than_the_hosted_limit_is_a_400(server: ServerProcess, script) -> None:
    text = "x" * (c.MAX_TEXT + 1)
    err = error(post(server, {"model": "m", "input": text}), 400, "input")
    assert err["code"] == "string_above_max_length"
    error(post(server, {"model": "m", "input": [{"role": "user", "content": [{"type": "input_text", "text": text}]}]}),
          400, "input[0].content[0].text")
    error(post(server, {"model": "m", "input": [{"type": "function_call_output", "call_id": "c", "output": text}]}),
          400, "input[0].output")
    assert script.requests == []


# ---- URLs -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("url", ["http://[::1", "http://example.com:99999/", "http://example.com:port/"])
def test_malformed_urls_are_400s(server: ServerProcess, script, url: str) -> None:
    mcp = {"type": "mcp", "server_label": "s", "server_url": url}
    error(post(server, {"model": "m", "input": "x", "tools": [mcp]}), 400, "tools[0].server_url")
    part = {"type": "input_file", "file_url": url}
    error(post(server, {"model": "m", "input": [{"role": "user", "content": [part]}]}), 400,
          "input[0].content[0].file_url")
    part = {"type": "input_image", "image_url": url}
    err = error(post(server, {"model": "m", "input": [{"role": "user", "content": [part]}]}), 400,
                "input[0].content[0].image_url")
    assert err["code"] == "invalid_image_url"
    shot = {"type": "computer_call_output", "call_id": "c", "output": {"type": "computer_screenshot", "image_url": url}}
    error(post(server, {"model": "m", "input": [shot]}), 400, "input[0].output.image_url")
    mask = {"type": "image_generation", "input_image_mask": {"image_url": url}}
    error(post(server, {"model": "m", "input": "x", "tools": [mask]}), 400, "tools[0].input_image_mask.image_url")
    assert script.requests == []


# ---- U+0000 and other unstorable strings ------------------------------------------------------------

def test_ids_holding_nul_are_unknown(either: ServerProcess, script) -> None:
    base = either.base_url
    for method, path in [("GET", "/responses/resp_%00"), ("DELETE", "/responses/resp_%00"),
                         ("POST", "/responses/resp_%00/cancel"), ("GET", "/responses/resp_%00/input_items"),
                         ("GET", "/responses/resp_%00?stream=true"), ("GET", "/files/file-%00"),
                         ("GET", "/files/file-%00/content"), ("DELETE", "/files/file-%00")]:
        err = error(httpx.request(method, base + path, headers=AUTH, timeout=30), 404)
        assert "\x00" in err["message"], (method, path)
    error(post(either, {"model": "m", "input": "x", "previous_response_id": "resp_\x00"}), 404,
          "previous_response_id")
    error(post(either, {"model": "m", "input": [{"type": "item_reference", "id": "msg_\x00"}]}), 404, "input[0]")
    for part in ({"type": "input_image", "file_id": "file-\x00"}, {"type": "input_file", "file_id": "file-\x00"}):
        error(post(either, {"model": "m", "input": [{"role": "user", "content": [part]}]}), 404,
              "input[0].content[0].file_id")
    assert script.requests == []


def test_cursors_holding_nul_name_no_item(either: ServerProcess, script) -> None:
    client = OpenAI(base_url=either.base_url, api_key=KEY_A, max_retries=0)
    r = client.responses.create(model="m", input="x")
    for cursor in ("after", "before"):
        page = httpx.get(either.base_url + f"/responses/{r.id}/input_items", params={cursor: "msg_\x00"},
                         headers=AUTH).json()
        assert page["data"] == [] and page["has_more"] is False
    page = httpx.get(either.base_url + "/files", params={"after": "file-\x00"}, headers=AUTH).json()
    assert page["data"] == []


def test_item_ids_holding_nul_are_400s(either: ServerProcess, script) -> None:
    for item in ({"role": "user", "content": "x", "id": "msg_\x00"},
                 {"type": "function_call_output", "call_id": "c", "output": "x", "id": "fco_\x00"},
                 {"type": "web_search_call", "status": "completed", "id": "ws_\x00"},
                 {"type": "web_search_call", "status": "completed", "id": 5}):
        error(post(either, {"model": "m", "input": [item]}), 400, "input[0].id")
    assert script.requests == []


def multipart(filename: bytes, content_type: bytes, extra: bytes = b"") -> tuple[bytes, dict]:
    body = (b"--XX\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nuser_data\r\n" + extra +
            b"--XX\r\nContent-Disposition: form-data; name=\"file\"; filename=\"" + filename +
            b"\"\r\nContent-Type: " + content_type + b"\r\n\r\nhello\r\n--XX--\r\n")
    return body, {**AUTH, "Content-Type": "multipart/form-data; boundary=XX"}


def test_uploads_with_unstorable_names_or_types_are_400s(either: ServerProcess, script) -> None:
    before = file_count(either)
    for filename, content_type in [(b"a\x00b.txt", b"text/plain"), (b"a.txt", b"text/pl\x00ain"),
                                   (b"a.txt", b"text/plain\nX-Injected: 1"), (b"a.txt", b"not a type")]:
        body, headers = multipart(filename, content_type)
        err = error(httpx.post(either.base_url + "/files", content=body, headers=headers), 400, "file")
        assert err["code"] == "invalid_value"
    assert file_count(either) == before, "nothing may be stored"
    body, headers = multipart(b"a.txt", b"text/plain; charset=utf-8")  # parameters are fine
    uploaded = httpx.post(either.base_url + "/files", content=body, headers=headers).json()
    download = httpx.get(either.base_url + f"/files/{uploaded['id']}/content", headers=AUTH)
    assert download.status_code == 200 and download.headers["content-type"].startswith("text/plain")


@pytest.mark.parametrize("seconds", ["3600\u00b2", "\u0663\u0666\u0660\u0660"])  # str.isdigit() holds for both
def test_expiry_seconds_must_be_ascii_digits(server: ServerProcess, seconds: str) -> None:
    extra = (b"--XX\r\nContent-Disposition: form-data; name=\"expires_after[anchor]\"\r\n\r\ncreated_at\r\n"
             b"--XX\r\nContent-Disposition: form-data; name=\"expires_after[seconds]\"\r\n\r\n" +
             seconds.encode() + b"\r\n")
    body, headers = multipart(b"a.txt", b"text/plain", extra)
    error(httpx.post(server.base_url + "/files", content=body, headers=headers), 400, "expires_after.seconds")


# ---- stream replay ----------------------------------------------------------------------------------

def finished_background_response(server: ServerProcess) -> str:
    client = OpenAI(base_url=server.base_url, api_key=KEY_A, max_retries=0)
    r = client.responses.create(model="m", input="x", background=True)
    wait_for(lambda: client.responses.retrieve(r.id).status == "completed")
    return r.id


def replay(server: ServerProcess, rid: str, after: str) -> httpx.Response:
    return httpx.get(server.base_url + f"/responses/{rid}", params={"stream": "true", "starting_after": after},
                     headers=AUTH, timeout=30)


def test_starting_after_outside_the_stores_range_is_a_400(either: ServerProcess, script) -> None:
    rid = finished_background_response(either)
    for after in (str(2**31), str(2**70), "-2", "\u0663", "1_0", "1.5"):
        error(replay(either, rid, after), 400, "starting_after")
    resp = replay(either, rid, str(2**31 - 1))  # the bound itself: nothing after it, a stream ended cleanly
    assert resp.status_code == 200 and resp.text == ""


def test_the_sdk_sees_bad_input_as_bad_request(client: OpenAI, script) -> None:
    with pytest.raises(openai.BadRequestError) as e:
        client.responses.create(model="m", input="x", max_output_tokens=10**20)
    assert e.value.body["param"] == "max_output_tokens"
    with pytest.raises(openai.BadRequestError) as e:
        client.responses.create(model="m", input="x", tools=[
            {"type": "mcp", "server_label": "s", "server_url": "http://[::1"}])
    assert e.value.body["param"] == "tools[0].server_url"
