"""Image and file input: `input_image` / `input_file` parts resolved to what an engine takes.

Stored items keep what the client sent (file ids, URLs); only the copy sent to the engine is
resolved. Uploaded files are inlined as `data:` URLs, since an engine cannot know this
server's file ids. `input_file` parts go to engines that take files as Chat Completions `file`
parts; for text-only engines the text of PDFs and text files is extracted and sent instead.
Whatever cannot be sent is a 400 naming the part, never dropped.
"""

from __future__ import annotations

import asyncio
import io
import mimetypes
import posixpath
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

from .chat import Continued
from .config import Settings
from .errors import InvalidRequest, not_found
from .fetcher import Fetcher, FetchFailed, Refused, TooLarge
from .imagebytes import data_url, data_url_parts, from_base64, image_type
from .netguard import HOW_TO_ALLOW
from .store import Store

TEXT_CACHE_CHARS = 32 * 1024 * 1024
OFFLOAD_SIZE = 1024 * 1024
T = TypeVar("T")
TOOL_OUTPUTS = ("function_call_output", "custom_tool_call_output")
# Text formats sent to text-only engines as their contents, besides PDF and any text/* type.
TEXT_MIME_TYPES = frozenset({
    "application/json", "application/x-ndjson", "application/jsonl", "application/xml", "application/yaml",
    "application/x-yaml", "application/toml", "application/javascript", "application/x-sh",
    "application/sql", "application/x-tex", "application/x-python",
})
TEXT_EXTENSIONS = frozenset({
    ".txt", ".md", ".markdown", ".rst", ".csv", ".tsv", ".json", ".jsonl", ".ndjson", ".xml", ".yaml",
    ".yml", ".toml", ".ini", ".cfg", ".conf", ".log", ".html", ".htm", ".css", ".tex", ".py", ".js",
    ".mjs", ".ts", ".tsx", ".jsx", ".java", ".kt", ".c", ".h", ".cc", ".cpp", ".hpp", ".cs", ".go", ".rs",
    ".rb", ".php", ".swift", ".scala", ".sh", ".bash", ".zsh", ".ps1", ".sql", ".r", ".lua", ".pl",
})
SUPPORTED_TEXT_FORMATS = ("PDF (with a text layer) and UTF-8 text files (text/*, JSON, XML, YAML, CSV, "
                          "source code)")


@dataclass(frozen=True)
class Blob:
    """File bytes with their MIME type and name."""

    data: bytes
    mime: str
    filename: str


def sniff(data: bytes) -> str | None:
    """The MIME type of common image formats and PDF from their first bytes."""
    return "application/pdf" if data.startswith(b"%PDF-") else image_type(data)


def guess_mime(data: bytes, declared: str | None, filename: str | None) -> str:
    """The content's MIME type: its magic bytes, else a specific declared type, else its name."""
    sniffed = sniff(data)
    if sniffed:
        return sniffed
    declared = (declared or "").split(";", 1)[0].strip().lower()
    if declared and declared != "application/octet-stream":
        return declared
    if filename:
        guessed, _ = mimetypes.guess_type(filename, strict=False)
        if guessed:
            return guessed
    return "application/octet-stream"


def decode_base64(text: str, param: str, code: str = "invalid_base64") -> bytes:
    try:
        return from_base64(text.strip())
    except ValueError:
        raise InvalidRequest(f"Invalid '{param}': the data is not valid base64.", param=param,
                             code=code) from None


def parse_data_url(url: str, param: str, code: str = "invalid_base64") -> tuple[str, bytes]:
    """(MIME type, bytes) of a `data:<mime>;base64,<data>` URL."""
    parts = data_url_parts(url)
    if parts is None or "," not in url:
        raise InvalidRequest(f"Invalid '{param}': expected a data URL of the form "
                             "'data:<mime type>;base64,<data>'.", param=param, code=code)
    mime, payload = parts
    return mime, decode_base64(payload, param, code)


def is_text(blob: Blob) -> bool:
    mime = blob.mime
    if mime.startswith("text/") or mime in TEXT_MIME_TYPES or mime.endswith(("+json", "+xml")):
        return True
    return posixpath.splitext(blob.filename.lower())[1] in TEXT_EXTENSIONS


def extract_text(blob: Blob, param: str) -> str:
    """The text of a PDF or text file, for engines that take no files (CPU-bound: run in a thread)."""
    if blob.mime == "application/pdf":
        return _pdf_text(blob, param)
    if is_text(blob):
        try:
            return blob.data.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise InvalidRequest(f"The file '{blob.filename}' is not UTF-8 text.", param=param,
                                 code="unsupported_file") from None
    raise InvalidRequest(
        f"The file '{blob.filename}' ({blob.mime}) cannot be sent to this model: it takes files as text, "
        f"which this server can extract from {SUPPORTED_TEXT_FORMATS}.", param=param, code="unsupported_file")


