"""Throughput and latency of the live server on SQLite, on PostgreSQL, and as two replicas.

Starts real `responsa serve` processes in front of a minimal Chat Completions upstream (a
separate process answering fixed bodies from memory), drives them with an HTTP load from
aiohttp and prints numbers:

    python benchmarks/store_throughput.py [--duration 8] [--concurrency 16]

Scenarios, each against every setup (sqlite, postgres, postgres x2 with requests spread
over both replicas in turn):
    create    POST /v1/responses, stored (one write)
    chain     POST with previous_response_id, 8-turn conversations (chain read + write),
              consecutive turns on alternating replicas
    retrieve  GET /v1/responses/{id}
    follow    a background run (20 chunks, 20 ms apart = 400 ms of streaming) created on
              one replica and followed with GET ?stream=true on the other (same one for
              single-replica setups): time to the terminal event, and the largest gap
              between two events the follower saw (a poll fallback would show ~1 s)

Everything shares the machine's cores (client, upstream, replicas, PostgreSQL): compare
setups with each other, not with other machines.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import pg  # noqa: E402
from harness import KEY_A, ServerProcess, free_port  # noqa: E402

TOKENS = [f" tok{n}" for n in range(20)]
USAGE = {"prompt_tokens": 9, "completion_tokens": 20, "total_tokens": 29}
HEADERS = {"Authorization": f"Bearer {KEY_A}", "Content-Type": "application/json"}

# ---- the upstream: fixed answers from memory, HTTP/1.1 keep-alive ----------------------------


def _chunk(delta: dict | None, finish: str | None = None, usage: dict | None = None) -> bytes:
    body: dict = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 0, "model": "bench",
                  "choices": [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]}
    if usage:
        body["usage"] = usage
    return b"data: " + json.dumps(body).encode() + b"\n\n"


PLAIN = json.dumps({"id": "chatcmpl-bench", "object": "chat.completion", "created": 0, "model": "bench",
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": "".join(TOKENS)},
                                 "finish_reason": "stop"}], "usage": USAGE}).encode()
STREAM = [_chunk({"role": "assistant", "content": ""}), *[_chunk({"content": t}) for t in TOKENS],
          _chunk({}, "stop"), _chunk(None, usage=USAGE), b"data: [DONE]\n\n"]


def next_request(buffer: bytes) -> tuple[bytes, bytes, bytes] | None:
    """The head and body of the first whole HTTP/1.1 request in `buffer`, and what follows it; None
    until all of it has arrived. (The fake engines' own parsing: only Content-Length bodies.)"""
    head, sep, rest = buffer.partition(b"\r\n\r\n")
    if not sep:
        return None
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    if len(rest) < length:
        return None
    return head, rest[:length], rest[length:]


class Upstream(asyncio.Protocol):
    """Answers every POST: JSON, or SSE when the body asks to stream (paced for "SLOW" inputs)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while (request := next_request(self.buffer)) is not None:
            head, body, self.buffer = request
            if head.startswith(b"GET"):
                self._send(b"application/json", b'{"object":"list","data":[]}')
            elif b'"stream":true' in body.replace(b" ", b""):
                asyncio.get_running_loop().create_task(self._stream(b"SLOW" in body))
            else:
                self._send(b"application/json", PLAIN)

    def _send(self, kind: bytes, body: bytes) -> None:
        self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Type: " + kind + b"\r\nContent-Length: "  # type: ignore[attr-defined]
                             + str(len(body)).encode() + b"\r\n\r\n" + body)

    async def _stream(self, slow: bool) -> None:
        write = self.transport.write  # type: ignore[attr-defined]
        write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
        for n, piece in enumerate(STREAM):
            if slow and 0 < n <= len(TOKENS):
                await asyncio.sleep(0.02)
            write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
        write(b"0\r\n\r\n")


def run_upstream(port: int) -> None:
    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(Upstream, "127.0.0.1", port)
        await server.serve_forever()

    asyncio.run(main())


# ---- load ------------------------------------------------------------------------------------


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time used so far by these processes."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            continue
    return total / os.sysconf("SC_CLK_TCK")


def cpu0_busy() -> tuple[int, int]:
    """(Busy, all) clock ticks of CPU 0 so far, where the harness places the load generator."""
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("cpu0 "):
            f = [int(x) for x in line.split()[1:]]
            return sum(f[:8]) - f[3] - f[4], sum(f[:8])
    return 0, 1


def postgres_pids() -> list[int]:
    """Every PostgreSQL server process on this machine (other users of it count too)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == "postgres":
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


class Result:
    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.errors = 0
        self.elapsed = 0.0
        self.server_cpu = 0.0  # seconds, all replicas, measured part only
        self.db_cpu = 0.0

    def line(self, name: str) -> str:
        if not self.latencies:
            return f"  {name:<9} no successful requests ({self.errors} errors)"
        lat = sorted(self.latencies)
        p = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] * 1000  # noqa: E731
        cpu = f"   CPU/req: server {self.server_cpu / len(lat) * 1000:.2f} ms"
        if self.db_cpu:
            cpu += f", postgres {self.db_cpu / len(lat) * 1000:.2f} ms"
        return (f"  {name:<9} {len(lat) / self.elapsed:6.0f} req/s   p50 {p(0.5):6.1f} ms   p90 {p(0.9):6.1f} ms"
                f"   p99 {p(0.99):6.1f} ms   errors {self.errors}{cpu}")


