"""What one request of many input items costs the server: peak memory and event-loop stalls.

Starts a minimal Chat Completions engine and, for each size, a fresh `responsa serve` in front
of it (so the process's peak RSS, VmHWM, is this request's); sends one plain create whose
`input` holds N tiny messages, and meanwhile asks `/health` every 10 ms from another thread.
Prints the request's time, the server's peak and remaining RSS, and the /health latencies
seen while the request was in flight (a slow /health is a stalled event loop).

    python benchmarks/large_input.py [--sizes 10000,100000] [--database-url postgresql://...]

Bounded: each request has a 60 s timeout; the default run takes well under a minute.
"""

from __future__ import annotations

import argparse
import http.client
import json
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import ThreadingHTTPServer
from pathlib import Path

from fixed_engine import serve_fixed

REPLY = json.dumps({
    "id": "chatcmpl-bench", "object": "chat.completion", "created": 0, "model": "bench-model",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}).encode()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_engine() -> ThreadingHTTPServer:
    return serve_fixed(REPLY)


def get(port: int, path: str, timeout: float = 60) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


def wait_healthy(port: int, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError("the server exited")
        try:
            if get(port, "/health", timeout=1) == 200:
                return
        except OSError:
            pass
        if time.time() > deadline:
            raise RuntimeError("the server did not become healthy")
        time.sleep(0.05)


def memory_mib(pid: int) -> tuple[float, float]:
    """(peak RSS, current RSS) of a process, in MiB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return int(fields["VmHWM"].split()[0]) / 1024, int(fields["VmRSS"].split()[0]) / 1024


def measure(size: int, engine_url: str, workdir: Path, database_url: str | None) -> dict:
    port = free_port()
    cmd = [sys.executable, "-m", "responsa", "serve", "--port", str(port), "--data-dir", str(workdir / f"data-{size}"),
           "--upstream-base-url", engine_url, "--api-key", "bench", "--access-log", "false"]
    if database_url:
        cmd += ["--database-url", database_url]
    server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(workdir / f"server-{size}.log", "wb"))
    try:
        wait_healthy(port, server)
        baseline = memory_mib(server.pid)[1]
        body = json.dumps({"model": "bench-model", "input": [{"role": "user", "content": "x"}] * size}).encode()
        latencies: list[float] = []
        done = threading.Event()

        def probe() -> None:
            while not done.is_set():
                started = time.perf_counter()
                get(port, "/health")
                latencies.append(time.perf_counter() - started)
                time.sleep(0.01)

        prober = threading.Thread(target=probe, daemon=True)
        prober.start()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        started = time.perf_counter()
        conn.request("POST", "/v1/responses", body=body, headers={"Content-Type": "application/json",
                                                                   "Authorization": "Bearer bench"})
        resp = conn.getresponse()
        answer = resp.read()
        elapsed = time.perf_counter() - started
        done.set()
        prober.join(timeout=60)
        status = resp.status if resp.status != 200 else json.loads(answer)["status"]
        time.sleep(0.5)  # let the store write and the allocator settle before reading what is kept
        peak, kept = memory_mib(server.pid)
        return {"size": size, "body_mib": len(body) / 2**20, "status": status, "seconds": elapsed,
                "baseline": baseline, "peak": peak, "kept": kept, "health_max": max(latencies, default=0.0),
                "health_p50": statistics.median(latencies) if latencies else 0.0, "probes": len(latencies)}
    finally:
        server.terminate()
        server.wait(timeout=20)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,100000", help="comma-separated input item counts")
    parser.add_argument("--database-url", help="measure on PostgreSQL instead of SQLite")
    args = parser.parse_args()
    engine = start_engine()
    engine_url = f"http://127.0.0.1:{engine.server_address[1]}/v1"
    workdir = Path(tempfile.mkdtemp(prefix="large-input-bench-"))
    try:
        store = "postgresql" if args.database_url else "sqlite"
        print(f"large input benchmark: one plain create per size, store {store}")
        print(f"{'items':>8} {'body MiB':>9} {'status':>10} {'seconds':>8} {'RSS before':>11} {'peak RSS':>9} "
              f"{'RSS after':>10} {'/health p50 ms':>15} {'/health max ms':>15}")
        for size in (int(s) for s in args.sizes.split(",")):
            r = measure(size, engine_url, workdir, args.database_url)
            print(f"{r['size']:>8} {r['body_mib']:9.1f} {r['status']:>10} {r['seconds']:8.2f} "
                  f"{r['baseline']:8.0f} MiB {r['peak']:5.0f} MiB {r['kept']:6.0f} MiB "
                  f"{r['health_p50'] * 1000:15.1f} {r['health_max'] * 1000:15.1f}")
    finally:
        engine.shutdown()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
