"""Throughput of `responsa serve --workers N` against one process, placed as the gateway harness does.

Starts nginx as a fixed Chat Completions upstream (or, without nginx, the Python one of
store_throughput.py) and wrk as the client, both pinned to CPU 0 like ../shared/bench/run.sh.
One server process is pinned to CPU 1, as the harness pins the gateway; N workers get every
CPU (on a 2-CPU machine they share CPU 0 with the load generator: the ratio printed is then a
lower bound of what N cores give). The rounds are interleaved (1, N, 1, N, ...) and medians
printed, since the machine's speed drifts. The CPU the load generator and the upstream spend
per request is printed too, and how many CPUs every other process on the machine kept busy
meanwhile (PostgreSQL, and other people's work on a shared machine):

    python benchmarks/workers.py [--workers 2] [--store postgres|sqlite] [--rounds 3] [--duration 10]

Needs wrk and taskset; PostgreSQL at RESPONSA_TEST_POSTGRES (see tests/pg.py) for --store postgres.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))

import pg  # noqa: E402
from harness import KEY_A, ServerProcess, free_port  # noqa: E402
from store_throughput import PLAIN, STREAM, run_upstream  # noqa: E402
from store_throughput import cpu_seconds as processes_cpu_seconds  # noqa: E402

WRK_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer KEY"
wrk.body = '{"model":"bench","input":"Say hello","stream":STREAM}'
done = function(summary, latency, requests)
  io.write(string.format('RESULT {"requests":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d,"errors":%d}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write
    + summary.errors.timeout))
end
"""

NGINX_CONF = """daemon off;
master_process off;
worker_processes 1;
pid nginx.pid;
error_log error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path tmp_body;
    keepalive_requests 10000000;
    keepalive_timeout 300s;
    tcp_nodelay on;
    server {
        listen 127.0.0.1:PORT backlog=4096;
        location = /v1/chat/completions {
            default_type application/json;
            return 200 'PLAIN';
        }
        location = /stream/v1/chat/completions {
            default_type text/event-stream;
STREAM_SETS
            return 200 'STREAM_VARS';
        }
        location = /v1/models { default_type application/json; return 200 '{"object":"list","data":[]}'; }
    }
}
"""


def cpu_seconds(root: int) -> float:
    """User + system CPU time of a process and its children (workers)."""
    pids = [root]
    try:
        pids += [int(p) for p in Path(f"/proc/{root}/task/{root}/children").read_text().split()]
    except OSError:
        pass
    return processes_cpu_seconds(pids)


