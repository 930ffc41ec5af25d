"""A test Images API: real PNG (or JPEG / WebP) images from Pillow, partial-image streams,
multipart edits, a record of every request, and failures on demand.

Generations paint a background whose colour comes from the prompt, with a square of the
opposite colour in the middle. Edits invert the first input image, only where the mask is
transparent when a mask is sent, so a test can tell from the pixels which image was edited.
Streams follow the Images API: `image_generation.partial_image` (or `image_edit.*`) events,
then `.completed`.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import hashlib
import io
import json
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

from PIL import Image, ImageOps
from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route


class ImagesState:
    """What the test Images API was sent, and what it should do next."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests: list[dict] = []
        self.failures: collections.deque[dict] = collections.deque()
        self.files: dict[str, bytes] = {}
        self.gate: threading.Event | None = None
        self.gate_timed_out = False

    def reset(self) -> None:
        with self.lock:
            self.requests.clear()
            self.failures.clear()
            self.files.clear()
            self.gate = None
            self.gate_timed_out = False

    def fail(self, status: int = 500, message: str = "The image engine failed.", code: str | None = None,
             *, mid_stream: bool = False) -> None:
        """Make the next request fail: with an HTTP error, or (streamed) after the first partial image."""
        with self.lock:
            self.failures.append({"status": status, "message": message, "code": code,
                                  "mid_stream": mid_stream})

    def hold(self) -> threading.Event:
        """Streams wait after their partial images until the returned event is set (at most 10 s)."""
        self.gate = threading.Event()
        self.gate_timed_out = False
        return self.gate

    def serve(self, name: str, data: bytes) -> str:
        """Serve `data` at GET /files/{name}; returns the path."""
        self.files[name] = data
        return f"/files/{name}"


def png(size: tuple[int, int], color: tuple[int, int, int], mode: str = "RGB") -> bytes:
    """A PNG of one colour (a helper for tests that need an input image)."""
    out = io.BytesIO()
    Image.new(mode, size, color if mode == "RGB" else (*color, 255)).save(out, "PNG")
    return out.getvalue()


def _prompt_color(prompt: str) -> tuple[int, int, int]:
    digest = hashlib.sha256(prompt.encode()).digest()
    return digest[0], digest[1], digest[2]


def _size(value: Any) -> tuple[int, int]:
    if isinstance(value, str) and "x" in value:
        w, h = value.split("x", 1)
        return int(w), int(h)
    return 96, 96


