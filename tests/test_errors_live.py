"""Bad input, bad keys and failing engines: clear errors in the OpenAI envelope, never a 500 or a hang."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import openai
import pytest
from harness import KEY_A, ScriptedEngine, ServerProcess, check_events, wire
from openai import OpenAI

AUTH = {"Authorization": f"Bearer {KEY_A}"}


def post(server: ServerProcess, body: object, headers: dict | None = None, raw: bytes | None = None) -> httpx.Response:
    return httpx.post(server.base_url + "/responses", json=None if raw is not None else body, content=raw,
                      headers={**AUTH, **(headers or {}), "Content-Type": "application/json"}, timeout=30)


def envelope(resp: httpx.Response, status: int) -> dict:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["message"]
    assert resp.headers.get("x-request-id", "").startswith("req_")
    return body["error"]


@pytest.mark.parametrize(("body", "param", "code"), [
    ({"input": "x"}, "model", "missing_required_parameter"),
    ({"model": "m", "input": 5}, "input", "invalid_type"),
    ({"model": "m", "input": "x", "temperature": 3}, "temperature", "decimal_above_max_value"),
    ({"model": "m", "input": "x", "temperature": "hot"}, "temperature", "invalid_type"),
    ({"model": "m", "input": "x", "top_p": -0.5}, "top_p", "decimal_below_min_value"),
    ({"model": "m", "input": "x", "max_output_tokens": 4}, "max_output_tokens", "integer_below_min_value"),
    ({"model": "m", "input": "x", "truncation": "sometimes"}, "truncation", "invalid_value"),
    ({"model": "m", "input": [{"role": "wizard", "content": "x"}]}, "input[0].role", "invalid_value"),
    ({"model": "m", "input": [{"role": "user"}]}, "input[0].content", "missing_required_parameter"),
    ({"model": "m", "input": [{"type": "function_call_output", "output": "x"}]}, "input[0].call_id",
     "missing_required_parameter"),
    ({"model": "m", "input": [{"type": "teleport"}]}, "input[0].type", "invalid_value"),
    ({"model": "m", "input": [{"role": "user", "content": [{"type": "input_image"}]}]}, "input[0].content[0]",
     "invalid_value"),
    ({"model": "m", "input": "x", "tools": [{"type": "function"}]}, "tools[0].name", "missing_required_parameter"),
    ({"model": "m", "input": "x", "tools": [{"type": "function", "name": "bad name!"}]}, "tools[0].name",
     "invalid_value"),
    ({"model": "m", "input": "x", "tools": [{"type": "hologram"}]}, "tools[0].type", "invalid_value"),
    ({"model": "m", "input": "x", "tool_choice": {"type": "function", "name": "nope"}}, "tool_choice",
     "invalid_value"),
    ({"model": "m", "input": "x", "metadata": {"k": 1}}, "metadata.k", "invalid_type"),
    ({"model": "m", "input": "x", "metadata": {f"k{i}": "v" for i in range(17)}}, "metadata",
     "object_above_max_properties"),
    ({"model": "m", "input": "x", "include": ["everything"]}, "include[0]", "invalid_value"),
    ({"model": "m", "input": "x", "text": {"format": {"type": "json_schema", "name": "x"}}},
     "text.format.schema", "missing_required_parameter"),
    ({"model": "m", "input": "x", "prompt": {"id": "pmpt_1"}}, "prompt", "unsupported_parameter"),
    ({"model": "m", "input": "x", "reasoning": {"effort": "maximal"}}, "reasoning.effort", "invalid_value"),
])
def test_invalid_requests_name_the_param(server, script, body, param, code) -> None:
    err = envelope(post(server, body), 400)
    assert err["param"] == param, err
    assert err["code"] == code, err
    assert err["type"] == "invalid_request_error"
    assert script.requests == [], "nothing may reach the engine"


def test_malformed_json_and_non_object(server, script) -> None:
    err = envelope(post(server, None, raw=b'{"model": "m", "input": '), 400)
    assert err["code"] == "invalid_json"
    assert envelope(post(server, None, raw=b""), 400)["code"] == "invalid_json"
    assert envelope(post(server, ["not", "an", "object"]), 400)["code"] == "invalid_type"


def test_explicit_nulls_are_accepted(client: OpenAI, script) -> None:
    r = client.responses.create(model="m", input="x", instructions=None, temperature=None, top_p=None,
                                metadata=None, tools=None, tool_choice=None, max_output_tokens=None, text=None,
                                reasoning=None, user=None, previous_response_id=None, truncation=None,
                                store=None, include=None, parallel_tool_calls=None, service_tier=None)
    assert r.status == "completed"


def test_unknown_top_level_keys_are_tolerated(server, script) -> None:
    resp = post(server, {"model": "m", "input": "x", "client_metadata": {"a": "b"}, "some_future_field": 1})
    assert resp.status_code == 200 and resp.json()["status"] == "completed"


def test_auth_errors(server, script) -> None:
    assert envelope(post(server, {"model": "m", "input": "x"}, headers={"Authorization": ""}), 401)["code"] \
        == "missing_api_key"
    assert envelope(post(server, {"model": "m", "input": "x"}, headers={"Authorization": "Bearer wrong"}), 401)[
        "code"] == "invalid_api_key"
    resp = httpx.post(server.base_url + "/responses", json={"model": "m", "input": "x"},
                      headers={"api-key": KEY_A}, timeout=30)
    assert resp.status_code == 200
    with pytest.raises(openai.AuthenticationError):
        OpenAI(base_url=server.base_url, api_key="nope", max_retries=0).responses.retrieve("resp_x")


def test_unknown_ids_and_routes(server, client: OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as e:
        client.responses.retrieve("resp_doesnotexist")
    assert "resp_doesnotexist" in e.value.message
    with pytest.raises(openai.NotFoundError) as e:
        client.responses.create(model="m", input="x", previous_response_id="resp_missing")
    assert e.value.body["param"] == "previous_response_id"
    with pytest.raises(openai.NotFoundError) as e:
        client.responses.create(model="m", input=[{"type": "item_reference", "id": "msg_missing"}])
    assert e.value.body["param"] == "input[0]"
    assert envelope(httpx.get(server.base_url + "/nowhere", headers=AUTH), 404)["type"] == "not_found_error"
    assert envelope(httpx.put(server.base_url + "/responses", headers=AUTH), 405)


@pytest.mark.parametrize(("method", "path"), [("POST", "/v1/responses/"), ("GET", "/v1/files/"),
                                             ("POST", "/openai/v1/responses/"), ("GET", "/health/"),
                                             ("GET", "/v1")])
def test_trailing_slash_paths_are_404s_not_redirects(server, method: str, path: str) -> None:
    """A redirect would be built from the Host header: an open redirect for caches that forward it."""
    r = httpx.request(method, server.url + path, headers={**AUTH, "Host": "evil.example"}, json={},
                      follow_redirects=False)
    assert "location" not in r.headers
    assert envelope(r, 404)["message"] == f"Unknown path: {path}"


def test_cancel_of_a_foreground_response_is_400(client: OpenAI) -> None:
    r = client.responses.create(model="m", input="x")
    with pytest.raises(openai.BadRequestError) as e:
        client.responses.cancel(r.id)
    assert "background" in e.value.message
    with pytest.raises(openai.NotFoundError):
        client.responses.cancel("resp_unknown")


def test_engine_client_errors_pass_through_unstored(client: OpenAI, script) -> None:
    script.add({"status": 400, "error": "This model's maximum context length is 4096 tokens"})
    with pytest.raises(openai.BadRequestError) as e:
        client.responses.create(model="m", input="x")
    assert e.value.code == "context_length_exceeded" and e.value.body["param"] == "input"
    script.add({"status": 404, "error": "model xyz not found"})
    with pytest.raises(openai.NotFoundError) as e:
        client.responses.create(model="xyz", input="x")
    assert e.value.code == "model_not_found"
    script.add({"status": 429, "error": "slow down"})
    with pytest.raises(openai.RateLimitError):
        client.responses.create(model="m", input="x")


@pytest.fixture(scope="module")
def strict_server(engine: ScriptedEngine, tmp_path_factory) -> Iterator[ServerProcess]:
    """A server with a short engine timeout and a small body limit."""
    proc = ServerProcess(tmp_path_factory.mktemp("strict"), "--upstream-base-url", engine.base_url,
                         "--api-key", KEY_A, "--upstream-timeout", "1", "--max-body-size", "2k")
    proc.start()
    yield proc
    proc.stop()


def test_oversize_body_is_413(strict_server, script) -> None:
    err = envelope(post(strict_server, {"model": "m", "input": "x" * 5000}), 413)
    assert err["code"] == "request_too_large"


def test_engine_timeout_fails_the_response_without_hanging(strict_server, script) -> None:
    client = OpenAI(base_url=strict_server.base_url, api_key=KEY_A, max_retries=0, timeout=20)
    script.add({"hang": True})
    r = client.responses.create(model="m", input="x")
    assert r.status == "failed" and r.error.code == "server_error"
    assert client.responses.retrieve(r.id).status == "failed"
    script.add({"content": "slow start", "first_delay": 3})
    events = [wire(e) for e in client.responses.create(model="m", input="x", stream=True)]
    check_events(events)
    assert events[-1]["type"] == "response.failed"


def test_streamed_requests_the_engine_refuses_get_http_errors(client: OpenAI, script) -> None:
    # Refused before the engine accepted the turn: an ordinary HTTP error, as for a plain
    # request (the SDKs retry a 429), and nothing is stored.
    script.add({"status": 400, "error": "This model's maximum context length is 4096 tokens"})
    with pytest.raises(openai.BadRequestError) as e:
        client.responses.create(model="m", input="x", stream=True)
    assert e.value.code == "context_length_exceeded"
    script.add({"status": 429, "error": "slow down"})
    with pytest.raises(openai.RateLimitError):
        client.responses.create(model="m", input="x", stream=True)
    script.add({"status": 404, "error": "no such model"})
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="nope", input="x", stream=True)


def test_client_error_is_not_stored(server, client: OpenAI, script) -> None:
    import sqlite3

    script.add({"status": 400, "error": "bad request from the engine"})
    with pytest.raises(openai.BadRequestError):
        client.responses.create(model="m", input="unique-marker-4711")
    db = sqlite3.connect(f"file:{server.data_dir / 'responsa.db'}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT count(*) FROM items WHERE CAST(data AS TEXT) LIKE '%unique-marker-4711%'")
        assert rows.fetchone()[0] == 0
        control = client.responses.create(model="m", input="unique-marker-4712")  # the control is found
        client.responses.retrieve(control.id)  # committed once the server reads its next request
        rows = db.execute("SELECT count(*) FROM items WHERE CAST(data AS TEXT) LIKE '%unique-marker-4712%'")
        assert rows.fetchone()[0] == 2  # its input, and the echo in its output
    finally:
        db.close()
