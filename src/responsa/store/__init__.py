"""The Store protocol: responses, their items and events, background-run leases, files, secrets.

Every read takes the caller's `owner` (a hash of their API key): a row of another owner is
indistinguishable from a missing one. Expired rows are invisible before they are purged.
Implementations: `sqlite.py` (the embedded default) and `postgres.py` (shared by replicas).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol


@dataclass
class ResponseRecord:
    """A response as stored: its Response object without `output`, plus bookkeeping."""

    id: str
    owner: str
    created_at: int
    expires_at: int
    status: str
    body: dict  # the Response object without `output`
    background: bool = False
    previous_response_id: str | None = None
    # For background runs: what is needed to start the run again after a restart
    # (None when the request carried secrets, which are never stored).
    run_request: dict | None = None
    # Which process runs it while it is queued or in progress, and until when (see jobs.py).
    lease_owner: str | None = None
    lease_until: int | None = None


@dataclass
class ChainLink:
    """One earlier response of a `previous_response_id` chain, with its items."""

    id: str
    status: str
    input: list[dict] = field(default_factory=list)
    output: list[dict] = field(default_factory=list)


@dataclass
class ItemPage:
    items: list[dict]
    has_more: bool


@dataclass
class FileRecord:
    id: str
    owner: str
    created_at: int
    filename: str
    purpose: str
    bytes: int
    mime_type: str
    expires_at: int | None = None

    def wire(self) -> dict:
        return {"id": self.id, "object": "file", "bytes": self.bytes, "created_at": self.created_at,
                "filename": self.filename, "purpose": self.purpose, "status": "processed",
                "expires_at": self.expires_at, "status_details": None}


@dataclass
class RunClaim:
    """A background run whose lease this process holds."""

    id: str
    owner: str
    status: str
    background: bool
    run_request: dict | None


class Store(Protocol):
    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def ping(self) -> bool:
        """Whether the database answers and can be written (the health endpoint reports it)."""
        ...

    async def check_writable(self) -> None:
        """Raise errors.ServiceUnavailable if new responses cannot be stored now (a store that
        answers before its commit must not acknowledge what it will lose)."""
        ...

    # ---- responses ------------------------------------------------------------------------

    async def save_response(self, record: ResponseRecord, output: Sequence[dict],
                            input_items: Sequence[dict] | None = None, *, wait: bool = True,
                            create: bool = True) -> None:
        """Insert or update a response in one transaction. `input_items` are written once,
        with the first save; `output` replaces the stored output. With `wait=False` a store
        may return once the write is queued, if it can promise that any read made after the
        caller's next network write (its answer) sees it (SQLite can; PostgreSQL waits).
        With `create=False` (any write after a response's first) a response that is no longer
        stored (deleted while it ran) stays deleted: nothing is written."""
        ...

    async def get_response(self, response_id: str, owner: str) -> dict | None:
        """The full Response object (with `output`), or None if unknown, foreign or expired."""
        ...

    async def get_record(self, response_id: str, owner: str) -> ResponseRecord | None: ...

    async def load_chain(self, response_id: str, owner: str) -> list[ChainLink]:
        """The chain ending at `response_id`, oldest first, in one round trip.
        Raises errors.NotFound naming the first id that is missing, foreign or expired."""
        ...

    async def delete_response(self, response_id: str, owner: str) -> bool: ...

    async def list_input_items(self, response_id: str, owner: str, *, after: str | None, before: str | None,
                               limit: int, order: str) -> ItemPage | None:
        """A page of a response's input items; None if the response is not the caller's."""
        ...

    async def find_items(self, owner: str, item_ids: Sequence[str]) -> dict[str, dict]:
        """The caller's stored items by id (input or output of any live response; newest wins)."""
        ...

    async def purge_expired(self, now: int) -> int:
        """Delete expired responses with their items and events, and expired files."""
        ...

    # ---- background runs --------------------------------------------------------------------

    async def append_events(self, response_id: str, events: Sequence[tuple[int, bytes]]) -> None:
        """Store stream events (sequence number, serialised JSON) of a stored background
        response (none for a response no longer stored)."""
        ...

    async def load_events(self, response_id: str, after: int) -> list[tuple[int, bytes]]: ...

    async def notify(self, channel: str, response_id: str) -> None:
        """Tell every process (this one included) about `response_id` on `channel`
        ("events": new stream events; "cancel": a cancel was requested)."""
        ...

    def on_notify(self, callback: Callable[[str, str], None]) -> None:
        """Register the receiver of `notify` calls from any process."""
        ...

    async def renew_leases(self, instance: str, lease_until: int) -> list[str]:
        """Extend this process's leases; returns the ids among them with a cancel requested."""
        ...

    async def release_run(self, response_id: str, instance: str) -> None: ...

    async def orphaned_runs(self, now: int, instance: str, take_all: bool = False) -> list[RunClaim]:
        """Queued or in-progress responses whose lease expired (or every one not held by
        `instance` when `take_all`), each now leased to `instance`."""
        ...

    async def request_cancel(self, response_id: str, owner: str) -> bool: ...

    async def cancel_requested(self, response_id: str) -> bool: ...

    # ---- files ------------------------------------------------------------------------------

    async def put_file(self, record: FileRecord, data: bytes) -> None: ...

    async def get_file(self, file_id: str, owner: str) -> FileRecord | None: ...

    async def file_content(self, file_id: str, owner: str) -> bytes | None: ...

    async def list_files(self, owner: str, *, purpose: str | None, after: str | None, limit: int,
                         order: str) -> tuple[list[FileRecord], bool]: ...

    async def delete_file(self, file_id: str, owner: str) -> bool: ...

    # ---- secrets (server keys shared by replicas) --------------------------------------------

    async def get_secrets(self, prefix: str) -> dict[str, bytes]: ...

    async def add_secret(self, name: str, value: bytes) -> bool:
        """Store a secret unless one of that name exists; True if this call stored it."""
        ...


def open_store(database_url: str | None, data_dir: str, *, pool_size: int = 10, shared: bool = False) -> Store:
    """SQLite in the data dir (`shared`: by several worker processes), or PostgreSQL when a URL is
    given (at most `pool_size` connections)."""
    if database_url:
        from .postgres import PostgresStore

        return PostgresStore(database_url, pool_size=pool_size)
    import os

    from .sqlite import SQLiteStore

    return SQLiteStore(os.path.join(data_dir, "responsa.db"), shared=shared)
