"""The web console at /console: server-rendered pages over the same service calls and ownership
rules as the API (a key sees what it owns; the admin key sees every owner's responses,
conversations, files and vector stores). Vector-store pages are in vectors.py.

Pages read with JavaScript off; one small script of our own (static/console.js) makes a running
background response's page follow its events as they are stored, from whichever replica runs it.
Every page is sent with a Content-Security-Policy allowing only this server's own script and
styles, and templates escape everything they show (a model's answer holding HTML stays text).
"""

from __future__ import annotations

import dataclasses
import datetime
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from ..checks import may_exist
from ..conversations import Conversations
from ..endpoints import STATUSES, Auth, JSONResponse, listing_query, owner_for_key, query_int
from ..errors import APIError, InvalidRequest, NotFound, Unauthorized, not_found
from ..events import TERMINAL
from ..service import ResponsesService
from ..store import ResponseQuery, Store
from ..store.listing import SEARCH_WINDOW
from .render import templates
from .session import COOKIE, LIFETIME, Session, Sessions, csrf_ok

if TYPE_CHECKING:
    from ..vectors.service import VectorStores

HERE = Path(__file__).parent
SECURITY_HEADERS = {
    "content-security-policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                               "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",  # (no-referrer would make browsers send `Origin: null` on our forms)
    "cache-control": "no-store",
    "x-frame-options": "DENY",
}
INCLUDE = ("message.input_image.image_url", "computer_call_output.output.image_url")
MAX_ITEMS = 100  # input items shown per response (a link pages through the rest via the API)
MAX_CHAIN = 50  # responses shown on either side of one in a chain


@dataclass(frozen=True)
class Viewer:
    """Who is looking: the signed-in key's owner, and whether it is the admin key."""

    owner: str
    admin: bool
    session: Session


