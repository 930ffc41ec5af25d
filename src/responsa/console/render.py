"""The console's Jinja2 templates and the filters they use; every value is escaped on output."""

from __future__ import annotations

import datetime
import functools
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from jinja2 import Environment

SECRET_KEYS = frozenset({"headers", "authorization", "api_key", "server_api_key"})
PREVIEW = 160  # characters of a response's text on the list page


def when(ts: Any) -> str:
    if not isinstance(ts, int | float):
        return ""
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def scrub(value: Any) -> Any:
    """A copy without the keys that hold secrets (MCP headers and authorizations are never stored;
    this keeps it so should one ever be)."""
    if isinstance(value, dict):
        return {k: scrub(v) for k, v in value.items() if k not in SECRET_KEYS}
    if isinstance(value, list):
        return [scrub(v) for v in value]
    return value


def pretty(value: Any) -> str:
    """JSON, indented; a string that holds JSON (function arguments) is shown as the JSON it holds."""
    if isinstance(value, str):
        try:
            value = orjson.loads(value)
        except orjson.JSONDecodeError:
            return value
    return orjson.dumps(scrub(value), option=orjson.OPT_INDENT_2).decode()


def image_src(url: Any) -> str | None:
    """An image URL the page may load: inline data only (no request leaves for another host)."""
    return url if isinstance(url, str) and url.startswith("data:image/") else None


def link(url: Any) -> str | None:
    return url if isinstance(url, str) and url.startswith(("https://", "http://")) else None


def texts(items: Any) -> str:
    """The text of message items, joined."""
    out = []
    for item in items or ():
        if isinstance(item, dict) and item.get("type") == "message" and isinstance(item.get("content"), list):
            out += [p.get("text", "") for p in item["content"] if isinstance(p, dict) and "text" in p]
    return " ".join(t for t in out if isinstance(t, str))


def preview(response: dict) -> str:
    text = texts(response.get("output")) or ""
    return text if len(text) <= PREVIEW else text[:PREVIEW] + "…"


def duration(response: dict) -> str:
    start, end = response.get("created_at"), response.get("completed_at")
    if isinstance(start, int | float) and isinstance(end, int | float) and end >= start:
        return f"{end - start:.0f} s" if end - start >= 1 else "under 1 s"
    return ""


@functools.cache
def templates() -> Environment:
    """The templates, loaded by the console's first page (Jinja2 stays out of servers that show none)."""
    from jinja2 import ChainableUndefined, Environment, PackageLoader

    env = Environment(loader=PackageLoader("responsa.console", "templates"), autoescape=True,
                      undefined=ChainableUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters.update(when=when, pretty=pretty, image_src=image_src, link=link, preview=preview,
                       duration=duration, scrub=scrub)
    return env
