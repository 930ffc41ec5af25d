"""What the gateway adds on top of a fixed engine: the figures the README publishes.

nginx answers Chat Completions from memory (a fixed `chat.completion` with 20 completion tokens
for plain requests, the same answer as an SSE body of a chunk per word for streams); wrk sends
`POST /v1/responses` through Responsa, and the same kind of request straight to nginx for the
floor. On a machine with 2 or
more CPUs, nginx and wrk run on CPU 0 and the server on CPU 1, so the server has exactly one
core. Every response is stored (SQLite in a temporary data dir, or --database-url).

    python benchmarks/overhead.py [--duration 10] [--conns 1,32] [--repeat 3] [--responsa CMD]

Prints, per scenario and concurrency, the median over the repeats of requests/s and p50
latency, and the p50 the gateway adds over the direct request. Needs nginx and wrk
(Debian: `apt-get install nginx-light wrk`) and taskset. This is the project's own way to
reproduce the published numbers; ../shared/bench (not part of the repository) is the harness
the project is judged by and measures the same things with a CPU canary and peers beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from fixed_engine import wait_http

# The answer, streamed a word a chunk (17 content chunks; usage reports 20 completion tokens).
WORDS = ("Hello! I am a fixed benchmark reply served by nginx, here to measure gateway overhead "
         "only. Bye").split(" ")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pinned(cmd: list[str], cpu: int) -> list[str]:
    if (os.cpu_count() or 1) >= 2 and shutil.which("taskset"):
        return ["taskset", "-c", str(cpu), *cmd]
    return cmd


def _nginx_string(text: str) -> str:
    return text.replace("\\", "\\\\").replace("'", "\\'")


def nginx_conf(port: int, workdir: Path) -> str:
    """A server answering POST /plain/v1/chat/completions and /stream/... with fixed bodies; every id
    is nginx's unique $request_id, so a gateway that stores responses never sees one twice."""
    cid = "chatcmpl-${request_id}"
    plain = json.dumps({
        "id": cid, "object": "chat.completion", "created": 1700000000, "model": "bench-model",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": " ".join(WORDS)},
                     "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 9, "completion_tokens": 20, "total_tokens": 29}}, separators=(",", ":"))

    def chunk(delta: dict, finish: str | None = None, usage: dict | None = None) -> str:
        body: dict = {"id": cid, "object": "chat.completion.chunk", "created": 1700000000, "model": "bench-model",
                      "choices": [{"index": 0, "delta": delta, "finish_reason": finish}] if usage is None else []}
        if usage is not None:
            body["usage"] = usage
        return "data: " + json.dumps(body, separators=(",", ":")) + "\n\n"

    stream = chunk({"role": "assistant", "content": ""})
    stream += "".join(chunk({"content": w if i == 0 else " " + w}) for i, w in enumerate(WORDS))
    stream += chunk({}, "stop") + chunk({}, usage={"prompt_tokens": 9, "completion_tokens": 20,
                                                     "total_tokens": 29}) + "data: [DONE]\n\n"
    models = json.dumps({"object": "list", "data": [{"id": "bench-model", "object": "model", "created": 0,
                                                      "owned_by": "bench"}]})
    temp = " ".join(f"{k}_temp_path {workdir}/tmp_{k};" for k in ("client_body", "proxy", "fastcgi", "uwsgi",
                                                                    "scgi"))
    return f"""daemon off;
worker_processes 1;
pid {workdir}/nginx.pid;
error_log {workdir}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off; {temp}
    keepalive_requests 10000000; keepalive_timeout 300s; tcp_nodelay on; client_max_body_size 16m;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location = /plain/v1/chat/completions {{
            default_type application/json; set $b '{_nginx_string(plain)}'; return 200 '$b'; }}
        location = /stream/v1/chat/completions {{
            default_type text/event-stream; set $b '{_nginx_string(stream)}'; return 200 '$b'; }}
        location ~ ^/(plain|stream)/v1/models$ {{
            default_type application/json; return 200 '{_nginx_string(models)}'; }}
    }}
}}
"""




def wrk(url: str, body: dict, conns: int, duration: int, workdir: Path) -> tuple[float, float]:
    """(requests/s, p50 ms) of a wrk run POSTing `body` with `conns` connections."""
    script = workdir / "post.lua"
    script.write_text('wrk.method = "POST"\nwrk.body = ' + json.dumps(json.dumps(body)) + "\n"
                      'wrk.headers["Content-Type"] = "application/json"\n'
                      'wrk.headers["Authorization"] = "Bearer bench"\n')
    subprocess.run(pinned(["wrk", "-t1", f"-c{conns}", "-d2s", "-s", str(script), url], 0),
                   capture_output=True, check=True)  # warm-up
    out = subprocess.run(pinned(["wrk", "-t1", f"-c{conns}", f"-d{duration}s", "--latency", "-s", str(script),
                                 url], 0), capture_output=True, text=True, check=True).stdout
    if re.search(r"Non-2xx or 3xx responses: (\d+)", out):
        raise SystemExit(f"errors in the run against {url}:\n{out}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    value, unit = re.search(r"\s50%\s+([\d.]+)(us|ms|s)", out).groups()  # type: ignore[union-attr]
    p50 = float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
    return rps, p50


def start_responsa(cmd: list[str], upstream: str, workdir: Path, database_url: str | None) -> subprocess.Popen:
    port = free_port()
    data = Path(tempfile.mkdtemp(dir=workdir))
    args = [*cmd, "serve", "--host", "127.0.0.1", "--port", str(port), "--data-dir", str(data),
            "--upstream-base-url", upstream, "--api-key", "bench", "--access-log", "off"]
    if database_url:
        args += ["--database-url", database_url]
    proc = subprocess.Popen(pinned(args, 1), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    proc.port = port  # type: ignore[attr-defined]
    wait_http(f"http://127.0.0.1:{port}/health")
    return proc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per measured run (after a 2 s warm-up)")
    parser.add_argument("--conns", default="1,32", help="concurrencies, comma-separated")
    parser.add_argument("--repeat", type=int, default=3, help="runs of the whole matrix; medians are printed")
    parser.add_argument("--responsa", default=str(Path(sys.executable).with_name("responsa")),
                        help="the responsa command (default: the one beside this Python)")
    parser.add_argument("--database-url", default=None, help="store in PostgreSQL instead of SQLite")
    args = parser.parse_args()
    for tool in ("nginx", "wrk"):
        if not shutil.which(tool):
            raise SystemExit(f"needs {tool} (Debian: apt-get install nginx-light wrk)")
    conns = [int(c) for c in args.conns.split(",")]
    results: dict[tuple[str, str, int], list[tuple[float, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        port = free_port()
        (workdir / "nginx.conf").write_text(nginx_conf(port, workdir))
        nginx = subprocess.Popen(pinned(["nginx", "-p", f"{workdir}/", "-c", str(workdir / "nginx.conf")], 0),
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            wait_http(f"http://127.0.0.1:{port}/plain/v1/models")
            for _ in range(args.repeat):
                for scenario in ("plain", "stream"):
                    upstream = f"http://127.0.0.1:{port}/{scenario}/v1"
                    direct = {"model": "bench-model", "messages": [{"role": "user", "content": "Say hello"}],
                              "stream": scenario == "stream"}
                    for c in conns:
                        results.setdefault(("direct", scenario, c), []).append(
                            wrk(upstream + "/chat/completions", direct, c, args.duration, workdir))
                    server = start_responsa(args.responsa.split(), upstream, workdir, args.database_url)
                    try:
                        url = f"http://127.0.0.1:{server.port}/v1/responses"  # type: ignore[attr-defined]
                        body = {"model": "bench-model", "input": "Say hello", "stream": scenario == "stream"}
                        for c in conns:
                            results.setdefault(("responsa", scenario, c), []).append(
                                wrk(url, body, c, args.duration, workdir))
                    finally:
                        server.terminate()
                        server.wait(timeout=30)
        finally:
            nginx.terminate()
            nginx.wait(timeout=10)
    print(f"gateway overhead: medians of {args.repeat} runs of {args.duration} s; store "
          f"{'postgresql' if args.database_url else 'sqlite'}; server on one core")
    print(f"{'scenario':>8} {'conns':>5} {'direct req/s':>13} {'direct p50':>11} {'req/s':>8} {'p50 ms':>8} "
          f"{'added p50 ms':>13}")
    for scenario in ("plain", "stream"):
        for c in conns:
            d_rps, d_p50 = (statistics.median(v) for v in zip(*results[("direct", scenario, c)], strict=True))
            rps, p50 = (statistics.median(v) for v in zip(*results[("responsa", scenario, c)], strict=True))
            print(f"{scenario:>8} {c:>5} {d_rps:>13.0f} {d_p50:>11.3f} {rps:>8.0f} {p50:>8.3f} {p50 - d_p50:>13.3f}")


if __name__ == "__main__":
    main()
