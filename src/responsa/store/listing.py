"""The SQL of a response listing (`Store.list_responses`), for SQLite and PostgreSQL alike.

Pages walk the index on (owner, created_at, id) (or on (created_at, id) for the admin key,
which lists every owner's): the newest page of 100k responses reads its rows and stops. Filters
on columns (status, dates) cost nothing more; those on the stored body (model, metadata) and
the text search are checked row by row along the index until the page is full, so a rare
match costs a longer walk. The text search is a substring scan of the stored JSON of the
response's items (case-insensitive; SQLite folds ASCII letters only), not a full-text index:
so that it costs a bounded time, one page looks through at most SEARCH_WINDOW responses, and
when they run out before the page is full it says where the next page goes on from.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from . import ResponseQuery


def like_pattern(text: str) -> str:
    """A LIKE pattern (escape character `!`) finding `text` inside stored JSON: the text as it is
    written inside a JSON string (quotes and backslashes escaped), with LIKE's wildcards escaped."""
    inner = orjson.dumps(text).decode()[1:-1]
    return "%" + inner.replace("!", "!!").replace("%", "!%").replace("_", "!_") + "%"


SEARCH_WINDOW = 2000  # responses one text-search page looks through at most (a substring scan: bounded)


@dataclass(frozen=True)
class Listing:
    """A listing's SQL: `sql` selects id, owner, body (and on PostgreSQL the output items' data
    as an array), `limit + 1` rows; `reverse`: they come in the reverse of the page's order.
    With a text search, `edge` selects the last response the page may look through (none when
    fewer are left), where the next page goes on from."""

    sql: str
    args: list[Any]
    reverse: bool
    edge: tuple[str, list[Any]] | None = None


class _Builder:
    def __init__(self, postgres: bool) -> None:
        self.postgres = postgres
        self.args: list[Any] = []

    def arg(self, value: Any) -> str:
        self.args.append(value)
        return f"${len(self.args)}" if self.postgres else "?"

    def filters(self, query: ResponseQuery, now: int, descending: bool) -> str:
        """The WHERE clause of every filter but the text search, the cursors included."""
        arg = self.arg
        # PostgreSQL's JSON refuses the escape of U+0000 anywhere in a document: each becomes U+FFFD
        # (the same length, still an escape; where it was an escaped backslash's tail, still valid).
        body = r"replace(convert_from(r.body, 'UTF8'), '\u0000', '\ufffd')::jsonb" if self.postgres \
            else "CAST(r.body AS TEXT)"
        where = [f"r.expires_at > {arg(now)}", "NOT r.ephemeral" if self.postgres else "r.ephemeral = 0"]
        if query.owner is not None:
            where.append(f"r.owner = {arg(query.owner)}")
        if query.status is not None:
            where.append(f"r.status = {arg(query.status)}")
        if query.previous_response_id is not None:
            where.append(f"r.previous_response_id = {arg(query.previous_response_id)}")
        if query.created_after is not None:
            where.append(f"r.created_at > {arg(query.created_after)}")
        if query.created_before is not None:
            where.append(f"r.created_at < {arg(query.created_before)}")
        if query.model is not None:
            where.append(f"{body} ->> 'model' = {arg(query.model)}" if self.postgres
                         else f"json_extract({body}, '$.model') = {arg(query.model)}")
        for key, value in query.metadata:
            if self.postgres:
                where.append(f"{body} -> 'metadata' ->> {arg(key)} = {arg(value)}")
            else:
                where.append(f"EXISTS (SELECT 1 FROM json_each({body}, '$.metadata') m "
                             f"WHERE m.key = {arg(key)} AND m.value = {arg(value)})")

        def beyond(cursor: str, later: bool) -> str:
            """Rows past the cursor in the reading order; an unknown (or, for a key, another owner's)
            cursor compares with NULL, which makes an empty page."""
            position = f"(SELECT created_at FROM responses WHERE id = {arg(cursor)}"
            position += f" AND owner = {arg(query.owner)})" if query.owner is not None else ")"
            return f"(r.created_at, r.id) {'<' if later else '>'} ({position}, {arg(cursor)})"

        if query.after is not None:
            where.append(beyond(query.after, descending))
            if query.before is not None:  # both: the rows between them
                where.append(beyond(query.before, not descending))
        elif query.before is not None:
            where.append(beyond(query.before, descending))
        return " AND ".join(where)


def listing_sql(query: ResponseQuery, now: int, *, postgres: bool) -> Listing:
    """The SQL of one page of `query`."""
    descending = query.order != "asc"
    # `before` alone: the rows just before it, read backwards from it and turned round by the caller.
    reverse = query.before is not None and query.after is None
    if reverse:
        descending = not descending
    direction = "DESC" if descending else "ASC"
    order = f"ORDER BY r.created_at {direction}, r.id {direction}"
    output = (", (SELECT array_agg(i.data ORDER BY i.position) FROM items i "
              "WHERE i.response_id = r.id AND i.kind = 1)") if postgres else ""
    built = _Builder(postgres)
    where = built.filters(query, now, descending)
    if not query.text:
        sql = f"SELECT r.id, r.owner, r.body{output} FROM responses r WHERE {where} {order} " \
              f"LIMIT {built.arg(query.limit + 1)}"
        return Listing(sql, built.args, reverse)
    scanned = f"SELECT r.id, r.created_at FROM responses r WHERE {where} {order} LIMIT {built.arg(SEARCH_WINDOW)}"
    data = "convert_from(i.data, 'UTF8') ILIKE" if postgres else "CAST(i.data AS TEXT) LIKE"
    # PostgreSQL is told the order of the work: first the window, then each of its responses checked
    # by its own items (OFFSET 0 keeps the check from becoming a join with every item stored).
    found = (f"EXISTS (SELECT 1 FROM items i WHERE i.response_id = r.id "
             f"AND {data} {built.arg(like_pattern(query.text))} ESCAPE '!'{' OFFSET 0' if postgres else ''})")
    if postgres:
        sql = (f"WITH scanned AS MATERIALIZED ({scanned}) SELECT r.id, r.owner, r.body{output} FROM scanned s "
               f"JOIN responses r ON r.id = s.id WHERE {found} ORDER BY s.created_at {direction}, s.id {direction} "
               f"LIMIT {built.arg(query.limit + 1)}")
    else:
        sql = (f"SELECT r.id, r.owner, r.body FROM responses r WHERE r.id IN (SELECT id FROM ({scanned})) "
               f"AND {found} {order} LIMIT {built.arg(query.limit + 1)}")
    edge = _Builder(postgres)
    edge_where = edge.filters(query, now, descending)
    edge_sql = f"SELECT r.id FROM responses r WHERE {edge_where} {order} LIMIT 1 OFFSET {edge.arg(SEARCH_WINDOW - 1)}"
    return Listing(sql, built.args, reverse, (edge_sql, edge.args))
