"""The console's vector-store pages: a key's stores, one store's files, and a search box that runs
the store's search as `POST /v1/vector_stores/{id}/search` does (with the default ranking).

A search is a GET (the form works with JavaScript off, and the results page can be reloaded or
linked): it reads only, so unlike the API's search it does not mark the store active (a look
from the console does not push back the store's expiry). The admin key lists every owner's
stores and opens one as its owner, named in the link (`?owner=`), as for conversations.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from ..checks import may_exist
from ..errors import APIError, InvalidRequest, not_found
from ..store.vector_records import STATUSES, VectorStoreRecord

if TYPE_CHECKING:
    from ..vectors.service import VectorStores
    from . import Console

PAGE = 50  # stores, or files of a store, a page
MAX_RESULTS = 10  # search results shown
MAX_QUERY = 2000  # characters of a search query


class VectorStorePages:
    def __init__(self, console: Console, vectors: VectorStores) -> None:
        self.console = console
        self.vectors = vectors
        self.index = vectors.index

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/vector_stores", self.stores, methods=["GET"]),
            Route("/vector_stores/{vector_store_id}", self.store, methods=["GET"]),
        ]

    async def stores(self, request: Request) -> Response:
        viewer = await self.console.viewer(request)
        if viewer is None:
            return self.console.to_signin()
        after = request.query_params.get("after") or None
        if viewer.admin:  # every owner's: their ids and owners, then each one read as its owner
            found, more = await self.console.store.vector_store_owners(after=after, limit=PAGE)
            records = [r for sid, owner in found if (r := await self.index.get_vector_store(sid, owner))]
            # The cursor is the page's last id (a store deleted since still names its place).
            cursor = found[-1][0] if found else None
        else:
            records, more = await self.index.list_vector_stores(viewer.owner, after=after, before=None, limit=PAGE,
                                                                order="desc")
            cursor = records[-1].id if records else None
        now = int(time.time())
        stores = [{**r.wire(now), "owner": r.owner} for r in records]
        return self.console.page("vector_stores.html", viewer=viewer, stores=stores, more=more, next_after=cursor)

    async def store(self, request: Request) -> Response:
        viewer = await self.console.viewer(request)
        if viewer is None:
            return self.console.to_signin()
        store_id = request.path_params["vector_store_id"]
        params = request.query_params
        # An admin key opens any owner's store from its list, which names the owner.
        owner = params.get("owner") or viewer.owner if viewer.admin else viewer.owner
        try:
            record = await self.find(store_id, owner)
            status = params.get("status") or None
            if status is not None and status not in STATUSES:
                raise InvalidRequest(f"Invalid 'status': expected one of {', '.join(STATUSES)}.", param="status",
                                     code="invalid_value")
            after = params.get("after") or None
            files, more = await self.index.list_vector_files(record.id, owner, status=status, batch_id=None,
                                                             after=after, before=None, limit=PAGE, order="desc")
            query = (params.get("q") or "").strip()
            if len(query) > MAX_QUERY:
                raise InvalidRequest(f"The search is too long: at most {MAX_QUERY} characters.", param="q",
                                     code="string_above_max_length")
            hits = await self.vectors.searcher.search(owner, [record.id], [query], max_results=MAX_RESULTS) \
                if query else None
        except APIError as e:
            return self.console.error_page(viewer, e)
        keep = {"owner": owner} if viewer.admin else {}
        return self.console.page("vector_store.html", viewer=viewer, s=record.wire(int(time.time())),
                                 files=[f.wire() | {"filename": f.filename} for f in files], more=more,
                                 status=status, query=query, hits=hits, keep=keep,
                                 s_owner=owner if viewer.admin else None)

    async def find(self, store_id: str, owner: str) -> VectorStoreRecord:
        record = await self.index.get_vector_store(store_id, owner) \
            if may_exist(store_id) and may_exist(owner) else None
        if record is None:
            raise not_found("Vector store", store_id)
        return record