def _painted(prompt: str, size: tuple[int, int], progress: float = 1.0) -> Image.Image:
    color = _prompt_color(prompt)
    background = tuple(int(c * progress) for c in color)
    image = Image.new("RGB", size, background)
    w, h = size
    square = Image.new("RGB", (max(1, w // 2), max(1, h // 2)), tuple(255 - c for c in color))
    if progress >= 1.0:
        image.paste(square, (w // 4, h // 4))
    return image


def _edited(images: list[bytes], mask: bytes | None, progress: float = 1.0) -> Image.Image:
    original = Image.open(io.BytesIO(images[0])).convert("RGB")
    inverted = ImageOps.invert(original)
    if progress < 1.0:
        inverted = Image.blend(original, inverted, progress)
    if mask is None:
        return inverted
    alpha = Image.open(io.BytesIO(mask)).convert("RGBA").getchannel("A").resize(original.size)
    # Transparent mask pixels mark where to edit; opaque ones keep the original.
    return Image.composite(original, inverted, alpha)


def _encode(image: Image.Image, fmt: str, background: str | None) -> str:
    out = io.BytesIO()
    if background == "transparent" and fmt in ("png", "webp"):
        image = image.convert("RGBA")
    image.save(out, {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}.get(fmt, "PNG"))
    return base64.b64encode(out.getvalue()).decode()


async def _read(request: Request) -> tuple[dict, dict[str, list[bytes]], dict[str, list[str]]]:
    """Body fields, uploaded files and their content types (JSON or multipart)."""
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        form = await request.form()
        fields: dict[str, Any] = {}
        files: dict[str, list[bytes]] = {}
        types: dict[str, list[str]] = {}
        for key, value in form.multi_items():
            if isinstance(value, UploadFile):
                files.setdefault(key, []).append(await value.read())
                types.setdefault(key, []).append(value.content_type or "")
            else:
                fields[key] = value
        return fields, files, types
    return await request.json(), {}, {}


def images_app(state: ImagesState, prefix: str = "/v1") -> Starlette:
    """The test Images API under `prefix` (plus GET /files/{name})."""

    async def handle(request: Request, kind: str) -> Response:
        body, files, types = await _read(request)
        with state.lock:
            state.requests.append({"path": request.url.path, "headers": dict(request.headers), "body": body,
                                   "files": files, "content_types": types})
            failure = state.failures.popleft() if state.failures else None
        stream = body.get("stream") in (True, "true")
        if failure and not (failure["mid_stream"] and stream):
            error = {"message": failure["message"], "type": "image_generation_error", "param": None,
                     "code": failure["code"]}
            return JSONResponse({"error": error}, status_code=failure["status"])
        prompt = str(body.get("prompt") or "")
        fmt = str(body.get("output_format") or "png")
        background = body.get("background")
        images = files.get("image") or files.get("image[]") or []
        mask = (files.get("mask") or [None])[0]
        if kind == "edit" and not images:
            return JSONResponse({"error": {"message": "image is required", "type": "invalid_request_error",
                                           "param": "image", "code": None}}, status_code=400)

        def render(progress: float = 1.0) -> tuple[str, str]:
            image = _edited(images, mask, progress) if kind == "edit" else \
                _painted(prompt, _size(body.get("size")), progress)
            return _encode(image, fmt, background), f"{image.width}x{image.height}"

        quality = body.get("quality") if body.get("quality") in ("low", "medium", "high") else "medium"
        meta = {"background": "transparent" if background == "transparent" else "opaque",
                "output_format": fmt, "quality": quality}
        usage = {"input_tokens": 10, "output_tokens": 20, "total_tokens": 30,
                 "input_tokens_details": {"image_tokens": len(images), "text_tokens": 10}}
        if not stream:
            b64, size = render()
            data: dict[str, Any] = {"b64_json": b64}
            if kind == "generation":
                data["revised_prompt"] = f"{prompt}, revised"
            return JSONResponse({"created": int(time.time()), "data": [data], **meta, "size": size,
                                 "usage": usage})
        partials = int(body.get("partial_images") or 0)
        event_prefix = "image_edit" if kind == "edit" else "image_generation"

        async def events() -> AsyncIterator[bytes]:
            def frame(data: dict) -> bytes:
                return f"event: {data['type']}\ndata: {json.dumps(data)}\n\n".encode()

            for n in range(partials):
                b64, size = render((n + 1) / (partials + 1))
                yield frame({"type": f"{event_prefix}.partial_image", "b64_json": b64,
                             "partial_image_index": n, "created_at": int(time.time()), **meta, "size": size})
                if failure:
                    error = {"message": failure["message"], "code": failure["code"],
                             "type": "image_generation_error", "param": None}
                    yield frame({"type": "error", "error": error})
                    return
            gate = state.gate
            if gate is not None:
                state.gate_timed_out = not await asyncio.to_thread(gate.wait, 10)
            b64, size = render()
            yield frame({"type": f"{event_prefix}.completed", "b64_json": b64, "created_at": int(time.time()),
                         **meta, "size": size, "usage": usage})

        return StreamingResponse(events(), media_type="text/event-stream")

    async def generations(request: Request) -> Response:
        return await handle(request, "generation")

    async def edits(request: Request) -> Response:
        return await handle(request, "edit")

    async def file(request: Request) -> Response:
        data = state.files.get(request.path_params["name"])
        if data is None:
            return Response(status_code=404)
        return Response(data, media_type="image/png")

    return Starlette(routes=[
        Route(prefix + "/images/generations", generations, methods=["POST"]),
        Route(prefix + "/images/edits", edits, methods=["POST"]),
        Route("/files/{name}", file, methods=["GET"]),
    ])
