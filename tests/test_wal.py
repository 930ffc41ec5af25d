"""The SQLite write-ahead log stays bounded while writes never pause (store/wal.py)."""

from __future__ import annotations

import os
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


async def test_the_log_is_started_over_while_writes_never_pause(tmp_path: Path, monkeypatch, anyio_backend) -> None:
    # Background passes as often as they can go, so that the test needs no long run.
    monkeypatch.setattr(walmod, "EVERY", 0.005)
    monkeypatch.setattr(walmod, "SOON", 0.001)
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
        # Without the writer's hand the log holds everything written (64 x the target); with it, at
        # most twice the target and one transaction (a response with a 6 KB item: up to 17 pages seen,
        # when its tables' b-trees split).
        assert largest <= 2 * TARGET + 32 * 4096, f"the log grew to {largest} bytes for {written} bytes written"
        # Everything is there and readable.
        assert (await store.get_response(f"resp_{n - 1}", "alice")) is not None
        page = await store.list_input_items("resp_0", "alice", after=None, before=None, limit=5, order="asc")
        assert page is not None and page.items[0]["id"] == "msg_0"
    finally:
        await store.close()
    assert not log_file.exists() or log_file.stat().st_size == 0  # the last checkpoint empties it
