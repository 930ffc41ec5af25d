"""Chains a PostgreSQL replica has read, kept to serve the next turn with one small query.

A finished response never changes, so a chain of finished responses read once can be reused,
but on PostgreSQL another replica may delete any link of it at any time (and say so to no
one in time: a notification could arrive after the client's next request). So a cached
chain is never trusted blindly: every use checks, in the same statement that reads what is
new, that each of its links is still there (one primary-key lookup per link, no items read,
nothing parsed). What that statement sees is what a full read of the chain would have seen
at that moment, so a delete acknowledged by any replica is never continued.

Turn N+1 of a conversation served by the replica that saved turn N reads turn N's own row
and items and reuses turn N-1's chain, instead of every response of the chain again.
"""

from __future__ import annotations

import collections

from . import ChainLink

SIZE = 4096  # chains kept (they share their links, so memory grows with new turns only)
TERMINAL = ("completed", "incomplete", "failed", "cancelled")

# What is left of a cached chain: how many of its links are still there and unexpired.
LINKS_LEFT = "SELECT count(*) FROM responses WHERE id = ANY($1::text[]) AND expires_at > $2"

# One response's own row and items, and how many links of its parent's cached chain are left.
ONE_LINK = """
SELECT r.status, r.expires_at, r.previous_response_id,
       (SELECT count(*) FROM responses p WHERE p.id = ANY($4::text[]) AND p.expires_at > $3),
       i.kind, i.data
  FROM responses r LEFT JOIN LATERAL (
       SELECT kind, position, data FROM items WHERE items.response_id = r.id OFFSET 0) i ON TRUE
 WHERE r.id = $1 AND r.owner = $2 AND r.expires_at > $3 AND NOT r.ephemeral
 ORDER BY i.kind, i.position
"""


class ChainCache:
    """response id -> (owner, earliest expiry in the chain, its links), least recently used first out;
    and the parent of every response this process saved."""

    def __init__(self, size: int = SIZE) -> None:
        self.size = size
        self._chains: collections.OrderedDict[str, tuple[str, int, list[ChainLink]]] = collections.OrderedDict()
        self._parent_of: collections.OrderedDict[str, str | None] = collections.OrderedDict()

    def saved(self, response_id: str, previous_response_id: str | None) -> None:
        self._parent_of[response_id] = previous_response_id
        if len(self._parent_of) > self.size * 4:
            self._parent_of.popitem(last=False)

    def parent(self, response_id: str) -> tuple[bool, str | None]:
        """(known, the parent id) of a response this process saved."""
        if response_id in self._parent_of:
            return True, self._parent_of[response_id]
        return False, None

    def get(self, response_id: str, owner: str, now: int) -> tuple[int, list[ChainLink]] | None:
        """(earliest expiry, links) of a cached chain of this owner not yet expired: still to be
        checked against the database (LINKS_LEFT) before use."""
        entry = self._chains.get(response_id)
        if entry is None or entry[0] != owner or entry[1] <= now:
            return None
        self._chains.move_to_end(response_id)
        return entry[1], entry[2]

    def put(self, response_id: str, owner: str, expires: int, links: list[ChainLink]) -> None:
        """Keep a chain whose every link is finished (one still running may change)."""
        if all(link.status in TERMINAL for link in links):
            self._chains[response_id] = (owner, expires, links)
            if len(self._chains) > self.size:
                self._chains.popitem(last=False)

    def drop(self, response_id: str) -> None:
        self._chains.pop(response_id, None)

    def clear(self) -> None:
        self._chains.clear()
