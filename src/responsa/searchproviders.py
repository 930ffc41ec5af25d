"""Where the web_search tool's searches run: a SearXNG instance's JSON API, or the Brave Search API.

The provider, its address and its key are server settings (`--web-search-provider`,
`--web-search-url`, `--web-search-api-key`), never a request's. Its endpoint is the operator's
own configuration and trusted: it is reached directly, like the upstream engine, because a
SearXNG instance usually runs on the operator's private network. The pages its results link to
are not: the model opens those through the private-network guard (webpages.py).

A failure of the provider (unreachable, an HTTP error, an answer that is not its JSON) raises
`SearchFailed`, whose message is safe to show the model: the provider's address and key stay
in the server's log.
"""

from __future__ import annotations

import html
import logging
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import orjson

if TYPE_CHECKING:  # aiohttp is loaded by the first search
    import aiohttp

    from .config import Settings

log = logging.getLogger("responsa.websearch")

PROVIDERS = ("searxng", "brave")
BRAVE_URL = "https://api.search.brave.com"
SEARCH_TIMEOUT = 30.0
MAX_ANSWER_BYTES = 8 * 1024**2
BRAVE_MAX_COUNT = 20  # the most results the Brave API gives for one request
# Brave takes a state or region as a code of at most 3 characters (X-Loc-State).
_STATE_CODE = re.compile(r"^[A-Za-z0-9]{1,3}$")
_TAG = re.compile(r"<[^>]{0,200}>")


class SearchFailed(Exception):
    """The provider could not search; `str()` is for the model (no address, no key)."""


@dataclass(frozen=True)
class Location:
    """`user_location`'s fields, as given."""

    city: str | None = None
    region: str | None = None
    country: str | None = None  # ISO 3166-1 alpha-2
    timezone: str | None = None  # IANA


@dataclass(frozen=True)
class SearchQuery:
    query: str
    count: int
    allowed_domains: tuple[str, ...] = ()
    location: Location | None = None


@dataclass(frozen=True)
class SearchResult:
    title: str
    url: str
    snippet: str


class SearchProvider(Protocol):
    """A search engine the server queries."""

    name: str
    # Which of `user_location`'s fields reach it (documented per provider).
    takes_location: bool

    async def search(self, query: SearchQuery) -> list[SearchResult]:
        """The results for a query, best first (SearchFailed if the provider fails)."""
        ...

    async def aclose(self) -> None: ...


def plain(text: Any) -> str:
    """A snippet or title as plain text: providers may mark matches up (`<strong>`) or escape entities."""
    return html.unescape(_TAG.sub("", text)).strip() if isinstance(text, str) else ""


def with_sites(query: str, domains: tuple[str, ...]) -> str:
    """The query limited to `domains` with `site:` operators (both providers pass them to their
    engines; the tool also drops results outside the domains, for engines that ignore them)."""
    if not domains:
        return query
    sites = " OR ".join(f"site:{d}" for d in domains)
    return f"{query} ({sites})" if len(domains) > 1 else f"{query} {sites}"


@dataclass
class _HTTPProvider:
    base_url: str
    api_key: str | None = None
    timeout: float = SEARCH_TIMEOUT
    _session: aiohttp.ClientSession | None = field(default=None, repr=False)

    def _client(self) -> aiohttp.ClientSession:
        import aiohttp

        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        return self._session

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def _get_json(self, name: str, url: str, params: dict[str, str], headers: dict[str, str],
                        hints: dict[int, str] | None = None) -> Any:
        """The provider's JSON answer; `hints` adds, by HTTP status, what the operator may do about one."""
        import aiohttp

        try:
            async with self._client().get(url, params=params, headers=headers) as resp:
                body = await resp.content.read(MAX_ANSWER_BYTES + 1)
                status = resp.status
        except (aiohttp.ClientError, TimeoutError, OSError) as e:
            log.warning("web search: %s at %s failed: %s", name, url, e or type(e).__name__)
            raise SearchFailed(f"the search provider ({name}) could not be reached") from None
        try:
            data = orjson.loads(body) if len(body) <= MAX_ANSWER_BYTES else None
        except orjson.JSONDecodeError:
            data = None
        if status != 200:
            log.warning("web search: %s at %s answered HTTP %d%s: %s", name, url, status,
                        f" ({hints[status]})" if hints and status in hints else "", body[:500])
            detail = _error_detail(data)
            raise SearchFailed(f"the search provider ({name}) answered HTTP {status}" +
                               (f": {detail}" if detail else ""))
        if not isinstance(data, dict):
            log.warning("web search: %s at %s answered something that is not its JSON: %s", name, url, body[:500])
            raise SearchFailed(f"the search provider ({name}) gave an answer that is not JSON search results")
        return data


