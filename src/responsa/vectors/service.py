"""The vector-store parts a server runs, built from its settings: the embedder, the ingestion
worker, the searcher and the API routes (app.py composes them)."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from ..store import Store
from ..store.vector_records import VectorIndex
from .embed import make_embedder
from .ingest import Ingester

if TYPE_CHECKING:
    from starlette.routing import BaseRoute

    from ..config import Settings
    from ..endpoints import Auth
    from .search import Searcher


class VectorStores:
    def __init__(self, store: Store, settings: Settings, *, instance: str, take_all: bool) -> None:
        self.store = store
        self.index = cast(VectorIndex, store)  # both stores implement it (store/*_vectors.py)
        self.embedder = make_embedder(settings)
        self.cache_bytes = settings.vector_cache_size
        self.ingester = Ingester(self.index, self._load_file, self.embedder, instance, take_all=take_all,
                                 lease_seconds=max(10, settings.lease_duration))
        self._searcher: Searcher | None = None

    @property
    def searcher(self) -> Searcher:
        """Made by the first search: numpy is loaded then, not at start-up."""
        if self._searcher is None:
            from .search import Searcher

            self._searcher = Searcher(self.index, self.embedder, cache_bytes=self.cache_bytes)
        return self._searcher

    async def _load_file(self, file_id: str, owner: str) -> tuple[bytes, str, str] | None:
        record = await self.store.get_file(file_id, owner)
        data = await self.store.file_content(file_id, owner) if record is not None else None
        if record is None or data is None:
            return None
        return data, record.mime_type, record.filename

    def routes(self, auth: Auth, max_body_size: int) -> list[BaseRoute]:
        from .api import VectorStoreEndpoints

        return VectorStoreEndpoints(self, auth, max_body_size=max_body_size).routes()

    def forget(self, store_id: str) -> None:
        """Drop a deleted store's cached vectors."""
        if self._searcher is not None:
            self._searcher.forget(store_id)

    def start(self) -> None:
        self.ingester.start()

    async def stop(self) -> None:
        await self.ingester.stop()
