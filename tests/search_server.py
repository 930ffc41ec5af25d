"""Test web search providers over real HTTP: a SearXNG instance's JSON API and the Brave Search
API, answering in their real JSON shapes, plus the web pages their results link to.

Both search one corpus of `Doc`s (a result is a doc whose title or text holds every word of the
query that is not a `site:` operator), record every request (path, query parameters, headers)
and fail on demand. SearXNG answers `GET /search?format=json` (403 for another format, as an
instance that has not enabled it); Brave answers `GET /res/v1/web/search` and checks
`X-Subscription-Token`. `GET /pages/{name}` serves the corpus's HTML pages, and
`GET /redirect?to=URL` answers 302 to URL.
"""

from __future__ import annotations

import collections
import threading
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

BRAVE_TOKEN = "brave-test-token"


@dataclass
class Doc:
    url: str
    title: str
    text: str


class SearchState:
    """The corpus, the pages served, what was asked, and the failures to answer with next."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.docs: list[Doc] = []
        self.pages: dict[str, tuple[str, str]] = {}  # name -> (content type, body)
        self.requests: list[dict] = []
        self.failures: collections.deque[tuple[int, Any]] = collections.deque()

    def reset(self) -> None:
        with self.lock:
            self.docs.clear()
            self.pages.clear()
            self.requests.clear()
            self.failures.clear()

    def fail(self, status: int, body: Any) -> None:
        with self.lock:
            self.failures.append((status, body))

    def searches(self) -> list[dict]:
        return [r for r in self.requests if not r["path"].startswith("/pages/")]

    def find(self, query: str) -> list[Doc]:
        words = [w.lower() for w in query.split() if not w.startswith(("site:", "(site:")) and w not in ("OR",)]
        return [d for d in self.docs if all(w in (d.title + " " + d.text).lower() for w in words)]


def _searxng_result(doc: Doc, n: int) -> dict:
    parts = urlsplit(doc.url)
    return {"url": doc.url, "title": doc.title, "content": doc.text, "engine": "duckduckgo",
            "parsed_url": [parts.scheme, parts.netloc, parts.path, "", parts.query, parts.fragment],
            "template": "default.html", "engines": ["duckduckgo", "brave"], "positions": [n, n], "score": 2.0 / n,
            "category": "general", "publishedDate": None, "thumbnail": "", "iframe_src": "", "img_src": ""}


def _brave_result(doc: Doc) -> dict:
    parts = urlsplit(doc.url)
    words = doc.text.split()
    # Brave marks the query's words up in descriptions; the first word stands in for that here.
    description = " ".join([f"<strong>{words[0]}</strong>", *words[1:]]) if words else ""
    return {"type": "search_result", "subtype": "generic", "title": doc.title, "url": doc.url,
            "is_source_local": False, "is_source_both": False, "description": description,
            "profile": {"name": parts.hostname, "url": doc.url, "long_name": parts.hostname, "img": ""},
            "language": "en", "family_friendly": True,
            "meta_url": {"scheme": parts.scheme, "netloc": parts.netloc, "hostname": parts.hostname,
                         "favicon": "", "path": parts.path}}


def search_app(state: SearchState) -> Starlette:
    def record(request: Request) -> None:
        with state.lock:
            state.requests.append({"path": request.url.path, "params": dict(request.query_params),
                                   "headers": {k.lower(): v for k, v in request.headers.items()}})

    def failure() -> Response | None:
        with state.lock:
            if not state.failures:
                return None
            status, body = state.failures.popleft()
        if isinstance(body, str):
            return PlainTextResponse(body, status_code=status)
        return JSONResponse(body, status_code=status)

    async def searxng(request: Request) -> Response:
        record(request)
        failed = failure()
        if failed is not None:
            return failed
        if request.query_params.get("format") != "json":
            return PlainTextResponse("403 Forbidden", status_code=403)
        query = request.query_params.get("q", "")
        found = state.find(query)
        return JSONResponse({"query": query, "number_of_results": len(found),
                             "results": [_searxng_result(d, n) for n, d in enumerate(found, 1)],
                             "answers": [], "corrections": [], "infoboxes": [], "suggestions": [],
                             "unresponsive_engines": []})

    async def brave(request: Request) -> Response:
        record(request)
        failed = failure()
        if failed is not None:
            return failed
        if request.headers.get("x-subscription-token") != BRAVE_TOKEN:
            return JSONResponse({"type": "ErrorResponse", "error": {
                "id": "6b1c3b5e-0000-4000-8000-000000000000", "status": 422, "code": "SUBSCRIPTION_TOKEN_INVALID",
                "detail": "The provided subscription token is invalid.", "meta": {"component": "authentication"}},
                "time": 1764800000}, status_code=422)
        query = request.query_params.get("q", "")
        count = int(request.query_params.get("count", "20"))
        found = state.find(query)[:count]
        return JSONResponse({"type": "search",
                             "query": {"original": query, "show_strict_warning": False, "is_navigational": False,
                                       "is_news_breaking": False, "spellcheck_off": True,
                                       "country": request.query_params.get("country", "us").lower(),
                                       "bad_results": False, "should_fallback": False, "postal_code": "",
                                       "city": "", "header_country": "", "more_results_available": False,
                                       "state": ""},
                             "mixed": {"type": "mixed", "main": [{"type": "web", "index": i, "all": False}
                                                                 for i in range(len(found))], "top": [], "side": []},
                             "web": {"type": "search", "results": [_brave_result(d) for d in found],
                                     "family_friendly": True}})

    async def page(request: Request) -> Response:
        record(request)
        name = request.path_params["name"]
        with state.lock:
            found = state.pages.get(name)
        if found is None:
            return PlainTextResponse("not found", status_code=404)
        content_type, body = found
        if content_type == "text/html":
            return HTMLResponse(body)
        return Response(body, media_type=content_type)

    async def redirect(request: Request) -> Response:
        record(request)
        return Response(status_code=302, headers={"location": request.query_params["to"]})

    return Starlette(routes=[Route("/search", searxng), Route("/res/v1/web/search", brave),
                             Route("/pages/{name}", page), Route("/redirect", redirect)])
