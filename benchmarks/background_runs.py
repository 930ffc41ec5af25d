"""How many concurrent background runs one process holds, and the memory each costs.

Starts a scripted, slow streaming Chat Completions engine (one word every --delay seconds)
and `responsa serve` with --max-background-runs large enough, then starts N background
responses at once, waits until every one is `in_progress` (all holding an open engine
stream), samples the server's resident memory, and waits for them all to complete.

    python benchmarks/background_runs.py [--runs 200 500 1000] [--words 40] [--delay 0.25]

Prints, per N: time to queue them, memory before and while all run, memory per run,
server CPU per run, and whether every run completed with its full text.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from harness import ScriptedEngine, ServerProcess

KEY = "bench"


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def one_round(server: ServerProcess, engine: ScriptedEngine, n: int, words: int, delay: float) -> None:
    text = " ".join(f"w{i}" for i in range(words))
    engine.script.reset()
    engine.script.add(*[{"content": text, "delay": delay} for _ in range(n)])
    pid = server.proc.pid  # type: ignore[union-attr]
    limits = httpx.Limits(max_connections=64)
    async with httpx.AsyncClient(base_url=server.base_url, headers={"Authorization": f"Bearer {KEY}"},
                                 timeout=120, limits=limits) as client:
        before = rss_kib(pid)
        cpu0 = cpu_seconds(pid)
        started = time.monotonic()
        sem = asyncio.Semaphore(32)

        async def create() -> str:
            async with sem:
                r = await client.post("/responses", json={"model": "m", "input": "go", "background": True})
                r.raise_for_status()
                return r.json()["id"]

        ids = await asyncio.gather(*[create() for _ in range(n)])
        queued = time.monotonic() - started

        async def status(rid: str) -> dict:
            async with sem:
                return (await client.get(f"/responses/{rid}")).json()

        peak = before
        while True:
            states = await asyncio.gather(*[status(rid) for rid in ids])
            peak = max(peak, rss_kib(pid))
            running = sum(s["status"] == "in_progress" for s in states)
            if running == n or all(s["status"] not in ("queued", "in_progress") for s in states):
                break
            await asyncio.sleep(0.2)
        all_running = running == n
        during = rss_kib(pid)
        while True:
            states = await asyncio.gather(*[status(rid) for rid in ids])
            peak = max(peak, rss_kib(pid))
            if all(s["status"] not in ("queued", "in_progress") for s in states):
                break
            await asyncio.sleep(0.5)
        elapsed = time.monotonic() - started
        cpu = cpu_seconds(pid) - cpu0
        ok = sum(s["status"] == "completed" and s["output"][0]["content"][0]["text"] == text for s in states)
    print(f"| {n} | {queued:.1f} s | {before / 1024:.0f} MiB | {during / 1024:.0f} MiB | "
          f"{(during - before) / n:.0f} KiB | {peak / 1024:.0f} MiB | {cpu / n * 1000:.1f} ms | {elapsed:.1f} s | "
          f"{ok}/{n} completed{'' if all_running else ' (not all were running at once)'} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, nargs="+", default=[200, 500, 1000])
    parser.add_argument("--words", type=int, default=40, help="words each engine answer streams")
    parser.add_argument("--delay", type=float, default=0.25, help="seconds between the engine's words")
    args = parser.parse_args()
    engine = ScriptedEngine().start()
    print(f"engine: {args.words} words, one every {args.delay} s (each run lasts ~{args.words * args.delay:.0f} s)")
    print("| runs | queued in | RSS before | RSS all running | per run | peak RSS | server CPU per run | "
          "all done in | result |")
    print("|---|---|---|---|---|---|---|---|---|")
    try:
        for n in args.runs:
            with tempfile.TemporaryDirectory() as tmp:
                server = ServerProcess(tmp, "--upstream-base-url", engine.base_url, "--api-key", KEY,
                                       "--max-background-runs", str(max(args.runs)), "--access-log", "false")
                server.start()
                try:
                    asyncio.run(one_round(server, engine, n, args.words, args.delay))
                finally:
                    server.stop()
    finally:
        engine.stop()


if __name__ == "__main__":
    main()
