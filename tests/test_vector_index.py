"""The vector-store half of the Store contract (VectorIndex), on SQLite and PostgreSQL alike:
ownership, ingestion leases (a file is written only by the process that holds it; a retry
starts over), and both halves of search."""

from __future__ import annotations

import time
import uuid
from typing import Any, cast

import numpy as np
import pytest
import test_store_contract as contract

from responsa.store.vector_records import FileBatchRecord, VectorFileRecord, VectorIndex, VectorStoreRecord

pytestmark = pytest.mark.anyio
# The store contract's fixtures: each test runs on SQLite and on PostgreSQL.
pg_url, make_store, store = contract.pg_url, contract.make_store, contract.store
NOW = int(time.time())


def _vec(*values: float) -> bytes:
    v = np.array(values, dtype=np.float32)
    return (v / np.linalg.norm(v)).tobytes()


async def _store_with_file(index: VectorIndex, owner: str = "alice") -> tuple[str, str]:
    sid, fid = f"vs_{uuid.uuid4().hex}", f"file-{uuid.uuid4().hex}"
    await index.create_vector_store(VectorStoreRecord(id=sid, owner=owner, created_at=NOW, name="s", metadata={},
                                                      last_active_at=NOW))
    await index.attach_vector_files([VectorFileRecord(
        vector_store_id=sid, file_id=fid, owner=owner, created_at=NOW, filename="a.txt", status="in_progress",
        attributes={"k": 1}, chunking={"type": "static", "static": {"max_chunk_size_tokens": 800,
                                                                     "chunk_overlap_tokens": 400}})])
    return sid, fid


async def _claim(index: VectorIndex, instance: str, fid: str, lease_until: int) -> list[VectorFileRecord]:
    return [r for r in await index.claim_vector_files(instance, int(time.time()), lease_until, 1000)
            if r.file_id == fid]


async def test_only_the_lease_holder_writes(store: Any) -> None:
    index = cast(VectorIndex, store)
    sid, fid = await _store_with_file(index)
    assert len(await _claim(index, "one", fid, NOW + 600)) == 1
    assert await _claim(index, "two", fid, NOW + 600) == []  # held
    chunks = [("tides come from the moon", _vec(1, 0, 0)), ("bread needs yeast", _vec(0, 1, 0))]
    assert not await index.add_vector_chunks(sid, fid, "two", 0, chunks)
    assert await index.add_vector_chunks(sid, fid, "one", 0, chunks)
    assert await index.searchable_files([sid], "alice") == []  # not before it is completed
    assert not await index.finish_vector_file(sid, fid, "two", status="completed", last_error=None,
                                              usage_bytes=1, chunks=[])
    before = (await index.vector_store_versions([sid]))[sid]
    assert await index.finish_vector_file(sid, fid, "one", status="completed", last_error=None, usage_bytes=99,
                                          chunks=[])
    assert (await index.vector_store_versions([sid]))[sid] > before
    [found] = await index.searchable_files([sid], "alice")
    assert found.attributes == {"k": 1} and found.usage_bytes == 99
    assert await index.vector_file_chunks(sid, fid, "alice") == [t for t, _ in chunks]
    assert await index.vector_file_chunks(sid, fid, "bob") is None
    ranked = await index.text_search([sid], ["moon"], None, 10)
    assert [c.text for c in await index.chunks(ranked)] == ["tides come from the moon"]
    assert await index.text_search([sid], ["moon"], ["file-other"], 10) == []
    vectors = await index.embeddings(sid)
    assert len(vectors.ids) == 2 and vectors.file_ids == [fid, fid]
    assert np.frombuffer(vectors.vectors[0], dtype=np.float32).shape == (3,)
    counted = await index.get_vector_store(sid, "alice")
    assert counted is not None and counted.file_counts["completed"] == 1 and counted.usage_bytes == 99


async def test_a_retry_starts_over_and_a_failure_keeps_nothing(store: Any) -> None:
    index = cast(VectorIndex, store)
    sid, fid = await _store_with_file(index)
    assert await _claim(index, "dead", fid, NOW - 1)  # a lease that has run out: a dead process's
    assert await index.add_vector_chunks(sid, fid, "dead", 0, [("stale text", None)])
    assert await _claim(index, "next", fid, NOW + 600)
    assert not await index.add_vector_chunks(sid, fid, "dead", 1, [("more stale", None)])
    assert await index.add_vector_chunks(sid, fid, "next", 0, [("fresh text", None)])
    assert await index.finish_vector_file(sid, fid, "next", status="completed", last_error=None, usage_bytes=1,
                                          chunks=[])
    assert await index.vector_file_chunks(sid, fid, "alice") == ["fresh text"]
    # A file that fails after some batches were stored keeps none of them.
    sid2, fid2 = await _store_with_file(index)
    assert await _claim(index, "one", fid2, NOW + 600)
    assert await index.add_vector_chunks(sid2, fid2, "one", 0, [("partial", None)])
    assert await index.finish_vector_file(sid2, fid2, "one", status="failed",
                                          last_error={"code": "server_error", "message": "x"}, usage_bytes=0,
                                          chunks=[])
    assert await index.vector_file_chunks(sid2, fid2, "alice") == []
    got = await index.get_vector_file(sid2, fid2, "alice")
    assert got is not None and got.status == "failed" and got.last_error == {"code": "server_error", "message": "x"}


