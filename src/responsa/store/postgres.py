"""PostgreSQL store: one database shared by any number of replicas.

Every operation is one SQL statement on a pooled connection (one round trip; data-modifying
CTEs where several tables change), so no transaction is ever left open across an await.
Live notifications go through LISTEN/NOTIFY on one dedicated connection that reconnects
after an outage; callers of `notify` in this process are told at once, without waiting for
the database to echo. Losing the database turns every call into a 503 (ServiceUnavailable)
until it answers again: the pool reconnects on the next use.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import asyncpg
import orjson

from ..checks import may_exist
from ..errors import ServiceUnavailable
from . import (
    ChainLink,
    FileRecord,
    ItemPage,
    KeyRecord,
    ListedResponse,
    ResponsePage,
    ResponseQuery,
    ResponseRecord,
    RunClaim,
    row_json,
    rows_json,
)
from . import postgres_conversations as conversations
from .listing import listing_sql
from .pgbatch import GroupWriter
from .pgchains import LINKS_LEFT, ONE_LINK, ChainCache
from .pgpool import CONNECT_TIMEOUT, Pool, is_outage, keeps_connection, unavailable, unstorable
from .postgres_conversations import PostgresConversations
from .postgres_quotas import FIND_KEY, KEY_COLUMNS, PostgresQuotas, key_record, key_values
from .postgres_vectors import PostgresVectors
from .schema import LATEST, POSTGRES
from .sqlite import TERMINAL, _chain_from_rows

log = logging.getLogger("responsa.store")

CHANNEL = "responsa"
# pg_advisory_xact_lock key serialising migrations of replicas starting at once ("responsa").
MIGRATION_LOCK = 0x726573706F6E7361
COMMAND_TIMEOUT = 30.0
LISTEN_CHECK_EVERY = 10.0
_ACTIVE = "status IN ('queued','in_progress')"


async def migrate(conn: asyncpg.Connection) -> int:
    """Apply pending migrations in one transaction, serialised between replicas; returns the version."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
        await conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        current = await conn.fetchval("SELECT coalesce(max(version), 0) FROM schema_version")
        if current > LATEST:
            raise RuntimeError(f"database schema version {current} is newer than this Responsa ({LATEST})")
        for version in range(current + 1, LATEST + 1):
            await conn.execute(POSTGRES[version - 1])
            await conn.execute("INSERT INTO schema_version (version) VALUES ($1)", version)
    return LATEST


# A response as it is first stored, or stored again whole (save_response): its row, and its
# items replaced from the given positions on.
SAVE_RESPONSE = """
    WITH r AS (
        INSERT INTO responses (id, owner, created_at, expires_at, status, background,
                               previous_response_id, body, run_request, lease_owner, lease_until,
                               ephemeral)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $17)
        ON CONFLICT (id) DO UPDATE SET status = excluded.status, body = excluded.body,
            run_request = excluded.run_request, lease_owner = excluded.lease_owner,
            lease_until = excluded.lease_until, expires_at = excluded.expires_at
    ), d AS (
        DELETE FROM items WHERE response_id = $1 AND kind = 1 AND position >= $12
    )
    INSERT INTO items (response_id, kind, position, item_id, owner, data)
    SELECT $1, t.kind, t.position, t.item_id, $2, t.data
      FROM unnest($13::smallint[], $14::int[], $15::text[], $16::bytea[])
           AS t(kind, position, item_id, data)
    ON CONFLICT (response_id, kind, position)
    DO UPDATE SET item_id = excluded.item_id, owner = excluded.owner, data = excluded.data
    """


