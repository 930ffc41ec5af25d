"""The Vector Stores API: stores, their files, file batches and search; each key sees its own."""

from __future__ import annotations

import time
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from .. import checks as c
from ..endpoints import Auth, JSONResponse, query_int, read_json
from ..errors import InvalidRequest, not_found
from ..ids import new_id
from ..protocol import metadata
from ..store.vector_records import STATUSES, FileBatchRecord, VectorFileRecord, VectorStoreRecord
from .chunking import AUTO
from .filters import check_filter, check_ranking
from .service import VectorStores

MAX_FILES_PER_REQUEST = 500
MAX_ATTRIBUTES = 16


def check_chunking(value: Any, param: str) -> dict:
    """A `chunking_strategy`, as stored: `auto` becomes the static strategy it stands for."""
    if value is None:
        return {"type": "static", "static": dict(AUTO)}
    if not isinstance(value, dict):
        raise c.wrong_type(param, "an object", value)
    kind = c.choice(value, "type", f"{param}.type", ("auto", "static"), required=True)
    if kind == "auto":
        return {"type": "static", "static": dict(AUTO)}
    static = c.mapping(value, "static", f"{param}.static", required=True) or {}
    size = c.integer(static, "max_chunk_size_tokens", f"{param}.static.max_chunk_size_tokens", 100, 4096)
    overlap = c.integer(static, "chunk_overlap_tokens", f"{param}.static.chunk_overlap_tokens", 0, 4096)
    if size is None:
        raise c.missing(f"{param}.static.max_chunk_size_tokens")
    if overlap is None:
        raise c.missing(f"{param}.static.chunk_overlap_tokens")
    if overlap > size // 2:
        raise InvalidRequest(f"Invalid '{param}.static.chunk_overlap_tokens': the overlap must not exceed half "
                             f"of max_chunk_size_tokens ({size // 2}).",
                             param=f"{param}.static.chunk_overlap_tokens", code="invalid_value")
    return {"type": "static", "static": {"max_chunk_size_tokens": size, "chunk_overlap_tokens": overlap}}