def _error_detail(data: Any) -> str | None:
    """The provider's own words for an error, where its JSON has them (Brave: `error.detail`)."""
    if not isinstance(data, dict):
        return None
    error = data.get("error")
    if isinstance(error, dict) and isinstance(error.get("detail"), str):
        return error["detail"][:300]
    if isinstance(error, str):
        return error[:300]
    return None


def _results(items: Any, snippet_key: str) -> list[SearchResult]:
    out = []
    for item in items if isinstance(items, list) else ():
        if not isinstance(item, dict) or not isinstance(item.get("url"), str):
            continue
        if not item["url"].startswith(("http://", "https://")):
            continue
        out.append(SearchResult(plain(item.get("title")) or item["url"], item["url"], plain(item.get(snippet_key))))
    return out


class SearXNG(_HTTPProvider):
    """A SearXNG instance: `GET {url}/search?q=...&format=json` (the instance must allow the json
    format: `search.formats` in its settings.yml). It has no notion of the user's location."""

    name = "searxng"
    takes_location = False

    async def search(self, query: SearchQuery) -> list[SearchResult]:
        headers = {"Accept": "application/json"}
        if self.api_key:  # an instance behind a proxy that wants a token
            headers["Authorization"] = f"Bearer {self.api_key}"
        params = {"q": with_sites(query.query, query.allowed_domains), "format": "json"}
        data = await self._get_json(self.name, self.base_url.rstrip("/") + "/search", params, headers, hints={
            403: "does the instance allow the json format? `search: formats: [html, json]` in its settings.yml"})
        return _results(data.get("results"), "content")


class Brave(_HTTPProvider):
    """The Brave Search API: `GET {url}/res/v1/web/search` with `X-Subscription-Token`. The user's
    country goes as `country`, the rest as its `X-Loc-*` headers."""

    name = "brave"
    takes_location = True

    async def search(self, query: SearchQuery) -> list[SearchResult]:
        headers = {"Accept": "application/json", "X-Subscription-Token": self.api_key or ""}
        count = BRAVE_MAX_COUNT if query.allowed_domains else min(query.count, BRAVE_MAX_COUNT)
        params = {"q": with_sites(query.query, query.allowed_domains), "count": str(count)}
        loc = query.location
        if loc is not None:
            if loc.country:
                params["country"] = loc.country.upper()
            headers.update(_location_headers(loc))
        data = await self._get_json(self.name, self.base_url.rstrip("/") + "/res/v1/web/search", params, headers)
        web = data.get("web")
        return _results(web.get("results") if isinstance(web, dict) else None, "description")


def _location_headers(loc: Location) -> dict[str, str]:
    """Brave's location headers. It takes the region only as a code (`CA`), and no header carries
    a value that is not ASCII: such values are left out."""
    values = {"X-Loc-City": loc.city, "X-Loc-Country": loc.country.upper() if loc.country else None,
              "X-Loc-Timezone": loc.timezone,
              "X-Loc-State": loc.region if loc.region and _STATE_CODE.match(loc.region) else None}
    return {k: v for k, v in values.items() if v and v.isascii() and v.isprintable()}


def search_provider(settings: Settings) -> SearchProvider | None:
    """The provider the settings name, or None (the web_search tool then stays ignored)."""
    kind = settings.web_search_provider
    if kind == "searxng":
        assert settings.web_search_url is not None  # config.check requires it
        return SearXNG(settings.web_search_url, settings.web_search_api_key)
    if kind == "brave":
        return Brave(settings.web_search_url or BRAVE_URL, settings.web_search_api_key)
    return None
