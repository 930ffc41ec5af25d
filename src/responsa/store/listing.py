"""The SQL of a response listing (`Store.list_responses`), for SQLite and PostgreSQL alike.

Pages walk the index on (owner, created_at, id) (or on (created_at, id) for the admin key,
which lists every owner's): the newest page of 100k responses reads its rows and stops. Filters
on columns (status, dates) cost nothing more; those on the stored body (model, metadata) and
the text search are checked row by row along the index until the page is full, so a rare
match costs a longer walk. The text search is a substring scan of the stored JSON of the
response's items (case-insensitive; SQLite folds ASCII letters only), not a full-text index.
"""

from __future__ import annotations

from typing import Any

import orjson

from . import ResponseQuery


def like_pattern(text: str) -> str:
    """A LIKE pattern (escape character `!`) finding `text` inside stored JSON: the text as it is
    written inside a JSON string (quotes and backslashes escaped), with LIKE's wildcards escaped."""
    inner = orjson.dumps(text).decode()[1:-1]
    return "%" + inner.replace("!", "!!").replace("%", "!%").replace("_", "!_") + "%"


def listing_sql(query: ResponseQuery, now: int, *, postgres: bool) -> tuple[str, list[Any], bool]:
    """(SQL, arguments, whether its rows come in the reverse of the page's order). The SQL selects
    id, owner, body (and on PostgreSQL the output items' data as an array), `limit + 1` rows."""
    args: list[Any] = []

    def arg(value: Any) -> str:
        args.append(value)
        return f"${len(args)}" if postgres else "?"

    body = "convert_from(r.body, 'UTF8')::jsonb" if postgres else "CAST(r.body AS TEXT)"
    where = [f"r.expires_at > {arg(now)}", "NOT r.ephemeral" if postgres else "r.ephemeral = 0"]
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
        where.append(f"{body} ->> 'model' = {arg(query.model)}" if postgres
                     else f"json_extract({body}, '$.model') = {arg(query.model)}")
    for key, value in query.metadata:
        if postgres:
            where.append(f"{body} -> 'metadata' ->> {arg(key)} = {arg(value)}")
        else:
            where.append(f"EXISTS (SELECT 1 FROM json_each({body}, '$.metadata') m "
                         f"WHERE m.key = {arg(key)} AND m.value = {arg(value)})")
    if query.text:
        data = "convert_from(i.data, 'UTF8') ILIKE" if postgres else "CAST(i.data AS TEXT) LIKE"
        where.append(f"EXISTS (SELECT 1 FROM items i WHERE i.response_id = r.id "
                     f"AND {data} {arg(like_pattern(query.text))} ESCAPE '!')")
    descending = query.order != "asc"
    # `before` alone: the rows just before it, read backwards from it and turned round by the caller.
    reverse = query.before is not None and query.after is None
    if reverse:
        descending = not descending

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
    direction = "DESC" if descending else "ASC"
    output = (", (SELECT array_agg(i.data ORDER BY i.position) FROM items i "
              "WHERE i.response_id = r.id AND i.kind = 1)") if postgres else ""
    sql = (f"SELECT r.id, r.owner, r.body{output} FROM responses r WHERE {' AND '.join(where)} "
           f"ORDER BY r.created_at {direction}, r.id {direction} LIMIT {arg(query.limit + 1)}")
    return sql, args, reverse
