"""The reasoning vault: reasoning sealed into `encrypted_content` and opened when it comes back.

Stateless clients (Codex, `store: false`) carry reasoning across turns themselves: they ask
for `include: ["reasoning.encrypted_content"]` and echo each reasoning item with its
ciphertext (often with `content: null`). The ciphertext is AES-256-GCM over a small JSON
document holding the reasoning text, the owner (API-key hash) and an expiry, under a server
key. It is `base64url(nonce || ciphertext+tag)` and nothing else: no key id, no item id, no
timestamp in clear. Decryption tries each known key, so rotation needs no marker either.

Keys: those given with `--reasoning-key` (the first encrypts, all decrypt), otherwise one
created at first start and kept in the store's secrets, so replicas share it. A stored key
still decrypts after keys are configured, so switching to configured keys loses nothing.

Reasoning items that come back without ciphertext and without content (id-only echoes from
the Agents SDK and LangChain) get their content from the caller's stored items by id.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import orjson

from .errors import InvalidRequest
from .store import Store

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    from .events import ResponseEvents

INCLUDE = "reasoning.encrypted_content"
SECRET_PREFIX = "reasoning-key/"
# Bound into every ciphertext: a format change gets a new label and old tokens fail cleanly.
AAD = b"responsa/reasoning/v1"
NONCE_BYTES = 12
TAG_BYTES = 16


class SealError(Exception):
    """Why a ciphertext cannot be used: `invalid`, `foreign` or `expired`."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def derive_key(secret: str | bytes) -> bytes:
    """A 256-bit AES key from a configured key string (or stored random bytes): HKDF-SHA256
    (RFC 5869) without salt, one block. The standard library's HMAC does it, so that the AES
    library (9 MiB resident) is loaded only once something is sealed or opened."""
    raw = secret.encode() if isinstance(secret, str) else secret
    prk = hmac.digest(bytes(32), raw, hashlib.sha256)
    return hmac.digest(prk, b"responsa reasoning key" + b"\x01", hashlib.sha256)


