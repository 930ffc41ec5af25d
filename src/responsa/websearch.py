"""The web_search tool (and `web_search_preview`, and their dated names): searches run by the
configured provider, pages opened through the private-network guard, sources cited.

The model sees up to three functions: `web_search(query)`, `open_page(url)` and
`find_in_page(url, pattern)` (the last two not with `external_web_access: false`, which keeps
to the provider's index). Each call becomes a `web_search_call` item whose `action` is the
hosted one (`search` with `query`/`queries` and, with `include:
["web_search_call.action.sources"]`, `sources`; `open_page`; `find_in_page`), streamed as
`in_progress` -> `searching` -> `completed` (hosted_calls.py). What was found goes to the model
only; where its answer links a source it was shown, the link gets a `url_citation` annotation.

The provider is the server's (searchproviders.py). Without one this kind is not registered and
the tool types stay accepted, echoed and ignored (tools.IGNORED_TYPES).
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any
from urllib.parse import urlsplit

from . import checks as c
from .chat import WEB_SEARCH_FUNCTIONS
from .errors import InvalidRequest
from .hosted_calls import HostedCall
from .ids import new_id
from .searchproviders import Location, SearchFailed, SearchProvider, SearchQuery, SearchResult
from .tools import WEB_SEARCH_TYPES, Outcome, Tool, ToolCall, ToolContext, ToolKind
from .webpages import Page, PageFailed, find_in_text, open_page

log = logging.getLogger("responsa.websearch")

TYPES = WEB_SEARCH_TYPES
PREVIEW_TYPES = frozenset(TYPES[2:])
CONTEXT_SIZES = ("low", "medium", "high")
CONTENT_TYPES = ("text", "image")
SOURCES = "web_search_call.action.sources"
MAX_ALLOWED_DOMAINS = 100
MAX_QUERY = 1000
# How much of the web one call shows the model, by `search_context_size`.
RESULTS = {"low": 3, "medium": 5, "high": 10}
PAGE_CHARS = {"low": 4000, "medium": 10000, "high": 24000}
MAX_FINDS = 10
_LABEL = r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9])?"
_DOMAIN = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(?:\.{_LABEL})*$")
_COUNTRY = re.compile(r"^[A-Za-z]{2}$")
# A markdown link to an http(s) URL, or a bare one (its trailing punctuation is the sentence's).
_LINK = re.compile(r"\[([^\]\n]{0,500})\]\((https?://[^\s()]+)\)|(https?://[^\s<>()\[\]\"'`]+)")

SEARCH, OPEN, FIND = WEB_SEARCH_FUNCTIONS["search"], WEB_SEARCH_FUNCTIONS["open_page"], \
    WEB_SEARCH_FUNCTIONS["find_in_page"]


# ---- the tool entry ------------------------------------------------------------------------

class WebSearchKind(ToolKind):
    """`{"type": "web_search" | "web_search_preview" | ..., ...}`, run by the server's provider."""

    types = TYPES

    def __init__(self, provider: SearchProvider) -> None:
        self.provider = provider

    def check(self, entry: dict, param: str) -> dict:
        kind = entry["type"]
        preview = kind in PREVIEW_TYPES
        # `search_content_types` and `image_settings` on web_search are newer than the SDKs' types;
        # the Agents SDK sends them.
        known = {"type", "search_context_size", "user_location", "search_content_types",
                 *(() if preview else ("filters", "external_web_access", "image_settings"))}
        _no_unknown(entry, known, param)
        out: dict[str, Any] = {"type": kind}
        size = c.choice(entry, "search_context_size", f"{param}.search_context_size", CONTEXT_SIZES)
        if size is not None:
            out["search_context_size"] = size
        location = _check_location(entry, f"{param}.user_location", type_required=preview)
        if location is not None:
            out["user_location"] = location
        types = c.string_list(entry, "search_content_types", f"{param}.search_content_types")
        for i, value in enumerate(types or ()):
            if value not in CONTENT_TYPES:
                raise c.bad_value(f"{param}.search_content_types[{i}]", value, CONTENT_TYPES)
        if types is not None:
            out["search_content_types"] = types
        if preview:
            return out
        filters = c.mapping(entry, "filters", f"{param}.filters")
        if filters is not None:
            _no_unknown(filters, {"allowed_domains"}, f"{param}.filters")
            out["filters"] = {"allowed_domains": _check_domains(filters, f"{param}.filters.allowed_domains")}
        external = c.boolean(entry, "external_web_access", f"{param}.external_web_access")
        if external is not None:
            out["external_web_access"] = external
        images = c.mapping(entry, "image_settings", f"{param}.image_settings")
        if images is not None:
            _no_unknown(images, {"max_results", "caption"}, f"{param}.image_settings")
            c.integer(images, "max_results", f"{param}.image_settings.max_results", 1, 100)
            c.boolean(images, "caption", f"{param}.image_settings.caption")
            out["image_settings"] = images
        return out

    def build(self, entry: dict, ctx: ToolContext) -> WebSearchTool:
        return WebSearchTool(entry, self.provider)


