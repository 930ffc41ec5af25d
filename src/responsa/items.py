"""Input items: every form clients send, checked and normalised to the stored item shape.

Stored items are plain JSON dicts in the wire shape the API returns from
`GET /responses/{id}/input_items`: each has an `id`, a `type` and, where the type has one,
a `status`. Client-chosen ids (`fco_...`, echoed `msg_...`) are kept.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from . import checks as c
from .errors import InvalidRequest
from .ids import new_id
from .tools import check_tool

ROLES = ("user", "assistant", "system", "developer")
IMAGE_URL_SCHEMES = ("http", "https", "data")
DETAILS = ("auto", "low", "high", "original")

# Echoes of output items accepted and stored as sent: hosted tools' calls (web and file search
# calls reach the model as the calls they stand for, chat.py; the others carry nothing it needs),
# and items only the hosted API acts on.
PASSTHROUGH_TYPES = frozenset({
    "web_search_call", "file_search_call", "code_interpreter_call", "local_shell_call",
    "local_shell_call_output", "shell_call", "shell_call_output", "apply_patch_call",
    "apply_patch_call_output", "compaction", "compaction_trigger", "additional_tools", "program",
    "program_output", "configuration_update",
})
# The most items one request's `input` may hold (the hosted API's bound).
MAX_INPUT_ITEMS = 131072

ID_PREFIX = {
    "message": "msg", "function_call": "fc", "function_call_output": "fco", "reasoning": "rs",
    "custom_tool_call": "ctc", "custom_tool_call_output": "ctco", "mcp_call": "mcp",
    "mcp_approval_request": "mcpr", "mcp_approval_response": "mcpa", "mcp_list_tools": "mcpl",
    "computer_call": "cu", "computer_call_output": "cuo", "image_generation_call": "ig",
    "tool_search_call": "tsc", "tool_search_output": "tso",
}


def normalize_input(value: Any, param: str = "input") -> list[dict]:
    """The request's `input` (a string or a list of items) as stored items."""
    if value is None:
        return []
    if isinstance(value, str):
        return [{"id": new_id("msg"), "type": "message", "role": "user", "status": "completed",
                 "content": [{"type": "input_text", "text": c.length(value, param, c.MAX_TEXT)}]}]
    if not isinstance(value, list):
        raise c.wrong_type(param, "a string or an array of input items", value)
    c.max_items(value, param, MAX_INPUT_ITEMS)
    return [normalize_item(item, f"{param}[{i}]") for i, item in enumerate(value)]


def normalize_item(item: Any, param: str) -> dict:
    if not isinstance(item, dict):
        raise c.wrong_type(param, "an object", item)
    kind = item.get("type")
    if kind is None:
        if "role" in item:
            kind = "message"
        elif "id" in item:
            kind = "item_reference"
        else:
            raise c.missing(f"{param}.type")
    if not isinstance(kind, str):
        raise c.wrong_type(f"{param}.type", "a string", kind)
    handler = _HANDLERS.get(kind)
    if handler is not None:
        return handler(item, param)
    if kind in PASSTHROUGH_TYPES:
        out = {k: v for k, v in item.items() if v is not None}
        out["type"] = kind
        out["id"] = _item_id(item, param, kind)
        return out
    raise c.bad_value(f"{param}.type", kind, ["message", "item_reference", *sorted(_HANDLERS)])


def _item_id(item: dict, param: str, kind: str) -> str:
    ident = c.string(item, "id", f"{param}.id", stored=True)
    return ident or new_id(ID_PREFIX.get(kind, "item"))


def _status(item: dict, param: str, default: str = "completed") -> str:
    return c.choice(item, "status", f"{param}.status", ("in_progress", "completed", "incomplete")) or default


def _message(item: dict, param: str) -> dict:
    role = c.choice(item, "role", f"{param}.role", ROLES, required=True)
    content = item.get("content")
    if content is None:
        raise c.missing(f"{param}.content")
    out: dict[str, Any] = {"id": _item_id(item, param, "message"), "type": "message", "role": role}
    if isinstance(content, str):
        part_type = "output_text" if role == "assistant" else "input_text"
        parts = [_text_part(part_type, c.length(content, f"{param}.content", c.MAX_TEXT))]
    elif isinstance(content, list):
        parts = [normalize_part(p, role, f"{param}.content[{i}]") for i, p in enumerate(content)]
    else:
        raise c.wrong_type(f"{param}.content", "a string or an array of content parts", content)
    out["content"] = parts
    out["status"] = _status(item, param)
    phase = c.choice(item, "phase", f"{param}.phase", ("commentary", "final_answer"))
    if phase:
        out["phase"] = phase
    return out


