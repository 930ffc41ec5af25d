"""SQLite: API keys' limits, quota windows and slots, usage, mixed into SQLiteStore (see the Store
protocol). Every write goes through the store's one writer, so a read-then-write here is atomic
for all the processes of one database."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

import orjson

from . import KeyRecord, Limits, UsageRow

T = TypeVar("T")
KEY_COLUMNS = "id, name, owner, hash, created_at, project, rotated_at, revoked_at, requests_per_minute, limits"
# A key with its project's limits, in one read.
FIND_KEY = (f"SELECT {', '.join('k.' + c for c in KEY_COLUMNS.split(', '))}, p.limits FROM api_keys k "
            "LEFT JOIN project_limits p ON p.project = k.project WHERE k.hash = ? AND k.revoked_at IS NULL")


class _Connections(Protocol):
    def _read(self) -> sqlite3.Connection: ...

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T: ...


def key_record(row: Any) -> KeyRecord:
    project_limits = Limits(**orjson.loads(row[10])) if len(row) > 10 and row[10] is not None else None
    return KeyRecord(id=row[0], name=row[1], owner=row[2], hash=row[3], created_at=row[4], project=row[5],
                     rotated_at=row[6], revoked_at=row[7], limits=Limits.from_columns(row[8], row[9]),
                     project_limits=project_limits)


def key_values(key: KeyRecord) -> tuple:
    return (key.id, key.name, key.owner, key.hash, key.created_at, key.project, key.rotated_at, key.revoked_at,
            key.limits.requests_per_minute, key.limits.extra_json())


def limits_json(limits: Limits) -> str:
    return orjson.dumps({k: v for k, v in limits.__dict__.items() if v is not None}).decode()


class SQLiteQuotas:
    async def set_key_limits(self: _Connections, key_id: str, limits: Limits) -> bool:
        return await self._write(lambda conn: conn.execute(
            "UPDATE api_keys SET requests_per_minute = ?, limits = ? WHERE id = ? AND revoked_at IS NULL",
            (limits.requests_per_minute, limits.extra_json(), key_id)).rowcount == 1)

    async def set_project_limits(self: _Connections, project: str, limits: Limits) -> None:
        def op(conn: sqlite3.Connection) -> None:
            if limits.any():
                conn.execute("INSERT INTO project_limits (project, limits) VALUES (?, ?) ON CONFLICT (project) "
                             "DO UPDATE SET limits = excluded.limits", (project, limits_json(limits)))
            else:
                conn.execute("DELETE FROM project_limits WHERE project = ?", (project,))

        await self._write(op)

    async def get_project_limits(self: _Connections) -> dict[str, Limits]:
        rows = self._read().execute("SELECT project, limits FROM project_limits ORDER BY project").fetchall()
        return {p: Limits(**orjson.loads(v)) for p, v in rows}

    async def take_windows(self: _Connections, windows: list[tuple[str, int]],
                           now_ms: int) -> list[tuple[int, int, int]]:
        def op(conn: sqlite3.Connection) -> list[tuple[int, int, int]]:
            return [conn.execute(
                "INSERT INTO rate_windows (scope, span, started, requests, tokens) VALUES (?, ?, ?, 1, 0) "
                "ON CONFLICT (scope, span) DO UPDATE SET "
                "requests = CASE WHEN started + span <= excluded.started THEN 1 ELSE requests + 1 END, "
                "tokens = CASE WHEN started + span <= excluded.started THEN 0 ELSE tokens END, "
                "started = CASE WHEN started + span <= excluded.started THEN excluded.started ELSE started END "
                "RETURNING requests, tokens, started", (scope, span, now_ms)).fetchone() for scope, span in windows]

        return await self._write(op)

    async def add_window_tokens(self: _Connections, windows: list[tuple[str, int]], tokens: int) -> None:
        await self._write(lambda conn: conn.executemany(
            "UPDATE rate_windows SET tokens = tokens + ? WHERE scope = ? AND span = ?",
            [(tokens, scope, span) for scope, span in windows]))

    async def take_slot(self: _Connections, scope: str, slot: str, limit: int, now_ms: int, until_ms: int) -> bool:
        def op(conn: sqlite3.Connection) -> bool:
            row = conn.execute("SELECT slots FROM quota_slots WHERE scope = ?", (scope,)).fetchone()
            held = {k: v for k, v in (orjson.loads(row[0]) if row else {}).items() if v > now_ms}
            if len(held) >= limit:
                return False
            held[slot] = until_ms
            conn.execute("INSERT INTO quota_slots (scope, slots) VALUES (?, ?) ON CONFLICT (scope) "
                         "DO UPDATE SET slots = excluded.slots", (scope, orjson.dumps(held).decode()))
            return True

        return await self._write(op)

    async def renew_slots(self: _Connections, held: dict[str, list[str]], until_ms: int) -> None:
        def op(conn: sqlite3.Connection) -> None:
            for scope, slots in held.items():
                row = conn.execute("SELECT slots FROM quota_slots WHERE scope = ?", (scope,)).fetchone()
                if row is not None:
                    current = orjson.loads(row[0])
                    current.update({s: until_ms for s in slots if s in current})
                    conn.execute("UPDATE quota_slots SET slots = ? WHERE scope = ?",
                                 (orjson.dumps(current).decode(), scope))

        await self._write(op)

    async def release_slot(self: _Connections, scope: str, slot: str) -> None:
        def op(conn: sqlite3.Connection) -> None:
            row = conn.execute("SELECT slots FROM quota_slots WHERE scope = ?", (scope,)).fetchone()
            if row is not None:
                current = orjson.loads(row[0])
                current.pop(slot, None)
                conn.execute("UPDATE quota_slots SET slots = ? WHERE scope = ?",
                             (orjson.dumps(current).decode(), scope))

        await self._write(op)

    async def add_usage(self: _Connections, rows: list[UsageRow]) -> None:
        counts = UsageRow.COUNTS
        await self._write(lambda conn: conn.executemany(
            f"INSERT INTO usage_daily (day, key, project, model, {', '.join(counts)}) VALUES "
            f"(?, ?, ?, ?, {', '.join('?' * len(counts))}) ON CONFLICT (day, key, project, model) DO UPDATE SET "
            + ", ".join(f"{c} = {c} + excluded.{c}" for c in counts),
            [(r.day, r.key, r.project, r.model, *(getattr(r, c) for c in counts)) for r in rows]))

    async def list_usage(self: _Connections, *, since: str, until: str, key: str | None = None,
                         project: str | None = None) -> list[UsageRow]:
        query = f"SELECT day, key, project, model, {', '.join(UsageRow.COUNTS)} FROM usage_daily " \
                "WHERE day >= ? AND day <= ?"
        args: list[Any] = [since, until]
        if key is not None:
            query += " AND key = ?"
            args.append(key)
        if project is not None:
            query += " AND project = ?"
            args.append(project)
        rows = self._read().execute(query + " ORDER BY day, key, project, model", args).fetchall()
        return [UsageRow(*r) for r in rows]
