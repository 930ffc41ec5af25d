"""An OpenAI-compatible Images API client (aiohttp): generations, multipart edits, partial-image streams.

Also where the Images API is (from the settings) and the download of input images by URL,
through the guarded fetcher.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import orjson

from .config import Settings
from .errors import InvalidRequest
from .fetcher import Fetcher, FetchFailed, Refused, TooLarge
from .netguard import HOW_TO_ALLOW

if TYPE_CHECKING:  # aiohttp is loaded by the first image request (most servers make none)
    import aiohttp

MAX_IMAGE_BYTES = 50 * 1024**2  # the hosted Images API's limit per input image
MAX_RESPONSE_BYTES = 256 * 1024**2
DOWNLOAD_TIMEOUT = 60.0


# ---- where the Images API is -----------------------------------------------------------------

@dataclass(frozen=True)
class ImagesEndpoint:
    """The Images API the tool calls, from the settings."""

    base_url: str
    api_key: str | None
    default_model: str
    timeout: int

    def headers(self) -> dict[str, str]:
        if not self.api_key:
            return {}
        host = urlsplit(self.base_url).hostname or ""
        # Azure OpenAI takes its keys in `api-key`; a bearer token there means Entra ID.
        if host.endswith(".azure.com"):
            return {"api-key": self.api_key}
        return {"Authorization": f"Bearer {self.api_key}"}


def images_endpoint(settings: Settings) -> ImagesEndpoint | None:
    """--images-base-url, else the upstream engine (with its key), else None."""
    model, timeout = settings.images_model, settings.upstream_timeout
    if settings.images_base_url:
        return ImagesEndpoint(settings.images_base_url, settings.images_api_key, model, timeout)
    if settings.upstream_base_url:
        key = settings.images_api_key or settings.upstream_api_key
        return ImagesEndpoint(settings.upstream_base_url, key, model, timeout)
    return None


# ---- images in and out ---------------------------------------------------------------------

@dataclass(frozen=True)
class ImageFile:
    """An image's bytes and MIME type, ready for a multipart upload."""

    data: bytes
    mime: str

    @property
    def filename(self) -> str:
        return "image." + self.mime.split("/")[1]


async def download_image(url: str, fetcher: Fetcher, limit: int = MAX_IMAGE_BYTES) -> bytes:
    """An input image from an http(s) URL, refused if it (or a redirect from it) leads to a private address."""
    try:
        await fetcher.guard.check_url(url, param="image_url", what="image URL")
    except InvalidRequest as e:
        raise ImageFailure(e.message, code="invalid_image_url") from e
    try:
        return (await fetcher.get(url, limit, time_limit=DOWNLOAD_TIMEOUT)).data
    except Refused as e:
        raise ImageFailure(f"The image URL '{url}' {e}, which this server does not fetch from ({HOW_TO_ALLOW}).",
                           code="invalid_image_url") from None
    except TooLarge:
        raise ImageFailure(f"The image is larger than {limit} bytes.", code="image_too_large") from None
    except FetchFailed as e:
        raise ImageFailure(f"Downloading the image at {url} failed: {e}.", code="failed_to_download_image") from None


# ---- the Images API client ---------------------------------------------------------------------

