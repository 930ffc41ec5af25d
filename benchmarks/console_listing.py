"""GET /v1/responses (and the console's list page) over 100k stored responses, on SQLite and PostgreSQL.

Fills the store directly (Store.save_response, one input and one output item per response,
nine in ten of one key's, the rest another's), then starts a live server on it and times
requests over one keep-alive connection, printing p50 / p99 per case:
    python benchmarks/console_listing.py [--responses 100000] [--requests 200] [--stores sqlite,postgres]
PostgreSQL is a throwaway database on the server the tests use (tests/pg.py), analysed after the
fill as autovacuum would soon do.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from harness import KEY_A, KEY_B, ScriptedEngine, ServerProcess  # noqa: E402

from responsa.endpoints import owner_for_key  # noqa: E402
from responsa.store import ResponseRecord, Store, open_store  # noqa: E402

ADMIN = "bench-admin-key"
BATCH = 500


def message(item_id: str, role: str, text: str) -> dict:
    kind = "input_text" if role == "user" else "output_text"
    return {"id": item_id, "type": "message", "role": role, "status": "completed",
            "content": [{"type": kind, "text": text, **({"annotations": []} if role != "user" else {})}]}


async def fill(store: Store, count: int) -> float:
    """Store `count` responses; returns the seconds it took."""
    await store.open()
    a, b = owner_for_key(KEY_A), owner_for_key(KEY_B)
    start = time.perf_counter()
    base = int(time.time()) - count
    try:
        for first in range(0, count, BATCH):
            writes = []
            for n in range(first, min(first + BATCH, count)):
                rid = f"resp_bench{n:08d}"
                body = {"id": rid, "object": "response", "created_at": base + n, "status": "completed",
                        "model": "model-even" if n % 2 == 0 else "model-odd", "metadata": {"n": str(n % 100)},
                        "background": False, "previous_response_id": None, "usage": None, "error": None,
                        "incomplete_details": None, "instructions": None, "tools": [], "parallel_tool_calls": True,
                        "tool_choice": "auto", "temperature": 1.0, "top_p": 1.0}
                record = ResponseRecord(id=rid, owner=b if n % 10 == 9 else a, created_at=base + n,
                                        expires_at=base + n + 30 * 86400, status="completed", body=body)
                writes.append(store.save_response(
                    record, [message(f"msg_o{n}", "assistant", f"Answer number {n}: the weather is fine.")],
                    [message(f"msg_i{n}", "user", f"Question number {n}: how is the weather?")]))
            await asyncio.gather(*writes)
    finally:
        await store.close()
    return time.perf_counter() - start


def timed(client: httpx.Client, path: str, requests: int, **headers: str) -> tuple[float, float, int]:
    """p50 and p99 in milliseconds, and the size of the answer."""
    times = []
    size = 0
    for _ in range(requests):
        start = time.perf_counter()
        r = client.get(path, headers=headers)
        times.append((time.perf_counter() - start) * 1000)
        assert r.status_code == 200, r.text[:300]
        size = len(r.content)
    times.sort()
    return statistics.median(times), times[min(len(times) - 1, int(len(times) * 0.99))], size


def run(store_kind: str, count: int, requests: int, engine: ScriptedEngine) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        database_url = None
        if store_kind == "postgres":
            import pg

            database_url = pg.create_database("responsa_bench_listing")
        try:
            seconds = asyncio.run(fill(open_store(database_url, tmp), count))
            print(f"\n{store_kind}: {count} responses stored in {seconds:.1f} s")
            if database_url:
                # What autovacuum does soon after such a bulk load: without statistics the planner
                # takes the owner's 90k rows for a few hundred and filters them all before sorting.
                pg.admin_on(database_url, "ANALYZE")
            extra = ["--database-url", database_url] if database_url else []
            server = ServerProcess(tmp, "--upstream-base-url", engine.base_url, "--api-key", KEY_A, "--api-key",
                                   KEY_B, "--admin-key", ADMIN, "--access-log", "false", *extra).start()
            try:
                key = {"authorization": f"Bearer {KEY_A}"}
                with httpx.Client(base_url=server.base_url, timeout=60) as client:
                    middle = f"resp_bench{count // 2:08d}"
                    cases = [
                        ("first page, 20 (a key's)", "/responses", key),
                        ("first page, 100 (a key's)", "/responses?limit=100", key),
                        ("first page, 20 (admin: every owner's)", "/responses", {"authorization": f"Bearer {ADMIN}"}),
                        ("page after the middle one", f"/responses?after={middle}", key),
                        ("oldest first", "/responses?order=asc", key),
                        ("model filter (half match)", "/responses?model=model-odd", key),
                        ("metadata filter (1 in 100)", "/responses?metadata[n]=42", key),
                        ("text search, recent match", f"/responses?search=number%20{count - 5}:", key),
                        ("text search, no match (one 2,000 window)", "/responses?search=no-such-text", key),
                    ]
                    print(f"{'case':42} {'p50 ms':>8} {'p99 ms':>8} {'bytes':>8}")
                    for name, path, headers in cases:
                        n = requests if "no match" not in name else max(5, requests // 40)
                        timed(client, path, 3, **headers)  # warm up
                        p50, p99, size = timed(client, path, n, **headers)
                        print(f"{name:42} {p50:8.2f} {p99:8.2f} {size:8d}")
                with httpx.Client(base_url=server.url, timeout=60) as web:
                    web.post("/console/signin", data={"key": KEY_A})
                    timed(web, "/console/responses", 3)
                    p50, p99, size = timed(web, "/console/responses", requests)
                    print(f"{'console list page (25, HTML)':42} {p50:8.2f} {p99:8.2f} {size:8d}")
            finally:
                server.stop()
        finally:
            if database_url:
                import pg

                pg.drop_database(database_url)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--responses", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--stores", default="sqlite,postgres")
    args = parser.parse_args()
    engine = ScriptedEngine().start()
    try:
        for kind in args.stores.split(","):
            run(kind, args.responses, args.requests, engine)
    finally:
        engine.stop()


if __name__ == "__main__":
    main()
