"""The Store protocol: responses, their items and events, background-run leases, conversations,
files, secrets.

Every read takes the caller's `owner` (a hash of their API key): a row of another owner is
indistinguishable from a missing one. Expired rows are invisible before they are purged.
Implementations: `sqlite.py` (the embedded default) and `postgres.py` (shared by replicas).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from ..errors import InvalidRequest


def row_json(value: Any) -> bytes:
    """A value serialised for a stored row, in a buffer of its own size: orjson's result keeps
    the 4 KiB it was written into, which a request of many small items multiplies into
    gigabytes held until the rows are written (and fragments the heap after)."""
    return bytes(memoryview(orjson.dumps(value)))


MANY_ROWS = 64  # past this many rows in one write, each is copied to its own size (row_json)


def rows_json(count: int) -> Callable[[Any], bytes]:
    """The serialiser for a write of `count` rows: a few rows are written and dropped at once, so
    only a write of many pays for the copy that keeps their memory to their size."""
    return row_json if count > MANY_ROWS else orjson.dumps


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
    # A background response with store=false: readable by id (retrieve, stream, cancel) for its
    # short life, but never a chain's link, never a source of items, never listed.
    ephemeral: bool = False
    # The conversation it runs on: its terminal write appends to it (see save_response).
    conversation_id: str | None = None


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


@dataclass(frozen=True)
class ResponseQuery:
    """Which stored responses a listing (`GET /responses`, the console) wants, newest first by default.

    `after` / `before` are response ids: the page that follows, or immediately precedes, that
    response in `order`. `text` matches the stored JSON of the response's input and output items
    (a plain substring scan, no index: one page looks through a bounded number of responses, see
    listing.py)."""

    owner: str | None  # None: every owner's (the admin key)
    limit: int = 20
    order: str = "desc"
    after: str | None = None
    before: str | None = None
    model: str | None = None
    status: str | None = None
    created_after: int | None = None  # Unix seconds, exclusive
    created_before: int | None = None  # Unix seconds, exclusive
    metadata: tuple[tuple[str, str], ...] = ()
    text: str | None = None
    previous_response_id: str | None = None  # the responses that continue this one (a chain's next links)


@dataclass
class ListedResponse:
    """One response of a listing: its Response object (with `output`) and its owner."""

    owner: str
    response: dict


@dataclass
class ResponsePage:
    responses: list[ListedResponse]
    has_more: bool
    # A text search that looked through all it may before the page was full: the last response it
    # looked through, where the next page (in the reading direction) goes on from.
    resume: str | None = None


@dataclass
class ConversationRecord:
    id: str
    owner: str
    created_at: int
    expires_at: int
    metadata: dict[str, str]

    def wire(self) -> dict:
        return {"id": self.id, "object": "conversation", "created_at": self.created_at, "metadata": self.metadata}


@dataclass
class ConversationItems:
    """A conversation's items at one state, named by (revision, next_position): all of them, or
    with `delta` only those appended since the state the caller said it knew."""

    revision: int
    next_position: int
    items: list[dict]
    delta: bool = False


def conversation_locked(conversation_id: str, param: str | None = "conversation") -> InvalidRequest:
    """The error for a conversation another request is changing (the hosted API's code)."""
    return InvalidRequest(f"Another request is working on conversation '{conversation_id}' (a response runs "
                          "on it, or its items changed meanwhile); retry once it is done.", param=param,
                          code="conversation_locked")


def duplicate_item(item_id: str, param: str) -> InvalidRequest:
    return InvalidRequest(f"Duplicate item found with id '{item_id}': the conversation already has an item with "
                          "that id. Remove it from your input and try again.", param=param, code="duplicate_item")


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


@dataclass(frozen=True)
class Limits:
    """What a key or a project may use (None: no limit): requests and tokens (input + output, as
    responses' `usage` counts them) per window, and streams and background runs at once."""

    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    tokens_per_day: int | None = None
    streams: int | None = None
    background_runs: int | None = None

    def any(self) -> bool:
        return any(getattr(self, f) is not None for f in LIMIT_FIELDS)

    def extra_json(self) -> str | None:
        """The limits other than requests per minute (a column of their own), as stored."""
        extra = {f: getattr(self, f) for f in LIMIT_FIELDS[1:] if getattr(self, f) is not None}
        return orjson.dumps(extra).decode() if extra else None

    @staticmethod
    def from_columns(requests_per_minute: int | None, extra: str | None) -> Limits:
        values = orjson.loads(extra) if extra else {}
        return Limits(requests_per_minute, **{k: v for k, v in values.items() if k in LIMIT_FIELDS})


LIMIT_FIELDS = ("requests_per_minute", "tokens_per_minute", "tokens_per_day", "streams", "background_runs")


@dataclass
class UsageRow:
    """What one key (or `--api-key` key, or the local caller) used of one model on one day (UTC)."""

    day: str  # YYYY-MM-DD
    key: str
    project: str  # "" for none
    model: str
    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    errors: int = 0

    COUNTS = ("requests", "input_tokens", "output_tokens", "cached_tokens", "reasoning_tokens", "errors")

    def wire(self) -> dict:
        return {"day": self.day, "key": self.key, "project": self.project or None, "model": self.model,
                **{c: getattr(self, c) for c in self.COUNTS}}


@dataclass
class KeyRecord:
    """An API key made by `responsa keys create`: only a hash of its secret is stored."""

    id: str
    name: str
    owner: str  # what the key creates is owned by this id (shared by the keys of one project)
    hash: str  # sha256 of the secret, hex
    created_at: int
    project: str | None = None
    rotated_at: int | None = None
    revoked_at: int | None = None
    limits: Limits = field(default_factory=Limits)
    project_limits: Limits | None = None  # its project's, when it has a project with limits (as found)

    @property
    def requests_per_minute(self) -> int | None:
        return self.limits.requests_per_minute


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
        with the first save; `output` replaces the stored output, and `expires_at` the stored
        expiry. With `wait=False` a store
        may return once the write is queued, if it can promise that any read made after the
        caller's next network write (its answer) sees it (SQLite can; PostgreSQL waits).
        With `create=False` (any write after a response's first) a response that is no longer
        stored (deleted while it ran) stays deleted: nothing is written.

        A response with a `conversation_id` was first written by `begin_conversation_response`.
        Its terminal write is always made as with `create=False`, and in the same transaction
        it appends the response's stored input and this output to the conversation (if
        `completed` or `incomplete`, and only while the conversation is still held by this
        response, so never twice), and releases the conversation."""
        ...

    async def get_response(self, response_id: str, owner: str) -> dict | None:
        """The full Response object (with `output`), or None if unknown, foreign or expired."""
        ...

    async def get_record(self, response_id: str, owner: str) -> ResponseRecord | None: ...

    async def load_chain(self, response_id: str, owner: str) -> list[ChainLink]:
        """The chain ending at `response_id`, oldest first, in one round trip.
        Raises errors.NotFound naming the first id that is missing, foreign, expired or ephemeral."""
        ...

    async def delete_response(self, response_id: str, owner: str) -> bool:
        """Delete a response with its items and events (releasing a conversation it held)."""
        ...

    async def list_input_items(self, response_id: str, owner: str, *, after: str | None, before: str | None,
                               limit: int, order: str) -> ItemPage | None:
        """A page of a response's input items; None if the response is not the caller's (or ephemeral)."""
        ...

    async def list_responses(self, query: ResponseQuery) -> ResponsePage:
        """A page of live stored responses (never ephemeral ones) matching `query`; an unknown or
        foreign cursor gives an empty page."""
        ...

    async def response_owner(self, response_id: str) -> str | None:
        """The owner of a live stored response (for the admin key, which reads every owner's)."""
        ...

    async def find_items(self, owner: str, item_ids: Sequence[str]) -> dict[str, dict]:
        """The caller's stored items by id (input or output of any live response that is not
        ephemeral; newest wins)."""
        ...

    async def purge_expired(self, now: int) -> int:
        """Delete expired responses with their items and events, expired conversations with
        their items, and expired files."""
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
        """Extend this process's leases (and those of the conversations its responses hold);
        returns the ids among them with a cancel requested."""
        ...

    async def release_run(self, response_id: str, instance: str) -> None: ...

    async def orphaned_runs(self, now: int, instance: str, take_all: bool = False) -> list[RunClaim]:
        """Queued or in-progress responses whose lease expired (or every one not held by
        `instance` when `take_all`), each now leased to `instance`."""
        ...

    async def request_cancel(self, response_id: str, owner: str) -> bool: ...

    async def cancel_requested(self, response_id: str) -> bool: ...

    # ---- conversations ----------------------------------------------------------------------
    # A conversation is read through `owner` like a response. Its items have positions that only
    # grow; deleting one bumps its revision. While a response runs on it (it is "held", until
    # that response ends or its lease lapses), nothing else may change its items.

    async def create_conversation(self, record: ConversationRecord, items: Sequence[dict]) -> None: ...

    async def get_conversation(self, conversation_id: str, owner: str) -> ConversationRecord | None: ...

    async def list_conversations(self, owner: str | None, *, after: str | None,
                                 limit: int) -> tuple[list[ConversationRecord], bool]:
        """A page of live conversations, newest first (`after` a conversation id; `owner` None:
        every owner's). An unknown or foreign cursor gives an empty page."""
        ...

    async def update_conversation(self, conversation_id: str, owner: str, metadata: dict[str, str],
                                  expires_at: int) -> ConversationRecord | None:
        """Replace the metadata (and push the expiry out to at least `expires_at`)."""
        ...

    async def delete_conversation(self, conversation_id: str, owner: str) -> bool: ...

    async def add_conversation_items(self, conversation_id: str, owner: str, items: Sequence[dict],
                                     expires_at: int) -> bool:
        """Append items; False if the conversation is not the caller's. Raises
        `conversation_locked` while it is held, `duplicate_item` (naming `items[n]`) for an id
        it already has."""
        ...

    async def list_conversation_items(self, conversation_id: str, owner: str, *, after: str | None, limit: int,
                                      order: str) -> ItemPage | None:
        """A page of items (`after` an item id); None if the conversation is not the caller's."""
        ...

    async def get_conversation_item(self, conversation_id: str, owner: str, item_id: str) -> dict | None: ...

    async def delete_conversation_item(self, conversation_id: str, owner: str, item_id: str) -> bool:
        """Whether the item was deleted. Raises `conversation_locked` while the conversation is held."""
        ...

    async def load_conversation(self, conversation_id: str, owner: str,
                                known: tuple[int, int] | None = None) -> ConversationItems | None:
        """The items at the current state, in one round trip; only those appended since `known`
        (a revision and next position the caller has the items of) when still valid. None if
        the conversation is not the caller's."""
        ...

    async def begin_conversation_response(self, record: ResponseRecord, input_items: Sequence[dict],
                                          state: tuple[int, int]) -> None:
        """Hold `record.conversation_id` for the response and store the response (in progress,
        leased, with its input) in one transaction, if the conversation is still at `state`
        (the revision and next position its items were read at) and not held by another
        response. Raises NotFound, or `conversation_locked`. A response already stored (a
        queued run started again) is left as it is."""
        ...

    # ---- files ------------------------------------------------------------------------------

    async def put_file(self, record: FileRecord, data: bytes) -> None: ...

    async def get_file(self, file_id: str, owner: str) -> FileRecord | None: ...

    async def file_content(self, file_id: str, owner: str) -> bytes | None: ...

    async def list_files(self, owner: str | None, *, purpose: str | None, after: str | None, limit: int,
                         order: str) -> tuple[list[FileRecord], bool]:
        """A page of live files (`owner` None: every owner's, for the admin key's console)."""

    async def vector_store_owners(self, *, after: str | None, limit: int) -> tuple[list[tuple[str, str]], bool]:
        """The ids and owners of every owner's vector stores, newest first (the admin key's console
        reads each with get_vector_store); an unknown cursor gives an empty page."""

    async def delete_file(self, file_id: str, owner: str) -> bool: ...

    # ---- API keys (responsa keys) ------------------------------------------------------------

    async def add_key(self, key: KeyRecord) -> None: ...

    async def find_key(self, key_hash: str) -> KeyRecord | None:
        """The key whose secret has this hash, unless revoked."""
        ...

    async def list_keys(self) -> list[KeyRecord]:
        """Every key, revoked ones included, oldest first."""
        ...

    async def has_keys(self) -> bool:
        """Whether any key is in use (not revoked)."""
        ...

    async def revoke_key(self, key_id: str, now: int) -> bool:
        """Revoke a key in use; False if there is none with that id."""
        ...

    async def rotate_key(self, key_id: str, key_hash: str, now: int) -> bool:
        """Give a key in use a new secret (its owner stays); False if there is none with that id."""
        ...

    async def set_key_limits(self, key_id: str, limits: Limits) -> bool:
        """Replace a key's limits; False if there is no key in use with that id."""
        ...

    async def set_project_limits(self, project: str, limits: Limits) -> None:
        """Replace a project's limits (shared by all its keys together); no limits removes them."""
        ...

    async def get_project_limits(self) -> dict[str, Limits]: ...

    # ---- quotas and usage (quotas.py, usage.py) -------------------------------------------------

    async def take_windows(self, windows: list[tuple[str, int]], now_ms: int) -> list[tuple[int, int, int]]:
        """Count one request in each (scope, span ms) window, starting it again where it has ended;
        returns each one's (requests, tokens, started ms) after the count, for all replicas at once."""
        ...

    async def add_window_tokens(self, windows: list[tuple[str, int]], tokens: int) -> None:
        """Add tokens used to these windows."""
        ...

    async def take_slot(self, scope: str, slot: str, limit: int, now_ms: int, until_ms: int) -> bool:
        """Hold one of `limit` slots of a scope until `until_ms` (unless given back first); False if
        all are held (by slots whose time has not run out), on any replica."""
        ...

    async def renew_slots(self, held: dict[str, list[str]], until_ms: int) -> None:
        """Hold these slots (scope -> slot ids) longer."""
        ...

    async def release_slot(self, scope: str, slot: str) -> None: ...

    async def add_usage(self, rows: list[UsageRow]) -> None:
        """Add these counts to the stored ones (one row per day, key, project and model)."""
        ...

    async def list_usage(self, *, since: str, until: str, key: str | None = None,
                         project: str | None = None) -> list[UsageRow]:
        """Stored usage from day `since` to day `until` (both included), by day, key, project, model."""
        ...

    # ---- secrets (server keys shared by replicas) --------------------------------------------

    async def get_secrets(self, prefix: str) -> dict[str, bytes]: ...

    async def add_secret(self, name: str, value: bytes) -> bool:
        """Store a secret unless one of that name exists; True if this call stored it."""
        ...


def open_store(database_url: str | None, data_dir: str, *, pool_size: int = 10, shared: bool = False,
               guest: bool = False) -> Store:
    """SQLite in the data dir (`shared`: by several worker processes; `guest`: a short-lived command
    beside a running server, which takes no exclusive lock), or PostgreSQL when a URL is given (at
    most `pool_size` connections)."""
    if database_url:
        from .postgres import PostgresStore

        return PostgresStore(database_url, pool_size=pool_size)
    import os

    from .sqlite import SQLiteStore

    return SQLiteStore(os.path.join(data_dir, "responsa.db"), shared=shared, guest=guest)
