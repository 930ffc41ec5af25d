"""Several processes on one SQLite database (store/processes.py): stores opened with shared=True.

Two stores in this process stand for two worker processes: each has its own connections, writer
lock descriptor, counter mapping and notification socket, as a process would.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from responsa.errors import NotFound
from responsa.store import ResponseRecord
from responsa.store.sqlite import SQLiteStore

pytestmark = pytest.mark.anyio


def record(rid: str, prev: str | None = None, status: str = "completed") -> ResponseRecord:
    now = int(time.time())
    return ResponseRecord(id=rid, owner="alice", created_at=now, expires_at=now + 3600, status=status,
                          body={"id": rid, "object": "response", "status": status}, previous_response_id=prev)


def msg(item_id: str, text: str) -> dict:
    return {"id": item_id, "type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}


@pytest.fixture
async def pair(tmp_path: Path, anyio_backend: str) -> AsyncIterator[tuple[SQLiteStore, SQLiteStore]]:
    path = str(tmp_path / "responsa.db")
    a, b = SQLiteStore(path, shared=True), SQLiteStore(path, shared=True)
    await a.open()
    await b.open()
    yield a, b
    await a.close()
    await b.close()


async def test_a_response_is_committed_before_its_writer_answers(pair) -> None:
    a, b = pair
    # A process alone may answer before its commit (it lands before the process reads anything
    # new); another process may get the client's next request at once.
    await a.save_response(record("resp_1"), [msg("o1", "out")], [msg("i1", "in")], wait=False)
    got = await b.get_response("resp_1", "alice")
    assert got is not None and got["output"][0]["id"] == "o1"


async def test_a_delete_by_one_process_ends_the_chains_the_other_cached(pair) -> None:
    a, b = pair
    await a.save_response(record("resp_1"), [msg("o1", "one")], [msg("i1", "q1")])
    assert [link.id for link in await b.load_chain("resp_1", "alice")] == ["resp_1"]  # cached by b
    await b.save_response(record("resp_2", prev="resp_1"), [msg("o2", "two")], [msg("i2", "q2")])
    assert await a.delete_response("resp_1", "alice")
    # b knows resp_2's parent and has the chain up to it cached; resp_1 is gone all the same.
    with pytest.raises(NotFound, match="resp_1"):
        await b.load_chain("resp_2", "alice")


async def test_notifications_reach_the_other_process_only_once(pair) -> None:
    a, b = pair
    seen_a: asyncio.Queue = asyncio.Queue()
    seen_b: asyncio.Queue = asyncio.Queue()
    a.on_notify(lambda channel, rid: seen_a.put_nowait((channel, rid)))
    b.on_notify(lambda channel, rid: seen_b.put_nowait((channel, rid)))
    await a.notify("events", "resp_x")
    await a.notify("cancel", "resp_y")
    async with asyncio.timeout(5):
        assert await seen_b.get() == ("events", "resp_x")
        assert await seen_b.get() == ("cancel", "resp_y")
    assert [seen_a.get_nowait(), seen_a.get_nowait()] == [("events", "resp_x"), ("cancel", "resp_y")]
    await asyncio.sleep(0.05)
    assert seen_a.empty() and seen_b.empty()


async def test_a_peer_that_went_away_is_forgotten(tmp_path: Path, anyio_backend: str) -> None:
    path = str(tmp_path / "responsa.db")
    a, b = SQLiteStore(path, shared=True), SQLiteStore(path, shared=True)
    await a.open()
    await b.open()
    await b.close()
    try:
        await a.notify("events", "resp_x")  # no error for the peer that left
        assert len(list((tmp_path / "responsa.db-peers").iterdir())) == 1
    finally:
        await a.close()


async def test_writes_of_both_processes_interleave(pair) -> None:
    a, b = pair
    await asyncio.gather(*(store.save_response(record(f"resp_{n}"), [msg(f"o{n}", "x")], [msg(f"i{n}", "y")])
                           for n in range(200) for store in ([a] if n % 2 else [b])))
    for n in range(200):
        assert await a.get_response(f"resp_{n}", "alice") is not None


async def test_one_server_per_data_dir(tmp_path: Path, anyio_backend: str) -> None:
    alone = SQLiteStore(str(tmp_path / "responsa.db"))
    await alone.open()
    try:
        with pytest.raises(RuntimeError, match="another Responsa process is using"):
            await SQLiteStore(str(tmp_path / "responsa.db")).open()
    finally:
        await alone.close()