def _text_part(part_type: str, text: str) -> dict:
    if part_type == "output_text":
        return {"type": "output_text", "text": text, "annotations": []}
    return {"type": "input_text", "text": text}


def normalize_part(part: Any, role: str, param: str) -> dict:
    """One content part of a message; text parts are accepted in either direction."""
    if not isinstance(part, dict):
        raise c.wrong_type(param, "an object", part)
    kind = c.string(part, "type", f"{param}.type", required=True)
    if kind in ("input_text", "output_text", "text"):
        text = c.string(part, "text", f"{param}.text", required=True, max_len=c.MAX_TEXT)
        out = _text_part("output_text" if role == "assistant" else "input_text", text or "")
        if out["type"] == "output_text":
            annotations = part.get("annotations")
            if annotations is not None:
                if not isinstance(annotations, list):
                    raise c.wrong_type(f"{param}.annotations", "an array", annotations)
                out["annotations"] = annotations
            if isinstance(part.get("logprobs"), list):
                out["logprobs"] = part["logprobs"]
        return out
    if kind == "refusal":
        refusal = c.string(part, "refusal", f"{param}.refusal", required=True, max_len=c.MAX_TEXT)
        return {"type": "refusal", "refusal": refusal}
    if kind == "input_image":
        url = c.string(part, "image_url", f"{param}.image_url", max_len=c.MAX_IMAGE_URL)
        file_id = c.string(part, "file_id", f"{param}.file_id")
        if (url is None) == (file_id is None):
            raise InvalidRequest(f"Invalid '{param}': give exactly one of 'image_url' or 'file_id'.",
                                 param=param, code="invalid_value")
        detail = c.choice(part, "detail", f"{param}.detail", DETAILS) or "auto"
        out = {"type": "input_image", "detail": detail}
        if url is not None:
            out["image_url"] = c.url(url, f"{param}.image_url", IMAGE_URL_SCHEMES, code="invalid_image_url")
        else:
            out["file_id"] = file_id
        return out
    if kind == "input_file":
        out = {"type": "input_file"}
        given = 0
        for key in ("file_id", "file_url", "file_data"):
            value = c.string(part, key, f"{param}.{key}", max_len=c.MAX_FILE_DATA)
            if value is not None:
                out[key] = value
                given += 1
        if given != 1:
            raise InvalidRequest(
                f"Invalid '{param}': give exactly one of 'file_id', 'file_url' or 'file_data'.",
                param=param, code="invalid_value")
        if "file_url" in out:
            c.url(out["file_url"], f"{param}.file_url")
        filename = c.string(part, "filename", f"{param}.filename")
        if filename is not None:
            out["filename"] = filename
        if "file_data" in out and filename is None:
            raise c.missing(f"{param}.filename")
        return out
    raise c.bad_value(f"{param}.type", kind,
                      ["input_text", "input_image", "input_file", "output_text", "refusal"])


def _function_call(item: dict, param: str) -> dict:
    arguments = item.get("arguments")
    if isinstance(arguments, dict):  # some clients send parsed arguments; keep the wire shape
        arguments = json.dumps(arguments)
        item = {**item, "arguments": arguments}
    out = {
        "id": _item_id(item, param, "function_call"),
        "type": "function_call",
        "call_id": c.string(item, "call_id", f"{param}.call_id", required=True),
        "name": c.string(item, "name", f"{param}.name", required=True),
        "arguments": c.string(item, "arguments", f"{param}.arguments", required=True),
        "status": _status(item, param),
    }
    namespace = c.string(item, "namespace", f"{param}.namespace")
    if namespace:
        out["namespace"] = namespace
    return out


def _tool_output(item: dict, param: str, kind: str) -> dict:
    output = item.get("output")
    if output is None:
        raise c.missing(f"{param}.output")
    if isinstance(output, list):
        output = [normalize_part(p, "user", f"{param}.output[{i}]") for i, p in enumerate(output)]
    elif not isinstance(output, str):
        raise c.wrong_type(f"{param}.output", "a string or an array of content parts", output)
    else:
        c.length(output, f"{param}.output", c.MAX_TEXT)
    return {
        "id": _item_id(item, param, kind),
        "type": kind,
        "call_id": c.string(item, "call_id", f"{param}.call_id", required=True),
        "output": output,
        "status": _status(item, param),
    }


def _function_call_output(item: dict, param: str) -> dict:
    return _tool_output(item, param, "function_call_output")


