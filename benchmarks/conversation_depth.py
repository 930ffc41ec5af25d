"""Turn 200 of a conversation against turn 1: the cost of a long conversation (`conversation` on create).

Starts the fixed Chat Completions engine of chain_depth.py (nginx when installed, else a
minimal Python engine) and `responsa serve` in front of it, on SQLite and on PostgreSQL (a
throwaway database on the server tests use, see tests/pg.py). It times, over one keep-alive
connection, turn 1 of new conversations and the next turn of deep ones (several deep
conversations built to --depth turns, taken in turn, so they grow slowly), in alternating
blocks, and the engine alone on what the gateway sends it, so the gateway's own time can be
read apart from the engine's. Every turn appends its items to its conversation, as in real
use, and every turn (deep ones too) first creates a conversation, so that both kinds do the
same work apart from the depth. The server's CPU time per turn (/proc schedstat over each block)
is a second measure that a busy machine disturbs less than latency.

    python benchmarks/conversation_depth.py [--depth 200] [--requests 150] [--stores sqlite,postgres]

Target (issue 16): the gateway's time at turn 200 within 1.2x of its time at turn 1.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

from chain_depth import Client, free_port, pinned, start_engine, wait_http  # noqa: E402

WARMUP = 30
BLOCK = 10  # turns of one kind in a row (CPU time is read per block)


def cpu_seconds(pid: int) -> float:
    """CPU time of all the process's threads, to the nanosecond (schedstat; /proc/PID/stat counts ticks)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            continue  # a thread that ended meanwhile
    return total / 1e9


def turn(client: Client, conversation: str, text: str) -> tuple[str, float]:
    status, body, elapsed = client.post("/v1/responses", {"model": "bench-model", "input": text,
                                                          "conversation": conversation})
    assert status == 200 and body["status"] == "completed", body
    return body["output"][0]["content"][0]["text"], elapsed


def new_conversation(client: Client) -> str:
    status, body, _ = client.post("/v1/conversations", {})
    assert status == 200, body
    return body["id"]


def measure(store: str, args: argparse.Namespace, engine_url: str, workdir: Path) -> float:
    database_url = None
    if store == "postgres":
        import pg

        database_url = pg.create_database("responsa_bench_conv")
    port = free_port()
    cmd = [args.responsa, "serve", "--port", str(port), "--data-dir", str(workdir / store), "--upstream-base-url",
           engine_url, "--api-key", "bench", "--access-log", "false"]
    if database_url:
        cmd += ["--database-url", database_url]
    server = subprocess.Popen(pinned(cmd, 1), stdout=subprocess.DEVNULL,
                              stderr=open(workdir / f"server-{store}.log", "wb"))
    try:
        wait_http(f"http://127.0.0.1:{port}/health")
        client = Client(port)
        reply = ""
        deep: list[tuple[str, list[str]]] = []  # each deep conversation with its user turns so far
        for d in range(args.deep_conversations):
            cid, said = new_conversation(client), []
            for n in range(args.depth - 1):
                said.append(f"turn {n} of {d}: say hello")
                reply, _ = turn(client, cid, said[-1])
            deep.append((cid, said))
        engine_parts = engine_url.split("/", 3)
        direct = Client(int(engine_parts[2].split(":")[1]))
        engine_path = "/" + engine_parts[3] + "/chat/completions"

        def engine_body(said: list[str]) -> dict:
            """What the gateway sends the engine for this turn (the engine reads it all)."""
            messages = []
            for text in said[:-1]:
                messages += [{"role": "user", "content": text}, {"role": "assistant", "content": reply}]
            return {"model": "bench-model", "messages": [*messages, {"role": "user", "content": said[-1]}]}

        times: dict[str, list[float]] = {}
        cpu = {"1": 0.0, "N": 0.0}
        for block in range((args.requests + WARMUP) // BLOCK):
            for label in ("1", "N"):
                started = cpu_seconds(server.pid)
                for k in range(BLOCK):
                    fresh = new_conversation(client)
                    if label == "1":
                        cid, said = fresh, ["once more"]
                    else:
                        cid, said = deep[(block * BLOCK + k) % len(deep)]
                        said.append("once more")
                    _, elapsed = turn(client, cid, said[-1])
                    _, _, direct_elapsed = direct.post(engine_path, engine_body(said))
                    if block * BLOCK >= WARMUP:
                        times.setdefault(f"turn {label}", []).append(elapsed)
                        times.setdefault(f"engine {label}", []).append(direct_elapsed)
                if block * BLOCK >= WARMUP:
                    cpu[label] += cpu_seconds(server.pid) - started
        deepest = max(len(said) for _, said in deep)
        timed = len(times["turn 1"])
        p50 = {k: statistics.median(v) * 1000 for k, v in times.items()}
        print(f"{store}: {timed} turns at each depth; deep turns {args.depth}..{deepest} "
              f"(over {len(deep)} conversations)")
        print(f"{'':>10} {'through Responsa p50 ms':>24} {'engine alone p50 ms':>20} {'gateway p50 ms':>15} "
              f"{'server CPU/turn ms':>19}")
        gateway = {}
        for label, depth in (("1", "1"), ("N", f"{args.depth}+")):
            gateway[label] = p50[f"turn {label}"] - p50[f"engine {label}"]
            print(f"{'turn ' + depth:>10} {p50[f'turn {label}']:24.3f} {p50[f'engine {label}']:20.3f} "
                  f"{gateway[label]:15.3f} {cpu[label] / timed * 1000:19.3f}")
        ratio = gateway["N"] / gateway["1"]
        print(f"turn {args.depth}+ / turn 1: gateway time {ratio:.2f}x (target <= 1.2x), server CPU "
              f"{cpu['N'] / cpu['1']:.2f}x (a conversation created with every turn included)", flush=True)
        return ratio
    finally:
        server.terminate()
        server.wait(timeout=20)
        if database_url:
            import pg

            pg.drop_database(database_url)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--depth", type=int, default=200)
    parser.add_argument("--requests", type=int, default=150, help="timed turns at each depth")
    parser.add_argument("--deep-conversations", type=int, default=8)
    parser.add_argument("--stores", default="sqlite,postgres")
    parser.add_argument("--responsa", default=str(Path(sys.executable).with_name("responsa")))
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="conversation-bench-"))
    engine_url, engine = start_engine(workdir)
    engine_kind = "nginx" if "plain" in engine_url else "python"
    print(f"conversation depth benchmark, engine {engine_kind}")
    try:
        for store in args.stores.split(","):
            measure(store, args, engine_url, workdir)
    finally:
        if isinstance(engine, subprocess.Popen):
            engine.terminate()
        else:
            engine.shutdown()  # type: ignore[attr-defined]
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
