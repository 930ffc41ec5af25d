"""Computer use: the `computer_use_preview` and `computer` tools on any model that takes images.

The model sees one function, `computer`. Its arguments are one action in the hosted API's
action schema (`{"action": {...}}`), or for the `computer` tool a batch (`{"actions": [...]}`).
A valid call becomes a `computer_call` output item and ends the response: the client performs
the action and sends a `computer_call_output` screenshot, which reaches the model as an image
(chat.py, media.py). An invalid call (unknown action, coordinates off the display, a missing
field) never reaches the client: the model is told what was wrong and tries again, and after
MAX_INVALID invalid calls in one response the response fails saying why.
"""

from __future__ import annotations

import json
import math
from typing import Any

from . import checks as c
from .errors import InvalidRequest, UpstreamError
from .ids import new_id
from .imagebytes import base64_head, from_base64, image_size
from .tools import Outcome, Tool, ToolCall, ToolContext, ToolKind

FUNCTION_NAME = "computer"
ENVIRONMENTS = ("browser", "mac", "windows", "ubuntu", "linux")
BUTTONS = ("left", "right", "wheel", "back", "forward")
ACTION_TYPES = ("click", "double_click", "drag", "keypress", "move", "screenshot", "scroll", "type", "wait")
# The `computer` tool has no fields: its display is the latest screenshot's size, else this.
DEFAULT_DISPLAY = (1024, 768)
MAX_DISPLAY = 16384
MAX_BATCH = 32
MAX_INVALID = 3
PREVIEW_FIELDS = ("type", "display_width", "display_height", "environment")
SCREENS = {"browser": "web browser", "mac": "macOS computer", "windows": "Windows computer",
           "ubuntu": "Ubuntu computer", "linux": "Linux computer"}


# ---- the tool entry ------------------------------------------------------------------------

class ComputerKind(ToolKind):
    """`computer_use_preview` (display size and environment given) and `computer` (no fields)."""

    types = ("computer_use_preview", "computer")

    def check(self, entry: dict, param: str) -> dict:
        kind = entry["type"]
        known = PREVIEW_FIELDS if kind == "computer_use_preview" else ("type",)
        unknown = sorted(k for k in entry if k not in known and entry[k] is not None)
        if unknown:
            raise InvalidRequest(f"Unknown parameter: '{param}.{unknown[0]}'.", param=f"{param}.{unknown[0]}",
                                 code="unknown_parameter")
        if kind == "computer":
            return {"type": "computer"}
        for key in ("display_width", "display_height", "environment"):
            if entry.get(key) is None:
                raise c.missing(f"{param}.{key}")
        width = c.integer(entry, "display_width", f"{param}.display_width", 1, MAX_DISPLAY)
        height = c.integer(entry, "display_height", f"{param}.display_height", 1, MAX_DISPLAY)
        environment = c.choice(entry, "environment", f"{param}.environment", ENVIRONMENTS, required=True)
        return {"type": kind, "display_width": width, "display_height": height, "environment": environment}

    def build(self, entry: dict, ctx: ToolContext) -> ComputerTool:
        if not ctx.accepts_images:
            raise InvalidRequest(
                f"The {entry['type']} tool sends the model screenshots, and this model does not accept image "
                "input. Use a model that takes images.", param="tools", code="unsupported_image_input")
        return ComputerTool(entry)


# ---- the tool --------------------------------------------------------------------------------

class ActionError(ValueError):
    """What is wrong with a call's action, in words for the model."""