def _no_unknown(obj: dict, known: set[str], param: str) -> None:
    unknown = sorted(k for k in obj if k not in known)
    if unknown:
        raise InvalidRequest(f"Unknown parameter: '{param}.{unknown[0]}'.", param=f"{param}.{unknown[0]}",
                             code="unknown_parameter")


def _check_location(entry: dict, param: str, *, type_required: bool) -> dict | None:
    location = c.mapping(entry, "user_location", param)
    if location is None:
        return None
    _no_unknown(location, {"type", "city", "country", "region", "timezone"}, param)
    out: dict[str, Any] = {}
    kind = c.choice(location, "type", f"{param}.type", ("approximate",), required=type_required)
    if kind is not None:
        out["type"] = kind
    for key in ("city", "region", "timezone", "country"):
        value = c.string(location, key, f"{param}.{key}", max_len=200)
        if value is not None:
            out[key] = value
    country = out.get("country")
    if country is not None and not _COUNTRY.match(country):
        raise InvalidRequest(f"Invalid '{param}.country': expected a two-letter ISO country code such as 'US', "
                             f"got '{country}'.", param=f"{param}.country", code="invalid_value")
    return out


def _check_domains(filters: dict, param: str) -> list[str] | None:
    domains = c.string_list(filters, "allowed_domains", param)
    if domains is None:
        return None
    c.max_items(domains, param, MAX_ALLOWED_DOMAINS)
    out = []
    for i, value in enumerate(domains):
        domain = _domain(value)
        if domain is None:
            raise InvalidRequest(f"Invalid '{param}[{i}]': expected a domain name such as 'example.com', got "
                                 f"'{value[:100]}'.", param=f"{param}[{i}]", code="invalid_value")
        out.append(domain)
    return out


def _domain(value: str) -> str | None:
    """A domain as given (`example.com`, also `https://example.com/`), lower case; None if it is none."""
    text = value.strip().lower()
    if "://" in text:
        try:
            text = urlsplit(text).hostname or ""
        except ValueError:
            return None
    text = text.rstrip("/").rstrip(".")
    return text if _DOMAIN.match(text) else None


def in_domains(url: str, domains: tuple[str, ...]) -> bool:
    """Whether `url`'s host is one of `domains` or under one (no domains: any host)."""
    if not domains:
        return True
    try:
        host = (urlsplit(url).hostname or "").lower().rstrip(".")
    except ValueError:
        return False
    return any(host == d or host.endswith("." + d) for d in domains)


# ---- the tool --------------------------------------------------------------------------------

