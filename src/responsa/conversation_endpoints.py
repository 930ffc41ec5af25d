"""HTTP glue of the Conversations API (`/conversations`): authenticate, parse, call, answer JSON."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from . import checks as c
from .conversations import Conversations, parse_metadata
from .endpoints import Auth, JSONResponse, query_include, query_int, read_json
from .errors import InvalidRequest


class ConversationEndpoints:
    """`/conversations` routes bound to one `Conversations`."""

    def __init__(self, conversations: Conversations, auth: Auth, *, max_body_size: int) -> None:
        self.conversations = conversations
        self.auth = auth
        self.max_body_size = max_body_size

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/conversations", self.create, methods=["POST"]),
            Route("/conversations/{conversation_id}", self.retrieve, methods=["GET"]),
            Route("/conversations/{conversation_id}", self.update, methods=["POST"]),
            Route("/conversations/{conversation_id}", self.delete, methods=["DELETE"]),
            Route("/conversations/{conversation_id}/items", self.add_items, methods=["POST"]),
            Route("/conversations/{conversation_id}/items", self.list_items, methods=["GET"]),
            Route("/conversations/{conversation_id}/items/{item_id}", self.item, methods=["GET"]),
            Route("/conversations/{conversation_id}/items/{item_id}", self.delete_item, methods=["DELETE"]),
        ]

    async def _body(self, request: Request) -> dict:
        body = await read_json(request, self.max_body_size, empty={})
        if not isinstance(body, dict):
            raise InvalidRequest("The request body must be a JSON object.", code="invalid_type")
        return body

    async def create(self, request: Request) -> Response:
        owner = await self.auth(request)
        body = await self._body(request)
        return JSONResponse(await self.conversations.create(owner, body.get("items"), parse_metadata(body)))

    async def retrieve(self, request: Request) -> Response:
        owner = await self.auth(request)
        return JSONResponse(await self.conversations.retrieve(request.path_params["conversation_id"], owner))

    async def update(self, request: Request) -> Response:
        owner = await self.auth(request)
        body = await self._body(request)
        meta = parse_metadata(body, required=True)
        return JSONResponse(await self.conversations.update(request.path_params["conversation_id"], owner, meta))

    async def delete(self, request: Request) -> Response:
        owner = await self.auth(request)
        return JSONResponse(await self.conversations.delete(request.path_params["conversation_id"], owner))

    async def add_items(self, request: Request) -> Response:
        owner = await self.auth(request)
        include = query_include(request)
        body = await self._body(request)
        if body.get("items") is None:
            raise c.missing("items")
        return JSONResponse(await self.conversations.add_items(request.path_params["conversation_id"], owner,
                                                               body["items"], include))

    async def list_items(self, request: Request) -> Response:
        owner = await self.auth(request)
        include = query_include(request)
        order = request.query_params.get("order", "desc")
        if order not in ("asc", "desc"):
            raise c.bad_value("order", order, ("asc", "desc"))
        limit = query_int(request, "limit", lo=1, hi=100, default=20)
        assert limit is not None
        return JSONResponse(await self.conversations.list_items(
            request.path_params["conversation_id"], owner, after=request.query_params.get("after"), limit=limit,
            order=order, include=include))

    async def item(self, request: Request) -> Response:
        owner = await self.auth(request)
        include = query_include(request)
        params = request.path_params
        return JSONResponse(await self.conversations.item(params["conversation_id"], owner, params["item_id"],
                                                          include))

    async def delete_item(self, request: Request) -> Response:
        owner = await self.auth(request)
        params = request.path_params
        return JSONResponse(await self.conversations.delete_item(params["conversation_id"], owner,
                                                                 params["item_id"]))
