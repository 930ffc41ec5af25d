"""PostgreSQL: API keys' limits, quota windows and slots, usage, mixed into PostgresStore (see the
Store protocol). As everywhere in the PostgreSQL store, each operation is one statement: a
window's count and a scope's slots are changed by upserts, whose conflict branch PostgreSQL
evaluates against the row's latest version, so two replicas counting at once both count."""

from __future__ import annotations

from typing import Any, Protocol

import asyncpg
import orjson

from . import KeyRecord, Limits, UsageRow

KEY_COLUMNS = "id, name, owner, hash, created_at, project, rotated_at, revoked_at, requests_per_minute, limits"
FIND_KEY = (f"SELECT {', '.join('k.' + c for c in KEY_COLUMNS.split(', '))}, p.limits FROM api_keys k "
            "LEFT JOIN project_limits p ON p.project = k.project WHERE k.hash = $1 AND k.revoked_at IS NULL")
_LIVE = "(SELECT jsonb_object_agg(k, v) FROM jsonb_each(quota_slots.slots) AS e(k, v) WHERE v::bigint > $4)"


class _Statements(Protocol):
    async def _fetch(self, query: str, *args: Any) -> list[asyncpg.Record]: ...

    async def _fetchval(self, query: str, *args: Any) -> Any: ...

    async def _execute(self, query: str, *args: Any) -> str: ...


def key_record(row: Any) -> KeyRecord:
    project_limits = Limits(**orjson.loads(row[10])) if len(row) > 10 and row[10] is not None else None
    return KeyRecord(id=row[0], name=row[1], owner=row[2], hash=row[3], created_at=row[4], project=row[5],
                     rotated_at=row[6], revoked_at=row[7], limits=Limits.from_columns(row[8], row[9]),
                     project_limits=project_limits)


def key_values(key: KeyRecord) -> tuple:
    return (key.id, key.name, key.owner, key.hash, key.created_at, key.project, key.rotated_at, key.revoked_at,
            key.limits.requests_per_minute, key.limits.extra_json())


class PostgresQuotas:
    async def set_key_limits(self: _Statements, key_id: str, limits: Limits) -> bool:
        status = await self._execute("UPDATE api_keys SET requests_per_minute = $1, limits = $2 WHERE id = $3 "
                                     "AND revoked_at IS NULL", limits.requests_per_minute, limits.extra_json(), key_id)
        return status == "UPDATE 1"

    async def set_project_limits(self: _Statements, project: str, limits: Limits) -> None:
        if not limits.any():
            await self._execute("DELETE FROM project_limits WHERE project = $1", project)
            return
        value = orjson.dumps({k: v for k, v in limits.__dict__.items() if v is not None}).decode()
        await self._execute("INSERT INTO project_limits (project, limits) VALUES ($1, $2) ON CONFLICT (project) "
                            "DO UPDATE SET limits = EXCLUDED.limits", project, value)

    async def get_project_limits(self: _Statements) -> dict[str, Limits]:
        rows = await self._fetch("SELECT project, limits FROM project_limits ORDER BY project")
        return {r[0]: Limits(**orjson.loads(r[1])) for r in rows}

    async def take_windows(self: _Statements, windows: list[tuple[str, int]],
                           now_ms: int) -> list[tuple[int, int, int]]:
        rows = await self._fetch(
            """
            INSERT INTO rate_windows AS w (scope, span, started, requests, tokens)
            SELECT scope, span, $3, 1, 0 FROM unnest($1::text[], $2::bigint[]) AS t(scope, span)
            ON CONFLICT (scope, span) DO UPDATE SET
                requests = CASE WHEN w.started + w.span <= EXCLUDED.started THEN 1 ELSE w.requests + 1 END,
                tokens = CASE WHEN w.started + w.span <= EXCLUDED.started THEN 0 ELSE w.tokens END,
                started = CASE WHEN w.started + w.span <= EXCLUDED.started THEN EXCLUDED.started ELSE w.started END
            RETURNING scope, span, requests, tokens, started
            """, [s for s, _ in windows], [n for _, n in windows], now_ms)
        found = {(r[0], r[1]): (r[2], r[3], r[4]) for r in rows}
        return [found[w] for w in windows]

    async def add_window_tokens(self: _Statements, windows: list[tuple[str, int]], tokens: int) -> None:
        await self._execute(
            "UPDATE rate_windows AS w SET tokens = w.tokens + $3 FROM unnest($1::text[], $2::bigint[]) "
            "AS t(scope, span) WHERE w.scope = t.scope AND w.span = t.span",
            [s for s, _ in windows], [n for _, n in windows], tokens)

    async def take_slot(self: _Statements, scope: str, slot: str, limit: int, now_ms: int, until_ms: int) -> bool:
        # $4 (now) drops slots whose time ran out; the WHERE sees the row as the last writer left it.
        taken = await self._fetchval(
            f"""
            INSERT INTO quota_slots AS quota_slots (scope, slots) VALUES ($1, jsonb_build_object($2::text, $5::bigint))
            ON CONFLICT (scope) DO UPDATE SET slots = coalesce({_LIVE}, '{{}}'::jsonb)
                || jsonb_build_object($2::text, $5::bigint)
            WHERE (SELECT count(*) FROM jsonb_each(quota_slots.slots) AS e(k, v) WHERE v::bigint > $4) < $3
            RETURNING 1
            """, scope, slot, limit, now_ms, until_ms)
        return taken is not None

    async def renew_slots(self: _Statements, held: dict[str, list[str]], until_ms: int) -> None:
        for scope, slots in held.items():
            await self._execute(
                "UPDATE quota_slots SET slots = slots || coalesce((SELECT jsonb_object_agg(s, $3::bigint) "
                "FROM unnest($2::text[]) AS s WHERE slots ? s), '{}'::jsonb) WHERE scope = $1", scope, slots, until_ms)

    async def release_slot(self: _Statements, scope: str, slot: str) -> None:
        await self._execute("UPDATE quota_slots SET slots = slots - $2::text WHERE scope = $1", scope, slot)

    async def add_usage(self: _Statements, rows: list[UsageRow]) -> None:
        counts = UsageRow.COUNTS
        columns = [[r.day for r in rows], [r.key for r in rows], [r.project for r in rows], [r.model for r in rows],
                   *([getattr(r, c) for r in rows] for c in counts)]
        await self._execute(
            f"INSERT INTO usage_daily AS u (day, key, project, model, {', '.join(counts)}) "
            f"SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], "
            f"{', '.join(f'${i}::bigint[]' for i in range(5, 5 + len(counts)))}) "
            "ON CONFLICT (day, key, project, model) DO UPDATE SET "
            + ", ".join(f"{c} = u.{c} + EXCLUDED.{c}" for c in counts), *columns)

    async def list_usage(self: _Statements, *, since: str, until: str, key: str | None = None,
                         project: str | None = None) -> list[UsageRow]:
        rows = await self._fetch(
            f"SELECT day, key, project, model, {', '.join(UsageRow.COUNTS)} FROM usage_daily "
            "WHERE day >= $1 AND day <= $2 AND ($3::text IS NULL OR key = $3) AND ($4::text IS NULL OR project = $4) "
            "ORDER BY day, key, project, model", since, until, key, project)
        return [UsageRow(*r) for r in rows]
