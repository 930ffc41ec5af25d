"""Operations: Prometheus metrics on their own port, JSON logs, request ids, liveness.

A server with `--metrics-port` and `--log-format json` in front of the scripted engine,
driven through the official SDK; the metrics are read as Prometheus reads them, and once by a
real Prometheus (Debian's `prometheus`, installed by scripts/test; skipped without it).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from harness import KEY_A, ScriptedEngine, ServerProcess, free_port, wait_for
from openai import OpenAI
from prometheus_client.parser import text_string_to_metric_families

from responsa.config import ConfigError, load_settings
from responsa.errors import ServiceUnavailable
from responsa.metrics import Labels, Metrics


@pytest.fixture(scope="module")
def observed(engine: ScriptedEngine, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, int]]:
    metrics_port = free_port()
    proc = ServerProcess(tmp_path_factory.mktemp("observed"), "--upstream-base-url", engine.base_url,
                         "--api-key", KEY_A, "--metrics-port", str(metrics_port), "--log-format", "json",
                         "--keepalive-interval", "1")
    proc.start()
    yield proc, metrics_port
    proc.stop()


def samples(port: int) -> dict[tuple[str, frozenset], float]:
    """Every sample of the exposition, by name and labels."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics").text
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(found: dict[tuple[str, frozenset], float], name: str, **labels: str) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


def sdk(server: ServerProcess) -> OpenAI:
    return OpenAI(base_url=server.base_url, api_key=KEY_A, max_retries=0)


def json_lines(server: ServerProcess) -> list[dict]:
    return [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]


def test_metrics_count_requests_tokens_and_engine_errors(observed, script) -> None:
    server, port = observed
    before = samples(port)
    script.add({"content": "plain", "usage": {"prompt_tokens": 11, "completion_tokens": 5}},
               {"content": "one two three", "usage": {"prompt_tokens": 4, "completion_tokens": 3}},
               {"status": 429, "error": "slow down"})
    client = sdk(server)
    client.responses.create(model="metered", input="hi")
    with client.responses.create(model="metered", input="hi", stream=True) as stream:
        for _ in stream:
            pass
    with pytest.raises(openai.RateLimitError):
        client.responses.create(model="metered", input="hi")
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve("resp_unknown")
    assert httpx.get(server.base_url + "/no/such/path").status_code == 404
    after = samples(port)

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert grew("responsa_http_requests_total", route="/responses", method="POST", status="200",
                model="metered") == 2
    assert grew("responsa_http_requests_total", route="/responses", method="POST", status="429",
                model="metered") == 1
    assert grew("responsa_http_requests_total", route="/responses/{response_id}", method="GET", status="404",
                model="") == 1
    assert grew("responsa_http_requests_total", route="unmatched", method="GET", status="404", model="") == 1
    assert not any(labels.get("route") == "/v1" for (_, key) in after for labels in [dict(key)])
    assert grew("responsa_http_request_duration_seconds_count", route="/responses", method="POST", status="200",
                model="metered") == 2
    assert grew("responsa_engine_tokens_total", backend="upstream", model="metered", kind="input") == 15
    assert grew("responsa_engine_tokens_total", backend="upstream", model="metered", kind="output") == 8
    assert grew("responsa_engine_time_to_first_token_seconds_count", backend="upstream", model="metered") == 2
    assert grew("responsa_engine_errors_total", backend="upstream", kind="rate_limit_exceeded") == 1
    assert value(after, "responsa_store_up") == 1
    assert grew("responsa_store_operation_duration_seconds_count", operation="save_response") >= 2
    assert value(after, "responsa_live_streams") == 0
    assert value(after, "responsa_background_runs", state="queued") == 0
    assert value(after, "responsa_draining") == 0


def test_metrics_see_live_streams_and_background_runs(observed, script) -> None:
    server, port = observed
    script.add({"match": "stream", "content": " ".join(f"s{n}" for n in range(100)), "delay": 0.05},
               {"match": "background", "content": " ".join(f"b{n}" for n in range(100)), "delay": 0.05})
    client = sdk(server)
    with client.responses.create(model="m", input="stream", stream=True) as stream:
        for ev in stream:
            if ev.type == "response.output_text.delta":
                break
        run = client.responses.create(model="m", input="background", background=True)
        found = wait_for(lambda: (s := samples(port)) and
                         value(s, "responsa_background_runs", state="in_progress") == 1 and s)
        assert value(found, "responsa_live_streams") == 1
    wait_for(lambda: client.responses.retrieve(run.id).status == "completed", timeout=30)
    assert value(samples(port), "responsa_background_runs", state="in_progress") == 0