class Console:
    """The console's routes, bound to the service, the conversations and the key check of the API."""

    def __init__(self, service: ResponsesService, conversations: Conversations, auth: Auth, store: Store,
                 vectors: VectorStores) -> None:
        from .vectors import VectorStorePages

        self.service = service
        self.conversations = conversations
        self.auth = auth
        self.store = store
        self.sessions = Sessions(store)
        self.vector_pages = VectorStorePages(self, vectors)

    def routes(self) -> list[BaseRoute]:
        return [Route("/console", self.home, methods=["GET"]), Mount("/console", routes=[
            Route("/", self.home, methods=["GET"]),
            Route("/signin", self.signin_page, methods=["GET"]),
            Route("/signin", self.signin, methods=["POST"]),
            Route("/signout", self.signout, methods=["POST"]),
            Route("/responses", self.responses, methods=["GET"]),
            Route("/responses/{response_id}", self.response, methods=["GET"]),
            Route("/responses/{response_id}/chain", self.chain, methods=["GET"]),
            Route("/responses/{response_id}/events", self.events, methods=["GET"]),
            Route("/responses/{response_id}/events.json", self.events_json, methods=["GET"]),
            Route("/responses/{response_id}/cancel", self.cancel, methods=["POST"]),
            Route("/conversations", self.find_conversation, methods=["GET"]),
            Route("/conversations/{conversation_id}", self.conversation, methods=["GET"]),
            Route("/files", self.files, methods=["GET"]),
            *self.vector_pages.routes(),
            Mount("/static", app=StaticFiles(directory=HERE / "static"), name="static"),
        ])]

    # ---- rendering and sign-in ------------------------------------------------------------------

    def page(self, name: str, http_status: int = 200, **context: Any) -> Response:
        html = templates().get_template(name).render(**context)
        return HTMLResponse(html, status_code=http_status, headers=SECURITY_HEADERS)

    def error_page(self, viewer: Viewer | None, error: APIError) -> Response:
        return self.page("error.html", error.status, viewer=viewer, message=error.message, status=error.status)

    async def viewer(self, request: Request) -> Viewer | None:
        """The signed-in caller, or None (then the page sends them to sign in)."""
        session = await self.sessions.open(request.cookies.get(COOKIE))
        if session is None:
            return None
        if self.auth.is_admin(session.key):  # it owns nothing: it reads each response as its owner
            assert session.key is not None
            return Viewer(owner_for_key(session.key), True, session)
        try:
            owner = await self.auth.owner(session.key)
        except Unauthorized:  # revoked, rotated, or the server's keys changed
            return None
        return Viewer(owner, False, session)

    def to_signin(self) -> Response:
        response = RedirectResponse("/console/signin", status_code=303, headers=SECURITY_HEADERS)
        response.delete_cookie(COOKIE, path="/console")
        return response

    async def home(self, request: Request) -> Response:
        return RedirectResponse("/console/responses", status_code=303)

    async def signin_page(self, request: Request) -> Response:
        return self.page("signin.html", viewer=None, error=None)

    async def signin(self, request: Request) -> Response:
        if not same_origin(request):
            return self.page("signin.html", 403, viewer=None, error="This form must be sent from this console.")
        form = await request.form()
        key = form.get("key")
        key = key.strip() or None if isinstance(key, str) else None
        try:
            if not self.auth.is_admin(key):
                await self.auth.owner(key)
        except APIError as e:
            return self.page("signin.html", 401, viewer=None, error=e.message)
        value, _session = await self.sessions.seal(key)
        response = RedirectResponse("/console/responses", status_code=303, headers=SECURITY_HEADERS)
        response.set_cookie(COOKIE, value, max_age=LIFETIME, path="/console", httponly=True, samesite="strict",
                            secure=request.url.scheme == "https")
        return response

    async def signout(self, request: Request) -> Response:
        viewer = await self.viewer(request)
        if viewer is not None and not await self.checked(request, viewer):
            return self.error_page(viewer, InvalidRequest("The form is out of date: reload the page."))
        return self.to_signin()

    async def checked(self, request: Request, viewer: Viewer) -> bool:
        """Whether a form posting an action carries the session's CSRF token (and comes from here)."""
        form = await request.form()
        return same_origin(request) and csrf_ok(viewer.session, form.get("csrf"))

    async def owner_of(self, viewer: Viewer, rid: str) -> str:
        """Whose response to read: the viewer's, or for the admin key whoever owns it."""
        if viewer.admin:
            return await self.service.owner_of(rid) or viewer.owner
        return viewer.owner

    # ---- responses ----------------------------------------------------------------------------

    async def responses(self, request: Request) -> Response:
        viewer = await self.viewer(request)
        if viewer is None:
            return self.to_signin()
        try:
            query = console_query(request, None if viewer.admin else viewer.owner)
            page, owners = await self.service.list_with_owners(query)
        except APIError as e:
            return self.error_page(viewer, e)
        params = {k: v for k, v in request.query_params.items() if v and k not in ("after", "before")}
        backwards = query.before is not None and query.after is None
        newer = (page["has_more"] if backwards else query.after is not None) and page["first_id"]
        older = (True if backwards else page["has_more"]) and page["last_id"]
        links = {
            "newer": "?" + urlencode({**params, "before": page["first_id"]}) if newer else None,
            "older": "?" + urlencode({**params, "after": page["last_id"]}) if older else None,
        }
        window = bool(query.text) and page["has_more"] and len(page["data"]) < query.limit
        return self.page("responses.html", viewer=viewer, page=page, filters=request.query_params, links=links,
                         statuses=STATUSES, owners=owners, window=SEARCH_WINDOW if window else None)

    async def response(self, request: Request) -> Response:
        viewer = await self.viewer(request)
        if viewer is None:
            return self.to_signin()
        rid = request.path_params["response_id"]
        try:
            owner = await self.owner_of(viewer, rid)
            response = await self.service.retrieve(rid, owner)
            inputs = await self.input_items(rid, owner)
            nexts = await self.service.list_responses(ResponseQuery(owner=owner, previous_response_id=rid,
                                                                    order="asc", limit=20))
        except APIError as e:
            return self.error_page(viewer, e)
        return self.page("response.html", viewer=viewer, r=response, inputs=inputs, nexts=nexts["data"],
                         more_nexts=nexts["has_more"], running=response["status"] not in TERMINAL)

    async def input_items(self, rid: str, owner: str) -> dict:
        try:
            return await self.service.input_items(rid, owner, after=None, before=None, limit=MAX_ITEMS, order="asc",
                                                  include=INCLUDE)
        except NotFound:  # a background response made with store=false keeps no readable input
            return {"data": [], "has_more": False}

    async def chain(self, request: Request) -> Response:
        viewer = await self.viewer(request)
        if viewer is None:
            return self.to_signin()
        rid = request.path_params["response_id"]
        try:
            owner = await self.owner_of(viewer, rid)
            here = await self.service.retrieve(rid, owner)
            earlier: list[dict] = []
            cursor = here
            while cursor.get("previous_response_id") and len(earlier) < MAX_CHAIN:
                try:
                    cursor = await self.service.retrieve(cursor["previous_response_id"], owner)
                except NotFound:
                    break  # deleted or expired: the chain shows where it breaks
                earlier.append(cursor)
            later: list[dict] = []
            forks = 0
            cursor = here
            while len(later) < MAX_CHAIN:
                nexts = await self.service.list_responses(ResponseQuery(
                    owner=owner, previous_response_id=cursor["id"], order="asc", limit=2))
                if not nexts["data"]:
                    break
                forks += len(nexts["data"]) > 1
                cursor = nexts["data"][0]
                later.append(cursor)
            links = [*earlier[::-1], here, *later]
            inputs = {link["id"]: await self.input_items(link["id"], owner) for link in links}
        except APIError as e:
            return self.error_page(viewer, e)
        broken = bool(links[0].get("previous_response_id"))
        return self.page("chain.html", viewer=viewer, links=links, here=rid, inputs=inputs, forks=forks,
                         broken=broken)

    async def events(self, request: Request) -> Response:
        viewer = await self.viewer(request)
        if viewer is None:
            return self.to_signin()
        rid = request.path_params["response_id"]
        try:
            status, events = await self.service.stored_events(rid, await self.owner_of(viewer, rid))
        except APIError as e:
            return self.error_page(viewer, e)
        return self.page("events.html", viewer=viewer, rid=rid, status=status, events=events,
                         running=status not in TERMINAL)

    async def events_json(self, request: Request) -> Response:
        """The live page's poll: the status and the events stored after `after`."""
        viewer = await self.viewer(request)
        if viewer is None:
            return JSONResponse({"signed_out": True}, status_code=401, headers=SECURITY_HEADERS)
        rid = request.path_params["response_id"]
        try:
            after = query_int(request, "after", lo=-1, default=-1)
            assert after is not None
            status, events = await self.service.stored_events(rid, await self.owner_of(viewer, rid), after)
        except APIError as e:
            return JSONResponse(e.body(), status_code=e.status, headers=SECURITY_HEADERS)
        return JSONResponse({"status": status, "events": events}, headers=SECURITY_HEADERS)

    async def cancel(self, request: Request) -> Response:
        viewer = await self.viewer(request)
        if viewer is None:
            return self.to_signin()
        rid = request.path_params["response_id"]
        if not await self.checked(request, viewer):
            return self.error_page(viewer, InvalidRequest("The form is out of date: reload the page and try again."))
        try:
            await self.service.cancel(rid, await self.owner_of(viewer, rid))
        except APIError as e:
            return self.error_page(viewer, e)
        return RedirectResponse(f"/console/responses/{rid}", status_code=303, headers=SECURITY_HEADERS)

    # ---- conversations and files -------------------------------------------------------------------

    async def find_conversation(self, request: Request) -> Response:
        viewer = await self.viewer(request)
        if viewer is None:
            return self.to_signin()
        cid = (request.query_params.get("id") or "").strip()
        if cid:
            return RedirectResponse("/console/conversations/" + quote(cid, safe=""), status_code=303)
        after = request.query_params.get("after") or None
        found, more = await self.store.list_conversations(None if viewer.admin else viewer.owner, after=after,
                                                          limit=50)
        return self.page("conversations.html", viewer=viewer, conversations=found, more=more)

    async def conversation(self, request: Request) -> Response:
        viewer = await self.viewer(request)
        if viewer is None:
            return self.to_signin()
        cid = request.path_params["conversation_id"]
        # An admin key opens any owner's conversation from its list, which names the owner.
        owner = request.query_params.get("owner") or viewer.owner if viewer.admin else viewer.owner
        try:
            if not may_exist(owner):  # no row has such an owner; PostgreSQL refuses U+0000 in a query
                raise not_found("Conversation", cid)
            conversation = await self.conversations.retrieve(cid, owner)
            items = await self.conversations.list_items(cid, owner, after=request.query_params.get("after") or None,
                                                        limit=MAX_ITEMS, order="asc", include=())
        except APIError as e:
            return self.error_page(viewer, e)
        return self.page("conversation.html", viewer=viewer, c=conversation, items=items,
                         c_owner=owner if viewer.admin else None)

    async def files(self, request: Request) -> Response:
        viewer = await self.viewer(request)
        if viewer is None:
            return self.to_signin()
        after = request.query_params.get("after") or None
        files, more = await self.store.list_files(None if viewer.admin else viewer.owner, purpose=None, after=after,
                                                  limit=50, order="desc")
        return self.page("files.html", viewer=viewer, files=[f.wire() | {"owner": f.owner} for f in files], more=more)