async def load(request: Callable[[int, int], Awaitable[None]], concurrency: int, duration: float,
               warmup: float, server_pids: list[int], db: bool) -> Result:
    result = Result()
    start = time.perf_counter()
    measure_from = start + warmup
    end = measure_from + duration

    async def account() -> None:
        await asyncio.sleep(warmup)
        db_pids = postgres_pids() if db else []  # after the warm-up opened the pools' connections
        server0, db0 = cpu_seconds(server_pids), cpu_seconds(db_pids)
        await asyncio.sleep(max(0.0, end - time.perf_counter()))
        result.server_cpu = cpu_seconds(server_pids) - server0
        result.db_cpu = cpu_seconds(db_pids) - db0

    async def worker(w: int) -> None:
        n = 0
        while (now := time.perf_counter()) < end:
            try:
                await request(w, n)
                if now >= measure_from:
                    result.latencies.append(time.perf_counter() - now)
            except Exception:
                if now >= measure_from:
                    result.errors += 1
            n += 1

    await asyncio.gather(account(), *(worker(w) for w in range(concurrency)))
    result.elapsed = time.perf_counter() - measure_from
    return result


async def post(session: aiohttp.ClientSession, url: str, body: dict) -> dict:
    async with session.post(url + "/v1/responses", json=body, headers=HEADERS) as r:
        data = await r.json()
        if r.status != 200:
            raise RuntimeError(f"{r.status}: {data}")
        return data


async def scenarios(urls: list[str], concurrency: int, duration: float, warmup: float, server_pids: list[int],
                    db: bool) -> list[str]:
    lines = []
    ids: list[str] = []
    conn = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=conn) as session:

        async def create(w: int, n: int) -> None:
            data = await post(session, urls[(w + n) % len(urls)], {"model": "bench", "input": "Say hello"})
            if len(ids) < 5000:
                ids.append(data["id"])

        previous: dict[int, str | None] = {}

        async def chain(w: int, n: int) -> None:
            body: dict = {"model": "bench", "input": f"turn {n}"}
            if n % 8 and previous.get(w):
                body["previous_response_id"] = previous[w]
            previous[w] = (await post(session, urls[(w + n) % len(urls)], body))["id"]

        async def retrieve(w: int, n: int) -> None:
            rid = ids[(w * 7919 + n) % len(ids)]
            async with session.get(f"{urls[(w + n) % len(urls)]}/v1/responses/{rid}", headers=HEADERS) as r:
                await r.read()
                if r.status != 200:
                    raise RuntimeError(str(r.status))

        for name, fn in (("create", create), ("chain", chain), ("retrieve", retrieve)):
            lines.append((await load(fn, concurrency, duration, warmup, server_pids, db)).line(name))
        lines.append(await follow(session, urls))
    return lines


async def follow(session: aiohttp.ClientSession, urls: list[str], runs: int = 15) -> str:
    totals, gaps = [], []
    for n in range(runs):
        start = time.perf_counter()
        data = await post(session, urls[0], {"model": "bench", "input": f"SLOW {n}", "background": True})
        last = time.perf_counter()
        biggest = 0.0
        async with session.get(f"{urls[-1]}/v1/responses/{data['id']}?stream=true", headers=HEADERS) as r:
            async for line in r.content:
                if line.startswith(b"event: "):
                    now = time.perf_counter()
                    biggest, last = max(biggest, now - last), now
                    if line.strip() == b"event: response.completed":
                        break
        totals.append(time.perf_counter() - start)
        gaps.append(biggest)
    return (f"  follow    run of 400 ms seen ended after median {statistics.median(totals) * 1000:.0f} ms "
            f"(max {max(totals) * 1000:.0f}); largest gap between events median "
            f"{statistics.median(gaps) * 1000:.0f} ms, max {max(gaps) * 1000:.0f} ms")


# ---- setups ----------------------------------------------------------------------------------


def start_servers(tmp: Path, count: int, upstream: str, database_url: str | None,
                  pool_size: int) -> list[ServerProcess]:
    servers = []
    for n in range(count):
        args = ["--upstream-base-url", upstream, "--api-key", KEY_A, "--access-log", "false"]
        if database_url:
            args += ["--database-url", database_url, "--database-pool-size", str(pool_size)]
        servers.append(ServerProcess(tmp / f"replica{n}", *args).start())
    return servers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=8.0, help="measured seconds per scenario")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--pool-size", type=int, default=10)
    parser.add_argument("--setups", default="sqlite,postgres,postgres-x2")
    args = parser.parse_args()

    port = free_port()
    upstream_proc = multiprocessing.Process(target=run_upstream, args=(port,), daemon=True)
    upstream_proc.start()
    upstream = f"http://127.0.0.1:{port}/v1"
    print(f"# {os.cpu_count()} CPUs; concurrency {args.concurrency}; {args.duration:.0f} s per scenario "
          f"after {args.warmup:.0f} s warm-up; pool size {args.pool_size}")
    try:
        for setup in args.setups.split(","):
            replicas = 2 if setup.endswith("x2") else 1
            url = pg.create_database("responsa_bench") if setup.startswith("postgres") else None
            with tempfile.TemporaryDirectory() as tmp:
                servers = start_servers(Path(tmp), replicas, upstream, url, args.pool_size)
                try:
                    print(f"{setup}:", flush=True)
                    pids = [s.proc.pid for s in servers if s.proc is not None]
                    lines = asyncio.run(scenarios([s.url for s in servers], args.concurrency, args.duration,
                                                  args.warmup, pids, url is not None))
                    print("\n".join(lines), flush=True)
                finally:
                    for s in servers:
                        s.stop()
                    if url:
                        pg.drop_database(url)
    finally:
        upstream_proc.terminate()


if __name__ == "__main__":
    main()
