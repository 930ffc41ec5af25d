"""API keys the server makes (`responsa keys`), stored as hashes and looked up by every replica.

A key is shown once, when it is created or rotated; the store keeps the sha256 of its secret.
What a key creates is owned by its `owner` id, which rotation keeps: a rotated key still reads
everything the old secret made. Keys of one project share one owner id, so each reads what
the others made. Keys given with `--api-key` work as before, beside these.

A key, and a project (for all its keys together), may have limits: see quotas.py.

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

from .store import LIMIT_FIELDS, KeyRecord, Limits, Store

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


def check_limits(limits: Limits) -> Limits:
    """Limits as given: each a positive number, or 0 / None for none."""
    values = {}
    for name in LIMIT_FIELDS:
        value = getattr(limits, name)
        if value is not None and value < 0:
            raise InvalidKeyArgument(f"invalid {name.replace('_', '-')} {value}: a positive number, or 0 for none")
        values[name] = value or None
    return Limits(**values)


async def create(store: Store, name: str, project: str | None = None,
                 limits: Limits | None = None) -> tuple[str, KeyRecord]:
    """A new key: (its secret, shown once; its record, as stored)."""
    check_name(name, "name")
    if project is not None:
        check_name(project, "project")
    secret = new_secret()
    record = KeyRecord(id="key_" + uuid.uuid4().hex[:16], name=name,
                       owner=project_owner(project) if project else uuid.uuid4().hex, hash=key_hash(secret),
                       created_at=int(time.time()), project=project, limits=check_limits(limits or Limits()))
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


async def set_limits(store: Store, key_id: str, limits: Limits) -> bool:
    """Replace a key's limits (every replica applies them within the key cache's time)."""
    if not await store.set_key_limits(key_id, check_limits(limits)):
        return False
    await store.notify(NOTIFY_CHANNEL, key_id)
    return True


async def set_project_limits(store: Store, project: str, limits: Limits) -> None:
    """Replace a project's limits, which its keys share."""
    await store.set_project_limits(check_name(project, "project"), check_limits(limits))
    await store.notify(NOTIFY_CHANNEL, project)


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

    async def in_use(self) -> bool:
        """Whether the store holds keys in use: then every request needs a key."""
        until, found = self._any
        now = time.monotonic()
        if until > now:
            return found
        found = await self.store.has_keys()
        self._any = (now + self.cache_seconds, found)
        return found
