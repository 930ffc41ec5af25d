"""The SQLite write-ahead log, kept bounded while writes never pause.

In WAL mode a commit appends pages to the log, a checkpoint copies them into the database
file, and the log starts over from its beginning only when a write transaction begins while
every page in it has been copied. A background checkpoint alone never gets there under
sustained load: by the time it has copied the log, new commits have been appended after it,
so the log grows for as long as the load lasts (1.76 GB after a minute at 4,000 responses a
second) and every read searches a longer log index.

So the background thread copies the log as before, and once the log has passed its target
size it makes that moment itself: it takes the writer's turn (`turn`, and in a process among
several the lock of all writers), copies what is left and lets go. No commit can come in
between, so the next write transaction starts the log over, and `journal_size_limit` cuts the
file back to the target. Meanwhile the event loop does not wait: the store puts its commits
off by a millisecond at a time (a read that needs them waits). The copy is short, since
the thread runs a pass every 50 ms while writes come.

Should the thread fall behind (starved of CPU), the writer itself starts the log over once
it is past twice the target, before its next transaction, as the thread would: the log is
at most twice the target plus one transaction at any rate, in practice the target.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger("responsa.store")

WAL_TARGET = 64 * 1024 * 1024  # bytes of log after which it is started over
EVERY = 2.0  # seconds between background passes while nothing is written
SOON = 0.05  # ... and while writes come


class WalKeeper:
    """Background checkpoints of one database, and starting its log over."""

    def __init__(self, path: str, connect: Callable[[str], sqlite3.Connection], target: int = WAL_TARGET) -> None:
        self.path = path
        self.log_path = path + "-wal"
        self.connect = connect
        self.target = target
        # Held by the store around each write transaction, and by the thread while it starts the
        # log over; `writers` (acquire/release), if set, is the lock of every process's writer.
        self.turn = threading.Lock()
        self.writers: Any = None
        self._passing = threading.Lock()  # one checkpoint of this process at a time
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, writer: sqlite3.Connection) -> None:
        writer.execute("PRAGMA wal_autocheckpoint=0")  # checkpoints run here, not inside commits
        writer.execute(f"PRAGMA journal_size_limit={int(self.target)}")
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="sqlite-checkpoint", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread, after a last checkpoint that empties the log (blocking: run it in a thread)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _size(self) -> int:
        try:
            return os.stat(self.log_path).st_size
        except OSError:
            return 0

    def before_write(self, writer: sqlite3.Connection) -> None:
        """Called by the writer before each write transaction, holding `turn` (and `writers`)."""
        if self._size() <= 2 * self.target:
            return
        try:  # the thread has fallen behind: do what it does, here
            with self._passing:
                writer.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        except sqlite3.Error as e:  # never raise here: the batch's callers wait on it
            log.warning("sqlite checkpoint failed: %s", e)

    def _loop(self) -> None:
        conn = self.connect(self.path)
        try:
            # The first pass soon too: left for 2 s under full load, a fresh database's first pass
            # (its file growing, one sync of all of it) took 6 s here, and the writers waited.
            wait, last = SOON, 0
            while not self._stop.wait(wait):
                try:
                    with self._passing:
                        _busy, frames, _copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                    if self._size() > self.target:
                        self._start_over(conn)
                        frames = 0
                except sqlite3.Error as e:
                    log.warning("sqlite checkpoint failed: %s", e)
                    wait = EVERY
                    continue
                # While writes come, a pass every 50 ms: each copies little, and so does the one
                # that starts the log over while commits wait (with two workers, passes every 2 s
                # until the log neared its target made p99 100 ms instead of 10).
                wait = SOON if frames != last else EVERY
                last = frames
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            conn.close()

    def _start_over(self, conn: sqlite3.Connection) -> None:
        """Copy what is left while no transaction can begin: the next one starts the log over. (A
        reader of another process in the way: the next pass tries again.)"""
        with self.turn:
            writers = self.writers
            if writers is not None:
                writers.acquire()
            try:
                with self._passing:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            finally:
                if writers is not None:
                    writers.release()
