"""What one gateway core serves on SQLite and on PostgreSQL, and what PostgreSQL spends per response.

Placed as the gateway harness places a gateway (../shared/bench): wrk (one thread, 16
keep-alive connections) and an nginx upstream answering from memory on CPU 0, one server
process on CPU 1. With PostgreSQL, the database's processes serving this run are pinned to
CPU 0 as well once they exist, so that CPU 1 is the gateway's alone and its req/s is what one
core of gateway serves (as long as CPU 0 keeps up: the script prints its load). Scenarios:

    create   POST /v1/responses, stored
    chain    POST with previous_response_id, continuing the response answered last unless its
             chain has 8 turns already (then a new chain starts): chains of 1 to 8 turns

Setups run interleaved round by round (the machine's speed drifts), medians printed:

    python benchmarks/per_core.py [--rounds 3] [--duration 8] [--setups sqlite,postgres,postgres-unix]
                                  [--before-src DIR]

`postgres` reaches PostgreSQL over TCP (RESPONSA_TEST_POSTGRES, see tests/pg.py),
`postgres-unix` over its Unix socket (--socket-dir). `--before-src` also runs every setup
with another checkout's `src` first on the import path (labelled "before"), for an
interleaved before/after. For PostgreSQL it prints, per response: the round trips the server
made and the statements it sent in them (grouped saves, store/pgbatch.py, send several
statements in one round trip and one transaction; counted in the server by a sitecustomize
module this script puts on its PYTHONPATH), the database's CPU (its backends for this run),
and the bytes of write-ahead log written (the whole server's, so other users of it count
too) and of database grown.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))

import pg  # noqa: E402
from harness import KEY_A, ServerProcess  # noqa: E402
from store_throughput import cpu0_busy, cpu_seconds  # noqa: E402
from workers import WRK_SCRIPT, start_upstream  # noqa: E402

CHAIN_SCRIPT = """
-- Each request continues the last answered response whose chain is under 8 turns (its depth
-- known from its own previous_response_id), else starts a chain: no chain is longer than 8.
local depth = {}
local prev = nil
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer KEY"
request = function()
  local body = '{"model":"bench","input":"Say hello"}'
  if prev ~= nil then
    body = '{"model":"bench","input":"Say hello","previous_response_id":"' .. prev .. '"}'
  end
  return wrk.format(nil, nil, nil, body)
end
response = function(status, headers, body)
  local id = string.match(body, '"id":"(resp_[^"]+)"')
  if id == nil then return end
  local parent = string.match(body, '"previous_response_id":"(resp_[^"]+)"')
  local d = 1
  if parent ~= nil then d = (depth[parent] or 7) + 1 end
  depth[id] = d
  if d < 8 then prev = id else prev = nil end
end
""" + WRK_SCRIPT.split('wrk.body = ')[1].split("\n", 1)[1]


# Loaded by the server through PYTHONPATH (sitecustomize): counts the round trips its PostgreSQL
# store makes (asyncpg logs each call once, an executemany of k statements too) and, where the
# build groups saves (store/pgbatch.py), the batches and the saves in them; written to the file
# named by COUNT_STATEMENTS on SIGUSR1 as "round_trips statements".
COUNTER = """
import os, signal
path = os.environ.get("COUNT_STATEMENTS")
if path:
    from responsa.store import postgres
    count = [0]
    stores = []
    init = postgres.PostgresStore.__init__
    def counting_init(self, *args, **kw):
        kw["query_logger"] = lambda _query: count.__setitem__(0, count[0] + 1)
        init(self, *args, **kw)
        stores.append(self)
    postgres.PostgresStore.__init__ = counting_init
    def dump(*_):
        grouped = sum(s._saves.writes - s._saves.batches for s in stores if hasattr(s, "_saves"))
        with open(path, "w") as f:
            f.write(f"{count[0]} {count[0] + grouped}")
    signal.signal(signal.SIGUSR1, dump)
