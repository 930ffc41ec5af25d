"""Connections to PostgreSQL: a small bounded pool, and which errors mean "the database is away"."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

import asyncpg

from ..errors import InvalidRequest, ServiceUnavailable

log = logging.getLogger("responsa.store")

CONNECT_TIMEOUT = 5.0
ACQUIRE_TIMEOUT = 10.0
MAX_IDLE = 300.0  # seconds an idle pooled connection is kept

# SQLSTATE classes that mean "the database is not there right now", not "the query is wrong":
# connection exception, insufficient resources, operator intervention (shutdown, terminate),
# transaction rollback (serialization failure, deadlock: worth a retry).
_UNAVAILABLE_CLASSES = ("08", "53", "57", "40")


def is_outage(error: BaseException) -> bool:
    """Whether this error means the database cannot be reached (a 503), not a wrong query."""
    if isinstance(error, asyncpg.DataError | asyncpg.exceptions.ClientConfigurationError):
        return False
    if isinstance(error, OSError | TimeoutError | asyncpg.InterfaceError | asyncpg.PostgresConnectionError):
        return True
    if isinstance(error, asyncpg.exceptions.InternalClientError):
        return True  # e.g. a query racing the server's "terminating connection" message
    if isinstance(error, asyncpg.PostgresError):
        return (error.sqlstate or "")[:2] in _UNAVAILABLE_CLASSES
    return False


def unstorable(error: BaseException) -> InvalidRequest | None:
    """The 400 for a value PostgreSQL text cannot hold (U+0000), had one slipped past the
    request checks (checks.storable): the client's input, not a server failure."""
    if isinstance(error, asyncpg.CharacterNotInRepertoireError | asyncpg.UntranslatableCharacterError):
        return InvalidRequest("A value of the request cannot be stored: it contains U+0000 (NUL).",
                              code="invalid_value")
    return None


def unavailable(error: BaseException) -> ServiceUnavailable:
    """The 503 a caller sees for an outage (the cause goes to the log only)."""
    log.warning("database unavailable: %s: %s", type(error).__name__, error)
    return ServiceUnavailable("The database is unavailable; try again shortly.", headers={"retry-after": "1"})


class Pool:
    """At most `size` connections, reused newest first; broken and long-idle ones are dropped.

    Leaner than asyncpg's pool, which spends a task on every release (asyncio.shield) and a
    reset round trip unless told otherwise: here a connection changes hands for free. No
    session state is ever set and no transaction outlives a call, so nothing needs a reset.
    """

    def __init__(self, connect: Callable[[], Awaitable[asyncpg.Connection]], size: int) -> None:
        self._connect = connect
        self._slots = asyncio.Semaphore(size)
        self._idle: list[tuple[asyncpg.Connection, float]] = []
        self.closed = False

    async def acquire(self) -> asyncpg.Connection:
        if self._slots.locked():
            try:
                async with asyncio.timeout(ACQUIRE_TIMEOUT):
                    await self._slots.acquire()
            except TimeoutError:
                raise ServiceUnavailable("Every database connection is busy; try again shortly.",
                                         headers={"retry-after": "1"}) from None
        else:
            await self._slots.acquire()  # free: returns at once
        now = time.monotonic()
        while self._idle:
            conn, since = self._idle.pop()
            if not conn.is_closed() and now - since < MAX_IDLE:
                return conn
            _drop(conn)
        try:
            return await self._connect()
        except BaseException as e:
            self._slots.release()
            if isinstance(e, Exception):
                raise unavailable(e) from e
            raise

    def release(self, conn: asyncpg.Connection, broken: bool = False) -> None:
        if broken or self.closed or conn.is_closed():
            _drop(conn)
        else:
            self._idle.append((conn, time.monotonic()))
        self._slots.release()

    async def close(self) -> None:
        self.closed = True
        idle, self._idle = self._idle, []
        for conn, _ in idle:
            try:
                async with asyncio.timeout(2):
                    await conn.close()
            except Exception:
                _drop(conn)


def _drop(conn: asyncpg.Connection) -> None:
    if not conn.is_closed():
        conn.terminate()


def keeps_connection(error: BaseException) -> bool:
    """Whether a connection that raised this is still fit for the next caller."""
    return isinstance(error, asyncpg.PostgresError) and not is_outage(error)