class ComputerTool(Tool):
    """One computer tool for a run: offered as the `computer` function; a valid call ends the response."""

    client_side = True  # the client performs the actions

    def __init__(self, entry: dict) -> None:
        self.entry = entry
        self.batched = entry["type"] == "computer"
        self.width = entry.get("display_width") or DEFAULT_DISPLAY[0]
        self.height = entry.get("display_height") or DEFAULT_DISPLAY[1]
        self.environment: str | None = entry.get("environment")
        self.handed_out = False
        self.invalid = 0

    def functions(self) -> list[dict]:
        screen = SCREENS.get(self.environment or "", "computer screen")
        where = f"the user's {screen}" if self.environment else "the user's computer"
        if self.batched:
            usage = ("Give one or more actions in `actions`; they are performed in order, then you get a "
                     "screenshot of the result.")
            params: dict[str, Any] = {"actions": {"type": "array", "items": ACTION_SCHEMA, "minItems": 1,
                                                  "maxItems": MAX_BATCH}}
            required = ["actions"]
        else:
            usage = "Give one action per call; after it is performed you get a screenshot of the result."
            params = {"action": ACTION_SCHEMA}
            required = ["action"]
        description = (
            f"Operate {where} with the mouse and keyboard. {usage} The display is {self.width}x{self.height} "
            "pixels: x from 0 (left) to " f"{self.width - 1}, y from 0 (top) to {self.height - 1}. Ask for a "
            "screenshot first if you have not seen the screen yet. Actions: " + ACTION_HELP)
        return [{"type": "function", "function": {
            "name": FUNCTION_NAME, "description": description,
            "parameters": {"type": "object", "properties": params, "required": required,
                           "additionalProperties": False},
        }}]

    async def prepare(self, ctx: ToolContext) -> None:
        if self.batched:  # no declared display: the screen is as large as the latest screenshot
            size = await latest_screenshot_size(ctx)
            if size is not None:
                self.width, self.height = size

    async def invoke(self, call: ToolCall, ctx: ToolContext) -> Outcome:
        if self.handed_out:
            # One computer_call per response, as the hosted tool: a further call in the same
            # turn is dropped; the model decides again once it sees the screenshot.
            return Outcome.STOP
        try:
            actions = parse_actions(call.arguments, self.batched, self.width, self.height)
        except ActionError as e:
            return self._reject(call, str(e), ctx)
        item: dict[str, Any] = {"id": new_id("cu"), "type": "computer_call", "call_id": call.call_id}
        if self.batched:
            item["actions"] = actions
        else:
            item["action"] = actions[0]
        item.update(pending_safety_checks=[], status="in_progress")
        index = ctx.events.add_item(item)
        item["status"] = "completed"
        ctx.events.done_item(index)
        self.handed_out = True
        return Outcome.STOP

    def _reject(self, call: ToolCall, problem: str, ctx: ToolContext) -> Outcome:
        """Tell the model (only the model) what was wrong, so that it tries again."""
        self.invalid += 1
        if self.invalid >= MAX_INVALID:
            raise UpstreamError(f"The model made {self.invalid} invalid computer actions in a row; the last: "
                                f"{problem}", code="server_error")
        notes = ctx.model_notes
        at = len(ctx.events.output)
        notes.append((at, {"id": new_id("fc"), "type": "function_call", "call_id": call.call_id,
                           "name": FUNCTION_NAME, "arguments": call.arguments or "{}", "status": "completed"}))
        notes.append((at, {"id": new_id("fco"), "type": "function_call_output", "call_id": call.call_id,
                           "output": f"Error: invalid computer action: {problem} Nothing was done. The display "
                                     f"is {self.width}x{self.height} pixels. Call {FUNCTION_NAME} again with a "
                                     "valid action.", "status": "completed"}))
        return Outcome.CONTINUE


# ---- actions -------------------------------------------------------------------------------

_INT = {"type": "integer"}
ACTION_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "type": {"type": "string", "enum": list(ACTION_TYPES)},
        "x": {**_INT, "description": "Pixels from the left edge."},
        "y": {**_INT, "description": "Pixels from the top edge."},
        "button": {"type": "string", "enum": list(BUTTONS)},
        "keys": {"type": "array", "items": {"type": "string"},
                 "description": "keypress: the keys pressed together, e.g. [\"CTRL\", \"A\"]; with a mouse "
                                "action: keys held meanwhile."},
        "path": {"type": "array", "items": {"type": "object", "properties": {"x": _INT, "y": _INT},
                                            "required": ["x", "y"]}},
        "scroll_x": {**_INT, "description": "Pixels to scroll right (negative: left)."},
        "scroll_y": {**_INT, "description": "Pixels to scroll down (negative: up)."},
        "text": {"type": "string"},
    },
    "required": ["type"],
}
ACTION_HELP = ("click {x, y, button: left|right|wheel|back|forward}; double_click {x, y}; drag {path: at least two "
               "points [{x, y}, ...]}; keypress {keys}; move {x, y}; screenshot {}; scroll {x, y, scroll_x, "
               "scroll_y}; type {text}; wait {}.")


def parse_actions(arguments: str, batched: bool, width: int, height: int) -> list[dict]:
    """The call's actions, checked and in the hosted shape; ActionError says what is wrong."""
    try:
        args = json.loads(arguments or "{}")
    except ValueError:
        raise ActionError("the arguments are not valid JSON.") from None
    if not isinstance(args, dict):
        raise ActionError('expected an object such as {"action": {"type": "screenshot"}}.')
    if isinstance(args.get("actions"), list):
        raw: list[Any] = args["actions"]
        where = "actions"
    elif "action" in args:
        raw, where = [args["action"]], "action"
    elif "type" in args:  # the action itself, unwrapped
        raw, where = [args], "action"
    else:
        raise ActionError('expected an object such as {"action": {"type": "screenshot"}}.')
    if not raw:
        raise ActionError("no action was given.")
    if not batched and len(raw) > 1:
        raise ActionError("give exactly one action per call.")
    if len(raw) > MAX_BATCH:
        raise ActionError(f"at most {MAX_BATCH} actions per call.")
    return [check_action(a, f"{where}[{i}]" if where == "actions" else where, width, height)
            for i, a in enumerate(raw)]


