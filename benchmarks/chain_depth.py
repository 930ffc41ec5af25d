"""Turn 100 of a previous_response_id chain against turn 1: the cost of a long conversation.

Starts a fixed Chat Completions engine (nginx with ../shared/bench/upstream/nginx.conf.tmpl
when nginx is installed, else a minimal Python engine), starts `responsa serve` in front of
it, builds a chain of --depth turns, then times new turns continuing from depth 1 and from
depth N, interleaved, over one keep-alive connection. It also times the engine directly,
so the gateway's own time can be read apart from the engine's.

    python benchmarks/chain_depth.py [--depth 100] [--requests 400] [--database-url postgresql://...]

Target (issue 2): the gateway's time at depth 100 within 1.2x of its time at depth 1.
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

from fixed_engine import serve_fixed, wait_http

HERE = Path(__file__).resolve().parent
NGINX_TEMPLATE = Path(os.environ.get("BENCH_NGINX_TEMPLATE",
                                     HERE.parents[1] / "shared" / "bench" / "upstream" / "nginx.conf.tmpl"))
REPLY = {"id": "chatcmpl-bench", "object": "chat.completion", "created": 0, "model": "bench-model",
         "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello! I am a fixed benchmark "
                                                "reply, here to measure gateway overhead only. Bye"},
                      "finish_reason": "stop"}],
         "usage": {"prompt_tokens": 9, "completion_tokens": 20, "total_tokens": 29}}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pinned(cmd: list[str], cpu: int) -> list[str]:
    if shutil.which("taskset") and (os.cpu_count() or 1) >= 2:
        return ["taskset", "-c", str(cpu), *cmd]
    return cmd


def start_engine(workdir: Path) -> tuple[str, object]:
    """The fixed engine: nginx if possible (not Python, so it adds no noise), else Python."""
    if shutil.which("nginx") and NGINX_TEMPLATE.is_file():
        port = free_port()
        conf_dir = workdir / "nginx"
        conf_dir.mkdir()
        (conf_dir / "nginx.conf").write_text(NGINX_TEMPLATE.read_text().replace("@PORT@", str(port)))
        proc = subprocess.Popen(pinned(["nginx", "-p", f"{conf_dir}/", "-e", f"{conf_dir}/error.log", "-c",
                                        f"{conf_dir}/nginx.conf"], 0), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
        wait_http(f"http://127.0.0.1:{port}/plain/v1/models")
        return f"http://127.0.0.1:{port}/plain/v1", proc

    server = serve_fixed(json.dumps(REPLY).encode())
    return f"http://127.0.0.1:{server.server_address[1]}/v1", server




class Client:
    """One keep-alive connection; returns (status, parsed body, seconds)."""

    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port)

    def post(self, path: str, body: dict) -> tuple[int, dict, float]:
        data = json.dumps(body).encode()
        started = time.perf_counter()
        self.conn.request("POST", path, body=data, headers={"Content-Type": "application/json",
                                                             "Authorization": "Bearer bench"})
        resp = self.conn.getresponse()
        raw = resp.read()
        elapsed = time.perf_counter() - started
        return resp.status, json.loads(raw), elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--depth", type=int, default=100)
    parser.add_argument("--requests", type=int, default=400, help="timed turns at each depth")
    parser.add_argument("--responsa", default=str(Path(sys.executable).with_name("responsa")))
    parser.add_argument("--database-url", help="PostgreSQL instead of SQLite (a database of its own: it is "
                        "written to)")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="chain-bench-"))
    engine_url, engine = start_engine(workdir)
    port = free_port()
    server = subprocess.Popen(pinned([args.responsa, "serve", "--port", str(port), "--data-dir",
                                      str(workdir / "data"), "--upstream-base-url", engine_url, "--api-key",
                                      "bench", "--access-log", "false",
                                      *(["--database-url", args.database_url] if args.database_url else [])], 1),
                              stdout=subprocess.DEVNULL, stderr=open(workdir / "server.log", "wb"))
    try:
        wait_http(f"http://127.0.0.1:{port}/health")
        client = Client(port)
        ids = []
        previous = None
        for turn in range(args.depth):
            status, body, _ = client.post("/v1/responses", {"model": "bench-model", "input": f"turn {turn}: say hello",
                                                            "previous_response_id": previous})
            assert status == 200 and body["status"] == "completed", body
            previous = body["id"]
            ids.append(previous)
        engine_parts = engine_url.split("/", 3)
        direct = Client(int(engine_parts[2].split(":")[1]))
        engine_path = "/" + engine_parts[3] + "/chat/completions"
        reply = REPLY["choices"][0]["message"]["content"]

        def engine_body(depth: int) -> dict:
            """What the gateway sends the engine at this depth (same size: the engine reads it all)."""
            messages = []
            for turn in range(depth):
                messages += [{"role": "user", "content": f"turn {turn}: say hello"},
                             {"role": "assistant", "content": reply}]
            return {"model": "bench-model", "messages": [*messages, {"role": "user", "content": "once more"}]}

        depths = {"1": (ids[0], engine_body(1)), str(args.depth): (ids[-1], engine_body(args.depth))}
        times: dict[str, list[float]] = {}
        for n in range(args.requests + 50):
            for depth, (parent, direct_body) in depths.items():
                status, body, elapsed = client.post("/v1/responses", {"model": "bench-model", "input": "once more",
                                                                      "previous_response_id": parent})
                assert status == 200, body
                _, _, direct_elapsed = direct.post(engine_path, direct_body)
                if n >= 50:  # warm-up
                    times.setdefault(f"depth {depth}", []).append(elapsed)
                    times.setdefault(f"engine {depth}", []).append(direct_elapsed)
        p50 = {k: statistics.median(v) * 1000 for k, v in times.items()}
        engine_kind = "nginx" if "plain" in engine_url else "python"
        print(f"chain depth benchmark: {args.requests} turns at each depth, engine {engine_kind}")
        print(f"{'':>10} {'through Responsa p50 ms':>24} {'engine alone p50 ms':>20} {'gateway p50 ms':>15}")
        gateway = {}
        for depth in depths:
            gateway[depth] = p50[f"depth {depth}"] - p50[f"engine {depth}"]
            print(f"{'depth ' + depth:>10} {p50[f'depth {depth}']:24.3f} {p50[f'engine {depth}']:20.3f} "
                  f"{gateway[depth]:15.3f}")
        ratio = gateway[str(args.depth)] / gateway["1"]
        print(f"gateway time at depth {args.depth} / depth 1: {ratio:.2f}x (target <= 1.2x)")
    finally:
        server.terminate()
        server.wait(timeout=20)
        if isinstance(engine, subprocess.Popen):
            engine.terminate()
        else:
            engine.shutdown()  # type: ignore[attr-defined]
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
