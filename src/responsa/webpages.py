"""Web pages the web_search tool opens for the model: fetched through the private-network guard,
read as plain text, searched for a pattern.

A page's URL comes from the model (usually from a search result), so it is treated like any
URL from a request: the guarded fetcher refuses private, loopback and link-local addresses,
redirects included, unless the server's settings allow them. HTML is read with the standard
library's parser: the title, and the text outside scripts, styles and the like.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from html.parser import HTMLParser

from .errors import InvalidRequest
from .fetcher import Fetcher, FetchFailed, Refused, TooLarge
from .netguard import HOW_TO_ALLOW

MAX_PAGE_BYTES = 5 * 1024**2
PAGE_TIMEOUT = 20.0
TEXT_TYPES = ("text/", "application/xhtml", "application/json", "application/xml")
# Elements whose text is not the page's text.
_SKIPPED = frozenset({"script", "style", "noscript", "template", "svg", "head", "iframe", "object"})
_BLOCKS = frozenset({"p", "div", "br", "li", "ul", "ol", "tr", "table", "section", "article", "header",
                     "footer", "nav", "aside", "main", "h1", "h2", "h3", "h4", "h5", "h6", "pre",
                     "blockquote", "dd", "dt", "hr", "form", "figure", "figcaption"})
_SPACES = re.compile(r"[ \t\r\f\v]+")
_LINES = re.compile(r"\n\s*\n+")


class PageFailed(Exception):
    """The page could not be opened; `str()` is for the model."""


@dataclass(frozen=True)
class Page:
    url: str  # where it was found, after redirects
    title: str
    text: str


class _TextParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.title: list[str] = []
        self._skip = 0
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "title":
            self._in_title = True
        elif tag in _SKIPPED:
            self._skip += 1
        elif tag in _BLOCKS:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._in_title = False
        elif tag in _SKIPPED:
            self._skip = max(0, self._skip - 1)
        elif tag in _BLOCKS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title.append(data)
        elif not self._skip:
            self.parts.append(data)


def html_text(markup: str) -> tuple[str, str]:
    """The title and the readable text of an HTML document."""
    parser = _TextParser()
    parser.feed(markup)
    parser.close()
    return " ".join("".join(parser.title).split()), tidy("".join(parser.parts))


def tidy(text: str) -> str:
    """Runs of spaces made one, blank lines at most one in a row."""
    lines = (_SPACES.sub(" ", line).strip() for line in text.split("\n"))
    return _LINES.sub("\n\n", "\n".join(lines)).strip()


def _decode(data: bytes, content_type: str) -> str:
    match = re.search(r"charset=[\"']?([\w.:-]+)", content_type, re.IGNORECASE)
    try:
        return data.decode(match.group(1) if match else "utf-8", errors="replace")
    except LookupError:  # a charset Python does not know
        return data.decode("utf-8", errors="replace")


async def open_page(url: str, fetcher: Fetcher) -> Page:
    """The page at `url` as text (PageFailed if it cannot be fetched, is refused or is not text)."""
    try:
        await fetcher.guard.check_url(url, param="url", what="page URL")
    except InvalidRequest as e:
        raise PageFailed(e.message) from None
    try:
        download = await fetcher.get(url, MAX_PAGE_BYTES, time_limit=PAGE_TIMEOUT)
    except Refused as e:
        raise PageFailed(f"The page URL '{url}' {e}, which this server does not fetch from "
                         f"({HOW_TO_ALLOW}).") from None
    except TooLarge:
        raise PageFailed(f"The page at {url} is larger than {MAX_PAGE_BYTES} bytes.") from None
    except FetchFailed as e:
        raise PageFailed(f"Opening {url} failed: {e}.") from None
    content_type = (download.content_type or "text/html").lower()
    if not content_type.startswith(TEXT_TYPES):
        raise PageFailed(f"The page at {url} is not text ({content_type.split(';')[0]}).")
    text = _decode(download.data, content_type)
    if "html" in content_type or text.lstrip()[:15].lower().startswith(("<!doctype html", "<html")):
        title, body = html_text(text)
        return Page(download.url, title or download.url, body)
    return Page(download.url, download.url, tidy(text))


def find_in_text(text: str, pattern: str, *, limit: int = 10, around: int = 160) -> list[str]:
    """Excerpts of `text` around each place `pattern` occurs (ignoring case), at most `limit`."""
    if not pattern:
        return []
    found = []
    for match in re.finditer(re.escape(pattern), text, re.IGNORECASE):
        start, end = max(0, match.start() - around), min(len(text), match.end() + around)
        excerpt = " ".join(text[start:end].split())
        found.append(("..." if start else "") + excerpt + ("..." if end < len(text) else ""))
        if len(found) >= limit:
            break
    return found