def test_metrics_are_not_on_the_api_port(observed, server: ServerProcess) -> None:
    api, port = observed
    assert httpx.get(api.url + "/metrics").status_code == 404
    assert httpx.get(server.url + "/metrics").status_code == 404  # the shared server has them off
    assert httpx.post(f"http://127.0.0.1:{port}/metrics").status_code == 405
    assert httpx.get(f"http://127.0.0.1:{port}/other").status_code == 404


def test_metrics_time_mcp_calls_and_listings(engine: ScriptedEngine, script, tmp_path: Path) -> None:
    from mcp_servers import MCPTestServer

    port = free_port()
    server = ServerProcess(tmp_path / "mcp", "--upstream-base-url", engine.base_url, "--api-key", KEY_A,
                           "--metrics-port", str(port), "--allow-private-network").start()
    calc = MCPTestServer("calc").start()
    try:
        tool = {"type": "mcp", "server_label": "calc", "server_url": calc.mcp_url, "require_approval": "always"}
        script.add({"tool_calls": [{"name": "mcp__calc__add", "arguments": {"a": 2, "b": 3}}]},
                   {"content": "The sum is 5."})
        asked = sdk(server).responses.create(model="m", input="add", tools=[tool])
        request = asked.output[-1]
        assert request.type == "mcp_approval_request"
        # Approving checks the history against the (metered) MCP tool kind, then runs the call.
        done = sdk(server).responses.create(model="m", previous_response_id=asked.id, tools=[tool], input=[
            {"type": "mcp_approval_response", "approval_request_id": request.id, "approve": True}])
        assert done.output_text == "The sum is 5."
        found = samples(port)
        # One call (the approved one, run before the second response's first turn), one listing (the
        # second response reuses the first's).
        assert value(found, "responsa_tool_call_duration_seconds_count", type="mcp") == 1
        assert value(found, "responsa_mcp_list_tools_duration_seconds_count") == 1
    finally:
        calc.stop()
        server.stop()


def test_request_ids_are_echoed_or_made(observed) -> None:
    server, _ = observed
    headers = {"authorization": f"Bearer {KEY_A}"}
    mine = httpx.get(server.base_url + "/models", headers={**headers, "x-request-id": "trace-7f3a:1"})
    assert mine.headers["x-request-id"] == "trace-7f3a:1"
    made = httpx.get(server.base_url + "/models")
    assert made.status_code == 401 and made.headers["x-request-id"].startswith("req_")
    # An id a log line or a header could trip on is replaced, not echoed.
    for bad in ("has space", "x" * 129, 'quote"d'):
        got = httpx.get(server.base_url + "/models", headers={**headers, "x-request-id": bad})
        assert got.headers["x-request-id"].startswith("req_")


def test_json_access_lines_name_the_key_never_the_key(observed, script) -> None:
    server, _ = observed
    script.add({"content": "logged", "usage": {"prompt_tokens": 9, "completion_tokens": 2}})
    r = sdk(server).responses.with_raw_response.create(model="logged-model", input="hi",
                                                       extra_headers={"x-request-id": "json-log-1"})
    assert r.headers["x-request-id"] == "json-log-1"
    line = wait_for(lambda: next((e for e in json_lines(server) if e.get("request_id") == "json-log-1"
                                  and e["logger"] == "responsa.access"), None))
    assert line["method"] == "POST" and line["path"] == "/v1/responses" and line["route"] == "/responses"
    assert line["status"] == 200 and line["model"] == "logged-model"
    assert line["input_tokens"] == 9 and line["output_tokens"] == 2
    assert line["duration_ms"] > 0 and line["first_token_ms"] is not None
    assert line["key"].startswith("key-") and KEY_A not in server.log()
    assert line["time"].endswith("Z") and line["level"] == "info"
    started = next(e for e in json_lines(server) if e["message"].startswith("responsa ready"))
    assert started["logger"] == "responsa" and started["level"] == "info"


def test_json_lines_logged_while_serving_carry_the_request_id(observed, script) -> None:
    server, _ = observed
    script.add({"status": 500, "error": "engine broke"})
    failed = sdk(server).responses.create(model="m", input="hi", extra_headers={"x-request-id": "failing-plain-1"})
    assert failed.status == "failed"
    line = wait_for(lambda: next((e for e in json_lines(server) if e.get("request_id") == "failing-plain-1"
                                  and e["logger"] != "responsa.access"), None))
    assert line["level"] == "warning" and "failed" in line["message"]


def test_liveness_and_readiness(observed) -> None:
    server, _ = observed
    assert httpx.get(server.url + "/health/live").json() == {"status": "ok"}
    assert httpx.get(server.url + "/health").json()["status"] == "ok"


# ---- a real Prometheus ---------------------------------------------------------------------------

