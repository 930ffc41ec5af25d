"""Web pages the web_search tool opens for the model: fetched through the private-network guard,
read as plain text, searched for a pattern.

A page's URL comes from the model (usually from a search result), so it is treated like any
URL from a request: the guarded fetcher refuses private, loopback and link-local addresses,
redirects included, unless the server's settings allow them. HTML is read with lxml: the
title, and the text outside scripts, styles and the like, one block (paragraph, list item,
heading, ...) per line.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass

from .errors import InvalidRequest
from .fetcher import Fetcher, FetchFailed, Refused, TooLarge
from .netguard import HOW_TO_ALLOW

MAX_PAGE_BYTES = 5 * 1024**2
PAGE_TIMEOUT = 20.0
THREAD_ABOVE = 256 * 1024
TEXT_TYPES = ("text/", "application/xhtml", "application/json", "application/xml")
# Elements whose text is not the page's text.
_SKIPPED = frozenset({"script", "style", "noscript", "template", "svg", "head", "iframe", "object"})
_BLOCKS = frozenset({"p", "div", "br", "li", "ul", "ol", "tr", "table", "section", "article", "header",
                     "footer", "nav", "aside", "main", "h1", "h2", "h3", "h4", "h5", "h6", "pre",
                     "blockquote", "dd", "dt", "hr", "form", "figure", "figcaption"})
_SPACES = re.compile(r"[ \t\r\f\v]+")
_LINE_END = re.compile(r" ?\n ?")
_LINES = re.compile(r"\n{3,}")
_META_CHARSET = re.compile(rb"<meta[^>]{0,200}?charset=[\"']?([\w.:-]{1,40})", re.IGNORECASE)
_XML_DECLARATION = re.compile(r"^\s*<\?xml[^>]*\?>")  # lxml refuses one in a str


class PageFailed(Exception):
    """The page could not be opened; `str()` is for the model."""


@dataclass(frozen=True)
class Page:
    url: str  # where it was found, after redirects
    title: str
    text: str


def html_text(markup: bytes, charset: str | None = None) -> tuple[str, str]:
    """The title and the readable text of an HTML document (lxml: libxml2's forgiving parser), read
    in `charset`, else the one its `<meta>` names, else UTF-8."""
    from lxml import etree  # loaded by the first page opened

    meta = _META_CHARSET.search(markup[:4096])
    text = _XML_DECLARATION.sub("", _decode(markup, charset or (meta.group(1).decode() if meta else None)))
    try:
        doc = etree.fromstring(text, etree.HTMLParser()) if text.strip() else None
    except (etree.LxmlError, ValueError):
        doc = None
    if doc is None:  # nothing to parse
        return "", ""
    title = " ".join((doc.findtext(".//title") or "").split())
    etree.strip_elements(doc, *_SKIPPED, with_tail=False)
    for element in doc.iter(*_BLOCKS):
        element.text = "\n" + (element.text or "")
        element.tail = "\n" + (element.tail or "")
    return title, tidy(doc.xpath("string()"))


def tidy(text: str) -> str:
    """Runs of spaces made one, no space at either end of a line, blank lines at most one in a row."""
    text = _LINE_END.sub("\n", _SPACES.sub(" ", text))
    return _LINES.sub("\n\n", text).strip()


def _charset(content_type: str) -> str | None:
    match = re.search(r"charset=[\"']?([\w.:-]+)", content_type, re.IGNORECASE)
    return match.group(1) if match else None


def _decode(data: bytes, charset: str | None) -> str:
    try:
        return data.decode(charset or "utf-8", errors="replace")
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
    charset = _charset(content_type)
    head = download.data[:64].lstrip().lower()
    if "html" in content_type or head.startswith((b"<!doctype html", b"<html")):
        if len(download.data) > THREAD_ABOVE:  # parsing takes ~20 ms a megabyte: off the event loop
            title, body = await asyncio.to_thread(html_text, download.data, charset)
        else:
            title, body = html_text(download.data, charset)
        return Page(download.url, title or download.url, body)
    return Page(download.url, download.url, tidy(_decode(download.data, charset)))


def find_in_text(text: str, pattern: str, *, limit: int = 10, around: int = 160) -> list[str]:
    """Excerpts of `text` around the places `pattern` occurs (ignoring case), at most `limit`; a place
    inside the previous excerpt is not shown again."""
    if not pattern:
        return []
    found: list[str] = []
    shown = 0  # where the last excerpt ends: a match inside it is already shown
    for match in re.finditer(re.escape(pattern), text, re.IGNORECASE):
        if found and match.start() < shown:
            continue
        start, end = max(0, match.start() - around), min(len(text), match.end() + around)
        shown = end
        excerpt = " ".join(text[start:end].split())
        found.append(("..." if start else "") + excerpt + ("..." if end < len(text) else ""))
        if len(found) >= limit:
            break
    return found

