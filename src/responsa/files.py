"""The Files API: upload (multipart), list, retrieve, download and delete; each key sees its own files.

Files live in the database (the Store), so every replica serves every file.
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from urllib.parse import quote

from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from . import checks as c
from .endpoints import Auth, JSONResponse, query_int
from .errors import InvalidRequest, PayloadTooLarge, RequestTimeout, not_found
from .ids import file_id
from .media import guess_mime
from .store import FileRecord, Store

PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data", "evals")
# Room for the multipart framing and the small form fields around the file itself.
FORM_OVERHEAD = 64 * 1024
MIN_EXPIRY, MAX_EXPIRY = 3600, 30 * 86400
_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
MEDIA_TYPE = re.compile(f"{_TOKEN}/{_TOKEN}")


async def _capped(stream: AsyncIterator[bytes], limit: int,
                  too_large: Callable[[], PayloadTooLarge]) -> AsyncGenerator[bytes, None]:
    size = 0
    try:
        async for chunk in stream:
            size += len(chunk)
            if size > limit:
                raise too_large()
            yield chunk
    except ClientDisconnect:  # gone, or cut off by --request-read-timeout
        raise RequestTimeout("The request body was not received in time.") from None


class FilesEndpoints:
    """`/files` routes bound to one store."""

    def __init__(self, store: Store, auth: Auth, *, max_file_size: int) -> None:
        self.store = store
        self.auth = auth
        self.max_file_size = max_file_size

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/files", self.upload, methods=["POST"]),
            Route("/files", self.list_files, methods=["GET"]),
            Route("/files/{file_id}", self.retrieve, methods=["GET"]),
            Route("/files/{file_id}", self.delete, methods=["DELETE"]),
            Route("/files/{file_id}/content", self.content, methods=["GET"]),
        ]

    def _too_large(self) -> PayloadTooLarge:
        return PayloadTooLarge(f"The file is larger than the limit of {self.max_file_size} bytes.",
                               param="file", code="file_too_large")

    async def upload(self, request: Request) -> Response:
        owner = await self.auth(request)
        content_type = request.headers.get("content-type", "")
        if not content_type.lower().startswith("multipart/form-data"):
            raise InvalidRequest("Upload a file as multipart/form-data with the fields 'purpose' and 'file'.",
                                 param="file", code="invalid_request")
        limit = self.max_file_size + FORM_OVERHEAD
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            raise self._too_large()
        parser = MultiPartParser(request.headers, _capped(request.stream(), limit, self._too_large),
                                 max_files=1, max_fields=8, max_part_size=4096)
        try:
            form = await parser.parse()
        except MultiPartException as e:
            raise InvalidRequest(f"The multipart body cannot be parsed: {e.message}", param="file",
                                 code="invalid_request") from None
        try:
            purpose = form.get("purpose")
            if purpose is None:
                raise c.missing("purpose")
            if not isinstance(purpose, str) or purpose not in PURPOSES:
                raise c.bad_value("purpose", purpose, PURPOSES)
            upload = form.get("file")
            if upload is None:
                raise c.missing("file")
            if not isinstance(upload, UploadFile):
                raise InvalidRequest("Invalid 'file': expected a file part (with a filename), got a text "
                                     "field.", param="file", code="invalid_type")
            now = int(time.time())
            expires_at = _expiry(form.get("expires_after[anchor]"), form.get("expires_after[seconds]"), now)
            data = await upload.read()
            filename = c.storable(upload.filename or "file", "file")
            declared = _declared_type(upload.content_type)
        finally:
            await form.close()
        if len(data) > self.max_file_size:
            raise self._too_large()
        if not data:
            raise InvalidRequest("The file is empty.", param="file", code="empty_file")
        record = FileRecord(id=file_id(), owner=owner, created_at=now, filename=filename, purpose=purpose,
                            bytes=len(data), mime_type=guess_mime(data, declared, filename),
                            expires_at=expires_at)
        await self.store.put_file(record, data)
        return JSONResponse(record.wire())

    async def list_files(self, request: Request) -> Response:
        owner = await self.auth(request)
        params = request.query_params
        purpose = params.get("purpose")
        if purpose is not None and purpose not in PURPOSES:
            raise c.bad_value("purpose", purpose, PURPOSES)
        order = params.get("order", "desc")
        if order not in ("asc", "desc"):
            raise c.bad_value("order", order, ("asc", "desc"))
        limit = query_int(request, "limit", lo=1, hi=10000, default=10000)
        assert limit is not None
        records, has_more = await self.store.list_files(owner, purpose=purpose, after=params.get("after"),
                                                        limit=limit, order=order)
        data = [r.wire() for r in records]
        return JSONResponse({"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
                             "last_id": data[-1]["id"] if data else None, "has_more": has_more})

    async def retrieve(self, request: Request) -> Response:
        owner = await self.auth(request)
        fid = request.path_params["file_id"]
        record = await self.store.get_file(fid, owner)
        if record is None:
            raise not_found("File", fid)
        return JSONResponse(record.wire())

    async def content(self, request: Request) -> Response:
        owner = await self.auth(request)
        fid = request.path_params["file_id"]
        record = await self.store.get_file(fid, owner)
        data = await self.store.file_content(fid, owner) if record is not None else None
        if record is None or data is None:
            raise not_found("File", fid)
        disposition = f"attachment; filename*=UTF-8''{quote(record.filename, safe='')}"
        return Response(data, media_type=record.mime_type, headers={"content-disposition": disposition})

    async def delete(self, request: Request) -> Response:
        owner = await self.auth(request)
        fid = request.path_params["file_id"]
        if not await self.store.delete_file(fid, owner):
            raise not_found("File", fid)
        return JSONResponse({"id": fid, "object": "file", "deleted": True})


def _expiry(anchor: object, seconds: object, now: int) -> int | None:
    """`expires_after[anchor]=created_at` + `expires_after[seconds]=N` (1 hour to 30 days)."""
    if anchor is None and seconds is None:
        return None
    if anchor != "created_at":
        raise c.bad_value("expires_after.anchor", anchor, ("created_at",))
    # isascii: str.isdigit() also holds for digits int() cannot read (superscripts)
    if not isinstance(seconds, str) or not (seconds.isascii() and seconds.isdigit()) \
            or not MIN_EXPIRY <= int(seconds) <= MAX_EXPIRY:
        raise InvalidRequest(f"Invalid 'expires_after.seconds': expected an integer between {MIN_EXPIRY} and "
                             f"{MAX_EXPIRY}.", param="expires_after.seconds", code="invalid_value")
    return now + int(seconds)


def _declared_type(value: str | None) -> str | None:
    """A part's Content-Type, if it names a media type: it is stored and sent back as the
    download's Content-Type, where a NUL or a line break would make the file unservable."""
    if value is None or not value.strip():
        return None
    if MEDIA_TYPE.fullmatch(value.split(";", 1)[0].strip()):
        return value
    raise InvalidRequest(f"Invalid 'file': the part's Content-Type {value!r} is not a media type (type/subtype).",
                         param="file", code="invalid_value")
