"""The SQLite write-ahead log stays bounded while writes never pause (store/wal.py)."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from pathlib import Path

import pytest

from responsa.store import ResponseRecord
from responsa.store import wal as walmod
from responsa.store.sqlite import SQLiteStore

pytestmark = pytest.mark.anyio

TARGET = 128 * 1024


def record(n: int) -> ResponseRecord:
    now = int(time.time())
    rid = f"resp_{n}"
    return ResponseRecord(id=rid, owner="alice", created_at=now, expires_at=now + 3600, status="completed",
                          body={"id": rid, "object": "response", "status": "completed"})


def item(n: int) -> dict:
    return {"id": f"msg_{n}", "type": "message", "role": "user",
            "content": [{"type": "input_text", "text": os.urandom(3000).hex()}]}  # 6 KB


@pytest.mark.parametrize("by", ["thread", "writer"])
async def test_the_log_is_started_over_while_writes_never_pause(by: str, tmp_path: Path, monkeypatch,
                                                                anyio_backend) -> None:
    # Background passes as often as they can go, so that the test needs no long run; or never
    # (a thread starved of CPU), and the writer does it past twice the target.
    monkeypatch.setattr(walmod, "EVERY", 0.005 if by == "thread" else 3600)
    monkeypatch.setattr(walmod, "SOON", 0.001 if by == "thread" else 3600)
    store = SQLiteStore(str(tmp_path / "responsa.db"))
    store.wal.target = TARGET
    await store.open()
    log_file = tmp_path / "responsa.db-wal"
    try:
        # Each write is its own transaction, one after the other: the log never sees a moment
        # without a commit after a background pass, which alone never starts it over.
        written = largest = 0
        n = 0
        while written < 64 * TARGET:
            await store.save_response(record(n), [], [item(n)])
            written += 6000
            n += 1
            largest = max(largest, log_file.stat().st_size)
        # Never started over, the log holds everything written (64 x the target); else at most twice
        # the target and one transaction (a response with a 6 KB item: up to 17 pages seen, when its
        # tables' b-trees split).
        assert largest <= 2 * TARGET + 32 * 4096, f"the log grew to {largest} bytes for {written} bytes written"
        # Everything is there and readable.
        assert (await store.get_response(f"resp_{n - 1}", "alice")) is not None
        page = await store.list_input_items("resp_0", "alice", after=None, before=None, limit=5, order="asc")
        assert page is not None and page.items[0]["id"] == "msg_0"
    finally:
        await store.close()
    assert not log_file.exists() or log_file.stat().st_size == 0  # the last checkpoint empties it


async def test_commits_wait_for_the_thread_without_blocking_the_event_loop(tmp_path: Path, anyio_backend) -> None:
    store = SQLiteStore(str(tmp_path / "responsa.db"))
    await store.open()
    held, release = threading.Event(), threading.Event()

    def start_over() -> None:  # as the checkpoint thread holds the turn while it copies
        with store.wal.turn:
            held.set()
            release.wait(10)

    thread = threading.Thread(target=start_over)
    thread.start()
    try:
        held.wait(10)
        write = asyncio.ensure_future(store.save_response(record(1), [], [item(1)]))
        await asyncio.sleep(0.05)  # the loop runs; the commit waits
        assert not write.done()
        release.set()
        await asyncio.wait_for(write, 10)
        assert await store.get_response("resp_1", "alice") is not None
    finally:
        release.set()
        thread.join()
        await store.close()
