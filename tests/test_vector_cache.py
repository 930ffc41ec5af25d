"""The dense vectors a server keeps in memory (vectors/matrices.py): bounded in bytes, least
recently searched store out first, and an evicted or changed store read again correctly; on
SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import numpy as np
import pytest
import test_store_contract as contract
from test_vector_index import NOW, _filled

from responsa.store.vector_records import VectorIndex
from responsa.vectors.matrices import Matrices
from responsa.vectors.search import Searcher

pytestmark = pytest.mark.anyio
pg_url, make_store, store = contract.pg_url, contract.make_store, contract.store


class Toward:
    """An embedder whose every query points along the second axis: chunk n of a store made by
    `_filled` (vector (1, n, 0)) ranks by n."""

    name = "fixed"

    async def embed(self, texts: list[str]) -> np.ndarray:
        return np.tile(np.array([0, 1, 0], dtype=np.float32), (len(texts), 1))


async def _dense(searcher: Searcher, sid: str, owner: str = "alice") -> list[str]:
    hits = await searcher.search(owner, [sid], ["anything"], max_results=50, mode="dense")
    return [h.text for h in hits]


async def test_the_cache_is_bounded_and_reloads(store: Any) -> None:
    index = cast(VectorIndex, store)
    a, b, c = [await _filled(index, "alice", NOW, None, [f"{name} {n}" for n in range(10)]) for name in "abc"]
    big = await _filled(index, "alice", NOW, None, [f"big {n}" for n in range(100)])
    probe = Matrices(index, 1 << 30)
    [one] = await probe.get([a], 3)
    bound = one.nbytes * 5 // 2  # room for two stores of ten chunks, not three
    searcher = Searcher(index, Toward(), cache_bytes=bound)
    kept = searcher.matrices

    def check(*inside: str) -> None:
        assert kept.nbytes <= bound
        assert {s for s in (a, b, c, big) if s in kept} == set(inside)

    first_a = await _dense(searcher, a)
    assert first_a == [f"a {n}" for n in range(9, -1, -1)]  # every chunk, best first
    assert await _dense(searcher, b) == [f"b {n}" for n in range(9, -1, -1)]
    check(a, b)
    assert kept.loads == 2
    await _dense(searcher, c)  # a, searched least recently, makes room
    check(b, c)
    await _dense(searcher, b)  # kept: not read again, and now the most recent
    assert kept.loads == 3
    assert await _dense(searcher, a) == first_a  # read again, the same answer; c goes
    check(a, b)
    assert kept.loads == 4
    # Larger than the whole cache: read for the query, not kept, and nothing else is evicted.
    assert await _dense(searcher, big) == [f"big {n}" for n in range(99, 49, -1)]
    check(a, b)
    assert await _dense(searcher, big) == [f"big {n}" for n in range(99, 49, -1)]
    assert kept.loads == 6
    # A store deleted (or purged once expired) is dropped.
    assert await index.delete_vector_store(b, "alice")
    assert await _dense(searcher, b) == []
    check(a)
    assert kept.nbytes == one.nbytes


class Slow:
    """The store, reading vectors with a few turns of the event loop in between (as PostgreSQL does)."""

    def __init__(self, index: VectorIndex) -> None:
        self.index = index

    def __getattr__(self, name: str) -> Any:
        return getattr(self.index, name)

    async def embeddings(self, store_id: str) -> Any:
        for _ in range(3):
            await asyncio.sleep(0)
        return await self.index.embeddings(store_id)


async def test_a_changed_store_is_read_once_again(store: Any) -> None:
    index = cast(VectorIndex, store)
    a = await _filled(index, "alice", NOW, None, ["a 0", "a 1"])
    searcher = Searcher(cast(VectorIndex, Slow(index)), Toward(), cache_bytes=1 << 20)
    both = await asyncio.gather(_dense(searcher, a), _dense(searcher, a), _dense(searcher, a))
    assert both == [["a 1", "a 0"]] * 3 and searcher.matrices.loads == 1  # read once for all three
    [fid] = [f.file_id for f in await index.searchable_files([a], "alice")]
    assert await index.delete_vector_file(a, fid, "alice")  # the store's version moves
    assert await _dense(searcher, a) == []
    assert searcher.matrices.loads == 2 and searcher.matrices.nbytes <= 1 << 20
