"""Usage per key, project, model and day (UTC): requests, input / output / cached / reasoning
tokens, errors, as each response's `usage` reports them.

A finished response adds its numbers to a table in memory; every `flush_interval` seconds (and
at shutdown, and before an admin read) the table goes to the store in one statement that adds
to the stored rows, so replicas sum up. A crash loses at most the last interval's numbers.

`Ticket` is what the service holds for one response while it runs: the slots its key's
stream or background-run limits took, and, when it ends, its usage and its tokens counted
against the key's token limits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING

from .logs import current
from .quotas import Account, Quotas
from .store import Store, UsageRow

if TYPE_CHECKING:
    from .run import ResponseRun

log = logging.getLogger("responsa")
LOCAL = "local"  # the one caller when the server has no keys


_day: tuple[int, str] = (-1, "")  # (days since the epoch, that day as YYYY-MM-DD)


def today() -> str:
    """The UTC day, formatted once a day (strftime on every response was 0.8% of a plain
    request's CPU in a profile)."""
    global _day
    number = int(time.time()) // 86400
    if number != _day[0]:
        _day = (number, time.strftime("%Y-%m-%d", time.gmtime(number * 86400)))
    return _day[1]


class UsageMeter:
    def __init__(self, store: Store, flush_interval: float = 5.0) -> None:
        self.store = store
        self.flush_interval = flush_interval
        self.pending: dict[tuple[str, str, str, str], UsageRow] = {}
        self._task: asyncio.Task | None = None
        self._lock = asyncio.Lock()

    def add(self, key: str, project: str, model: str, usage: dict | None, *, error: bool) -> None:
        day = today()
        row = self.pending.get((day, key, project, model))
        if row is None:
            row = self.pending[(day, key, project, model)] = UsageRow(day, key, project, model)
        row.requests += 1
        row.errors += error
        if usage:
            row.input_tokens += usage.get("input_tokens") or 0
            row.output_tokens += usage.get("output_tokens") or 0
            row.cached_tokens += (usage.get("input_tokens_details") or {}).get("cached_tokens") or 0
            row.reasoning_tokens += (usage.get("output_tokens_details") or {}).get("reasoning_tokens") or 0

    async def flush(self) -> None:
        async with self._lock:
            if not self.pending:
                return
            rows, self.pending = list(self.pending.values()), {}
            try:
                await self.store.add_usage(rows)
            except Exception:  # kept for the next flush (a database outage)
                for row in rows:
                    mine = self.pending.setdefault((row.day, row.key, row.project, row.model), row)
                    if mine is not row:
                        for c in UsageRow.COUNTS:
                            setattr(mine, c, getattr(mine, c) + getattr(row, c))
                raise

    async def _flush_forever(self) -> None:
        while True:
            await asyncio.sleep(self.flush_interval)
            try:
                await self.flush()
            except Exception as e:
                log.warning("usage could not be stored; retrying: %s", e)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._flush_forever())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        try:
            await self.flush()
        except Exception as e:
            log.warning("usage of the last %ss was not stored: %s", self.flush_interval, e)


class Accounting:
    """What the service calls around each response it creates (see `Ticket`)."""

    def __init__(self, meter: UsageMeter, quotas: Quotas) -> None:
        self.meter = meter
        self.quotas = quotas

    async def begin(self, model: str, *, stream: bool, background: bool) -> Ticket:
        info = current.get()
        account = info.account if info is not None else None
        if account is None:
            account = Account(info.key or LOCAL if info is not None else LOCAL)
        slots: list[tuple[str, str]] = []
        if background or stream:
            slots = await self.quotas.occupy(account, "background_runs" if background else "streams")
        return Ticket(self, account, model, slots)


class Ticket:
    __slots__ = ("account", "accounting", "done", "model", "slots")

    def __init__(self, accounting: Accounting, account: Account, model: str, slots: list[tuple[str, str]]) -> None:
        self.accounting = accounting
        self.account = account
        self.model = model
        self.slots = slots
        self.done = False

    async def follow(self, run: ResponseRun, task: asyncio.Task | None) -> None:
        """Count the response when it ends: now (a plain response: its tokens are counted before
        the answer goes out, so the key's next request sees them) or when its task does."""
        if task is None:
            tokens = self._end(run)
            if tokens:
                await self.accounting.quotas.spend_now(self.account, tokens)
        else:
            task.add_done_callback(lambda _t: self.finished(run))

    def finished(self, run: ResponseRun) -> None:
        tokens = self._end(run)
        if tokens:
            self.accounting.quotas.spend(self.account, tokens)

    def failed(self) -> None:
        """The response was refused (an error answer): one request, one error, no tokens."""
        self._count(None, error=True)

    def _end(self, run: ResponseRun) -> int:
        if self.done:
            return 0
        usage = run.response.get("usage") or run.usage()
        self._count(usage, error=run.response.get("status") == "failed")
        return (usage.get("input_tokens") or 0) + (usage.get("output_tokens") or 0) if usage else 0

    def _count(self, usage: dict | None, *, error: bool) -> None:
        if self.done:
            return
        self.done = True
        accounting, account = self.accounting, self.account
        accounting.meter.add(account.key, account.project, self.model, usage, error=error)
        if self.slots:
            accounting.quotas.release(self.slots)
