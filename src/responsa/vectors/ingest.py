"""Background ingestion: attached files become chunks (and vectors), one file at a time.

A file attached to a vector store is stored `in_progress` with no lease. The worker of any
server process claims it with a lease (renewed while it works), extracts the text in a thread,
chunks it, embeds the chunks and stores them with the file's final status in one write, which
only lands while the lease is still its own. A process that dies mid-file leaves the lease to
run out; another process (or this one after a restart) then takes the file again from the
start, so ingestion resumes after a restart. A SQLite server that starts alone takes every
unfinished file at once, as jobs.py does with background runs.

A file that cannot be read, has no text, or is too large ends `failed` with its `last_error`;
the vector store and the other files are untouched.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from ..store.vector_records import VectorFileRecord, VectorIndex
from .chunking import IngestError, chunk, file_text, strategy
from .embed import Embedder, EmbeddingError

log = logging.getLogger("responsa.vectors")
POLL = 5.0  # seconds between looks for files other processes left (woken at once for our own)
EMBED_BATCH = 64
MAX_CHUNKS = 100_000  # chunks one file may make

# (bytes, mime type, filename) of a file by id and owner, or None when it is gone.
LoadFile = Callable[[str, str], Awaitable[tuple[bytes, str, str] | None]]


class Ingester:
    def __init__(self, index: VectorIndex, load_file: LoadFile, embedder: Embedder | None, instance: str, *,
                 take_all: bool, lease_seconds: int = 60) -> None:
        self.index = index
        self.load_file = load_file
        self.embedder = embedder
        self.instance = instance
        self.take_all = take_all
        self.lease_seconds = lease_seconds
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self.finished = 0  # files ended (completed or failed) by this process

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="vector-ingest")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def wake(self) -> None:
        self._wake.set()

    async def _run(self) -> None:
        take_all = self.take_all
        while True:
            try:
                now = int(time.time())
                claimed = await self.index.claim_vector_files(self.instance, now, now + self.lease_seconds,
                                                              limit=1000 if take_all else 1, take_all=take_all)
                take_all = False
            except Exception:
                log.exception("vector ingestion: claiming files failed")
                claimed = []
            for record in claimed:
                await self._ingest(record)
            if not claimed:
                self._wake.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), POLL)

    async def _renew(self, record: VectorFileRecord) -> bool:
        return await self.index.renew_vector_file(record.vector_store_id, record.file_id, self.instance,
                                                  int(time.time()) + self.lease_seconds)

    async def _ingest(self, record: VectorFileRecord) -> None:
        try:
            usage = await self._index(record)
        except IngestError as e:
            await self._finish(record, "failed", e.last_error(), 0)
            return
        except _Lost:
            return
        except Exception as e:
            log.exception("vector ingestion of %s failed", record.file_id)
            await self._finish(record, "failed", {"code": "server_error", "message": f"Ingestion failed: {e}"}, 0)
            return
        await self._finish(record, "completed", None, usage)

    async def _index(self, record: VectorFileRecord) -> int:
        """Chunk, embed and store a file's chunks, a batch per write (so that no write holds the
        database long); returns the bytes they take."""
        loaded = await self.load_file(record.file_id, record.owner)
        if loaded is None:
            raise IngestError("invalid_file", f"The file '{record.file_id}' no longer exists.")
        data, mime, filename = loaded
        text = await asyncio.to_thread(file_text, data, mime, filename)
        max_tokens, overlap = strategy(record.chunking)
        texts = await asyncio.to_thread(chunk, text, max_tokens, overlap)
        if len(texts) > MAX_CHUNKS:
            raise IngestError("invalid_file", f"The file '{filename}' makes {len(texts)} chunks, more than the "
                                              f"limit of {MAX_CHUNKS}.")
        usage = 0
        for start in range(0, len(texts), EMBED_BATCH):
            part = texts[start:start + EMBED_BATCH]
            vectors: list[bytes | None] = [None] * len(part)
            if self.embedder is not None:
                try:
                    matrix = await self.embedder.embed(part)
                except EmbeddingError as e:
                    raise IngestError("server_error", f"Embedding failed: {e}") from None
                vectors = [row.tobytes() for row in matrix]
            rows = list(zip(part, vectors, strict=True))
            usage += sum(len(t.encode()) + (len(v) if v else 0) for t, v in rows)
            if not await self.index.add_vector_chunks(record.vector_store_id, record.file_id, self.instance, start,
                                                      rows):
                raise _Lost()  # deleted, cancelled, or taken over meanwhile
            if not await self._renew(record):
                raise _Lost()
        return usage

    async def _finish(self, record: VectorFileRecord, status: str, error: dict | None, usage: int) -> None:
        try:
            done = await self.index.finish_vector_file(record.vector_store_id, record.file_id, self.instance,
                                                       status=status, last_error=error, usage_bytes=usage,
                                                       chunks=[])
        except Exception:
            log.exception("vector ingestion: storing %s failed", record.file_id)
            return
        if done:
            self.finished += 1


class _Lost(Exception):
    """The file's lease is no longer ours."""