class WebSearchTool(Tool):
    """One web search entry for a run: its functions, the pages opened and the sources shown."""

    def __init__(self, entry: dict, provider: SearchProvider) -> None:
        self.entry = entry
        self.provider = provider
        size = entry.get("search_context_size") or "medium"
        self.count, self.page_chars = RESULTS[size], PAGE_CHARS[size]
        self.domains: tuple[str, ...] = tuple((entry.get("filters") or {}).get("allowed_domains") or ())
        self.browse = entry.get("external_web_access") is not False
        location = entry.get("user_location") or {}
        self.location = Location(location.get("city"), location.get("region"), location.get("country"),
                                 location.get("timezone")) if location else None
        self.pages: dict[str, Page] = {}
        self.sources: dict[str, str] = {}  # every URL shown to the model in this run -> its title
        self.citing = False

    def functions(self) -> list[dict]:
        where = f" Results come only from {', '.join(self.domains)}." if self.domains else ""
        out = [_function(SEARCH, "Search the web. Returns the top results, each with its title, URL and a snippet. "
                         "Use it for anything recent or that you are not sure of. Cite the sources you use in "
                         f"your answer as markdown links: [title](url).{where}",
                         {"query": {"type": "string", "description": "What to search for."}})]
        if self.browse:
            out.append(_function(OPEN, "Open a web page (for example a search result) and read its text.",
                                 {"url": {"type": "string", "description": "The page's http(s) URL."}}))
            out.append(_function(FIND, "Find a word or phrase in a web page: each place it occurs, with the text "
                                 "around it.",
                                 {"url": {"type": "string", "description": "The page's http(s) URL."},
                                  "pattern": {"type": "string", "description": "The text to look for."}}))
        return out

    async def invoke(self, call: ToolCall, ctx: ToolContext) -> Outcome:
        args = _arguments(call.arguments)
        if not self.citing:
            ctx.events.annotators.append(self.citations)
            self.citing = True
        if call.name == SEARCH:
            query = args.get("query")
            if not isinstance(query, str) or not query.strip():
                return _reject(call, "give a non-empty `query`.", ctx)
            await self._search(query.strip()[:MAX_QUERY], ctx)
            return Outcome.CONTINUE
        url = args.get("url")
        if not isinstance(url, str) or not url.strip():
            return _reject(call, "give the page's `url`.", ctx)
        url = url.strip()
        if call.name == FIND:
            pattern = args.get("pattern")
            if not isinstance(pattern, str) or not pattern.strip():
                return _reject(call, "give the `pattern` to look for.", ctx)
            action = {"type": "find_in_page", "url": url, "pattern": pattern}
        else:
            action = {"type": "open_page", "url": url}
        await self._browse(action, ctx)
        return Outcome.CONTINUE

    async def _search(self, query: str, ctx: ToolContext) -> None:
        action: dict[str, Any] = {"type": "search", "query": query, "queries": [query]}
        hosted = await HostedCall.start(ctx.events, _item(action))
        try:
            found = await self.provider.search(SearchQuery(
                query, self.count, self.domains, self.location if self.provider.takes_location else None))
        except SearchFailed as e:
            hosted.failed()
            hosted.tell_model(ctx, f"Error: the web search failed: {str(e).rstrip('.')}.")
            return
        results = [r for r in found if in_domains(r.url, self.domains)][:self.count]
        for r in results:
            self.sources.setdefault(r.url, r.title)
        if SOURCES in ctx.include:  # a new action: events already queued hold the old one
            action = {**action, "sources": [{"type": "url", "url": r.url} for r in results]}
        hosted.completed(action=action)
        hosted.tell_model(ctx, _results_text(query, results))

    async def _browse(self, action: dict, ctx: ToolContext) -> None:
        url = action["url"]
        hosted = await HostedCall.start(ctx.events, _item(dict(action)))
        try:
            if not in_domains(url, self.domains):
                raise PageFailed(f"{url} is not in the allowed domains ({', '.join(self.domains)}).")
            page = await self._page(url, ctx)
        except PageFailed as e:
            log.info("web search: could not open a page: %s", e)
            hosted.failed()
            hosted.tell_model(ctx, f"Error: {e}")
            return
        hosted.completed()
        if action["type"] == "open_page":
            text = page.text
            if len(text) > self.page_chars:
                text = (text[:self.page_chars] + f"\n[... {len(page.text) - self.page_chars} more characters; "
                        f"use {FIND} to look for something specific]")
            hosted.tell_model(ctx, f"Title: {page.title}\nURL: {page.url}\n\n{text or '(no text)'}")
            return
        found = find_in_text(page.text, action["pattern"], limit=MAX_FINDS)
        if not found:
            hosted.tell_model(ctx, f"{json.dumps(action['pattern'])} does not occur in {page.url}.")
            return
        listed = "\n".join(f"[{n}] {excerpt}" for n, excerpt in enumerate(found, 1))
        hosted.tell_model(ctx, f"{json.dumps(action['pattern'])} in {page.title} ({page.url}):\n{listed}")

    async def _page(self, url: str, ctx: ToolContext) -> Page:
        page = self.pages.get(url)
        if page is None:
            if ctx.fetcher is None:
                raise PageFailed("This server cannot open pages here.")
            page = await open_page(url, ctx.fetcher)
            if not in_domains(page.url, self.domains):
                raise PageFailed(f"{url} redirects to {page.url}, which is not in the allowed domains "
                                 f"({', '.join(self.domains)}).")
            self.pages[url] = self.pages[page.url] = page
            title = self.sources.get(url) or page.title
            self.sources.setdefault(url, title)
            self.sources.setdefault(page.url, title)
        return page

    def citations(self, text: str) -> list[dict]:
        """`url_citation`s for the links in an answer to sources this run showed the model."""
        if not self.sources:
            return []
        known = {_key(u): t for u, t in self.sources.items()}
        out = []
        for match in _LINK.finditer(text):
            url = match.group(2) or match.group(3).rstrip(".,;:!?")
            title = known.get(_key(url))
            if title is None:
                continue
            end = match.end() if match.group(2) else match.start() + len(url)
            out.append({"type": "url_citation", "start_index": match.start(), "end_index": end, "title": title,
                        "url": url})
        return out