def check_action(action: Any, where: str, width: int, height: int) -> dict:
    """One action normalised to the hosted schema (fields in order, unknown fields dropped)."""
    if not isinstance(action, dict):
        raise ActionError(f"'{where}' must be an object with a 'type'.")
    kind = action.get("type")
    if kind not in ACTION_TYPES:
        raise ActionError(f"'{where}.type' is {json.dumps(kind)}; it must be one of {', '.join(ACTION_TYPES)}.")
    out: dict[str, Any] = {"type": kind}
    if kind == "click":
        button = action.get("button", "left")
        if button not in BUTTONS:
            raise ActionError(f"'{where}.button' must be one of {', '.join(BUTTONS)}.")
        out["button"] = button
    if kind in ("click", "double_click", "move", "scroll"):
        out["x"] = _coordinate(action, "x", where, width)
        out["y"] = _coordinate(action, "y", where, height)
    if kind == "scroll":
        for key in ("scroll_x", "scroll_y"):
            out[key] = _integer(action.get(key, 0), f"{where}.{key}")
        if out["scroll_x"] == out["scroll_y"] == 0:
            raise ActionError(f"'{where}' scrolls by nothing: give scroll_x and/or scroll_y.")
    elif kind == "drag":
        path = action.get("path")
        if not isinstance(path, list) or len(path) < 2:
            raise ActionError(f"'{where}.path' must be a list of at least two points {{x, y}}.")
        points = []
        for n, point in enumerate(path):
            if not isinstance(point, dict):
                raise ActionError(f"'{where}.path[{n}]' must be a point {{x, y}}.")
            points.append({"x": _coordinate(point, "x", f"{where}.path[{n}]", width),
                           "y": _coordinate(point, "y", f"{where}.path[{n}]", height)})
        out["path"] = points
    elif kind == "keypress":
        keys = action.get("keys")
        if not isinstance(keys, list) or not keys or not all(isinstance(k, str) and k for k in keys):
            raise ActionError(f"'{where}.keys' must be a non-empty list of key names.")
        out["keys"] = keys
    elif kind == "type":
        text = action.get("text")
        if not isinstance(text, str) or not text:
            raise ActionError(f"'{where}.text' must be the non-empty text to type.")
        out["text"] = text
    if kind in ("click", "double_click", "move", "scroll", "drag") and action.get("keys"):
        held = action["keys"]
        if not isinstance(held, list) or not all(isinstance(k, str) and k for k in held):
            raise ActionError(f"'{where}.keys' must be a list of key names.")
        out["keys"] = held
    return out


def _integer(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ActionError(f"'{where}' must be a number of pixels.")
    return round(value)


def _coordinate(obj: dict, key: str, where: str, size: int) -> int:
    if key not in obj:
        raise ActionError(f"'{where}.{key}' is missing.")
    value = _integer(obj[key], f"{where}.{key}")
    if not 0 <= value < size:
        raise ActionError(f"'{where}.{key}' is {value}, off the display: it must be from 0 to {size - 1}.")
    return value


# ---- screenshot sizes ------------------------------------------------------------------------

async def latest_screenshot_size(ctx: ToolContext) -> tuple[int, int] | None:
    """The size of the conversation's latest screenshot (PNG, JPEG or GIF), if it can be read here."""
    for item in reversed(ctx.history):
        if item.get("type") != "computer_call_output" or not isinstance(item.get("output"), dict):
            continue
        shot = item["output"]
        data = b""
        url = shot.get("image_url")
        if isinstance(url, str) and url.startswith("data:"):
            payload = url.partition(",")[2]
            data = base64_head(payload, 48)  # PNG and GIF: the header is enough
            if not data:
                return None
            if image_size(data) is None:
                try:
                    data = from_base64(payload)
                except ValueError:
                    return None
        elif shot.get("file_id") and ctx.load_file is not None:
            try:
                data, _ = await ctx.load_file(shot["file_id"])
            except Exception:  # gone or foreign: the default display stands
                return None
        size = image_size(data)
        if size is None or not (0 < size[0] <= MAX_DISPLAY and 0 < size[1] <= MAX_DISPLAY):
            return None
        return size
    return None
