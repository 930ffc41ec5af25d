"""SQLite: vector stores, their files and chunks (a full-text index in FTS5), mixed into SQLiteStore.

The FTS5 table takes its text from `vector_chunks` (external content): rows are added to and
removed from it in the same write that adds or removes the chunks.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

import orjson

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

T = TypeVar("T")
_STORE = "id, owner, created_at, name, description, metadata, expires_after_days, last_active_at"
_FILE = ("vector_store_id, file_id, owner, created_at, filename, status, attributes, chunking, last_error, "
         "usage_bytes, batch_id")
# What may be changed by update_vector_store.
STORE_CHANGES = ("name", "metadata", "expires_after_days", "last_active_at")


class _Connections(Protocol):
    def _read(self) -> sqlite3.Connection: ...

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T: ...


def _store(row: Sequence[Any]) -> VectorStoreRecord:
    return VectorStoreRecord(id=row[0], owner=row[1], created_at=row[2], name=row[3], description=row[4],
                             metadata=orjson.loads(row[5]), expires_after_days=row[6], last_active_at=row[7])


def _file(row: Sequence[Any]) -> VectorFileRecord:
    return VectorFileRecord(vector_store_id=row[0], file_id=row[1], owner=row[2], created_at=row[3],
                            filename=row[4], status=row[5], attributes=orjson.loads(row[6]),
                            chunking=orjson.loads(row[7]), last_error=orjson.loads(row[8]) if row[8] else None,
                            usage_bytes=row[9], batch_id=row[10])


def _marks(values: Sequence[Any]) -> str:
    return ",".join("?" * len(values))


def _drop_chunks(conn: sqlite3.Connection, where: str, args: Sequence[Any]) -> None:
    conn.execute("INSERT INTO vector_chunks_fts(vector_chunks_fts, rowid, text) "
                 f"SELECT 'delete', id, text FROM vector_chunks WHERE {where}", args)
    conn.execute(f"DELETE FROM vector_chunks WHERE {where}", args)


def _bump(conn: sqlite3.Connection, store_id: str) -> None:
    conn.execute("UPDATE vector_stores SET version = version + 1 WHERE id=?", (store_id,))


class SQLiteVectors:
    """The vector-store half of SQLiteStore."""

    # ---- stores ---------------------------------------------------------------------------------

    async def create_vector_store(self: _Connections, record: VectorStoreRecord) -> None:
        await self._write(lambda conn: conn.execute(
            f"INSERT INTO vector_stores ({_STORE}) VALUES (?,?,?,?,?,?,?,?)",
            (record.id, record.owner, record.created_at, record.name, record.description,
             orjson.dumps(record.metadata), record.expires_after_days, record.last_active_at)))

    def _counted(self: _Connections, records: list[VectorStoreRecord]) -> list[VectorStoreRecord]:
        if not records:
            return records
        by_id = {r.id: r for r in records}
        ids = list(by_id)
        rows = self._read().execute(
            "SELECT vector_store_id, status, count(*), sum(usage_bytes) FROM vector_store_files "
            f"WHERE vector_store_id IN ({_marks(ids)}) GROUP BY vector_store_id, status", ids).fetchall()
        for store_id, status, n, size in rows:
            add_count(by_id[store_id].file_counts, status, n)
            by_id[store_id].usage_bytes += size or 0
        return records

    async def get_vector_store(self: Any, store_id: str, owner: str) -> VectorStoreRecord | None:
        row = self._read().execute(f"SELECT {_STORE} FROM vector_stores WHERE id=? AND owner=?",
                                   (store_id, owner)).fetchone()
        return self._counted([_store(row)])[0] if row else None

    async def update_vector_store(self: _Connections, store_id: str, owner: str, changes: dict[str, Any]) -> bool:
        sets = [k for k in changes if k in STORE_CHANGES]
        args = [orjson.dumps(changes[k]) if k == "metadata" else changes[k] for k in sets]

        def op(conn: sqlite3.Connection) -> bool:
            assignments = ", ".join(f"{k}=?" for k in sets) or "id=id"
            return conn.execute(f"UPDATE vector_stores SET {assignments} WHERE id=? AND owner=?",
                                (*args, store_id, owner)).rowcount == 1

        return await self._write(op)

    async def touch_vector_stores(self: _Connections, store_ids: Sequence[str], owner: str, now: int) -> None:
        await self._write(lambda conn: conn.execute(
            f"UPDATE vector_stores SET last_active_at=? WHERE owner=? AND id IN ({_marks(store_ids)})",
            (now, owner, *store_ids)))

    async def delete_vector_store(self: _Connections, store_id: str, owner: str) -> bool:
        def op(conn: sqlite3.Connection) -> bool:
            if conn.execute("DELETE FROM vector_stores WHERE id=? AND owner=?", (store_id, owner)).rowcount != 1:
                return False
            _drop_chunks(conn, "vector_store_id=?", (store_id,))
            conn.execute("DELETE FROM vector_store_files WHERE vector_store_id=?", (store_id,))
            conn.execute("DELETE FROM vector_file_batches WHERE vector_store_id=?", (store_id,))
            return True

        return await self._write(op)

    async def list_vector_stores(self: Any, owner: str, *, after: str | None, before: str | None, limit: int,
                                 order: str) -> tuple[list[VectorStoreRecord], bool]:
        conn = self._read()
        where, args = ["owner=?"], [owner]
        asc = order == "asc"
        for cursor, forward in ((after, True), (before, False)):
            if cursor:
                row = conn.execute("SELECT created_at FROM vector_stores WHERE id=? AND owner=?",
                                   (cursor, owner)).fetchone()
                if row is None:
                    return [], False
                where.append(f"(created_at, id) {'>' if asc == forward else '<'} (?, ?)")
                args.extend([row[0], cursor])
        direction = "ASC" if asc else "DESC"
        rows = conn.execute(f"SELECT {_STORE} FROM vector_stores WHERE {' AND '.join(where)} "
                            f"ORDER BY created_at {direction}, id {direction} LIMIT ?", (*args, limit + 1)).fetchall()
        return self._counted([_store(r) for r in rows[:limit]]), len(rows) > limit

    async def purge_vector_stores(self: _Connections, now: int, limit: int) -> tuple[int, int]:
        def op(conn: sqlite3.Connection) -> tuple[int, int]:
            # expires_after_days >= 1: an expired store was last active a day ago or more (the index)
            expired = [r[0] for r in conn.execute(
                "SELECT id FROM vector_stores WHERE expires_after_days IS NOT NULL AND last_active_at <= ? "
                "AND last_active_at + expires_after_days * ? <= ? LIMIT ?", (now - DAY, DAY, now, limit))]
            for store_id in expired:
                conn.execute("DELETE FROM vector_stores WHERE id=?", (store_id,))
                conn.execute("DELETE FROM vector_store_files WHERE vector_store_id=?", (store_id,))
                conn.execute("DELETE FROM vector_file_batches WHERE vector_store_id=?", (store_id,))
                conn.execute("INSERT OR IGNORE INTO vector_store_purges VALUES (?)", (store_id,))
            removed = 0
            for (store_id,) in conn.execute("SELECT vector_store_id FROM vector_store_purges").fetchall():
                wanted = limit - removed
                ids = [r[0] for r in conn.execute("SELECT id FROM vector_chunks WHERE vector_store_id=? LIMIT ?",
                                                  (store_id, wanted))]
                if ids:
                    _drop_chunks(conn, f"id IN ({_marks(ids)})", ids)
                    removed += len(ids)
                if len(ids) < wanted:
                    conn.execute("DELETE FROM vector_store_purges WHERE vector_store_id=?", (store_id,))
                if removed >= limit:
                    break
            return len(expired), removed

        return await self._write(op)

    # ---- files ----------------------------------------------------------------------------------

    async def attach_vector_files(self: _Connections, records: Sequence[VectorFileRecord],
                                  batch: FileBatchRecord | None = None) -> None:
        def op(conn: sqlite3.Connection) -> None:
            if batch is not None:
                conn.execute("INSERT INTO vector_file_batches (id, vector_store_id, owner, created_at) "
                             "VALUES (?,?,?,?)", (batch.id, batch.vector_store_id, batch.owner, batch.created_at))
            seq = conn.execute("SELECT coalesce(max(seq), 0) FROM vector_store_files").fetchone()[0]
            for r in records:
                seq += 1
                _drop_chunks(conn, "vector_store_id=? AND file_id=?", (r.vector_store_id, r.file_id))
                conn.execute(
                    f"INSERT OR REPLACE INTO vector_store_files ({_FILE}, seq) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                    (r.vector_store_id, r.file_id, r.owner, r.created_at, r.filename, r.status,
                     orjson.dumps(r.attributes), orjson.dumps(r.chunking), None, 0, r.batch_id, seq))
                _bump(conn, r.vector_store_id)

        await self._write(op)

    async def get_vector_file(self: _Connections, store_id: str, file_id: str, owner: str) -> VectorFileRecord | None:
        row = self._read().execute(
            f"SELECT {_FILE} FROM vector_store_files WHERE vector_store_id=? AND file_id=? AND owner=?",
            (store_id, file_id, owner)).fetchone()
        return _file(row) if row else None

    async def list_vector_files(self: _Connections, store_id: str, owner: str, *, status: str | None,
                                batch_id: str | None, after: str | None, before: str | None, limit: int,
                                order: str) -> tuple[list[VectorFileRecord], bool]:
        conn = self._read()
        where: list[str] = ["vector_store_id=?", "owner=?"]
        args: list[Any] = [store_id, owner]
        if status:
            where.append("status=?")
            args.append(status)
        if batch_id:
            where.append("batch_id=?")
            args.append(batch_id)
        asc = order == "asc"
        for cursor, forward in ((after, True), (before, False)):
            if cursor:
                row = conn.execute("SELECT seq FROM vector_store_files WHERE vector_store_id=? AND file_id=? "
                                   "AND owner=?", (store_id, cursor, owner)).fetchone()
                if row is None:
                    return [], False
                where.append(f"seq {'>' if asc == forward else '<'} ?")
                args.append(row[0])
        rows = conn.execute(f"SELECT {_FILE} FROM vector_store_files WHERE {' AND '.join(where)} "
                            f"ORDER BY seq {'ASC' if asc else 'DESC'} LIMIT ?", (*args, limit + 1)).fetchall()
        return [_file(r) for r in rows[:limit]], len(rows) > limit

    async def set_vector_file_attributes(self: _Connections, store_id: str, file_id: str, owner: str,
                                         attributes: dict[str, Any]) -> bool:
        return await self._write(lambda conn: conn.execute(
            "UPDATE vector_store_files SET attributes=? WHERE vector_store_id=? AND file_id=? AND owner=?",
            (orjson.dumps(attributes), store_id, file_id, owner)).rowcount == 1)

    async def delete_vector_file(self: _Connections, store_id: str, file_id: str, owner: str) -> bool:
        def op(conn: sqlite3.Connection) -> bool:
            if conn.execute("DELETE FROM vector_store_files WHERE vector_store_id=? AND file_id=? AND owner=?",
                            (store_id, file_id, owner)).rowcount != 1:
                return False
            _drop_chunks(conn, "vector_store_id=? AND file_id=?", (store_id, file_id))
            _bump(conn, store_id)
            return True

        return await self._write(op)

    # ---- ingestion ----------------------------------------------------------------------------

    async def claim_vector_files(self: _Connections, instance: str, now: int, lease_until: int, limit: int,
                                 take_all: bool = False) -> list[VectorFileRecord]:
        def op(conn: sqlite3.Connection) -> list[VectorFileRecord]:
            rows = conn.execute(
                f"UPDATE vector_store_files SET lease_owner=?, lease_until=? WHERE rowid IN ("
                f"SELECT rowid FROM vector_store_files WHERE status='in_progress' "
                f"AND (? OR lease_until IS NULL OR lease_until < ?) ORDER BY seq LIMIT ?) RETURNING {_FILE}",
                (instance, lease_until, take_all, now, limit)).fetchall()
            return [_file(r) for r in rows]

        return await self._write(op)

    async def renew_vector_file(self: _Connections, store_id: str, file_id: str, instance: str,
                                lease_until: int) -> bool:
        return await self._write(lambda conn: conn.execute(
            "UPDATE vector_store_files SET lease_until=? WHERE vector_store_id=? AND file_id=? AND lease_owner=? "
            "AND status='in_progress'", (lease_until, store_id, file_id, instance)).rowcount == 1)

    async def add_vector_chunks(self: _Connections, store_id: str, file_id: str, instance: str, start: int,
                                chunks: Sequence[tuple[str, bytes | None]]) -> bool:
        def op(conn: sqlite3.Connection) -> bool:
            if conn.execute("SELECT 1 FROM vector_store_files WHERE vector_store_id=? AND file_id=? "
                            "AND lease_owner=? AND status='in_progress'",
                            (store_id, file_id, instance)).fetchone() is None:
                return False
            if start == 0:
                _drop_chunks(conn, "vector_store_id=? AND file_id=?", (store_id, file_id))
            first = conn.execute("SELECT coalesce(max(id), 0) + 1 FROM vector_chunks").fetchone()[0]
            conn.executemany("INSERT INTO vector_chunks (id, vector_store_id, file_id, position, text, embedding) "
                             "VALUES (?,?,?,?,?,?)", [(first + n, store_id, file_id, start + n, text, vec)
                                                      for n, (text, vec) in enumerate(chunks)])
            conn.execute("INSERT INTO vector_chunks_fts(rowid, text) SELECT id, text FROM vector_chunks "
                         "WHERE id >= ?", (first,))
            return True

        return await self._write(op)

    async def finish_vector_file(self: _Connections, store_id: str, file_id: str, instance: str, *, status: str,
                                 last_error: dict | None, usage_bytes: int,
                                 chunks: Sequence[tuple[str, bytes | None]]) -> bool:
        def op(conn: sqlite3.Connection) -> bool:
            if conn.execute(
                    "UPDATE vector_store_files SET status=?, last_error=?, usage_bytes=?, lease_owner=NULL, "
                    "lease_until=NULL WHERE vector_store_id=? AND file_id=? AND lease_owner=? "
                    "AND status='in_progress'",
                    (status, orjson.dumps(last_error) if last_error else None, usage_bytes, store_id, file_id,
                     instance)).rowcount != 1:
                return False
            if status != "completed":  # what an earlier batch stored goes
                _drop_chunks(conn, "vector_store_id=? AND file_id=?", (store_id, file_id))
            first = conn.execute("SELECT coalesce(max(id), 0) + 1 FROM vector_chunks").fetchone()[0]
            conn.executemany("INSERT INTO vector_chunks (id, vector_store_id, file_id, position, text, embedding) "
                             "VALUES (?,?,?,?,?,?)",
                             [(first + n, store_id, file_id, n, text, vec) for n, (text, vec) in enumerate(chunks)])
            conn.execute("INSERT INTO vector_chunks_fts(rowid, text) SELECT id, text FROM vector_chunks "
                         "WHERE id >= ?", (first,))
            _bump(conn, store_id)
            return True

        return await self._write(op)

    async def vector_file_chunks(self: _Connections, store_id: str, file_id: str, owner: str) -> list[str] | None:
        conn = self._read()
        if conn.execute("SELECT 1 FROM vector_store_files WHERE vector_store_id=? AND file_id=? AND owner=?",
                        (store_id, file_id, owner)).fetchone() is None:
            return None
        rows = conn.execute("SELECT text FROM vector_chunks WHERE vector_store_id=? AND file_id=? ORDER BY position",
                            (store_id, file_id)).fetchall()
        return [r[0] for r in rows]

    # ---- search ---------------------------------------------------------------------------------

    async def searchable_files(self: _Connections, store_ids: Sequence[str], owner: str,
                               file_ids: Sequence[str] | None = None) -> list[VectorFileRecord]:
        only = "" if file_ids is None else f" AND file_id IN ({_marks(file_ids)})"
        rows = self._read().execute(
            f"SELECT {_FILE} FROM vector_store_files WHERE owner=? AND status='completed' "
            f"AND vector_store_id IN ({_marks(store_ids)}){only}", (owner, *store_ids, *(file_ids or ()))).fetchall()
        return [_file(r) for r in rows]

    async def text_search(self: _Connections, store_ids: Sequence[str], terms: Sequence[str],
                          file_ids: Sequence[str] | None, limit: int) -> list[int]:
        if not terms:
            return []
        match = " OR ".join('"' + t.replace('"', '""') + '"' for t in terms)
        where = f"c.vector_store_id IN ({_marks(store_ids)})"
        args: list[Any] = [match, *store_ids]
        if file_ids is not None:
            where += f" AND c.file_id IN ({_marks(file_ids)})"
            args.extend(file_ids)
        rows = self._read().execute(
            f"SELECT c.id FROM vector_chunks_fts JOIN vector_chunks c ON c.id = vector_chunks_fts.rowid "
            f"WHERE vector_chunks_fts MATCH ? AND {where} ORDER BY vector_chunks_fts.rank LIMIT ?",
            (*args, limit)).fetchall()
        return [r[0] for r in rows]

    async def vector_store_versions(self: _Connections, store_ids: Sequence[str]) -> dict[str, int]:
        rows = self._read().execute(f"SELECT id, version FROM vector_stores WHERE id IN ({_marks(store_ids)})",
                                    list(store_ids)).fetchall()
        return {r[0]: r[1] for r in rows}

    async def embeddings(self: _Connections, store_id: str) -> Embeddings:
        conn = self._read()
        row = conn.execute("SELECT version FROM vector_stores WHERE id=?", (store_id,)).fetchone()
        rows = conn.execute("SELECT id, file_id, embedding FROM vector_chunks WHERE vector_store_id=? "
                            "AND embedding IS NOT NULL ORDER BY id", (store_id,)).fetchall()
        return Embeddings(version=row[0] if row else -1, ids=[r[0] for r in rows], file_ids=[r[1] for r in rows],
                          vectors=[r[2] for r in rows])

    async def chunks(self: _Connections, chunk_ids: Sequence[int]) -> list[ChunkRow]:
        if not chunk_ids:
            return []
        rows = self._read().execute(f"SELECT id, vector_store_id, file_id, text FROM vector_chunks "
                                    f"WHERE id IN ({_marks(chunk_ids)})", list(chunk_ids)).fetchall()
        return [ChunkRow(*r) for r in rows]

    # ---- file batches ---------------------------------------------------------------------------

    async def get_file_batch(self: _Connections, store_id: str, batch_id: str, owner: str) -> FileBatchRecord | None:
        conn = self._read()
        row = conn.execute("SELECT id, vector_store_id, owner, created_at, cancelled FROM vector_file_batches "
                           "WHERE id=? AND vector_store_id=? AND owner=?", (batch_id, store_id, owner)).fetchone()
        if row is None:
            return None
        record = FileBatchRecord(id=row[0], vector_store_id=row[1], owner=row[2], created_at=row[3],
                                 cancelled=bool(row[4]), file_counts=empty_counts())
        for status, n in conn.execute("SELECT status, count(*) FROM vector_store_files WHERE batch_id=? "
                                      "GROUP BY status", (batch_id,)).fetchall():
            add_count(record.file_counts, status, n)
        return record

    async def cancel_file_batch(self: _Connections, store_id: str, batch_id: str, owner: str) -> bool:
        def op(conn: sqlite3.Connection) -> bool:
            if conn.execute("UPDATE vector_file_batches SET cancelled=1 WHERE id=? AND vector_store_id=? "
                            "AND owner=?", (batch_id, store_id, owner)).rowcount != 1:
                return False
            conn.execute("UPDATE vector_store_files SET status='cancelled', lease_owner=NULL, lease_until=NULL "
                         "WHERE batch_id=? AND status='in_progress'", (batch_id,))
            return True

        return await self._write(op)

