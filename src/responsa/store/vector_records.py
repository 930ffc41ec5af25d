"""Vector stores as stored: stores, their files (with ingestion state), chunks and file batches.

Both stores implement `VectorIndex` (sqlite_vectors.py, postgres_vectors.py). Every read takes
the caller's `owner`, as everywhere else; the ingestion worker's calls (claim, finish) do not,
since they act on rows that a caller already owns.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

DAY = 86400
STATUSES = ("in_progress", "completed", "cancelled", "failed")


def empty_counts() -> dict[str, int]:
    return {"in_progress": 0, "completed": 0, "failed": 0, "cancelled": 0, "total": 0}


def add_count(counts: dict[str, int], status: str, n: int) -> None:
    if status in counts:
        counts[status] += n
        counts["total"] += n


@dataclass
class VectorStoreRecord:
    id: str
    owner: str
    created_at: int
    name: str
    metadata: dict[str, str]
    last_active_at: int
    expires_after_days: int | None = None
    description: str | None = None
    file_counts: dict[str, int] = field(default_factory=empty_counts)
    usage_bytes: int = 0

    @property
    def expires_at(self) -> int | None:
        return self.last_active_at + self.expires_after_days * DAY if self.expires_after_days else None

    def expired(self, now: int) -> bool:
        return self.expires_at is not None and self.expires_at <= now

    def wire(self, now: int) -> dict:
        if self.expired(now):
            status = "expired"
        else:
            status = "in_progress" if self.file_counts.get("in_progress") else "completed"
        return {
            "id": self.id, "object": "vector_store", "created_at": self.created_at, "name": self.name,
            "description": self.description, "usage_bytes": self.usage_bytes, "file_counts": dict(self.file_counts),
            "status": status, "last_active_at": self.last_active_at, "metadata": self.metadata,
            "expires_after": ({"anchor": "last_active_at", "days": self.expires_after_days}
                              if self.expires_after_days else None),
            "expires_at": self.expires_at,
        }


@dataclass
class VectorFileRecord:
    vector_store_id: str
    file_id: str
    owner: str
    created_at: int
    filename: str
    status: str
    attributes: dict[str, Any]
    chunking: dict  # {"type": "static", "static": {"max_chunk_size_tokens": .., "chunk_overlap_tokens": ..}}
    last_error: dict | None = None
    usage_bytes: int = 0
    batch_id: str | None = None

    def wire(self) -> dict:
        return {"id": self.file_id, "object": "vector_store.file", "created_at": self.created_at,
                "vector_store_id": self.vector_store_id, "status": self.status, "last_error": self.last_error,
                "usage_bytes": self.usage_bytes, "attributes": self.attributes,
                "chunking_strategy": self.chunking}


@dataclass
class FileBatchRecord:
    id: str
    vector_store_id: str
    owner: str
    created_at: int
    cancelled: bool = False
    file_counts: dict[str, int] = field(default_factory=empty_counts)

    def wire(self) -> dict:
        counts = self.file_counts
        if counts["in_progress"]:
            status = "in_progress"
        elif self.cancelled:
            status = "cancelled"
        elif counts["total"] and counts["failed"] == counts["total"]:
            status = "failed"
        else:
            status = "completed"
        return {"id": self.id, "object": "vector_store.files_batch", "created_at": self.created_at,
                "vector_store_id": self.vector_store_id, "status": status, "file_counts": dict(counts)}


@dataclass
class ChunkRow:
    """One chunk found by a search, with what a result shows of its file."""

    id: int
    vector_store_id: str
    file_id: str
    text: str


@dataclass
class Embeddings:
    """A vector store's chunk vectors at one version (see VectorIndex.embeddings)."""

    version: int
    ids: list[int]
    file_ids: list[str]
    vectors: list[bytes]  # float32, unit length


class VectorIndex(Protocol):
    async def create_vector_store(self, record: VectorStoreRecord) -> None: ...

    async def get_vector_store(self, store_id: str, owner: str) -> VectorStoreRecord | None: ...

    async def update_vector_store(self, store_id: str, owner: str, changes: dict[str, Any]) -> bool: ...

    async def touch_vector_stores(self, store_ids: Sequence[str], owner: str, now: int) -> None: ...

    async def delete_vector_store(self, store_id: str, owner: str) -> bool: ...

    async def list_vector_stores(self, owner: str, *, after: str | None, before: str | None, limit: int,
                                 order: str) -> tuple[list[VectorStoreRecord], bool]: ...

    async def purge_vector_stores(self, now: int, limit: int) -> tuple[int, int]:
        """Remove up to `limit` stores expired at `now` (any owner) with their files and batches, at
        once, then up to `limit` chunks of removed stores (the rest in later calls): how many
        stores, how many chunks. A removed store is gone for every call meanwhile."""

    async def attach_vector_files(self, records: Sequence[VectorFileRecord],
                                  batch: FileBatchRecord | None = None) -> None:
        """Add files (in progress) to a store; a file attached again starts over."""

    async def get_vector_file(self, store_id: str, file_id: str, owner: str) -> VectorFileRecord | None: ...

    async def list_vector_files(self, store_id: str, owner: str, *, status: str | None, batch_id: str | None,
                                after: str | None, before: str | None, limit: int,
                                order: str) -> tuple[list[VectorFileRecord], bool]: ...

    async def set_vector_file_attributes(self, store_id: str, file_id: str, owner: str,
                                         attributes: dict[str, Any]) -> bool: ...

    async def delete_vector_file(self, store_id: str, file_id: str, owner: str) -> bool: ...

    async def claim_vector_files(self, instance: str, now: int, lease_until: int, limit: int,
                                 take_all: bool = False) -> list[VectorFileRecord]:
        """Files waiting for ingestion whose lease is free (or every one, `take_all`), now leased."""

    async def renew_vector_file(self, store_id: str, file_id: str, instance: str, lease_until: int) -> bool: ...

    async def add_vector_chunks(self, store_id: str, file_id: str, instance: str, start: int,
                                chunks: Sequence[tuple[str, bytes | None]]) -> bool:
        """Store some of a file's chunks (at positions from `start`) while this instance holds it;
        at `start` 0, any chunks an earlier attempt left are removed first."""

    async def finish_vector_file(self, store_id: str, file_id: str, instance: str, *, status: str,
                                 last_error: dict | None, usage_bytes: int,
                                 chunks: Sequence[tuple[str, bytes | None]]) -> bool:
        """Store a file's chunks and end its ingestion, if this instance still holds it."""

    async def vector_file_chunks(self, store_id: str, file_id: str, owner: str) -> list[str] | None: ...

    async def searchable_files(self, store_ids: Sequence[str], owner: str,
                               file_ids: Sequence[str] | None = None) -> list[VectorFileRecord]:
        """The completed files of these stores (only those of `file_ids`, when given)."""

    async def text_search(self, store_ids: Sequence[str], terms: Sequence[str], file_ids: Sequence[str] | None,
                          limit: int) -> list[int]:
        """Chunk ids matching any of `terms`, best first (full-text rank)."""

    async def vector_store_versions(self, store_ids: Sequence[str]) -> dict[str, int]: ...

    async def embeddings(self, store_id: str) -> Embeddings: ...

    async def chunks(self, chunk_ids: Sequence[int]) -> list[ChunkRow]: ...

    async def get_file_batch(self, store_id: str, batch_id: str, owner: str) -> FileBatchRecord | None: ...

    async def cancel_file_batch(self, store_id: str, batch_id: str, owner: str) -> bool: ...