def _pdf_text(blob: Blob, param: str) -> str:
    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    try:
        reader = PdfReader(io.BytesIO(blob.data))
        if reader.is_encrypted and not reader.decrypt(""):
            raise InvalidRequest(f"The PDF '{blob.filename}' is encrypted.", param=param,
                                 code="unsupported_file")
        pages = [(page.extract_text() or "").strip() for page in reader.pages]
    except (PyPdfError, ValueError, KeyError, TypeError, AttributeError, IndexError) as e:
        raise InvalidRequest(f"The PDF '{blob.filename}' cannot be read: {e}", param=param,
                             code="unsupported_file") from None
    text = "\n\n".join(p for p in pages if p)
    if not text:
        raise InvalidRequest(
            f"The PDF '{blob.filename}' has no text layer (scanned pages?); this model takes files as "
            "text only.",
            param=param, code="unsupported_file")
    return text


def file_text_part(blob: Blob, text: str) -> dict:
    return {"type": "input_text", "text": f'Contents of the file "{blob.filename}":\n\n{text}'}


class Media:
    """Resolves image and file parts for one engine; fetches URLs with the guarded fetcher."""

    def __init__(self, store: Store, settings: Settings, fetcher: Fetcher) -> None:
        self.store = store
        self.max_size = settings.max_file_size
        self.fetch_image_urls = settings.fetch_image_urls
        self.fetcher = fetcher
        # Extracted text of uploaded files by id (files never change), so that a conversation
        # about a long PDF does not extract it again on every turn. Bounded by total length.
        self._texts: OrderedDict[str, str] = OrderedDict()
        self._texts_size = 0
        # (chain, backend, model) whose earlier items needed no resolution (see resolve).
        self._plain_histories: OrderedDict[Any, bool] = OrderedDict()

    async def file_text(self, blob: Blob, param: str, file_id: str | None) -> str:
        """`extract_text` in a thread; uploaded files' text is cached."""
        if file_id is not None and file_id in self._texts:
            self._texts.move_to_end(file_id)
            return self._texts[file_id]
        text = await asyncio.to_thread(extract_text, blob, param)
        if file_id is not None and len(text) <= TEXT_CACHE_CHARS // 4:
            self._texts[file_id] = text
            self._texts_size += len(text)
            while self._texts_size > TEXT_CACHE_CHARS:
                _, old = self._texts.popitem(last=False)
                self._texts_size -= len(old)
        return text

    async def resolve(self, items: Sequence[dict], owner: str, target: Any, *,
                      first_input: int = 0, history_key: Any = None) -> tuple[list[dict], bool]:
        """The items as the engine gets them, and whether the earlier ones (before
        `first_input`, from earlier responses) are sent exactly as stored. In those a file
        deleted since is replaced by a note instead of failing the chain. `history_key` names
        them (a chain never changes): once they needed no resolution for this engine and model,
        they are not looked at again; of a `Continued` history only what its base did not have."""
        backend, model = target.backend, target.model
        base = history_key if isinstance(history_key, Continued) else None
        if base is not None:
            history_key = base.key
        plain_key = (history_key, backend.name, model) if history_key is not None else None
        start = 0
        if plain_key is not None and plain_key in self._plain_histories:
            self._plain_histories.move_to_end(plain_key)
            start = first_input
        elif base is not None and (base.base, backend.name, model) in self._plain_histories:
            start = base.base_n
        run = _Resolution(self, owner, images=backend.accepts_images(model), files=backend.accepts_files(model))
        out = list(items[:start])
        changed = False
        for n in range(start, len(items)):
            item = items[n]
            if not _may_carry_media(item):
                out.append(item)  # most items: nothing to look at (a long chain is mostly text)
                continue
            where = f"input[{n - first_input}]" if n >= first_input else None
            resolved = await run.item(item, where)
            changed = changed or (resolved is not item and n < first_input)
            out.append(resolved)
        if plain_key is not None and not changed and plain_key not in self._plain_histories:
            self._plain_histories[plain_key] = True
            if len(self._plain_histories) > 4096:
                self._plain_histories.popitem(last=False)
        return out, not changed

    async def include_image_urls(self, items: Sequence[dict], owner: str) -> list[dict]:
        """`include=message.input_image.image_url`: file-based images get their `data:` URL."""
        out = []
        for item in items:
            content = item.get("content") if item.get("type") == "message" else None
            if isinstance(content, list) and any(_file_image(p) for p in content):
                parts = []
                for p in content:
                    if _file_image(p):
                        blob = await self.load(p["file_id"], owner)
                        if blob is not None:
                            p = {**p, "image_url": await _run(data_url, blob.mime, blob.data)}
                    parts.append(p)
                item = {**item, "content": parts}
            out.append(item)
        return out

    async def include_screenshot_urls(self, items: Sequence[dict], owner: str) -> list[dict]:
        """`include=computer_call_output.output.image_url`: screenshots given by `file_id` get their `data:` URL."""
        out = []
        for item in items:
            shot = item.get("output") if item.get("type") == "computer_call_output" else None
            if isinstance(shot, dict) and shot.get("file_id") and not shot.get("image_url"):
                blob = await self.load(shot["file_id"], owner)
                if blob is not None:
                    item = {**item, "output": {**shot, "image_url": await _run(data_url, blob.mime, blob.data)}}
            out.append(item)
        return out

    async def load(self, file_id: str, owner: str) -> Blob | None:
        """An uploaded file of this owner, or None if unknown, foreign, deleted or expired."""
        record = await self.store.get_file(file_id, owner)
        data = await self.store.file_content(file_id, owner) if record is not None else None
        if record is None or data is None:
            return None
        return Blob(data, record.mime_type, record.filename)

    async def fetch(self, url: str, param: str, what: str, code: str) -> Blob:
        """Download a URL (http(s), public unless allowed, at most --max-file-size)."""
        await self.fetcher.guard.check_url(url, param=param, what=what)
        try:
            download = await self.fetcher.get(url, self.max_size)
        except Refused as e:
            raise InvalidRequest(f"The {what} '{url}' {e}, which this server does not fetch from "
                                 f"({HOW_TO_ALLOW}).", param=param, code="url_not_allowed") from None
        except TooLarge:
            raise self._too_large(what, url, param) from None
        except FetchFailed as e:
            raise InvalidRequest(f"Could not download the {what} '{url}': {e}.", param=param, code=code) from None
        name = unquote(posixpath.basename(urlsplit(url).path)) or "file"
        return Blob(download.data, guess_mime(download.data, download.content_type, name), name)

    def _too_large(self, what: str, url: str, param: str) -> InvalidRequest:
        return InvalidRequest(f"The {what} '{url}' is larger than the limit of {self.max_size} bytes.",
                              param=param, code="file_too_large")


