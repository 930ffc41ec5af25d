"""SQLite store: writes group-committed on the event loop, reads on the event loop.

All writes made during one turn of the event loop are committed together, in one
transaction, at the end of that turn (each in its own savepoint, so one failure undoes only
its own work); their callers resume once the batch is committed, so a response is durable
before the client sees it. In WAL mode with `synchronous=NORMAL` a commit only appends to
the log, which takes tens of microseconds: doing it inline is cheaper than handing work to
a writer thread (measured: the thread hop and the GIL contention with it cost more than the
SQL itself, on one core). The one slow operation, the checkpoint that folds the log back
into the database and syncs it, runs in a background thread on its own connection, which
also starts the log over once it is past its target size (wal.py).
One server owns a database: a lock file in the data dir refuses a second one. That server
may be several worker processes (`--workers`, `shared=True`): processes.py says what they share.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import fcntl
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import orjson

from ..errors import NotFound, ServiceUnavailable
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
    rows_json,
)
from . import sqlite_conversations as conversations
from .listing import listing_sql
from .processes import DeleteCounter, Peers, WriterLock
from .schema import LATEST, SQLITE
from .sqlite_conversations import SQLiteConversations
from .sqlite_quotas import FIND_KEY, KEY_COLUMNS, SQLiteQuotas, key_record, key_values
from .sqlite_vectors import SQLiteVectors
from .wal import WalKeeper

log = logging.getLogger("responsa.store")
T = TypeVar("T")
TERMINAL = ("completed", "incomplete", "failed", "cancelled")
_UNKNOWN = object()
PROBE_EVERY = 1  # seconds between write probes while writes fail
DEFER = 0.001  # seconds a commit is put off while the log is started over
MAX_UNSAVED = 10_000  # acknowledged writes kept for the probe while writes fail
CHAIN_CACHE_SIZE = 4096  # chains kept (they share their links, so memory grows with new turns only)


def _connect(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA busy_timeout=30000")
    # 8 MiB of pages per connection. The operating system caches the file anyway; 64 MiB (two
    # connections) was most of a busy server's resident memory and served no faster.
    conn.execute("PRAGMA cache_size=-8192")
    return conn


def lock_data_dir(path: str) -> Any:
    """Hold the lock that makes one server the owner of the database at `path` (an open file: the
    lock lasts until every process holding it has closed it or exited)."""
    lock_file = open(path + ".lock", "w")
    try:
        fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        lock_file.close()
        raise RuntimeError(f"another Responsa process is using {path} (one server per SQLite data dir: "
                           "use --workers for several processes on it, PostgreSQL for several machines)") from None
    return lock_file


def migrate(conn: sqlite3.Connection) -> int:
    """Apply pending migrations; returns the schema version."""
    conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
    row = conn.execute("SELECT max(version) FROM schema_version").fetchone()
    current = row[0] or 0
    if current > LATEST:
        raise RuntimeError(f"database schema version {current} is newer than this Responsa ({LATEST})")
    for version in range(current + 1, LATEST + 1):
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in _statements(SQLITE[version - 1]):
                conn.execute(statement)
            conn.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return LATEST


def _statements(script: str) -> list[str]:
    lines = [line.split("--", 1)[0] for line in script.splitlines()]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


class SQLiteStore(SQLiteVectors, SQLiteConversations, SQLiteQuotas):
    """The embedded default store (one file in the data dir)."""

    def __init__(self, path: str, *, shared: bool = False, guest: bool = False) -> None:
        self.path = path
        # One of several worker processes, whose supervisor holds the data dir's lock.
        self.shared = shared
        # A short-lived command (`responsa keys`) beside the running server: no exclusive lock, no
        # WAL keeper; SQLite itself serialises its few writes with the server's.
        self.guest = guest
        self._writer_lock: WriterLock | None = None
        self._deletes: DeleteCounter | None = None
        self._peers: Peers | None = None
        self._writer: sqlite3.Connection | None = None
        self._reader: sqlite3.Connection | None = None
        self._pending: list[tuple[Callable[[sqlite3.Connection], Any], asyncio.Future]] = []
        self._flush_scheduled = False
        self._listeners: list[Callable[[str, str], None]] = []
        # response id -> (owner, earliest expiry in the chain, the chain's links); see load_chain
        self._chain_cache: collections.OrderedDict[str, tuple[str, int, list[ChainLink]]] = \
            collections.OrderedDict()
        self._parent_of: collections.OrderedDict[str, str | None] = collections.OrderedDict()
        self._lock_file: Any = None
        self._delete_pending = False  # a delete in the current transaction
        self.wal = WalKeeper(path, _connect)
        # Why the last write failed (a full disk, an I/O error), until a write succeeds again: new
        # work is refused meanwhile (check_writable), since plain responses are answered before
        # their commit and would otherwise be acknowledged and lost.
        self.write_failure: str | None = None
        self._next_probe = 0.0
        self._acknowledged_unsaved: list[Callable[[sqlite3.Connection], None]] = []

    # ---- lifecycle -------------------------------------------------------------------------

    async def open(self) -> None:
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        if self.shared:
            self._writer_lock = WriterLock(self.path + "-writer")
            self._deletes = DeleteCounter(self.path + "-deletes")
            self._peers = Peers(self.path + "-peers", self._deliver)
            self._peers.open()
            self.wal.writers = self._writer_lock
        elif not self.guest:
            self._lock_file = lock_data_dir(self.path)
        writer = _connect(self.path)
        with self._exclusive():
            migrate(writer)
        self._writer = writer
        self._reader = _connect(self.path)
        self._reader.execute("PRAGMA query_only=1")
        if not self.guest:
            self.wal.start(writer)

    async def close(self) -> None:
        if self._pending:
            self._flush(block=True)
        await asyncio.to_thread(self.wal.stop)
        for conn in (self._writer, self._reader):
            if conn is not None:
                conn.close()
        self._writer = self._reader = None
        for part in (self._peers, self._deletes, self._writer_lock):
            if part is not None:
                part.close()
        self._peers = self._deletes = self._writer_lock = None
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None

    async def ping(self) -> bool:
        try:
            self._read().execute("SELECT 1").fetchone()
        except sqlite3.Error:
            return False
        if self._writer is None:
            return False
        try:
            await self.check_writable()
        except ServiceUnavailable:
            return False
        return True

    async def check_writable(self) -> None:
        """Raise ServiceUnavailable (with Retry-After) while writes fail; at most once a second a
        probe write tries again, and its success ends the refusal."""
        if self.write_failure is None:
            return
        now = time.monotonic()
        if now >= self._next_probe:
            self._next_probe = now + PROBE_EVERY
            # The probe is the writes that failed after they were acknowledged (a tiny write could
            # succeed on a disk still too full for them), or else one page.
            unsaved, self._acknowledged_unsaved = self._acknowledged_unsaved, []

            def probe(conn: sqlite3.Connection) -> None:
                for op in unsaved:
                    op(conn)
                if not unsaved:
                    _probe(conn)

            try:
                await self._write(probe)
            except ServiceUnavailable:
                self._acknowledged_unsaved[:0] = unsaved
            if self.write_failure is None:
                log.warning("sqlite writes succeed again (%d acknowledged responses stored late)", len(unsaved))
                return
        raise ServiceUnavailable(f"The database cannot be written ({self.write_failure}); nothing new is "
                                 "accepted until it can. Retry later.", headers={"retry-after": str(PROBE_EVERY)})

    def _read(self) -> sqlite3.Connection:
        if self._reader is None:
            raise ServiceUnavailable("The store is not open.")
        if self._pending:
            self._flush(block=True)  # reads see every write made before them, even those not awaited
        return self._reader

    # ---- writes ---------------------------------------------------------------------------------

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await self._queue_write(fn)

    def _queue_write(self, fn: Callable[[sqlite3.Connection], T]) -> asyncio.Future[T]:
        if self._writer is None:
            raise ServiceUnavailable("The store is not open.")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()
        self._pending.append((fn, fut))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            loop.call_soon(self._flush)
        return fut

    def _flush(self, block: bool = False) -> None:
        """Commit every write queued during this turn of the loop in one transaction. While the
        checkpoint thread starts the log over (wal.py), a millisecond later, unless `block`."""
        self._flush_scheduled = False
        if not self._pending:
            return
        turn = self.wal.turn
        if not turn.acquire(blocking=block):
            self._flush_scheduled = True
            asyncio.get_running_loop().call_later(DEFER, self._flush)
            return
        try:
            self._commit()
        finally:
            turn.release()

    def _commit(self) -> None:
        batch, self._pending = self._pending, []
        conn = self._writer
        if conn is None:
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(ServiceUnavailable("The store is closed."))
            return
        lock = self._writer_lock
        if lock is not None:
            lock.acquire()
        try:
            self.wal.before_write(conn)
            conn.execute("BEGIN IMMEDIATE")
            values = [fn(conn) for fn, _ in batch]
            conn.execute("COMMIT")
        except Exception:
            _rollback(conn)
            # Find the failing write: every write again, each in its own transaction.
            for fn, fut in batch:
                self._run_alone(conn, fn, fut)
            return
        finally:
            self._deleted()
            if lock is not None:
                lock.release()
        self.write_failure = None
        for (_, fut), value in zip(batch, values, strict=True):
            if not fut.done():
                fut.set_result(value)

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[None]:
        """No other process writes meanwhile (a no-op for a process alone)."""
        if self._writer_lock is None:
            yield
            return
        self._writer_lock.acquire()
        try:
            yield
        finally:
            self._writer_lock.release()

    def _deleted(self) -> None:
        """After a transaction: if it deleted responses, other processes drop their cached chains."""
        if self._delete_pending:
            self._delete_pending = False
            if self._deletes is not None:
                self._deletes.bump()

    def _run_alone(self, conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection], Any],
                   fut: asyncio.Future) -> None:
        try:
            conn.execute("BEGIN IMMEDIATE")
            value = fn(conn)
            conn.execute("COMMIT")
        except sqlite3.OperationalError as e:
            _rollback(conn)
            if self.write_failure is None:
                log.error("sqlite write failed: %s; new work is refused until a write succeeds", e)
                self._next_probe = time.monotonic() + PROBE_EVERY
            self.write_failure = str(e)
            if not fut.done():
                fut.set_exception(ServiceUnavailable(f"The database write failed: {e}",
                                                     headers={"retry-after": str(PROBE_EVERY)}))
        except Exception as e:
            _rollback(conn)
            if not fut.done():
                fut.set_exception(e)
        else:
            self.write_failure = None
            if not fut.done():
                fut.set_result(value)

    # ---- responses -----------------------------------------------------------------------------

    async def save_response(self, record: ResponseRecord, output: Sequence[dict],
                            input_items: Sequence[dict] | None = None, *, wait: bool = True,
                            create: bool = True) -> None:
        dump = rows_json(len(output) + len(input_items or ()))
        body = dump(record.body)
        run_request = dump(record.run_request) if record.run_request is not None else None
        out_rows = [(record.id, 1, i, item.get("id", ""), record.owner, dump(item))
                    for i, item in enumerate(output)]
        if input_items is not None:
            out_rows += [(record.id, 0, i, item.get("id", ""), record.owner, dump(item))
                         for i, item in enumerate(input_items)]
        keep = len(output)
        ends_turn = record.conversation_id is not None and record.status in TERMINAL
        create = create and not ends_turn

        self._parent_of[record.id] = record.previous_response_id
        if len(self._parent_of) > CHAIN_CACHE_SIZE * 4:
            self._parent_of.popitem(last=False)

        def op(conn: sqlite3.Connection) -> None:
            if not create:
                cur = conn.execute(
                    "UPDATE responses SET status=?, body=?, run_request=?, lease_owner=?, lease_until=?, expires_at=? "
                    "WHERE id=?",
                    (record.status, body, run_request, record.lease_owner, record.lease_until, record.expires_at,
                     record.id))
                if cur.rowcount == 0:
                    return  # deleted meanwhile: a late write must not bring it back
            conn.execute(
                "INSERT INTO responses (id, owner, created_at, expires_at, status, background, "
                "previous_response_id, body, run_request, lease_owner, lease_until, ephemeral) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?,?) "
                "ON CONFLICT (id) DO UPDATE SET status=excluded.status, body=excluded.body, "
                "run_request=excluded.run_request, lease_owner=excluded.lease_owner, "
                "lease_until=excluded.lease_until, expires_at=excluded.expires_at",
                (record.id, record.owner, record.created_at, record.expires_at, record.status,
                 int(record.background), record.previous_response_id, body, run_request, record.lease_owner,
                 record.lease_until, int(record.ephemeral)))
            conn.execute("DELETE FROM items WHERE response_id=? AND kind=1 AND position>=?", (record.id, keep))
            if out_rows:
                conn.executemany("INSERT OR REPLACE INTO items VALUES (?,?,?,?,?,?)", out_rows)
            if ends_turn:
                conversations.end_turn(conn, record)

        if wait or self.shared:  # another process may serve the client's next read: commit first
            await self._write(op)
            return
        # The commit runs at the end of this turn of the event loop, before the loop reads
        # anything new from the network: no request can look for this response before it
        # is committed, so the caller may answer at once (one commit off a plain request's
        # latency). A failure is logged; the response is then just not retrievable.
        fut = self._queue_write(op)

        def failed(f: asyncio.Future) -> None:
            if not f.cancelled() and f.exception() is not None:
                # Acknowledged already: kept, and written by the probe once the disk has room.
                if len(self._acknowledged_unsaved) < MAX_UNSAVED:
                    self._acknowledged_unsaved.append(op)
                log.error("response %s could not be stored yet: %s", record.id, f.exception())

        fut.add_done_callback(failed)

    async def get_response(self, response_id: str, owner: str) -> dict | None:
        conn = self._read()
        row = conn.execute("SELECT body FROM responses WHERE id=? AND owner=? AND expires_at>?",
                           (response_id, owner, int(time.time()))).fetchone()
        if row is None:
            return None
        response = orjson.loads(row[0])
        response["output"] = [orjson.loads(r[0]) for r in conn.execute(
            "SELECT data FROM items WHERE response_id=? AND kind=1 ORDER BY position", (response_id,))]
        return response

    async def get_record(self, response_id: str, owner: str) -> ResponseRecord | None:
        row = self._read().execute(
            "SELECT id, owner, created_at, expires_at, status, body, background, previous_response_id, "
            "run_request, ephemeral, conversation_id FROM responses WHERE id=? AND owner=? AND expires_at>?",
            (response_id, owner, int(time.time()))).fetchone()
        if row is None:
            return None
        return ResponseRecord(id=row[0], owner=row[1], created_at=row[2], expires_at=row[3], status=row[4],
                              body=orjson.loads(row[5]), background=bool(row[6]), previous_response_id=row[7],
                              run_request=orjson.loads(row[8]) if row[8] is not None else None,
                              ephemeral=bool(row[9]), conversation_id=row[10])

    async def load_chain(self, response_id: str, owner: str) -> list[ChainLink]:
        # Finished responses never change, and this process makes every delete and purge of
        # this database, so chains are cached: turn N+1 reads turn N and reuses the chain
        # cached when turn N was made, instead of reading all N responses again.
        now = int(time.time())
        if self._deletes is not None and self._deletes.changed():  # another process deleted something
            self._chain_cache.clear()
        cached = self._chain_cache.get(response_id)
        if cached is not None and cached[0] == owner and cached[1] > now:
            self._chain_cache.move_to_end(response_id)
            return list(cached[2])
        conn = self._read()
        # One query either way: this response's own row and items when its parent's chain is
        # cached (the parent is known from when this process saved it), else the whole chain.
        prev = self._parent_of.get(response_id, _UNKNOWN)
        parent = None
        if isinstance(prev, str):
            parent = self._chain_cache.get(prev)
            if parent is not None and (parent[0] != owner or parent[1] <= now):
                parent = None
        if prev is None or parent is not None:
            rows = conn.execute(
                "SELECT r.status, r.expires_at, i.kind, i.data FROM responses r LEFT JOIN items i "
                "ON i.response_id = r.id WHERE r.id=? AND r.owner=? AND r.expires_at>? AND r.ephemeral=0 "
                "ORDER BY i.kind, i.position", (response_id, owner, now)).fetchall()
            if not rows:
                raise NotFound(f"Previous response with id '{response_id}' not found.",
                               param="previous_response_id", code="previous_response_not_found")
            link = ChainLink(id=response_id, status=rows[0][0])
            for _status, _expires, kind, data in rows:
                if data is not None:
                    (link.input if kind == 0 else link.output).append(orjson.loads(data))
            links = [*parent[2], link] if parent is not None else [link]
            expires = min(rows[0][1], parent[1]) if parent is not None else rows[0][1]
            return self._cache_chain(response_id, owner, expires, links)
        rows = conn.execute(
                """
                WITH RECURSIVE chain(id, prev, status, expires, depth) AS (
                    SELECT id, previous_response_id, status, expires_at, 0 FROM responses
                     WHERE id = ?1 AND owner = ?2 AND expires_at > ?3 AND ephemeral = 0
                    UNION ALL
                    SELECT r.id, r.previous_response_id, r.status, r.expires_at, chain.depth + 1
                      FROM responses r JOIN chain ON r.id = chain.prev
                     WHERE r.owner = ?2 AND r.expires_at > ?3
                )
                SELECT chain.id, chain.prev, chain.status, chain.depth, i.kind, i.data, chain.expires
                  FROM chain LEFT JOIN items i ON i.response_id = chain.id
                 ORDER BY chain.depth DESC, i.kind, i.position
                """,
                (response_id, owner, now)).fetchall()
        links = _chain_from_rows(response_id, [r[:6] for r in rows])
        return self._cache_chain(response_id, owner, min(r[6] for r in rows), links)

    def _cache_chain(self, response_id: str, owner: str, expires: int, links: list[ChainLink]) -> list[ChainLink]:
        if all(link.status in TERMINAL for link in links):
            self._chain_cache[response_id] = (owner, expires, links)
            if len(self._chain_cache) > CHAIN_CACHE_SIZE:
                self._chain_cache.popitem(last=False)
        return list(links)

    async def delete_response(self, response_id: str, owner: str) -> bool:
        def op(conn: sqlite3.Connection) -> bool:
            cur = conn.execute("DELETE FROM responses WHERE id=? AND owner=? AND expires_at>?",
                               (response_id, owner, int(time.time())))
            if cur.rowcount == 0:
                return False
            conn.execute("DELETE FROM items WHERE response_id=?", (response_id,))
            conn.execute("DELETE FROM events WHERE response_id=?", (response_id,))
            conversations.release(conn, response_id)
            self._chain_cache.clear()  # cached chains through it must not be continued
            self._delete_pending = True
            return True

        return await self._write(op)

    async def list_input_items(self, response_id: str, owner: str, *, after: str | None, before: str | None,
                               limit: int, order: str) -> ItemPage | None:
        conn = self._read()
        if conn.execute("SELECT 1 FROM responses WHERE id=? AND owner=? AND expires_at>? AND ephemeral=0",
                        (response_id, owner, int(time.time()))).fetchone() is None:
            return None
        where = ["response_id=?", "kind=0"]
        args: list[Any] = [response_id]
        for cursor, op in ((after, ">" if order == "asc" else "<"), (before, "<" if order == "asc" else ">")):
            if cursor is None:
                continue
            pos = conn.execute("SELECT position FROM items WHERE response_id=? AND kind=0 AND item_id=?",
                               (response_id, cursor)).fetchone()
            if pos is None:
                return ItemPage([], False)
            where.append(f"position{op}?")
            args.append(pos[0])
        direction = "ASC" if order == "asc" else "DESC"
        rows = conn.execute(f"SELECT data FROM items WHERE {' AND '.join(where)} ORDER BY position {direction} "
                            "LIMIT ?", (*args, limit + 1)).fetchall()
        return ItemPage([orjson.loads(r[0]) for r in rows[:limit]], len(rows) > limit)

    async def list_responses(self, query: ResponseQuery) -> ResponsePage:
        conn = self._read()
        listing = listing_sql(query, int(time.time()), postgres=False)
        rows = conn.execute(listing.sql, listing.args).fetchall()
        page = rows[:query.limit]
        if listing.reverse:
            page.reverse()
        resume = None
        if listing.edge is not None and len(rows) <= query.limit:
            edge = conn.execute(*listing.edge).fetchone()
            resume = edge[0] if edge else None
        listed = {r[0]: ListedResponse(r[1], {**orjson.loads(r[2]), "output": []}) for r in page}
        if listed:
            marks = ",".join("?" * len(listed))
            for rid, data in conn.execute(f"SELECT response_id, data FROM items WHERE kind=1 AND response_id IN "
                                          f"({marks}) ORDER BY response_id, position", list(listed)):
                listed[rid].response["output"].append(orjson.loads(data))
        return ResponsePage(list(listed.values()), len(rows) > query.limit or resume is not None, resume)

    async def response_owner(self, response_id: str) -> str | None:
        row = self._read().execute("SELECT owner FROM responses WHERE id=? AND expires_at>? AND ephemeral=0",
                                   (response_id, int(time.time()))).fetchone()
        return row[0] if row else None

    async def find_items(self, owner: str, item_ids: Sequence[str]) -> dict[str, dict]:
        if not item_ids:
            return {}
        marks = ",".join("?" * len(item_ids))
        rows = self._read().execute(
            f"SELECT i.item_id, i.data FROM items i JOIN responses r ON r.id = i.response_id "
            f"WHERE i.owner=? AND i.item_id IN ({marks}) AND r.expires_at>? AND r.ephemeral=0 "
            "ORDER BY r.created_at, i.kind",
            (owner, *item_ids, int(time.time()))).fetchall()
        return {r[0]: orjson.loads(r[1]) for r in rows}

    async def purge_expired(self, now: int) -> int:
        def op(conn: sqlite3.Connection) -> int:
            ids = [r[0] for r in conn.execute("SELECT id FROM responses WHERE expires_at<=? LIMIT 5000", (now,))]
            for rid in ids:
                conn.execute("DELETE FROM items WHERE response_id=?", (rid,))
                conn.execute("DELETE FROM events WHERE response_id=?", (rid,))
                conn.execute("DELETE FROM responses WHERE id=?", (rid,))
            files = conn.execute("DELETE FROM files WHERE expires_at IS NOT NULL AND expires_at<=?", (now,))
            if ids:
                self._chain_cache.clear()
                self._delete_pending = True
            return len(ids) + files.rowcount + conversations.purge(conn, now, 5000)

        return await self._write(op)

    # ---- background runs -------------------------------------------------------------------------

    async def append_events(self, response_id: str, events: Sequence[tuple[int, bytes]]) -> None:
        rows = [(response_id, seq, data, response_id) for seq, data in events]
        # Only for a stored response: a run's late events must not outlive its deletion.
        await self._write(lambda conn: conn.executemany(
            "INSERT OR IGNORE INTO events SELECT ?,?,? WHERE EXISTS (SELECT 1 FROM responses WHERE id=?)", rows))

    async def load_events(self, response_id: str, after: int) -> list[tuple[int, bytes]]:
        return self._read().execute("SELECT seq, data FROM events WHERE response_id=? AND seq>? ORDER BY seq",
                                    (response_id, after)).fetchall()

    async def renew_leases(self, instance: str, lease_until: int) -> list[str]:
        def op(conn: sqlite3.Connection) -> list[str]:
            conn.execute("UPDATE responses SET lease_until=? WHERE lease_owner=? "
                         "AND status IN ('queued','in_progress')", (lease_until, instance))
            conversations.renew(conn, instance, lease_until)
            return [r[0] for r in conn.execute(
                "SELECT id FROM responses WHERE lease_owner=? AND status IN ('queued','in_progress') "
                "AND cancel_requested=1", (instance,))]

        return await self._write(op)

    async def notify(self, channel: str, response_id: str) -> None:
        self._deliver(channel, response_id)
        if self._peers is not None:
            self._peers.send(channel, response_id)

    def _deliver(self, channel: str, response_id: str) -> None:
        for callback in self._listeners:
            callback(channel, response_id)

    def on_notify(self, callback: Callable[[str, str], None]) -> None:
        self._listeners.append(callback)

    async def release_run(self, response_id: str, instance: str) -> None:
        await self._write(lambda conn: conn.execute(
            "UPDATE responses SET lease_owner=NULL, lease_until=NULL WHERE id=? AND lease_owner=?",
            (response_id, instance)))

    async def orphaned_runs(self, now: int, instance: str, take_all: bool = False) -> list[RunClaim]:
        def op(conn: sqlite3.Connection) -> list[RunClaim]:
            cond = "(lease_owner IS NULL OR lease_owner<>?)" if take_all else \
                "(lease_owner IS NULL OR lease_until<?)"
            rows = conn.execute(
                f"SELECT id, owner, status, background, run_request FROM responses WHERE status IN "
                f"('queued','in_progress') AND {cond}", (instance if take_all else now,)).fetchall()
            claims = []
            for rid, owner, status, background, run_request in rows:
                conn.execute("UPDATE responses SET lease_owner=?, lease_until=? WHERE id=?",
                             (instance, now + 60, rid))
                claims.append(RunClaim(rid, owner, status, bool(background),
                                       orjson.loads(run_request) if run_request else None))
            return claims

        return await self._write(op)

    async def request_cancel(self, response_id: str, owner: str) -> bool:
        return await self._write(lambda conn: conn.execute(
            "UPDATE responses SET cancel_requested=1 WHERE id=? AND owner=?", (response_id, owner)).rowcount == 1)

    async def cancel_requested(self, response_id: str) -> bool:
        row = self._read().execute("SELECT cancel_requested FROM responses WHERE id=?", (response_id,)).fetchone()
        return bool(row and row[0])

    # ---- files ----------------------------------------------------------------------------------

    async def put_file(self, record: FileRecord, data: bytes) -> None:
        await self._write(lambda conn: conn.execute(
            "INSERT INTO files (id, owner, created_at, expires_at, filename, purpose, bytes, mime_type, data) "
            "VALUES (?,?,?,?,?,?,?,?,?)",
            (record.id, record.owner, record.created_at, record.expires_at, record.filename, record.purpose,
             record.bytes, record.mime_type, data)))

    _FILE_COLUMNS = "id, owner, created_at, filename, purpose, bytes, mime_type, expires_at"

    async def get_file(self, file_id: str, owner: str) -> FileRecord | None:
        row = self._read().execute(
            f"SELECT {self._FILE_COLUMNS} FROM files WHERE id=? AND owner=? "
            "AND (expires_at IS NULL OR expires_at>?)", (file_id, owner, int(time.time()))).fetchone()
        return FileRecord(*row) if row else None

    async def file_content(self, file_id: str, owner: str) -> bytes | None:
        row = self._read().execute(
            "SELECT data FROM files WHERE id=? AND owner=? AND (expires_at IS NULL OR expires_at>?)",
            (file_id, owner, int(time.time()))).fetchone()
        return bytes(row[0]) if row else None

    async def list_files(self, owner: str | None, *, purpose: str | None, after: str | None, limit: int,
                         order: str) -> tuple[list[FileRecord], bool]:
        conn = self._read()
        where = ["(expires_at IS NULL OR expires_at>?)"]
        args: list[Any] = [int(time.time())]
        if owner is not None:
            where.append("owner=?")
            args.append(owner)
        if purpose:
            where.append("purpose=?")
            args.append(purpose)
        if after:
            scope, scope_args = (" AND owner=?", (owner,)) if owner is not None else ("", ())
            row = conn.execute(f"SELECT created_at FROM files WHERE id=?{scope}", (after, *scope_args)).fetchone()
            if row is None:
                return [], False
            cmp = ">" if order == "asc" else "<"
            where.append(f"(created_at, id) {cmp} (?, ?)")
            args.extend([row[0], after])
        direction = "ASC" if order == "asc" else "DESC"
        rows = conn.execute(
            f"SELECT {self._FILE_COLUMNS} FROM files WHERE {' AND '.join(where)} "
            f"ORDER BY created_at {direction}, id {direction} LIMIT ?", (*args, limit + 1)).fetchall()
        return [FileRecord(*r) for r in rows[:limit]], len(rows) > limit

    async def vector_store_owners(self, *, after: str | None, limit: int) -> tuple[list[tuple[str, str]], bool]:
        conn = self._read()
        where, args = "", []
        if after:
            row = conn.execute("SELECT created_at FROM vector_stores WHERE id=?", (after,)).fetchone()
            if row is None:
                return [], False
            where, args = "WHERE (created_at, id) < (?, ?)", [row[0], after]
        rows = conn.execute(f"SELECT id, owner FROM vector_stores {where} ORDER BY created_at DESC, id DESC LIMIT ?",
                            (*args, limit + 1)).fetchall()
        return [(r[0], r[1]) for r in rows[:limit]], len(rows) > limit

    async def delete_file(self, file_id: str, owner: str) -> bool:
        return await self._write(lambda conn: conn.execute(
            "DELETE FROM files WHERE id=? AND owner=?", (file_id, owner)).rowcount == 1)

    # ---- secrets ------------------------------------------------------------------------------

    async def get_secrets(self, prefix: str) -> dict[str, bytes]:
        # substr, not LIKE: `_` and `%` in a prefix are no wildcards.
        rows = self._read().execute("SELECT name, value FROM secrets WHERE substr(name, 1, length(?1)) = ?1 "
                                    "ORDER BY created_at, name", (prefix,)).fetchall()
        return {name: bytes(value) for name, value in rows}

    # ---- API keys ----------------------------------------------------------------------------------

    async def add_key(self, key: KeyRecord) -> None:
        await self._write(lambda conn: conn.execute(
            f"INSERT INTO api_keys ({KEY_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?)", key_values(key)))

    async def find_key(self, key_hash: str) -> KeyRecord | None:
        row = self._read().execute(FIND_KEY, (key_hash,)).fetchone()
        return key_record(row) if row else None

    async def list_keys(self) -> list[KeyRecord]:
        rows = self._read().execute(f"SELECT {KEY_COLUMNS} FROM api_keys ORDER BY created_at, id").fetchall()
        return [key_record(r) for r in rows]

    async def has_keys(self) -> bool:
        return self._read().execute("SELECT 1 FROM api_keys WHERE revoked_at IS NULL LIMIT 1").fetchone() is not None

    async def revoke_key(self, key_id: str, now: int) -> bool:
        return await self._write(lambda conn: conn.execute(
            "UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL", (now, key_id)).rowcount == 1)

    async def rotate_key(self, key_id: str, key_hash: str, now: int) -> bool:
        return await self._write(lambda conn: conn.execute(
            "UPDATE api_keys SET hash = ?, rotated_at = ? WHERE id = ? AND revoked_at IS NULL",
            (key_hash, now, key_id)).rowcount == 1)

    async def add_secret(self, name: str, value: bytes) -> bool:
        return await self._write(lambda conn: conn.execute(
            "INSERT OR IGNORE INTO secrets (name, value, created_at) VALUES (?,?,?)",
            (name, value, int(time.time()))).rowcount == 1)


def _probe(conn: sqlite3.Connection) -> None:
    """A write of one page that needs no table: can the database be written again?"""
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    conn.execute(f"PRAGMA user_version={(version + 1) % 1_000_000}")


def _rollback(conn: sqlite3.Connection) -> None:
    try:
        conn.execute("ROLLBACK")
    except sqlite3.Error:
        pass


def _chain_from_rows(response_id: str, rows: Sequence[Sequence[Any]]) -> list[ChainLink]:
    """Group (id, prev, status, depth, kind, data) rows, oldest first; 404 on a broken chain."""
    if not rows:
        raise NotFound(f"Previous response with id '{response_id}' not found.", param="previous_response_id",
                       code="previous_response_not_found")
    links: list[ChainLink] = []
    oldest_prev = rows[0][1]
    if oldest_prev is not None:
        raise NotFound(
            f"Previous response with id '{response_id}' cannot be continued: the response "
            f"'{oldest_prev}' earlier in its chain was deleted or has expired.",
            param="previous_response_id", code="previous_response_not_found")
    current: ChainLink | None = None
    for rid, _prev, status, _depth, kind, data in rows:
        if current is None or current.id != rid:
            current = ChainLink(id=rid, status=status)
            links.append(current)
        if data is not None:
            (current.input if kind == 0 else current.output).append(orjson.loads(data))
    return links