def _custom_tool_call(item: dict, param: str) -> dict:
    out = {
        "id": _item_id(item, param, "custom_tool_call"),
        "type": "custom_tool_call",
        "call_id": c.string(item, "call_id", f"{param}.call_id", required=True),
        "name": c.string(item, "name", f"{param}.name", required=True),
        "input": c.string(item, "input", f"{param}.input", required=True),
    }
    namespace = c.string(item, "namespace", f"{param}.namespace")
    if namespace:
        out["namespace"] = namespace
    status = item.get("status")
    if status is not None:
        out["status"] = _status(item, param)
    return out


def _tool_search_item(item: dict, param: str, kind: str) -> dict:
    """The fields a `tool_search_call` and a `tool_search_output` share, checked."""
    out = {"id": _item_id(item, param, kind), "type": kind,
           "execution": c.choice(item, "execution", f"{param}.execution", ("server", "client")) or "server",
           "status": _status(item, param)}
    call_id = c.string(item, "call_id", f"{param}.call_id")
    if call_id is not None:
        out["call_id"] = call_id
    return out


def _tool_search_call(item: dict, param: str) -> dict:
    if item.get("arguments") is None:
        raise c.missing(f"{param}.arguments")
    return {**_tool_search_item(item, param, "tool_search_call"), "arguments": item["arguments"]}


def _tool_search_output(item: dict, param: str) -> dict:
    """The tools a tool search loaded: functions, custom tools and namespaces are offered to the
    model from then on, so they are checked like `tools[]` entries; other types are kept as given."""
    tools = c.array(item, "tools", f"{param}.tools", required=True) or []
    checked = []
    for j, tool in enumerate(tools):
        if not isinstance(tool, dict):
            raise c.wrong_type(f"{param}.tools[{j}]", "an object", tool)
        loaded = tool.get("type") in ("function", "custom", "namespace")
        checked.append(check_tool(tool, f"{param}.tools[{j}]") if loaded else tool)
    return {**_tool_search_item(item, param, "tool_search_output"), "tools": checked}


def _custom_tool_call_output(item: dict, param: str) -> dict:
    return _tool_output(item, param, "custom_tool_call_output")


def _summary_parts(value: Any, param: str, part_type: str) -> list[dict]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise c.wrong_type(param, "an array", value)
    parts = []
    for i, p in enumerate(value):
        if not isinstance(p, dict):
            raise c.wrong_type(f"{param}[{i}]", "an object", p)
        text = c.string(p, "text", f"{param}[{i}].text", required=True, max_len=c.MAX_TEXT)
        kind = c.string(p, "type", f"{param}[{i}].type") or part_type
        parts.append({"type": kind, "text": text})
    return parts


def _reasoning(item: dict, param: str) -> dict:
    out: dict[str, Any] = {
        "id": _item_id(item, param, "reasoning"),
        "type": "reasoning",
        "summary": _summary_parts(item.get("summary"), f"{param}.summary", "summary_text"),
    }
    if item.get("content") is not None:
        out["content"] = _summary_parts(item["content"], f"{param}.content", "reasoning_text")
    encrypted = c.string(item, "encrypted_content", f"{param}.encrypted_content", max_len=c.MAX_TEXT)
    if encrypted is not None:
        out["encrypted_content"] = encrypted
    if item.get("status") is not None:
        out["status"] = _status(item, param)
    return out


def _item_reference(item: dict, param: str) -> dict:
    return {"type": "item_reference", "id": c.string(item, "id", f"{param}.id", required=True)}


def _mcp_approval_response(item: dict, param: str) -> dict:
    approve = item.get("approve")
    if not isinstance(approve, bool):
        raise c.missing(f"{param}.approve") if approve is None else c.wrong_type(
            f"{param}.approve", "a boolean", approve)
    out = {
        "id": _item_id(item, param, "mcp_approval_response"),
        "type": "mcp_approval_response",
        "approval_request_id": c.string(item, "approval_request_id", f"{param}.approval_request_id",
                                        required=True),
        "approve": approve,
    }
    reason = c.string(item, "reason", f"{param}.reason")
    if reason is not None:
        out["reason"] = reason
    return out


def _mcp_echo(kind: str, strings: tuple[str, ...],
              check: Callable[[dict, str], None] | None = None) -> Callable[[dict, str], dict]:
    """An MCP output item fed back: what later turns read from it (mcp.py, chat.py) is checked
    here, so that a malformed echo is this request's 400, not a failure of every later turn."""
    def handle(item: dict, param: str) -> dict:
        for key in strings:
            c.string(item, key, f"{param}.{key}", required=True)
        if check is not None:
            check(item, param)
        out = {k: v for k, v in item.items() if v is not None}
        out["id"] = _item_id(item, param, kind)
        out["type"] = kind
        return out

    return handle


