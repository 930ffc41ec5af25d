"""What key limits and usage counting add to a request, measured on the parts themselves.

Every response now passes through usage.py (counted in memory, flushed in batches) and, for a
store key with limits, quotas.py (one statement per request counting its windows, one per
response adding its tokens; a stream / background limit one statement as it starts and one as
it ends). This prints, per request, the CPU of the in-memory counting for an unlimited caller,
and the wall time of the store statements a limited key costs, on SQLite (a temporary file)
and, with --database-url, PostgreSQL (in a scratch database made beside the one named, and
dropped after). The gateway benchmark (`../shared/bench`) sends its
requests with no key, i.e. the unlimited path.

    python benchmarks/quota_overhead.py [--rounds 5] [--database-url postgresql://...]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time

from responsa.logs import RequestInfo, current
from responsa.quotas import Quotas
from responsa.store import KeyRecord, Limits, open_store
from responsa.usage import Accounting, UsageMeter


class Run:
    response = {"status": "completed", "usage": {"input_tokens": 10, "output_tokens": 20,
                                                 "input_tokens_details": {"cached_tokens": 0},
                                                 "output_tokens_details": {"reasoning_tokens": 0}}}

    def usage(self) -> dict:
        return self.response["usage"]


async def unlimited(n: int) -> float:
    """Per-request CPU (µs) of begin + follow for a caller without limits (the common path)."""
    store = open_store(None, tempfile.mkdtemp())
    accounting = Accounting(UsageMeter(store), Quotas(store))
    current.set(RequestInfo("req"))
    run = Run()
    started = time.process_time()
    for _ in range(n):
        ticket = await accounting.begin("m", stream=False, background=False)
        await ticket.follow(run, None)  # type: ignore[arg-type]
    return (time.process_time() - started) / n * 1e6


async def limited(url: str | None, n: int) -> tuple[float, float]:
    """Per-request wall time (µs) of a limited key's admission, and of a stream slot taken and given back."""
    store = open_store(url, tempfile.mkdtemp(), pool_size=2)
    await store.open()
    quotas = Quotas(store)
    key = KeyRecord(id="key_bench", name="bench", owner="o", hash="h", created_at=0,
                    limits=Limits(requests_per_minute=10**9, tokens_per_minute=10**9, streams=10**6))
    current.set(RequestInfo("req"))
    started = time.perf_counter()
    for _ in range(n):
        await quotas.admit(key)
        await quotas.spend_now(current.get().account, 30)  # type: ignore[union-attr]
    admit = (time.perf_counter() - started) / n * 1e6
    account = current.get().account  # type: ignore[union-attr]
    started = time.perf_counter()
    for _ in range(n):
        taken = await quotas.occupy(account, "streams")
        for name, slot in taken:
            await quotas._give_back(name, slot)
    slots = (time.perf_counter() - started) / n * 1e6
    await store.close()
    return admit, slots


async def scratch_database(url: str, drop: str | None = None) -> str:
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        if drop:
            await conn.execute(f"DROP DATABASE IF EXISTS {drop}")
            return drop
        name = f"responsa_quota_bench_{os.getpid()}"
        await conn.execute(f"DROP DATABASE IF EXISTS {name}")
        await conn.execute(f"CREATE DATABASE {name}")
        return url.rsplit("/", 1)[0] + "/" + name
    finally:
        await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--database-url")
    args = parser.parse_args()
    free = statistics.median(asyncio.run(unlimited(20_000)) for _ in range(args.rounds))
    print(f"usage counting, caller without limits: {free:.1f} µs CPU per request")
    for name, url in (("sqlite", None), ("postgresql", args.database_url)):
        if name == "postgresql" and not url:
            continue
        scratch = asyncio.run(scratch_database(url)) if url else None
        try:
            results = [asyncio.run(limited(scratch, 500)) for _ in range(args.rounds)]
        finally:
            if url and scratch:
                asyncio.run(scratch_database(url, drop=scratch.rsplit("/", 1)[1]))
        print(f"{name}: limited key (requests + tokens per minute): "
              f"{statistics.median(r[0] for r in results):.0f} µs per request (2 statements); "
              f"stream slot taken and given back: {statistics.median(r[1] for r in results):.0f} µs")


if __name__ == "__main__":
    main()