"""


def statements(server: ServerProcess, path: Path) -> tuple[int, int]:
    """(Round trips, statements) the server has made so far."""
    assert server.proc is not None
    path.unlink(missing_ok=True)
    os.kill(server.proc.pid, signal.SIGUSR1)
    for _ in range(100):
        if path.exists() and path.read_text():
            trips, sent = path.read_text().split()
            return int(trips), int(sent)
        time.sleep(0.02)
    raise RuntimeError("the server did not report its statement count")


def db_stats(url: str) -> tuple[int, int]:
    """(bytes of WAL written by the server so far, this database's size)."""
    name = urlsplit(url).path.lstrip("/")
    row = pg.admin("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn, pg_database_size($1)", name)[0]
    return int(row[0]), int(row[1])


def backends(url: str) -> list[int]:
    name = urlsplit(url).path.lstrip("/")
    return [r[0] for r in pg.admin("SELECT pid FROM pg_stat_activity WHERE datname = $1", name)]


def run_wrk(server: ServerProcess, script: Path, duration: float, concurrency: int) -> dict:
    wrk = ["taskset", "-c", "0", "wrk", "-t1", f"-c{concurrency}", "--timeout", "30s", "-s", str(script),
           server.base_url + "/responses"]
    out = subprocess.run([*wrk[:5], f"-d{duration:.0f}s", *wrk[5:]], capture_output=True, text=True).stdout
    line = next((x for x in out.splitlines() if x.startswith("RESULT ")), None)
    if line is None:
        raise RuntimeError(f"wrk failed:\n{out}")
    return json.loads(line.removeprefix("RESULT "))


def one_run(setup: str, src: str | None, scenario: str, tmp: Path, plain_url: str, script: Path,
            args: argparse.Namespace) -> dict:
    url = None
    if setup.startswith("postgres"):
        url = pg.create_database("responsa_percore")
        if setup == "postgres-unix":
            parts = urlsplit(url)
            url = urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[0] + "@",
                                            query=f"host={args.socket_dir}"))
    counts = tmp / "statements"
    env = {"PYTHONPATH": os.pathsep.join([*([src] if src else []), str(tmp / "site")]),
           "COUNT_STATEMENTS": str(counts)}
    server = ServerProcess(tmp / f"data-{time.monotonic_ns()}", "--upstream-base-url", plain_url,
                           "--api-key", KEY_A, "--access-log", "false", *(["--database-url", url] if url else []),
                           env=env, wrapper=["taskset", "-c", "1"])
    try:
        server.start()
        assert server.proc is not None
        run_wrk(server, script, 3, args.concurrency)  # warm-up: the pool fills, statements get prepared
        if url:
            # Statistics, as a database in use has them: a plan made for the first few rows (and
            # kept by a prepared statement until the table is next analyzed) scans whole tables
            # once they have grown (a chain read: 150 ms at 40,000 responses).
            pg.admin_on(url, "ANALYZE")
        db_pids = backends(url) if url else []
        for pid in db_pids:
            subprocess.run(["taskset", "-pc", "0", str(pid)], capture_output=True)
        stats0 = db_stats(url) if url else (0, 0)
        sent0 = statements(server, counts) if url else (0, 0)
        cpu_server0, cpu_db0, busy0 = cpu_seconds([server.proc.pid]), cpu_seconds(db_pids), cpu0_busy()
        r = run_wrk(server, script, args.duration, args.concurrency)
        cpu_server, cpu_db, busy = cpu_seconds([server.proc.pid]), cpu_seconds(db_pids), cpu0_busy()
        sent = statements(server, counts) if url else (0, 0)
        stats = db_stats(url) if url else (0, 0)
    finally:
        server.stop()
        if url:
            pg.drop_database(url)
    n = max(1, r["requests"])
    return {"rps": n / (r["duration_us"] / 1e6), "p50": r["p50_us"] / 1000, "p99": r["p99_us"] / 1000,
            "errors": r["errors"], "server_ms": (cpu_server - cpu_server0) * 1000 / n,
            "db_ms": (cpu_db - cpu_db0) * 1000 / n, "cpu0": (busy[0] - busy0[0]) / max(1, busy[1] - busy0[1]),
            "round_trips": (sent[0] - sent0[0]) / n, "statements": (sent[1] - sent0[1]) / n,
            "wal_bytes": (stats[0] - stats0[0]) / n,
            "db_bytes": (stats[1] - stats0[1]) / n}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=8.0, help="measured seconds per run (after 3 s warm-up)")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--setups", default="sqlite,postgres,postgres-unix")
    parser.add_argument("--scenarios", default="create,chain")
    parser.add_argument("--socket-dir", default="/var/run/postgresql")
    parser.add_argument("--before-src", help="another checkout's src directory, run as 'before'")
    args = parser.parse_args()
    if not (shutil.which("wrk") and shutil.which("taskset")) or (os.cpu_count() or 1) < 2:
        sys.exit("needs wrk, taskset and 2 CPUs")
    builds: list[tuple[str, str | None]] = [("this", str(ROOT / "src"))]  # this checkout, installed or not
    if args.before_src:
        builds.insert(0, ("before", str(Path(args.before_src).resolve())))
    setups = args.setups.split(",")
    results: dict[tuple[str, str, str], list[dict]] = {}
    print(f"# {os.cpu_count()} CPUs; c={args.concurrency}, {args.duration:.0f} s per run; wrk, nginx and "
          "PostgreSQL's backends on CPU 0, the server on CPU 1")
    print("| scenario | build | setup | req/s | p50 ms | p99 ms | server CPU ms/req | PostgreSQL CPU ms/req "
          "| round trips/resp | statements/resp | WAL bytes/resp | DB bytes/resp | CPU 0 busy |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|", flush=True)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        plain_url, _, upstream = start_upstream(tmp)
        (tmp / "site").mkdir()
        (tmp / "site" / "sitecustomize.py").write_text(COUNTER)
        scripts = {"create": tmp / "create.lua", "chain": tmp / "chain.lua"}
        scripts["create"].write_text(WRK_SCRIPT.replace("KEY", KEY_A).replace("STREAM", "false"))
        scripts["chain"].write_text(CHAIN_SCRIPT.replace("KEY", KEY_A))
        try:
            for _ in range(args.rounds):
                for scenario in args.scenarios.split(","):
                    for setup in setups:
                        for build, src in builds:
                            r = one_run(setup, src, scenario, tmp, plain_url, scripts[scenario], args)
                            results.setdefault((scenario, build, setup), []).append(r)
                            pgcols = (f"{r['db_ms']:.3f} | {r['round_trips']:.2f} | {r['statements']:.2f} | "
                                      f"{r['wal_bytes']:.0f} | {r['db_bytes']:.0f}") if setup != "sqlite" \
                else "- | - | - | - | -"
                            print(f"| {scenario} | {build} | {setup} | {r['rps']:.0f} | {r['p50']:.2f} | "
                                  f"{r['p99']:.2f} | {r['server_ms']:.3f} | {pgcols} | {r['cpu0']:.0%} |",
                                  flush=True)
        finally:
            upstream.terminate()
    print("# medians (req/s; server CPU ms/req); ratio to SQLite of the same build, per gateway core")
    for scenario in args.scenarios.split(","):
        for build, _ in builds:
            base = results.get((scenario, build, "sqlite"))
            for setup in setups:
                rs = results[(scenario, build, setup)]
                rps = statistics.median(r["rps"] for r in rs)
                cpu = statistics.median(r["server_ms"] for r in rs)
                ratio = ""
                if base and setup != "sqlite":
                    ratio = (f"  {rps / statistics.median(r['rps'] for r in base):.2f}x req/s, "
                             f"{statistics.median(r['server_ms'] for r in base) / cpu:.2f}x per CPU-second")
                print(f"# {scenario:6} {build:6} {setup:13} {rps:6.0f} req/s  {cpu:.3f} ms{ratio}")


if __name__ == "__main__":
    main()