def test_prometheus_scrapes_the_request_count(observed, script, tmp_path: Path) -> None:
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("Prometheus is not installed (scripts/test installs Debian's `prometheus`)")
    server, port = observed
    script.add({"content": "scraped"}, {"content": "scraped"}, {"content": "scraped"})
    for _ in range(3):
        sdk(server).responses.create(model="scraped-model", input="hi")
    config = tmp_path / "prometheus.yml"
    config.write_text("global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: responsa\n"
                      f"    static_configs:\n      - targets: ['127.0.0.1:{port}']\n")
    web = free_port()
    proc = subprocess.Popen([binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'data'}",
                             f"--web.listen-address=127.0.0.1:{web}"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        query = 'sum(responsa_http_requests_total{route="/responses",model="scraped-model",status="200"})'

        def scraped() -> Any:
            try:
                got = httpx.get(f"http://127.0.0.1:{web}/api/v1/query", params={"query": query}).json()
            except httpx.HTTPError:
                return None
            result = got.get("data", {}).get("result", [])
            return result and float(result[0]["value"][1])

        # Prometheus starts its storage and web server before its first scrape: seconds on a quiet
        # machine, more on a loaded one. The wait ends as soon as the count is there.
        assert wait_for(scraped, timeout=120, interval=0.2) == 3
        targets = httpx.get(f"http://127.0.0.1:{web}/api/v1/targets").json()["data"]["activeTargets"]
        assert targets[0]["health"] == "up"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


# ---- pure parts ------------------------------------------------------------------------------------

def test_model_labels_are_capped() -> None:
    labels = Labels(limit=2)
    assert [labels(m) for m in ("a", "b", "c", "a", None)] == ["a", "b", "other", "a", ""]


def test_store_outages_are_counted_and_reported() -> None:
    class Flaky:
        down = False

        async def ping(self) -> bool:
            return not self.down

        async def get_record(self, rid: str, owner: str) -> None:
            if self.down:
                raise ServiceUnavailable("The database is unavailable; try again shortly.")

    metrics = Metrics()
    flaky = Flaky()
    store: Any = metrics.store(flaky)  # type: ignore[arg-type]

    async def scenario() -> None:
        await store.get_record("r", "o")
        flaky.down = True
        with pytest.raises(ServiceUnavailable):
            await store.get_record("r", "o")
        assert metrics.store_up is False
        flaky.down = False
        await store.get_record("r", "o")

    asyncio.run(scenario())
    assert metrics.store_up is True
    text = metrics.exposition().decode()
    assert 'responsa_store_unavailable_total{operation="get_record"} 1.0' in text
    assert 'responsa_store_operation_duration_seconds_count{operation="get_record"} 2.0' in text


def test_metrics_options() -> None:
    settings = load_settings({"metrics_port": "9464", "log_format": "json", "drain_timeout": "1m"}, environ={})
    assert (settings.metrics_port, settings.log_format, settings.drain_timeout) == (9464, "json", 60)
    with pytest.raises(ConfigError, match="--metrics-port must differ from --port"):
        load_settings({"port": "8080", "metrics_port": "8080"}, environ={})
    with pytest.raises(ConfigError, match="not a log format"):
        load_settings({"log_format": "xml"}, environ={})
    with pytest.raises(ConfigError, match="not a TCP port"):
        load_settings({"metrics_port": "70000"}, environ={})


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_metrics_cost_nothing_when_off(log_format: str) -> None:
    """Without --metrics-port, prometheus_client is never imported (JSON logs need none of it)."""
    code = ("import sys; from responsa.app import create_app; from responsa.config import load_settings; "
            "import tempfile; create_app(load_settings({'data_dir': tempfile.mkdtemp(), "
            f"'upstream_base_url': 'http://127.0.0.1:9/v1', 'log_format': '{log_format}'}}, environ={{}})); "
            "print('prometheus_client' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "False", done.stderr


def test_a_draining_server_refuses_new_responses(tmp_path: Path) -> None:
    """A create reaching a draining server (on a connection still open) gets a 503 the SDKs
    retry, and its connection closed, so the retry goes to another replica."""
    from responsa.app import create_app

    app = create_app(load_settings({"data_dir": str(tmp_path), "upstream_base_url": "http://127.0.0.1:9/v1"},
                                   environ={}))
    app.drain.draining = True

    async def post() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
            return await client.post("/v1/responses", json={"model": "m", "input": "hi"})

    got = asyncio.run(post())
    assert got.status_code == 503
    assert got.json()["error"]["code"] == "service_unavailable" and "shutting down" in got.json()["error"]["message"]
    assert got.headers["retry-after"] == "1" and got.headers["connection"] == "close"
    assert got.headers["x-request-id"].startswith("req_")