class PostgresStore(PostgresVectors, PostgresConversations, PostgresQuotas):
    """The store shared by replicas (`--database-url postgresql://...`)."""

    def __init__(self, url: str, pool_size: int = 10, *,
                 query_logger: Callable[[str], None] | None = None) -> None:
        self.url = url
        self.pool_size = pool_size
        self._pool: Pool | None = None
        self._listeners: list[Callable[[str, str], None]] = []
        self._token = uuid.uuid4().hex[:12]  # tells this process's own notifications apart
        self._listen_task: asyncio.Task | None = None
        self._listening = asyncio.Event()
        self._query_logger = query_logger  # tests count round trips with it
        self._chains = ChainCache()
        self._saves = GroupWriter(lambda args: self._call("execute", SAVE_RESPONSE, args),
                                  lambda rows: self._call("executemany", SAVE_RESPONSE, (rows,)))

    # ---- lifecycle -------------------------------------------------------------------------

    async def open(self) -> None:
        try:
            conn = await asyncpg.connect(self.url, timeout=CONNECT_TIMEOUT)
        except Exception as e:
            where = self.url.rsplit("@", 1)[-1]  # never the password
            raise RuntimeError(f"cannot connect to PostgreSQL at {where}: {type(e).__name__}: {e}") from e
        try:
            await migrate(conn)
        finally:
            await conn.close()
        self._pool = Pool(self._new_connection, self.pool_size)
        self._listening = asyncio.Event()
        self._listen_task = asyncio.get_running_loop().create_task(self._listen_forever())
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(CONNECT_TIMEOUT):
                await self._listening.wait()

    async def _new_connection(self) -> asyncpg.Connection:
        conn = await asyncpg.connect(self.url, timeout=CONNECT_TIMEOUT, command_timeout=COMMAND_TIMEOUT,
                                     server_settings={"application_name": "responsa"})
        if self._query_logger is not None:
            logger = self._query_logger
            conn.add_query_logger(lambda record: logger(record.query))
        return conn

    async def close(self) -> None:
        await self._saves.close()
        if self._listen_task is not None:
            self._listen_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listen_task
            self._listen_task = None
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()

    async def check_writable(self) -> None:
        return None  # every write is committed before it is acknowledged: an outage is each request's 503

    async def ping(self) -> bool:
        try:
            async with asyncio.timeout(3):
                async with self._conn() as conn:
                    return await conn.fetchval("SELECT 1") == 1
        except (ServiceUnavailable, TimeoutError):
            return False

    @contextlib.asynccontextmanager
    async def _conn(self) -> AsyncIterator[asyncpg.Connection]:
        """A connection for several statements; database failures become 503s."""
        pool = self._pool
        if pool is None:
            raise ServiceUnavailable("The store is not open.")
        conn = await pool.acquire()
        try:
            yield conn
        except BaseException as e:
            pool.release(conn, broken=not keeps_connection(e))
            if isinstance(e, Exception) and is_outage(e):
                raise unavailable(e) from e
            client_error = unstorable(e)
            if client_error is not None:
                raise client_error from e
            raise
        pool.release(conn)

    async def _call(self, method: str, query: str, args: tuple) -> Any:
        """One statement on a pooled connection (the common path, kept free of extra awaits)."""
        pool = self._pool
        if pool is None:
            raise ServiceUnavailable("The store is not open.")
        conn = await pool.acquire()
        try:
            result = await getattr(conn, method)(query, *args)
        except BaseException as e:
            pool.release(conn, broken=not keeps_connection(e))
            if isinstance(e, Exception) and is_outage(e):
                raise unavailable(e) from e
            client_error = unstorable(e)
            if client_error is not None:
                raise client_error from e
            raise
        pool.release(conn)
        return result

    async def _fetch(self, query: str, *args: Any) -> list[asyncpg.Record]:
        return await self._call("fetch", query, args)

    async def _fetchrow(self, query: str, *args: Any) -> asyncpg.Record | None:
        return await self._call("fetchrow", query, args)

    async def _fetchval(self, query: str, *args: Any) -> Any:
        return await self._call("fetchval", query, args)

    async def _execute(self, query: str, *args: Any) -> str:
        return await self._call("execute", query, args)

    # ---- notifications ---------------------------------------------------------------------------

    async def _listen_forever(self) -> None:
        delay = 0.2
        while True:
            conn: asyncpg.Connection | None = None
            try:
                conn = await asyncpg.connect(self.url, timeout=CONNECT_TIMEOUT,
                                             server_settings={"application_name": "responsa-listen"})
                lost = asyncio.Event()
                conn.add_termination_listener(lambda _c, lost=lost: lost.set())
                await conn.add_listener(CHANNEL, self._on_pg_notify)
                self._listening.set()
                delay = 0.2
                while not lost.is_set():
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(LISTEN_CHECK_EVERY):
                            await lost.wait()
                    if not lost.is_set():  # a silent network partition shows only when asked
                        await conn.fetchval("SELECT 1", timeout=CONNECT_TIMEOUT)
                log.warning("lost the database notification connection; reconnecting")
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.warning("database notification connection failed (%s: %s); retrying in %.1fs",
                            type(e).__name__, e, delay)
            finally:
                self._listening.clear()
                if conn is not None and not conn.is_closed():
                    conn.terminate()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    def _on_pg_notify(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        token, _, rest = payload.partition(":")
        if token == self._token:
            return  # already delivered in process
        channel, _, response_id = rest.partition(":")
        self._deliver(channel, response_id)

    def _deliver(self, channel: str, response_id: str) -> None:
        for callback in self._listeners:
            try:
                callback(channel, response_id)
            except Exception:
                log.exception("notification callback failed")

    async def notify(self, channel: str, response_id: str) -> None:
        self._deliver(channel, response_id)
        await self._execute("SELECT pg_notify($1, $2)", CHANNEL, f"{self._token}:{channel}:{response_id}")

    def on_notify(self, callback: Callable[[str, str], None]) -> None:
        self._listeners.append(callback)

    # ---- responses -----------------------------------------------------------------------------

    async def save_response(self, record: ResponseRecord, output: Sequence[dict],
                            input_items: Sequence[dict] | None = None, *, wait: bool = True,
                            create: bool = True) -> None:
        # Always waits: another replica may serve the client's next read.
        if record.conversation_id is not None and record.status in TERMINAL:
            await self._execute(conversations.END_TURN, *conversations.end_turn_args(record, output))
            return
        kinds: list[int] = []
        positions: list[int] = []
        item_ids: list[str] = []
        data: list[bytes] = []
        dump = rows_json(len(output) + len(input_items or ()))
        for kind, items in ((0, input_items or ()), (1, output)):
            for i, item in enumerate(items):
                kinds.append(kind)
                positions.append(i)
                item_ids.append(item.get("id", ""))
                data.append(dump(item))
        run_request = row_json(record.run_request) if record.run_request is not None else None
        self._chains.saved(record.id, record.previous_response_id)
        if not create:
            # Deleted meanwhile: a late write must not bring it back (nothing is written).
            await self._execute(
                """
                WITH r AS (
                    UPDATE responses SET status = $2, body = $3, run_request = $4, lease_owner = $5,
                        lease_until = $6, expires_at = $12 WHERE id = $1 RETURNING owner
                ), d AS (
                    DELETE FROM items WHERE response_id = $1 AND kind = 1 AND position >= $7
                      AND EXISTS (SELECT 1 FROM r)
                )
                INSERT INTO items (response_id, kind, position, item_id, owner, data)
                SELECT $1, t.kind, t.position, t.item_id, r.owner, t.data
                  FROM r, unnest($8::smallint[], $9::int[], $10::text[], $11::bytea[])
                       AS t(kind, position, item_id, data)
                ON CONFLICT (response_id, kind, position)
                DO UPDATE SET item_id = excluded.item_id, owner = excluded.owner, data = excluded.data
                """,
                record.id, record.status, row_json(record.body), run_request, record.lease_owner,
                record.lease_until, len(output), kinds, positions, item_ids, data, record.expires_at)
            return
        # Group commit (pgbatch.py): with other responses ending meanwhile, one round trip for all.
        await self._saves.write(record.id, (
            record.id, record.owner, record.created_at, record.expires_at, record.status, record.background,
            record.previous_response_id, row_json(record.body), run_request, record.lease_owner,
            record.lease_until, len(output), kinds, positions, item_ids, data, record.ephemeral))

    # PostgreSQL text holds no U+0000 and refuses to compare with it: an id holding one names no
    # row (as in SQLite), so such lookups miss without a query.

    async def get_response(self, response_id: str, owner: str) -> dict | None:
        if not may_exist(response_id):
            return None
        row = await self._fetchrow(
            "SELECT r.body, (SELECT array_agg(i.data ORDER BY i.position) FROM items i "
            "                 WHERE i.response_id = r.id AND i.kind = 1) "
            "FROM responses r WHERE r.id = $1 AND r.owner = $2 AND r.expires_at > $3",
            response_id, owner, int(time.time()))
        if row is None:
            return None
        response = orjson.loads(row[0])
        response["output"] = [orjson.loads(d) for d in row[1] or ()]
        return response

    async def get_record(self, response_id: str, owner: str) -> ResponseRecord | None:
        if not may_exist(response_id):
            return None
        row = await self._fetchrow(
            "SELECT id, owner, created_at, expires_at, status, body, background, previous_response_id, "
            "run_request, lease_owner, lease_until, ephemeral, conversation_id FROM responses "
            "WHERE id = $1 AND owner = $2 AND expires_at > $3", response_id, owner, int(time.time()))
        if row is None:
            return None
        return ResponseRecord(id=row[0], owner=row[1], created_at=row[2], expires_at=row[3], status=row[4],
                              body=orjson.loads(row[5]), background=row[6], previous_response_id=row[7],
                              run_request=orjson.loads(row[8]) if row[8] is not None else None,
                              lease_owner=row[9], lease_until=row[10], ephemeral=row[11],
                              conversation_id=row[12])

    async def load_chain(self, response_id: str, owner: str) -> list[ChainLink]:
        if not may_exist(response_id):
            return _chain_from_rows(response_id, [])  # raises NotFound
        # One statement either way (pgchains.py): a cached chain checked link by link, or this
        # response's own row and items with its parent's cached chain checked, or the whole chain.
        now = int(time.time())
        cached = self._chains.get(response_id, owner, now)
        if cached is not None:
            links = cached[1]
            if await self._fetchval(LINKS_LEFT, [link.id for link in links], now) == len(links):
                return list(links)
            self._chains.drop(response_id)  # a link was deleted: the full read says which
        else:
            known, prev = self._chains.parent(response_id)
            parent = self._chains.get(prev, owner, now) if known and prev is not None else None
            if known and (prev is None or parent is not None):
                parent_links = parent[1] if parent is not None else []
                rows = await self._fetch(ONE_LINK, response_id, owner, now, [link.id for link in parent_links])
                if not rows:
                    return _chain_from_rows(response_id, [])  # raises NotFound
                if rows[0][2] == prev and rows[0][3] == len(parent_links):
                    link = ChainLink(id=response_id, status=rows[0][0])
                    for row in rows:
                        if row[5] is not None:
                            (link.input if row[4] == 0 else link.output).append(orjson.loads(row[5]))
                    expires = min(rows[0][1], parent[0]) if parent is not None else rows[0][1]
                    links = [*parent_links, link]
                    self._chains.put(response_id, owner, expires, links)
                    return list(links)
                if prev is not None:
                    self._chains.drop(prev)
        rows = await self._fetch(
            """
            WITH RECURSIVE chain(id, prev, status, depth, expires) AS (
                SELECT id, previous_response_id, status, 0, expires_at FROM responses
                 WHERE id = $1 AND owner = $2 AND expires_at > $3 AND NOT ephemeral
                UNION ALL
                SELECT r.id, r.previous_response_id, r.status, chain.depth + 1, r.expires_at
                  FROM responses r JOIN chain ON r.id = chain.prev
                 WHERE r.owner = $2 AND r.expires_at > $3
            )
            SELECT chain.id, chain.prev, chain.status, chain.depth, i.kind, i.data, chain.expires
              FROM chain LEFT JOIN LATERAL (
                   -- LATERAL + OFFSET 0 (never flattened into a hash join): one index lookup per
                   -- link, never a scan of every item
                   SELECT kind, position, data FROM items WHERE items.response_id = chain.id OFFSET 0) i ON TRUE
             ORDER BY chain.depth DESC, i.kind, i.position
            """, response_id, owner, now)
        links = _chain_from_rows(response_id, [r[:6] for r in rows])
        self._chains.put(response_id, owner, min(r[6] for r in rows), links)
        return list(links)

    async def delete_response(self, response_id: str, owner: str) -> bool:
        if not may_exist(response_id):
            return False
        deleted = await self._fetchval(
            f"""
            WITH r AS (DELETE FROM responses WHERE id = $1 AND owner = $2 AND expires_at > $3
                       RETURNING id, conversation_id),
                 i AS (DELETE FROM items WHERE response_id IN (SELECT id FROM r)),
                 e AS (DELETE FROM events WHERE response_id IN (SELECT id FROM r)),
                 {conversations.RELEASE_DELETED}
            SELECT count(*) FROM r
            """, response_id, owner, int(time.time()))
        return deleted == 1

    async def list_input_items(self, response_id: str, owner: str, *, after: str | None, before: str | None,
                               limit: int, order: str) -> ItemPage | None:
        if not may_exist(response_id):
            return None
        lost_cursor = not all(may_exist(cursor) for cursor in (after, before) if cursor is not None)
        if lost_cursor:
            after = before = None
        async with self._conn() as conn:
            head = await conn.fetchrow(
                "SELECT EXISTS (SELECT 1 FROM responses WHERE id = $1 AND owner = $2 AND expires_at > $3 "
                "AND NOT ephemeral), "
                "(SELECT position FROM items WHERE response_id = $1 AND kind = 0 AND item_id = $4 LIMIT 1), "
                "(SELECT position FROM items WHERE response_id = $1 AND kind = 0 AND item_id = $5 LIMIT 1)",
                response_id, owner, int(time.time()), after, before)
            if not head[0]:
                return None
            if lost_cursor or (after is not None and head[1] is None) or (before is not None and head[2] is None):
                return ItemPage([], False)
            asc = order == "asc"
            where = ["response_id = $1", "kind = 0"]
            args: list[Any] = [response_id]
            for pos, op in ((head[1], ">" if asc else "<"), (head[2], "<" if asc else ">")):
                if pos is not None:
                    args.append(pos)
                    where.append(f"position {op} ${len(args)}")
            args.append(limit + 1)
            rows = await conn.fetch(f"SELECT data FROM items WHERE {' AND '.join(where)} "
                                    f"ORDER BY position {'ASC' if asc else 'DESC'} LIMIT ${len(args)}", *args)
        return ItemPage([orjson.loads(r[0]) for r in rows[:limit]], len(rows) > limit)

    async def list_responses(self, query: ResponseQuery) -> ResponsePage:
        cursors = (query.after, query.before, query.status, query.model, query.text, query.previous_response_id,
                   *(v for pair in query.metadata for v in pair))
        if (query.owner is not None and not may_exist(query.owner)) or not all(map(may_exist, filter(None, cursors))):
            return ResponsePage([], False)  # nothing stored holds U+0000
        listing = listing_sql(query, int(time.time()), postgres=True)
        rows = await self._fetch(listing.sql, *listing.args)
        page = rows[:query.limit]
        if listing.reverse:
            page.reverse()
        resume = None
        if listing.edge is not None and len(rows) <= query.limit:
            resume = await self._fetchval(listing.edge[0], *listing.edge[1])
        listed = [ListedResponse(r[1], {**orjson.loads(r[2]), "output": [orjson.loads(d) for d in r[3] or ()]})
                  for r in page]
        return ResponsePage(listed, len(rows) > query.limit or resume is not None, resume)

    async def response_owner(self, response_id: str) -> str | None:
        if not may_exist(response_id):
            return None
        return await self._fetchval("SELECT owner FROM responses WHERE id = $1 AND expires_at > $2 AND NOT ephemeral",
                                    response_id, int(time.time()))

    async def find_items(self, owner: str, item_ids: Sequence[str]) -> dict[str, dict]:
        item_ids = [i for i in item_ids if may_exist(i)]
        if not item_ids:
            return {}
        rows = await self._fetch(
            "SELECT i.item_id, i.data FROM items i JOIN responses r ON r.id = i.response_id "
            "WHERE i.owner = $1 AND i.item_id = ANY($2::text[]) AND r.expires_at > $3 AND NOT r.ephemeral "
            "ORDER BY r.created_at, i.kind", owner, list(item_ids), int(time.time()))
        return {r[0]: orjson.loads(r[1]) for r in rows}

    async def purge_expired(self, now: int) -> int:
        return await self._fetchval(
            f"""
            WITH r AS (DELETE FROM responses WHERE id IN
                         (SELECT id FROM responses WHERE expires_at <= $1 LIMIT 5000) RETURNING id),
                 i AS (DELETE FROM items WHERE response_id IN (SELECT id FROM r)),
                 e AS (DELETE FROM events WHERE response_id IN (SELECT id FROM r)),
                 f AS (DELETE FROM files WHERE expires_at IS NOT NULL AND expires_at <= $1 RETURNING id),
                 {conversations.PURGE}
            SELECT (SELECT count(*) FROM r) + (SELECT count(*) FROM f) + (SELECT count(*) FROM cv)
            """, now)

    # ---- background runs -------------------------------------------------------------------------

    async def append_events(self, response_id: str, events: Sequence[tuple[int, bytes]]) -> None:
        if not events:
            return
        await self._execute(
            # Only for a stored response: a run's late events must not outlive its deletion.
            "INSERT INTO events (response_id, seq, data) SELECT $1, s, d FROM unnest($2::int[], $3::bytea[]) "
            "AS t(s, d) WHERE EXISTS (SELECT 1 FROM responses WHERE id = $1) ON CONFLICT DO NOTHING",
            response_id, [seq for seq, _ in events], [bytes(data) for _, data in events])

    async def load_events(self, response_id: str, after: int) -> list[tuple[int, bytes]]:
        if not may_exist(response_id):
            return []
        rows = await self._fetch("SELECT seq, data FROM events WHERE response_id = $1 AND seq > $2 "
                                 "ORDER BY seq", response_id, after)
        return [(r[0], r[1]) for r in rows]

    async def renew_leases(self, instance: str, lease_until: int) -> list[str]:
        rows = await self._fetch(
            f"WITH r AS (UPDATE responses SET lease_until = $2 WHERE lease_owner = $1 AND {_ACTIVE} "
            f"RETURNING id, cancel_requested, conversation_id),{conversations.RENEW_HELD} "
            "SELECT id, cancel_requested FROM r", instance, lease_until)
        return [r[0] for r in rows if r[1]]

    async def release_run(self, response_id: str, instance: str) -> None:
        await self._execute("UPDATE responses SET lease_owner = NULL, lease_until = NULL "
                            "WHERE id = $1 AND lease_owner = $2", response_id, instance)

    async def orphaned_runs(self, now: int, instance: str, take_all: bool = False) -> list[RunClaim]:
        # SKIP LOCKED: replicas recovering at the same moment each take different runs.
        cond = "(lease_owner IS NULL OR lease_owner <> $2)" if take_all else \
            "(lease_owner IS NULL OR lease_until < $1)"
        rows = await self._fetch(
            f"""
            UPDATE responses SET lease_owner = $2, lease_until = $1 + 60
             WHERE id IN (SELECT id FROM responses WHERE {_ACTIVE} AND {cond} FOR UPDATE SKIP LOCKED)
               AND {_ACTIVE}
            RETURNING id, owner, status, background, run_request
            """, now, instance)
        return [RunClaim(r[0], r[1], r[2], r[3], orjson.loads(r[4]) if r[4] is not None else None)
                for r in rows]

    async def request_cancel(self, response_id: str, owner: str) -> bool:
        if not may_exist(response_id):
            return False
        status = await self._execute(
            "UPDATE responses SET cancel_requested = TRUE WHERE id = $1 AND owner = $2", response_id, owner)
        return status == "UPDATE 1"

    async def cancel_requested(self, response_id: str) -> bool:
        if not may_exist(response_id):
            return False
        return bool(await self._fetchval("SELECT cancel_requested FROM responses WHERE id = $1", response_id))

    # ---- files ----------------------------------------------------------------------------------

    _FILE_COLUMNS = "id, owner, created_at, filename, purpose, bytes, mime_type, expires_at"

    async def put_file(self, record: FileRecord, data: bytes) -> None:
        await self._execute(
            "INSERT INTO files (id, owner, created_at, expires_at, filename, purpose, bytes, mime_type, "
            "data) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            record.id, record.owner, record.created_at, record.expires_at, record.filename, record.purpose,
            record.bytes, record.mime_type, data)

    async def get_file(self, file_id: str, owner: str) -> FileRecord | None:
        if not may_exist(file_id):
            return None
        row = await self._fetchrow(
            f"SELECT {self._FILE_COLUMNS} FROM files WHERE id = $1 AND owner = $2 "
            "AND (expires_at IS NULL OR expires_at > $3)", file_id, owner, int(time.time()))
        return FileRecord(*row) if row else None

    async def file_content(self, file_id: str, owner: str) -> bytes | None:
        if not may_exist(file_id):
            return None
        data = await self._fetchval(
            "SELECT data FROM files WHERE id = $1 AND owner = $2 AND (expires_at IS NULL OR expires_at > $3)",
            file_id, owner, int(time.time()))
        return bytes(data) if data is not None else None

    async def list_files(self, owner: str | None, *, purpose: str | None, after: str | None, limit: int,
                         order: str) -> tuple[list[FileRecord], bool]:
        if (after and not may_exist(after)) or (owner is not None and not may_exist(owner)):
            return [], False  # an unknown cursor, as in SQLite
        asc = order == "asc"
        where = ["(expires_at IS NULL OR expires_at > $1)"]
        args: list[Any] = [int(time.time())]
        if owner is not None:
            args.append(owner)
            where.append("owner = $2")
        if purpose:
            args.append(purpose)
            where.append(f"purpose = ${len(args)}")
        if after:
            args.append(after)
            n = len(args)
            scope = " AND owner = $2" if owner is not None else ""
            cursor = f"(SELECT created_at FROM files WHERE id = ${n}{scope})"
            # An unknown cursor compares with NULL: no rows, as in SQLite.
            where.append(f"(created_at, id) {'>' if asc else '<'} ({cursor}, ${n})")
        args.append(limit + 1)
        direction = "ASC" if asc else "DESC"
        rows = await self._fetch(
            f"SELECT {self._FILE_COLUMNS} FROM files WHERE {' AND '.join(where)} "
            f"ORDER BY created_at {direction}, id {direction} LIMIT ${len(args)}", *args)
        return [FileRecord(*r) for r in rows[:limit]], len(rows) > limit

    async def vector_store_owners(self, *, after: str | None, limit: int) -> tuple[list[tuple[str, str]], bool]:
        if after and not may_exist(after):
            return [], False
        args: list[Any] = [limit + 1]
        where = ""
        if after:
            args.append(after)
            # An unknown cursor compares with NULL: no rows, as in SQLite.
            where = "WHERE (created_at, id) < ((SELECT created_at FROM vector_stores WHERE id = $2), $2)"
        rows = await self._fetch(f"SELECT id, owner FROM vector_stores {where} "
                                 "ORDER BY created_at DESC, id DESC LIMIT $1", *args)
        return [(r[0], r[1]) for r in rows[:limit]], len(rows) > limit

    async def delete_file(self, file_id: str, owner: str) -> bool:
        if not may_exist(file_id):
            return False
        status = await self._execute("DELETE FROM files WHERE id = $1 AND owner = $2", file_id, owner)
        return status == "DELETE 1"

    # ---- secrets ------------------------------------------------------------------------------

    async def get_secrets(self, prefix: str) -> dict[str, bytes]:
        rows = await self._fetch("SELECT name, value FROM secrets WHERE starts_with(name, $1) "
                                 "ORDER BY created_at, name", prefix)
        return {r[0]: bytes(r[1]) for r in rows}

    # ---- API keys ----------------------------------------------------------------------------------

    async def add_key(self, key: KeyRecord) -> None:
        await self._execute(f"INSERT INTO api_keys ({KEY_COLUMNS}) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10)",
                            *key_values(key))

    async def find_key(self, key_hash: str) -> KeyRecord | None:
        row = await self._fetchrow(FIND_KEY, key_hash)
        return key_record(row) if row else None

    async def list_keys(self) -> list[KeyRecord]:
        rows = await self._fetch(f"SELECT {KEY_COLUMNS} FROM api_keys ORDER BY created_at, id")
        return [key_record(r) for r in rows]

    async def has_keys(self) -> bool:
        return bool(await self._fetchval("SELECT EXISTS (SELECT 1 FROM api_keys WHERE revoked_at IS NULL)"))

    async def revoke_key(self, key_id: str, now: int) -> bool:
        status = await self._execute("UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL",
                                     now, key_id)
        return status == "UPDATE 1"

    async def rotate_key(self, key_id: str, key_hash: str, now: int) -> bool:
        status = await self._execute("UPDATE api_keys SET hash = $1, rotated_at = $2 WHERE id = $3 "
                                     "AND revoked_at IS NULL", key_hash, now, key_id)
        return status == "UPDATE 1"

    async def add_secret(self, name: str, value: bytes) -> bool:
        status = await self._execute("INSERT INTO secrets (name, value, created_at) VALUES ($1, $2, $3) "
                                     "ON CONFLICT (name) DO NOTHING", name, value, int(time.time()))
        return status == "INSERT 0 1"
