"""Expired vector stores removed by the server's expiry sweep (jobs.py), on any replica.

A store past its `expires_after` goes at once with its files and batches (every call then
answers 404); its chunks and vectors follow `BATCH` at a time, each batch one short write, for
at most `BUDGET` seconds per sweep, so a store of millions of chunks never holds up the loop
(or, on SQLite, the writer): what remains is taken up at the next maintenance tick.
"""

from __future__ import annotations

import logging
import time

from ..store.vector_records import VectorIndex

log = logging.getLogger("responsa.vectors")

BATCH = 1000  # stores or chunks one call removes at most (a SQLite write of about 20 ms)
BUDGET = 0.5  # seconds one sweep spends at most


async def purge_expired_stores(index: VectorIndex, now: int, *, batch: int = BATCH, budget: float = BUDGET) -> bool:
    """Remove expired stores and their chunks; True if some chunks remain for the next sweep."""
    deadline = time.monotonic() + budget
    stores = chunks = 0
    while True:
        got_stores, got_chunks = await index.purge_vector_stores(now, batch)
        stores += got_stores
        chunks += got_chunks
        more = got_stores >= batch or got_chunks >= batch
        if not more or time.monotonic() >= deadline:
            break
    if stores or chunks:
        log.info("purged %d expired vector stores and %d of their chunks%s", stores, chunks,
                 " (more next time)" if more else "")
    return more
