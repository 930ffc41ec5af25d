"""The image_generation tool: images made and edited by an OpenAI-compatible Images API.

The model sees one function, `image_generation(prompt, action?)`. When it calls it, the tool
asks `{images base URL}/images/generations`, or `/images/edits` (multipart) when there is an
image to work on: the latest `image_generation_call` result or the latest user message's
input images, whichever came last. The image becomes an `image_generation_call` item and the
loop runs another turn so that the model can answer. When the Images API fails, the item ends
`failed` with the error, the model is told so, and the response still completes.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from . import checks as c
from .errors import InvalidRequest
from .ids import new_id
from .imagebytes import base64_head, data_url_parts, from_base64, image_size, image_type
from .images_api import (
    MAX_IMAGE_BYTES,
    ImageFailure,
    ImageFile,
    ImageResult,
    ImagesClient,
    ImagesEndpoint,
    download_image,
    images_endpoint,
)
from .tools import Outcome, Tool, ToolCall, ToolContext, ToolKind

log = logging.getLogger("responsa.images")

FUNCTION_NAME = "image_generation"
DEPLOYMENT_HEADER = "x-ms-oai-image-generation-deployment"
MAX_INPUT_IMAGES = 16

QUALITIES = ("low", "medium", "high", "auto", "xhigh", "max")
FORMATS = ("png", "webp", "jpeg", "gif", "svg")
BACKGROUNDS = ("transparent", "opaque", "auto")
SIZE = re.compile(r"^(auto|[1-9][0-9]{1,4}x[1-9][0-9]{1,4})$")
# Tool fields passed through to the Images API as they are, and where they apply.
PASSED = ("size", "quality", "output_format", "output_compression", "background")
GENERATION_ONLY = ("moderation",)
EDIT_ONLY = ("input_fidelity",)
KNOWN = frozenset({"type", "model", *PASSED, *GENERATION_ONLY, *EDIT_ONLY, "partial_images",
                   "input_image_mask", "action"})


# ---- the tool entry ------------------------------------------------------------------------

class ImageGenerationKind(ToolKind):
    """`{"type": "image_generation", ...}`: checked at parse time, built per run."""

    types = ("image_generation",)

    def check(self, entry: dict, param: str) -> dict:
        unknown = sorted(k for k in entry if k not in KNOWN)
        if unknown:
            raise InvalidRequest(f"Unknown parameter: '{param}.{unknown[0]}'.", param=f"{param}.{unknown[0]}",
                                 code="unknown_parameter")
        out: dict[str, Any] = {"type": "image_generation"}
        model = c.string(entry, "model", f"{param}.model", allow_empty=False)
        size = c.string(entry, "size", f"{param}.size")
        if size is not None and not SIZE.match(size):
            raise InvalidRequest(f"Invalid '{param}.size': expected 'auto' or WIDTHxHEIGHT such as "
                                 f"'1024x1024', got '{size}'.", param=f"{param}.size", code="invalid_value")
        values = {
            "model": model, "size": size,
            "quality": c.choice(entry, "quality", f"{param}.quality", QUALITIES),
            "output_format": c.choice(entry, "output_format", f"{param}.output_format", FORMATS),
            "output_compression": c.integer(entry, "output_compression", f"{param}.output_compression",
                                            0, 100),
            "background": c.choice(entry, "background", f"{param}.background", BACKGROUNDS),
            "moderation": c.choice(entry, "moderation", f"{param}.moderation", ("auto", "low")),
            "partial_images": c.integer(entry, "partial_images", f"{param}.partial_images", 0, 3),
            "input_fidelity": c.choice(entry, "input_fidelity", f"{param}.input_fidelity", ("high", "low")),
            "input_image_mask": _check_mask(entry, f"{param}.input_image_mask"),
            "action": c.choice(entry, "action", f"{param}.action", ("generate", "edit", "auto")),
        }
        out.update({k: v for k, v in values.items() if v is not None})
        return out

    def build(self, entry: dict, ctx: ToolContext) -> ImageGenerationTool:
        endpoint = images_endpoint(ctx.settings)
        if endpoint is None:
            raise InvalidRequest(
                "The image_generation tool needs an Images API, and this server has none configured: "
                "start it with --images-base-url (or --upstream-base-url).", param="tools",
                code="unsupported_value")
        return ImageGenerationTool(entry, endpoint)


def _check_mask(entry: dict, param: str) -> dict | None:
    mask = c.mapping(entry, "input_image_mask", param)
    if mask is None:
        return None
    url = c.string(mask, "image_url", f"{param}.image_url", allow_empty=False, max_len=c.MAX_IMAGE_URL)
    file_id = c.string(mask, "file_id", f"{param}.file_id", allow_empty=False)
    if (url is None) == (file_id is None):
        raise InvalidRequest(f"Invalid '{param}': give exactly one of 'image_url' or 'file_id'.", param=param,
                             code="invalid_value")
    if url is not None:
        c.url(url, f"{param}.image_url", ("http", "https", "data"), code="invalid_image_url")
    return {"image_url": url} if url is not None else {"file_id": file_id}


# ---- the tool --------------------------------------------------------------------------------

class ImageGenerationTool(Tool):
    """One `image_generation` entry for a run: offered as a function, run against the Images API."""

    def __init__(self, entry: dict, endpoint: ImagesEndpoint) -> None:
        self.entry = entry
        self.endpoint = endpoint

    def functions(self) -> list[dict]:
        props: dict[str, Any] = {"prompt": {
            "type": "string",
            "description": "A detailed description of the image to create, or of the change to make."}}
        if self.entry.get("action") in (None, "auto"):
            props["action"] = {
                "type": "string", "enum": ["generate", "edit"],
                "description": "edit: change the most recent image of the conversation (the user's or the "
                               "last generated one); generate: a new image. Default: edit when there is "
                               "an image."}
        return [{"type": "function", "function": {
            "name": FUNCTION_NAME,
            "description": "Create an image from a text description, or edit the latest image in the "
                           "conversation. The image is shown to the user; do not repeat it in your answer.",
            "parameters": {"type": "object", "properties": props, "required": ["prompt"],
                           "additionalProperties": False},
        }}]

    async def invoke(self, call: ToolCall, ctx: ToolContext) -> Outcome:
        events = ctx.events
        prompt, action = _arguments(call.arguments)
        index = events.add_item({"id": new_id("ig"), "type": "image_generation_call", "status": "in_progress",
                                 "result": None})
        item = events.output[index]
        events.item_event("response.image_generation_call.in_progress", index)
        await events.flush()
        try:
            result, action = await self._run(prompt, action, index, ctx)
        except ImageFailure as e:
            log.warning("image_generation failed: %s", e.message)
            item["status"] = "failed"
            item["error"] = e.item_error()
            events.done_item(index)
            return Outcome.CONTINUE
        item.update(action=action, **_item_meta(self.entry, result),
                    revised_prompt=result.revised_prompt or prompt, result=result.b64, status="completed")
        events.item_event("response.image_generation_call.completed", index)
        events.done_item(index)
        return Outcome.CONTINUE

    async def _run(self, prompt: str, action: str | None, index: int,
                   ctx: ToolContext) -> tuple[ImageResult, str]:
        events = ctx.events
        if not prompt:
            raise ImageFailure("The image_generation call has no prompt.", code="invalid_prompt")
        mode = self.entry.get("action") or "auto"
        if mode == "auto":
            mode = action or "auto"
        sources = [] if mode == "generate" else latest_images([*ctx.history, *events.output[:index]])
        if mode == "edit" and not sources:
            raise ImageFailure("There is no image in the conversation to edit.", code="invalid_image")
        images = [await load_image(s, ctx) for s in sources]
        mask = None
        if images and self.entry.get("input_image_mask"):
            mask = await load_image(self.entry["input_image_mask"], ctx)
        model = (self.entry.get("model") or ctx.request_headers.get(DEPLOYMENT_HEADER)
                 or self.endpoint.default_model)
        events.output[index]["status"] = "generating"
        events.item_event("response.image_generation_call.generating", index)
        await events.flush()
        partials = self.entry.get("partial_images") or 0
        stream = bool(partials) and events.live

        async def on_partial(n: int, b64: str, meta: dict) -> None:
            events.item_event("response.image_generation_call.partial_image", index, partial_image_index=n,
                              partial_image_b64=b64, **meta)
            await events.flush()

        client = ImagesClient(self.endpoint)
        opts = {k: self.entry[k] for k in PASSED if k in self.entry}
        if stream:
            opts.update(stream=True, partial_images=partials)
        if images:
            opts.update({k: self.entry[k] for k in EDIT_ONLY if k in self.entry})
            return await client.edit(model, prompt, images, mask, opts, on_partial), "edit"
        opts.update({k: self.entry[k] for k in GENERATION_ONLY if k in self.entry})
        return await client.generate(model, prompt, opts, on_partial), "generate"


def _arguments(arguments: str) -> tuple[str, str | None]:
    """The call's prompt and action; a model that sent bare text gets it used as the prompt."""
    try:
        parsed = json.loads(arguments or "{}")
    except ValueError:
        return arguments.strip(), None
    if not isinstance(parsed, dict):
        return str(parsed), None
    prompt = parsed.get("prompt")
    action = parsed.get("action")
    if action not in ("generate", "edit"):
        action = None
    return (prompt.strip() if isinstance(prompt, str) else ""), action


