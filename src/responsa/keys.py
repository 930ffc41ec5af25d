"""API keys the server makes (`responsa keys`), stored as hashes and looked up by every replica.

A key is shown once, when it is created or rotated; the store keeps the sha256 of its secret.
What a key creates is owned by its `owner` id, which rotation keeps: a rotated key still reads
everything the old secret made. Keys of one project share one owner id, so each reads what
the others made. Keys given with `--api-key` work as before, beside these.

A key may have a limit of requests per minute, counted in the store for all replicas together
(one write per request of a limited key; keys without a limit cost no write).

Every replica looks keys up in the store, with a short cache (`CACHE_SECONDS`): a key created,
revoked or rotated anywhere is in force everywhere within that time without a restart, and at
once where the store carries notifications (PostgreSQL: the command notifies `keys`).
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
import uuid

from .errors import RateLimited
from .store import KeyRecord, Store

CACHE_SECONDS = 5.0
CACHE_LIMIT = 10_000
NOTIFY_CHANNEL = "keys"
SECRET_PREFIX = "rsk-"
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._:@/+-]{0,63}")


class InvalidKeyArgument(ValueError):
    """A `responsa keys` argument that cannot be used; the command prints it and exits 2."""


def key_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def project_owner(project: str) -> str:
    """The owner id every key of a project shares."""
    return hashlib.sha256(b"project:" + project.encode()).hexdigest()[:32]


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def check_name(value: str, what: str) -> str:
    if not NAME.fullmatch(value):
        raise InvalidKeyArgument(f"invalid {what} {value!r}: 1-64 characters, letters, digits, space and ._:@/+- "
                        "(starting with a letter or digit)")
    return value


def check_limit(value: int | None) -> int | None:
    """A requests-per-minute limit: a positive number, or 0 / None for none."""
    if value is None or value == 0:
        return None
    if value < 0:
        raise InvalidKeyArgument(f"invalid limit {value}: a number of requests per minute, or 0 for none")
    return value


async def create(store: Store, name: str, project: str | None = None,
                 requests_per_minute: int | None = None) -> tuple[str, KeyRecord]:
    """A new key: (its secret, shown once; its record, as stored)."""
    check_name(name, "name")
    if project is not None:
        check_name(project, "project")
    secret = new_secret()
    record = KeyRecord(id="key_" + uuid.uuid4().hex[:16], name=name,
                       owner=project_owner(project) if project else uuid.uuid4().hex, hash=key_hash(secret),
                       created_at=int(time.time()), project=project,
                       requests_per_minute=check_limit(requests_per_minute))
    await store.add_key(record)
    await store.notify(NOTIFY_CHANNEL, record.id)
    return secret, record


async def rotate(store: Store, key_id: str) -> str | None:
    """A new secret for a key in use (the old one stops working); None if there is no such key."""
    secret = new_secret()
    if not await store.rotate_key(key_id, key_hash(secret), int(time.time())):
        return None
    await store.notify(NOTIFY_CHANNEL, key_id)
    return secret


async def set_limits(store: Store, key_id: str, requests_per_minute: int | None) -> bool:
    if not await store.set_key_limits(key_id, check_limit(requests_per_minute)):
        return False
    await store.notify(NOTIFY_CHANNEL, key_id)
    return True


async def revoke(store: Store, key_id: str) -> bool:
    if not await store.revoke_key(key_id, int(time.time())):
        return False
    await store.notify(NOTIFY_CHANNEL, key_id)
    return True


class KeyRing:
    """The store's keys as the server sees them: looked up by hash, cached for a few seconds."""

    def __init__(self, store: Store, cache_seconds: float = CACHE_SECONDS) -> None:
        self.store = store
        self.cache_seconds = cache_seconds
        self._found: dict[str, tuple[float, KeyRecord | None]] = {}
        self._any: tuple[float, bool] = (0.0, False)
        store.on_notify(self._on_notify)

    def _on_notify(self, channel: str, _key_id: str) -> None:
        if channel == NOTIFY_CHANNEL:
            self.forget()

    def forget(self) -> None:
        self._found.clear()
        self._any = (0.0, False)

    async def find(self, secret: str) -> KeyRecord | None:
        digest = key_hash(secret)
        now = time.monotonic()
        hit = self._found.get(digest)
        if hit is not None and hit[0] > now:
            return hit[1]
        record = await self.store.find_key(digest)
        if len(self._found) >= CACHE_LIMIT:  # a flood of wrong keys must not grow the cache without bound
            self._found.clear()
        self._found[digest] = (now + self.cache_seconds, record)
        return record

    async def admit(self, key: KeyRecord) -> None:
        """Count a request of this key; past its limit for this minute, a 429 (rate_limit_exceeded)
        saying when the next minute starts. The count is the store's, shared by every replica."""
        if key.requests_per_minute is None:
            return
        now = time.time()
        count = await self.store.count_request(key.id, int(now // 60))
        if count > key.requests_per_minute:
            wait = max(1, 60 - int(now % 60))
            raise RateLimited(f"Rate limit reached for this key: {key.requests_per_minute} requests per minute. "
                              f"Try again in {wait}s.", headers={"retry-after": str(wait)})

    async def in_use(self) -> bool:
        """Whether the store holds keys in use: then every request needs a key."""
        until, found = self._any
        now = time.monotonic()
        if until > now:
            return found
        found = await self.store.has_keys()
        self._any = (now + self.cache_seconds, found)
        return found
