"""A file's text, cut into chunks of about N tokens that overlap, as a chunking strategy says.

Tokens are counted as the runs of word characters and the single other non-space characters
(close to a BPE tokenizer's count for English prose and code, without shipping one). Chunks
are exact slices of the text, so a citation can point into it.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser

from ..errors import InvalidRequest
from ..media import Blob, extract_text

TOKEN = re.compile(r"\w+|[^\w\s]")
AUTO = {"max_chunk_size_tokens": 800, "chunk_overlap_tokens": 400}
MAX_TEXT_CHARS = 20_000_000  # a file with more text fails (about 5M tokens, the hosted API's limit)
HTML_TYPES = ("text/html", "application/xhtml+xml")


class IngestError(Exception):
    """Why one file cannot be indexed: its `last_error`."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def last_error(self) -> dict:
        return {"code": self.code, "message": self.message}


def file_text(data: bytes, mime: str, filename: str) -> str:
    """The text of a file (CPU-bound: run it in a thread)."""
    try:
        text = extract_text(Blob(data, mime, filename), "file_id")
    except InvalidRequest as e:
        raise IngestError("unsupported_file", e.message) from None
    if mime in HTML_TYPES or filename.lower().endswith((".html", ".htm")):
        text = html_text(text)
    text = text.replace("\x00", "")
    if len(text) > MAX_TEXT_CHARS:
        raise IngestError("invalid_file", f"The file '{filename}' has {len(text)} characters of text, more than "
                                          f"the limit of {MAX_TEXT_CHARS}.")
    if not text.strip():
        raise IngestError("invalid_file", f"The file '{filename}' has no text.")
    return text


class _Text(HTMLParser):
    SKIP = frozenset({"script", "style", "noscript", "template"})
    BLOCK = frozenset({"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "pre", "section",
                       "article", "dd", "dt", "table", "blockquote"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skipping = 0

    def handle_starttag(self, tag: str, attrs: object) -> None:
        if tag in self.SKIP:
            self.skipping += 1
        elif tag in self.BLOCK:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self.SKIP and self.skipping:
            self.skipping -= 1
        elif tag in self.BLOCK:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self.skipping:
            self.parts.append(data)


def html_text(html: str) -> str:
    parser = _Text()
    parser.feed(html)
    parser.close()
    text = "".join(parser.parts)
    return re.sub(r"\n\s*\n\s*", "\n\n", re.sub(r"[ \t\r\f\v]+", " ", text)).strip()


def chunk(text: str, max_tokens: int, overlap: int) -> list[str]:
    """Slices of `text` of at most `max_tokens` tokens, each starting `max_tokens - overlap` tokens
    after the previous one."""
    spans = [m.span() for m in TOKEN.finditer(text)]
    if not spans:
        return []
    step = max(1, max_tokens - overlap)
    out = []
    for start in range(0, len(spans), step):
        end = min(start + max_tokens, len(spans))
        out.append(text[spans[start][0]:spans[end - 1][1]])
        if end == len(spans):
            break
    return out


def strategy(chunking: dict) -> tuple[int, int]:
    """(max tokens, overlap) of a stored chunking strategy."""
    static = chunking.get("static") or AUTO
    return static["max_chunk_size_tokens"], static["chunk_overlap_tokens"]
