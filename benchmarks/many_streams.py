"""Many long streams at once: 10,000 concurrent streamed responses, each 60 s against a slow engine.

Three processes besides the server: a slow Chat Completions engine (asyncio, one token every
`--interval` seconds for `--seconds`, the first at once), and a client that opens `--streams`
streamed `POST /v1/responses` at `--ramp` per second over raw sockets and reads them to their
end. The engine and the client run on CPU 0, the server on CPU 1 (as ../shared/bench places a
gateway). Printed:

- RSS per stream: the server's resident memory with every stream open, less its memory before
  the first, divided by the streams;
- CPU per relayed token: the server's CPU time while every stream is open, divided by the
  text deltas the client received meanwhile;
- added time to first token, p50 and p99: from the request sent to the first text delta
  received, less the same measured straight against the engine (a few hundred streams);
- failures: connections refused or reset, non-200 answers (the first limit hit shows here,
  and in the server's log, printed when anything failed).

    python benchmarks/many_streams.py [--streams 10000] [--seconds 60] [--interval 1] [--ramp 500]

Raises its own open-files limit (soft and, as root, hard) so that the client and the engine
are never the limit; the server lifts its own soft limit (cli.py) up to the hard one it inherits.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))

import uvloop  # noqa: E402
from harness import KEY_A, ServerProcess, free_port  # noqa: E402
from store_throughput import cpu0_busy, cpu_seconds, next_request  # noqa: E402

DELTA = b'"type":"response.output_text.delta"'
DONE = b'"type":"response.completed"'


def raise_open_files(wanted: int) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < wanted:
        with contextlib.suppress(ValueError, OSError):  # only root may raise the hard limit
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, wanted))
            return wanted
    new = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, new), hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# ---- the slow engine -------------------------------------------------------------------------


def _sse(delta: dict | None, finish: str | None = None) -> bytes:
    body = {"id": "chatcmpl-slow", "object": "chat.completion.chunk", "created": 0, "model": "slow",
            "choices": [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]}
    if delta is None:
        body["usage"] = {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6}
    data = b"data: " + json.dumps(body, separators=(",", ":")).encode() + b"\n\n"
    return b"%x\r\n%s\r\n" % (len(data), data)


HEAD = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n"
        b"Cache-Control: no-cache\r\n\r\n")
FIRST = _sse({"role": "assistant", "content": ""}) + _sse({"content": " tok"})
TOKEN = _sse({"content": " tok"})
LAST = _sse({}, "stop") + _sse(None) + b"%x\r\n%s\r\n" % (14, b"data: [DONE]\n\n") + b"0\r\n\r\n"


class SlowEngine(asyncio.Protocol):
    """Answers every POST with a stream: the first token at once, then one every `interval`."""

    interval = 1.0
    tokens = 60

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        self.buffer = b""
        self.timer: asyncio.TimerHandle | None = None

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        request = next_request(self.buffer)
        if request is None:
            return
        head, _body, self.buffer = request
        if head.startswith(b"GET"):
            body = b'{"object":"list","data":[]}'
            self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                                 % (len(body), body))
            return
        self.transport.write(HEAD + FIRST)
        self.left = self.tokens - 1
        self.timer = asyncio.get_running_loop().call_later(self.interval, self.tick)

    def tick(self) -> None:
        if self.transport.is_closing():
            return
        if self.left <= 0:
            self.transport.write(LAST)
            self.timer = None
            return
        self.left -= 1
        self.transport.write(TOKEN)
        self.timer = asyncio.get_running_loop().call_later(self.interval, self.tick)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()


def run_engine(port: int, interval: float, tokens: int) -> None:
    raise_open_files(65536)
    SlowEngine.interval, SlowEngine.tokens = interval, tokens

    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(SlowEngine, "127.0.0.1", port, backlog=8192)
        async with server:
            await server.serve_forever()

    uvloop.run(main())


# ---- the client ------------------------------------------------------------------------------


async def one_stream(port: int, path: bytes, body: bytes, stats: dict, deltas: Any, marker: bytes,
                     first_only: bool) -> None:
    request = (b"POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer %s\r\n"
               b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
               % (path, KEY_A.encode(), len(body), body))
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
    except OSError as e:
        stats["errors"][f"connect: {e.strerror or type(e).__name__}"] = \
            stats["errors"].get(f"connect: {e.strerror or type(e).__name__}", 0) + 1
        return
    sent = time.perf_counter()
    first: float | None = None
    tail = b""
    try:
        writer.write(request)
        status = await reader.readuntil(b"\r\n")
        if b" 200 " not in status:
            key = f"status {status.split()[1].decode()}"
            stats["errors"][key] = stats["errors"].get(key, 0) + 1
            return
        while True:
            chunk = await reader.read(65536)
            if not chunk:
                stats["errors"]["closed before the end"] = stats["errors"].get("closed before the end", 0) + 1
                return
            data = tail + chunk
            n = data.count(marker)
            if n:
                if first is None:
                    first = time.perf_counter()
                    stats["ttft"].append(first - sent)
                    if first_only:
                        stats["completed"] += 1
                        return
                with deltas.get_lock():
                    deltas.value += n
            if DONE in data:
                stats["completed"] += 1
                return
            tail = data[-len(marker):]
    except (OSError, asyncio.IncompleteReadError) as e:
        key = "closed without an answer" if isinstance(e, asyncio.IncompleteReadError) else \
            f"read: {e.strerror or type(e).__name__}"
        stats["errors"][key] = stats["errors"].get(key, 0) + 1
    finally:
        writer.close()


def run_client(port: int, path: str, streams: int, ramp: float, deltas: Any, opened: Any, out: Any) -> None:
    raise_open_files(streams * 2 + 1000)
    direct = path.endswith("/chat/completions")  # the engine alone: until its first token
    body = json.dumps({"model": "slow", "stream": True, **(
        {"messages": [{"role": "user", "content": "Tell a long story"}]} if direct else
        {"input": "Tell a long story"})}).encode()
    marker = b'"content":" tok"' if direct else DELTA

    async def main() -> dict:
        stats: dict = {"ttft": [], "completed": 0, "errors": {}}
        tasks = []
        start = time.perf_counter()
        for i in range(streams):
            delay = start + i / ramp - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one_stream(port, path.encode(), body, stats, deltas, marker, direct)))
            opened.value = i + 1
        await asyncio.gather(*tasks)
        return stats

    out.send(uvloop.run(main()))


def client_process(port: int, path: str, streams: int, ramp: float, deltas: Any,
                   opened: Any) -> tuple[multiprocessing.Process, Any]:
    recv, send = multiprocessing.Pipe(duplex=False)
    proc = multiprocessing.Process(target=run_client, args=(port, path, streams, ramp, deltas, opened, send),
                                   daemon=True)
    proc.start()
    subprocess.run(["taskset", "-pc", "0", str(proc.pid)], check=True, capture_output=True)
    return proc, recv


def listen_drops() -> dict[str, int]:
    """The kernel's counts of connections a full accept queue turned away (this namespace)."""
    lines = [x.split() for x in Path("/proc/net/netstat").read_text().splitlines() if x.startswith("TcpExt:")]
    values = dict(zip(lines[0][1:], map(int, lines[1][1:]), strict=True))
    return {k: values.get(k, 0) for k in ("ListenOverflows", "ListenDrops")}


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=60.0, help="how long each stream lasts")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between the engine's tokens")
    parser.add_argument("--ramp", type=float, default=500.0, help="streams opened per second")
    parser.add_argument("--baseline", type=int, default=200, help="streams straight against the engine")
    parser.add_argument("--server-arg", action="append", default=[], help="an extra `responsa serve` argument")
    parser.add_argument("--server-soft-open-files", type=int, metavar="N",
                        help="start the server with this soft open-files limit (as `ulimit -n N`; most "
                             "systems default to 1024), the hard one unchanged")
    args = parser.parse_args()
    limit = raise_open_files(args.streams * 3 + 1000)  # inherited by the server as its hard limit
    tokens = max(1, round(args.seconds / args.interval))
    engine_port = free_port()
    engine = multiprocessing.Process(target=run_engine, args=(engine_port, args.interval, tokens), daemon=True)
    engine.start()
    subprocess.run(["taskset", "-pc", "0", str(engine.pid)], check=True, capture_output=True)
    time.sleep(0.5)
    print(f"# {args.streams} streams of {tokens} tokens ({args.interval:g} s apart), opened at {args.ramp:g}/s; "
          f"open-files limit {limit}; engine and client on CPU 0, server on CPU 1", flush=True)

    # The engine alone: its own time to first token.
    deltas, opened = multiprocessing.Value("q", 0), multiprocessing.Value("q", 0)
    proc, recv = client_process(engine_port, "/v1/chat/completions", args.baseline, args.ramp, deltas, opened)
    base = recv.recv()
    proc.join()
    base_p50 = statistics.median(base["ttft"]) if base["ttft"] else 0.0

    with tempfile.TemporaryDirectory() as tmp:
        server = ServerProcess(Path(tmp) / "data", "--upstream-base-url", f"http://127.0.0.1:{engine_port}/v1",
                               "--api-key", KEY_A, "--access-log", "false", *args.server_arg,
                               wrapper=["taskset", "-c", "1", *(
                                   ["prlimit", f"--nofile={args.server_soft_open_files}:"]
                                   if args.server_soft_open_files else [])])
        server.start()
        assert server.proc is not None
        pid = server.proc.pid
        try:
            idle_rss = rss_mib(pid)
            drops0 = listen_drops()
            deltas, opened = multiprocessing.Value("q", 0), multiprocessing.Value("q", 0)
            began = time.monotonic()
            proc, recv = client_process(server.port, "/v1/responses", args.streams, args.ramp, deltas, opened)
            while opened.value < args.streams and proc.is_alive():
                time.sleep(0.2)
            time.sleep(2)  # the last ones started
            window = max(1.0, min(30.0, args.seconds - (time.monotonic() - began) - 3))
            load_pids = [proc.pid or 0, engine.pid or 0]
            cpu0, tok0, t0 = cpu_seconds([pid]), deltas.value, time.monotonic()
            load0, busy0 = cpu_seconds(load_pids), cpu0_busy()
            peak = rss_mib(pid)
            while time.monotonic() - t0 < window:
                time.sleep(0.5)
                peak = max(peak, rss_mib(pid))
            cpu, tok, elapsed = cpu_seconds([pid]) - cpu0, deltas.value - tok0, time.monotonic() - t0
            load, busy = cpu_seconds(load_pids) - load0, cpu0_busy()
            while not recv.poll(1):
                peak = max(peak, rss_mib(pid))
            stats = recv.recv()
            proc.join()
            kept_rss = rss_mib(pid)
            drops = {k: v - drops0[k] for k, v in listen_drops().items()}
        finally:
            server.stop()
        log = server.log() if stats["errors"] else ""

    ttft = stats["ttft"]
    print(f"completed {stats['completed']} of {args.streams}; failures: {stats['errors'] or 'none'}")
    print(f"server RSS: {idle_rss:.0f} MiB before, {peak:.0f} MiB peak, {kept_rss:.0f} MiB after; "
          f"{(peak - idle_rss) * 1024 / max(1, args.streams):.1f} KiB per stream")
    print(f"server CPU while all were open: {cpu / elapsed:.2f} CPUs, {tok / elapsed:.0f} tokens/s relayed, "
          f"{cpu * 1e6 / max(1, tok):.1f} us per token; the client and the engine {load / elapsed:.2f} CPUs, "
          f"CPU 0 {(busy[0] - busy0[0]) / max(1, busy[1] - busy0[1]):.0%} busy")
    print(f"time to first token: engine alone p50 {base_p50 * 1000:.2f} ms; through the server "
          f"p50 {pct(ttft, 0.5) * 1000:.2f} ms, p99 {pct(ttft, 0.99) * 1000:.2f} ms; added p50 "
          f"{(pct(ttft, 0.5) - base_p50) * 1000:.2f} ms, p99 {(pct(ttft, 0.99) - base_p50) * 1000:.2f} ms")
    print(f"connections turned away by a full accept queue: {drops['ListenOverflows']} overflows, "
          f"{drops['ListenDrops']} drops (a refused SYN is retried by the client 1 s, then 3 s, later)")
    if log:
        lines = [x for x in log.splitlines() if " WARNING " in x or " ERROR " in x]
        print("server log (first warnings):\n  " + "\n  ".join(lines[:8]))


if __name__ == "__main__":
    main()
