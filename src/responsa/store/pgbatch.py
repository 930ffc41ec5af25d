"""Group commit for PostgreSQL: the same write from many requests, sent together.

Under load, many requests end at about the same time and each writes its response with the
same statement. One at a time, each costs the gateway a round trip (encode, send, wake on the
answer) and the database a transaction and a WAL flush. Here a write made while IN_FLIGHT
batches are on the wire waits, with every other made meanwhile, for the next batch, and a
batch is one `executemany`: asyncpg
sends all its Bind/Execute messages at once behind one Sync, so the batch is one round trip
and one transaction, atomic. Nothing is acknowledged before the transaction holding it has
committed, exactly as for a write sent alone.

A batch that fails as a whole for a reason other than an outage (a value one request got
past the checks, say) is sent again one write at a time, so that only the culprit's caller
sees the error. A quiet server sends each write alone and at once, from its caller's task.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Any

from ..errors import ServiceUnavailable

MAX_BATCH = 64  # writes per round trip; more would hold the first caller for the last one's bytes
IN_FLIGHT = 2  # batches on the wire at once (each on its own pooled connection)

Entry = tuple[Hashable, tuple[Any, ...], "asyncio.Future[None]"]  # key, arguments, the caller's future


class GroupWriter:
    """Runs one statement for many callers, in batches of distinct keys: a key already in a
    batch (an upsert cannot touch one row twice in a transaction) or on the wire waits for the
    next, so two writes of one key land in the order they were made."""

    def __init__(self, execute: Callable[[tuple[Any, ...]], Awaitable[Any]],
                 execute_many: Callable[[list[tuple[Any, ...]]], Awaitable[Any]], *,
                 max_batch: int = MAX_BATCH, in_flight: int = IN_FLIGHT) -> None:
        self._execute = execute
        self._execute_many = execute_many
        self._max_batch = max_batch
        self._in_flight = in_flight
        self._queue: list[Entry] = []
        self._flying = 0
        self._flying_keys: set[Hashable] = set()  # a key on the wire waits for its batch to end
        self._scheduled = False
        self._tasks: set[asyncio.Task] = set()
        self.batches = 0  # sent so far, and the writes in them (benchmarks/per_core.py reads both)
        self.writes = 0

    async def write(self, key: Hashable, args: tuple[Any, ...]) -> None:
        """One write, returning once it is committed."""
        if self._queue or self._flying >= self._in_flight or key in self._flying_keys:
            await self._queued(key, args)
            return
        # Nothing waits and a slot is free: sent at once from the caller's own task (no batch
        # task, no turn of the loop; the quiet server's path).
        self._flying += 1
        self._flying_keys.add(key)
        self.batches += 1
        self.writes += 1
        try:
            await self._execute(args)
        finally:
            self._flying -= 1
            self._flying_keys.discard(key)
            if self._queue:
                self._schedule(asyncio.get_running_loop())

    def _queued(self, key: Hashable, args: tuple[Any, ...]) -> asyncio.Future[None]:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        self._queue.append((key, args, fut))
        self._schedule(loop)
        return fut

    def _schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        if not self._scheduled and self._flying < self._in_flight:
            self._scheduled = True
            loop.call_soon(self._start)

    def _start(self) -> None:
        self._scheduled = False
        loop = asyncio.get_running_loop()
        while self._queue and self._flying < self._in_flight:
            batch: list[Entry] = []
            rest: list[Entry] = []
            keys = self._flying_keys
            for entry in self._queue:
                if len(batch) < self._max_batch and entry[0] not in keys:
                    keys.add(entry[0])
                    batch.append(entry)
                else:
                    rest.append(entry)
            self._queue = rest
            if not batch:
                return  # every write left waits for a batch on the wire (it reschedules when done)
            self._flying += 1
            task = loop.create_task(self._send(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _send(self, batch: list[Entry]) -> None:
        self.batches += 1
        self.writes += len(batch)
        try:
            if len(batch) == 1:
                await self._execute(batch[0][1])
            else:
                await self._execute_many([args for _, args, _ in batch])
        except ServiceUnavailable as e:  # the database is away: every write in it failed alike
            for _, _, fut in batch:
                _fail(fut, e)
        except Exception as e:
            if len(batch) == 1:
                _fail(batch[0][2], e)
            else:  # one bad write spoils the transaction: each again alone, to find it
                for _, args, fut in batch:
                    try:
                        await self._execute(args)
                    except Exception as alone:
                        _fail(fut, alone)
                    else:
                        _succeed(fut)
        except BaseException:  # cancelled (the store closing): nobody is left waiting
            for _, _, fut in batch:
                _fail(fut, ServiceUnavailable("The store is closing."))
            raise
        else:
            for _, _, fut in batch:
                _succeed(fut)
        finally:
            self._flying -= 1
            self._flying_keys.difference_update(key for key, _, _ in batch)
            if self._queue:
                self._schedule(asyncio.get_running_loop())

    async def close(self) -> None:
        """Wait for the writes already queued or on the wire."""
        while self._tasks or self._queue or self._flying:
            if self._tasks:
                await asyncio.gather(*self._tasks, return_exceptions=True)
            else:  # a write sent from its caller's task, or a queue about to start
                await asyncio.sleep(0.005)


def _succeed(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


def _fail(fut: asyncio.Future[None], error: BaseException) -> None:
    if not fut.done():
        fut.set_exception(error)
        fut.exception()  # retrieved: a caller that went away leaves no "never retrieved" warning