def _check_mcp_call(item: dict, param: str) -> None:
    for key in ("approval_request_id", "output", "status"):
        c.string(item, key, f"{param}.{key}")
    error = item.get("error")  # a string; openai-python 3.x types it as an object
    if error is not None and not isinstance(error, str | dict):
        raise c.wrong_type(f"{param}.error", "a string or an object", error)


def _check_mcp_list_tools(item: dict, param: str) -> None:
    tools = c.array(item, "tools", f"{param}.tools", required=True) or []
    for i, tool in enumerate(tools):
        where = f"{param}.tools[{i}]"
        if not isinstance(tool, dict):
            raise c.wrong_type(where, "an object", tool)
        c.string(tool, "name", f"{where}.name", required=True)
        c.string(tool, "description", f"{where}.description")
        c.mapping(tool, "input_schema", f"{where}.input_schema")
        c.mapping(tool, "annotations", f"{where}.annotations")
    c.string(item, "error", f"{param}.error")


def _computer_call(item: dict, param: str) -> dict:
    c.string(item, "call_id", f"{param}.call_id", required=True)
    action = c.mapping(item, "action", f"{param}.action")
    actions = c.array(item, "actions", f"{param}.actions")
    if action is None and actions is None:
        raise c.missing(f"{param}.action")
    out = {k: v for k, v in item.items() if v is not None}
    out["id"] = _item_id(item, param, "computer_call")
    out["type"] = "computer_call"
    out.setdefault("pending_safety_checks", [])
    out["status"] = _status(item, param)
    return out


def _computer_call_output(item: dict, param: str) -> dict:
    call_id = c.string(item, "call_id", f"{param}.call_id", required=True)
    output = c.mapping(item, "output", f"{param}.output", required=True)
    assert output is not None
    kind = c.choice(output, "type", f"{param}.output.type", ("computer_screenshot",), required=True)
    url = c.string(output, "image_url", f"{param}.output.image_url", max_len=c.MAX_IMAGE_URL)
    file_id = c.string(output, "file_id", f"{param}.output.file_id")
    if (url is None) == (file_id is None):
        raise InvalidRequest(f"Invalid '{param}.output': give exactly one of 'image_url' or 'file_id'.",
                             param=f"{param}.output", code="invalid_value")
    screenshot: dict[str, Any] = {"type": kind}
    if url is not None:
        screenshot["image_url"] = c.url(url, f"{param}.output.image_url", IMAGE_URL_SCHEMES,
                                        code="invalid_image_url")
    else:
        screenshot["file_id"] = file_id
    checks = c.array(item, "acknowledged_safety_checks", f"{param}.acknowledged_safety_checks") or []
    return {
        "id": _item_id(item, param, "computer_call_output"),
        "type": "computer_call_output",
        "call_id": call_id,
        "output": screenshot,
        "acknowledged_safety_checks": checks,
        "status": c.choice(item, "status", f"{param}.status",
                           ("in_progress", "completed", "incomplete", "failed")) or "completed",
    }


def _image_generation_call(item: dict, param: str) -> dict:
    for key in ("status", "result", "revised_prompt"):  # a later edit reads `result` as base64
        c.string(item, key, f"{param}.{key}")
    out = {k: v for k, v in item.items() if v is not None}
    out["id"] = c.string(item, "id", f"{param}.id", required=True, stored=True)
    out["type"] = "image_generation_call"
    out.setdefault("status", "completed")
    out.setdefault("result", None)
    return out


_HANDLERS = {
    "message": _message,
    "function_call": _function_call,
    "function_call_output": _function_call_output,
    "custom_tool_call": _custom_tool_call,
    "custom_tool_call_output": _custom_tool_call_output,
    "reasoning": _reasoning,
    "item_reference": _item_reference,
    "mcp_approval_response": _mcp_approval_response,
    "mcp_approval_request": _mcp_echo("mcp_approval_request", ("server_label", "name", "arguments")),
    "mcp_call": _mcp_echo("mcp_call", ("server_label", "name", "arguments"), _check_mcp_call),
    "mcp_list_tools": _mcp_echo("mcp_list_tools", ("server_label",), _check_mcp_list_tools),
    "computer_call": _computer_call,
    "computer_call_output": _computer_call_output,
    "image_generation_call": _image_generation_call,
    "tool_search_call": _tool_search_call,
    "tool_search_output": _tool_search_output,
}
