"""PostgreSQL: vector stores, their files and chunks, mixed into PostgresStore.

The full-text index is a generated `tsvector` column with a GIN index. Vectors are float32
bytes compared in the server process (vectors/search.py): pgvector is not required (see
docs/file-search.md). Writes of several rows run in one transaction.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Any, Protocol

import asyncpg
import orjson

from ..checks import may_exist
from .vector_records import (
    DAY,
    ChunkRow,
    Embeddings,
    FileBatchRecord,
    VectorFileRecord,
    VectorStoreRecord,
    add_count,
    empty_counts,
)

_STORE = "id, owner, created_at, name, description, metadata, expires_after_days, last_active_at"
_FILE = ("vector_store_id, file_id, owner, created_at, filename, status, attributes, chunking, last_error, "
         "usage_bytes, batch_id")
STORE_CHANGES = ("name", "metadata", "expires_after_days", "last_active_at")


class _Statements(Protocol):
    async def _fetch(self, query: str, *args: Any) -> list[asyncpg.Record]: ...

    async def _fetchrow(self, query: str, *args: Any) -> asyncpg.Record | None: ...

    async def _fetchval(self, query: str, *args: Any) -> Any: ...

    async def _execute(self, query: str, *args: Any) -> str: ...

    def _conn(self) -> contextlib.AbstractAsyncContextManager[asyncpg.Connection]: ...


def _store(row: Sequence[Any]) -> VectorStoreRecord:
    return VectorStoreRecord(id=row[0], owner=row[1], created_at=row[2], name=row[3], description=row[4],
                             metadata=orjson.loads(row[5]), expires_after_days=row[6], last_active_at=row[7])


def _file(row: Sequence[Any]) -> VectorFileRecord:
    return VectorFileRecord(vector_store_id=row[0], file_id=row[1], owner=row[2], created_at=row[3],
                            filename=row[4], status=row[5], attributes=orjson.loads(row[6]),
                            chunking=orjson.loads(row[7]), last_error=orjson.loads(row[8]) if row[8] else None,
                            usage_bytes=row[9], batch_id=row[10])


def _count(n: str) -> int:
    """The row count of an asyncpg status string ('UPDATE 1')."""
    return int(n.rsplit(" ", 1)[-1])


@contextlib.asynccontextmanager
async def _transaction(store: _Statements) -> AsyncIterator[asyncpg.Connection]:
    async with store._conn() as conn, conn.transaction():
        yield conn


class PostgresVectors:
    """The vector-store half of PostgresStore."""

    # ---- stores ---------------------------------------------------------------------------------

    async def create_vector_store(self: _Statements, record: VectorStoreRecord) -> None:
        await self._execute(f"INSERT INTO vector_stores ({_STORE}) VALUES ($1,$2,$3,$4,$5,$6,$7,$8)",
                            record.id, record.owner, record.created_at, record.name, record.description,
                            orjson.dumps(record.metadata), record.expires_after_days, record.last_active_at)

    async def _counted(self: _Statements, records: list[VectorStoreRecord]) -> list[VectorStoreRecord]:
        if not records:
            return records
        by_id = {r.id: r for r in records}
        rows = await self._fetch(
            "SELECT vector_store_id, status, count(*), sum(usage_bytes) FROM vector_store_files "
            "WHERE vector_store_id = ANY($1) GROUP BY vector_store_id, status", list(by_id))
        for store_id, status, n, size in rows:
            add_count(by_id[store_id].file_counts, status, n)
            by_id[store_id].usage_bytes += int(size or 0)
        return records

    async def get_vector_store(self: Any, store_id: str, owner: str) -> VectorStoreRecord | None:
        if not may_exist(store_id):
            return None
        row = await self._fetchrow(f"SELECT {_STORE} FROM vector_stores WHERE id=$1 AND owner=$2", store_id, owner)
        return (await self._counted([_store(row)]))[0] if row else None

    async def update_vector_store(self: _Statements, store_id: str, owner: str, changes: dict[str, Any]) -> bool:
        sets = [k for k in changes if k in STORE_CHANGES]
        args = [orjson.dumps(changes[k]) if k == "metadata" else changes[k] for k in sets]
        assignments = ", ".join(f"{k}=${n + 3}" for n, k in enumerate(sets)) or "id=id"
        status = await self._execute(f"UPDATE vector_stores SET {assignments} WHERE id=$1 AND owner=$2",
                                     store_id, owner, *args)
        return _count(status) == 1

    async def touch_vector_stores(self: _Statements, store_ids: Sequence[str], owner: str, now: int) -> None:
        await self._execute("UPDATE vector_stores SET last_active_at=$1 WHERE owner=$2 AND id = ANY($3)",
                            now, owner, list(store_ids))

    async def delete_vector_store(self: _Statements, store_id: str, owner: str) -> bool:
        if not may_exist(store_id):
            return False
        async with _transaction(self) as conn:
            if _count(await conn.execute("DELETE FROM vector_stores WHERE id=$1 AND owner=$2",
                                         store_id, owner)) != 1:
                return False
            await conn.execute("DELETE FROM vector_chunks WHERE vector_store_id=$1", store_id)
            await conn.execute("DELETE FROM vector_store_files WHERE vector_store_id=$1", store_id)
            await conn.execute("DELETE FROM vector_file_batches WHERE vector_store_id=$1", store_id)
            return True

    async def list_vector_stores(self: Any, owner: str, *, after: str | None, before: str | None, limit: int,
                                 order: str) -> tuple[list[VectorStoreRecord], bool]:
        where: list[str] = ["owner=$1"]
        args: list[Any] = [owner]
        asc = order == "asc"
        for cursor, forward in ((after, True), (before, False)):
            if cursor:
                created = await self._fetchval("SELECT created_at FROM vector_stores WHERE id=$1 AND owner=$2",
                                               cursor, owner) if may_exist(cursor) else None
                if created is None:
                    return [], False
                args.extend([created, cursor])
                where.append(f"(created_at, id) {'>' if asc == forward else '<'} (${len(args) - 1}, ${len(args)})")
        direction = "ASC" if asc else "DESC"
        args.append(limit + 1)
        rows = await self._fetch(f"SELECT {_STORE} FROM vector_stores WHERE {' AND '.join(where)} "
                                 f"ORDER BY created_at {direction}, id {direction} LIMIT ${len(args)}", *args)
        return await self._counted([_store(r) for r in rows[:limit]]), len(rows) > limit

    async def purge_vector_stores(self: _Statements, now: int, limit: int) -> tuple[int, int]:
        # expires_after_days >= 1: an expired store was last active a day ago or more (the index). The
        # condition is checked again on the row deleted: a store used meanwhile stays.
        expired = "expires_after_days IS NOT NULL AND last_active_at + expires_after_days * $2 <= $3"
        async with _transaction(self) as conn:
            retired = await conn.fetch(
                f"""
                WITH s AS (DELETE FROM vector_stores WHERE id IN
                             (SELECT id FROM vector_stores WHERE last_active_at <= $1 AND {expired}
                              LIMIT $4 FOR UPDATE SKIP LOCKED) AND {expired} RETURNING id),
                     f AS (DELETE FROM vector_store_files WHERE vector_store_id IN (SELECT id FROM s)),
                     b AS (DELETE FROM vector_file_batches WHERE vector_store_id IN (SELECT id FROM s))
                INSERT INTO vector_store_purges SELECT id FROM s ON CONFLICT DO NOTHING RETURNING vector_store_id
                """, now - DAY, DAY, now, limit)
        async with _transaction(self) as conn:
            removed = _count(await conn.execute(
                "DELETE FROM vector_chunks WHERE id IN (SELECT id FROM vector_chunks WHERE vector_store_id IN "
                "(SELECT vector_store_id FROM vector_store_purges) LIMIT $1)", limit))
            await conn.execute("DELETE FROM vector_store_purges p WHERE NOT EXISTS "
                               "(SELECT 1 FROM vector_chunks c WHERE c.vector_store_id = p.vector_store_id)")
        return len(retired), removed

    # ---- files ----------------------------------------------------------------------------------

    async def attach_vector_files(self: _Statements, records: Sequence[VectorFileRecord],
                                  batch: FileBatchRecord | None = None) -> None:
        async with _transaction(self) as conn:
            if batch is not None:
                await conn.execute("INSERT INTO vector_file_batches (id, vector_store_id, owner, created_at) "
                                   "VALUES ($1,$2,$3,$4)", batch.id, batch.vector_store_id, batch.owner,
                                   batch.created_at)
            for r in records:
                await conn.execute("DELETE FROM vector_chunks WHERE vector_store_id=$1 AND file_id=$2",
                                   r.vector_store_id, r.file_id)
                await conn.execute("DELETE FROM vector_store_files WHERE vector_store_id=$1 AND file_id=$2",
                                   r.vector_store_id, r.file_id)
                await conn.execute(
                    f"INSERT INTO vector_store_files ({_FILE}) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11)",
                    r.vector_store_id, r.file_id, r.owner, r.created_at, r.filename, r.status,
                    orjson.dumps(r.attributes), orjson.dumps(r.chunking), None, 0, r.batch_id)
                await conn.execute("UPDATE vector_stores SET version = version + 1 WHERE id=$1", r.vector_store_id)

    async def get_vector_file(self: _Statements, store_id: str, file_id: str, owner: str) -> VectorFileRecord | None:
        if not (may_exist(store_id) and may_exist(file_id)):
            return None
        row = await self._fetchrow(f"SELECT {_FILE} FROM vector_store_files WHERE vector_store_id=$1 "
                                   "AND file_id=$2 AND owner=$3", store_id, file_id, owner)
        return _file(row) if row else None

    async def list_vector_files(self: _Statements, store_id: str, owner: str, *, status: str | None,
                                batch_id: str | None, after: str | None, before: str | None, limit: int,
                                order: str) -> tuple[list[VectorFileRecord], bool]:
        where = ["vector_store_id=$1", "owner=$2"]
        args: list[Any] = [store_id, owner]
        if status:
            args.append(status)
            where.append(f"status=${len(args)}")
        if batch_id:
            args.append(batch_id)
            where.append(f"batch_id=${len(args)}")
        asc = order == "asc"
        for cursor, forward in ((after, True), (before, False)):
            if cursor:
                seq = await self._fetchval("SELECT seq FROM vector_store_files WHERE vector_store_id=$1 "
                                           "AND file_id=$2 AND owner=$3", store_id, cursor, owner) \
                    if may_exist(cursor) else None
                if seq is None:
                    return [], False
                args.append(seq)
                where.append(f"seq {'>' if asc == forward else '<'} ${len(args)}")
        args.append(limit + 1)
        rows = await self._fetch(f"SELECT {_FILE} FROM vector_store_files WHERE {' AND '.join(where)} "
                                 f"ORDER BY seq {'ASC' if asc else 'DESC'} LIMIT ${len(args)}", *args)
        return [_file(r) for r in rows[:limit]], len(rows) > limit

    async def set_vector_file_attributes(self: _Statements, store_id: str, file_id: str, owner: str,
                                         attributes: dict[str, Any]) -> bool:
        return _count(await self._execute(
            "UPDATE vector_store_files SET attributes=$1 WHERE vector_store_id=$2 AND file_id=$3 AND owner=$4",
            orjson.dumps(attributes), store_id, file_id, owner)) == 1

    async def delete_vector_file(self: _Statements, store_id: str, file_id: str, owner: str) -> bool:
        if not (may_exist(store_id) and may_exist(file_id)):
            return False
        async with _transaction(self) as conn:
            if _count(await conn.execute("DELETE FROM vector_store_files WHERE vector_store_id=$1 AND file_id=$2 "
                                         "AND owner=$3", store_id, file_id, owner)) != 1:
                return False
            await conn.execute("DELETE FROM vector_chunks WHERE vector_store_id=$1 AND file_id=$2", store_id, file_id)
            await conn.execute("UPDATE vector_stores SET version = version + 1 WHERE id=$1", store_id)
            return True

    # ---- ingestion ----------------------------------------------------------------------------

    async def claim_vector_files(self: _Statements, instance: str, now: int, lease_until: int, limit: int,
                                 take_all: bool = False) -> list[VectorFileRecord]:
        rows = await self._fetch(
            f"UPDATE vector_store_files SET lease_owner=$1, lease_until=$2 WHERE (vector_store_id, file_id) IN ("
            f"SELECT vector_store_id, file_id FROM vector_store_files WHERE status='in_progress' "
            f"AND ($3 OR lease_until IS NULL OR lease_until < $4) ORDER BY seq LIMIT $5 FOR UPDATE SKIP LOCKED) "
            f"RETURNING {_FILE}", instance, lease_until, take_all, now, limit)
        return [_file(r) for r in rows]

    async def renew_vector_file(self: _Statements, store_id: str, file_id: str, instance: str,
                                lease_until: int) -> bool:
        return _count(await self._execute(
            "UPDATE vector_store_files SET lease_until=$1 WHERE vector_store_id=$2 AND file_id=$3 "
            "AND lease_owner=$4 AND status='in_progress'", lease_until, store_id, file_id, instance)) == 1

    async def add_vector_chunks(self: _Statements, store_id: str, file_id: str, instance: str, start: int,
                                chunks: Sequence[tuple[str, bytes | None]]) -> bool:
        async with _transaction(self) as conn:
            held = await conn.fetchval("SELECT 1 FROM vector_store_files WHERE vector_store_id=$1 AND file_id=$2 "
                                       "AND lease_owner=$3 AND status='in_progress' FOR UPDATE",
                                       store_id, file_id, instance)
            if held is None:
                return False
            if start == 0:
                await conn.execute("DELETE FROM vector_chunks WHERE vector_store_id=$1 AND file_id=$2",
                                   store_id, file_id)
            if chunks:
                await conn.copy_records_to_table(
                    "vector_chunks", columns=["vector_store_id", "file_id", "position", "text", "embedding"],
                    records=[(store_id, file_id, start + n, text, vec) for n, (text, vec) in enumerate(chunks)])
            return True

    async def finish_vector_file(self: _Statements, store_id: str, file_id: str, instance: str, *, status: str,
                                 last_error: dict | None, usage_bytes: int,
                                 chunks: Sequence[tuple[str, bytes | None]]) -> bool:
        async with _transaction(self) as conn:
            if _count(await conn.execute(
                    "UPDATE vector_store_files SET status=$1, last_error=$2, usage_bytes=$3, lease_owner=NULL, "
                    "lease_until=NULL WHERE vector_store_id=$4 AND file_id=$5 AND lease_owner=$6 "
                    "AND status='in_progress'", status, orjson.dumps(last_error) if last_error else None,
                    usage_bytes, store_id, file_id, instance)) != 1:
                return False
            if status != "completed":  # what an earlier batch stored goes
                await conn.execute("DELETE FROM vector_chunks WHERE vector_store_id=$1 AND file_id=$2",
                                   store_id, file_id)
            if chunks:
                await conn.copy_records_to_table(
                    "vector_chunks", columns=["vector_store_id", "file_id", "position", "text", "embedding"],
                    records=[(store_id, file_id, n, text, vec) for n, (text, vec) in enumerate(chunks)])
            await conn.execute("UPDATE vector_stores SET version = version + 1 WHERE id=$1", store_id)
            return True

    async def vector_file_chunks(self: _Statements, store_id: str, file_id: str, owner: str) -> list[str] | None:
        if await self.get_vector_file(store_id, file_id, owner) is None:  # type: ignore[attr-defined]
            return None
        rows = await self._fetch("SELECT text FROM vector_chunks WHERE vector_store_id=$1 AND file_id=$2 "
                                 "ORDER BY position", store_id, file_id)
        return [r[0] for r in rows]

    # ---- search ---------------------------------------------------------------------------------

    async def searchable_files(self: _Statements, store_ids: Sequence[str], owner: str,
                               file_ids: Sequence[str] | None = None) -> list[VectorFileRecord]:
        rows = await self._fetch(f"SELECT {_FILE} FROM vector_store_files WHERE owner=$1 AND status='completed' "
                                 "AND vector_store_id = ANY($2) AND ($3::text[] IS NULL OR file_id = ANY($3))",
                                 owner, list(store_ids), list(file_ids) if file_ids is not None else None)
        return [_file(r) for r in rows]

    async def text_search(self: _Statements, store_ids: Sequence[str], terms: Sequence[str],
                          file_ids: Sequence[str] | None, limit: int) -> list[int]:
        if not terms:
            return []
        # Each term is a run of word characters (vectors/search.py): websearch syntax reads them as words.
        query = " or ".join(terms)
        rows = await self._fetch(
            "SELECT id FROM vector_chunks, websearch_to_tsquery('english', $1) q WHERE tsv @@ q "
            "AND vector_store_id = ANY($2) AND ($3::text[] IS NULL OR file_id = ANY($3)) "
            "ORDER BY ts_rank_cd(tsv, q) DESC, id LIMIT $4",
            query, list(store_ids), list(file_ids) if file_ids is not None else None, limit)
        return [r[0] for r in rows]

    async def vector_store_versions(self: _Statements, store_ids: Sequence[str]) -> dict[str, int]:
        rows = await self._fetch("SELECT id, version FROM vector_stores WHERE id = ANY($1)", list(store_ids))
        return {r[0]: r[1] for r in rows}

    async def embeddings(self: _Statements, store_id: str) -> Embeddings:
        version = await self._fetchval("SELECT version FROM vector_stores WHERE id=$1", store_id)
        rows = await self._fetch("SELECT id, file_id, embedding FROM vector_chunks WHERE vector_store_id=$1 "
                                 "AND embedding IS NOT NULL ORDER BY id", store_id)
        return Embeddings(version=version if version is not None else -1, ids=[r[0] for r in rows],
                          file_ids=[r[1] for r in rows], vectors=[r[2] for r in rows])

    async def chunks(self: _Statements, chunk_ids: Sequence[int]) -> list[ChunkRow]:
        if not chunk_ids:
            return []
        rows = await self._fetch("SELECT id, vector_store_id, file_id, text FROM vector_chunks WHERE id = ANY($1)",
                                 list(chunk_ids))
        return [ChunkRow(*r) for r in rows]

    # ---- file batches ---------------------------------------------------------------------------

    async def get_file_batch(self: _Statements, store_id: str, batch_id: str, owner: str) -> FileBatchRecord | None:
        if not (may_exist(store_id) and may_exist(batch_id)):
            return None
        row = await self._fetchrow("SELECT id, vector_store_id, owner, created_at, cancelled FROM "
                                   "vector_file_batches WHERE id=$1 AND vector_store_id=$2 AND owner=$3",
                                   batch_id, store_id, owner)
        if row is None:
            return None
        record = FileBatchRecord(id=row[0], vector_store_id=row[1], owner=row[2], created_at=row[3],
                                 cancelled=row[4], file_counts=empty_counts())
        for status, n in await self._fetch("SELECT status, count(*) FROM vector_store_files WHERE batch_id=$1 "
                                           "GROUP BY status", batch_id):
            add_count(record.file_counts, status, n)
        return record

    async def cancel_file_batch(self: _Statements, store_id: str, batch_id: str, owner: str) -> bool:
        if not (may_exist(store_id) and may_exist(batch_id)):
            return False
        async with _transaction(self) as conn:
            if _count(await conn.execute("UPDATE vector_file_batches SET cancelled=TRUE WHERE id=$1 "
                                         "AND vector_store_id=$2 AND owner=$3", batch_id, store_id, owner)) != 1:
                return False
            await conn.execute("UPDATE vector_store_files SET status='cancelled', lease_owner=NULL, "
                               "lease_until=NULL WHERE batch_id=$1 AND status='in_progress'", batch_id)
            return True
