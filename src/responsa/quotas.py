"""Limits of store keys (`responsa keys`), per key and per project, held for all replicas at once.

What a key may use: requests per minute, tokens per minute and per day (input + output, as each
response's `usage` counts them), streams and background runs at once. A project's limits hold
for all its keys together, beside each key's own. Counts live in the store, so every replica
sees the same: a window is a row (scope, length) counting requests and tokens since it started,
begun again by the first request after it ended; a stream or background run holds a slot of
its scope until it ends (renewed every third of `--lease-duration` while it runs, so slots of a
replica that died free themselves).

Cost: a key with no limits costs nothing; one with request or token limits one statement per
request (every window counted at once) and one per finished response (its tokens); one with
stream or run limits one statement as a response starts and one as it ends.

Past a limit the request is a 429 in the OpenAI envelope (`rate_limit_exceeded`) with
`retry-after`; every answer to a key with request or token limits carries the
`x-ratelimit-{limit,remaining,reset}-{requests,tokens}` headers of the hosted API.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import uuid
from dataclasses import dataclass, field

from .errors import RateLimited
from .logs import current
from .store import KeyRecord, Limits, Store

log = logging.getLogger("responsa")
SLOT_KINDS = {"streams": "streams", "background_runs": "background runs"}


@dataclass(slots=True)
class Account:
    """Who a request is counted for: a store key, its project, and the windows its tokens go to."""

    key: str  # the key's id (store keys), its name (--api-key keys) or "local"
    project: str = ""
    record: KeyRecord | None = None  # a store key's record (a WebSocket counts each response.create)
    scopes: list[tuple[str, Limits]] = field(default_factory=list)
    token_windows: list[tuple[str, int]] = field(default_factory=list)


def reset_text(ms: int) -> str:
    """A wait as the hosted API writes it in `x-ratelimit-reset-*`: 20ms, 1s, 6m0s, 1h2m3s."""
    if ms < 1000:
        return f"{max(ms, 0)}ms"
    seconds = ms / 1000
    hours, rest = divmod(int(seconds), 3600)
    minutes, secs = divmod(rest, 60)
    tail = f"{secs + seconds - int(seconds):.3g}s" if not hours and not minutes else f"{secs}s"
    return (f"{hours}h" if hours else "") + (f"{minutes}m" if hours or minutes else "") + tail


class Quotas:
    def __init__(self, store: Store, *, minute: float = 60, day: float = 86400, lease_seconds: float = 30) -> None:
        self.store = store
        self.minute_ms = int(minute * 1000)
        self.day_ms = int(day * 1000)
        self.lease_ms = int(lease_seconds * 1000)
        self.held: dict[str, set[str]] = {}  # slot scope -> the slots this process holds in it
        self._renewer: asyncio.Task | None = None
        self._writes: set[asyncio.Task] = set()

    # ---- requests and tokens ------------------------------------------------------------------

    async def admit(self, key: KeyRecord) -> None:
        """Count a request of this key (and its project); past a limit, a 429."""
        account = Account(key.id, key.project or "", key)
        scopes = [("key:" + key.id, key.limits)]
        if key.project and key.project_limits is not None and key.project_limits.any():
            scopes.append(("project:" + key.project, key.project_limits))
        windows: list[tuple[str, int]] = []
        for scope, limits in scopes:
            if limits.requests_per_minute is not None or limits.tokens_per_minute is not None:
                windows.append((scope, self.minute_ms))
            if limits.tokens_per_day is not None:
                windows.append((scope, self.day_ms))
            if limits.tokens_per_minute is not None:
                account.token_windows.append((scope, self.minute_ms))
            if limits.tokens_per_day is not None:
                account.token_windows.append((scope, self.day_ms))
        account.scopes = scopes
        info = current.get()
        if info is not None:
            info.account = account
        if not windows:
            return
        now = int(time.time() * 1000)
        counts = dict(zip(windows, await self.store.take_windows(windows, now), strict=True))
        # The tightest of each kind is what the headers tell.
        requests: tuple[int, int, int] | None = None  # (limit, remaining, reset ms)
        tokens: tuple[int, int, int] | None = None
        over: tuple[str, int, int, int] | None = None  # (what, limit, used, reset ms)
        for scope, limits in scopes:
            if limits.requests_per_minute is not None:
                used, _, started = counts[(scope, self.minute_ms)]
                reset = started + self.minute_ms - now
                left = limits.requests_per_minute - used
                if requests is None or left < requests[1]:
                    requests = (limits.requests_per_minute, max(left, 0), reset)
                if left < 0 and over is None:
                    over = ("requests per min (RPM)", limits.requests_per_minute, used - 1, reset)
            for limit, span, what in ((limits.tokens_per_minute, self.minute_ms, "tokens per min (TPM)"),
                                      (limits.tokens_per_day, self.day_ms, "tokens per day (TPD)")):
                if limit is None:
                    continue
                _, used, started = counts[(scope, span)]
                reset = started + span - now
                left = limit - used
                if tokens is None or left < tokens[1]:
                    tokens = (limit, max(left, 0), reset)
                if left <= 0 and over is None:
                    over = (what, limit, used, reset)
        headers: dict[str, str] = {}
        for name, value in (("requests", requests), ("tokens", tokens)):
            if value is not None:
                headers[f"x-ratelimit-limit-{name}"] = str(value[0])
                headers[f"x-ratelimit-remaining-{name}"] = str(value[1])
                headers[f"x-ratelimit-reset-{name}"] = reset_text(value[2])
        if over is not None:
            what, limit, used, reset = over
            wait = max(reset, 0) / 1000
            raise RateLimited(f"Rate limit reached for this key on {what}: Limit {limit}, Used {used}. "
                              f"Please try again in {wait:.3g}s.",
                              headers={**headers, "retry-after": str(max(1, math.ceil(wait)))})
        if info is not None:
            info.headers = [(k.encode(), v.encode()) for k, v in headers.items()]

    def spend(self, account: Account, tokens: int) -> None:
        """Count a finished response's tokens in its key's (and project's) token windows."""
        if account.token_windows and tokens > 0:
            self._background(self.store.add_window_tokens(account.token_windows, tokens))

    async def spend_now(self, account: Account, tokens: int) -> None:
        if account.token_windows and tokens > 0:
            await self._quietly(self.store.add_window_tokens(account.token_windows, tokens))

    # ---- streams and background runs ----------------------------------------------------------

    async def occupy(self, account: Account, kind: str) -> list[tuple[str, str]]:
        """Take a slot of each scope limiting `kind` (streams, background_runs); a 429 if one is full.
        Returns what to give back when the response ends."""
        taken: list[tuple[str, str]] = []
        for scope, limits in account.scopes:
            limit = getattr(limits, kind)
            if limit is None:
                continue
            name, slot = f"{kind}:{scope}", uuid.uuid4().hex
            now = int(time.time() * 1000)
            if not await self.store.take_slot(name, slot, limit, now, now + self.lease_ms):
                for other in taken:
                    await self._give_back(*other)
                raise RateLimited(f"Too many {SLOT_KINDS[kind]} at once for this "
                                  f"{scope.split(':')[0]}: the limit is {limit}. Try again when one has ended.",
                                  headers={"retry-after": "1"})
            self.held.setdefault(name, set()).add(slot)
            taken.append((name, slot))
        return taken

    def release(self, taken: list[tuple[str, str]]) -> None:
        for name, slot in taken:
            self._background(self._give_back(name, slot))

    async def _give_back(self, name: str, slot: str) -> None:
        slots = self.held.get(name)
        if slots is not None:
            slots.discard(slot)
            if not slots:
                del self.held[name]
        await self.store.release_slot(name, slot)

    def _background(self, coro: object) -> None:
        task = asyncio.get_running_loop().create_task(self._quietly(coro))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    @staticmethod
    async def _quietly(coro: object) -> None:
        try:
            await coro  # type: ignore[misc]
        except Exception as e:  # a database outage: the count is lost, the response is not
            log.warning("a quota count could not be stored: %s", e)

    async def _renew_forever(self) -> None:
        while True:
            await asyncio.sleep(self.lease_ms / 3000)
            if self.held:
                try:
                    await self.store.renew_slots({k: list(v) for k, v in self.held.items()},
                                                 int(time.time() * 1000) + self.lease_ms)
                except Exception as e:
                    log.warning("quota slots could not be renewed: %s", e)

    def start(self) -> None:
        self._renewer = asyncio.get_running_loop().create_task(self._renew_forever())

    async def close(self) -> None:
        if self._renewer is not None:
            self._renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewer
        if self._writes:
            await asyncio.gather(*list(self._writes), return_exceptions=True)
        for name, slots in list(self.held.items()):  # a stopping replica frees what it held
            for slot in list(slots):
                with contextlib.suppress(Exception):
                    await self.store.release_slot(name, slot)
        self.held.clear()