def _file_image(part: Any) -> bool:
    return isinstance(part, dict) and part.get("type") == "input_image" and bool(part.get("file_id")) \
        and not part.get("image_url")


class _Resolution:
    """One request's resolution: the owner, what the engine takes, files loaded once."""

    def __init__(self, media: Media, owner: str, *, images: bool, files: bool) -> None:
        self.media = media
        self.owner = owner
        self.images = images
        self.files = files
        self.loaded: dict[str, Blob | None] = {}

    async def item(self, item: dict, where: str | None) -> dict:
        kind = item.get("type")
        if kind == "message" and isinstance(item.get("content"), list):
            parts = await self.parts(item["content"], where and f"{where}.content")
            return item if parts is None else {**item, "content": parts}
        if kind in TOOL_OUTPUTS and isinstance(item.get("output"), list):
            parts = await self.parts(item["output"], where and f"{where}.output")
            return item if parts is None else {**item, "output": parts}
        if kind == "computer_call_output" and isinstance(item.get("output"), dict):
            # The screenshot as an input image: file ids inlined, data: URLs checked, URLs fetched.
            screenshot = item["output"]
            ref = {k: screenshot[k] for k in ("image_url", "file_id") if screenshot.get(k)}
            part = await self.image({"type": "input_image", **ref}, where and f"{where}.output")
            if part.get("type") == "input_image" and part.get("image_url") != screenshot.get("image_url"):
                rest = {k: v for k, v in screenshot.items() if k != "file_id"}
                return {**item, "output": {**rest, "image_url": part["image_url"]}}
        return item

    async def parts(self, parts: list, where: str | None) -> list[dict] | None:
        """The resolved parts, or None when nothing needed resolving."""
        if not any(isinstance(p, dict) and p.get("type") in ("input_image", "input_file") for p in parts):
            return None
        out = []
        for k, part in enumerate(parts):
            param = where and f"{where}[{k}]"
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "input_image":
                out.append(await self.image(part, param))
            elif kind == "input_file":
                out.append(await self.file(part, param))
            else:
                out.append(part)
        return out

    def check_images(self, param: str | None) -> None:
        if not self.images:
            where = "" if param else " (an image is in the conversation of previous_response_id)"
            raise InvalidRequest(f"This model does not accept image input{where}.",
                                 param=param or "previous_response_id", code="unsupported_image_input")

    async def image(self, part: dict, param: str | None) -> dict:
        self.check_images(param)
        url = part.get("image_url")
        out = {k: v for k, v in part.items() if k != "file_id"}
        if part.get("file_id") and not url:
            image = await self.file_image(part["file_id"], param and f"{param}.file_id")
            if image is None:
                return _deleted_note(part["file_id"])
            out["image_url"] = image
        elif isinstance(url, str) and url.startswith("data:"):
            if param is None:
                return out  # checked when it was first sent
            mime, _ = await _run(parse_data_url, url, _p(param, "image_url"), "invalid_base64_image")
            if not mime.startswith("image/"):
                raise InvalidRequest(f"Invalid '{_p(param, 'image_url')}': '{mime}' is not an image type.",
                                     param=_p(param, "image_url"), code="unsupported_image_media_type")
        elif isinstance(url, str) and self.media.fetch_image_urls:
            where = _p(param, "image_url")
            blob = await self.media.fetch(url, where, "image URL", "failed_to_download_image")
            out["image_url"] = await _run(data_url, self._image_mime(blob, where), blob.data)
        return out

    async def file_image(self, file_id: str, param: str | None) -> str | None:
        """A `data:` URL of an uploaded image; None for a file gone from an earlier response."""
        blob = await self.blob(file_id, param)
        if blob is None:
            return None
        return await _run(data_url, self._image_mime(blob, param or "previous_response_id"), blob.data)

    def _image_mime(self, blob: Blob, param: str) -> str:
        mime = blob.mime if blob.mime.startswith("image/") else sniff(blob.data) or blob.mime
        if not mime.startswith("image/"):
            raise InvalidRequest(f"The file '{blob.filename}' is not an image ({mime}).", param=param,
                                 code="unsupported_image_media_type")
        return mime

    async def blob(self, file_id: str, param: str | None) -> Blob | None:
        """An uploaded file; 404 naming `param` when missing (None for earlier responses' items)."""
        if file_id not in self.loaded:
            self.loaded[file_id] = await self.media.load(file_id, self.owner)
        blob = self.loaded[file_id]
        if blob is None and param is not None:
            raise not_found("File", file_id, param=param)
        return blob

    async def file(self, part: dict, param: str | None) -> dict:
        key = next((k for k in ("file_id", "file_data", "file_url") if part.get(k)), None)
        if key is None:
            raise InvalidRequest("An input_file needs 'file_id', 'file_data' or 'file_url'.",
                                 param=param or "previous_response_id", code="invalid_value")
        source = _p(param, key)
        blob: Blob | None
        if key == "file_id":
            blob = await self.blob(part["file_id"], source if param else None)
            if blob is None:
                return _deleted_note(part["file_id"])
        elif key == "file_data":
            blob = await self.inline_file(part, source)
        else:
            blob = await self.media.fetch(part["file_url"], source, "file URL", "failed_to_download_file")
        if part.get("filename"):
            blob = Blob(blob.data, blob.mime, part["filename"])
        if self.files:
            return {"type": "input_file", "filename": blob.filename,
                    "file_data": await _run(data_url, blob.mime, blob.data)}
        text = await self.media.file_text(blob, source, part["file_id"] if key == "file_id" else None)
        return file_text_part(blob, text)

    async def inline_file(self, part: dict, param: str) -> Blob:
        raw = part["file_data"]
        filename = part.get("filename") or "file"
        if raw.startswith("data:"):
            declared, data = await _run(parse_data_url, raw, param)
        else:
            declared, data = None, await _run(decode_base64, raw, param)
        return Blob(data, guess_mime(data, declared, filename), filename)


