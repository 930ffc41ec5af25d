"""A WebSocket connection's responses that the store cannot give back, held while it is open.

A `store=false` response is never written, so over HTTP nothing can continue it. On a
WebSocket connection it can: its whole context (the items before it, its input, its output)
is kept in memory for the connection's life, and `previous_response_id` on the same connection
continues it. So is a stored response that continues one of those (the store holds it, but
not the unstored response before it). Nothing here reaches the database, and it is gone with
the connection. The cache is bounded: the least recently continued response goes first.
"""

from __future__ import annotations

from collections import OrderedDict

from .errors import InvalidRequest

ENTRIES = 16  # responses held per connection
KEPT = frozenset({"completed", "incomplete"})  # what can be continued


class ChainCache:
    """The contexts of one connection's unstored responses, by response id."""

    def __init__(self, entries: int = ENTRIES) -> None:
        self.entries = entries
        self._contexts: OrderedDict[str, list[dict]] = OrderedDict()
        self.running: set[str] = set()  # unstored responses still running on the connection

    def __len__(self) -> int:
        return len(self._contexts)

    def __contains__(self, rid: str) -> bool:
        return rid in self._contexts

    def get(self, rid: str) -> list[dict] | None:
        context = self._contexts.get(rid)
        if context is not None:
            self._contexts.move_to_end(rid)
        return context

    def add(self, rid: str, context: list[dict]) -> None:
        self._contexts[rid] = context
        self._contexts.move_to_end(rid)
        while len(self._contexts) > self.entries:
            self._contexts.popitem(last=False)

    def evict(self, rid: str) -> None:
        """Forget a response (a continuation of it failed: the hosted API evicts it too)."""
        self._contexts.pop(rid, None)

    def request(self) -> CachedChain:
        """The view one `response.create` gets (prepare.py's `LocalChain`)."""
        return CachedChain(self)


class CachedChain:
    """One request's view of its connection's cache: what it continues, and what it runs on."""

    def __init__(self, cache: ChainCache) -> None:
        self.cache = cache
        self.rid: str | None = None
        self.context: list[dict] | None = None
        self.keep = False

    def items(self, rid: str) -> list[dict] | None:
        if rid in self.cache.running:  # another lane's response, not finished yet
            raise InvalidRequest(f"Previous response with id '{rid}' is still in_progress; wait for it to "
                                 "finish.", param="previous_response_id", code="previous_response_in_progress")
        return self.cache.get(rid)

    def begin(self, rid: str, context: list[dict], rebuildable: bool) -> None:
        self.rid, self.context, self.keep = rid, context, not rebuildable
        if self.keep:
            self.cache.running.add(rid)

    def finish(self, response: dict | None) -> None:
        """The response ended as `response` (a terminal event's; None: without one, e.g.
        cancelled): held if it can be continued and the store could not give it back."""
        rid = self.rid
        if rid is None:
            return
        self.cache.running.discard(rid)
        if self.keep and self.context is not None and response is not None and response.get("id") == rid \
                and response.get("status") in KEPT:
            self.cache.add(rid, [*self.context, *response.get("output", ())])