class ReasoningVault:
    """Seals reasoning for its owner and opens it again; see the module docstring."""

    def __init__(self, store: Store, *, keys: Sequence[str] = (), retention: int,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.configured = [derive_key(k) for k in keys]
        self.retention = retention
        self.clock = clock
        self._keys = list(self.configured)
        self._cipher_list: list[AESGCM] | None = None

    def _ciphers(self) -> list[AESGCM]:
        if self._cipher_list is None:
            from cryptography.hazmat.primitives.ciphers.aead import AESGCM

            self._cipher_list = [AESGCM(k) for k in self._keys]
        return self._cipher_list

    async def start(self) -> None:
        """Load the stored key (creating it on first start unless keys are configured)."""
        stored = await self.store.get_secrets(SECRET_PREFIX)
        if not stored and not self.configured:
            # INSERT-if-absent: replicas starting together all end up with the winner's key.
            await self.store.add_secret(SECRET_PREFIX + "1", os.urandom(32))
            stored = await self.store.get_secrets(SECRET_PREFIX)
        keys = list(self.configured)
        for value in reversed(list(stored.values())):  # newest first
            key = derive_key(value)
            if key not in keys:
                keys.append(key)
        self._keys, self._cipher_list = keys, None

    # ---- tokens ---------------------------------------------------------------------------

    def seal(self, texts: Sequence[str], owner: str, *, purpose: bytes = AAD) -> str:
        """Encrypt reasoning texts for `owner`, valid for the retention period.

        `purpose` is bound into the ciphertext: a token sealed for one kind of item (reasoning,
        a compaction summary) does not open as another."""
        if not self._keys:
            raise RuntimeError("the reasoning vault has no key (start() was not awaited)")
        payload = orjson.dumps({"o": owner, "x": int(self.clock()) + self.retention, "t": list(texts)})
        nonce = os.urandom(NONCE_BYTES)
        return base64.urlsafe_b64encode(nonce + self._ciphers()[0].encrypt(nonce, payload, purpose)).decode()

    def unseal(self, token: str, owner: str, *, purpose: bytes = AAD, check_expiry: bool = True) -> list[str]:
        """The texts of a token; raises SealError. `check_expiry=False` for tokens read back from
        this server's own store, which expire with what holds them."""
        try:
            raw = base64.b64decode(token.encode("ascii"), altchars=b"-_", validate=True)
        except (binascii.Error, UnicodeEncodeError, ValueError):
            raise SealError("invalid") from None
        if len(raw) < NONCE_BYTES + TAG_BYTES:
            raise SealError("invalid")
        nonce, body = raw[:NONCE_BYTES], raw[NONCE_BYTES:]
        ciphers = self._ciphers()
        from cryptography.exceptions import InvalidTag

        for cipher in ciphers:
            try:
                payload = orjson.loads(cipher.decrypt(nonce, body, purpose))
                break
            except InvalidTag:
                continue
        else:
            raise SealError("invalid")
        if payload.get("o") != owner:
            raise SealError("foreign")
        if check_expiry and payload.get("x", 0) <= self.clock():
            raise SealError("expired")
        return [str(t) for t in payload.get("t", ())]

    def seal_item(self, item: dict, owner: str) -> str:
        return self.seal([p.get("text") or "" for p in item.get("content") or ()], owner)

    # ---- service hooks --------------------------------------------------------------------------

    async def open_items(self, items: list[dict], owner: str) -> list[dict]:
        """Input items with the content of reasoning items restored (from ciphertext or storage).

        A bad ciphertext is a 400 naming the item; it is checked even when the item also
        carries content in clear, so tampering never goes unnoticed."""
        out: list[dict] = []
        lookups: dict[int, str] = {}
        for n, item in enumerate(items):
            if item.get("type") != "reasoning":
                out.append(item)
                continue
            token = item.get("encrypted_content")
            if token is not None:
                texts = self._open(token, owner, n, item)
                if not item.get("content"):
                    item = {**item, "content": [{"type": "reasoning_text", "text": t} for t in texts]}
            elif not item.get("content") and item.get("id"):
                lookups[n] = item["id"]
            out.append(item)
        if lookups:
            found = await self.store.find_items(owner, list(set(lookups.values())))
            for n, item_id in lookups.items():
                stored = found.get(item_id)
                if stored is not None and stored.get("type") == "reasoning" and stored.get("content"):
                    out[n] = {**out[n], "content": stored["content"]}
        return out

    def _open(self, token: str, owner: str, n: int, item: dict) -> list[str]:
        try:
            return self.unseal(token, owner)
        except SealError as e:
            what = f"The encrypted_content of input[{n}] (reasoning item '{item.get('id', '')}')"
            reason = {
                "invalid": "cannot be decrypted: it was altered, or was not produced by this server "
                           "with a key it still has",
                "foreign": "was issued to a different API key",
                "expired": "has expired; send the conversation without it",
            }[e.reason]
            raise InvalidRequest(f"{what} {reason}.", param=f"input[{n}].encrypted_content",
                                 code="invalid_encrypted_content") from None

    def seal_done_items(self, events: ResponseEvents, owner: str) -> None:
        """Seal each reasoning item as it is done (the request included encrypted content)."""

        def seal_done(item: dict) -> None:
            if item.get("type") == "reasoning":
                item["encrypted_content"] = self.seal_item(item, owner)

        events.item_done_hooks.append(seal_done)

    async def seal_output(self, response: dict, owner: str) -> None:
        """Fresh `encrypted_content` on a retrieved response's reasoning items."""
        for item in response.get("output") or ():
            if item.get("type") == "reasoning":
                item["encrypted_content"] = self.seal_item(item, owner)

    def strip_output(self, response: dict) -> None:
        """Leave out stored ciphertext when a retrieve does not ask for it."""
        for item in response.get("output") or ():
            if item.get("type") == "reasoning":
                item.pop("encrypted_content", None)
