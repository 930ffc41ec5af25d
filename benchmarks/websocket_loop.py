"""A 20-turn tool loop over one WebSocket against the same loop over HTTP SSE (issue 17).

Starts a scripted Chat Completions engine in its own process (it answers a function call until
the conversation holds 19 tool results, then text), starts `responsa serve` in front of it,
and runs the agent loop an SDK or Codex runs: create, read the stream to its terminal event,
send the function's output with previous_response_id, again. Per turn it times the client's
wait from sending a request to the terminal event, and the engine alone answering the same
streamed request, so the server's added latency per turn can be read apart from the engine.

Four loops, interleaved round by round:
  http  store=true   POST /responses stream=true, previous_response_id (the store holds the chain)
  ws    store=true   response.create on one socket, previous_response_id
  http  store=false  the whole history sent again each turn (the only way over HTTP; Codex does it)
  ws    store=false  only the new item, previous_response_id (the connection holds the chain)

    python benchmarks/websocket_loop.py [--loops 30] [--turns 20]

Target: the socket cheaper per turn than HTTP SSE.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from fixed_engine import wait_http
from websockets.sync.client import connect

KEY = "bench"
TOOLS = [{"type": "function", "name": "step", "description": "Run one step",
          "parameters": {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}}]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pinned(cmd: list[str], cpu: int) -> list[str]:
    if shutil.which("taskset") and (os.cpu_count() or 1) >= 2:
        return ["taskset", "-c", str(cpu), *cmd]
    return cmd


def serve_engine(port: int, turns: int) -> None:
    """The engine process: a function call per turn until `turns - 1` tool results, then text."""
    import uvicorn

    from responsa.backends.scripted import Script, scripted_upstream_app

    class Loop(Script):
        def next_turn(self, body: dict) -> dict:
            done = sum(1 for m in body.get("messages") or () if m.get("role") == "tool")
            if done >= turns - 1:
                return {"content": "All steps are done."}
            return {"tool_calls": [{"name": "step", "arguments": {"n": done}, "id": f"call_{done}"}]}

    uvicorn.run(scripted_upstream_app(Loop()), host="127.0.0.1", port=port, log_level="warning",
                loop="uvloop", http="httptools")




def output_of(call: dict, n: int) -> dict:
    return {"type": "function_call_output", "call_id": call["call_id"], "output": f"step {n} ok"}


class HttpLoop:
    """The loop over HTTP SSE on one keep-alive connection."""

    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port)

    def turn(self, body: dict) -> tuple[dict, float]:
        data = json.dumps({**body, "stream": True}).encode()
        started = time.perf_counter()
        self.conn.request("POST", "/v1/responses", body=data, headers={
            "Content-Type": "application/json", "Authorization": f"Bearer {KEY}"})
        resp = self.conn.getresponse()
        final = None
        terminal = False
        while True:
            line = resp.readline()
            if not line:
                break
            if line.startswith(b"event: "):
                terminal = line == b"event: response.completed\n"
            elif terminal and line.startswith(b"data: "):
                final = json.loads(line[6:])["response"]
        elapsed = time.perf_counter() - started
        assert resp.status == 200 and final is not None, resp.status
        return final, elapsed

    def run(self, turns: int, store: bool) -> list[float]:
        times = []
        history: list[dict] = [{"role": "user", "content": "run the steps"}]
        previous = None
        body: dict[str, Any] = {"model": "bench-model", "tools": TOOLS, "store": store, "input": history}
        for n in range(turns):
            response, elapsed = self.turn(body)
            times.append(elapsed)
            calls = [i for i in response["output"] if i["type"] == "function_call"]
            if not calls:
                assert n == turns - 1, n
                break
            if store:
                previous = response["id"]
                body = {"model": "bench-model", "tools": TOOLS, "store": True, "previous_response_id": previous,
                        "input": [output_of(calls[0], n)]}
            else:
                history = [*history, *response["output"], output_of(calls[0], n)]
                body = {"model": "bench-model", "tools": TOOLS, "store": False, "input": history}
        return times


class SocketLoop:
    """The loop over one WebSocket connection."""

    def __init__(self, port: int) -> None:
        self.ws = connect(f"ws://127.0.0.1:{port}/v1/responses", additional_headers={"Authorization": f"Bearer {KEY}"},
                          compression=None, max_size=None)

    def turn(self, body: dict) -> tuple[dict, float]:
        data = json.dumps({"type": "response.create", **body})
        started = time.perf_counter()
        self.ws.send(data)
        while True:
            message = self.ws.recv()
            if '"type":"response.completed"' in message or '"type":"error"' in message:
                event = json.loads(message)
                if event["type"] == "response.completed":
                    break
                if event["type"] == "error":
                    raise RuntimeError(message)
        elapsed = time.perf_counter() - started
        return event["response"], elapsed

    def run(self, turns: int, store: bool) -> list[float]:
        times = []
        body: dict[str, Any] = {"model": "bench-model", "tools": TOOLS, "store": store, "input": "run the steps"}
        for n in range(turns):
            response, elapsed = self.turn(body)
            times.append(elapsed)
            calls = [i for i in response["output"] if i["type"] == "function_call"]
            if not calls:
                assert n == turns - 1, n
                break
            body = {"model": "bench-model", "tools": TOOLS, "store": store, "previous_response_id": response["id"],
                    "input": [output_of(calls[0], n)]}
        return times


def engine_alone(port: int, turns: int, rounds: int) -> float:
    """Median time of the engine answering a streamed turn directly (a mid-loop request)."""
    conn = http.client.HTTPConnection("127.0.0.1", port)
    messages: list[dict] = [{"role": "user", "content": "run the steps"}]
    for n in range(turns // 2):
        messages += [{"role": "assistant", "content": None, "tool_calls": [
            {"id": f"call_{n}", "type": "function", "function": {"name": "step", "arguments": json.dumps({"n": n})}}]},
            {"role": "tool", "tool_call_id": f"call_{n}", "content": f"step {n} ok"}]
    tools = [{"type": "function", "function": {"name": t["name"], "description": t["description"],
                                               "parameters": t["parameters"]}} for t in TOOLS]
    body = json.dumps({"model": "bench-model", "messages": messages, "tools": tools, "stream": True,
                       "stream_options": {"include_usage": True}}).encode()
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        conn.request("POST", "/v1/chat/completions", body=body, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        resp.read()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--loops", type=int, default=30, help="timed loops of each kind")
    parser.add_argument("--turns", type=int, default=20)
    parser.add_argument("--responsa", default=str(Path(sys.executable).with_name("responsa")))
    parser.add_argument("--serve-engine", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_engine:
        serve_engine(args.serve_engine, args.turns)
        return

    workdir = Path(tempfile.mkdtemp(prefix="ws-bench-"))
    engine_port, port = free_port(), free_port()
    engine_proc = subprocess.Popen(pinned([sys.executable, __file__, "--serve-engine", str(engine_port),
                                           "--turns", str(args.turns)], 0), stderr=subprocess.DEVNULL)
    server = subprocess.Popen(pinned([args.responsa, "serve", "--port", str(port), "--data-dir",
                                      str(workdir / "data"), "--upstream-base-url",
                                      f"http://127.0.0.1:{engine_port}/v1", "--api-key", KEY,
                                      "--access-log", "false"], 1),
                              stdout=subprocess.DEVNULL, stderr=open(workdir / "server.log", "wb"))
    try:
        wait_http(f"http://127.0.0.1:{engine_port}/v1/models")
        wait_http(f"http://127.0.0.1:{port}/health")
        http_loop, socket_loop = HttpLoop(port), SocketLoop(port)
        kinds = {("http", True): http_loop, ("ws", True): socket_loop, ("http", False): http_loop,
                 ("ws", False): socket_loop}
        times: dict[tuple[str, bool], list[float]] = {k: [] for k in kinds}
        for n in range(args.loops + 3):
            for (transport, store), loop in kinds.items():
                turn_times = loop.run(args.turns, store)
                assert len(turn_times) == args.turns
                if n >= 3:  # warm-up
                    times[(transport, store)].extend(turn_times)
        engine_ms = engine_alone(engine_port, args.turns, 200) * 1000
        print(f"websocket loop benchmark: {args.loops} loops of {args.turns} turns per kind, "
              f"engine alone {engine_ms:.3f} ms per turn (p50)")
        print(f"{'':>18} {'per turn p50 ms':>16} {'p90 ms':>8} {'added p50 ms':>13} {'loop ms':>9}")
        added = {}
        for (transport, store), values in times.items():
            p50 = statistics.median(values) * 1000
            p90 = statistics.quantiles(values, n=10)[-1] * 1000
            added[(transport, store)] = p50 - engine_ms
            print(f"{transport + ' store=' + str(store).lower():>18} {p50:16.3f} {p90:8.3f} "
                  f"{added[(transport, store)]:13.3f} {p50 * args.turns:9.1f}")
        for store in (True, False):
            print(f"store={str(store).lower()}: the socket adds {added[('ws', store)]:.3f} ms per turn, HTTP SSE "
                  f"{added[('http', store)]:.3f} ms ({added[('ws', store)] / added[('http', store)]:.2f}x; "
                  "target < 1)")
    finally:
        server.terminate()
        server.wait(timeout=20)
        engine_proc.terminate()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