def latest_images(items: list[dict]) -> list[dict]:
    """The images an edit works on: the last generated image or the last user images, whichever is newer."""
    for item in reversed(items):
        kind = item.get("type")
        if kind == "image_generation_call" and item.get("result"):
            return [{"b64": item["result"]}]
        if kind == "message" and item.get("role") == "user" and isinstance(item.get("content"), list):
            parts = [p for p in item["content"] if isinstance(p, dict) and p.get("type") == "input_image"]
            if parts:
                return parts[-MAX_INPUT_IMAGES:]
    return []


def _item_meta(entry: dict, result: ImageResult) -> dict:
    """size, quality, output_format, background: as the Images API reported, else as asked."""
    out: dict[str, Any] = {}
    allowed = {"quality": QUALITIES, "output_format": FORMATS, "background": BACKGROUNDS}
    for key in ("background", "output_format", "quality", "size"):
        value = result.meta.get(key) or entry.get(key)
        if isinstance(value, str) and value in allowed.get(key, (value,)):
            out[key] = value
    head = base64_head(result.b64, 33)
    mime = image_type(head)
    if out.get("size") in (None, "auto") and mime == "image/png" and (size := image_size(head)):
        out["size"] = f"{size[0]}x{size[1]}"
    if "output_format" not in out and mime:
        out["output_format"] = mime.split("/")[1]
    return out