def console_query(request: Request, owner: str | None) -> ResponseQuery:
    """The list page's filters: the API listing's parameters, plus `since` / `until` dates
    (YYYY-MM-DD, UTC, both days included) and `meta` as KEY=VALUE."""
    query = listing_query(request, owner, default_limit=25)
    params = request.query_params
    changes: dict[str, Any] = {}
    for name, field, shift in (("since", "created_after", -1), ("until", "created_before", 86400)):
        value = params.get(name)
        if value:
            try:
                day = datetime.datetime.strptime(value, "%Y-%m-%d").replace(tzinfo=datetime.UTC)
            except ValueError:
                raise InvalidRequest(f"Invalid '{name}': expected a date as YYYY-MM-DD.", param=name,
                                     code="invalid_value") from None
            changes[field] = int(day.timestamp()) + shift
    meta = params.get("meta")
    if meta:
        key, sep, value = meta.partition("=")
        if not sep or not key:
            raise InvalidRequest("Invalid 'meta': expected KEY=VALUE.", param="meta", code="invalid_value")
        changes["metadata"] = (*query.metadata, (key.strip(), value.strip()))
    return dataclasses.replace(query, **changes) if changes else query


def same_origin(request: Request) -> bool:
    """Whether a form post comes from a page of this server (browsers send Origin on posts; a missing
    one is allowed, the SameSite cookie and CSRF token still guard the actions)."""
    origin = request.headers.get("origin")
    if origin is None:
        return True
    host = request.headers.get("host", "")
    return origin in (f"http://{host}", f"https://{host}")
