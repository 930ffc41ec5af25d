"""OpenTelemetry traces: spans exported over OTLP/HTTP to a collector in the test process (its
protobuf decoded with opentelemetry-proto), and the `traceparent` engines and MCP servers get."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from harness import KEY_A, ScriptedEngine, ServerProcess, wait_for
from mcp_servers import MCPTestServer
from openai import OpenAI

trace_service = pytest.importorskip("opentelemetry.proto.collector.trace.v1.trace_service_pb2")


class Collector:
    """An OTLP/HTTP trace receiver: every span it was sent, as dicts."""

    def __init__(self) -> None:
        self.spans: list[dict] = []
        self.lock = threading.Lock()
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                request = trace_service.ExportTraceServiceRequest()
                request.ParseFromString(body)
                with collector.lock:
                    for resource in request.resource_spans:
                        service = {a.key: a.value.string_value for a in resource.resource.attributes}
                        for scope in resource.scope_spans:
                            for span in scope.spans:
                                collector.spans.append({
                                    "name": span.name, "trace": span.trace_id.hex(), "id": span.span_id.hex(),
                                    "parent": span.parent_span_id.hex() or None, "kind": span.kind,
                                    "service": service.get("service.name"),
                                    "attributes": {a.key: a.value for a in span.attributes}})
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.end_headers()
                self.wfile.write(trace_service.ExportTraceServiceResponse().SerializeToString())

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def of_trace(self, trace_id: str) -> list[dict]:
        with self.lock:
            return [s for s in self.spans if s["trace"] == trace_id]

    def stop(self) -> None:
        self.server.shutdown()


@pytest.fixture
def collector() -> Iterator[Collector]:
    c = Collector()
    yield c
    c.stop()


def test_spans_of_a_request_reach_the_collector_as_one_tree(engine: ScriptedEngine, script, collector: Collector,
                                                            tmp_path: Path) -> None:
    calc = MCPTestServer("calc").start()
    server = ServerProcess(tmp_path / "data", "--upstream-base-url", engine.base_url, "--api-key", KEY_A,
                           "--allow-private-network",
                           env={"OTEL_EXPORTER_OTLP_ENDPOINT": collector.url, "OTEL_BSP_SCHEDULE_DELAY": "50",
                                "OTEL_SERVICE_NAME": "responsa-under-test"}).start()
    try:
        client = OpenAI(base_url=server.base_url, api_key=KEY_A, max_retries=0)
        script.add({"tool_calls": [{"name": "mcp__calc__add", "arguments": {"a": 2, "b": 3}}]},
                   {"content": "The sum is 5."})
        # The client's own trace: the server's request span is its child.
        client_trace, client_span = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
        made = client.responses.create(
            model="m", input="add 2 and 3", extra_headers={"traceparent": f"00-{client_trace}-{client_span}-01"},
            tools=[{"type": "mcp", "server_label": "calc", "server_url": calc.mcp_url, "require_approval": "never"}])
        assert made.output_text == "The sum is 5."

        def tree() -> list[dict]:
            spans = collector.of_trace(client_trace)
            names = [s["name"] for s in spans]
            return spans if "POST /responses" in names and names.count("chat m") == 2 else []

        spans = wait_for(tree, timeout=15)
        by_id = {s["id"]: s for s in spans}
        root = next(s for s in spans if s["name"] == "POST /responses")
        assert root["parent"] == client_span and root["service"] == "responsa-under-test"
        assert root["attributes"]["http.response.status_code"].int_value == 200
        assert root["attributes"]["gen_ai.request.model"].string_value == "m"
        turns = [s for s in spans if s["name"] == "chat m"]
        tool = next(s for s in spans if s["name"] == "tool mcp")
        stores = [s for s in spans if s["name"].startswith("store ")]
        assert all(t["parent"] == root["id"] for t in turns) and tool["parent"] == root["id"]
        assert tool["attributes"]["gen_ai.tool.name"].string_value == "mcp__calc__add"
        assert stores and all(by_id.get(s["parent"]) is not None for s in stores)
        assert {by_id[s["parent"]]["name"] for s in stores} <= {"POST /responses", "tool mcp", "chat m"}
        assert "store save_response" in {s["name"] for s in stores}
        assert all(t["attributes"]["gen_ai.usage.input_tokens"].int_value > 0 for t in turns)

        # The engine got each turn's context: the trace, and its turn's span as the parent.
        sent = [p for p in script.traceparents if p is not None]
        assert len(sent) == 2
        assert sorted(p.split("-")[2] for p in sent) == sorted(t["id"] for t in turns)
        assert all(p.split("-")[1] == client_trace for p in sent)
        # ... and so did the MCP server, on every message of the call.
        mcp_sent = {e["traceparent"] for e in calc.log.entries if e["method"]}
        assert mcp_sent and all(p and p.split("-")[1] == client_trace for p in mcp_sent)
        assert any(p.split("-")[2] == tool["id"] for p in mcp_sent)  # the call itself, under its span
    finally:
        server.stop()
        calc.stop()


def test_no_traces_unless_configured(engine: ScriptedEngine, script, tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data", "--upstream-base-url", engine.base_url, "--api-key", KEY_A).start()
    try:
        client = OpenAI(base_url=server.base_url, api_key=KEY_A, max_retries=0)
        client.responses.create(model="m", input="hi")
        assert script.traceparents == [None]
    finally:
        server.stop()
