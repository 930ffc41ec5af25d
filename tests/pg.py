"""Throwaway PostgreSQL databases for tests: created per session, dropped at the end.

The server is found at RESPONSA_TEST_POSTGRES (default postgresql://postgres@127.0.0.1:5432/test,
trust auth); tests that need it skip when it does not answer (CI makes the skip a failure).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import uuid
from urllib.parse import urlsplit, urlunsplit

import pytest

ADMIN_URL = os.environ.get("RESPONSA_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


def url_for(database: str) -> str:
    """The admin URL with another database name."""
    parts = urlsplit(ADMIN_URL)
    return urlunsplit(parts._replace(path="/" + database))


def admin(sql: str, *args: object) -> list:
    """Run one statement on the admin database (outside any transaction)."""
    return admin_on(ADMIN_URL, sql, *args)


def admin_on(url: str, sql: str, *args: object) -> list:
    """Run one statement on the database at `url`."""
    import asyncpg

    async def run() -> list:
        conn = await asyncpg.connect(url, timeout=5)
        try:
            return await conn.fetch(sql, *args)
        finally:
            await conn.close()

    # In a thread of its own: callers may be inside a running event loop.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, run()).result()


def create_database(prefix: str = "responsa_test") -> str:
    """A new empty database; returns its URL. Skips the test when PostgreSQL is unreachable."""
    try:
        import asyncpg  # noqa: F401
    except ImportError:
        pytest.skip("asyncpg is not installed")
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    try:
        admin(f'CREATE DATABASE "{name}"')
    except (OSError, TimeoutError) as e:
        pytest.skip(f"PostgreSQL is not reachable at {ADMIN_URL}: {e}")
    return url_for(name)


def drop_database(url: str) -> None:
    name = urlsplit(url).path.lstrip("/")
    admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def set_outage(url: str, down: bool) -> None:
    """Make the database refuse connections and cut the open ones (or allow them again).

    Only this database is affected; the PostgreSQL service keeps running.
    """
    name = urlsplit(url).path.lstrip("/")
    admin(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {"false" if down else "true"}')
    if down:
        admin("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> "
              "pg_backend_pid()", name)


def terminate(url: str, application_name: str) -> int:
    """Cut the connections of one application to this database; returns how many."""
    name = urlsplit(url).path.lstrip("/")
    rows = admin("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 "
                 "AND application_name = $2", name, application_name)
    return len(rows)


async def logged() -> None:
    """Let a query log catch up: asyncpg calls a query logger one turn of the loop after the query."""
    for _ in range(3):
        await asyncio.sleep(0)
