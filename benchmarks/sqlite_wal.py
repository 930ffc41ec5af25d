"""Disk use of the SQLite store under sustained full-rate load: database and WAL size over time.

Starts `responsa serve` on SQLite in front of a minimal Chat Completions upstream (answers
from memory), drives it with wrk (plain stored responses, keep-alive connections) for
--duration seconds in slices of --interval seconds, and after each slice prints the request
rate, the database and WAL file sizes, the largest WAL seen during the slice (sampled every
0.1 s) and the server's RSS:

    python benchmarks/sqlite_wal.py [--duration 600] [--interval 10] [--concurrency 32]

As the gateway harness does, the server is pinned to CPU 1 and wrk and the upstream to CPU 0
on a machine with two CPUs or more (--no-pin to turn that off). Needs `wrk`.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from harness import KEY_A, ServerProcess, free_port  # noqa: E402
from store_throughput import run_upstream  # noqa: E402
from workers import WRK_SCRIPT as WORKERS_WRK_SCRIPT  # noqa: E402

MIB = 1024 * 1024

# The same wrk script as benchmarks/workers.py, for plain stored responses.
WRK_SCRIPT = WORKERS_WRK_SCRIPT.replace("KEY", KEY_A).replace("STREAM", "false")


def size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def rss_mib(pid: int) -> float:
    """Resident set of a process and its children (workers), in MiB."""
    total = 0
    pids = [pid]
    try:
        pids += [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        pass
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


class WalWatch(threading.Thread):
    """The largest WAL file size seen since the last `take()`."""

    def __init__(self, wal: Path) -> None:
        super().__init__(daemon=True)
        self.wal = wal
        self.largest = 0
        self.overall = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.1):
            now = size(self.wal)
            self.largest = max(self.largest, now)
            self.overall = max(self.overall, now)

    def take(self) -> int:
        largest, self.largest = self.largest, size(self.wal)
        return largest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of load in all (default 600)")
    parser.add_argument("--interval", type=float, default=10.0, help="seconds per printed row")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--no-pin", action="store_true", help="do not pin the server and the load to CPUs")
    parser.add_argument("--server-arg", action="append", default=[], help="extra `responsa serve` argument")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is needed (apt-get install wrk)")
    pin = not args.no_pin and (os.cpu_count() or 1) >= 2 and shutil.which("taskset") is not None
    load_cpu = ["taskset", "-c", "0"] if pin else []

    port = free_port()
    upstream = multiprocessing.Process(target=run_upstream, args=(port,), daemon=True)
    upstream.start()
    if pin and upstream.pid is not None:
        subprocess.run(["taskset", "-pc", "0", str(upstream.pid)], check=True, capture_output=True)
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "post.lua"
        script.write_text(WRK_SCRIPT)
        data = Path(tmp) / "data"
        server = ServerProcess(data, "--upstream-base-url", f"http://127.0.0.1:{port}/v1", "--api-key", KEY_A,
                               "--access-log", "false", *args.server_arg,
                               wrapper=["taskset", "-c", "1"] if pin else [])
        server.start()
        db, wal = data / "responsa.db", data / "responsa.db-wal"
        watch = WalWatch(wal)
        watch.start()
        print(f"# {os.cpu_count()} CPUs, pinned: {pin}; concurrency {args.concurrency}; "
              f"{args.duration:.0f} s in {args.interval:.0f} s slices")
        print("| t (s) | req/s | p50 ms | p99 ms | errors | responses | db MiB | WAL MiB | WAL max MiB | RSS MiB |")
        print("|---|---|---|---|---|---|---|---|---|---|", flush=True)
        started = time.monotonic()
        total = 0
        try:
            while (elapsed := time.monotonic() - started) < args.duration:
                seconds = max(1, round(min(args.interval, args.duration - elapsed)))
                done = subprocess.run([*load_cpu, "wrk", "-t1", f"-c{args.concurrency}", f"-d{seconds}s",
                                       "--timeout", "30s", "-s", str(script), server.base_url + "/responses"],
                                      capture_output=True, text=True)
                line = next((x for x in done.stdout.splitlines() if x.startswith("RESULT ")), None)
                if line is None:
                    sys.exit(f"wrk failed:\n{done.stdout}\n{done.stderr}")
                r = json.loads(line.removeprefix("RESULT "))
                total += r["requests"]
                print(f"| {time.monotonic() - started:.0f} | {r['requests'] / (r['duration_us'] / 1e6):.0f} "
                      f"| {r['p50_us'] / 1000:.2f} | {r['p99_us'] / 1000:.2f} | {r['errors']} | {total} "
                      f"| {size(db) / MIB:.1f} | {size(wal) / MIB:.1f} | {watch.take() / MIB:.1f} "
                      f"| {rss_mib(server.proc.pid) if server.proc else 0:.0f} |", flush=True)
        finally:
            watch.stop.set()
            server.stop()
            upstream.terminate()
        print(f"# {total} responses; database {size(db) / MIB:.1f} MiB ({size(db) / max(total, 1):.0f} bytes "
              f"per response); largest WAL {watch.overall / MIB:.1f} MiB; after shutdown {size(wal) / MIB:.1f} MiB")


if __name__ == "__main__":
    main()