async def _run(fn: Callable[..., T], *args: Any) -> T:
    """A CPU-bound step (base64) in a thread when its input is large: the event loop serves
    other streams meanwhile."""
    size = max((len(a) for a in args if isinstance(a, bytes | str)), default=0)
    return await asyncio.to_thread(fn, *args) if size > OFFLOAD_SIZE else fn(*args)


def _p(param: str | None, key: str) -> str:
    return f"{param}.{key}" if param else "previous_response_id"


def _deleted_note(file_id: str) -> dict:
    # Only for items of earlier responses: the chain stays usable after a file is deleted.
    return {"type": "input_text", "text": f"[The file {file_id} that was here has been deleted.]"}


def _may_carry_media(item: dict) -> bool:
    """Whether an item can hold an image or a file part (checked without awaiting; a plain
    loop, as this runs for every item of a long conversation on every turn)."""
    kind = item.get("type")
    if kind == "message":
        content = item.get("content")
        if isinstance(content, list):
            for part in content:
                if isinstance(part, dict) and part.get("type") in _MEDIA_PARTS:
                    return True
        return False
    if kind in TOOL_OUTPUTS:
        return isinstance(item.get("output"), list)
    return kind == "computer_call_output"


_MEDIA_PARTS = frozenset({"input_image", "input_file"})