class ImageFailure(Exception):
    """The image could not be made; becomes the `image_generation_call` item's `error`."""

    def __init__(self, message: str, *, code: str | None = None, type_: str = "image_generation_error",
                 param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.type = type_
        self.param = param

    def item_error(self) -> dict:
        return {"type": self.type, "code": self.code, "message": self.message, "param": self.param}


@dataclass
class ImageResult:
    b64: str
    revised_prompt: str | None = None
    meta: dict[str, str] = field(default_factory=dict)


PartialSink = Callable[[int, str, dict], Awaitable[None]]


class ImagesClient:
    """`POST /images/generations` (JSON) and `/images/edits` (multipart), plain or streamed."""

    def __init__(self, endpoint: ImagesEndpoint) -> None:
        self.endpoint = endpoint
        self.base = endpoint.base_url.rstrip("/")

    async def generate(self, model: str, prompt: str, opts: dict, on_partial: PartialSink) -> ImageResult:
        return await self._post("/images/generations", {"json": {"model": model, "prompt": prompt, **opts}},
                                on_partial)

    async def edit(self, model: str, prompt: str, images: list[ImageFile], mask: ImageFile | None, opts: dict,
                   on_partial: PartialSink) -> ImageResult:
        import aiohttp

        form = aiohttp.FormData()
        form.add_field("model", model)
        form.add_field("prompt", prompt)
        name = "image" if len(images) == 1 else "image[]"
        for image in images:
            form.add_field(name, image.data, filename=image.filename, content_type=image.mime)
        if mask is not None:
            form.add_field("mask", mask.data, filename="mask." + mask.mime.split("/")[1],
                           content_type=mask.mime)
        for key, value in opts.items():
            form.add_field(key, "true" if value is True else str(value))
        return await self._post("/images/edits", {"data": form}, on_partial)

    async def _post(self, path: str, body: dict, on_partial: PartialSink) -> ImageResult:
        import aiohttp

        timeout = aiohttp.ClientTimeout(total=None, connect=10, sock_read=self.endpoint.timeout)
        try:
            async with aiohttp.ClientSession(timeout=timeout) as session:
                async with session.post(self.base + path, headers=self.endpoint.headers(), **body) as resp:
                    if resp.status >= 400:
                        raise _http_failure(resp.status, await _read_limited(resp, 1024**2, truncate=True))
                    if resp.content_type == "text/event-stream":
                        return await _read_stream(resp, on_partial)
                    data = orjson.loads(await _read_limited(resp, MAX_RESPONSE_BYTES))
                return await _result(data, session)
        except ImageFailure:
            raise
        except (aiohttp.ClientError, TimeoutError, OSError) as e:
            raise ImageFailure(f"The Images API could not be reached: {e or type(e).__name__}",
                               code="server_error") from e
        except (ValueError, KeyError, TypeError, IndexError, AttributeError) as e:
            raise ImageFailure(f"The Images API sent an answer this server cannot read: {e}",
                               code="server_error") from e


def _http_failure(status: int, body: bytes) -> ImageFailure:
    code: str | None = "rate_limit_exceeded" if status == 429 else None
    type_, message, param = "image_generation_error", body.decode(errors="replace").strip()[:500], None
    try:
        err = orjson.loads(body)["error"]
        message = str(err.get("message") or message)
        code = err.get("code") or code
        type_ = err.get("type") or type_
        param = err.get("param")
    except (ValueError, KeyError, TypeError, AttributeError):
        pass
    return ImageFailure(f"The Images API answered HTTP {status}: {message or 'no details'}",
                        code=str(code) if code is not None else None, type_=str(type_),
                        param=param if isinstance(param, str) else None)


def _meta(data: dict) -> dict[str, str]:
    keys = ("background", "output_format", "quality", "size")
    return {k: data[k] for k in keys if isinstance(data.get(k), str)}


async def _result(data: dict, session: aiohttp.ClientSession) -> ImageResult:
    first = (data.get("data") or [None])[0]
    if not isinstance(first, dict):
        raise ImageFailure("The Images API answered without an image.", code="server_error")
    b64 = first.get("b64_json")
    if not b64 and first.get("url"):
        # Older image models answer with a URL the Images API's own storage serves.
        async with session.get(first["url"]) as resp:
            if resp.status != 200:
                raise ImageFailure(f"Fetching the generated image failed with HTTP {resp.status}.",
                                   code="server_error")
            b64 = base64.b64encode(await _read_limited(resp, MAX_RESPONSE_BYTES)).decode()
    if not isinstance(b64, str) or not b64:
        raise ImageFailure("The Images API answered without an image.", code="server_error")
    return ImageResult(b64, first.get("revised_prompt"), _meta(data))


async def _read_stream(resp: aiohttp.ClientResponse, on_partial: PartialSink) -> ImageResult:
    final: dict | None = None
    count = 0
    async for event in _sse(resp):
        kind = str(event.get("type") or "")
        if kind == "error" or "error" in event:
            nested = event.get("error")
            err: dict = nested if isinstance(nested, dict) else event
            message = err.get("message") or "no details"
            raise ImageFailure(f"The Images API failed while generating: {message}",
                               code=err.get("code") or "server_error")
        if kind.endswith(".partial_image") and isinstance(event.get("b64_json"), str):
            index = event.get("partial_image_index")
            await on_partial(index if isinstance(index, int) else count, event["b64_json"], _meta(event))
            count += 1
        elif kind.endswith(".completed"):
            final = event
    if final is None or not isinstance(final.get("b64_json"), str):
        raise ImageFailure("The Images API stream ended without a finished image.", code="server_error")
    return ImageResult(final["b64_json"], final.get("revised_prompt"), _meta(final))


async def _sse(resp: aiohttp.ClientResponse) -> AsyncIterator[dict]:
    """The JSON `data` of each server-sent event (lines can be megabytes: base64 images)."""
    buf = bytearray()
    data: list[bytes] = []
    scan = 0
    total = 0
    async for chunk in resp.content.iter_any():
        total += len(chunk)
        if total > MAX_RESPONSE_BYTES:
            raise ImageFailure("The Images API stream is too large.", code="server_error")
        buf += chunk
        while (end := buf.find(b"\n", scan)) >= 0:
            line = bytes(buf[:end]).rstrip(b"\r")
            del buf[:end + 1]
            scan = 0
            if line:
                if line.startswith(b"data:"):
                    data.append(line[6:] if line.startswith(b"data: ") else line[5:])
                continue
            if data:
                payload, data = b"\n".join(data), []
                if payload.strip() == b"[DONE]":
                    return
                yield orjson.loads(payload)
        scan = len(buf)
    if data and b"\n".join(data).strip() != b"[DONE]":
        yield orjson.loads(b"\n".join(data))


async def _read_limited(resp: aiohttp.ClientResponse, limit: int, *, truncate: bool = False) -> bytes:
    out = bytearray()
    async for chunk in resp.content.iter_chunked(1 << 16):
        out += chunk
        if len(out) > limit:
            if truncate:
                return bytes(out[:limit])
            raise ImageFailure(f"The image is larger than {limit} bytes.", code="image_too_large")
    return bytes(out)
