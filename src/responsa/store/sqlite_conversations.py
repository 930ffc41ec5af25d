"""SQLite: conversations and their items, mixed into SQLiteStore (see the Store protocol).

Writes run through the store's group commit like every other write; the functions at the end
are the parts of a response's own writes that concern its conversation, run inside them.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

import orjson

from ..errors import not_found
from . import (
    ConversationItems,
    ConversationRecord,
    ItemPage,
    ResponseRecord,
    conversation_locked,
    duplicate_item,
    rows_json,
)

T = TypeVar("T")
APPENDED = ("completed", "incomplete")  # the ends after which a response's items join its conversation
_COLUMNS = "id, owner, created_at, expires_at, metadata"


class _Connections(Protocol):
    def _read(self) -> sqlite3.Connection: ...

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T: ...


def _record(row: Sequence[Any]) -> ConversationRecord:
    return ConversationRecord(id=row[0], owner=row[1], created_at=row[2], expires_at=row[3],
                              metadata=orjson.loads(row[4]))


def _held(busy_response: str | None, busy_until: int | None, now: int) -> bool:
    return busy_response is not None and (busy_until or 0) >= now


class SQLiteConversations:
    """The conversation half of SQLiteStore."""

    async def create_conversation(self: _Connections, record: ConversationRecord, items: Sequence[dict]) -> None:
        dumps = rows_json(len(items))
        rows = [(record.id, n, item["id"], dumps(item)) for n, item in enumerate(items)]

        def op(conn: sqlite3.Connection) -> None:
            conn.execute(f"INSERT INTO conversations ({_COLUMNS}, next_position) VALUES (?,?,?,?,?,?)",
                         (record.id, record.owner, record.created_at, record.expires_at,
                          orjson.dumps(record.metadata), len(rows)))
            conn.executemany("INSERT INTO conversation_items VALUES (?,?,?,?)", rows)

        await self._write(op)

    async def get_conversation(self: _Connections, conversation_id: str, owner: str) -> ConversationRecord | None:
        row = self._read().execute(f"SELECT {_COLUMNS} FROM conversations WHERE id=? AND owner=? AND expires_at>?",
                                   (conversation_id, owner, int(time.time()))).fetchone()
        return _record(row) if row else None

    async def list_conversations(self: _Connections, owner: str | None, *, after: str | None,
                                 limit: int) -> tuple[list[ConversationRecord], bool]:
        where = ["expires_at>?"]
        args: list[Any] = [int(time.time())]
        if owner is not None:
            where.append("owner=?")
            args.append(owner)
        if after is not None:
            scope = " AND owner=?" if owner is not None else ""
            where.append(f"(created_at, id) < ((SELECT created_at FROM conversations WHERE id=?{scope}), ?)")
            args += [after, owner, after] if owner is not None else [after, after]
        rows = self._read().execute(
            f"SELECT {_COLUMNS} FROM conversations WHERE {' AND '.join(where)} "
            "ORDER BY created_at DESC, id DESC LIMIT ?", (*args, limit + 1)).fetchall()
        return [_record(r) for r in rows[:limit]], len(rows) > limit

    async def update_conversation(self: _Connections, conversation_id: str, owner: str, metadata: dict[str, str],
                                  expires_at: int) -> ConversationRecord | None:
        def op(conn: sqlite3.Connection) -> ConversationRecord | None:
            row = conn.execute(
                f"UPDATE conversations SET metadata=?, expires_at=max(expires_at, ?) "
                f"WHERE id=? AND owner=? AND expires_at>? RETURNING {_COLUMNS}",
                (orjson.dumps(metadata), expires_at, conversation_id, owner, int(time.time()))).fetchone()
            return _record(row) if row else None

        return await self._write(op)

    async def delete_conversation(self: _Connections, conversation_id: str, owner: str) -> bool:
        def op(conn: sqlite3.Connection) -> bool:
            cur = conn.execute("DELETE FROM conversations WHERE id=? AND owner=? AND expires_at>?",
                               (conversation_id, owner, int(time.time())))
            if cur.rowcount == 0:
                return False
            conn.execute("DELETE FROM conversation_items WHERE conversation_id=?", (conversation_id,))
            return True

        return await self._write(op)

    async def add_conversation_items(self: _Connections, conversation_id: str, owner: str, items: Sequence[dict],
                                     expires_at: int) -> bool:
        ids = [item["id"] for item in items]
        data = [orjson.dumps(item) for item in items]  # few rows (20 per call): no copy (rows_json)

        def op(conn: sqlite3.Connection) -> bool:
            now = int(time.time())
            row = conn.execute("SELECT next_position, busy_response, busy_until FROM conversations "
                               "WHERE id=? AND owner=? AND expires_at>?", (conversation_id, owner, now)).fetchone()
            if row is None:
                return False
            if _held(row[1], row[2], now):
                raise conversation_locked(conversation_id, param=None)
            if ids:
                marks = ",".join("?" * len(ids))
                taken = {r[0] for r in conn.execute(
                    f"SELECT item_id FROM conversation_items WHERE conversation_id=? AND item_id IN ({marks})",
                    (conversation_id, *ids))}
                for n, item_id in enumerate(ids):
                    if item_id in taken:
                        raise duplicate_item(item_id, f"items[{n}]")
            start = row[0]
            conn.executemany("INSERT INTO conversation_items VALUES (?,?,?,?)",
                             [(conversation_id, start + n, ids[n], data[n]) for n in range(len(ids))])
            conn.execute("UPDATE conversations SET next_position=?, expires_at=max(expires_at, ?) WHERE id=?",
                         (start + len(ids), expires_at, conversation_id))
            return True

        return await self._write(op)

    async def list_conversation_items(self: _Connections, conversation_id: str, owner: str, *, after: str | None,
                                      limit: int, order: str) -> ItemPage | None:
        conn = self._read()
        if conn.execute("SELECT 1 FROM conversations WHERE id=? AND owner=? AND expires_at>?",
                        (conversation_id, owner, int(time.time()))).fetchone() is None:
            return None
        where, args = "conversation_id=?", [conversation_id]
        if after is not None:
            pos = conn.execute("SELECT position FROM conversation_items WHERE conversation_id=? AND item_id=?",
                               (conversation_id, after)).fetchone()
            if pos is None:
                return ItemPage([], False)
            where += " AND position>?" if order == "asc" else " AND position<?"
            args.append(pos[0])
        direction = "ASC" if order == "asc" else "DESC"
        rows = conn.execute(f"SELECT data FROM conversation_items WHERE {where} ORDER BY position {direction} "
                            "LIMIT ?", (*args, limit + 1)).fetchall()
        return ItemPage([orjson.loads(r[0]) for r in rows[:limit]], len(rows) > limit)

    async def get_conversation_item(self: _Connections, conversation_id: str, owner: str,
                                    item_id: str) -> dict | None:
        row = self._read().execute(
            "SELECT i.data FROM conversation_items i JOIN conversations c ON c.id = i.conversation_id "
            "WHERE c.id=? AND c.owner=? AND c.expires_at>? AND i.item_id=?",
            (conversation_id, owner, int(time.time()), item_id)).fetchone()
        return orjson.loads(row[0]) if row else None

    async def delete_conversation_item(self: _Connections, conversation_id: str, owner: str, item_id: str) -> bool:
        def op(conn: sqlite3.Connection) -> bool:
            now = int(time.time())
            row = conn.execute("SELECT busy_response, busy_until FROM conversations "
                               "WHERE id=? AND owner=? AND expires_at>?", (conversation_id, owner, now)).fetchone()
            if row is None:
                return False
            if _held(row[0], row[1], now):
                raise conversation_locked(conversation_id, param=None)
            cur = conn.execute("DELETE FROM conversation_items WHERE conversation_id=? AND item_id=?",
                               (conversation_id, item_id))
            if cur.rowcount == 0:
                return False
            conn.execute("UPDATE conversations SET revision=revision+1 WHERE id=?", (conversation_id,))
            return True

        return await self._write(op)

    async def load_conversation(self: _Connections, conversation_id: str, owner: str,
                                known: tuple[int, int] | None = None) -> ConversationItems | None:
        revision, since = known if known is not None else (-1, 0)
        rows = self._read().execute(
            "SELECT c.revision, c.next_position, i.data FROM conversations c LEFT JOIN conversation_items i "
            "ON i.conversation_id = c.id AND i.position >= (CASE WHEN c.revision = ? THEN ? ELSE 0 END) "
            "WHERE c.id=? AND c.owner=? AND c.expires_at>? ORDER BY i.position",
            (revision, since, conversation_id, owner, int(time.time()))).fetchall()
        if not rows:
            return None
        items = [orjson.loads(r[2]) for r in rows if r[2] is not None]
        return ConversationItems(rows[0][0], rows[0][1], items, rows[0][0] == revision)

    async def begin_conversation_response(self: _Connections, record: ResponseRecord, input_items: Sequence[dict],
                                          state: tuple[int, int]) -> None:
        cid, rid = record.conversation_id, record.id
        assert cid is not None and record.lease_until is not None
        dumps = rows_json(len(input_items) + 1)
        body = dumps(record.body)
        run_request = dumps(record.run_request) if record.run_request is not None else None
        rows = [(rid, 0, n, item.get("id", ""), record.owner, dumps(item)) for n, item in enumerate(input_items)]

        def op(conn: sqlite3.Connection) -> None:
            now = int(time.time())
            cur = conn.execute(
                "UPDATE conversations SET busy_response=?, busy_until=? WHERE id=? AND owner=? AND expires_at>? "
                "AND revision=? AND next_position=? AND (busy_response IS NULL OR busy_response=? OR busy_until<?)",
                (rid, record.lease_until, cid, record.owner, now, state[0], state[1], rid, now))
            if cur.rowcount == 0:
                if conn.execute("SELECT 1 FROM conversations WHERE id=? AND owner=? AND expires_at>?",
                                (cid, record.owner, now)).fetchone() is None:
                    raise not_found("Conversation", cid, param="conversation")
                raise conversation_locked(cid)
            cur = conn.execute(
                "INSERT OR IGNORE INTO responses (id, owner, created_at, expires_at, status, background, "
                "previous_response_id, body, run_request, lease_owner, lease_until, conversation_id) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (rid, record.owner, record.created_at, record.expires_at, record.status, int(record.background),
                 record.previous_response_id, body, run_request, record.lease_owner, record.lease_until, cid))
            if cur.rowcount:
                conn.executemany("INSERT OR REPLACE INTO items VALUES (?,?,?,?,?,?)", rows)

        await self._write(op)


# ---- inside a response's own writes --------------------------------------------------------------

def end_turn(conn: sqlite3.Connection, record: ResponseRecord) -> None:
    """A conversation response's terminal write, after its output is written: append its items
    (input then output) if it ended well, and release the conversation, if it still holds it."""
    cid, rid = record.conversation_id, record.id
    row = conn.execute("SELECT next_position FROM conversations WHERE id=? AND busy_response=?",
                       (cid, rid)).fetchone()
    if row is None:
        return  # the conversation was deleted, or the response lost it (its lease lapsed)
    position = row[0]
    if record.status in APPENDED:
        items = conn.execute("SELECT item_id, data FROM items WHERE response_id=? ORDER BY kind, position",
                             (rid,)).fetchall()
        # OR IGNORE: ids are checked when the response starts, and nothing else changes the
        # conversation while it runs; should one still clash, the response is stored regardless.
        conn.executemany("INSERT OR IGNORE INTO conversation_items VALUES (?,?,?,?)",
                         [(cid, position + n, item_id, data) for n, (item_id, data) in enumerate(items)])
        position += len(items)
    conn.execute("UPDATE conversations SET next_position=?, busy_response=NULL, busy_until=NULL, "
                 "expires_at=max(expires_at, ?) WHERE id=?", (position, record.expires_at, cid))


def release(conn: sqlite3.Connection, response_id: str) -> None:
    """A deleted response no longer holds its conversation."""
    conn.execute("UPDATE conversations SET busy_response=NULL, busy_until=NULL WHERE busy_response=?",
                 (response_id,))


def renew(conn: sqlite3.Connection, instance: str, lease_until: int) -> None:
    """The conversations held by this process's running responses stay held as long as they."""
    conn.execute("UPDATE conversations SET busy_until=? WHERE busy_response IN (SELECT id FROM responses "
                 "WHERE lease_owner=? AND status IN ('queued','in_progress'))", (lease_until, instance))


def purge(conn: sqlite3.Connection, now: int, limit: int) -> int:
    ids = [r[0] for r in conn.execute("SELECT id FROM conversations WHERE expires_at<=? LIMIT ?", (now, limit))]
    for cid in ids:
        conn.execute("DELETE FROM conversation_items WHERE conversation_id=?", (cid,))
        conn.execute("DELETE FROM conversations WHERE id=?", (cid,))
    return len(ids)
