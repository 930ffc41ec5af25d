"""How long one pass of the expired-vector-store purge holds the database, on SQLite and PostgreSQL.

Fills a store (through the Store, no server) with one expired vector store of `--chunks` chunks
(100 words of text and a 384-dimension vector each, 100 per file), then removes it the way the
expiry sweep does (vectors/expiry.py): `purge_vector_stores` passes of `BATCH` chunks, each
timed, printing passes, p50, the longest pass and the first (on SQLite the writer, and so the event loop,
is held for that long) and the total:
    python benchmarks/vector_purge.py [--chunks 100000] [--stores sqlite,postgres]
PostgreSQL is a throwaway database on the server the tests use (tests/pg.py).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from responsa.store.sqlite import SQLiteStore  # noqa: E402
from responsa.store.vector_records import DAY, VectorFileRecord, VectorIndex, VectorStoreRecord  # noqa: E402
from responsa.vectors.expiry import BATCH  # noqa: E402

PER_FILE = 100
WORDS = "the quick brown fox jumps over a lazy dog while tides rise and bread bakes slowly".split()


async def fill(store: VectorIndex, chunks: int, now: int) -> None:
    rng = np.random.default_rng(1)
    sid = f"vs_{uuid.uuid4().hex}"
    await store.create_vector_store(VectorStoreRecord(id=sid, owner="o", created_at=now, name="b", metadata={},
                                                      last_active_at=now - 10 * DAY, expires_after_days=1))
    fids = [f"file-{uuid.uuid4().hex}" for _ in range(0, chunks, PER_FILE)]
    await store.attach_vector_files([VectorFileRecord(
        vector_store_id=sid, file_id=f, owner="o", created_at=now, filename=f, status="in_progress",
        attributes={}, chunking={}) for f in fids])
    await store.claim_vector_files("bench", now, now + 3600, len(fids), take_all=True)
    for f in fids:
        vectors = rng.standard_normal((PER_FILE, 384), dtype=np.float32)
        await store.finish_vector_file(sid, f, "bench", status="completed", last_error=None, usage_bytes=1,
                                       chunks=[(" ".join(rng.choice(WORDS, 100)), v.tobytes()) for v in vectors])


async def run(kind: str, store: VectorIndex, chunks: int) -> None:
    now = int(time.time())
    await fill(store, chunks, now)
    times = []
    while True:
        start = time.perf_counter()
        stores, removed = await store.purge_vector_stores(now, BATCH)
        times.append(time.perf_counter() - start)
        if stores < BATCH and removed < BATCH:
            break
    total, first = sum(times), times[0]
    times.sort()
    print(f"{kind}: {chunks} chunks in {len(times)} passes of {BATCH}: p50 {times[len(times) // 2] * 1000:.0f} ms, "
          f"longest {times[-1] * 1000:.0f} ms; the first (which also removes the store and its "
          f"{chunks // PER_FILE} files) {first * 1000:.0f} ms; total {total:.1f} s")


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--stores", default="sqlite,postgres")
    args = parser.parse_args()
    kinds = args.stores.split(",")
    if "sqlite" in kinds:
        with tempfile.TemporaryDirectory() as tmp:
            lite = SQLiteStore(str(Path(tmp) / "responsa.db"))
            await lite.open()
            try:
                await run("SQLite", lite, args.chunks)
            finally:
                await lite.close()
    if "postgres" in kinds:
        import pg

        from responsa.store.postgres import PostgresStore

        url = pg.create_database("vector_purge")
        try:
            store = PostgresStore(url, pool_size=4)
            await store.open()
            try:
                await run("PostgreSQL", store, args.chunks)
            finally:
                await store.close()
        finally:
            pg.drop_database(url)


if __name__ == "__main__":
    asyncio.run(main())
