"""Admin endpoints, for operators only: `--admin-key` keys; any other key (or none) is refused.

GET /v1/admin/usage?since=YYYY-MM-DD&until=YYYY-MM-DD&key=KEY&project=NAME: usage per day, key,
project and model (usage.py). This server's counts are stored first; other replicas' reach the
store within their --usage-flush-interval.
"""

from __future__ import annotations

import re

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from .endpoints import Auth, JSONResponse, request_key
from .errors import InvalidRequest, PermissionDenied, Unauthorized
from .store import Store
from .usage import UsageMeter, today

DAY = re.compile(r"\d{4}-\d{2}-\d{2}")


class AdminEndpoints:
    def __init__(self, store: Store, meter: UsageMeter, auth: Auth) -> None:
        self.store = store
        self.meter = meter
        self.auth = auth

    def routes(self) -> list[BaseRoute]:
        return [Route("/admin/usage", self.usage, methods=["GET"])]

    def check(self, request: Request) -> None:
        key = request_key(request)
        if not key:
            raise Unauthorized("The admin endpoints need an admin key: 'Authorization: Bearer ADMIN_KEY'.",
                               code="missing_api_key")
        if not self.auth.admin_keys:
            raise PermissionDenied("The admin endpoints are off: the server has no --admin-key.")
        if not self.auth.is_admin(key):
            raise PermissionDenied("This key is not an admin key (--admin-key).")

    async def usage(self, request: Request) -> Response:
        self.check(request)
        query = request.query_params
        since, until = query.get("since") or today(), query.get("until") or query.get("since") or today()
        for name, value in (("since", since), ("until", until)):
            if not DAY.fullmatch(value):
                raise InvalidRequest(f"Invalid value for '{name}': expected a day as YYYY-MM-DD.", param=name,
                                     code="invalid_value")
        await self.meter.flush()
        rows = await self.store.list_usage(since=since, until=until, key=query.get("key"),
                                           project=query.get("project"))
        return JSONResponse({"object": "list", "data": [r.wire() for r in rows]})