def _key(url: str) -> str:
    return url.rstrip("/")


def _item(action: dict) -> dict:
    return {"id": new_id("ws"), "type": "web_search_call", "status": "in_progress", "action": action}


def _function(name: str, description: str, properties: dict) -> dict:
    return {"type": "function", "function": {
        "name": name, "description": description,
        "parameters": {"type": "object", "properties": properties, "required": list(properties),
                       "additionalProperties": False}}}


def _arguments(arguments: str) -> dict:
    try:
        parsed = json.loads(arguments or "{}")
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _results_text(query: str, results: list[SearchResult]) -> str:
    if not results:
        return f"No results for {json.dumps(query)}."
    lines = [f"Results for {json.dumps(query)}:"]
    for n, r in enumerate(results, 1):
        lines.append(f"\n[{n}] {r.title}\nURL: {r.url}" + (f"\n{r.snippet}" if r.snippet else ""))
    lines.append("\nCite the sources you use as markdown links: [title](url).")
    return "\n".join(lines)


def _reject(call: ToolCall, problem: str, ctx: ToolContext) -> Outcome:
    """Tell the model (only the model) what was wrong with a call, so that it tries again."""
    at = len(ctx.events.output)
    ctx.model_notes.append((at, {"id": new_id("fc"), "type": "function_call", "call_id": call.call_id,
                                 "name": call.name, "arguments": call.arguments or "{}", "status": "completed"}))
    ctx.model_notes.append((at, {"id": new_id("fco"), "type": "function_call_output", "call_id": call.call_id,
                                 "output": f"Error: {problem} Nothing was done.", "status": "completed"}))
    return Outcome.CONTINUE
