"""Waiting again and again for the next piece of a slow stream, with a limit on the silence.

`asyncio.timeout` around each wait makes a timer and cancels it, every time; a cancelled timer
stays in the event loop's heap until its time comes. A relay of thousands of slow streams
waits once per token per stream, so that is CPU on every token and a heap as large as the
tokens of a timeout's worth of seconds. Here one timer per waiter follows a deadline that each
wait moves: armed by the first wait, and on firing re-armed at the current deadline if that
has moved on (only a wait whose deadline is nearer than the armed timer re-arms it at once).
"""

from __future__ import annotations

import asyncio


class IdleWaiter:
    """`await wait(seconds)`: True once `wake()` is called, False after `seconds` without it."""

    __slots__ = ("_deadline", "_timer", "_timer_at", "_waiter")

    def __init__(self) -> None:
        self._waiter: asyncio.Future[bool] | None = None
        self._deadline = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0

    def wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(True)

    async def wait(self, seconds: float) -> bool:
        loop = asyncio.get_running_loop()
        self._waiter = waiter = loop.create_future()
        self._deadline = deadline = loop.time() + seconds
        if self._timer is None or self._timer_at > deadline:
            if self._timer is not None:
                self._timer.cancel()
            self._arm(loop, deadline)
        try:
            return await waiter
        finally:
            self._waiter = None

    def cancel(self) -> None:
        """No more waits (the stream ended): drop the timer now rather than when it fires."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _arm(self, loop: asyncio.AbstractEventLoop, at: float) -> None:
        self._timer_at = at
        self._timer = loop.call_at(at, self._check)

    def _check(self) -> None:
        self._timer = None
        waiter = self._waiter
        if waiter is None or waiter.done():
            return  # nobody waits: the next wait arms the timer again
        loop = waiter.get_loop()
        if loop.time() >= self._deadline:
            waiter.set_result(False)
        else:  # woken meanwhile, and waiting again since: until that wait's own deadline
            self._arm(loop, self._deadline)