# ---- input images ----------------------------------------------------------------------------

async def load_image(ref: dict, ctx: ToolContext) -> ImageFile:
    """The bytes of an image given as base64 (`b64`), `image_url` (http(s) or data:) or `file_id`."""
    limit = min(MAX_IMAGE_BYTES, ctx.settings.max_file_size)
    if ref.get("b64"):
        data = _b64(ref["b64"])
    elif ref.get("file_id"):
        if ctx.load_file is None:
            raise ImageFailure(f"File '{ref['file_id']}' cannot be read here.", code="image_file_not_found")
        try:
            data, _ = await ctx.load_file(ref["file_id"])
        except Exception as e:
            raise ImageFailure(f"File '{ref['file_id']}' not found.", code="image_file_not_found") from e
    elif str(ref.get("image_url") or "").startswith("data:"):
        parts = data_url_parts(ref["image_url"])
        if parts is None:
            raise ImageFailure("An image data URL must be base64-encoded.", code="invalid_base64_image")
        data = _b64(parts[1])
    elif ref.get("image_url"):
        if ctx.fetcher is None:
            raise ImageFailure("This server cannot download image URLs here.", code="failed_to_download_image")
        data = await download_image(ref["image_url"], ctx.fetcher, limit)
    else:
        raise ImageFailure("An input image has neither an image_url nor a file_id.", code="invalid_image")
    if len(data) > limit:
        raise ImageFailure(f"An input image is larger than {limit} bytes.", code="image_too_large")
    mime = image_type(data)
    if mime is None:
        raise ImageFailure("An input image is not a PNG, JPEG, WebP or GIF image.",
                           code="unsupported_image_media_type")
    return ImageFile(data, mime)


def _b64(text: str) -> bytes:
    try:
        return from_base64(text)
    except ValueError as e:
        raise ImageFailure("An input image is not valid base64.", code="invalid_base64_image") from e
