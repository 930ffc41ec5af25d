"""Console sign-in: the API key sealed in an HttpOnly, SameSite=Strict cookie, and CSRF tokens.

The cookie holds the key encrypted (AES-GCM) under a server key kept in the store, so every
replica opens it and none keeps sessions; the key itself never appears in a URL or a page.
Each request checks the key again (a revoked or rotated key signs the console out). A session
also carries a random token that every form posting an action must send back (CSRF).
"""

from __future__ import annotations

import base64
import hmac
import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import orjson

from ..store import Store

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

COOKIE = "responsa_console"
SECRET_NAME = "console-session-1"
LIFETIME = 12 * 3600  # seconds a sign-in lasts


@dataclass(frozen=True)
class Session:
    key: str | None  # None: a server without keys, where every caller is the one local owner
    csrf: str
    expires: int


class Sessions:
    """Seals sessions into cookie values and opens them again."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._aead: AESGCM | None = None

    async def _cipher(self) -> AESGCM:
        # The AES library is loaded by the first sign-in, not by every server that starts.
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        if self._aead is None:
            stored = await self.store.get_secrets(SECRET_NAME)
            if SECRET_NAME not in stored:
                await self.store.add_secret(SECRET_NAME, os.urandom(32))  # another replica may win: read again
                stored = await self.store.get_secrets(SECRET_NAME)
            self._aead = AESGCM(stored[SECRET_NAME])
        return self._aead

    async def seal(self, key: str | None) -> tuple[str, Session]:
        session = Session(key, base64.urlsafe_b64encode(os.urandom(18)).decode(), int(time.time()) + LIFETIME)
        nonce = os.urandom(12)
        plain = orjson.dumps({"k": session.key, "c": session.csrf, "e": session.expires})
        sealed = nonce + (await self._cipher()).encrypt(nonce, plain, COOKIE.encode())
        return base64.urlsafe_b64encode(sealed).decode().rstrip("="), session

    async def open(self, value: str | None) -> Session | None:
        """The session a cookie value holds; None if absent, forged, damaged or expired."""
        if not value or len(value) > 8192:
            return None
        from cryptography.exceptions import InvalidTag

        try:
            raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
            plain = (await self._cipher()).decrypt(raw[:12], raw[12:], COOKIE.encode())
            data = orjson.loads(plain)
        except (ValueError, InvalidTag, orjson.JSONDecodeError):
            return None
        if not isinstance(data, dict) or not isinstance(data.get("e"), int) or data["e"] < time.time():
            return None
        return Session(data.get("k"), str(data.get("c")), data["e"])


def csrf_ok(session: Session, sent: object) -> bool:
    return isinstance(sent, str) and hmac.compare_digest(sent.encode(), session.csrf.encode())