async def test_owners_and_batches(store: Any) -> None:
    index = cast(VectorIndex, store)
    sid, fid = await _store_with_file(index)
    assert await index.get_vector_store(sid, "bob") is None
    assert await index.get_vector_file(sid, fid, "bob") is None
    assert not await index.update_vector_store(sid, "bob", {"name": "x"})
    assert not await index.delete_vector_file(sid, fid, "bob")
    assert not await index.delete_vector_store(sid, "bob")
    assert await index.update_vector_store(sid, "alice", {"name": "renamed", "metadata": {"a": "b"}})
    got = await index.get_vector_store(sid, "alice")
    assert got is not None and (got.name, got.metadata) == ("renamed", {"a": "b"})
    # A cancelled batch's files are never claimed.
    batch = FileBatchRecord(id=f"vsfb_{uuid.uuid4().hex}", vector_store_id=sid, owner="alice", created_at=NOW)
    other = f"file-{uuid.uuid4().hex}"
    await index.attach_vector_files([VectorFileRecord(
        vector_store_id=sid, file_id=other, owner="alice", created_at=NOW, filename="b.txt", status="in_progress",
        attributes={}, chunking={}, batch_id=batch.id)], batch)
    assert not await index.cancel_file_batch(sid, batch.id, "bob")
    assert await index.cancel_file_batch(sid, batch.id, "alice")
    got_batch = await index.get_file_batch(sid, batch.id, "alice")
    assert got_batch is not None and got_batch.file_counts["cancelled"] == 1 and got_batch.wire()["status"] == \
        "cancelled"
    assert await _claim(index, "one", other, NOW + 600) == []
    assert await index.delete_vector_store(sid, "alice")
    assert await index.get_vector_file(sid, fid, "alice") is None


async def _filled(index: VectorIndex, owner: str, last_active_at: int, days: int | None, texts: list[str]) -> str:
    """A store with one completed file of these chunks, last used at `last_active_at`."""
    sid, fid = f"vs_{uuid.uuid4().hex}", f"file-{uuid.uuid4().hex}"
    await index.create_vector_store(VectorStoreRecord(id=sid, owner=owner, created_at=last_active_at, name="s",
                                                      metadata={}, last_active_at=last_active_at,
                                                      expires_after_days=days))
    batch = FileBatchRecord(id=f"vsfb_{uuid.uuid4().hex}", vector_store_id=sid, owner=owner, created_at=NOW)
    await index.attach_vector_files([VectorFileRecord(
        vector_store_id=sid, file_id=fid, owner=owner, created_at=NOW, filename="a.txt", status="in_progress",
        attributes={}, chunking={}, batch_id=batch.id)], batch)
    assert await _claim(index, "one", fid, NOW + 600)
    assert await index.finish_vector_file(sid, fid, "one", status="completed", last_error=None, usage_bytes=1,
                                          chunks=[(t, _vec(1, n, 0)) for n, t in enumerate(texts)])
    return sid


async def test_expired_stores_are_purged_in_bounded_batches(store: Any) -> None:
    from responsa.store.vector_records import DAY
    from responsa.vectors.expiry import purge_expired_stores

    index = cast(VectorIndex, store)
    now = NOW + 30 * DAY  # the sweep's clock: explicit, no waiting
    # Expired (last active NOW, 1 and 2 days): alice's and bob's, any owner.
    alice = await _filled(index, "alice", NOW, 1, [f"walrus tusk {n}" for n in range(5)])
    bob = await _filled(index, "bob", NOW, 2, ["walrus whiskers", "walrus flippers"])
    # Not expired at `now`: a day to go, no expiry at all, expired but used again before the sweep.
    fresh = await _filled(index, "alice", now - DAY + 60, 1, ["walrus fresh"])
    forever = await _filled(index, "alice", NOW - 400 * DAY, None, ["walrus forever"])
    used = await _filled(index, "bob", NOW, 1, ["walrus used"])
    await index.touch_vector_stores([used], "bob", now - 5)

    # The first pass removes both expired stores, their files and batches at once; 3 chunks of 7.
    assert await index.purge_vector_stores(now, 3) == (2, 3)
    for sid, owner in ((alice, "alice"), (bob, "bob")):
        assert await index.get_vector_store(sid, owner) is None
        assert await index.searchable_files([sid], owner) == []
        listed, _ = await index.list_vector_stores(owner, after=None, before=None, limit=100, order="asc")
        assert sid not in {r.id for r in listed}
        assert not await index.update_vector_store(sid, owner, {"last_active_at": now})  # not revived
    # Later passes take the rest, at most 3 chunks each.
    assert [(await index.purge_vector_stores(now, 3))[1] for _ in range(4)] == [3, 1, 0, 0]
    for sid in (alice, bob):
        assert (await index.embeddings(sid)).ids == []
    assert await index.text_search([alice, bob], ["walrus"], None, 50) == []  # the full-text index too
    kept = await index.text_search([fresh, forever, used], ["walrus"], None, 50)
    assert sorted(c.text for c in await index.chunks(kept)) == ["walrus forever", "walrus fresh", "walrus used"]
    for sid, owner in ((fresh, "alice"), (forever, "alice"), (used, "bob")):
        got = await index.get_vector_store(sid, owner)
        assert got is not None and got.file_counts["completed"] == 1
        assert len((await index.embeddings(sid)).ids) == 1

    # The sweep (jobs.py) goes on while batches come back full, within its time budget.
    big = await _filled(index, "carol", NOW, 1, [f"seal {n}" for n in range(7)])
    assert await purge_expired_stores(index, now, batch=3, budget=0) is True  # one call: chunks remain
    assert len((await index.embeddings(big)).ids) == 4
    assert await purge_expired_stores(index, now, batch=3, budget=60) is False
    assert (await index.embeddings(big)).ids == [] and await index.purge_vector_stores(now, 3) == (0, 0)
