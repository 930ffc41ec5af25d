"""The group writer's own rules (store/pgbatch.py), with a database whose answers the test
releases one by one; test_store_contract.py runs it on a real PostgreSQL."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from responsa.errors import InvalidRequest, ServiceUnavailable
from responsa.store.pgbatch import GroupWriter

pytestmark = pytest.mark.anyio


class Database:
    """Records each round trip and holds it until the test lets it answer."""

    def __init__(self) -> None:
        self.trips: list[tuple[list[tuple[Any, ...]], asyncio.Future[None]]] = []
        self.refuse: set[Any] = set()  # argument tuples that fail their transaction

    async def one(self, args: tuple[Any, ...]) -> None:
        await self._trip([args])

    async def many(self, rows: list[tuple[Any, ...]]) -> None:
        await self._trip(rows)

    async def _trip(self, rows: list[tuple[Any, ...]]) -> None:
        answer: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.trips.append((rows, answer))
        await answer
        if any(row in self.refuse for row in rows):
            raise InvalidRequest("refused")

    def answer(self, trip: int, error: BaseException | None = None) -> None:
        fut = self.trips[trip][1]
        if error is None:
            fut.set_result(None)
        else:
            fut.set_exception(error)


def write(writer: GroupWriter, key: str, args: tuple[Any, ...]) -> asyncio.Future[None]:
    return asyncio.ensure_future(writer.write(key, args))


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_writes_made_meanwhile_share_the_next_round_trip() -> None:
    db = Database()
    writer = GroupWriter(db.one, db.many, in_flight=1)
    first = write(writer, "a", ("a",))
    await settle()
    assert [rows for rows, _ in db.trips] == [[("a",)]]  # alone and at once on a quiet server
    later = [write(writer, k, (k,)) for k in "bcd"]
    await settle()
    assert len(db.trips) == 1  # one batch on the wire at a time here: the others wait for it
    db.answer(0)
    await settle()
    assert first.done() and not any(f.done() for f in later)  # nothing acknowledged before its commit
    assert [rows for rows, _ in db.trips][1] == [("b",), ("c",), ("d",)]
    db.answer(1)
    await settle()
    assert all(f.done() and f.exception() is None for f in later)
    assert (writer.batches, writer.writes) == (2, 4)


async def test_a_key_waits_while_a_write_of_it_is_on_the_wire() -> None:
    db = Database()
    writer = GroupWriter(db.one, db.many, in_flight=2)
    old = write(writer, "x", ("x", "old"))
    await settle()
    new = write(writer, "x", ("x", "new"))
    other = write(writer, "y", ("y",))
    await settle()
    # A second batch may go while the first is on the wire, but not with x in it.
    assert [rows for rows, _ in db.trips] == [[("x", "old")], [("y",)]]
    db.answer(1)
    await settle()
    assert other.done() and not new.done() and len(db.trips) == 2
    db.answer(0)
    await settle()
    assert old.done()
    assert [rows for rows, _ in db.trips][2] == [("x", "new")]
    db.answer(2)
    await settle()
    assert new.done() and new.exception() is None


async def test_a_refused_write_fails_alone_and_an_outage_fails_them_all() -> None:
    db = Database()
    writer = GroupWriter(db.one, db.many, in_flight=1)
    db.refuse.add(("bad",))
    busy = write(writer, "busy", ("busy",))
    await settle()
    futs = [write(writer, k, (k,)) for k in ("ok1", "bad", "ok2")]
    await settle()
    db.answer(0)
    await settle()
    assert busy.done() and db.trips[1][0] == [("ok1",), ("bad",), ("ok2",)]
    db.answer(1)  # the batch fails as a whole: each write goes again alone
    for trip in range(2, 5):
        await settle()
        assert db.trips[trip][0] == [(("ok1",), ("bad",), ("ok2",))[trip - 2]]
        db.answer(trip)
    await settle()
    assert [f.exception() for f in futs][0::2] == [None, None]
    assert isinstance(futs[1].exception(), InvalidRequest)

    busy = write(writer, "busy", ("busy",))
    await settle()
    down = [write(writer, k, (k,)) for k in ("p", "q")]
    await settle()
    db.answer(5)
    await settle()
    db.answer(6, ServiceUnavailable("The database is unavailable; try again shortly."))
    await settle()
    assert len(db.trips) == 7  # not retried one by one: the database is away for all of them
    assert all(isinstance(f.exception(), ServiceUnavailable) for f in down)


async def test_close_waits_for_what_is_queued_or_on_the_wire() -> None:
    db = Database()
    writer = GroupWriter(db.one, db.many, in_flight=1)
    futs = [write(writer, k, (k,)) for k in "ab"]
    await settle()
    closing = asyncio.ensure_future(writer.close())
    await settle()
    assert not closing.done()
    db.answer(0)
    await settle()
    assert not closing.done()
    db.answer(1)
    await asyncio.wait_for(closing, 1)
    assert all(f.done() and f.exception() is None for f in futs)