def start_upstream(tmp: Path) -> tuple[str, str, subprocess.Popen | multiprocessing.Process]:
    """(plain base URL, stream base URL, process), pinned to CPU 0."""
    port = free_port()
    if shutil.which("nginx"):
        conf = NGINX_CONF.replace("PORT", str(port)).replace("PLAIN", PLAIN.decode())
        # nginx refuses a parameter over 4 KiB: the stream body goes in pieces, one variable each
        stream = b"".join(STREAM).decode()
        pieces = [stream[i:i + 2000] for i in range(0, len(stream), 2000)]
        conf = conf.replace("STREAM_SETS", "\n".join(f"            set $s{n} '{p}';" for n, p in enumerate(pieces)))
        conf = conf.replace("STREAM_VARS", "".join(f"$s{n}" for n in range(len(pieces))))
        (tmp / "nginx").mkdir()
        (tmp / "nginx" / "nginx.conf").write_text(conf)
        proc = subprocess.Popen(["taskset", "-c", "0", "nginx", "-p", str(tmp / "nginx") + "/", "-c", "nginx.conf",
                                 "-e", "error.log"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)
        return f"http://127.0.0.1:{port}/v1", f"http://127.0.0.1:{port}/stream/v1", proc
    mp = multiprocessing.Process(target=run_upstream, args=(port,), daemon=True)
    mp.start()
    subprocess.run(["taskset", "-pc", "0", str(mp.pid)], check=True, capture_output=True)
    return f"http://127.0.0.1:{port}/v1", f"http://127.0.0.1:{port}/v1", mp


def machine_cpu_seconds() -> float:
    """CPU time every CPU of the machine has spent busy so far."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def measure(server: ServerProcess, script: Path, concurrency: int, duration: float, upstream: int) -> dict:
    wrk = ["taskset", "-c", "0", "wrk", "-t1", f"-c{concurrency}", "--timeout", "30s", "-s", str(script),
           server.base_url + "/responses"]
    subprocess.run([*wrk[:5], "-d3s", *wrk[5:]], capture_output=True, check=True)  # warm-up
    assert server.proc is not None
    cpu0, up0, machine0 = cpu_seconds(server.proc.pid), cpu_seconds(upstream), machine_cpu_seconds()
    with tempfile.TemporaryFile("w+") as out:
        proc = subprocess.Popen([*wrk[:5], f"-d{duration:.0f}s", *wrk[5:]], stdout=out, stderr=subprocess.STDOUT)
        _, _, usage = os.wait4(proc.pid, 0)
        proc.returncode = 0
        out.seek(0)
        stdout = out.read()
    cpu, machine = cpu_seconds(server.proc.pid) - cpu0, machine_cpu_seconds() - machine0
    load = usage.ru_utime + usage.ru_stime + cpu_seconds(upstream) - up0
    line = next((x for x in stdout.splitlines() if x.startswith("RESULT ")), None)
    if line is None:
        raise RuntimeError(f"wrk failed:\n{stdout}")
    r = json.loads(line.removeprefix("RESULT "))
    rps = r["requests"] / (r["duration_us"] / 1e6)
    return {"rps": rps, "p50": r["p50_us"] / 1000, "p99": r["p99_us"] / 1000, "errors": r["errors"],
            "cpu_ms": cpu * 1000 / max(1, r["requests"]), "load_ms": load * 1000 / max(1, r["requests"]),
            "other": (machine - cpu - load) / duration}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--store", choices=("postgres", "sqlite"), default="postgres")
    parser.add_argument("--scenario", choices=("plain", "stream"), default="plain")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds per run (after 3 s warm-up)")
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    if not (shutil.which("wrk") and shutil.which("taskset")) or (os.cpu_count() or 1) < 2:
        sys.exit("needs wrk, taskset and 2 CPUs")

    results: dict[int, list[dict]] = {1: [], args.workers: []}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        plain_url, stream_url, upstream = start_upstream(tmp)
        upstream_pid = upstream.pid or 0
        script = tmp / "post.lua"
        script.write_text(WRK_SCRIPT.replace("KEY", KEY_A)
                          .replace("STREAM", "true" if args.scenario == "stream" else "false"))
        print(f"# {os.cpu_count()} CPUs; {args.scenario}, {args.store}, c={args.concurrency}, {args.duration:.0f} s "
              f"per run; wrk and the upstream on CPU 0; 1 process on CPU 1, {args.workers} workers unpinned")
        print("| processes | req/s | p50 ms | p99 ms | errors | server CPU ms/req | wrk + upstream CPU ms/req "
              "| other processes (CPUs) |")
        print("|---|---|---|---|---|---|---|---|", flush=True)
        try:
            for n in range(args.rounds):
                for count in (1, args.workers):
                    url = pg.create_database("responsa_workers") if args.store == "postgres" else None
                    extra = ["--database-url", url] if url else []
                    server = ServerProcess(tmp / f"data-{n}-{count}", "--upstream-base-url",
                                           stream_url if args.scenario == "stream" else plain_url,
                                           "--api-key", KEY_A, "--access-log", "false", "--workers", str(count),
                                           *extra, wrapper=["taskset", "-c", "1"] if count == 1 else [])
                    try:
                        server.start()
                        r = measure(server, script, args.concurrency, args.duration, upstream_pid)
                    finally:
                        server.stop()
                        if url:
                            pg.drop_database(url)
                    results[count].append(r)
                    print(f"| {count} | {r['rps']:.0f} | {r['p50']:.2f} | {r['p99']:.2f} | {r['errors']} "
                          f"| {r['cpu_ms']:.3f} | {r['load_ms']:.3f} | {r['other']:.2f} |", flush=True)
        finally:
            upstream.terminate()
    one = statistics.median(r["rps"] for r in results[1])
    many = statistics.median(r["rps"] for r in results[args.workers])
    print(f"# medians: 1 process {one:.0f} req/s, {args.workers} workers {many:.0f} req/s: {many / one:.2f}x")


if __name__ == "__main__":
    main()
