"""The SQLite write-ahead log, kept bounded while writes never pause.

In WAL mode a commit appends pages to the log, a checkpoint copies them into the database
file, and the log starts over from its beginning only when a write transaction begins while
every page in it has been copied. A background checkpoint alone never gets there under
sustained load: by the time it has copied the log, new commits have been appended after it,
so the log grows for as long as the load lasts (1.76 GB after a minute at 4,000 responses a
second) and every read searches a longer log index.

So the background thread still does the copying, off the event loop, and the writer watches
the log's size (one stat per transaction). Once it is past its target, the writer, between two
of its transactions, copies what the thread has not copied yet (little: the thread runs its
passes every 50 ms once the log is past half the target, and stands back meanwhile). No
commit can come in between (this writer makes them all), so its next transaction starts the
log over, and `journal_size_limit` cuts the file back to the target. Past twice the target
the writer waits for a background pass under way rather than try again later, so the log is
at most twice the target plus one transaction at any rate (in practice the target): the
faster the writes, the more the writer copies itself, and it is slowed down by just that.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from collections.abc import Callable

log = logging.getLogger("responsa.store")

WAL_TARGET = 64 * 1024 * 1024  # bytes of log after which it is started over
EVERY = 2.0  # seconds between background passes while the log is small
SOON = 0.05  # ... and once it is past half its target: each pass leaves the writer less to copy
FRAME_HEADER = 24  # bytes before each page in the log


class WalKeeper:
    """Background checkpoints of one database, and the writer's hand in starting its log over."""

    def __init__(self, path: str, connect: Callable[[str], sqlite3.Connection], target: int = WAL_TARGET) -> None:
        self.path = path
        self.log_path = path + "-wal"
        self.connect = connect
        self.target = target
        # Read by the writer before each transaction (a plain attribute: no lock on that path).
        self.due = False
        self._target_frames = 0
        self._handed_over = threading.Event()
        self._passing = threading.Lock()  # held by the thread during a pass
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, writer: sqlite3.Connection) -> None:
        page_size = writer.execute("PRAGMA page_size").fetchone()[0]
        self._target_frames = max(1, self.target // (page_size + FRAME_HEADER))
        writer.execute("PRAGMA wal_autocheckpoint=0")  # checkpoints run here, not inside commits
        writer.execute(f"PRAGMA journal_size_limit={int(self.target)}")
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="sqlite-checkpoint", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread, after a last checkpoint that empties the log (blocking: run it in a thread)."""
        self._stop.set()
        self._handed_over.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def before_write(self, writer: sqlite3.Connection) -> None:
        """Called by the writer before each write transaction, when no other writer can commit."""
        try:
            size = os.stat(self.log_path).st_size
        except OSError:  # never raise here: the batch's callers wait on it
            return
        if size <= self.target and not self.due:
            return
        if not self.due:
            self._handed_over.clear()
            self.due = True
        # Past twice the target the writer waits for a background pass under way (it lasts tens
        # of milliseconds at most); below that it tries again at its next transaction.
        if not self._passing.acquire(blocking=size > 2 * self.target):
            return
        try:
            busy, frames, copied = writer.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        except sqlite3.Error as e:
            log.warning("sqlite checkpoint failed: %s", e)
            return
        finally:
            self._passing.release()
        if busy == 0 and frames == copied:  # else a reader is in the way: next time
            self.due = False
            self._handed_over.set()

    def _loop(self) -> None:
        conn = self.connect(self.path)
        try:
            wait = EVERY
            while not self._stop.wait(wait):
                try:
                    with self._passing:
                        _busy, frames, _copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                except sqlite3.Error as e:
                    log.warning("sqlite checkpoint failed: %s", e)
                    wait = EVERY
                    continue
                if self.due:
                    # The writer's turn; a pass of ours meanwhile would hold the checkpoint lock it needs.
                    self._handed_over.wait(EVERY)  # no writes for that long: nothing grows meanwhile
                    wait = 0
                else:
                    wait = SOON if frames > self._target_frames // 2 else EVERY
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            conn.close()