def check_attributes(value: Any, param: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise c.wrong_type(param, "an object", value)
    if len(value) > MAX_ATTRIBUTES:
        raise InvalidRequest(f"Invalid '{param}': at most {MAX_ATTRIBUTES} attributes.", param=param,
                             code="invalid_value")
    for key, v in value.items():
        c.storable(c.length(key, param, 64), param)
        if isinstance(v, str):
            c.storable(c.length(v, f"{param}.{key}", 512), f"{param}.{key}")
        elif not isinstance(v, (int, float, bool)):
            raise c.wrong_type(f"{param}.{key}", "a string, number or boolean", v)
    return dict(value)


def _expires_after(body: dict) -> int | None:
    value = c.mapping(body, "expires_after", "expires_after")
    if value is None:
        return None
    c.choice(value, "anchor", "expires_after.anchor", ("last_active_at",), required=True)
    days = c.integer(value, "days", "expires_after.days", 1, 365)
    if days is None:
        raise c.missing("expires_after.days")
    return days


def _page(data: list[dict], has_more: bool) -> dict:
    return {"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None, "has_more": has_more}


class VectorStoreEndpoints:
    """`/vector_stores` routes bound to one store."""

    def __init__(self, vectors: VectorStores, auth: Auth, *, max_body_size: int) -> None:
        self.vectors = vectors
        self.index = vectors.index
        self.files = vectors.store
        self.ingester = vectors.ingester
        self.auth = auth
        self.max_body_size = max_body_size

    def routes(self) -> list[BaseRoute]:
        base = "/vector_stores/{vector_store_id}"
        return [
            Route("/vector_stores", self.create, methods=["POST"]),
            Route("/vector_stores", self.list_stores, methods=["GET"]),
            Route(base, self.retrieve, methods=["GET"]),
            Route(base, self.update, methods=["POST"]),
            Route(base, self.delete, methods=["DELETE"]),
            Route(base + "/search", self.search, methods=["POST"]),
            Route(base + "/files", self.add_file, methods=["POST"]),
            Route(base + "/files", self.list_files, methods=["GET"]),
            Route(base + "/files/{file_id}", self.get_file, methods=["GET"]),
            Route(base + "/files/{file_id}", self.update_file, methods=["POST"]),
            Route(base + "/files/{file_id}", self.delete_file, methods=["DELETE"]),
            Route(base + "/files/{file_id}/content", self.file_content, methods=["GET"]),
            Route(base + "/file_batches", self.create_batch, methods=["POST"]),
            Route(base + "/file_batches/{batch_id}", self.get_batch, methods=["GET"]),
            Route(base + "/file_batches/{batch_id}/cancel", self.cancel_batch, methods=["POST"]),
            Route(base + "/file_batches/{batch_id}/files", self.list_files, methods=["GET"]),
        ]

    async def _body(self, request: Request) -> dict:
        body = await read_json(request, self.max_body_size, empty={})
        if not isinstance(body, dict):
            raise InvalidRequest("The request body must be a JSON object.", code="invalid_type")
        return body

    async def _store(self, request: Request, owner: str) -> VectorStoreRecord:
        store_id = request.path_params["vector_store_id"]
        record = await self.index.get_vector_store(store_id, owner)
        if record is None:
            raise not_found("Vector store", store_id)
        return record

    async def _attach(self, store_id: str, owner: str, file_ids: list[str], param: str, chunking: dict,
                      attributes: dict[str, Any], batch: FileBatchRecord | None = None) -> list[VectorFileRecord]:
        now = int(time.time())
        records = []
        for i, fid in enumerate(dict.fromkeys(file_ids)):
            found = await self.files.get_file(fid, owner) if c.may_exist(fid) else None
            if found is None:
                raise InvalidRequest(f"File '{fid}' not found.", param=f"{param}[{i}]" if param == "file_ids"
                                     else param, code="file_not_found")
            records.append(VectorFileRecord(vector_store_id=store_id, file_id=fid, owner=owner, created_at=now,
                                            filename=found.filename, status="in_progress", attributes=attributes,
                                            chunking=chunking, batch_id=batch.id if batch else None))
        await self.index.attach_vector_files(records, batch)
        self.ingester.wake()
        return records

    # ---- stores ---------------------------------------------------------------------------------

    async def create(self, request: Request) -> Response:
        owner = await self.auth(request)
        body = await self._body(request)
        now = int(time.time())
        name = c.string(body, "name", "name", max_len=256, stored=True) or ""
        description = c.string(body, "description", "description", max_len=512, stored=True)
        file_ids = c.max_items(c.string_list(body, "file_ids", "file_ids") or [], "file_ids", MAX_FILES_PER_REQUEST)
        chunking = check_chunking(body.get("chunking_strategy"), "chunking_strategy")
        record = VectorStoreRecord(id=new_id("vs"), owner=owner, created_at=now, name=name, description=description,
                                   metadata=metadata(body), last_active_at=now,
                                   expires_after_days=_expires_after(body))
        for i, fid in enumerate(file_ids):  # every file is checked before the store is made
            if not c.may_exist(fid) or await self.files.get_file(fid, owner) is None:
                raise InvalidRequest(f"File '{fid}' not found.", param=f"file_ids[{i}]", code="file_not_found")
        await self.index.create_vector_store(record)
        if file_ids:
            await self._attach(record.id, owner, file_ids, "file_ids", chunking, {})
        return await self._answer(record.id, owner)

    async def _answer(self, store_id: str, owner: str) -> Response:
        record = await self.index.get_vector_store(store_id, owner)
        if record is None:
            raise not_found("Vector store", store_id)
        return JSONResponse(record.wire(int(time.time())))

    async def retrieve(self, request: Request) -> Response:
        owner = await self.auth(request)
        return JSONResponse((await self._store(request, owner)).wire(int(time.time())))

    async def update(self, request: Request) -> Response:
        owner = await self.auth(request)
        body = await self._body(request)
        record = await self._store(request, owner)
        changes: dict[str, Any] = {}
        if body.get("name") is not None:
            changes["name"] = c.string(body, "name", "name", max_len=256, stored=True)
        if "metadata" in body:
            changes["metadata"] = metadata(body)
        if "expires_after" in body:
            changes["expires_after_days"] = _expires_after(body)
            changes["last_active_at"] = int(time.time())
        await self.index.update_vector_store(record.id, owner, changes)
        return await self._answer(record.id, owner)

    async def delete(self, request: Request) -> Response:
        owner = await self.auth(request)
        store_id = request.path_params["vector_store_id"]
        if not c.may_exist(store_id) or not await self.index.delete_vector_store(store_id, owner):
            raise not_found("Vector store", store_id)
        self.vectors.forget(store_id)
        return JSONResponse({"id": store_id, "object": "vector_store.deleted", "deleted": True})

    def _list_params(self, request: Request) -> tuple[str | None, str | None, int, str]:
        params = request.query_params
        order = params.get("order", "desc")
        if order not in ("asc", "desc"):
            raise c.bad_value("order", order, ("asc", "desc"))
        limit = query_int(request, "limit", lo=1, hi=100, default=20)
        assert limit is not None
        return params.get("after"), params.get("before"), limit, order

    async def list_stores(self, request: Request) -> Response:
        owner = await self.auth(request)
        after, before, limit, order = self._list_params(request)
        records, has_more = await self.index.list_vector_stores(owner, after=after, before=before, limit=limit,
                                                                order=order)
        now = int(time.time())
        return JSONResponse(_page([r.wire(now) for r in records], has_more))

    # ---- search ---------------------------------------------------------------------------------

    async def search(self, request: Request) -> Response:
        owner = await self.auth(request)
        body = await self._body(request)
        record = await self._store(request, owner)
        query = body.get("query")
        if query is None:
            raise c.missing("query")
        queries = [query] if isinstance(query, str) else query
        if not isinstance(queries, list) or not all(isinstance(q, str) for q in queries):
            raise c.wrong_type("query", "a string or an array of strings", query)
        c.max_items(queries, "query", 16)
        max_results = c.integer(body, "max_num_results", "max_num_results", 1, 50) or 10
        filters = check_filter(body["filters"], "filters") if body.get("filters") is not None else None
        ranking = check_ranking(body.get("ranking_options"), "ranking_options")
        c.boolean(body, "rewrite_query", "rewrite_query")  # accepted; queries are used as given
        hits = await self.vectors.searcher.search(owner, [record.id], queries, max_results=max_results, filters=filters,
                                          ranking=ranking)
        await self.index.touch_vector_stores([record.id], owner, int(time.time()))
        return JSONResponse({"object": "vector_store.search_results.page", "search_query": queries,
                             "data": [h.wire() for h in hits], "has_more": False, "next_page": None})

    # ---- files ----------------------------------------------------------------------------------

    async def add_file(self, request: Request) -> Response:
        owner = await self.auth(request)
        body = await self._body(request)
        record = await self._store(request, owner)
        fid = c.string(body, "file_id", "file_id", required=True, allow_empty=False)
        assert fid is not None
        attached = await self._attach(record.id, owner, [fid], "file_id",
                                      check_chunking(body.get("chunking_strategy"), "chunking_strategy"),
                                      check_attributes(body.get("attributes"), "attributes"))
        return JSONResponse(attached[0].wire())

    async def list_files(self, request: Request) -> Response:
        owner = await self.auth(request)
        record = await self._store(request, owner)
        batch_id = request.path_params.get("batch_id")
        if batch_id is not None and await self.index.get_file_batch(record.id, batch_id, owner) is None:
            raise not_found("File batch", batch_id)
        status = request.query_params.get("filter")
        if status is not None and status not in STATUSES:
            raise c.bad_value("filter", status, STATUSES)
        after, before, limit, order = self._list_params(request)
        records, has_more = await self.index.list_vector_files(record.id, owner, status=status, batch_id=batch_id,
                                                               after=after, before=before, limit=limit, order=order)
        return JSONResponse(_page([r.wire() for r in records], has_more))

    async def _file(self, request: Request, owner: str) -> VectorFileRecord:
        record = await self._store(request, owner)
        fid = request.path_params["file_id"]
        found = await self.index.get_vector_file(record.id, fid, owner) if c.may_exist(fid) else None
        if found is None:
            raise not_found("Vector store file", fid)
        return found

    async def get_file(self, request: Request) -> Response:
        owner = await self.auth(request)
        return JSONResponse((await self._file(request, owner)).wire())

    async def update_file(self, request: Request) -> Response:
        owner = await self.auth(request)
        body = await self._body(request)
        found = await self._file(request, owner)
        if "attributes" not in body:
            raise c.missing("attributes")
        found.attributes = check_attributes(body.get("attributes"), "attributes")
        await self.index.set_vector_file_attributes(found.vector_store_id, found.file_id, owner, found.attributes)
        return JSONResponse(found.wire())

    async def delete_file(self, request: Request) -> Response:
        owner = await self.auth(request)
        found = await self._file(request, owner)
        await self.index.delete_vector_file(found.vector_store_id, found.file_id, owner)
        return JSONResponse({"id": found.file_id, "object": "vector_store.file.deleted", "deleted": True})

    async def file_content(self, request: Request) -> Response:
        owner = await self.auth(request)
        found = await self._file(request, owner)
        texts = await self.index.vector_file_chunks(found.vector_store_id, found.file_id, owner) or []
        data = [{"type": "text", "text": t} for t in texts]
        return JSONResponse({"object": "vector_store.file_content.page", "data": data, "has_more": False,
                             "next_page": None})

    # ---- file batches -------------------------------------------------------------------------

    async def create_batch(self, request: Request) -> Response:
        owner = await self.auth(request)
        body = await self._body(request)
        record = await self._store(request, owner)
        chunking = check_chunking(body.get("chunking_strategy"), "chunking_strategy")
        attributes = check_attributes(body.get("attributes"), "attributes")
        batch = FileBatchRecord(id=new_id("vsfb"), vector_store_id=record.id, owner=owner,
                                created_at=int(time.time()))
        entries = c.array(body, "files", "files")
        file_ids = c.string_list(body, "file_ids", "file_ids")
        if (entries is None) == (file_ids is None):
            raise InvalidRequest("Give exactly one of 'file_ids' or 'files'.", param="file_ids",
                                 code="invalid_value")
        if file_ids is not None:
            if not file_ids:
                raise InvalidRequest("Invalid 'file_ids': empty array.", param="file_ids", code="empty_array")
            c.max_items(file_ids, "file_ids", MAX_FILES_PER_REQUEST)
            await self._attach(record.id, owner, file_ids, "file_ids", chunking, attributes, batch)
        else:
            assert entries is not None
            if not entries:
                raise InvalidRequest("Invalid 'files': empty array.", param="files", code="empty_array")
            c.max_items(entries, "files", MAX_FILES_PER_REQUEST)
            records = []
            for i, entry in enumerate(entries):
                if not isinstance(entry, dict):
                    raise c.wrong_type(f"files[{i}]", "an object", entry)
                fid = c.string(entry, "file_id", f"files[{i}].file_id", required=True, allow_empty=False)
                found = await self.files.get_file(fid, owner) if fid and c.may_exist(fid) else None
                if found is None or fid is None:
                    raise InvalidRequest(f"File '{fid}' not found.", param=f"files[{i}].file_id",
                                         code="file_not_found")
                records.append(VectorFileRecord(
                    vector_store_id=record.id, file_id=fid, owner=owner, created_at=batch.created_at,
                    filename=found.filename, status="in_progress",
                    attributes=check_attributes(entry.get("attributes"), f"files[{i}].attributes")
                    if "attributes" in entry else attributes,
                    chunking=check_chunking(entry.get("chunking_strategy"), f"files[{i}].chunking_strategy")
                    if "chunking_strategy" in entry else chunking, batch_id=batch.id))
            await self.index.attach_vector_files(records, batch)
            self.ingester.wake()
        return await self._batch_answer(record.id, batch.id, owner)

    async def _batch_answer(self, store_id: str, batch_id: str, owner: str) -> Response:
        batch = await self.index.get_file_batch(store_id, batch_id, owner) if c.may_exist(batch_id) else None
        if batch is None:
            raise not_found("File batch", batch_id)
        return JSONResponse(batch.wire())

    async def get_batch(self, request: Request) -> Response:
        owner = await self.auth(request)
        record = await self._store(request, owner)
        return await self._batch_answer(record.id, request.path_params["batch_id"], owner)

    async def cancel_batch(self, request: Request) -> Response:
        owner = await self.auth(request)
        record = await self._store(request, owner)
        batch_id = request.path_params["batch_id"]
        if not c.may_exist(batch_id) or not await self.index.cancel_file_batch(record.id, batch_id, owner):
            raise not_found("File batch", batch_id)
        return await self._batch_answer(record.id, batch_id, owner)
