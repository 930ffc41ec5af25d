"""PostgreSQL: conversations and their items, mixed into PostgresStore (see the Store protocol).

As everywhere in the PostgreSQL store, each operation is one statement. A conversation held
by a response (`busy_response`) is taken and given back by conditional UPDATEs of its row,
which PostgreSQL re-checks against the row's latest version when two replicas race for it.
The statements at the end are the conversation parts of a response's own writes.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, Protocol

import asyncpg
import orjson

from ..checks import may_exist
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

APPENDED = ["completed", "incomplete"]  # the ends after which a response's items join its conversation
_COLUMNS = "id, owner, created_at, expires_at, metadata"
_FREE = "(busy_response IS NULL OR busy_until < $3)"  # $3: now


class _Statements(Protocol):
    async def _fetch(self, query: str, *args: Any) -> list[asyncpg.Record]: ...

    async def _fetchrow(self, query: str, *args: Any) -> asyncpg.Record | None: ...

    async def _fetchval(self, query: str, *args: Any) -> Any: ...

    async def _execute(self, query: str, *args: Any) -> str: ...


def _record(row: Sequence[Any]) -> ConversationRecord:
    return ConversationRecord(id=row[0], owner=row[1], created_at=row[2], expires_at=row[3],
                              metadata=orjson.loads(row[4]))


class PostgresConversations:
    """The conversation half of PostgresStore."""

    async def create_conversation(self: _Statements, record: ConversationRecord, items: Sequence[dict]) -> None:
        await self._execute(
            f"""
            WITH c AS (
                INSERT INTO conversations ({_COLUMNS}, next_position) VALUES ($1, $2, $3, $4, $5, $6) RETURNING id
            )
            INSERT INTO conversation_items (conversation_id, position, item_id, data)
            SELECT c.id, t.position, t.item_id, t.data
              FROM c, unnest($7::int[], $8::text[], $9::bytea[]) AS t(position, item_id, data)
            """, record.id, record.owner, record.created_at, record.expires_at, orjson.dumps(record.metadata),
            len(items), list(range(len(items))), [i["id"] for i in items], [orjson.dumps(i) for i in items])

    async def get_conversation(self: _Statements, conversation_id: str, owner: str) -> ConversationRecord | None:
        if not may_exist(conversation_id):
            return None
        row = await self._fetchrow(f"SELECT {_COLUMNS} FROM conversations WHERE id = $1 AND owner = $2 "
                                   "AND expires_at > $3", conversation_id, owner, int(time.time()))
        return _record(row) if row else None

    async def list_conversations(self: _Statements, owner: str | None, *, after: str | None,
                                 limit: int) -> tuple[list[ConversationRecord], bool]:
        if (owner is not None and not may_exist(owner)) or (after is not None and not may_exist(after)):
            return [], False
        where = ["expires_at > $1"]
        args: list[Any] = [int(time.time())]
        if owner is not None:
            args.append(owner)
            where.append(f"owner = ${len(args)}")
        if after is not None:
            args.append(after)
            n = len(args)
            scope = " AND owner = $2" if owner is not None else ""
            where.append(f"(created_at, id) < ((SELECT created_at FROM conversations WHERE id = ${n}{scope}), ${n})")
        args.append(limit + 1)
        rows = await self._fetch(f"SELECT {_COLUMNS} FROM conversations WHERE {' AND '.join(where)} "
                                 f"ORDER BY created_at DESC, id DESC LIMIT ${len(args)}", *args)
        return [_record(r) for r in rows[:limit]], len(rows) > limit

    async def update_conversation(self: _Statements, conversation_id: str, owner: str, metadata: dict[str, str],
                                  expires_at: int) -> ConversationRecord | None:
        if not may_exist(conversation_id):
            return None
        row = await self._fetchrow(
            f"UPDATE conversations SET metadata = $4, expires_at = GREATEST(expires_at, $5) "
            f"WHERE id = $1 AND owner = $2 AND expires_at > $3 RETURNING {_COLUMNS}",
            conversation_id, owner, int(time.time()), orjson.dumps(metadata), expires_at)
        return _record(row) if row else None

    async def delete_conversation(self: _Statements, conversation_id: str, owner: str) -> bool:
        if not may_exist(conversation_id):
            return False
        deleted = await self._fetchval(
            """
            WITH c AS (DELETE FROM conversations WHERE id = $1 AND owner = $2 AND expires_at > $3 RETURNING id),
                 i AS (DELETE FROM conversation_items WHERE conversation_id IN (SELECT id FROM c))
            SELECT count(*) FROM c
            """, conversation_id, owner, int(time.time()))
        return deleted == 1

    async def add_conversation_items(self: _Statements, conversation_id: str, owner: str, items: Sequence[dict],
                                     expires_at: int) -> bool:
        if not may_exist(conversation_id):
            return False
        ids = [i["id"] for i in items]
        now = int(time.time())
        try:
            added = await self._fetchval(
                f"""
                WITH c AS (
                    UPDATE conversations SET next_position = next_position + $4,
                           expires_at = GREATEST(expires_at, $5)
                     WHERE id = $1 AND owner = $2 AND expires_at > $3 AND {_FREE}
                    RETURNING next_position - $4 AS start
                ), i AS (
                    INSERT INTO conversation_items (conversation_id, position, item_id, data)
                    SELECT $1, c.start + t.n, t.item_id, t.data
                      FROM c, unnest($6::int[], $7::text[], $8::bytea[]) AS t(n, item_id, data)
                )
                SELECT count(*) FROM c
                """, conversation_id, owner, now, len(items), expires_at, list(range(len(items))), ids,
                [orjson.dumps(i) for i in items])
        except asyncpg.UniqueViolationError:
            taken = {r[0] for r in await self._fetch(
                "SELECT item_id FROM conversation_items WHERE conversation_id = $1 AND item_id = ANY($2::text[])",
                conversation_id, ids)}
            n = next((n for n, item_id in enumerate(ids) if item_id in taken), 0)
            raise duplicate_item(ids[n], f"items[{n}]") from None
        if added:
            return True
        return await _refused(self, conversation_id, owner, now)

    async def list_conversation_items(self: _Statements, conversation_id: str, owner: str, *, after: str | None,
                                      limit: int, order: str) -> ItemPage | None:
        if not may_exist(conversation_id):
            return None
        lost_cursor = after is not None and not may_exist(after)  # names no item: an empty page
        asc = order == "asc"
        head = await self._fetchrow(
            "SELECT EXISTS (SELECT 1 FROM conversations WHERE id = $1 AND owner = $2 AND expires_at > $3), "
            "(SELECT position FROM conversation_items WHERE conversation_id = $1 AND item_id = $4)",
            conversation_id, owner, int(time.time()), None if lost_cursor else after)
        if head is None or not head[0]:
            return None
        if lost_cursor or (after is not None and head[1] is None):
            return ItemPage([], False)
        where = "conversation_id = $1"
        args: list[Any] = [conversation_id]
        if head[1] is not None:
            args.append(head[1])
            where += f" AND position {'>' if asc else '<'} $2"
        args.append(limit + 1)
        rows = await self._fetch(f"SELECT data FROM conversation_items WHERE {where} "
                                 f"ORDER BY position {'ASC' if asc else 'DESC'} LIMIT ${len(args)}", *args)
        return ItemPage([orjson.loads(r[0]) for r in rows[:limit]], len(rows) > limit)

    async def get_conversation_item(self: _Statements, conversation_id: str, owner: str,
                                    item_id: str) -> dict | None:
        if not (may_exist(conversation_id) and may_exist(item_id)):
            return None
        data = await self._fetchval(
            "SELECT i.data FROM conversation_items i JOIN conversations c ON c.id = i.conversation_id "
            "WHERE c.id = $1 AND c.owner = $2 AND c.expires_at > $3 AND i.item_id = $4",
            conversation_id, owner, int(time.time()), item_id)
        return orjson.loads(data) if data is not None else None

    async def delete_conversation_item(self: _Statements, conversation_id: str, owner: str, item_id: str) -> bool:
        if not (may_exist(conversation_id) and may_exist(item_id)):
            return False
        now = int(time.time())
        deleted = await self._fetchval(
            f"""
            WITH c AS (
                UPDATE conversations SET revision = revision + 1
                 WHERE id = $1 AND owner = $2 AND expires_at > $3 AND {_FREE}
                   AND EXISTS (SELECT 1 FROM conversation_items WHERE conversation_id = $1 AND item_id = $4)
                RETURNING id
            ), i AS (
                DELETE FROM conversation_items WHERE conversation_id IN (SELECT id FROM c) AND item_id = $4
                RETURNING 1
            )
            SELECT count(*) FROM i
            """, conversation_id, owner, now, item_id)
        if deleted:
            return True
        row = await self._fetchrow("SELECT busy_response, busy_until FROM conversations WHERE id = $1 AND owner = $2 "
                                   "AND expires_at > $3", conversation_id, owner, now)
        if row is not None and row[0] is not None and row[1] >= now:
            raise conversation_locked(conversation_id, param=None)
        return False

    async def load_conversation(self: _Statements, conversation_id: str, owner: str,
                                known: tuple[int, int] | None = None) -> ConversationItems | None:
        if not may_exist(conversation_id):
            return None
        revision, since = known if known is not None else (-1, 0)
        row = await self._fetchrow(
            """
            SELECT c.revision, c.next_position,
                   (SELECT array_agg(i.data ORDER BY i.position) FROM conversation_items i
                     WHERE i.conversation_id = c.id
                       AND i.position >= CASE WHEN c.revision = $4 THEN $5 ELSE 0 END)
              FROM conversations c WHERE c.id = $1 AND c.owner = $2 AND c.expires_at > $3
            """, conversation_id, owner, int(time.time()), revision, since)
        if row is None:
            return None
        return ConversationItems(row[0], row[1], [orjson.loads(d) for d in row[2] or ()], row[0] == revision)

    async def begin_conversation_response(self: _Statements, record: ResponseRecord, input_items: Sequence[dict],
                                          state: tuple[int, int]) -> None:
        cid = record.conversation_id
        assert cid is not None
        now = int(time.time())
        dumps = rows_json(len(input_items) + 1)
        run_request = dumps(record.run_request) if record.run_request is not None else None
        held = await self._fetchval(
            """
            WITH c AS (
                UPDATE conversations SET busy_response = $1, busy_until = $11
                 WHERE id = $12 AND owner = $2 AND expires_at > $13 AND revision = $14 AND next_position = $15
                   AND (busy_response IS NULL OR busy_response = $1 OR busy_until < $13)
                RETURNING id
            ), r AS (
                INSERT INTO responses (id, owner, created_at, expires_at, status, background,
                                       previous_response_id, body, run_request, lease_owner, lease_until,
                                       conversation_id)
                SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, c.id FROM c
                ON CONFLICT (id) DO NOTHING
                RETURNING id
            ), i AS (
                INSERT INTO items (response_id, kind, position, item_id, owner, data)
                SELECT r.id, 0, t.position, t.item_id, $2, t.data
                  FROM r, unnest($16::int[], $17::text[], $18::bytea[]) AS t(position, item_id, data)
            )
            SELECT count(*) FROM c
            """, record.id, record.owner, record.created_at, record.expires_at, record.status, record.background,
            record.previous_response_id, dumps(record.body), run_request, record.lease_owner,
            record.lease_until, cid, now, state[0], state[1], list(range(len(input_items))),
            [i.get("id", "") for i in input_items], [dumps(i) for i in input_items])
        if held:
            return
        exists = await self._fetchval("SELECT EXISTS (SELECT 1 FROM conversations WHERE id = $1 AND owner = $2 "
                                      "AND expires_at > $3)", cid, record.owner, now)
        if not exists:
            raise not_found("Conversation", cid, param="conversation")
        raise conversation_locked(cid)


async def _refused(store: _Statements, conversation_id: str, owner: str, now: int) -> bool:
    """Why a write to a conversation changed nothing: False if it is not the caller's; raises
    `conversation_locked` if it is held."""
    held = await store._fetchval("SELECT busy_response IS NOT NULL AND busy_until >= $3 FROM conversations "
                                 "WHERE id = $1 AND owner = $2 AND expires_at > $3", conversation_id, owner, now)
    if held is None:
        return False
    if held:
        raise conversation_locked(conversation_id, param=None)
    return False


# ---- inside a response's own writes ---------------------------------------------------------------

# A conversation response's terminal write, whole: the response and its output as save_response
# writes them with create=False (nothing if it was deleted meanwhile), then, if it still holds
# its conversation, the items appended (stored input, then this output) when it ended well, and
# the conversation released. ON CONFLICT DO NOTHING: ids are checked when the response starts and
# nothing else changes the conversation while it runs; should one still clash, the response is
# stored regardless.
END_TURN = """
WITH r AS (
    UPDATE responses SET status = $2, body = $3, run_request = $4, lease_owner = $5, lease_until = $6,
           expires_at = $12
     WHERE id = $1 RETURNING owner
), d AS (
    DELETE FROM items WHERE response_id = $1 AND kind = 1 AND position >= $7 AND EXISTS (SELECT 1 FROM r)
), o AS (
    INSERT INTO items (response_id, kind, position, item_id, owner, data)
    SELECT $1, 1, t.position, t.item_id, r.owner, t.data
      FROM r, unnest($8::int[], $9::text[], $10::bytea[]) AS t(position, item_id, data)
    ON CONFLICT (response_id, kind, position)
    DO UPDATE SET item_id = excluded.item_id, owner = excluded.owner, data = excluded.data
), new AS (
    SELECT row_number() OVER (ORDER BY x.kind, x.position) - 1 AS n, x.item_id, x.data FROM (
        SELECT 0 AS kind, position, item_id, data FROM items WHERE response_id = $1 AND kind = 0
        UNION ALL
        SELECT 1, t.position, t.item_id, t.data FROM unnest($8::int[], $9::text[], $10::bytea[])
                                                   AS t(position, item_id, data)
    ) x WHERE $2 = ANY($13::text[])
), c AS (
    UPDATE conversations SET busy_response = NULL, busy_until = NULL,
           next_position = next_position + (SELECT count(*) FROM new),
           expires_at = GREATEST(expires_at, $12)
     WHERE id = $11 AND busy_response = $1 AND EXISTS (SELECT 1 FROM r)
    RETURNING next_position - (SELECT count(*) FROM new) AS start
)
INSERT INTO conversation_items (conversation_id, position, item_id, data)
SELECT $11, c.start + new.n, new.item_id, new.data FROM c, new
ON CONFLICT DO NOTHING
"""


def end_turn_args(record: ResponseRecord, output: Sequence[dict]) -> tuple:
    dumps = rows_json(len(output) + 1)
    run_request = dumps(record.run_request) if record.run_request is not None else None
    return (record.id, record.status, dumps(record.body), run_request, record.lease_owner,
            record.lease_until, len(output), list(range(len(output))), [i.get("id", "") for i in output],
            [dumps(i) for i in output], record.conversation_id, record.expires_at, APPENDED)


# Deleting a response releases the conversation it held (r: the deleted rows, with conversation_id).
RELEASE_DELETED = """cv AS (UPDATE conversations SET busy_response = NULL, busy_until = NULL
            WHERE id IN (SELECT conversation_id FROM r) AND busy_response IN (SELECT id FROM r))"""

# Renewing a process's leases renews the conversations its responses hold (r: the renewed rows).
RENEW_HELD = """cv AS (UPDATE conversations SET busy_until = $2
            WHERE id IN (SELECT conversation_id FROM r) AND busy_response IN (SELECT id FROM r))"""

# Expired conversations go with their items ($1: now).
PURGE = """cv AS (DELETE FROM conversations WHERE id IN
             (SELECT id FROM conversations WHERE expires_at <= $1 LIMIT 5000) RETURNING id),
    ci AS (DELETE FROM conversation_items WHERE conversation_id IN (SELECT id FROM cv))"""
